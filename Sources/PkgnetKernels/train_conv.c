/*
 * Backward passes of conv2d and conv_transpose2d over channel-major
 * activations [C][B*H*W] (groups 1, the students' convolutions).
 *
 * conv2d, per output-column tile (flat index over b, oy, ox):
 *   col = im2col(x)                       [Cin*k*k][T]
 *   dW += dy[:, tile] x col^T             (GEMM, reduction over the tile)
 *   col = W^T x dy[:, tile]               (same scratch, reused)
 *   dx += col2im(col)                     (parallel over input channels)
 * conv_transpose2d, per input-column tile (flat index over b, iy, ix): the
 * layer is the adjoint of conv2d(., W, stride, pad) from the output plane to
 * the input plane, so one im2col of dy serves both products:
 *   col = im2col(dy)                      [Cout*k*k][T]
 *   dW += x[:, tile] x col^T;  dx[:, tile] = W x col
 *
 * Determinism: OpenBLAS's threaded GEMM (0.3.21) blocks the reduction
 * differently from its serial one, so its bits change with the thread count
 * once k exceeds a few hundred (measured: 16x144x700 differs, x192 does not).
 * Every GEMM here is therefore cut into fixed blocks of output columns, each
 * a single-threaded BLAS call (inside our own parallel region, where OpenBLAS
 * does not thread), and tiles are added in order. col2im gives each input
 * channel to one thread and visits (tile, ky, kx, column) in a fixed order. Bias sums are per channel, sequential, in
 * double. The im2col here is one generic form (the forward's specialised
 * ones are private to conv.c, and backward speed is not yet tuned).
 */
#include "pkgnet_kernels.h"
#include "pkk_internal.h"
#include "pkk_train.h"

#include <omp.h>
#include <string.h>

/* Largest im2col block per tile and the narrowest tile it is cut to, as in the
 * forward: the GEMMs read a block that stays in cache. */
#define TR_COL_BLOCK_FLOATS 262144
#define TR_MIN_TILE 512

/* Output coordinates o in [lo, hi) whose input coordinate o*stride + off lies
 * in [0, in). */
static void tr_valid_range(int out, int stride, int off, int in, int *lo, int *hi)
{
    int l = off < 0 ? (-off + stride - 1) / stride : 0;
    int h = in - 1 - off < 0 ? 0 : (in - 1 - off) / stride + 1;
    if (h > out) h = out;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

/* Geometry of one tile of an im2col / col2im: a source plane h x w with
 * `batch` images per channel, a convolution (kernel, stride, pad) producing
 * ho x wo, output columns [c0, c0 + tn). */
typedef struct {
    const float *src; /* im2col: read */
    float *dst;       /* col2im: accumulated into */
    float *col_out;   /* im2col: written */
    const float *col_in;
    int batch, h, w, kernel, stride, pad, ho, wo;
    size_t c0;
    int tn;
} tr_cols_args;

/* Visits the runs of the tile's columns that share an output row: calls
 * the body (variadic: it contains commas) with j, b, oy, ox0, len in scope for
 * the columns [j, j + len) = (b, oy, ox0 + t). */
#define TR_FOR_ROW_RUNS(a, ...)                                                    \
    do {                                                                           \
        const size_t out_plane_ = (size_t)(a)->ho * (a)->wo;                       \
        size_t n_ = (a)->c0;                                                       \
        int j = 0;                                                                 \
        while (j < (a)->tn) {                                                      \
            const size_t b = n_ / out_plane_;                                      \
            const size_t rem_ = n_ - b * out_plane_;                               \
            const int oy = (int)(rem_ / (size_t)(a)->wo);                          \
            const int ox0 = (int)(rem_ - (size_t)oy * (a)->wo);                    \
            int len = (a)->wo - ox0;                                               \
            if (len > (a)->tn - j) len = (a)->tn - j;                              \
            __VA_ARGS__                                                            \
            j += len;                                                              \
            n_ += (size_t)len;                                                     \
        }                                                                          \
    } while (0)

/* im2col rows [lo, hi), row r = (ci, ky, kx): col[r][j] = src[ci][b][iy][ix]
 * or 0 in the padding. */
static void tr_im2col_rows(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const tr_cols_args *a = args;
    const int k = a->kernel, kk = k * k, s = a->stride;
    const size_t plane = (size_t)a->h * a->w;
    const size_t in_ch = (size_t)a->batch * plane;
    for (long r = lo; r < hi; r++) {
        const int ci = (int)(r / kk);
        const int ky = (int)(r % kk) / k, kx = (int)(r % kk) % k;
        const float *restrict xc = a->src + (size_t)ci * in_ch;
        float *restrict d = a->col_out + (size_t)r * a->tn;
        int vlo, vhi; /* ox reading inside the row */
        tr_valid_range(a->wo, s, kx - a->pad, a->w, &vlo, &vhi);
        TR_FOR_ROW_RUNS(a, {
            float *restrict dj = d + j;
            const int iy = oy * s - a->pad + ky;
            if (iy < 0 || iy >= a->h) {
                for (int t = 0; t < len; t++) dj[t] = 0.0f;
            } else {
                const float *restrict row = xc + b * plane + (size_t)iy * a->w;
                for (int t = 0; t < len; t++) {
                    const int ox = ox0 + t;
                    dj[t] = (ox >= vlo && ox < vhi) ? row[ox * s + kx - a->pad] : 0.0f;
                }
            }
        });
    }
}

/* col2im for input channels [lo, hi): dst[ci][b][iy][ix] += col[(ci,ky,kx)][j].
 * One thread owns a channel, so no two threads add to the same element. */
static void tr_col2im_channels(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const tr_cols_args *a = args;
    const int k = a->kernel, kk = k * k, s = a->stride;
    const size_t plane = (size_t)a->h * a->w;
    const size_t in_ch = (size_t)a->batch * plane;
    for (long ci = lo; ci < hi; ci++) {
        float *restrict xc = a->dst + (size_t)ci * in_ch;
        for (int kyx = 0; kyx < kk; kyx++) {
            const int ky = kyx / k, kx = kyx % k;
            const float *restrict src = a->col_in + ((size_t)ci * kk + kyx) * a->tn;
            int vlo, vhi;
            tr_valid_range(a->wo, s, kx - a->pad, a->w, &vlo, &vhi);
            TR_FOR_ROW_RUNS(a, {
                const int iy = oy * s - a->pad + ky;
                if (iy >= 0 && iy < a->h) {
                    float *restrict row = xc + b * plane + (size_t)iy * a->w;
                    int t0 = vlo - ox0, t1 = vhi - ox0;
                    if (t0 < 0) t0 = 0;
                    if (t1 > len) t1 = len;
                    for (int t = t0; t < t1; t++) row[(ox0 + t) * s + kx - a->pad] += src[j + t];
                }
            });
        }
    }
}

/* ---- GEMM in fixed column blocks ---- */

/* Output columns per BLAS call. Fixed, so that the block shapes (and with
 * them OpenBLAS's serial blocking) never depend on the thread count. */
#define TR_GEMM_NB 128

typedef struct {
    int trans_a, trans_b, m, n, k;
    float alpha, beta;
    const float *a, *b;
    int lda, ldb, ldc;
    float *c;
} tr_gemm_args;

static void tr_gemm_block(const tr_gemm_args *g, int block)
{
    const int n0 = block * TR_GEMM_NB;
    const int nb = g->n - n0 < TR_GEMM_NB ? g->n - n0 : TR_GEMM_NB;
    const float *b = g->trans_b ? g->b + (size_t)n0 * g->ldb : g->b + n0;
    pkk_sgemm(g->trans_a, g->trans_b, g->m, nb, g->k, g->alpha, g->a, g->lda, b, g->ldb, g->beta,
              g->c + n0, g->ldc);
}

/* pkk_sgemm's contract (row-major C = alpha op(A) op(B) + beta C), with the
 * same bits for any thread count. With one thread available OpenBLAS is
 * serial already; otherwise the blocks are spread over a team of at least two
 * threads, so that every call sees omp_in_parallel() and stays serial. */
static void tr_gemm(int trans_a, int trans_b, int m, int n, int k, float alpha,
                    const float *a, int lda, const float *b, int ldb, float beta,
                    float *c, int ldc)
{
    if (m <= 0 || n <= 0) return;
    const tr_gemm_args g = { trans_a, trans_b, m, n, k, alpha, beta, a, b, lda, ldb, ldc, c };
    const int blocks = (n + TR_GEMM_NB - 1) / TR_GEMM_NB;
    const int available = omp_in_parallel() ? 1 : omp_get_max_threads();
    if (available <= 1) {
        for (int blk = 0; blk < blocks; blk++) tr_gemm_block(&g, blk);
        return;
    }
    int threads = blocks < available ? blocks : available;
    if (threads < 2) threads = 2;
#pragma omp parallel num_threads(threads)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        for (int blk = t; blk < blocks; blk += nt) tr_gemm_block(&g, blk);
    }
}

/* ---- per-channel sums (bias gradients) ---- */

typedef struct {
    const float *a;
    size_t n;
    float *out;
} tr_sum_args;

static void tr_channel_sums(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const tr_sum_args *a = args;
    for (long c = lo; c < hi; c++) {
        const float *restrict r = a->a + (size_t)c * a->n;
        double s = 0.0;
        for (size_t i = 0; i < a->n; i++) s += r[i];
        a->out[c] = (float)((double)a->out[c] + s);
    }
}

/* out[c] += sum of a[c][0..n) for c < channels. */
static void tr_add_channel_sums(const float *a, int channels, size_t n, float *out)
{
    const tr_sum_args s = { a, n, out };
    pkk_run(channels, (size_t)channels * n, tr_channel_sums, &s);
}

/* Columns per tile: as many as the scratch holds, capped so that the block
 * stays in cache. 0 when not even one column fits. */
static size_t tr_tile(size_t scratch_floats, size_t rows, size_t ncols)
{
    size_t tile = scratch_floats / rows;
    size_t cap = TR_COL_BLOCK_FLOATS / rows;
    if (cap < TR_MIN_TILE) cap = TR_MIN_TILE;
    if (tile > cap) tile = cap;
    if (tile > ncols) tile = ncols;
    return tile;
}

/* ---- conv2d ---- */

size_t pkk_conv2d_backward_scratch_floats(int cin, int kernel, int cols)
{
    return (size_t)cin * (size_t)kernel * (size_t)kernel * (size_t)cols;
}

int pkk_conv2d_backward(const float *x, int cin, int batch, int h, int w,
                        const float *weight, int cout, int kernel, int stride, int pad,
                        const float *dy, float *dx, int accumulate,
                        float *dweight, float *dbias,
                        float *scratch, size_t scratch_floats)
{
    const int ho = (h + 2 * pad - kernel) / stride + 1;
    const int wo = (w + 2 * pad - kernel) / stride + 1;
    if (cin <= 0 || cout <= 0 || batch <= 0 || ho <= 0 || wo <= 0) return 0;
    const size_t ncols = (size_t)batch * ho * wo;
    const size_t in_ch = (size_t)batch * h * w;
    const int kdim = cin * kernel * kernel;

    const int direct = kernel == 1 && stride == 1 && pad == 0;
    const size_t tile = tr_tile(scratch_floats, (size_t)kdim, ncols);
    if (!direct && tile < 1 && (dx != NULL || dweight != NULL)) {
        pkk_set_errorf("conv2d backward: scratch of %zu floats holds no column of %d rows",
                       scratch_floats, kdim);
        return -1;
    }
    if (dbias != NULL) tr_add_channel_sums(dy, cout, ncols, dbias);
    if (dx == NULL && dweight == NULL) return 0;

    if (direct) {
        /* x is its own im2col: one GEMM each, reduction over all columns */
        if (dweight != NULL)
            tr_gemm(0, 1, cout, cin, (int)ncols, 1.0f, dy, (int)ncols, x, (int)ncols, 1.0f,
                      dweight, cin);
        if (dx != NULL)
            tr_gemm(1, 0, cin, (int)ncols, cout, 1.0f, weight, cin, dy, (int)ncols,
                      accumulate ? 1.0f : 0.0f, dx, (int)ncols);
        return 0;
    }

    if (dx != NULL && !accumulate) memset(dx, 0, sizeof(float) * (size_t)cin * in_ch);

    for (size_t c0 = 0; c0 < ncols; c0 += tile) {
        const int tn = (int)(ncols - c0 < tile ? ncols - c0 : tile);
        const tr_cols_args ca = { x, dx, scratch, scratch, batch, h, w, kernel, stride, pad,
                                  ho, wo, c0, tn };
        if (dweight != NULL) {
            pkk_run(kdim, (size_t)kdim * tn, tr_im2col_rows, &ca);
            tr_gemm(0, 1, cout, kdim, tn, 1.0f, dy + c0, (int)ncols, scratch, tn, 1.0f,
                      dweight, kdim);
        }
        if (dx != NULL) {
            tr_gemm(1, 0, kdim, tn, cout, 1.0f, weight, kdim, dy + c0, (int)ncols, 0.0f,
                      scratch, tn);
            pkk_run(cin, (size_t)kdim * tn, tr_col2im_channels, &ca);
        }
    }
    return 0;
}

/* ---- conv_transpose2d ---- */

size_t pkk_conv_transpose2d_backward_scratch_floats(int cout, int kernel, int cols)
{
    return (size_t)cout * (size_t)kernel * (size_t)kernel * (size_t)cols;
}

int pkk_conv_transpose2d_backward(const float *x, int cin, int batch, int h, int w,
                                  const float *weight, int cout, int kernel, int stride,
                                  int pad, int output_padding,
                                  const float *dy, float *dx, int accumulate,
                                  float *dweight, float *dbias,
                                  float *scratch, size_t scratch_floats)
{
    const int ho = (h - 1) * stride - 2 * pad + kernel + output_padding;
    const int wo = (w - 1) * stride - 2 * pad + kernel + output_padding;
    if (cin <= 0 || cout <= 0 || batch <= 0 || h <= 0 || w <= 0 || ho <= 0 || wo <= 0) return 0;
    const size_t ncols = (size_t)batch * h * w; /* columns of x and dx */
    const size_t out_ch = (size_t)batch * ho * wo;
    const int rows = cout * kernel * kernel;

    const size_t tile = tr_tile(scratch_floats, (size_t)rows, ncols);
    if (tile < 1 && (dx != NULL || dweight != NULL)) {
        pkk_set_errorf("conv_transpose2d backward: scratch of %zu floats holds no column of %d rows",
                       scratch_floats, rows);
        return -1;
    }
    if (dbias != NULL) tr_add_channel_sums(dy, cout, out_ch, dbias);
    if (dx == NULL && dweight == NULL) return 0;

    for (size_t c0 = 0; c0 < ncols; c0 += tile) {
        const int tn = (int)(ncols - c0 < tile ? ncols - c0 : tile);
        /* dy seen as the input of a conv (ho x wo -> h x w); columns index x */
        const tr_cols_args ca = { dy, NULL, scratch, scratch, batch, ho, wo, kernel, stride, pad,
                                  h, w, c0, tn };
        pkk_run(rows, (size_t)rows * tn, tr_im2col_rows, &ca);
        if (dweight != NULL)
            tr_gemm(0, 1, cin, rows, tn, 1.0f, x + c0, (int)ncols, scratch, tn, 1.0f,
                      dweight, rows);
        if (dx != NULL)
            tr_gemm(0, 0, cin, tn, rows, 1.0f, weight, rows, scratch, tn,
                      accumulate ? 1.0f : 0.0f, dx + c0, (int)ncols);
    }
    return 0;
}
