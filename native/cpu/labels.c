/*
 * taplab.native._labels: full-resolution labels from coarse logits, computed near class boundaries only.
 *
 * Semantics are defined by taplab/ops/labels.py (upsample_labels_reference); tests/native/test_labels.py
 * checks agreement. Per output pixel, PyTorch's bilinear sampling (align_corners=False) picks the 2x2
 * cells it interpolates between; where their arg-max classes agree that class is the label (a convex
 * combination keeps the maximum); elsewhere the corners' winning classes are the candidates, and the
 * one with the largest interpolated logit wins (the first in corner order on ties).
 *
 * upsample_labels(logits, C, h, w, H, W, out)
 *   logits: (C, h, w) float32, C-contiguous; out: (H, W) uint8, written. C <= 256.
 * The GIL is released; no numpy headers (the buffer protocol only). Both passes are split over OpenMP threads
 * (the libgomp torch loads, so torch.set_num_threads bounds them, as for the warp kernel).
 */
#include "buffers.h"
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* cells per block of the arg-max pass (its running maxima stay in L1) */
#define ARGMAX_BLOCK 2048

/* PyTorch's source index for output i of n over an input of size m (align_corners=False). */
static void axis(int n, int m, int *i0, int *i1, float *frac) {
    double scale = (double)m / n;
    for (int i = 0; i < n; i++) {
        double u = (i + 0.5) * scale - 0.5;
        if (u < 0) u = 0;
        int a = (int)floor(u);
        if (a > m - 1) a = m - 1;
        i0[i] = a;
        i1[i] = a + 1 < m ? a + 1 : m - 1;
        frac[i] = (float)(u - a);
    }
}

static PyObject *upsample_labels(PyObject *self, PyObject *args) {
    PyObject *logits_o, *out_o;
    int C, h, w, H, W;
    if (!PyArg_ParseTuple(args, "OiiiiiO", &logits_o, &C, &h, &w, &H, &W, &out_o)) return NULL;
    if (C < 1 || C > 256 || h < 1 || w < 1 || H < 1 || W < 1) {
        PyErr_SetString(PyExc_ValueError, "upsample_labels: bad sizes (1 <= C <= 256)");
        return NULL;
    }
    Py_buffer lb, ob;
    Py_ssize_t cells = (Py_ssize_t)h * w;
    if (get_buffer(logits_o, &lb, (Py_ssize_t)C * cells * 4, 0, "logits") < 0) return NULL;
    if (get_buffer(out_o, &ob, (Py_ssize_t)H * W, 1, "out") < 0) { PyBuffer_Release(&lb); return NULL; }
    const float *x = lb.buf;
    uint8_t *out = ob.buf;
    int ok = 1;

    Py_BEGIN_ALLOW_THREADS
    uint8_t *coarse = malloc(cells);
    int *y0 = malloc(sizeof(int) * H), *y1 = malloc(sizeof(int) * H);
    int *x0 = malloc(sizeof(int) * W), *x1 = malloc(sizeof(int) * W);
    float *fy = malloc(sizeof(float) * H), *fx = malloc(sizeof(float) * W);
    if (!coarse || !y0 || !y1 || !x0 || !x1 || !fy || !fx) {
        ok = 0;
    } else {
        /* arg-max per cell, the first maximum winning (as torch.argmax and numpy.argmax): class planes in
         * turn over a block of cells, so that every pass reads one plane sequentially and vectorises */
        #pragma omp parallel for schedule(static)
        for (Py_ssize_t start = 0; start < cells; start += ARGMAX_BLOCK) {
            float best[ARGMAX_BLOCK];
            Py_ssize_t n = cells - start < ARGMAX_BLOCK ? cells - start : ARGMAX_BLOCK;
            for (Py_ssize_t i = 0; i < n; i++) { best[i] = x[start + i]; coarse[start + i] = 0; }
            for (int c = 1; c < C; c++) {
                const float *plane = x + (Py_ssize_t)c * cells + start;
                for (Py_ssize_t i = 0; i < n; i++) {
                    int more = plane[i] > best[i];
                    best[i] = more ? plane[i] : best[i];
                    coarse[start + i] = more ? (uint8_t)c : coarse[start + i];
                }
            }
        }
        axis(H, h, y0, y1, fy);
        axis(W, w, x0, x1, fx);
        #pragma omp parallel for schedule(static)
        for (int yy = 0; yy < H; yy++) {
            const uint8_t *r0 = coarse + (Py_ssize_t)y0[yy] * w, *r1 = coarse + (Py_ssize_t)y1[yy] * w;
            uint8_t *o = out + (Py_ssize_t)yy * W;
            float wy1 = fy[yy], wy0 = 1.0f - wy1;
            for (int xx = 0; xx < W; xx++) {
                int a = x0[xx], b = x1[xx];
                uint8_t l00 = r0[a], l01 = r0[b], l10 = r1[a], l11 = r1[b];
                if (l00 == l01 && l00 == l10 && l00 == l11) { o[xx] = l00; continue; }
                float wx1 = fx[xx], wx0 = 1.0f - wx1;
                float w00 = wy0 * wx0, w01 = wy0 * wx1, w10 = wy1 * wx0, w11 = wy1 * wx1;
                Py_ssize_t p00 = (Py_ssize_t)y0[yy] * w + a, p01 = (Py_ssize_t)y0[yy] * w + b;
                Py_ssize_t p10 = (Py_ssize_t)y1[yy] * w + a, p11 = (Py_ssize_t)y1[yy] * w + b;
                uint8_t cand[4] = {l00, l01, l10, l11};
                uint8_t label = l00;
                float best = -INFINITY;
                for (int k = 0; k < 4; k++) {
                    const float *xc = x + (Py_ssize_t)cand[k] * cells;
                    float s = w00 * xc[p00] + w01 * xc[p01] + w10 * xc[p10] + w11 * xc[p11];
                    if (s > best) { best = s; label = cand[k]; }
                }
                o[xx] = label;
            }
        }
    }
    free(coarse); free(y0); free(y1); free(x0); free(x1); free(fy); free(fx);
    Py_END_ALLOW_THREADS

    PyBuffer_Release(&lb);
    PyBuffer_Release(&ob);
    if (!ok) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"upsample_labels", upsample_labels, METH_VARARGS, "Full-resolution labels from coarse logits (bilinear arg-max)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_labels", "taplab's C label upsampling kernel", -1, methods};

PyMODINIT_FUNC PyInit__labels(void) { return PyModule_Create(&module); }
