/*
 * The CUDA warp kernel: the same semantics as native/cpu/warp.cpp and taplab/ops/warp.py
 * (warp_reference, motion_to_grid "nearest"), for float32 and float16 features on the GPU.
 *
 * One thread per feature cell: it finds the cell's source once (from a grid flow, or straight from
 * the codec's block field) and loops over the channels; neighbouring threads read and write
 * neighbouring addresses of every channel plane (coalesced). Interpolation is computed in float32.
 *
 * A plain C ABI, no torch headers: taplab/native/cuda.py compiles this file with nvcc on first use
 * (cached) and calls it through ctypes with the tensors' device pointers and torch's current stream.
 * Every entry point returns a cudaError_t (0 = success); it launches on ``device`` (made current for
 * the launch, the caller's device restored after: this library links its own CUDA runtime).
 *
 *   taplab_warp_{f32,f16}(x, C, h, w, flow, valid, bilinear, out, distorted, device, stream)
 *   taplab_warp_blocks_{f32,f16}(x, C, h, w, vectors, valid, gh, gw, block, sy, sx, bilinear, out, distorted,
 *                                device, stream)
 * x, out: (C, h, w); flow: (h, w, 2) float32 cells; vectors: (gh, gw, 2) float32 pixels; valid: uint8.
 *
 * Compile with -fmad=false (taplab/native/cuda.py does): the block lookup must round like the CPU
 * reference, and a fused multiply-add of (i + 0.5) * sy - 0.5 picks the neighbouring block where the
 * product lands exactly on a block boundary (found: a 285-pixel-high frame at stride 285/35, row 31).
 */
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

namespace {

#define HD __host__ __device__

HD inline float to_float(float v) { return v; }
HD inline float to_float(__half v) { return __half2float(v); }
HD inline void store(float *p, float v) { *p = v; }
HD inline void store(__half *p, float v) { *p = __float2half(v); }
HD inline int clamp(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

template <typename T>
HD void sample_cell(const T *x, int C, int h, int w, int i, int j, float fx, float fy, bool ok, bool bilinear,
                    T *out, uint8_t *distorted) {
    const long long cells = (long long)h * w, p = (long long)i * w + j;
    float sx = (float)j + fx, sy = (float)i + fy;
    bool outside = sx < -0.5f || sx > w - 0.5f || sy < -0.5f || sy > h - 0.5f;
    distorted[p] = !ok || outside;
    if (bilinear) {
        float gx = fminf(fmaxf(sx, 0.0f), (float)(w - 1)), gy = fminf(fmaxf(sy, 0.0f), (float)(h - 1));
        int x0 = (int)floorf(gx), y0 = (int)floorf(gy);
        float wx = gx - x0, wy = gy - y0;
        long long base = (long long)y0 * w + x0;
        int dx = x0 + 1 < w ? 1 : 0, dy = y0 + 1 < h ? w : 0;
        for (int c = 0; c < C; c++) {
            const T *a = x + c * cells + base;
            float a00 = to_float(a[0]), a01 = to_float(a[dx]), a10 = to_float(a[dy]), a11 = to_float(a[dy + dx]);
            float top = a00 + wx * (a01 - a00), bottom = a10 + wx * (a11 - a10);
            store(out + c * cells + p, top + wy * (bottom - top));
        }
    } else {
        int ix = clamp((int)floorf(sx + 0.5f), 0, w - 1), iy = clamp((int)floorf(sy + 0.5f), 0, h - 1);
        long long src = (long long)iy * w + ix;
        for (int c = 0; c < C; c++) out[c * cells + p] = x[c * cells + src];
    }
}

// Cell p of a warp by a grid flow: what one thread of warp_kernel does (and the host test loop).
template <typename T>
HD void warp_cell(long long p, const T *x, int C, int h, int w, const float *flow, const uint8_t *valid, bool bilinear,
                  T *out, uint8_t *distorted) {
    int i = (int)(p / w), j = (int)(p % w);
    sample_cell(x, C, h, w, i, j, flow[2 * p], flow[2 * p + 1], valid[p] != 0, bilinear, out, distorted);
}

// Cell p of a warp straight from the block field.
template <typename T>
HD void warp_blocks_cell(long long p, const T *x, int C, int h, int w, const float *vectors, const uint8_t *valid,
                         int gh, int gw, int block, double sy, double sx, bool bilinear, T *out, uint8_t *distorted) {
    int i = (int)(p / w), j = (int)(p % w);
    // the block holding the cell's centre, in double and in the order motion_to_grid computes it
    int by = clamp((int)floor(((i + 0.5) * sy - 0.5) / block - 0.5 + 0.5), 0, gh - 1);
    int bx = clamp((int)floor(((j + 0.5) * sx - 0.5) / block - 0.5 + 0.5), 0, gw - 1);
    long long q = (long long)by * gw + bx;
    bool ok = valid[q] != 0;
    float fx = ok ? vectors[2 * q] / (float)sx : 0.0f, fy = ok ? vectors[2 * q + 1] / (float)sy : 0.0f;
    sample_cell(x, C, h, w, i, j, fx, fy, ok, bilinear, out, distorted);
}

template <typename T>
__global__ void warp_kernel(const T *x, int C, int h, int w, const float *flow, const uint8_t *valid, bool bilinear,
                            T *out, uint8_t *distorted) {
    long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (p < (long long)h * w) warp_cell(p, x, C, h, w, flow, valid, bilinear, out, distorted);
}

template <typename T>
__global__ void warp_blocks_kernel(const T *x, int C, int h, int w, const float *vectors, const uint8_t *valid,
                                   int gh, int gw, int block, double sy, double sx, bool bilinear, T *out,
                                   uint8_t *distorted) {
    long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (p < (long long)h * w)
        warp_blocks_cell(p, x, C, h, w, vectors, valid, gh, gw, block, sy, sx, bilinear, out, distorted);
}

constexpr int THREADS = 256;

inline unsigned grid_for(int h, int w) { return (unsigned)(((long long)h * w + THREADS - 1) / THREADS); }

// Runs launch() on device, restoring the caller's current device; empty outputs launch nothing.
template <typename Launch>
int on_device(int device, int C, int h, int w, Launch launch) {
    if (C < 0 || h < 0 || w < 0) return (int)cudaErrorInvalidValue;
    if (C == 0 || (long long)h * w == 0) return 0;
    int previous = 0;
    cudaError_t err = cudaGetDevice(&previous);
    if (err == cudaSuccess) err = cudaSetDevice(device);
    if (err != cudaSuccess) return (int)err;
    launch();
    err = cudaGetLastError();
    cudaSetDevice(previous);
    return (int)err;
}

}  // namespace

#define TAPLAB_WARP(NAME, T)                                                                                      \
    extern "C" int NAME(const void *x, int C, int h, int w, const float *flow, const uint8_t *valid, int bilinear, \
                        void *out, uint8_t *distorted, int device, void *stream) {                                \
        return on_device(device, C, h, w, [&] {                                                                   \
            warp_kernel<T><<<grid_for(h, w), THREADS, 0, (cudaStream_t)stream>>>(                                 \
                (const T *)x, C, h, w, flow, valid, bilinear != 0, (T *)out, distorted);                          \
        });                                                                                                       \
    }
#define TAPLAB_WARP_BLOCKS(NAME, T)                                                                               \
    extern "C" int NAME(const void *x, int C, int h, int w, const float *vectors, const uint8_t *valid, int gh,    \
                        int gw, int block, double sy, double sx, int bilinear, void *out, uint8_t *distorted,     \
                        int device, void *stream) {                                                               \
        if (gh < 1 || gw < 1 || block < 1 || !(sy > 0) || !(sx > 0)) return (int)cudaErrorInvalidValue;         \
        return on_device(device, C, h, w, [&] {                                                                   \
            warp_blocks_kernel<T><<<grid_for(h, w), THREADS, 0, (cudaStream_t)stream>>>(                          \
                (const T *)x, C, h, w, vectors, valid, gh, gw, block, sy, sx, bilinear != 0, (T *)out, distorted); \
        });                                                                                                       \
    }

TAPLAB_WARP(taplab_warp_f32, float)
TAPLAB_WARP(taplab_warp_f16, __half)
TAPLAB_WARP_BLOCKS(taplab_warp_blocks_f32, float)
TAPLAB_WARP_BLOCKS(taplab_warp_blocks_f16, __half)

/*
 * The same per-cell code run on the host, one cell after another: for tests on machines without a GPU
 * (tests/native/test_warp.py), so that the kernel's arithmetic is checked against the reference
 * wherever nvcc is. Host buffers; no CUDA call.
 */
#define TAPLAB_HOST_WARP(NAME, T)                                                                                 \
    extern "C" void NAME(const void *x, int C, int h, int w, const float *flow, const uint8_t *valid, int bilinear, \
                         void *out, uint8_t *distorted) {                                                         \
        for (long long p = 0; p < (long long)h * w; p++)                                                          \
            warp_cell(p, (const T *)x, C, h, w, flow, valid, bilinear != 0, (T *)out, distorted);                 \
    }
#define TAPLAB_HOST_WARP_BLOCKS(NAME, T)                                                                          \
    extern "C" void NAME(const void *x, int C, int h, int w, const float *vectors, const uint8_t *valid, int gh,   \
                         int gw, int block, double sy, double sx, int bilinear, void *out, uint8_t *distorted) {  \
        for (long long p = 0; p < (long long)h * w; p++)                                                          \
            warp_blocks_cell(p, (const T *)x, C, h, w, vectors, valid, gh, gw, block, sy, sx, bilinear != 0,      \
                             (T *)out, distorted);                                                                \
    }

TAPLAB_HOST_WARP(taplab_host_warp_f32, float)
TAPLAB_HOST_WARP(taplab_host_warp_f16, __half)
TAPLAB_HOST_WARP_BLOCKS(taplab_host_warp_blocks_f32, float)
TAPLAB_HOST_WARP_BLOCKS(taplab_host_warp_blocks_f16, __half)
