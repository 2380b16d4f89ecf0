/*
 * Convolution layers over channel-major activations [C][B*H*W].
 *
 * conv2d: per column tile (flat output index over b, oy, ox) and group,
 * im2col into scratch, one GEMM weight_g [Cout/g][K] x col [K][T] into y
 * (ldc = B*Ho*Wo), then one fused pass (bias, residual, ReLU) over the tile.
 * 1x1 stride-1 pad-0 convolutions use x directly as the GEMM's B matrix.
 * Grouped convolutions with few channels per group run group-parallel with a
 * small register-blocked GEMM instead of one BLAS call per group.
 *
 * conv_transpose2d: per input column tile, col [Cout*k*k][T] = W^T x X_tile,
 * then col2im into y, parallel over output channels (no races, and a
 * summation order that does not depend on the thread count).
 *
 * im2col has several forms, picked by the output plane (the networks see
 * 32x32 crops, so most planes are small and a batch holds many images):
 *   tiny   (<= 8 positions): loop over positions, then images
 *   shift  (stride-1 "same", <= 4096): masked contiguous loads
 *   gather (<= 1024): per-(ky,kx) offset table, vector gathers
 *   same / segment (larger planes): contiguous copies per output row
 */
#include "pkgnet_kernels.h"
#include "pkk_internal.h"

#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PKK_TINY_MAX 8
#define PKK_SHIFT_MAX 4096
#define PKK_GATHER_MAX 1024

/* First output coordinate o (in [0, out)) whose input coordinate o*stride + off
 * is >= 0, and one past the last whose input coordinate is < in. Empty range
 * if lo >= hi. */
static inline void pkk_valid_range(int out, int stride, int off, int in, int *lo, int *hi)
{
    int l = 0;
    if (off < 0) l = (-off + stride - 1) / stride;
    int h;
    if (in - 1 - off < 0) h = 0;
    else h = (in - 1 - off) / stride + 1;
    if (h > out) h = out;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

size_t pkk_conv2d_scratch_floats(int cin, int groups, int kernel, int cols)
{
    if (groups < 1) groups = 1;
    return (size_t)(cin / groups) * (size_t)kernel * (size_t)kernel * (size_t)cols;
}

/* ---- im2col ---- */

/* One group's im2col over output columns [c0, c0 + tn): col[r][j] with
 * r = (ci, ky, kx) over the group's cin_g channels, or with tap_major
 * r = (ky, kx, ci), the order of weights arranged for Winograd. */
typedef struct {
    const float *xg;
    int cin_g, batch, h, w, kernel, stride, pad, ho, wo;
    size_t c0;
    int tn;
    float *col;
    int tap_major;
} pkk_im2col_args;

/* Row (ci, tap) of col, in the order the args ask for. */
static inline float *pkk_col_row(const pkk_im2col_args *a, int ci, int tap)
{
    const size_t row = a->tap_major ? (size_t)tap * a->cin_g + ci : (size_t)ci * a->kernel * a->kernel + tap;
    return a->col + row * a->tn;
}

/* Tiny output planes: the padding pattern is the same for every image, so
 * loop over output positions and, inside, over the images of the tile. */
static void pkk_im2col_tiny(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const pkk_im2col_args *a = args;
    const int kk = a->kernel * a->kernel;
    const size_t plane = (size_t)a->h * a->w;
    const size_t op = (size_t)a->ho * a->wo;
    const size_t in_ch = (size_t)a->batch * plane;
    const size_t c0 = a->c0, c1 = a->c0 + (size_t)a->tn;

    for (long r = lo; r < hi; r++) {
        const int ci = (int)(r / kk);
        const int ky = (int)(r % kk) / a->kernel;
        const int kx = (int)(r % kk) % a->kernel;
        const float *restrict xc = a->xg + (size_t)ci * in_ch;
        float *restrict d = pkk_col_row(a, ci, (int)(r % kk));
        for (size_t q = 0; q < op && q < c1; q++) {
            /* images b with c0 <= b*op + q < c1 */
            const size_t b_lo = c0 > q ? (c0 - q + op - 1) / op : 0;
            const size_t b_hi = (c1 - 1 - q) / op + 1;
            if (b_lo >= b_hi) continue;
            const int oy = (int)(q / (size_t)a->wo), ox = (int)(q % (size_t)a->wo);
            const int iy = oy * a->stride - a->pad + ky, ix = ox * a->stride - a->pad + kx;
            float *restrict dq = d + (b_lo * op + q - c0);
            const size_t nb = b_hi - b_lo;
            if (iy < 0 || iy >= a->h || ix < 0 || ix >= a->w) {
                for (size_t b = 0; b < nb; b++) dq[b * op] = 0.0f;
            } else {
                const float *restrict sq = xc + b_lo * plane + (size_t)iy * a->w + ix;
                for (size_t b = 0; b < nb; b++) dq[b * op] = sq[b * plane];
            }
        }
    }
}

/* d[j] = valid[q] ? x[b][q + shift] : 0 for the tile's columns, image by image:
 * masked contiguous loads (AVX-512 / AVX2), no gather. */
PKK_CLONES
static void pkk_shift_row(const unsigned char *restrict valid, int plane, long shift,
                          const float *restrict xc, size_t c0, int tn, float *restrict d)
{
    size_t b = c0 / (size_t)plane;
    int q0 = (int)(c0 - b * (size_t)plane);
    int left = tn;
    while (left > 0) {
        int len = plane - q0;
        if (len > left) len = left;
        const float *restrict src = xc + b * (size_t)plane;
        const unsigned char *restrict vq = valid + q0;
        const long base = (long)q0 + shift;
        /* src[base + t] is only read where valid, i.e. inside this image */
        for (int t = 0; t < len; t++) d[t] = vq[t] ? src[base + t] : 0.0f;
        d += len;
        left -= len;
        q0 = 0;
        b++;
    }
}

/* Stride-1 "same" convolutions (ho == h, wo == w): row (ci, ky, kx) of an image
 * is the channel plane shifted by dy*w + dx in flat index (dy = ky - pad,
 * dx = kx - pad), masked where the source falls outside the image. Rows are
 * visited (ky, kx)-major so consecutive rows share the mask. */
static void pkk_im2col_shift(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const pkk_im2col_args *a = args;
    const int kk = a->kernel * a->kernel;
    const int h = a->h, w = a->w, plane = h * w;
    const size_t in_ch = (size_t)a->batch * (size_t)plane;
    unsigned char valid[PKK_SHIFT_MAX];
    int mask_kyx = -1;

    for (long i = lo; i < hi; i++) {
        const int kyx = (int)(i / a->cin_g);
        const int ci = (int)(i % a->cin_g);
        const int dy = kyx / a->kernel - a->pad, dx = kyx % a->kernel - a->pad;
        if (kyx != mask_kyx) {
            for (int oy = 0; oy < h; oy++)
                for (int ox = 0; ox < w; ox++)
                    valid[oy * w + ox] =
                        (unsigned char)(oy + dy >= 0 && oy + dy < h && ox + dx >= 0 && ox + dx < w);
            mask_kyx = kyx;
        }
        pkk_shift_row(valid, plane, (long)dy * w + dx, a->xg + (size_t)ci * in_ch, a->c0, a->tn,
                      pkk_col_row(a, ci, kyx));
    }
}

/* d[j] = x[b][table[q]] (0 where table[q] < 0) for the tile's columns, image by
 * image: vectorised with AVX-512 / AVX2 gathers. */
PKK_CLONES
static void pkk_gather_row(const int *restrict table, int out_plane, const float *restrict xc,
                           size_t plane, size_t c0, int tn, float *restrict d)
{
    size_t b = c0 / (size_t)out_plane;
    int q0 = (int)(c0 - b * (size_t)out_plane);
    int left = tn;
    while (left > 0) {
        int len = out_plane - q0;
        if (len > left) len = left;
        const float *restrict src = xc + b * plane;
        const int *restrict tq = table + q0;
        for (int t = 0; t < len; t++) {
            const int v = tq[t];
            const float value = src[v < 0 ? 0 : v];
            d[t] = v < 0 ? 0.0f : value;
        }
        d += len;
        left -= len;
        q0 = 0;
        b++;
    }
}

/* Small output planes: per (ky, kx) a table of source offsets for one output
 * plane (-1 = padding), then a gather for every image of the tile. Rows are
 * visited (ky, kx)-major so consecutive rows share the table. */
static void pkk_im2col_gather(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const pkk_im2col_args *a = args;
    const int kk = a->kernel * a->kernel;
    const size_t plane = (size_t)a->h * a->w;
    const size_t in_ch = (size_t)a->batch * plane;
    const int out_plane = a->ho * a->wo;
    int table[PKK_GATHER_MAX];
    int table_kyx = -1;

    for (long i = lo; i < hi; i++) {
        const int kyx = (int)(i / a->cin_g);
        const int ci = (int)(i % a->cin_g);
        if (kyx != table_kyx) {
            const int ky = kyx / a->kernel, kx = kyx % a->kernel;
            for (int oy = 0; oy < a->ho; oy++) {
                const int iy = oy * a->stride - a->pad + ky;
                for (int ox = 0; ox < a->wo; ox++) {
                    const int ix = ox * a->stride - a->pad + kx;
                    table[oy * a->wo + ox] =
                        (iy >= 0 && iy < a->h && ix >= 0 && ix < a->w) ? iy * a->w + ix : -1;
                }
            }
            table_kyx = kyx;
        }
        pkk_gather_row(table, out_plane, a->xg + (size_t)ci * in_ch, plane, a->c0, a->tn,
                       pkk_col_row(a, ci, kyx));
    }
}

/* Large stride-1 "same" planes: each image's part of a row is one contiguous
 * copy of the shifted plane, then zeros for the rows and the columns that
 * wrapped around into the neighbouring row. */
static void pkk_im2col_same(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const pkk_im2col_args *a = args;
    const int kk = a->kernel * a->kernel;
    const int h = a->h, w = a->w;
    const long plane = (long)h * w;
    const size_t in_ch = (size_t)a->batch * (size_t)plane;
    const int tn = a->tn;

    for (long r = lo; r < hi; r++) {
        const int ci = (int)(r / kk);
        const int dy = (int)(r % kk) / a->kernel - a->pad;
        const int dx = (int)(r % kk) % a->kernel - a->pad;
        const long shift = (long)dy * w + dx;
        const float *restrict xc = a->xg + (size_t)ci * in_ch;
        float *restrict dst = pkk_col_row(a, ci, (int)(r % kk));
        /* flat positions q whose source row oy + dy is inside ... */
        long q_rows_lo = (dy < 0 ? -dy : 0) * (long)w;
        long q_rows_hi = (dy > 0 ? h - dy : h) * (long)w;
        if (q_rows_hi < q_rows_lo) q_rows_hi = q_rows_lo;
        /* ... and whose flat source index q + shift lies in the plane */
        const long q_src_lo = -shift > 0 ? -shift : 0;
        const long q_src_hi = plane - shift < plane ? plane - shift : plane;

        size_t n = a->c0;
        int j = 0;
        while (j < tn) {
            const size_t b = n / (size_t)plane;
            const long q0 = (long)(n - b * (size_t)plane);
            long q1 = plane;
            if (q1 - q0 > tn - j) q1 = q0 + (tn - j);
            float *restrict d = dst + j; /* d[q - q0] for q in [q0, q1) */
            const float *restrict src = xc + b * (size_t)plane;
            long s0 = q_rows_lo > q0 ? q_rows_lo : q0;
            long s1 = q_rows_hi < q1 ? q_rows_hi : q1;
            if (s0 > q1) s0 = q1;
            if (s1 < s0) s1 = s0;
            long ca = s0 > q_src_lo ? s0 : q_src_lo;
            long ce = s1 < q_src_hi ? s1 : q_src_hi;
            if (ca > s1) ca = s1;
            if (ce < ca) ce = ca;
            for (long q = q0; q < ca; q++) d[q - q0] = 0.0f;
            if (ce > ca) memcpy(d + (ca - q0), src + (ca + shift), sizeof(float) * (size_t)(ce - ca));
            for (long q = ce; q < q1; q++) d[q - q0] = 0.0f;
            if (dx != 0 && ce > ca) {
                const int c_lo = dx < 0 ? 0 : w - dx; /* zero ox in [c_lo, c_hi) */
                const int c_hi = dx < 0 ? -dx : w;
                for (long row = ca / w; row * w < ce; row++) {
                    long za = row * w + c_lo, ze = row * w + c_hi;
                    if (za < ca) za = ca;
                    if (ze > ce) ze = ce;
                    for (long q = za; q < ze; q++) d[q - q0] = 0.0f;
                }
            }
            j += (int)(q1 - q0);
            n += (size_t)(q1 - q0);
        }
    }
}

/* General form for large planes: each destination row is a run of output-row
 * segments (b, oy, ox0..ox1), advanced incrementally; the in-bounds part of a
 * segment is a contiguous (stride 1) or strided copy. */
static void pkk_im2col_segments(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const pkk_im2col_args *a = args;
    const int kk = a->kernel * a->kernel;
    const int h = a->h, w = a->w, ho = a->ho, wo = a->wo, stride = a->stride;
    const size_t plane = (size_t)h * w;
    const size_t in_ch = (size_t)a->batch * plane;
    const size_t out_plane = (size_t)ho * wo;
    const size_t b_start = a->c0 / out_plane;
    const size_t rem_start = a->c0 - b_start * out_plane;
    const int oy_start = (int)(rem_start / (size_t)wo);
    const int ox_start = (int)(rem_start - (size_t)oy_start * wo);

    for (long r = lo; r < hi; r++) {
        const int ci = (int)(r / kk);
        const int ky = (int)(r % kk) / a->kernel;
        const int off = (int)(r % kk) % a->kernel - a->pad;
        const float *restrict xc = a->xg + (size_t)ci * in_ch;
        float *restrict d = pkk_col_row(a, ci, (int)(r % kk));
        int vlo, vhi; /* ox in [vlo, vhi) read inside the row: 0 <= ox*stride + off < w */
        pkk_valid_range(wo, stride, off, w, &vlo, &vhi);

        const float *restrict xb = xc + b_start * plane;
        int oy = oy_start, ox0 = ox_start;
        int left = a->tn;
        while (left > 0) {
            int len = wo - ox0;
            if (len > left) len = left;
            const int ox1 = ox0 + len;
            const int iy = oy * stride - a->pad + ky;
            if (iy < 0 || iy >= h) {
                for (int t = 0; t < len; t++) d[t] = 0.0f;
            } else {
                int s0 = vlo > ox0 ? vlo : ox0;
                if (s0 > ox1) s0 = ox1;
                int s1 = vhi < ox1 ? vhi : ox1;
                if (s1 < s0) s1 = s0;
                const int ta = s0 - ox0, te = s1 - ox0;
                for (int t = 0; t < ta; t++) d[t] = 0.0f;
                if (te > ta) {
                    /* d[t] = x[iy][(ox0 + t)*stride + off] */
                    const float *restrict s = xb + (size_t)iy * w + ((size_t)s0 * stride + off);
                    const int m = te - ta;
                    float *restrict dd = d + ta;
                    if (stride == 1) {
                        for (int t = 0; t < m; t++) dd[t] = s[t];
                    } else {
                        for (int t = 0; t < m; t++) dd[t] = s[(size_t)t * stride];
                    }
                }
                for (int t = te; t < len; t++) d[t] = 0.0f;
            }
            d += len;
            left -= len;
            ox0 = 0;
            if (++oy == ho) {
                oy = 0;
                xb += plane;
            }
        }
    }
}

/* im2col of one group's tile, in parallel if `parallel` and worth it. */
static void pkk_im2col(const pkk_im2col_args *a, int parallel)
{
    const size_t op = (size_t)a->ho * a->wo;
    const int same = a->stride == 1 && a->ho == a->h && a->wo == a->w;
    pkk_range_fn fn;
    if (op <= PKK_TINY_MAX) fn = pkk_im2col_tiny;
    else if (same && op <= PKK_SHIFT_MAX) fn = pkk_im2col_shift;
    else if (same) fn = pkk_im2col_same;
    else if (op <= PKK_GATHER_MAX) fn = pkk_im2col_gather;
    else fn = pkk_im2col_segments;
    const long rows = (long)a->cin_g * a->kernel * a->kernel;
    if (parallel) pkk_run(rows, (size_t)rows * (size_t)a->tn, fn, a);
    else fn(0, rows, 0, a);
}

void pkk_im2col_serial(const float *x, int cin, int batch, int h, int w, int kernel, int stride,
                       int pad, size_t c0, int tn, float *col)
{
    const int ho = (h + 2 * pad - kernel) / stride + 1;
    const int wo = (w + 2 * pad - kernel) / stride + 1;
    const pkk_im2col_args ia = { x, cin, batch, h, w, kernel, stride, pad, ho, wo, c0, tn, col };
    pkk_im2col(&ia, 0);
}

/* ---- GEMM epilogue ---- */

typedef struct {
    float *y;
    size_t ldy, c0;
    int tn;
    const float *bias, *residual;
    int relu;
} pkk_epilogue_args;

/* y[co][c0 + j] = act(y + bias[co] + residual[co][c0 + j]) for rows [lo, hi). */
static void pkk_epilogue_rows(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const pkk_epilogue_args *a = args;
    const int tn = a->tn;
    for (long co = lo; co < hi; co++) {
        float *restrict yr = a->y + (size_t)co * a->ldy + a->c0;
        const float bv = a->bias ? a->bias[co] : 0.0f;
        if (a->residual != NULL) {
            const float *restrict rr = a->residual + (size_t)co * a->ldy + a->c0;
            if (a->relu) {
                for (int j = 0; j < tn; j++) {
                    float v = yr[j] + bv + rr[j];
                    yr[j] = v > 0.0f ? v : 0.0f;
                }
            } else {
                for (int j = 0; j < tn; j++) yr[j] = yr[j] + bv + rr[j];
            }
        } else if (a->relu) {
            for (int j = 0; j < tn; j++) {
                float v = yr[j] + bv;
                yr[j] = v > 0.0f ? v : 0.0f;
            }
        } else {
            for (int j = 0; j < tn; j++) yr[j] += bv;
        }
    }
}

static void pkk_epilogue(float *y, size_t ldy, int cout, size_t c0, int tn, const float *bias,
                         const float *residual, int relu, int parallel)
{
    if (bias == NULL && residual == NULL && !relu) return;
    const pkk_epilogue_args a = { y, ldy, c0, tn, bias, residual, relu };
    if (parallel) pkk_run(cout, (size_t)cout * (size_t)tn, pkk_epilogue_rows, &a);
    else pkk_epilogue_rows(0, cout, 0, &a);
}

/* ---- small GEMM for grouped convolutions ---- */

/*
 * Single-threaded y[m][n] = sum_k w[m][k] * col[k][n] for the small GEMMs of
 * grouped convolutions (m = cout/groups, typically 4..32), where a BLAS call
 * per group costs more in packing and thread hand-off than the arithmetic.
 * Register blocks of 4 rows x 32 columns; the sum over k is sequential, so
 * the result does not depend on the thread count. Compiled for AVX-512, AVX2
 * and the baseline, picked at load time.
 */
#define PKK_MB 4
#define PKK_NB 32
PKK_CLONES
static void pkk_gemm_small(int m, int n, int k, const float *restrict wt, const float *restrict col,
                           int ldcol, float *restrict y, size_t ldy)
{
    int n0 = 0;
    for (; n0 + PKK_NB <= n; n0 += PKK_NB) {
        int m0 = 0;
        for (; m0 + PKK_MB <= m; m0 += PKK_MB) {
            float acc[PKK_MB][PKK_NB];
            for (int i = 0; i < PKK_MB; i++)
                for (int t = 0; t < PKK_NB; t++) acc[i][t] = 0.0f;
            const float *restrict w0 = wt + (size_t)m0 * k;
            for (int p = 0; p < k; p++) {
                const float *restrict c = col + (size_t)p * ldcol + n0;
                for (int i = 0; i < PKK_MB; i++) {
                    const float wv = w0[(size_t)i * k + p];
                    for (int t = 0; t < PKK_NB; t++) acc[i][t] += wv * c[t];
                }
            }
            for (int i = 0; i < PKK_MB; i++)
                for (int t = 0; t < PKK_NB; t++) y[(size_t)(m0 + i) * ldy + n0 + t] = acc[i][t];
        }
        for (; m0 < m; m0++) {
            float acc[PKK_NB];
            for (int t = 0; t < PKK_NB; t++) acc[t] = 0.0f;
            const float *restrict w0 = wt + (size_t)m0 * k;
            for (int p = 0; p < k; p++) {
                const float *restrict c = col + (size_t)p * ldcol + n0;
                const float wv = w0[p];
                for (int t = 0; t < PKK_NB; t++) acc[t] += wv * c[t];
            }
            for (int t = 0; t < PKK_NB; t++) y[(size_t)m0 * ldy + n0 + t] = acc[t];
        }
    }
    if (n0 < n) { /* column remainder: same summation order, one row at a time */
        const int nr = n - n0;
        for (int m0 = 0; m0 < m; m0++) {
            float acc[PKK_NB];
            for (int t = 0; t < nr; t++) acc[t] = 0.0f;
            const float *restrict w0 = wt + (size_t)m0 * k;
            for (int p = 0; p < k; p++) {
                const float *restrict c = col + (size_t)p * ldcol + n0;
                const float wv = w0[p];
                for (int t = 0; t < nr; t++) acc[t] += wv * c[t];
            }
            for (int t = 0; t < nr; t++) y[(size_t)m0 * ldy + n0 + t] = acc[t];
        }
    }
}

/* Grouped convolutions with at most this many output channels per group use
 * pkk_gemm_small, group-parallel. */
#define PKK_SMALL_GROUP_COUT 32
/* Largest im2col block of an ungrouped tile (1 MiB), and the fewest columns
 * a tile is cut to for it (narrower GEMMs lose efficiency). */
#define PKK_COL_BLOCK_FLOATS 262144
#define PKK_MIN_TILE 512
/* Floats of im2col block per group chunk (128 KiB: stays in L2). */
#define PKK_GROUP_BLOCK_FLOATS 32768

typedef struct {
    const float *x, *weight, *bias, *residual;
    float *y, *scratch;
    size_t slice, ncols, in_ch, tile;
    int cin_g, cout_g, kdim, batch, h, w, kernel, stride, pad, ho, wo, relu, direct;
} pkk_grouped_args;

/* Groups [lo, hi) of a grouped convolution, on one thread with its own slice
 * of the scratch, in column chunks small enough to stay in cache. */
static void pkk_conv2d_groups(long lo, long hi, int thread, const void *args)
{
    const pkk_grouped_args *a = args;
    float *col = a->scratch + (size_t)thread * a->slice;
    for (long g = lo; g < hi; g++) {
        const float *xg = a->x + (size_t)g * a->cin_g * a->in_ch;
        float *yg = a->y + (size_t)g * a->cout_g * a->ncols;
        const float *wg = a->weight + (size_t)g * a->cout_g * a->kdim;
        const float *bg = a->bias ? a->bias + (size_t)g * a->cout_g : NULL;
        const float *rg = a->residual ? a->residual + (size_t)g * a->cout_g * a->ncols : NULL;
        for (size_t c0 = 0; c0 < a->ncols; c0 += a->tile) {
            const int tn = (int)(a->ncols - c0 < a->tile ? a->ncols - c0 : a->tile);
            if (a->direct) {
                pkk_gemm_small(a->cout_g, tn, a->kdim, wg, xg + c0, (int)a->ncols, yg + c0, a->ncols);
            } else {
                const pkk_im2col_args ia = { xg, a->cin_g, a->batch, a->h, a->w, a->kernel, a->stride,
                                             a->pad, a->ho, a->wo, c0, tn, col };
                pkk_im2col(&ia, 0);
                pkk_gemm_small(a->cout_g, tn, a->kdim, wg, col, tn, yg + c0, a->ncols);
            }
            pkk_epilogue(yg, a->ncols, a->cout_g, c0, tn, bg, rg, a->relu, 0);
        }
    }
}

/* ---- packed-weight path ---- */

/* Columns per tile for pkk_gemm_packed: an im2col block of about
 * PKK_COL_BLOCK_FLOATS (at least PKK_MIN_TILE columns), as far as `floats`
 * of scratch hold `rows` of them; 0 if not one column fits. */
static size_t pkk_packed_tile(size_t rows, size_t ncols, size_t floats)
{
    size_t tile = PKK_COL_BLOCK_FLOATS / rows;
    if (tile < PKK_MIN_TILE) tile = PKK_MIN_TILE;
    if (tile > floats / rows) tile = floats / rows;
    return tile < ncols ? tile : ncols;
}

/* Ungrouped convolutions with packed weights `a` [cout][kdim]: one
 * pkk_gemm_packed with bias, residual and ReLU fused, on x itself for 1x1
 * stride-1, else per tile of im2col columns. Returns 0 if the scratch cannot
 * hold one column. */
static int pkk_conv2d_packed(const float *x, int cin, int batch, int h, int w, const float *a,
                             const float *bias, int cout, int kernel, int stride, int pad,
                             const float *residual, int relu, float *y, float *scratch, size_t scratch_floats)
{
    const int ho = (h + 2 * pad - kernel) / stride + 1, wo = (w + 2 * pad - kernel) / stride + 1;
    const int kdim = cin * kernel * kernel;
    const size_t ncols = (size_t)batch * ho * wo;
    if (kernel == 1 && stride == 1 && pad == 0) {
        pkk_gemm_packed(a, cout, (int)ncols, kdim, x, ncols, y, ncols, bias, residual, relu);
        return 1;
    }
    const size_t tile = pkk_packed_tile((size_t)kdim, ncols, scratch_floats);
    if (tile == 0) return 0;
    for (size_t c0 = 0; c0 < ncols; c0 += tile) {
        const int tn = (int)(ncols - c0 < tile ? ncols - c0 : tile);
        const pkk_im2col_args ia = { x, cin, batch, h, w, kernel, stride, pad, ho, wo, c0, tn, scratch };
        pkk_im2col(&ia, 1);
        pkk_gemm_packed(a, cout, tn, kdim, scratch, (size_t)tn, y + c0, ncols, bias,
                        residual ? residual + c0 : NULL, relu);
    }
    return 1;
}

/* Largest 3x3 weights (floats, 1 MiB) kept a second time, transposed, for
 * pkk_conv3x3_few_pixels: the teachers' and edge students' 4x4 layers (a
 * ResNet's 128 -> 128: 0.6 MB). Larger ones, the w=64 student's 4x4 layers
 * (5-9 MB), stay single: at one cube they are bound by reading them. */
#define PKK_TRANSPOSED_MAX_FLOATS (1 << 18)

/* y [cout][n] = act(W col + bias [+ residual]) for the n <= PKK_FEW_PIXELS
 * pixels of a call (one cube's 4x4 maps), as y^T [n][cout] = col^T W^T:
 * the im2col, transposed, as the GEMM's packed operand (n rows, 6 per
 * register block), and W^T [9 cin][cout] (made once, kept in `cache`) as
 * the other, 64 output channels per register block. Returns 0 (y
 * untouched) if the scratch is short or memory for W^T is. */
static int pkk_conv3x3_few_pixels(const float *x, int cin, int batch, int h, int w, const float *s,
                                  pkk_weight_cache *cache, const float *bias, int cout, const float *residual,
                                  int relu, float *y, float *scratch, size_t scratch_floats)
{
    const int n = batch * h * w;
    const size_t a_floats = pkk_packed_weight_floats(n, 9 * cin);
    if (a_floats + (size_t)n * cout > scratch_floats) return 0;
    const float *wt = pkk_transposed_winograd_weights(cache, s, cout, cin);
    if (wt == NULL) return 0;
    float *a = scratch, *yt = a + a_floats;
    pkk_pack_pixels3x3(x, cin, batch, h, w, a);
    pkk_gemm_panels(a, n, cout, 9 * cin, wt, yt, (size_t)cout);
    for (int co = 0; co < cout; co++)
        for (int j = 0; j < n; j++) {
            float v = yt[(size_t)j * cout + co] + (bias ? bias[co] : 0.0f);
            if (residual) v += residual[(size_t)co * n + j];
            y[(size_t)co * n + j] = relu && v < 0.0f ? 0.0f : v;
        }
    return 1;
}

int pkk_conv3x3_packed(const float *x, int cin, int batch, int h, int w, const float *s, pkk_weight_cache *packed,
                       const float *bias, int cout, const float *residual, int relu, float *y, float *scratch,
                       size_t scratch_floats)
{
    if (cin <= 0 || cout <= 0 || batch <= 0 || h <= 0 || w <= 0) return 0;
    if (packed != NULL && pkk_use_avx512() && (size_t)batch * h * w <= PKK_FEW_PIXELS &&
        (size_t)9 * cin * cout <= PKK_TRANSPOSED_MAX_FLOATS &&
        pkk_conv3x3_few_pixels(x, cin, batch, h, w, s, packed, bias, cout, residual, relu, y, scratch, scratch_floats))
        return 1;
    if (pkk_winograd_block_rows(cout) != 6) { /* blocks of 4 rows: packed again, in blocks of 6 */
        const float *a = pkk_packed_winograd_weights(packed, s, cout, cin);
        return a != NULL && pkk_conv2d_packed(x, cin, batch, h, w, a, bias, cout, 3, 1, 1, residual, relu, y,
                                              scratch, scratch_floats);
    }
    /* Blocks of 6 rows are the packed GEMM's own layout, tap by tap: s is
     * read as it is, against an im2col in tap order. A call of 16 pixels
     * (one cube's 4x4 maps, in layers too large to keep transposed) goes to
     * pkk_conv3x3_sixteen_pixels instead, which reads its im2col in place
     * and multiplies turned around (the same bits on the w=64 model's 4x4
     * layers; the 512 -> 512 one alone 1.0-1.15x as fast as the GEMM reading
     * that im2col as its panel, the model at batch 1 1.014x). */
    const size_t ncols = (size_t)batch * h * w;
    const size_t tile = pkk_packed_tile((size_t)9 * cin, ncols, scratch_floats);
    if (tile == 0) return 0;
    for (size_t c0 = 0; c0 < ncols; c0 += tile) {
        const int tn = (int)(ncols - c0 < tile ? ncols - c0 : tile);
        const pkk_im2col_args ia = { x, cin, batch, h, w, 3, 1, 1, h, w, c0, tn, scratch, 1 };
        pkk_im2col(&ia, 1);
        if (pkk_use_avx512() && tn == 16 && ncols == 16 && ((uintptr_t)scratch & 63) == 0) /* aligned vectors */
            pkk_conv3x3_sixteen_pixels(scratch, s, cin, cout, bias, residual, relu, y);
        else
            pkk_gemm_winograd_weights(s, cout, tn, cin, scratch, (size_t)tn, y + c0, ncols, bias,
                                      residual ? residual + c0 : NULL, relu);
    }
    return 1;
}

int pkk_conv2d(const float *x, int cin, int batch, int h, int w,
               const float *weight, pkk_weight_cache *packed, const float *bias, int cout,
               int kernel, int stride, int pad, int groups,
               const float *residual, int relu,
               float *y, float *scratch, size_t scratch_floats)
{
    if (groups < 1) groups = 1;
    const int ho = (h + 2 * pad - kernel) / stride + 1;
    const int wo = (w + 2 * pad - kernel) / stride + 1;
    if (cout <= 0 || batch <= 0 || ho <= 0 || wo <= 0) return 1;
    if (packed != NULL && groups == 1) {
        const int k = cin * kernel * kernel;
        const float *a = pkk_packed_weights(packed, weight, cout, k, (size_t)k, 1);
        if (a != NULL && kernel == 3 && stride == 2 && pad == 1 &&
            pkk_conv3x3s2_packed(x, cin, batch, h, w, a, bias, cout, residual, relu, y, scratch, scratch_floats))
            return 1;
        if (a != NULL && pkk_conv2d_packed(x, cin, batch, h, w, a, bias, cout, kernel, stride, pad, residual,
                                           relu, y, scratch, scratch_floats))
            return 1;
    }
    if (weight == NULL) return 0;
    const int cin_g = cin / groups;
    const int cout_g = cout / groups;
    const int kdim = cin_g * kernel * kernel;
    const size_t ncols = (size_t)batch * ho * wo;
    const size_t in_ch = (size_t)batch * h * w;
    const int direct = kernel == 1 && stride == 1 && pad == 0;
    const int small_groups = groups > 1 && cout_g <= PKK_SMALL_GROUP_COUT;

    if (direct && !small_groups) {
        /* x is already the B matrix [Cin/g][B*H*W] of each group. */
        for (int g = 0; g < groups; g++)
            pkk_sgemm(0, 0, cout_g, (int)ncols, kdim, 1.0f,
                      weight + (size_t)g * cout_g * kdim, kdim,
                      x + (size_t)g * cin_g * in_ch, (int)ncols, 0.0f,
                      y + (size_t)g * cout_g * ncols, (int)ncols);
        pkk_epilogue(y, ncols, cout, 0, (int)ncols, bias, residual, relu, 1);
        return 1;
    }

    if (small_groups) {
        const size_t work = (size_t)groups * kdim * ncols;
        const int threads = pkk_run_threads(groups, work);
        const size_t slice = scratch_floats / (size_t)threads;
        size_t tile = direct ? ncols : slice / (size_t)kdim;
        size_t target = PKK_GROUP_BLOCK_FLOATS / (size_t)kdim;
        if (target < PKK_NB) target = PKK_NB;
        target -= target % PKK_NB; /* whole register blocks */
        if (tile > target) tile = target;
        if (tile > ncols) tile = ncols;
        if (tile >= 1) {
            const pkk_grouped_args a = { x, weight, bias, residual, y, scratch, slice, ncols, in_ch,
                                         tile, cin_g, cout_g, kdim, batch, h, w, kernel, stride,
                                         pad, ho, wo, relu, direct };
            pkk_run(groups, work, pkk_conv2d_groups, &a);
            return 1;
        }
        /* scratch too small for one column per thread: the serial path below */
    }

    /* Tile: as many columns as the scratch holds, but an im2col block of at
     * most about PKK_COL_BLOCK_FLOATS so that the GEMM reads it from cache. */
    size_t tile = scratch_floats / (size_t)kdim;
    size_t cap = PKK_COL_BLOCK_FLOATS / (size_t)kdim;
    if (cap < PKK_MIN_TILE) cap = PKK_MIN_TILE;
    if (tile > cap) tile = cap;
    if (tile > ncols) tile = ncols;
    if (tile < 1) tile = 1; /* caller bug: scratch must hold at least one column */

    for (size_t c0 = 0; c0 < ncols; c0 += tile) {
        const int tn = (int)(ncols - c0 < tile ? ncols - c0 : tile);
        for (int g = 0; g < groups; g++) {
            const pkk_im2col_args ia = { x + (size_t)g * cin_g * in_ch, cin_g, batch, h, w, kernel,
                                         stride, pad, ho, wo, c0, tn, scratch };
            pkk_im2col(&ia, 1);
            if (small_groups)
                pkk_gemm_small(cout_g, tn, kdim, weight + (size_t)g * cout_g * kdim, scratch, tn,
                               y + (size_t)g * cout_g * ncols + c0, ncols);
            else
                pkk_sgemm(0, 0, cout_g, tn, kdim, 1.0f, weight + (size_t)g * cout_g * kdim, kdim,
                          scratch, tn, 0.0f, y + (size_t)g * cout_g * ncols + c0, (int)ncols);
        }
        pkk_epilogue(y, ncols, cout, c0, tn, bias, residual, relu, 1);
    }
    return 1;
}

/* ---- transposed convolution ---- */

/* Largest col block of a transposed-convolution tile (4 MiB). */
#define PKK_DECONV_BLOCK_FLOATS 1048576

size_t pkk_conv_transpose2d_scratch_floats(int cout, int kernel, int cols)
{
    return (size_t)cout * (size_t)kernel * (size_t)kernel * (size_t)cols;
}

typedef struct {
    const float *col, *bias;
    float *y;
    const int *tables;
    int cout, kernel, stride, pad, batch, h, w, ho, wo, tn, images;
    size_t c0, b0;
} pkk_col2im_args;

/* y[co] = bias[co] (or 0) for channels [lo, hi). */
static void pkk_fill_bias(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const pkk_col2im_args *a = args;
    const size_t out_ch = (size_t)a->batch * a->ho * a->wo;
    for (long co = lo; co < hi; co++) {
        float *restrict yc = a->y + (size_t)co * out_ch;
        const float bv = a->bias ? a->bias[co] : 0.0f;
        for (size_t i = 0; i < out_ch; i++) yc[i] = bv;
    }
}

/*
 * col2im scatter-add of input columns [c0, c0 + tn) for output channels [lo, hi):
 *   y[co][b][iy*stride - pad + ky][ix*stride - pad + kx] += col[(co, ky, kx)][j]
 */
static void pkk_col2im_segments(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const pkk_col2im_args *a = args;
    const int kernel = a->kernel, stride = a->stride, w = a->w, wo = a->wo, tn = a->tn;
    const int kk = kernel * kernel;
    const size_t in_plane = (size_t)a->h * w;
    const size_t out_plane = (size_t)a->ho * wo;
    const size_t out_ch = (size_t)a->batch * out_plane;

    for (long co = lo; co < hi; co++) {
        float *restrict yc = a->y + (size_t)co * out_ch;
        for (int ky = 0; ky < kernel; ky++) {
            for (int kx = 0; kx < kernel; kx++) {
                const float *restrict src = a->col + ((size_t)co * kk + (size_t)ky * kernel + kx) * tn;
                int vlo, vhi; /* input ix whose ox = ix*stride - pad + kx lies in [0, wo) */
                pkk_valid_range(w, stride, kx - a->pad, wo, &vlo, &vhi);
                size_t n = a->c0;
                int j = 0;
                while (j < tn) {
                    const size_t b = n / in_plane;
                    const size_t rem = n - b * in_plane;
                    const int iy = (int)(rem / (size_t)w);
                    const int ix0 = (int)(rem - (size_t)iy * w);
                    int len = w - ix0;
                    if (len > tn - j) len = tn - j;
                    const int ix1 = ix0 + len;
                    const int oy = iy * stride - a->pad + ky;
                    if (oy >= 0 && oy < a->ho) {
                        const int s0 = vlo > ix0 ? vlo : ix0;
                        const int s1 = vhi < ix1 ? vhi : ix1;
                        if (s1 > s0) {
                            const float *restrict s = src + j + (s0 - ix0);
                            float *restrict d = yc + b * out_plane + (size_t)oy * wo
                                              + ((size_t)s0 * stride + kx - a->pad);
                            const int m = s1 - s0;
                            if (stride == 1) {
                                for (int t = 0; t < m; t++) d[t] += s[t];
                            } else {
                                for (int t = 0; t < m; t++) d[(size_t)t * stride] += s[t];
                            }
                        }
                    }
                    j += len;
                    n += (size_t)len;
                }
            }
        }
    }
}

/* col2im for small input planes: per (ky, kx) a table from input position to
 * output offset (-1 when outside), then an indexed scatter-add, image by image. */
static void pkk_col2im_table(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const pkk_col2im_args *a = args;
    const int kk = a->kernel * a->kernel;
    const int in_plane = a->h * a->w;
    const size_t out_plane = (size_t)a->ho * a->wo;
    const size_t out_ch = (size_t)a->batch * out_plane;
    const size_t b_start = a->c0 / (size_t)in_plane;
    const int q_start = (int)(a->c0 - b_start * (size_t)in_plane);

    for (long co = lo; co < hi; co++) {
        float *restrict yc = a->y + (size_t)co * out_ch;
        for (int kyx = 0; kyx < kk; kyx++) {
            const int *restrict tab = a->tables + (size_t)kyx * in_plane;
            const float *restrict s = a->col + ((size_t)co * kk + kyx) * a->tn;
            float *restrict yb = yc + b_start * out_plane;
            int q0 = q_start;
            int left = a->tn;
            while (left > 0) {
                int len = in_plane - q0;
                if (len > left) len = left;
                const int *restrict tq = tab + q0;
                for (int t = 0; t < len; t++) {
                    const int o = tq[t];
                    if (o >= 0) yb[o] += s[t];
                }
                s += len;
                left -= len;
                q0 = 0;
                yb += out_plane;
            }
        }
    }
}

/*
 * The students' upsampling (kernel 3, stride 2, pad 1, output_padding 0 or 1)
 * as a gather over whole images: output (2i + a, 2j + c) sums the col rows
 * (ky, kx) whose taps land there, plus the bias, and is written once (no
 * scatter, no separate initialisation). P[ky][kx] is at (i, j):
 *   y[2i  ][2j  ] = P11(i,j)
 *   y[2i  ][2j+1] = P12(i,j) + P10(i,j+1)
 *   y[2i+1][2j  ] = P21(i,j) + P01(i+1,j)
 *   y[2i+1][2j+1] = P22(i,j) + P20(i,j+1) + P02(i+1,j) + P00(i+1,j+1)
 * with terms at i+1 = h or j+1 = w absent. Jobs are (channel, image) pairs.
 */
static void pkk_col2im_k3s2p1(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const pkk_col2im_args *a = args;
    const int h = a->h, w = a->w, ho = a->ho, wo = a->wo;
    const size_t in_plane = (size_t)h * w;
    const size_t out_plane = (size_t)ho * wo;
    const size_t out_ch = (size_t)a->batch * out_plane;

    for (long job = lo; job < hi; job++) {
        const int co = (int)(job / a->images);
        const int bi = (int)(job % a->images);
        const float bv = a->bias ? a->bias[co] : 0.0f;
        const float *p[9];
        for (int k = 0; k < 9; k++) p[k] = a->col + ((size_t)co * 9 + k) * a->tn + (size_t)bi * in_plane;
        float *restrict yb = a->y + (size_t)co * out_ch + (a->b0 + (size_t)bi) * out_plane;
        for (int i = 0; i < h; i++) {
            const size_t r = (size_t)i * w, rn = r + (size_t)w; /* rows i and i+1 */
            const int down = i + 1 < h;
            float *restrict y0 = yb + (size_t)(2 * i) * wo;
            float *restrict y1 = 2 * i + 1 < ho ? y0 + wo : NULL;
            for (int j = 0; j < w; j++) {
                const int right = j + 1 < w;
                const int odd_col = 2 * j + 1 < wo;
                y0[2 * j] = bv + p[4][r + j];
                if (odd_col) {
                    float v = bv + p[5][r + j];
                    if (right) v += p[3][r + j + 1];
                    y0[2 * j + 1] = v;
                }
                if (y1 != NULL) {
                    float v = bv + p[7][r + j];
                    if (down) v += p[1][rn + j];
                    y1[2 * j] = v;
                    if (odd_col) {
                        float u = bv + p[8][r + j];
                        if (right) u += p[6][r + j + 1];
                        if (down) u += p[2][rn + j];
                        if (down && right) u += p[0][rn + j + 1];
                        y1[2 * j + 1] = u;
                    }
                }
            }
        }
    }
}

/* col [rows][tn] = W^T [rows][cin] x x[:, c0:c0+tn] (rows ldx apart): with
 * the packed weights `a`, else the BLAS. */
static void pkk_deconv_gemm(const float *a, const float *weight, int rows, int cin, const float *x, size_t ldx,
                            size_t c0, int tn, float *col)
{
    if (a != NULL) pkk_gemm_packed(a, rows, tn, cin, x + c0, ldx, col, (size_t)tn, NULL, NULL, 0);
    else pkk_sgemm(1, 0, rows, tn, cin, 1.0f, weight, rows, x + c0, (int)ldx, 0.0f, col, tn);
}

int pkk_conv_transpose2d(const float *x, int cin, int batch, int h, int w,
                         const float *weight, pkk_weight_cache *packed, const float *bias, int cout,
                         int kernel, int stride, int pad, int output_padding,
                         float *y, float *scratch, size_t scratch_floats)
{
    const int ho = (h - 1) * stride - 2 * pad + kernel + output_padding;
    const int wo = (w - 1) * stride - 2 * pad + kernel + output_padding;
    if (cout <= 0 || batch <= 0 || ho <= 0 || wo <= 0) return 1;
    const size_t out_ch = (size_t)batch * ho * wo;
    const size_t ncols = (size_t)batch * h * w;
    const size_t in_plane = (size_t)h * w;
    const int rows = cout * kernel * kernel;
    pkk_col2im_args a = { NULL, bias, y, NULL, cout, kernel, stride, pad, batch, h, w, ho, wo, 0, 0, 0, 0 };

    const float *a_packed = packed ? pkk_packed_weights(packed, weight, rows, cin, 1, (size_t)rows) : NULL;
    if (a_packed == NULL && weight == NULL) return 0;

    /* Tile: as many input columns as the scratch holds, but a col block of at
     * most about PKK_DECONV_BLOCK_FLOATS (whole images when possible). */
    size_t tile = scratch_floats / (size_t)rows;
    size_t cap = PKK_DECONV_BLOCK_FLOATS / (size_t)rows;
    if (cap < PKK_MIN_TILE) cap = PKK_MIN_TILE;
    if (cap < in_plane) cap = in_plane;
    if (tile > cap) tile = cap;
    if (tile > ncols) tile = ncols;
    if (tile < 1) tile = 1;

    if (kernel == 3 && stride == 2 && pad == 1 && output_padding <= 1 && ncols > 0 && tile >= in_plane) {
        /* whole images per tile: gather form, writes every output once */
        const size_t images = tile / in_plane;
        for (size_t b0 = 0; b0 < (size_t)batch; b0 += images) {
            const int nb = (int)((size_t)batch - b0 < images ? (size_t)batch - b0 : images);
            const int tn = (int)((size_t)nb * in_plane);
            pkk_deconv_gemm(a_packed, weight, rows, cin, x, ncols, b0 * in_plane, tn, scratch);
            a.col = scratch;
            a.tn = tn;
            a.images = nb;
            a.b0 = b0;
            pkk_run((long)cout * nb, (size_t)rows * tn, pkk_col2im_k3s2p1, &a);
        }
        return 1;
    }

    pkk_run(cout, (size_t)cout * out_ch, pkk_fill_bias, &a);
    if (ncols == 0) return 1;

    /* scatter tables for small planes (else the segment-wise col2im) */
    int *tables = NULL;
    if (in_plane <= PKK_GATHER_MAX) {
        tables = malloc(sizeof(int) * (size_t)kernel * kernel * in_plane);
        if (tables != NULL) {
            for (int kyx = 0; kyx < kernel * kernel; kyx++) {
                const int ky = kyx / kernel, kx = kyx % kernel;
                int *tab = tables + (size_t)kyx * in_plane;
                for (int iy = 0; iy < h; iy++) {
                    const int oy = iy * stride - pad + ky;
                    for (int ix = 0; ix < w; ix++) {
                        const int ox = ix * stride - pad + kx;
                        tab[iy * w + ix] = (oy >= 0 && oy < ho && ox >= 0 && ox < wo) ? oy * wo + ox : -1;
                    }
                }
            }
        }
    }
    a.tables = tables;

    for (size_t c0 = 0; c0 < ncols; c0 += tile) {
        const int tn = (int)(ncols - c0 < tile ? ncols - c0 : tile);
        /* col [Cout*k*k][tn] = W^T [Cout*k*k][Cin] x X[:, c0:c0+tn] */
        pkk_deconv_gemm(a_packed, weight, rows, cin, x, ncols, c0, tn, scratch);
        a.col = scratch;
        a.tn = tn;
        a.c0 = c0;
        pkk_run(cout, (size_t)rows * tn, tables ? pkk_col2im_table : pkk_col2im_segments, &a);
    }
    free(tables);
    return 1;
}
