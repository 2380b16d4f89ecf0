/* Private helpers shared by the kernel sources (not installed, not exported). */
#ifndef PKK_INTERNAL_H
#define PKK_INTERNAL_H

#include <stddef.h>

#include "pkgnet_kernels.h"

#if defined(__GNUC__)
#define PKK_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define PKK_PRINTF(f, a)
#endif

/* printf-style pkk_set_error (truncates to the slot size). */
void pkk_set_errorf(const char *format, ...) PKK_PRINTF(1, 2);

/* out[j] = element e + j of a weight source (pkgnet_kernels.h) for j < n,
 * all in row `row` for its scale: contiguous runs convert in vector loops.
 * Conversions are exact; the scale rounds once. */
void pkk_weight_source_span(pkk_weight_source *source, size_t e, size_t n, size_t row, float *out);

/* Kernels compiled three times, for x86-64-v4 (AVX-512), v3 (AVX2, FMA) and
 * the package's baseline (v2, SSE4.2), the CPU picking one at load: loops
 * the compiler vectorises run 2-4x wider than the baseline allows. Files
 * whose results must not depend on that choice turn off FMA contraction
 * (`#pragma clang fp contract(off)`): only v3 and v4 have FMA, and a fused
 * multiply-add rounds once where the baseline rounds twice. */
#define PKK_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))

/* Minimum amount of work (elements touched) before a loop opens an OpenMP
 * parallel region: below this the fork/join costs more than it saves. */
#define PKK_PAR_MIN 32768

/*
 * Runs fn over the index range [0, n), split into contiguous static parts:
 * fn(lo, hi, thread, args) once per thread in an OpenMP team of at most
 * min(n, omp_get_max_threads()) threads (thread = its index in the team, so
 * below that bound), or directly as fn(0, n, 0, args) when `work` (elements
 * touched) is below PKK_PAR_MIN or only one thread is available. Small work
 * never enters an OpenMP region: even a serialized one costs about a
 * microsecond in libomp.
 */
typedef void (*pkk_range_fn)(long lo, long hi, int thread, const void *args);
void pkk_run(long n, size_t work, pkk_range_fn fn, const void *args);

/* The CPU and the OS support x86-64-v4 (AVX-512 F, BW, CD, DQ, VL and the
 * ZMM state, the test target_clones resolvers make), and pkk_allow_avx512
 * has not turned it off: kernels may call their PKK_AVX512 functions. */
int pkk_use_avx512(void);

/* Threads pkk_run would use for n items (1 if it would not fork). */
int pkk_run_threads(long n, size_t work);

/* Per-row double sums of the training kernels: element i goes into partial
 * sum i % 16 and the partials are added in index order, so the result is
 * fixed by the row alone (the same bits on any thread count). Sixteen
 * independent chains instead of one: a single double sum waits 3-4 cycles
 * per element on the addition before, so these passes were bound by that
 * latency rather than by memory. pkk_row_sum: sum r[i]. pkk_row_sum_sq_dev:
 * sum (r[i] - mean)^2. pkk_row_sum_dot: *sum = sum dy[i], *dot = sum dy[i] *
 * ((x[i] - mean) * scale). Always inlined, so that the PKK_CLONES kernels
 * calling them vectorise them for their own instruction set. */
#define PKK_SUM_LANES 16

static inline __attribute__((always_inline)) double pkk_fold_lanes(const double p[PKK_SUM_LANES])
{
    double s = 0.0;
    for (int l = 0; l < PKK_SUM_LANES; l++) s += p[l];
    return s;
}

static inline __attribute__((always_inline)) double pkk_row_sum(const float *r, size_t n)
{
    double p[PKK_SUM_LANES] = { 0 };
    size_t i = 0;
    for (; i + PKK_SUM_LANES <= n; i += PKK_SUM_LANES)
        for (int l = 0; l < PKK_SUM_LANES; l++) p[l] += (double)r[i + l];
    for (; i < n; i++) p[i % PKK_SUM_LANES] += (double)r[i];
    return pkk_fold_lanes(p);
}

static inline __attribute__((always_inline)) double pkk_row_sum_sq_dev(const float *r, double mean, size_t n)
{
    double p[PKK_SUM_LANES] = { 0 };
    size_t i = 0;
    for (; i + PKK_SUM_LANES <= n; i += PKK_SUM_LANES)
        for (int l = 0; l < PKK_SUM_LANES; l++) {
            const double d = (double)r[i + l] - mean;
            p[l] += d * d;
        }
    for (; i < n; i++) {
        const double d = (double)r[i] - mean;
        p[i % PKK_SUM_LANES] += d * d;
    }
    return pkk_fold_lanes(p);
}

static inline __attribute__((always_inline)) void pkk_row_sum_dot(const float *dy, const float *x, double mean,
                                                                  double scale, size_t n, double *sum, double *dot)
{
    double p[PKK_SUM_LANES] = { 0 }, q[PKK_SUM_LANES] = { 0 };
    size_t i = 0;
    for (; i + PKK_SUM_LANES <= n; i += PKK_SUM_LANES)
        for (int l = 0; l < PKK_SUM_LANES; l++) {
            const double d = (double)dy[i + l];
            p[l] += d;
            q[l] += d * (((double)x[i + l] - mean) * scale);
        }
    for (; i < n; i++) {
        const double d = (double)dy[i];
        p[i % PKK_SUM_LANES] += d;
        q[i % PKK_SUM_LANES] += d * (((double)x[i] - mean) * scale);
    }
    *sum = pkk_fold_lanes(p);
    *dot = pkk_fold_lanes(q);
}

/* The forward convolution's im2col (conv.c), on the calling thread only:
 * col[(ci, ky, kx)][j] for output columns [c0, c0 + tn) of a conv of x
 * [cin][batch][h][w] (groups 1). For kernels that are already inside their
 * own parallel region. */
void pkk_im2col_serial(const float *x, int cin, int batch, int h, int w, int kernel, int stride,
                       int pad, size_t c0, int tn, float *col);

/* A packed by pkk_pack_weights ([chunk][row block][kc][6]) as [row
 * block][k][6]: each block's weights for the whole reduction in one run
 * (packed_gemm.c). dst holds pkk_packed_weight_floats(m, k). */
void pkk_packed_row_blocks(const float *a, int m, int k, float *dst);

/* 3x3 stride-2 pad-1 convolution (groups 1) from weights packed for the
 * GEMM (strided3x3.c), on AVX-512 for outputs 16 or 8 wide (ho divisible by
 * 4 or 8): y as pkk_conv2d writes it. Returns 0 (y untouched) where it does
 * not take the shape or the scratch holds less than one thread's share. */
int pkk_conv3x3s2_packed(const float *x, int cin, int batch, int h, int w, const float *a, const float *bias,
                         int cout, const float *residual, int relu, float *y, float *scratch, size_t scratch_floats);

/* The cached array of `floats` floats in `slot`, made by fill(dst, args) on
 * the first call (weight_cache.c); NULL if memory is short, or if fill is
 * NULL (only look) and nothing is cached yet. Safe to race. Slots: the
 * packing for pkk_gemm_packed, and a 3x3 convolution's transposed weights
 * (pkk_transposed_winograd_weights). */
enum { PKK_CACHE_PACKED = 0, PKK_CACHE_TRANSPOSED = 1, PKK_CACHE_SLOTS = 2 };
typedef void (*pkk_weight_fill_fn)(float *dst, const void *args);
const float *pkk_weight_cache_get(struct pkk_weight_cache *cache, int slot, size_t floats, pkk_weight_fill_fn fill,
                                  const void *args);

/* Pixels in all up to which a 3x3 convolution's GEMM runs with the roles of
 * weights and data swapped (AVX-512): so few columns are one partly used
 * 16-float vector per row of the register block, where one broadcast
 * weight per FMA caps the kernel at half the FMA peak; as rows, 64 output
 * channels make four vectors. */
#define PKK_FEW_PIXELS 16

/* That GEMM (packed_gemm.c; AVX-512 only: pkk_use_avx512()): C [m][n] (rows
 * ldc apart) = A x B, with
 *   A [m][k] the data: a 3x3 pad-1 convolution's im2col, transposed (row:
 *     one of the m = batch h w <= PKK_FEW_PIXELS pixels of x [cin][batch]
 *     [h][w]; column tap cin + ci), packed by pkk_pack_pixels3x3 into
 *     pkk_packed_weight_floats(m, 9 cin) floats
 *   B [k][n] the weights, kept in 64-column panels: W^T [9 cin][cout] made
 *     from S (pkk_winograd_arrange_weights) by
 *     pkk_transposed_winograd_weights, kept in `cache` (NULL if memory is
 *     short). */
void pkk_pack_pixels3x3(const float *x, int cin, int batch, int h, int w, float *a);
const float *pkk_transposed_winograd_weights(struct pkk_weight_cache *cache, const float *s, int cout, int cin);
void pkk_gemm_panels(const float *a, int m, int n, int k, const float *panels, float *c, size_t ldc);
/* y [cout][16] = act(W col + bias [+ residual]) for 16 pixels (one cube's
 * 4x4 map; AVX-512 only, output channels in blocks of 6 rows), col the
 * im2col [9 cin][16] in tap order (64-byte aligned), W read from S
 * (pkk_winograd_arrange_weights) as it is (winograd.c): pixels broadcast,
 * output channels in vectors, the threads splitting them. */
void pkk_conv3x3_sixteen_pixels(const float *col, const float *s, int cin, int cout, const float *bias,
                                const float *residual, int relu, float *y);

/* OpenCV INTER_LINEAR sample positions and fixed-point weights (scale 2048)
 * of one axis resized from n to d pixels (crop.c): output k reads sources
 * i0[k], i1[k] (inside [0, n)) with weights w0[k], w1[k]. clamp_weights: the
 * horizontal axis, where OpenCV also clamps the weights at the borders. */
void pkk_linear_resize_axis(int n, int d, int clamp_weights, int *i0, int *i1, int *w0, int *w1);

#endif /* PKK_INTERNAL_H */
