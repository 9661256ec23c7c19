/*
 * taplab.native._warp: fast feature warping (TapLab's FFW) on the feature grid, in one pass.
 *
 * Semantics are defined by taplab/ops/warp.py (warp, the torch reference); tests/native/test_warp.py
 * checks agreement (nearest: equal; bilinear: to float rounding). For cell (i, j) with flow (fx, fy)
 * in cells, the source is (j + fx, i + fy):
 *   - outside the grid by more than half a cell -> counted as distorted; the source is clamped;
 *   - nearest: the cell at floor(source + 0.5), clamped;
 *   - bilinear: the source clamped to [0, w-1] x [0, h-1], then interpolated between its 4 cells
 *     (grid_sample with align_corners=True and border padding);
 *   - distorted[i, j] = !valid[i, j] || outside.
 *
 * warp(features, C, h, w, flow, valid, bilinear, out, distorted)
 *   features: (C, h, w) float32; flow: (h, w, 2) float32; valid: (h, w) uint8 (bool);
 *   out: (C, h, w) float32, written; distorted: (h, w) uint8, written. All C-contiguous.
 * The per-cell source and weights are computed once, then each channel plane is filled in order
 * (cache-friendly). The GIL is released; no numpy headers (the buffer protocol only).
 */
#include "buffers.h"
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

static PyObject *warp(PyObject *self, PyObject *args) {
    PyObject *x_o, *flow_o, *valid_o, *out_o, *dist_o;
    int C, h, w, bilinear;
    if (!PyArg_ParseTuple(args, "OiiiOOpOO", &x_o, &C, &h, &w, &flow_o, &valid_o, &bilinear, &out_o, &dist_o))
        return NULL;
    if (C < 1 || h < 1 || w < 1) {
        PyErr_SetString(PyExc_ValueError, "warp: sizes must be >= 1");
        return NULL;
    }
    Py_ssize_t cells = (Py_ssize_t)h * w;
    Py_buffer xb, fb, vb, ob, db;
    if (get_buffer(x_o, &xb, C * cells * 4, 0, "features") < 0) return NULL;
    if (get_buffer(flow_o, &fb, cells * 8, 0, "flow") < 0) goto fail_x;
    if (get_buffer(valid_o, &vb, cells, 0, "valid") < 0) goto fail_f;
    if (get_buffer(out_o, &ob, C * cells * 4, 1, "out") < 0) goto fail_v;
    if (get_buffer(dist_o, &db, cells, 1, "distorted") < 0) goto fail_o;

    const float *x = xb.buf, *flow = fb.buf;
    const uint8_t *valid = vb.buf;
    float *out = ob.buf;
    uint8_t *dist = db.buf;
    int ok = 1;
    Py_BEGIN_ALLOW_THREADS
    int32_t *i00 = malloc(sizeof(int32_t) * cells);
    int32_t *dx = malloc(sizeof(int32_t) * cells), *dy = malloc(sizeof(int32_t) * cells);
    float *wx = malloc(sizeof(float) * cells), *wy = malloc(sizeof(float) * cells);
    if (!i00 || !dx || !dy || !wx || !wy) {
        ok = 0;
    } else {
        for (int i = 0; i < h; i++) {
            for (int j = 0; j < w; j++) {
                Py_ssize_t p = (Py_ssize_t)i * w + j;
                float sx = (float)j + flow[2 * p], sy = (float)i + flow[2 * p + 1];
                int outside = sx < -0.5f || sx > w - 0.5f || sy < -0.5f || sy > h - 0.5f;
                dist[p] = !valid[p] || outside;
                if (bilinear) {
                    float gx = sx < 0 ? 0 : (sx > w - 1 ? (float)(w - 1) : sx);
                    float gy = sy < 0 ? 0 : (sy > h - 1 ? (float)(h - 1) : sy);
                    int x0 = (int)floorf(gx), y0 = (int)floorf(gy);
                    wx[p] = gx - x0;
                    wy[p] = gy - y0;
                    i00[p] = y0 * w + x0;
                    dx[p] = x0 + 1 < w ? 1 : 0;
                    dy[p] = y0 + 1 < h ? w : 0;
                } else {
                    int ix = (int)floorf(sx + 0.5f), iy = (int)floorf(sy + 0.5f);
                    ix = ix < 0 ? 0 : (ix > w - 1 ? w - 1 : ix);
                    iy = iy < 0 ? 0 : (iy > h - 1 ? h - 1 : iy);
                    i00[p] = iy * w + ix;
                }
            }
        }
        for (int c = 0; c < C; c++) {
            const float *src = x + (Py_ssize_t)c * cells;
            float *dst = out + (Py_ssize_t)c * cells;
            if (bilinear) {
                for (Py_ssize_t p = 0; p < cells; p++) {
                    const float *a = src + i00[p];
                    float top = a[0] + wx[p] * (a[dx[p]] - a[0]);
                    float bottom = a[dy[p]] + wx[p] * (a[dy[p] + dx[p]] - a[dy[p]]);
                    dst[p] = top + wy[p] * (bottom - top);
                }
            } else {
                for (Py_ssize_t p = 0; p < cells; p++) dst[p] = src[i00[p]];
            }
        }
    }
    free(i00); free(dx); free(dy); free(wx); free(wy);
    Py_END_ALLOW_THREADS

    PyBuffer_Release(&db);
    PyBuffer_Release(&ob);
    PyBuffer_Release(&vb);
    PyBuffer_Release(&fb);
    PyBuffer_Release(&xb);
    if (!ok) return PyErr_NoMemory();
    Py_RETURN_NONE;
fail_o:
    PyBuffer_Release(&ob);
fail_v:
    PyBuffer_Release(&vb);
fail_f:
    PyBuffer_Release(&fb);
fail_x:
    PyBuffer_Release(&xb);
    return NULL;
}

static PyMethodDef methods[] = {
    {"warp", warp, METH_VARARGS, "warp(features, C, h, w, flow, valid, bilinear, out, distorted)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_warp", "FFW on the feature grid.", -1, methods};

PyMODINIT_FUNC PyInit__warp(void) { return PyModule_Create(&module); }
