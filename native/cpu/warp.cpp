/*
 * taplab.native._warp: fast feature warping (TapLab's FFW) on the feature grid, C++ with OpenMP.
 *
 * Semantics are defined by taplab/ops/warp.py (warp_reference and motion_to_grid, the torch/numpy
 * reference); tests/native/test_warp.py checks agreement (nearest: equal; bilinear: to float
 * rounding). For cell (i, j) with flow (fx, fy) in cells, the source is (j + fx, i + fy):
 *   - outside the grid by more than half a cell -> counted as distorted; the source is clamped;
 *   - nearest: the cell at floor(source + 0.5), clamped;
 *   - bilinear: the source clamped to [0, w-1] x [0, h-1], then interpolated between its 4 cells
 *     (grid_sample with align_corners=True and border padding);
 *   - distorted[i, j] = !valid[i, j] || outside.
 *
 * warp(features, C, h, w, flow, valid, bilinear, out, distorted)
 *   features: (C, h, w) float32; flow: (h, w, 2) float32 in cells; valid: (h, w) uint8 (bool);
 *   out: (C, h, w) float32, written; distorted: (h, w) uint8, written.
 * warp_blocks(features, C, h, w, vectors, valid, gh, gw, block, sy, sx, bilinear, out, distorted)
 *   the same from the codec's block field in one pass: vectors (gh, gw, 2) float32 pixels, valid
 *   (gh, gw) uint8; each cell takes the vector of the block holding its centre (motion_to_grid's
 *   "nearest"), divided by the stride (sy, sx); no grid-sized flow is built.
 *
 * splat(features, C, h, w, cover, flow, valid, out, weight)
 *   the other direction (taplab/ops/interpolation.py, splat_reference): cell p puts its features down at
 *   p + flow(p), bilinearly over the four cells around it, weighted by cover[p] (0 where !valid[p]);
 *   out = the sums normalised by the weight each cell received (at least 1e-6), weight clipped to 1.
 *   cover: (h, w) float32; out: (C, h, w) float32, written; weight: (h, w) float32, written.
 *
 * compose(h, w, step_flow, step_valid, flow, valid, out_flow, out_valid)
 *   motion chained (taplab/ops/warp.py, compose_reference): the accumulated flow (h, w, 2) and its validity sampled
 *   bilinearly at each cell's step source, as warp() samples features; out_flow = step_flow + the sampled flow,
 *   out_valid = step_valid && sampled validity > 0.999. Flows float32, validity uint8 (bool).
 *
 * warp and warp_blocks, in two passes: the source and weights of every cell (rows in parallel), then the channel planes in
 * order, four at a time so that each cell's taps are read once per four channels (groups in parallel). OpenMP threads come from the runtime torch loaded
 * (the same libgomp), so torch.set_num_threads bounds them. The GIL is released; arrays travel
 * through the buffer protocol (no numpy headers). All arrays C-contiguous.
 */
#include "buffers.h"
#include <cmath>
#include <cstdint>
#include <algorithm>
#include <memory>
#include <vector>

namespace {

/* channels splatted per pass over the cells (2 balances 19 classes over two threads; 4 reads the shares least) */
constexpr int SPLAT_GROUP = 2;

struct Taps {  // where each cell samples: the top-left source cell and its neighbours' offsets and weights
    std::vector<int32_t> base, dx, dy;
    std::vector<float> wx, wy;
    explicit Taps(Py_ssize_t cells) : base(cells), dx(cells), dy(cells), wx(cells), wy(cells) {}
};

inline void tap(Taps &t, Py_ssize_t p, int i, int j, float fx, float fy, bool ok, int h, int w, bool bilinear,
                uint8_t *distorted) {
    float sx = (float)j + fx, sy = (float)i + fy;
    bool outside = sx < -0.5f || sx > w - 0.5f || sy < -0.5f || sy > h - 0.5f;
    distorted[p] = !ok || outside;
    if (bilinear) {
        float gx = sx < 0 ? 0 : (sx > w - 1 ? (float)(w - 1) : sx);
        float gy = sy < 0 ? 0 : (sy > h - 1 ? (float)(h - 1) : sy);
        int x0 = (int)std::floor(gx), y0 = (int)std::floor(gy);
        t.wx[p] = gx - x0;
        t.wy[p] = gy - y0;
        t.base[p] = y0 * w + x0;
        t.dx[p] = x0 + 1 < w ? 1 : 0;
        t.dy[p] = y0 + 1 < h ? w : 0;
    } else {
        int ix = (int)std::floor(sx + 0.5f), iy = (int)std::floor(sy + 0.5f);
        ix = ix < 0 ? 0 : (ix > w - 1 ? w - 1 : ix);
        iy = iy < 0 ? 0 : (iy > h - 1 ? h - 1 : iy);
        t.base[p] = iy * w + ix;
    }
}

void sample(const Taps &t, const float *x, float *out, int C, Py_ssize_t cells, bool bilinear) {
    /* channels in groups of up to 4 per pass over the cells, so that a cell's taps are read once per group */
    const int groups = (C + 3) / 4;
#pragma omp parallel for schedule(static)
    for (int g = 0; g < groups; g++) {
        const int c0 = 4 * g, n = C - c0 < 4 ? C - c0 : 4;
        const float *src[4];
        float *dst[4];
        for (int k = 0; k < n; k++) {
            src[k] = x + (Py_ssize_t)(c0 + k) * cells;
            dst[k] = out + (Py_ssize_t)(c0 + k) * cells;
        }
        if (bilinear) {
            for (Py_ssize_t p = 0; p < cells; p++) {
                const int32_t b = t.base[p], dx = t.dx[p], dy = t.dy[p];
                const float wx = t.wx[p], wy = t.wy[p];
                for (int k = 0; k < n; k++) {
                    const float *a = src[k] + b;
                    float top = a[0] + wx * (a[dx] - a[0]);
                    float bottom = a[dy] + wx * (a[dy + dx] - a[dy]);
                    dst[k][p] = top + wy * (bottom - top);
                }
            }
        } else {
            for (Py_ssize_t p = 0; p < cells; p++) {
                const int32_t b = t.base[p];
                for (int k = 0; k < n; k++) dst[k][p] = src[k][b];
            }
        }
    }
}

/* The buffers every entry point shares; released in reverse order by the destructor. */
struct Buffers {
    std::vector<Py_buffer> views;
    bool ok = true;
    void get(PyObject *obj, Py_ssize_t need, bool writable, const char *what) {
        if (!ok) return;
        Py_buffer view;
        if (get_buffer(obj, &view, need, writable, what) < 0) { ok = false; return; }
        views.push_back(view);
    }
    void *operator[](size_t k) const { return views[k].buf; }
    ~Buffers() {
        for (auto it = views.rbegin(); it != views.rend(); ++it) PyBuffer_Release(&*it);
    }
};

PyObject *warp(PyObject *, PyObject *args) {
    PyObject *x_o, *flow_o, *valid_o, *out_o, *dist_o;
    int C, h, w, bilinear;
    if (!PyArg_ParseTuple(args, "OiiiOOpOO", &x_o, &C, &h, &w, &flow_o, &valid_o, &bilinear, &out_o, &dist_o))
        return nullptr;
    if (C < 1 || h < 1 || w < 1) {
        PyErr_SetString(PyExc_ValueError, "warp: sizes must be >= 1");
        return nullptr;
    }
    Py_ssize_t cells = (Py_ssize_t)h * w;
    Buffers b;
    b.get(x_o, C * cells * 4, false, "features");
    b.get(flow_o, cells * 8, false, "flow");
    b.get(valid_o, cells, false, "valid");
    b.get(out_o, C * cells * 4, true, "out");
    b.get(dist_o, cells, true, "distorted");
    if (!b.ok) return nullptr;
    auto x = (const float *)b[0], flow = (const float *)b[1];
    auto valid = (const uint8_t *)b[2];
    auto out = (float *)b[3];
    auto dist = (uint8_t *)b[4];
    Py_BEGIN_ALLOW_THREADS
    Taps t(cells);
#pragma omp parallel for schedule(static)
    for (int i = 0; i < h; i++)
        for (int j = 0; j < w; j++) {
            Py_ssize_t p = (Py_ssize_t)i * w + j;
            tap(t, p, i, j, flow[2 * p], flow[2 * p + 1], valid[p], h, w, bilinear, dist);
        }
    sample(t, x, out, C, cells, bilinear);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyObject *warp_blocks(PyObject *, PyObject *args) {
    PyObject *x_o, *vec_o, *valid_o, *out_o, *dist_o;
    int C, h, w, gh, gw, block, bilinear;
    double sy, sx;
    if (!PyArg_ParseTuple(args, "OiiiOOiiiddpOO", &x_o, &C, &h, &w, &vec_o, &valid_o, &gh, &gw, &block, &sy, &sx,
                          &bilinear, &out_o, &dist_o))
        return nullptr;
    if (C < 1 || h < 1 || w < 1 || gh < 1 || gw < 1 || block < 1 || !(sy > 0) || !(sx > 0)) {
        PyErr_SetString(PyExc_ValueError, "warp_blocks: sizes, block and strides must be positive");
        return nullptr;
    }
    Py_ssize_t cells = (Py_ssize_t)h * w, blocks = (Py_ssize_t)gh * gw;
    Buffers b;
    b.get(x_o, C * cells * 4, false, "features");
    b.get(vec_o, blocks * 8, false, "vectors");
    b.get(valid_o, blocks, false, "valid");
    b.get(out_o, C * cells * 4, true, "out");
    b.get(dist_o, cells, true, "distorted");
    if (!b.ok) return nullptr;
    auto x = (const float *)b[0], vec = (const float *)b[1];
    auto valid = (const uint8_t *)b[2];
    auto out = (float *)b[3];
    auto dist = (uint8_t *)b[4];
    Py_BEGIN_ALLOW_THREADS
    /* the block holding each cell's centre, as motion_to_grid's "nearest" (in double, as numpy) */
    std::vector<int> by(h), bx(w);
    for (int i = 0; i < h; i++) {
        int k = (int)std::floor(((i + 0.5) * sy - 0.5) / block - 0.5 + 0.5);
        by[i] = k < 0 ? 0 : (k > gh - 1 ? gh - 1 : k);
    }
    for (int j = 0; j < w; j++) {
        int k = (int)std::floor(((j + 0.5) * sx - 0.5) / block - 0.5 + 0.5);
        bx[j] = k < 0 ? 0 : (k > gw - 1 ? gw - 1 : k);
    }
    const float fsx = (float)sx, fsy = (float)sy;
    Taps t(cells);
#pragma omp parallel for schedule(static)
    for (int i = 0; i < h; i++)
        for (int j = 0; j < w; j++) {
            Py_ssize_t p = (Py_ssize_t)i * w + j, q = (Py_ssize_t)by[i] * gw + bx[j];
            bool ok = valid[q];
            float fx = ok ? vec[2 * q] / fsx : 0.0f, fy = ok ? vec[2 * q + 1] / fsy : 0.0f;
            tap(t, p, i, j, fx, fy, ok, h, w, bilinear, dist);
        }
    sample(t, x, out, C, cells, bilinear);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyObject *splat(PyObject *, PyObject *args) {
    PyObject *x_o, *cover_o, *flow_o, *valid_o, *out_o, *weight_o;
    int C, h, w;
    if (!PyArg_ParseTuple(args, "OiiiOOOOO", &x_o, &C, &h, &w, &cover_o, &flow_o, &valid_o, &out_o, &weight_o))
        return nullptr;
    if (C < 1 || h < 1 || w < 1) {
        PyErr_SetString(PyExc_ValueError, "splat: sizes must be positive");
        return nullptr;
    }
    Py_ssize_t cells = (Py_ssize_t)h * w;
    Buffers b;
    b.get(x_o, C * cells * 4, false, "features");
    b.get(cover_o, cells * 4, false, "cover");
    b.get(flow_o, cells * 8, false, "flow");
    b.get(valid_o, cells, false, "valid");
    b.get(out_o, C * cells * 4, true, "out");
    b.get(weight_o, cells * 4, true, "weight");
    if (!b.ok) return nullptr;
    auto x = (const float *)b[0], cover = (const float *)b[1], flow = (const float *)b[2];
    auto valid = (const uint8_t *)b[3];
    auto out = (float *)b[4], weight = (float *)b[5];
    Py_BEGIN_ALLOW_THREADS
    /* each cell's four targets and shares (rows in parallel), then the weight every cell receives (in cell order) */
    std::unique_ptr<int32_t[]> target(new int32_t[4 * cells]);  // written in full below: not zeroed first
    std::unique_ptr<float[]> share(new float[4 * cells]);
#pragma omp parallel for schedule(static)
    for (int i = 0; i < h; i++)
        for (int j = 0; j < w; j++) {
            Py_ssize_t p = (Py_ssize_t)i * w + j;
            float tx = (float)j + flow[2 * p], ty = (float)i + flow[2 * p + 1];
            float x0 = std::floor(tx), y0 = std::floor(ty), mass = valid[p] ? cover[p] : 0.0f;
            for (int k = 0; k < 4; k++) {
                float cx = x0 + (k >> 1), cy = y0 + (k & 1);
                float s = mass * (1.0f - std::fabs(tx - cx)) * (1.0f - std::fabs(ty - cy));
                bool inside = cx >= 0 && cx < w && cy >= 0 && cy < h && s > 0;
                target[4 * p + k] = inside ? (int32_t)cy * w + (int32_t)cx : -1;
                share[4 * p + k] = s;
            }
        }
    std::fill(weight, weight + cells, 0.0f);
    for (Py_ssize_t q = 0; q < 4 * cells; q++)
        if (target[q] >= 0) weight[target[q]] += share[q];
    /* the channel planes in groups of SPLAT_GROUP, each group by one thread (no two threads write one plane), so
       that a cell's targets and shares are read once per group; each plane's sums in cell order, as one
       channel at a time would make them; then normalised by the weight */
    const int groups = (C + SPLAT_GROUP - 1) / SPLAT_GROUP;
#pragma omp parallel for schedule(static)
    for (int g = 0; g < groups; g++) {
        const int c0 = SPLAT_GROUP * g, n = C - c0 < SPLAT_GROUP ? C - c0 : SPLAT_GROUP;
        const float *src[SPLAT_GROUP];
        float *dst[SPLAT_GROUP];
        for (int k = 0; k < n; k++) {
            src[k] = x + (Py_ssize_t)(c0 + k) * cells;
            dst[k] = out + (Py_ssize_t)(c0 + k) * cells;
            std::fill(dst[k], dst[k] + cells, 0.0f);
        }
        for (Py_ssize_t p = 0; p < cells; p++)
            for (int e = 0; e < 4; e++) {
                const int32_t t = target[4 * p + e];
                if (t < 0) continue;
                const float s = share[4 * p + e];
                for (int k = 0; k < n; k++) dst[k][t] += src[k][p] * s;
            }
        for (int k = 0; k < n; k++)
            for (Py_ssize_t p = 0; p < cells; p++) dst[k][p] /= weight[p] > 1e-6f ? weight[p] : 1e-6f;
    }
    for (Py_ssize_t p = 0; p < cells; p++) weight[p] = weight[p] < 1.0f ? weight[p] : 1.0f;
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyObject *compose(PyObject *, PyObject *args) {
    PyObject *sf_o, *sv_o, *af_o, *av_o, *of_o, *ov_o;
    int h, w;
    if (!PyArg_ParseTuple(args, "iiOOOOOO", &h, &w, &sf_o, &sv_o, &af_o, &av_o, &of_o, &ov_o)) return nullptr;
    if (h < 1 || w < 1) {
        PyErr_SetString(PyExc_ValueError, "compose: sizes must be >= 1");
        return nullptr;
    }
    Py_ssize_t cells = (Py_ssize_t)h * w;
    Buffers b;
    b.get(sf_o, cells * 8, false, "step flow");
    b.get(sv_o, cells, false, "step valid");
    b.get(af_o, cells * 8, false, "accumulated flow");
    b.get(av_o, cells, false, "accumulated valid");
    b.get(of_o, cells * 8, true, "out flow");
    b.get(ov_o, cells, true, "out valid");
    if (!b.ok) return nullptr;
    auto sf = (const float *)b[0], af = (const float *)b[2];
    auto sv = (const uint8_t *)b[1], av = (const uint8_t *)b[3];
    auto of = (float *)b[4];
    auto ov = (uint8_t *)b[5];
    Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for schedule(static)
    for (int i = 0; i < h; i++)
        for (int j = 0; j < w; j++) {
            /* the bilinear taps of warp(), sampling the accumulated flow's two planes and its validity as 0/1 */
            Py_ssize_t p = (Py_ssize_t)i * w + j;
            float sx = (float)j + sf[2 * p], sy = (float)i + sf[2 * p + 1];
            float gx = sx < 0 ? 0 : (sx > w - 1 ? (float)(w - 1) : sx);
            float gy = sy < 0 ? 0 : (sy > h - 1 ? (float)(h - 1) : sy);
            int x0 = (int)std::floor(gx), y0 = (int)std::floor(gy);
            const float wx = gx - x0, wy = gy - y0;
            const Py_ssize_t q = (Py_ssize_t)y0 * w + x0, dx = x0 + 1 < w ? 1 : 0, dy = y0 + 1 < h ? w : 0;
            const Py_ssize_t corner[4] = {q, q + dx, q + dy, q + dy + dx};
            float v[3];
            for (int k = 0; k < 3; k++) {
                float a[4];
                for (int c = 0; c < 4; c++) a[c] = k < 2 ? af[2 * corner[c] + k] : (av[corner[c]] ? 1.0f : 0.0f);
                float top = a[0] + wx * (a[1] - a[0]);
                float bottom = a[2] + wx * (a[3] - a[2]);
                v[k] = top + wy * (bottom - top);
            }
            of[2 * p] = sf[2 * p] + v[0];
            of[2 * p + 1] = sf[2 * p + 1] + v[1];
            ov[p] = sv[p] && v[2] > 0.999f;
        }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyMethodDef methods[] = {
    {"warp", warp, METH_VARARGS, "warp(features, C, h, w, flow, valid, bilinear, out, distorted)"},
    {"splat", splat, METH_VARARGS, "splat(features, C, h, w, cover, flow, valid, out, weight)"},
    {"compose", compose, METH_VARARGS, "compose(h, w, step_flow, step_valid, flow, valid, out_flow, out_valid)"},
    {"warp_blocks", warp_blocks, METH_VARARGS,
     "warp_blocks(features, C, h, w, vectors, valid, gh, gw, block, sy, sx, bilinear, out, distorted)"},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_warp", "FFW on the feature grid (C++, OpenMP).", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__warp(void) { return PyModule_Create(&module); }
