/*
 * Backward passes of conv2d and conv_transpose2d over channel-major
 * activations [C][B*H*W] (groups 1, the students' convolutions).
 *
 * Work is cut into tiles of whole images, and each thread of one parallel
 * region takes every nt-th tile and does all of its work with serial BLAS
 * calls (OpenBLAS does not thread inside our region):
 * conv2d, per tile of output columns (b, oy, ox):
 *   col = im2col(x)                       [Cin*k*k][T]  (the forward's im2col)
 *   dW_t += dy[:, tile] x col^T           (the thread's own partial sum)
 *   col = W^T x dy[:, tile]               (same scratch, reused)
 *   dx[images of the tile] += col2im(col) (no other tile touches these images)
 *   or, for stride-1 "same" convs, dx[:, tile] (+)= flip(W)^T x im2col(dy)
 * (3x3 same convs first try Winograd, for dx as a same conv of dy and for dW
 * through the transforms' adjoints, winograd.c; what it declines runs here)
 * conv_transpose2d, per tile of input columns (b, iy, ix): the layer is the
 * adjoint of conv2d(., W, stride, pad) from the output plane to the input
 * plane, so one im2col of dy serves both products:
 *   col = im2col(dy)                      [Cout*k*k][T]
 *   dW_t += x[:, tile] x col^T;  dx[:, tile] = W x col
 * dW = sum of the threads' partials in thread order. Whole images keep the
 * col2im scatter of one tile away from every other tile's, so threads never
 * add to the same element, and the per-thread reduction keeps every GEMM
 * large (the small students' dW GEMMs are 16 x 144: split by output column
 * they would leave all but one thread idle).
 *
 * Determinism: the tiling depends on the problem, the scratch size and the
 * thread count only, so the same thread count gives the same bits; a
 * different one sums dW in another grouping (differences of float rounding).
 * Bias sums are per channel, sequential, in double.
 */
#include "pkgnet_kernels.h"
#include "pkk_internal.h"
#include "pkk_train.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* The same bits on every CPU, whichever clone runs (PKK_CLONES). */
#pragma clang fp contract(off)

/* Largest im2col block of one tile: the GEMMs then read it from cache. A
 * tile holds at least one image whatever this says. */
#define TR_COL_BLOCK_FLOATS 262144

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

/* Geometry of one tile of a col2im: a source plane h x w with
 * `batch` images per channel, a convolution (kernel, stride, pad) producing
 * ho x wo, output columns [c0, c0 + tn). */
typedef struct {
    float *dst;       /* accumulated into */
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

/* ---- tiles of whole images, one parallel region ---- */

typedef struct {
    int threads;           /* team size */
    int images;            /* images per tile */
    int tiles;
    size_t slice;          /* scratch floats per thread */
} tr_plan;

/* Splits `batch` images among threads: each thread's scratch slice must hold
 * one tile's im2col (rows x image_cols floats per image; rows 0 = no im2col).
 * Returns -1 when not even one image fits the whole scratch. */
static int tr_plan_tiles(int batch, size_t rows, size_t image_cols, size_t scratch_floats, tr_plan *p)
{
    int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
    if (threads > batch) threads = batch;
    if (threads < 1) threads = 1;
    const size_t image_floats = rows * image_cols;
    if (image_floats > 0) {
        if (scratch_floats < image_floats) return -1;
        while (threads > 1 && scratch_floats / (size_t)threads < image_floats) threads--;
    }
    const size_t slice = scratch_floats / (size_t)threads;
    size_t images = (size_t)(batch + threads - 1) / (size_t)threads;
    if (image_floats > 0) {
        size_t fit = slice / image_floats;
        size_t cap = TR_COL_BLOCK_FLOATS / image_floats;
        if (cap < 1) cap = 1;
        if (fit > cap) fit = cap;
        if (images > fit) images = fit;
    }
    if (images < 1) images = 1;
    p->images = (int)images;
    p->tiles = (int)(((size_t)batch + images - 1) / images);
    p->threads = threads < p->tiles ? threads : p->tiles;
    p->slice = slice;
    return 0;
}

/* The images [*b0, *b0 + *nb) of a tile. */
static void tr_tile_images(const tr_plan *p, int tile, int batch, int *b0, int *nb)
{
    *b0 = tile * p->images;
    *nb = batch - *b0 < p->images ? batch - *b0 : p->images;
}

/* Per-thread dW partials for a team of p->threads (NULL when one thread
 * accumulates straight into dweight). *failed is set when calloc fails. */
static float *tr_partials(const tr_plan *p, size_t wsize, const float *dweight, int *failed)
{
    *failed = 0;
    if (dweight == NULL || p->threads <= 1) return NULL;
    float *partials = calloc((size_t)p->threads * wsize, sizeof(float));
    if (partials == NULL) *failed = 1;
    return partials;
}

/* dweight += the partials, in thread order. */
static void tr_reduce_partials(float *dweight, const float *partials, int threads, size_t wsize)
{
    for (int t = 0; t < threads; t++) {
        const float *restrict src = partials + (size_t)t * wsize;
        for (size_t i = 0; i < wsize; i++) dweight[i] += src[i];
    }
}

/* ---- per-channel sums (bias gradients) ---- */

typedef struct {
    const float *a;
    size_t n;
    float *out;
} tr_sum_args;

PKK_CLONES static void tr_channel_sums(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const tr_sum_args *a = args;
    for (long c = lo; c < hi; c++) {
        a->out[c] = (float)((double)a->out[c] + pkk_row_sum(a->a + (size_t)c * a->n, a->n));
    }
}

/* out[c] += sum of a[c][0..n) for c < channels. */
static void tr_add_channel_sums(const float *a, int channels, size_t n, float *out)
{
    const tr_sum_args s = { a, n, out };
    pkk_run(channels, (size_t)channels * n, tr_channel_sums, &s);
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
    const size_t image_cols = (size_t)ho * wo;
    const size_t image_in = (size_t)h * w;
    const size_t in_ch = (size_t)batch * image_in;
    const int kdim = cin * kernel * kernel;
    const int direct = kernel == 1 && stride == 1 && pad == 0;
    /* A stride-1 "same" conv's input gradient is itself a same conv of dy
     * with the flipped, transposed kernel: im2col(dy) and one GEMM straight
     * into dx replace the GEMM into a 9x larger col and its col2im scatter. */
    const int dy_rows = cout * kernel * kernel;
    int same = !direct && dx != NULL && stride == 1 && ho == h && wo == w;

    tr_plan p;
    /* The same-conv path needs room for im2col(dy) too; without it, col2im. */
    if (same && tr_plan_tiles(batch, (size_t)(dy_rows > kdim ? dy_rows : kdim), image_cols, scratch_floats, &p) != 0)
        same = 0;
    if (!same && (dx != NULL || dweight != NULL)
        && tr_plan_tiles(batch, direct ? 0 : (size_t)kdim, image_cols, scratch_floats, &p) != 0) {
        pkk_set_errorf("conv2d backward: scratch of %zu floats holds no image of %d x %zu columns",
                       scratch_floats, kdim, image_cols);
        return -1;
    }
    if (dbias != NULL) tr_add_channel_sums(dy, cout, ncols, dbias);
    /* The weight gradient of a 3x3 same conv through Winograd: a quarter of
     * the multiplications, no im2col and no BLAS packing (it took 40% of a
     * w=64 student's training step). Declined: im2col below. */
    if (dweight != NULL && kernel == 3 && stride == 1 && pad == 1 && ho == h && wo == w && cin >= 8 && cout >= 8
        && pkk_conv3x3_winograd_dweight(x, cin, batch, h, w, dy, cout, dweight, scratch, scratch_floats))
        dweight = NULL;
    if (dx == NULL && dweight == NULL) return 0;
    const size_t wsize = (size_t)cout * kdim;
    int failed;
    float *partials = tr_partials(&p, wsize, dweight, &failed);
    /* flipped[ci][co][ky][kx] = weight[co][ci][k-1-ky][k-1-kx] */
    float *flipped = same ? malloc(sizeof(float) * wsize) : NULL;
    if (failed || (same && flipped == NULL)) {
        free(partials);
        pkk_set_errorf("conv2d backward: cannot allocate %zu bytes of partial sums",
                       (size_t)(p.threads + 1) * wsize * sizeof(float));
        return -1;
    }
    if (flipped != NULL) {
        const int kk = kernel * kernel;
        for (int co = 0; co < cout; co++)
            for (int ci = 0; ci < cin; ci++)
                for (int r = 0; r < kk; r++)
                    flipped[((size_t)ci * cout + co) * kk + (kk - 1 - r)] = weight[((size_t)co * cin + ci) * kk + r];
    }
    /* That same conv, when 3x3 with 8 or more dy channels, through Winograd
     * (a quarter of the multiplications; the flipped weights are arranged
     * for it here, they change every step). Declined: im2col below. */
    if (same && kernel == 3 && pad == 1 && cout >= 8) {
        float *arranged = malloc(sizeof(float) * pkk_winograd_weight_floats(cout, cin));
        if (arranged != NULL) {
            pkk_winograd_arrange_weights(flipped, cout, cin, arranged);
            if (pkk_conv3x3_winograd(dy, cout, batch, h, w, arranged, NULL, cin, accumulate ? dx : NULL, 0, dx, scratch,
                                     scratch_floats))
                dx = NULL;
        }
        free(arranged);
        if (dx == NULL && dweight == NULL) {
            free(flipped);
            return 0;
        }
    }
#pragma omp parallel num_threads(p.threads) if (p.threads > 1)
    {
        const int t = omp_get_thread_num();
        float *col = scratch + (size_t)t * p.slice;
        float *dw = partials != NULL ? partials + (size_t)t * wsize : dweight;
        for (int tile = t; tile < p.tiles; tile += p.threads) {
            int b0, nb;
            tr_tile_images(&p, tile, batch, &b0, &nb);
            const size_t c0 = (size_t)b0 * image_cols;
            const int tn = (int)((size_t)nb * image_cols);
            const float *cols = direct ? x + c0 : col;
            const int ldcols = direct ? (int)ncols : tn;
            if (!direct && dw != NULL) pkk_im2col_serial(x, cin, batch, h, w, kernel, stride, pad, c0, tn, col);
            if (dw != NULL)
                pkk_sgemm(0, 1, cout, kdim, tn, 1.0f, dy + c0, (int)ncols, cols, ldcols, 1.0f, dw, kdim);
            if (dx == NULL) continue;
            if (direct) {
                pkk_sgemm(1, 0, cin, tn, cout, 1.0f, weight, kdim, dy + c0, (int)ncols,
                          accumulate ? 1.0f : 0.0f, dx + c0, (int)ncols);
                continue;
            }
            if (same) {
                pkk_im2col_serial(dy, cout, batch, h, w, kernel, 1, pad, c0, tn, col);
                pkk_sgemm(0, 0, cin, tn, dy_rows, 1.0f, flipped, dy_rows, col, tn,
                          accumulate ? 1.0f : 0.0f, dx + c0, (int)ncols);
                continue;
            }
            pkk_sgemm(1, 0, kdim, tn, cout, 1.0f, weight, kdim, dy + c0, (int)ncols, 0.0f, col, tn);
            if (!accumulate)
                for (int ci = 0; ci < cin; ci++)
                    memset(dx + (size_t)ci * in_ch + (size_t)b0 * image_in, 0,
                           sizeof(float) * (size_t)nb * image_in);
            const tr_cols_args ca = { dx, col, batch, h, w, kernel, stride, pad, ho, wo, c0, tn };
            tr_col2im_channels(0, cin, 0, &ca);
        }
    }
    if (partials != NULL) {
        tr_reduce_partials(dweight, partials, p.threads, wsize);
        free(partials);
    }
    free(flipped);
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
    const size_t image_cols = (size_t)h * w;
    const size_t out_ch = (size_t)batch * ho * wo;
    const int rows = cout * kernel * kernel;

    tr_plan p;
    if ((dx != NULL || dweight != NULL)
        && tr_plan_tiles(batch, (size_t)rows, image_cols, scratch_floats, &p) != 0) {
        pkk_set_errorf("conv_transpose2d backward: scratch of %zu floats holds no image of %d x %zu columns",
                       scratch_floats, rows, image_cols);
        return -1;
    }
    if (dbias != NULL) tr_add_channel_sums(dy, cout, out_ch, dbias);
    if (dx == NULL && dweight == NULL) return 0;
    const size_t wsize = (size_t)cin * rows;
    int failed;
    float *partials = tr_partials(&p, wsize, dweight, &failed);
    if (failed) {
        pkk_set_errorf("conv_transpose2d backward: cannot allocate %zu bytes of partial sums",
                       (size_t)p.threads * wsize * sizeof(float));
        return -1;
    }
#pragma omp parallel num_threads(p.threads) if (p.threads > 1)
    {
        const int t = omp_get_thread_num();
        float *col = scratch + (size_t)t * p.slice;
        float *dw = partials != NULL ? partials + (size_t)t * wsize : dweight;
        for (int tile = t; tile < p.tiles; tile += p.threads) {
            int b0, nb;
            tr_tile_images(&p, tile, batch, &b0, &nb);
            const size_t c0 = (size_t)b0 * image_cols;
            const int tn = (int)((size_t)nb * image_cols);
            /* dy seen as the input of a conv (ho x wo -> h x w); columns index x */
            pkk_im2col_serial(dy, cout, batch, ho, wo, kernel, stride, pad, c0, tn, col);
            if (dw != NULL)
                pkk_sgemm(0, 1, cin, rows, tn, 1.0f, x + c0, (int)ncols, col, tn, 1.0f, dw, rows);
            if (dx != NULL)
                pkk_sgemm(0, 0, cin, tn, rows, 1.0f, weight, rows, col, tn,
                          accumulate ? 1.0f : 0.0f, dx + c0, (int)ncols);
        }
    }
    if (partials != NULL) {
        tr_reduce_partials(dweight, partials, p.threads, wsize);
        free(partials);
    }
    return 0;
}
