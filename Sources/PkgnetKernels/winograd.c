/*
 * Winograd F(4x4, 3x3) for the 3x3 stride-1 pad-1 convolutions (groups 1)
 * that make up most of the students' work (Lavin & Gray, "Fast Algorithms
 * for Convolutional Neural Networks", 2016).
 *
 * Each 4x4 output tile is A^T [ (G g G^T) . (B^T d B) ] A, with d the 6x6
 * input patch that covers it: 36 multiplications per tile and channel pair
 * instead of 144, a quarter of the direct convolution's arithmetic. Summed
 * over input channels, the element-wise products become 36 independent GEMMs
 *     M[p] [cout][tiles] = U[p] [cout][cin] x V[p] [cin][tiles],  p = 0..35.
 * Per chunk of tiles (as many as the scratch holds): the input transform
 * fills V, the GEMMs fill M (a chunk of output channels at a time, whose
 * weights each thread transforms just before), the output transform writes
 * y with bias, residual and ReLU fused. All phases are OpenMP-parallel (over
 * input channels, transform points, output channels; the products of a
 * chunk of one or two blocks of tiles over output channels, turned around),
 * so no sum depends on the thread count. On 16- and 32-wide maps with
 * AVX-512 each thread runs whole chunks through all three steps instead
 * (chunks per thread, below), with the same arithmetic per tile: the same
 * bits.
 *
 * The GEMMs are the library's own 6 x 16 or 4 x 16 register blocks
 * (pkk_microkernel.h), with the operands laid out for them from the start
 * (U in blocks of 6 or 4 output channels, V and M in blocks of 16 tiles), so
 * nothing is packed or zeroed per call, which is where a BLAS spends a third
 * of its time on these shapes. On AVX-512 CPUs they take up to four blocks
 * of tiles at a time in 16-float vectors (6 x 64), and the input transform's
 * arithmetic runs on 16 tiles at once; the output transform stays on 8
 * (widening it measured no faster: its 4-float row stores dominate).
 *
 * The transforms work on 8 tiles at once, one 8-float vector per value: the
 * tiles' 6x6 patches come from zero-padded copies of the input planes (so
 * edges need no tests), two 4-float loads per patch row and tile, turned
 * into per-position vectors by in-lane 4x4 register transposes; the result
 * is stored as 8 consecutive columns of V, the GEMM's layout. The output
 * transform reads 8 consecutive columns of M and transposes back, so a whole
 * tile leaves as four 4-float rows.
 *
 * With AVX-512, batches of a multiple of 16 images with sides of a multiple
 * of 4 (training's batches, scoring's large ones) take the tiles in
 * image-interleaved order instead (pkk_wg_interleavable): a block of 16
 * tiles is one tile position of 16 images, copied once per channel into
 * planes with the images innermost, so every transform reads and writes
 * whole 16-float vectors with no gather; only the output transform
 * transposes, once per 16 tiles. Training steps of the w=16 student ran
 * about 1.3x as fast.
 *
 * Numerics: with the interpolation points 0, +-1, +-2 the input and output
 * transforms have small integer coefficients, and the weights' (1/4, 1/6,
 * 1/12, 1/24) cost one rounding each. What Winograd adds is rounding in the
 * transformed domain, where values grow by up to the transforms' norms: a
 * few ulps of the output's magnitude per layer (tests bound the difference
 * to the direct convolution at 1e-5 relative; scores agree with the fp32
 * references to about 5e-7).
 */
#include "pkgnet_kernels.h"
#include "pkk_internal.h"
#include "pkk_microkernel.h"
#include "pkk_winograd.h"

#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PKK_WG_LANES 8 /* tiles per transform block */
#define PKK_WG_POINTS 36

#define PKK_WG_NR 16 /* tiles per register block */

/* Output channels per register block: 6 (the 6 x 16 block), or 4 (the 4 x 16
 * block, as fast per row) where 6 would pad more than a sixteenth of the
 * rows: 16 and 32 output channels, the edge models' widths, would pad to 18
 * and 36, a ninth more products for nothing. */
int pkk_winograd_block_rows(int cout)
{
    const int rows6 = (cout + 5) / 6 * 6, rows4 = (cout + 3) / 4 * 4;
    return rows4 < rows6 && (rows6 - cout) * 16 > cout ? 4 : 6;
}

/* Output channels rounded up to whole register blocks: U's and M's rows. */
static inline int pkk_wg_rows(int cout)
{
    const int mr = pkk_winograd_block_rows(cout);
    return (cout + mr - 1) / mr * mr;
}

/* Floats from one transform point to the next in V [36][blocks][cin][16]
 * and M [36][blocks][rows][16]: the points' data plus one
 * 64-byte line. A tile group's 36 points are written (V) and read (M)
 * together; with strides a multiple of 4 KiB, as chunk sizes often make
 * them, they would all fall into the same cache sets and evict each other. */
#define PKK_WG_SKEW 16
static inline size_t pkk_wg_v_stride(size_t blocks, int cin) { return blocks * (size_t)cin * PKK_WG_NR + PKK_WG_SKEW; }
static inline size_t pkk_wg_m_stride(size_t blocks, int cout)
{
    return blocks * (size_t)pkk_wg_rows(cout) * PKK_WG_NR + PKK_WG_SKEW;
}

/* ---- weights ----
 *
 * The transformed weights U are four times the 3x3 weights (36 points for
 * 9 taps): kept for a whole model they were 108 MiB of the w=64 model's
 * 36 MiB, most of its memory while scoring. So the cache keeps the weights
 * only regrouped, S[k][cb][ci][r] = weight[mr cb + r][ci][k] for the 9 taps
 * k, the same size as the weights. In each call, each thread transforms the
 * weights of the transform points it multiplies, a chunk of output channels
 * at a time, into a buffer of its own that stays in its L2 cache, and
 * multiplies them right away: made in a separate pass, U went out to memory
 * and back, and the 4x4 maps' layers (a tile per image, the largest
 * weights) took twice as long. In S, like in U, a chunk of rows is one
 * contiguous range per tap, so the transform is element-wise over that
 * range, 16 weights per vector. Models keep their 3x3 weights in S alone
 * (their other path, pkk_conv3x3_packed, packs from S). */

size_t pkk_winograd_weight_floats(int cin, int cout) { return (size_t)9 * (size_t)pkk_wg_rows(cout) * (size_t)cin; }

typedef struct {
    pkk_weight_source *weight;
    int cin, cout;
    float *s;
} pkk_wg_arrange_args;

/* Register blocks [lo, hi) of S, written in order (each tap's [ci][r] run is
 * contiguous) from the block's rows converted a run of input channels at a
 * time into a buffer that stays in L1 (the file's rows are read in
 * contiguous runs): model loads arrange tens of MB, and scattered writes
 * took twice as long. */
static void pkk_wg_arrange_blocks(long lo, long hi, int thread, const void *args)
{
    enum { RUN = 64 }; /* input channels per run */
    (void)thread;
    const pkk_wg_arrange_args *a = args;
    const int cin = a->cin, mr = pkk_winograd_block_rows(a->cout);
    const size_t tap_stride = (size_t)pkk_wg_rows(a->cout) * cin;
    float rows[6][RUN * 9];
    for (long cb = lo; cb < hi; cb++)
        for (int c0 = 0; c0 < cin; c0 += RUN) {
            const int cc = cin - c0 < RUN ? cin - c0 : RUN;
            for (int r = 0; r < mr; r++) {
                const long co = cb * mr + r;
                if (co < a->cout)
                    pkk_weight_source_span(a->weight, ((size_t)co * cin + c0) * 9, (size_t)cc * 9, (size_t)co, rows[r]);
                else
                    memset(rows[r], 0, sizeof(float) * 9 * (size_t)cc);
            }
            for (int k = 0; k < 9; k++) {
                float *dst = a->s + (size_t)k * tap_stride + ((size_t)cb * cin + c0) * mr;
                for (int ci = 0; ci < cc; ci++)
                    for (int r = 0; r < mr; r++) *dst++ = rows[r][ci * 9 + k];
            }
        }
}

void pkk_winograd_arrange_source(pkk_weight_source *weight, int cin, int cout, float *s)
{
    const pkk_wg_arrange_args a = { weight, cin, cout, s };
    const int mr = pkk_winograd_block_rows(cout);
    pkk_run(pkk_wg_rows(cout) / mr, (size_t)pkk_wg_rows(cout) * (size_t)cin * 9, pkk_wg_arrange_blocks, &a);
}

void pkk_winograd_arrange_weights(const float *weight, int cin, int cout, float *s)
{
    pkk_weight_source source = { weight, PKK_DTYPE_F32, NULL, 0 };
    pkk_winograd_arrange_source(&source, cin, cout, s);
}

/* u[p - p0][e] = (G g G^T)[p] for the points p in [p0, p1), with g[k] =
 * s[k * tap_stride + e] for the `count` elements e, 16 at a time (a last
 * partial vector through a zeroed copy): both G steps for the point rows
 * the range touches. */
static inline __attribute__((always_inline)) void pkk_wg_transform(const float *s, size_t tap_stride, size_t count,
                                                                    int p0, int p1, size_t point_stride, float *u)
{
    pkk_v16 g[9], t[18], row[6];
    for (size_t e = 0; e < count; e += 16) {
        const size_t n = count - e < 16 ? count - e : 16;
        for (int k = 0; k < 9; k++) {
            if (n == 16) {
                g[k] = *(const pkk_v16u *)(s + (size_t)k * tap_stride + e);
            } else {
                g[k] = (pkk_v16){ 0 };
                for (size_t l = 0; l < n; l++) g[k][l] = s[(size_t)k * tap_stride + e + l];
            }
        }
        for (int c = 0; c < 3; c++) PKK_WG_G(pkk_v16, g + c, 3, t + c, 3); /* columns: G g */
        for (int i = p0 / 6; i * 6 < p1; i++) {
            PKK_WG_G(pkk_v16, t + 3 * i, 1, row, 1); /* point row i: (G g) G^T */
            for (int j = 0; j < 6; j++) {
                const int p = i * 6 + j;
                if (p < p0 || p >= p1) continue;
                float *dst = u + (size_t)(p - p0) * point_stride + e;
                if (n == 16) {
                    *(pkk_v16u *)dst = row[j];
                } else {
                    for (size_t l = 0; l < n; l++) dst[l] = row[j][l];
                }
            }
        }
    }
}

__attribute__((target_clones("arch=x86-64-v3", "default")))
static void pkk_wg_transform_all(const float *s, size_t tap_stride, size_t count, float *u)
{
    pkk_wg_transform(s, tap_stride, count, 0, PKK_WG_POINTS, count, u);
}

PKK_AVX512 static void pkk_wg_transform_all_avx512(const float *s, size_t tap_stride, size_t count, float *u)
{
    pkk_wg_transform(s, tap_stride, count, 0, PKK_WG_POINTS, count, u);
}

void pkk_winograd_transform_weights(const float *s, int cin, int cout, int row0, int row1, float *u)
{
    const size_t tap_stride = (size_t)pkk_wg_rows(cout) * cin, count = (size_t)(row1 - row0) * cin;
    (pkk_use_avx512() ? pkk_wg_transform_all_avx512 : pkk_wg_transform_all)(s + (size_t)row0 * cin, tap_stride,
                                                                            count, u);
}

/* Floats of each thread's buffer of transformed weights: 128 Ki (512 KiB,
 * with the thread's share of V well inside a 2 MiB L2, so U is made and
 * used without leaving the core's caches), or less where a layer's whole U
 * is smaller; at least one register block of rows for all 36 points. */
#define PKK_WG_U_BUDGET (128 * 1024)
/* Floats between one point's transformed weights and the next's, past the
 * chunk's own: a chunk's size is often a multiple of 4 KiB, and then the
 * transform's stores to a dozen or more points all fell in the same L1
 * sets; one line further each, the weight transform ran twice as fast
 * (the transform alone, Zen 4, 256 -> 256 channels, chunks of 24 rows). */
#define PKK_WG_U_PAD 16
static size_t pkk_wg_u_floats(int cin, int cout)
{
    const size_t all = (size_t)PKK_WG_POINTS * ((size_t)pkk_wg_rows(cout) * cin + PKK_WG_U_PAD);
    const size_t block = (size_t)PKK_WG_POINTS * ((size_t)pkk_winograd_block_rows(cout) * cin + PKK_WG_U_PAD);
    const size_t floats = all < PKK_WG_U_BUDGET ? all : block > PKK_WG_U_BUDGET ? block : PKK_WG_U_BUDGET;
    return (floats + 15) / 16 * 16;
}

/* Threads with a buffer of transformed weights: the products' threads,
 * one per transform point at most. */
static size_t pkk_wg_u_threads(size_t threads) { return threads < PKK_WG_POINTS ? threads : PKK_WG_POINTS; }

/* Rows (whole register blocks) per chunk of U for `points` points. */
static int pkk_wg_chunk_rows(int cin, int cout, int points, size_t u_floats)
{
    const int mr = pkk_winograd_block_rows(cout), rows = pkk_wg_rows(cout);
    const size_t per_point = u_floats / (size_t)points;
    const size_t fit = per_point > PKK_WG_U_PAD ? (per_point - PKK_WG_U_PAD) / cin / (size_t)mr * (size_t)mr : 0;
    return fit >= (size_t)rows ? rows : (int)fit;
}

/* ---- tiles ---- */

/* Tile t of a batch: image b, tile row ty, tile column tx. */
typedef struct {
    int b, ty, tx;
} pkk_tile;

typedef struct {
    const float *x, *s, *bias, *residual; /* s: the regrouped weights (pkk_winograd_arrange_weights) */
    float *y, *v, *m;
    float *u;          /* per thread (the first 36 threads, the products' most):
                          transformed weights of its points, a chunk of rows (pkk_wg_chunk_rows) */
    size_t u_floats;   /* per thread */
    float *pads;       /* per thread: the chunk's padded planes (pkk_wg_padded) */
    size_t pad_floats; /* per thread */
    int cin, cout, batch, h, w, tiles_y, tiles_x, relu;
    int interleaved; /* tiles in image-interleaved order (pkk_wg_interleavable) */
    size_t t0;   /* first tile of the chunk */
    int tn;      /* tiles in the chunk */
    int blocks;  /* blocks of 16 tiles a chunk holds: V [36][blocks][cin][16],
                    M [36][blocks][rows][16], points pkk_wg_v_stride / m_stride apart */
    int u_ready; /* u holds every point's transformed weights, all rows, [36][rows cin], shared */
} pkk_wg_args;

/* The order of the tiles in V and M, which the GEMMs do not see. Image
 * order: image by image, row by row. Image-interleaved order: per group of
 * 16 images, position by position, the 16 images' tiles at a position
 * together, so that a block of 16 tiles is one position of 16 images. The
 * transforms then read every patch element of a block as one 16-float load
 * from a copy of the group's planes with the images innermost, where image
 * order gathers each tile's patch rows and transposes them in registers
 * (the input transform was a quarter of a training step). It takes whole
 * groups and whole tiles: batches of a multiple of 16, sides of a multiple
 * of 4. A tile's arithmetic is the same in either order, so the forward's
 * results are the same bits; the weight gradient's sums over tiles run in
 * another order. */
#define PKK_WG_GROUP 16

static int pkk_wg_interleavable(int batch, int h, int w)
{
    return batch % PKK_WG_GROUP == 0 && h % 4 == 0 && w % 4 == 0;
}

static inline pkk_tile pkk_tile_at(const pkk_wg_args *a, size_t t)
{
    const size_t per_image = (size_t)a->tiles_y * a->tiles_x;
    if (a->interleaved) {
        const size_t group = t / (per_image * PKK_WG_GROUP), r = t - group * per_image * PKK_WG_GROUP;
        const size_t at = r / PKK_WG_GROUP;
        pkk_tile tile = { (int)(group * PKK_WG_GROUP + r % PKK_WG_GROUP), (int)(at / (size_t)a->tiles_x),
                          (int)(at % (size_t)a->tiles_x) };
        return tile;
    }
    const size_t b = t / per_image, r = t - b * per_image;
    pkk_tile tile = { (int)b, (int)(r / (size_t)a->tiles_x), (int)(r % (size_t)a->tiles_x) };
    return tile;
}

/* The next tile in image order (the interleaved kernels go a block, one
 * position, at a time: pkk_tile_at). */
static inline void pkk_tile_next(const pkk_wg_args *a, pkk_tile *tile)
{
    if (++tile->tx == a->tiles_x) {
        tile->tx = 0;
        if (++tile->ty == a->tiles_y) {
            tile->ty = 0;
            tile->b++;
        }
    }
}

/* ---- input transform ---- */

typedef int pkk_i8 __attribute__((vector_size(32)));

/* Columns c = 0..7 of the 8 x 8 matrix with rows r[0..7], in 24 shuffles
 * (unpack, 64-bit shuffle, 128-bit permute on AVX2). */
static inline __attribute__((always_inline)) void pkk_transpose8(const pkk_v8 r[8], pkk_v8 c[8])
{
    pkk_v8 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
        t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = __builtin_shufflevector(t[i], t[i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
        u[i + 1] = __builtin_shufflevector(t[i], t[i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
        u[i + 2] = __builtin_shufflevector(t[i + 1], t[i + 3], 0, 1, 8, 9, 4, 5, 12, 13);
        u[i + 3] = __builtin_shufflevector(t[i + 1], t[i + 3], 2, 3, 10, 11, 6, 7, 14, 15);
    }
    for (int i = 0; i < 4; i++) {
        c[i] = __builtin_shufflevector(u[i], u[i + 4], 0, 1, 2, 3, 8, 9, 10, 11);
        c[i + 4] = __builtin_shufflevector(u[i], u[i + 4], 4, 5, 6, 7, 12, 13, 14, 15);
    }
}

/* The chunk's images of one channel with a zero border (one row and column
 * before, and after up to the tiles' extent), so that every 6x6 patch is
 * inside: plane i holds image first + i, `pitch` floats per row, planes
 * `stride` floats apart. In image-interleaved order a plane holds a group
 * of 16 images (first..last count groups) with the images innermost: the
 * 16 floats at position (y, x) are the 16 images' pixels there. The
 * borders are zeroed once per chunk (pkk_wg_pad_clear) and never written
 * after, so each channel copies only the images' interiors: rewriting the
 * borders per channel took 9% of the edge model's time (perf), and
 * dropping it scores that model 6% faster. */
typedef struct {
    float *data;
    int first, last, pitch;
    size_t stride;
    int y0, y1; /* image rows [y0, y1) copied: the rows the chunk's patches read */
} pkk_wg_padded;

/* The calling thread's padded planes for the chunk. */
static pkk_wg_padded pkk_wg_chunk_pad(const pkk_wg_args *a, int thread)
{
    const int first = pkk_tile_at(a, a->t0).b, last = pkk_tile_at(a, a->t0 + (size_t)a->tn - 1).b;
    const int pitch = 4 * a->tiles_x + 2, group = a->interleaved ? PKK_WG_GROUP : 1;
    pkk_wg_padded pad = { a->pads + (size_t)thread * a->pad_floats, first / group, last / group, pitch,
                          (size_t)pitch * (size_t)(4 * a->tiles_y + 2) * (size_t)group, 0, a->h };
    if (pad.first == pad.last) { /* one plane: only the rows of its tile rows' patches */
        const int ty0 = pkk_tile_at(a, a->t0).ty, ty1 = pkk_tile_at(a, a->t0 + (size_t)a->tn - 1).ty;
        if (ty0 <= ty1) {
            pad.y0 = 4 * ty0 - 1 > 0 ? 4 * ty0 - 1 : 0;
            pad.y1 = 4 * ty1 + 5 < a->h ? 4 * ty1 + 5 : a->h;
        }
    }
    return pad;
}

static void pkk_wg_pad_clear(const pkk_wg_padded *pad)
{
    memset(pad->data, 0, sizeof(float) * ((size_t)(pad->last - pad->first + 1) * pad->stride + PKK_WG_LANES));
}

/* Columns c = 0..15 of the 16 x 16 matrix with rows r[0..15], in 64
 * shuffles: 2 x 2 blocks of floats, then of float pairs, within 128-bit
 * lanes (the 4 x 4 transposes of each lane), then the lanes themselves. */
static inline __attribute__((always_inline)) void pkk_transpose16(const pkk_v16 r[16], pkk_v16 c[16])
{
    pkk_v16 t[16], u[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 16, 1, 17, 4, 20, 5, 21, 8, 24, 9, 25, 12, 28, 13, 29);
        t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 18, 3, 19, 6, 22, 7, 23, 10, 26, 11, 27, 14, 30, 15,
                                           31);
    }
    /* u[4g + k]: lane L holds column 4L + k of rows 4g..4g+3 */
    for (int g = 0; g < 4; g++)
        for (int h = 0; h < 2; h++) {
            const pkk_v16 p = t[4 * g + h], q = t[4 * g + h + 2];
            u[4 * g + 2 * h] = __builtin_shufflevector(p, q, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29);
            u[4 * g + 2 * h + 1] = __builtin_shufflevector(p, q, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15,
                                                           30, 31);
        }
    for (int k = 0; k < 4; k++) {
        const pkk_v16 lo01 = __builtin_shufflevector(u[k], u[4 + k], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21,
                                                     22, 23);
        const pkk_v16 hi01 = __builtin_shufflevector(u[k], u[4 + k], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27,
                                                     28, 29, 30, 31);
        const pkk_v16 lo23 = __builtin_shufflevector(u[8 + k], u[12 + k], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20,
                                                     21, 22, 23);
        const pkk_v16 hi23 = __builtin_shufflevector(u[8 + k], u[12 + k], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26,
                                                     27, 28, 29, 30, 31);
        c[k] = __builtin_shufflevector(lo01, lo23, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
        c[4 + k] = __builtin_shufflevector(lo01, lo23, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
        c[8 + k] = __builtin_shufflevector(hi01, hi23, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
        c[12 + k] = __builtin_shufflevector(hi01, hi23, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
    }
}

/* Image-interleaved planes: 16 pixels of 16 images at a time, a 16 x 16
 * transpose, each column stored at its pixel's position (the planes' pixel
 * counts are multiples of 16: sides of a multiple of 4). */
static inline __attribute__((always_inline)) void pkk_wg_pad_interleaved(const pkk_wg_args *a, const float *xc,
                                                                          const pkk_wg_padded *pad)
{
    const int w = a->w, pitch = pad->pitch;
    const size_t plane = (size_t)a->h * w;
    for (int g = pad->first; g <= pad->last; g++) {
        const float *src = xc + (size_t)g * PKK_WG_GROUP * plane;
        float *dst = pad->data + (size_t)(g - pad->first) * pad->stride;
        const size_t i_from = (size_t)pad->y0 * w / 16 * 16, i_to = ((size_t)pad->y1 * w + 15) / 16 * 16;
        int y = (int)(i_from / (size_t)w), x = (int)(i_from % (size_t)w);
        for (size_t i0 = i_from; i0 < i_to && i0 < plane; i0 += 16) {
            pkk_v16 r[16], c[16];
            const float *row = src + i0;
            for (int l = 0; l < 16; l++, row += plane) r[l] = *(const pkk_v16u *)row;
            pkk_transpose16(r, c);
            for (int k = 0; k < 16; k++) {
                *(pkk_v16u *)(dst + ((size_t)(y + 1) * pitch + x + 1) * PKK_WG_GROUP) = c[k];
                if (++x == w) {
                    x = 0;
                    y++;
                }
            }
        }
    }
}

static inline __attribute__((always_inline)) void pkk_wg_pad(const pkk_wg_args *a, const float *xc,
                                                              const pkk_wg_padded *pad)
{
    if (a->interleaved) {
        pkk_wg_pad_interleaved(a, xc, pad);
        return;
    }
    const int h = a->h, w = a->w, pitch = pad->pitch, first = pad->first;
    for (int b = first; b <= pad->last; b++) {
        const float *src = xc + (size_t)b * h * w;
        float *dst = pad->data + (size_t)(b - first) * pad->stride + pitch + 1;
        src += (size_t)pad->y0 * w;
        dst += (size_t)pad->y0 * pitch;
        if (w % PKK_WG_LANES == 0) {
            for (int iy = pad->y0; iy < pad->y1; iy++, src += w, dst += pitch)
                for (int ix = 0; ix < w; ix += PKK_WG_LANES) *(pkk_v8u *)(dst + ix) = *(const pkk_v8u *)(src + ix);
        } else {
            for (int iy = pad->y0; iy < pad->y1; iy++, src += w, dst += pitch)
                memcpy(dst, src, sizeof(float) * (size_t)w);
        }
    }
}

typedef float pkk_v4 __attribute__((vector_size(16)));
typedef float pkk_v4u __attribute__((vector_size(16), aligned(4)));

/* Four floats at lo in the low half, four at hi in the high half. */
static inline __attribute__((always_inline)) void pkk_halves(const float *lo, const float *hi, pkk_v8 *out)
{
    const pkk_v4 l = *(const pkk_v4u *)lo, h = *(const pkk_v4u *)hi;
    *out = __builtin_shufflevector(l, h, 0, 1, 2, 3, 4, 5, 6, 7);
}

/* Column k of the 4 x 4 blocks in each half of rows r[0..3]: element i of
 * the low (high) half is r[i][k] (r[i][4 + k]). In-lane shuffles only. */
static inline __attribute__((always_inline)) void pkk_columns4(const pkk_v8 r[4], int count, pkk_v8 *c)
{
    const pkk_v8 t0 = __builtin_shufflevector(r[0], r[1], 0, 8, 1, 9, 4, 12, 5, 13);
    const pkk_v8 t2 = __builtin_shufflevector(r[2], r[3], 0, 8, 1, 9, 4, 12, 5, 13);
    c[0] = __builtin_shufflevector(t0, t2, 0, 1, 8, 9, 4, 5, 12, 13);
    c[1] = __builtin_shufflevector(t0, t2, 2, 3, 10, 11, 6, 7, 14, 15);
    if (count == 2) return;
    const pkk_v8 t1 = __builtin_shufflevector(r[0], r[1], 2, 10, 3, 11, 6, 14, 7, 15);
    const pkk_v8 t3 = __builtin_shufflevector(r[2], r[3], 2, 10, 3, 11, 6, 14, 7, 15);
    c[2] = __builtin_shufflevector(t1, t3, 0, 1, 8, 9, 4, 5, 12, 13);
    c[3] = __builtin_shufflevector(t1, t3, 2, 3, 10, 11, 6, 7, 14, 15);
}

/* d[r*6 + c][l] = x[b][4ty - 1 + r][4tx - 1 + c] of lane l's tile (0 outside
 * the image). Per patch row, lanes l and l + 4 share a vector, lane l's
 * four columns in the low half, lane l + 4's in the high one (the halves
 * are loaded separately, so no shuffle crosses them); columns 0..3 and 4..5
 * then come out of two in-lane 4 x 4 transposes: 12 shuffles per row where
 * a full 8 x 8 transpose takes 24 (the edge model scores about 1% faster).
 * Lanes >= n repeat lane 0 (the caller zeroes them). */
static inline __attribute__((always_inline)) void pkk_wg_gather(const pkk_wg_args *a, pkk_tile tile, int n, const pkk_wg_padded *pad,
                                 pkk_v8 d[PKK_WG_POINTS])
{
    const float *lane[PKK_WG_LANES];
    for (int l = 0; l < PKK_WG_LANES; l++) {
        if (l >= n) {
            lane[l] = lane[0];
            continue;
        }
        lane[l] = pad->data + (size_t)(tile.b - pad->first) * pad->stride + (size_t)(4 * tile.ty) * pad->pitch
                + 4 * tile.tx;
        pkk_tile_next(a, &tile);
    }
    for (int r = 0; r < 6; r++) {
        const size_t row = (size_t)r * pad->pitch;
        pkk_v8 left[4], right[4];
        for (int l = 0; l < 4; l++) {
            pkk_halves(lane[l] + row, lane[l + 4] + row, &left[l]);
            pkk_halves(lane[l] + row + 4, lane[l + 4] + row + 4, &right[l]);
        }
        pkk_columns4(left, 4, d + r * 6);
        pkk_columns4(right, 2, d + r * 6 + 4);
    }
}

static inline __attribute__((always_inline)) void pkk_wg_bt(const pkk_v8 *in, int s, pkk_v8 *out, int so)
{
    PKK_WG_BT(pkk_v8, in, s, out, so);
}

static inline __attribute__((always_inline)) void pkk_wg_bt16(const pkk_v16 *in, int s, pkk_v16 *out, int so)
{
    PKK_WG_BT(pkk_v16, in, s, out, so);
}

/* Points (k0, k) and (k1, k) of V, k = 0..5, of one block of 16
 * image-interleaved tiles (one position of a group): patch element (r, c)
 * is the 16 floats at patch + r pitch + 16 c. */
static inline __attribute__((always_inline)) void pkk_wg_input_pair16(const float *patch, size_t pitch, int k0,
                                                                       int k1, float *dst, size_t point_stride)
{
    pkk_v16 t[2][6];
    for (int c = 0; c < 6; c++) {
        pkk_v16 d[6], out[6];
        for (int r = 0; r < 6; r++) d[r] = *(const pkk_v16u *)(patch + (size_t)r * pitch + 16 * c);
        pkk_wg_bt16(d, 1, out, 1); /* columns: B^T d (the four outputs not used are not computed) */
        t[0][c] = out[k0];
        t[1][c] = out[k1];
    }
    for (int h = 0; h < 2; h++) {
        pkk_v16 v[6];
        pkk_wg_bt16(t[h], 1, v, 1); /* rows: (.) B */
        for (int k = 0; k < 6; k++) *(pkk_v16 *)(dst + (size_t)(6 * (h ? k1 : k0) + k) * point_stride) = v[k];
    }
}

/* V of one block of 16 image-interleaved tiles. The same arithmetic as the
 * gathered path (columns, then rows, with PKK_WG_BT's expressions: the
 * same bits), but a pair of the column transform's outputs at a time, the
 * patch loaded again per pair: the 36 points held at once spilled to the
 * stack, and loads are cheaper than spills. The pairs share terms. */
static inline __attribute__((always_inline)) void pkk_wg_input_block16(const float *patch, size_t pitch,
                                                                        float *dst, size_t point_stride)
{
    pkk_wg_input_pair16(patch, pitch, 0, 5, dst, point_stride);
    pkk_wg_input_pair16(patch, pitch, 1, 2, dst, point_stride);
    pkk_wg_input_pair16(patch, pitch, 3, 4, dst, point_stride);
}

typedef int pkk_i16 __attribute__((vector_size(64)));

/* Stores the 36 points of the 8 tiles j..j+7 of a chunk of tn into one
 * channel's column of V's layout ([36][blocks][channels][16], points
 * point_stride apart; c: the channel's first float), lanes past n zeroed
 * (they hold lane 0's tile), and the upper half of a last block with 8 or
 * fewer tiles zeroed too: the GEMMs read whole blocks of 16. */
static inline __attribute__((always_inline)) void pkk_wg_store8(pkk_v8 v[PKK_WG_POINTS], int n, int j, int tn,
                                                                 int channels, size_t point_stride, float *c)
{
    if (n < PKK_WG_LANES) {
        pkk_i8 keep;
        for (int l = 0; l < PKK_WG_LANES; l++) keep[l] = l < n ? -1 : 0;
        for (int p = 0; p < PKK_WG_POINTS; p++) v[p] = (pkk_v8)((pkk_i8)v[p] & keep);
    }
    const int half = j % PKK_WG_NR, last_group = j + PKK_WG_LANES >= tn;
    for (int p = 0; p < PKK_WG_POINTS; p++) {
        float *dst = c + (size_t)p * point_stride + (size_t)(j / PKK_WG_NR) * channels * PKK_WG_NR + half;
        *(pkk_v8 *)dst = v[p];
        if (last_group && half == 0) *(pkk_v8 *)(dst + PKK_WG_LANES) = (pkk_v8){ 0 };
    }
}

/* V[p][ci][j] for channels [lo, hi) and every tile of the chunk. With
 * AVX-512 (wide), 16 tiles at a time, a whole row of a V block: two
 * 8-tile gathers joined, then the transform's arithmetic on 16-float
 * vectors, half the instructions per tile. */
static inline __attribute__((always_inline)) void pkk_wg_input_range(long lo, long hi, int thread,
                                                                      const pkk_wg_args *a, int wide)
{
    const size_t in_ch = (size_t)a->batch * a->h * a->w;
    const size_t point_stride = pkk_wg_v_stride((size_t)a->blocks, a->cin);
    const pkk_wg_padded pad = pkk_wg_chunk_pad(a, thread);
    pkk_v8 d[PKK_WG_POINTS], t[PKK_WG_POINTS], v[PKK_WG_POINTS];

    if (lo < hi) pkk_wg_pad_clear(&pad);
    for (long ci = lo; ci < hi; ci++) {
        pkk_wg_pad(a, a->x + (size_t)ci * in_ch, &pad);
        float *vc = a->v + (size_t)ci * PKK_WG_NR;
        pkk_tile tile = pkk_tile_at(a, a->t0);
        if (wide) {
            pkk_v16 d16[PKK_WG_POINTS], t16[PKK_WG_POINTS], v16[PKK_WG_POINTS];
            for (int j = 0; j < a->tn; j += PKK_WG_NR) {
                if (a->interleaved) {
                    const pkk_tile at = pkk_tile_at(a, a->t0 + (size_t)j);
                    const float *patch = pad.data + (size_t)(at.b / PKK_WG_GROUP - pad.first) * pad.stride
                                       + ((size_t)(4 * at.ty) * pad.pitch + 4 * at.tx) * PKK_WG_GROUP;
                    pkk_wg_input_block16(patch, (size_t)pad.pitch * PKK_WG_GROUP,
                                         vc + (size_t)(j / PKK_WG_NR) * a->cin * PKK_WG_NR, point_stride);
                    continue;
                }
                const int n = a->tn - j < PKK_WG_NR ? a->tn - j : PKK_WG_NR;
                const int n0 = n < PKK_WG_LANES ? n : PKK_WG_LANES;
                pkk_wg_gather(a, tile, n0, &pad, d);
                for (int l = 0; l < n0; l++) pkk_tile_next(a, &tile);
                if (n > n0) {
                    pkk_wg_gather(a, tile, n - n0, &pad, t);
                    for (int l = n0; l < n; l++) pkk_tile_next(a, &tile);
                }
                for (int p = 0; p < PKK_WG_POINTS; p++)
                    d16[p] = __builtin_shufflevector(d[p], n > n0 ? t[p] : d[p], 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
                                                     11, 12, 13, 14, 15);
                for (int c = 0; c < 6; c++) pkk_wg_bt16(d16 + c, 6, t16 + c, 6);         /* columns: B^T d */
                for (int r = 0; r < 6; r++) pkk_wg_bt16(t16 + 6 * r, 1, v16 + 6 * r, 1); /* rows: (.) B */
                if (n < PKK_WG_NR) { /* the GEMM reads whole blocks of 16: lanes past n are zero */
                    pkk_i16 keep;
                    for (int l = 0; l < PKK_WG_NR; l++) keep[l] = l < n ? -1 : 0;
                    for (int p = 0; p < PKK_WG_POINTS; p++) v16[p] = (pkk_v16)((pkk_i16)v16[p] & keep);
                }
                float *dst = vc + (size_t)(j / PKK_WG_NR) * a->cin * PKK_WG_NR;
                for (int p = 0; p < PKK_WG_POINTS; p++) *(pkk_v16 *)(dst + (size_t)p * point_stride) = v16[p];
            }
            continue;
        }
        for (int j = 0; j < a->tn; j += PKK_WG_LANES) {
            const int n = a->tn - j < PKK_WG_LANES ? a->tn - j : PKK_WG_LANES;
            pkk_wg_gather(a, tile, n, &pad, d);
            for (int c = 0; c < 6; c++) pkk_wg_bt(d + c, 6, t + c, 6);         /* columns: B^T d */
            for (int r = 0; r < 6; r++) pkk_wg_bt(t + 6 * r, 1, v + 6 * r, 1); /* rows: (.) B */
            pkk_wg_store8(v, n, j, a->tn, a->cin, point_stride, vc);
            for (int l = 0; l < n; l++) pkk_tile_next(a, &tile);
        }
    }
}

__attribute__((target_clones("arch=x86-64-v3", "default")))
static void pkk_wg_input(long lo, long hi, int thread, const void *args)
{
    pkk_wg_input_range(lo, hi, thread, args, 0);
}

PKK_AVX512 static void pkk_wg_input_avx512(long lo, long hi, int thread, const void *args)
{
    pkk_wg_input_range(lo, hi, thread, args, 1);
}

/* ---- GEMMs ---- */

/* M[p] = U[p] x V[p] for transform points [lo, hi): per chunk of output
 * channels, their U made for these points in the thread's own buffer, then
 * per block of 6 (or 4) of them (its U panel stays in L1), every block of
 * 16 tiles of the chunk; with AVX-512 (wide), up to four blocks of tiles at
 * a time, one 16-float vector per row of each. */
static inline __attribute__((always_inline)) void pkk_wg_products_range(long lo, long hi, int thread,
                                                                         const pkk_wg_args *a, int wide)
{
    const int mr = pkk_winograd_block_rows(a->cout), rows = pkk_wg_rows(a->cout);
    const int used = (a->tn + PKK_WG_NR - 1) / PKK_WG_NR;
    const size_t v_block = (size_t)a->cin * PKK_WG_NR, tap_stride = (size_t)rows * a->cin;
    float *u = a->u_ready ? a->u : a->u + (size_t)thread * a->u_floats;
    const int rc = a->u_ready ? rows : pkk_wg_chunk_rows(a->cin, a->cout, (int)(hi - lo), a->u_floats);
    for (int c0 = 0; c0 < rows; c0 += rc) {
        const int cn = rows - c0 < rc ? rows - c0 : rc;
        const size_t count = (size_t)cn * a->cin;
        const size_t point_stride = a->u_ready ? count : count + PKK_WG_U_PAD;
        if (!a->u_ready) pkk_wg_transform(a->s + (size_t)c0 * a->cin, tap_stride, count, (int)lo, (int)hi, point_stride, u);
        for (long p = lo; p < hi; p++) {
            const float *up = u + (size_t)(a->u_ready ? p : p - lo) * point_stride;
            const float *vp = a->v + (size_t)p * pkk_wg_v_stride((size_t)a->blocks, a->cin);
            float *mp = a->m + (size_t)p * pkk_wg_m_stride((size_t)a->blocks, a->cout);
            for (int r0 = c0; r0 < c0 + cn; r0 += mr)
                for (int tb = 0, step; tb < used; tb += step) {
                    const float *ub = up + (size_t)(r0 - c0) * a->cin, *vb = vp + (size_t)tb * v_block;
                    float *mb = mp + ((size_t)tb * rows + (size_t)r0) * PKK_WG_NR;
                    if (wide) { /* a lone last block computes 16 columns even if 8 are tiles: the rest are zeros */
                        step = used - tb < PKK_ZMM_NB ? used - tb : PKK_ZMM_NB;
                        pkk_v16 acc[6 * PKK_ZMM_NB];
                        if (mr == 4) pkk_block_zmm_any(a->cin, 4, step, ub, vb, v_block, NULL, acc);
                        else pkk_block_zmm_any(a->cin, 6, step, ub, vb, v_block, NULL, acc);
                        for (int h = 0; h < step; h++)
                            for (int r = 0; r < mr; r++)
                                *(pkk_v16 *)(mb + ((size_t)h * rows + r) * PKK_WG_NR) = acc[PKK_ZMM_NB * r + h];
                        continue;
                    }
                    step = 1;
                    pkk_v8 acc[12], *out = (pkk_v8 *)mb;
                    const int half = a->tn - tb * PKK_WG_NR <= PKK_WG_LANES; /* at most 8 tiles left */
                    if (mr == 4) {
                        if (half) pkk_block_4x8(a->cin, ub, vb, acc);
                        else pkk_block_4x16(a->cin, ub, vb, acc);
                    } else {
                        if (half) pkk_block_6x8(a->cin, ub, vb, NULL, acc);
                        else pkk_block_6x16(a->cin, ub, vb, NULL, acc);
                    }
                    for (int j = 0; j < 2 * mr; j += 1 + half) out[j] = acc[j];
                }
        }
    }
}

__attribute__((target_clones("arch=x86-64-v3", "default")))
static void pkk_wg_products(long lo, long hi, int thread, const void *args)
{
    pkk_wg_products_range(lo, hi, thread, args, 0);
}

/* ---- one or two blocks of tiles: the products turned around ----
 *
 * A chunk of at most 16 tiles (the 4x4 maps of 16 images: a tile each) is
 * one block (17 images, a frame's objects, two), so the blocks above run
 * 6 x 16 (6 x 32, half of it padding): per input channel six
 * broadcasts of U and one vector of V for six FMAs, with U (made per chunk
 * of rows) and V (re-read per chunk of rows) both coming from L2; `perf`
 * put 70% of the 512 -> 512 layer's time there, at half the FMA peak. Here
 * M[p]^T = V[p]^T U[p]^T instead: the tiles are the broadcast rows (8 at a
 * time, from V's [cin][16]) and the output channels the vectors (3 per
 * group of 48, from U), so 24 accumulators take 11 loads per input
 * channel: alone, twice the rate. U is made in the layout this wants,
 * [ci][48] per group of 8 register blocks of 6 rows, gathered from the
 * blocks' six-float runs, and a piece of input channels at a time so that
 * it stays in the thread's buffer; the sums wait between pieces in
 * tile-major partials, transposed into M after the last. The threads split
 * the output channels, not the transform points, so each group is gathered
 * and transformed once (split by points, the gather took 60% of the
 * layer). Each sum still runs over the input channels in order with the
 * same fused multiply-adds on the same transformed weights: the same bits
 * as the blocks above. The 512 -> 512 and 256 -> 512 layers of 16 images
 * ran 1.4-1.5x as fast on 2 threads, 1.6-1.7x on 1; the 512 -> 512 of 17
 * images 1.55-1.7x, the tiles being taken 8 at a time and the last few
 * alone. */
#define PKK_WG_SW_COLS 48 /* output channels per group: 8 register blocks of 6, 3 vectors */
#define PKK_WG_SW_PART (PKK_WG_NR * PKK_WG_SW_COLS) /* partial sums of a block of tiles */
#define PKK_WG_SW_TILES 32                          /* most tiles per chunk: two blocks */

/* Input channels per piece of U for `points` points in a thread's buffer
 * (after the partials), or 0 when fewer than 16 fit. */
static int pkk_wg_sw_piece(int cin, int points, int blocks, size_t u_floats)
{
    const size_t part = (size_t)points * blocks * PKK_WG_SW_PART;
    if (u_floats <= part) return 0;
    const size_t fit = (u_floats - part) / ((size_t)points * PKK_WG_SW_COLS);
    return fit < 16 ? 0 : fit >= (size_t)cin ? cin : (int)fit;
}

/* A group's 48 output channels at one input channel and tap, as 3 vectors,
 * from the six-float runs of its `blocks` register blocks (block j's at
 * run + j block_stride; the channels of missing blocks zero): one masked
 * load per block, then the runs packed by two-register permutes. */
PKK_AVX512 static inline __attribute__((always_inline)) void pkk_wg_sw_gather(const float *run, size_t block_stride,
                                                                            int blocks, pkk_v16 out[3])
{
    pkk_v8 b[8];
    for (int j = 0; j < 8; j++)
        b[j] = j < blocks ? (pkk_v8)_mm256_maskz_loadu_ps(0x3F, run + (size_t)j * block_stride) : (pkk_v8){ 0 };
    const pkk_v16 b01 = __builtin_shufflevector(b[0], b[1], 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const pkk_v16 b23 = __builtin_shufflevector(b[2], b[3], 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const pkk_v16 b45 = __builtin_shufflevector(b[4], b[5], 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const pkk_v16 b67 = __builtin_shufflevector(b[6], b[7], 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    out[0] = __builtin_shufflevector(b01, b23, 0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13, 16, 17, 18, 19);
    out[1] = __builtin_shufflevector(b23, b45, 4, 5, 8, 9, 10, 11, 12, 13, 16, 17, 18, 19, 20, 21, 24, 25);
    out[2] = __builtin_shufflevector(b45, b67, 10, 11, 12, 13, 16, 17, 18, 19, 20, 21, 24, 25, 26, 27, 28, 29);
}

/* The gather reads 72 six-float runs per input channel (9 taps, 8 blocks),
 * whose strides are often multiples of 4 KiB (6 cin floats between blocks,
 * a tap's whole weights between taps): their lines then share a few L1
 * sets and left before the next channel, six floats on, could use them. So
 * the runs are first copied 8 channels (3 lines) at a time into a buffer,
 * whole lines read once, and gathered from there. Measured on Zen 4 (2
 * threads, 16 images, medians of 5 alternated runs): the 512 -> 512 layer
 * in 0.77x the time, 256 -> 512 in 0.95x, the same bits; in the w=64
 * model, a gain (about 1.5% of a pass) below what ab.py resolves on this
 * shared host. The 16-pixel convolution's gather (pkk_c16_range) reads 8
 * runs at a time, not 72, and staged it was slower (0.9x): left as is. */
#define PKK_WG_SW_STAGE 8

/* dst[0 .. 6n) = run[0 .. 6n) for n <= PKK_WG_SW_STAGE channels (at most
 * 48 floats: one mask bit each). */
PKK_AVX512 static inline __attribute__((always_inline)) void pkk_wg_sw_stage(const float *run, int n, float *dst)
{
    const unsigned long long mask = (1ULL << (6 * n)) - 1;
    for (int h = 0; h < 3; h++) {
        const __mmask16 m = (__mmask16)(mask >> (16 * h));
        _mm512_store_ps(dst + 16 * h, _mm512_maskz_loadu_ps(m, run + 16 * h));
    }
}

/* u[p][i][0..47] = (G g G^T)[p] for the 36 points p and input channels
 * k0 + i, i < kn, of the group's `blocks` register blocks from s (block
 * j's (ci, r) at s + j 6 cin + 6 ci + r, tap k tap_stride further):
 * pkk_wg_transform's arithmetic, element by element. */
PKK_AVX512 static inline __attribute__((always_inline)) void
pkk_wg_sw_transform_blocks(const float *s, size_t tap_stride, int cin, int blocks, int k0, int kn, float *u)
{
    const size_t point_stride = (size_t)kn * PKK_WG_SW_COLS, block_stride = (size_t)6 * cin;
    float runs[9][8][PKK_WG_SW_STAGE * 6] __attribute__((aligned(64)));
    for (int i = 0; i < kn; i++) {
        const int staged = i % PKK_WG_SW_STAGE;
        if (staged == 0) {
            const int n = kn - i < PKK_WG_SW_STAGE ? kn - i : PKK_WG_SW_STAGE;
            for (int k = 0; k < 9; k++)
                for (int j = 0; j < blocks; j++)
                    pkk_wg_sw_stage(s + (size_t)k * tap_stride + (size_t)j * block_stride + (size_t)(k0 + i) * 6, n,
                                    runs[k][j]);
        }
        pkk_v16 taps[9][3];
        for (int k = 0; k < 9; k++)
            pkk_wg_sw_gather(runs[k][0] + 6 * staged, PKK_WG_SW_STAGE * 6, blocks, taps[k]);
        for (int h = 0; h < 3; h++) {
            pkk_v16 g[9], t[18], row[6];
            for (int k = 0; k < 9; k++) g[k] = taps[k][h];
            for (int c = 0; c < 3; c++) PKK_WG_G(pkk_v16, g + c, 3, t + c, 3);
            for (int r = 0; r < 6; r++) {
                PKK_WG_G(pkk_v16, t + 3 * r, 1, row, 1);
                for (int j = 0; j < 6; j++) {
                    float *dst = u + (size_t)(6 * r + j) * point_stride + (size_t)i * PKK_WG_SW_COLS + 16 * h;
                    *(pkk_v16 *)dst = row[j];
                }
            }
        }
    }
}

/* pkk_wg_sw_transform_blocks, with `blocks` a constant for whole groups. */
PKK_AVX512 static void pkk_wg_sw_transform(const float *s, size_t tap_stride, int cin, int blocks, int k0, int kn,
                                          float *u)
{
    if (blocks == 8) pkk_wg_sw_transform_blocks(s, tap_stride, cin, 8, k0, kn, u);
    else pkk_wg_sw_transform_blocks(s, tap_stride, cin, blocks, k0, kn, u);
}

/* How pkk_wg_sw_rows treats the sums already in `sums`. */
enum {
    PKK_SW_FIRST,    /* none yet: sums = the products' sum */
    PKK_SW_CONTINUE, /* the sum goes on from them, one chain over all pieces */
    PKK_SW_ADD,      /* sums += the piece's own sum (summed from zero) */
};

/* The sums over i < kn of bt[16 i + t] u[48 i .. 48 i + 47] into
 * sums[t][0..47] for the nt (1 to 8, a constant where this is inlined)
 * tiles or pixels t of a row block: their broadcasts, 3 vectors of output
 * channels, in order of i. */
PKK_AVX512 static inline __attribute__((always_inline)) void pkk_wg_sw_rows(int nt, int kn, const float *bt,
                                                                          const float *u, int mode, float *sums)
{
    pkk_v16 c[8][3];
    for (int t = 0; t < nt; t++)
        for (int h = 0; h < 3; h++)
            c[t][h] = mode == PKK_SW_CONTINUE ? *(const pkk_v16 *)(sums + t * PKK_WG_SW_COLS + 16 * h) : (pkk_v16){ 0 };
    for (int i = 0; i < kn; i++, bt += PKK_WG_NR, u += PKK_WG_SW_COLS) {
        const pkk_v16 u0 = *(const pkk_v16 *)u, u1 = *(const pkk_v16 *)(u + 16), u2 = *(const pkk_v16 *)(u + 32);
        for (int t = 0; t < nt; t++) {
            c[t][0] += bt[t] * u0;
            c[t][1] += bt[t] * u1;
            c[t][2] += bt[t] * u2;
        }
    }
    for (int t = 0; t < nt; t++)
        for (int h = 0; h < 3; h++) {
            pkk_v16 *sum = (pkk_v16 *)(sums + t * PKK_WG_SW_COLS + 16 * h);
            *sum = mode == PKK_SW_ADD ? *sum + c[t][h] : c[t][h];
        }
}

/* The products of register blocks [lo, hi) (rows 6 lo to 6 hi) at every
 * transform point: the threads split the output channels, so each group's
 * weights are gathered and transformed once. */
PKK_AVX512 static void pkk_wg_sw_products(long lo, long hi, int thread, const void *args)
{
    const pkk_wg_args *a = args;
    const int rows = pkk_wg_rows(a->cout), cin = a->cin, used = (a->tn + PKK_WG_NR - 1) / PKK_WG_NR;
    const int piece = pkk_wg_sw_piece(cin, PKK_WG_POINTS, used, a->u_floats);
    const size_t part_floats = (size_t)used * PKK_WG_SW_PART, v_block = (size_t)cin * PKK_WG_NR;
    const size_t tap_stride = (size_t)rows * cin;
    const size_t v_stride = pkk_wg_v_stride((size_t)a->blocks, cin);
    const size_t m_stride = pkk_wg_m_stride((size_t)a->blocks, a->cout);
    float *part = a->u + (size_t)thread * a->u_floats, *u = part + PKK_WG_POINTS * part_floats;
    for (int c0 = 6 * (int)lo; c0 < 6 * (int)hi; c0 += PKK_WG_SW_COLS) {
        const int cn = 6 * (int)hi - c0 < PKK_WG_SW_COLS ? 6 * (int)hi - c0 : PKK_WG_SW_COLS;
        for (int k0 = 0; k0 < cin; k0 += piece) {
            const int kn = cin - k0 < piece ? cin - k0 : piece;
            pkk_wg_sw_transform(a->s + (size_t)c0 * cin, tap_stride, cin, cn / 6, k0, kn, u);
            for (int p = 0; p < PKK_WG_POINTS; p++) {
                const float *vp = a->v + (size_t)p * v_stride + (size_t)k0 * PKK_WG_NR;
                const float *up = u + (size_t)p * kn * PKK_WG_SW_COLS;
                float *pp = part + (size_t)p * part_floats;
                const int mode = k0 == 0 ? PKK_SW_FIRST : PKK_SW_CONTINUE;
                for (int tb = 0; tb < a->tn; tb += 8) {
                    const float *bt = vp + (size_t)(tb / PKK_WG_NR) * v_block + tb % PKK_WG_NR;
                    float *sums = pp + (size_t)tb * PKK_WG_SW_COLS;
                    switch (a->tn - tb < 8 ? a->tn - tb : 8) {
                    case 1: pkk_wg_sw_rows(1, kn, bt, up, mode, sums); break;
                    case 2: pkk_wg_sw_rows(2, kn, bt, up, mode, sums); break;
                    case 3: pkk_wg_sw_rows(3, kn, bt, up, mode, sums); break;
                    case 4: pkk_wg_sw_rows(4, kn, bt, up, mode, sums); break;
                    case 5: pkk_wg_sw_rows(5, kn, bt, up, mode, sums); break;
                    case 6: pkk_wg_sw_rows(6, kn, bt, up, mode, sums); break;
                    case 7: pkk_wg_sw_rows(7, kn, bt, up, mode, sums); break;
                    default: pkk_wg_sw_rows(8, kn, bt, up, mode, sums); break;
                    }
                }
                if (k0 + kn < cin) continue;
                for (int b = 0; b < used; b++) {
                    float *mp = a->m + (size_t)p * m_stride + ((size_t)b * rows + (size_t)c0) * PKK_WG_NR;
                    const float *pb = pp + (size_t)b * PKK_WG_SW_PART;
                    for (int h = 0; h * 16 < cn; h++) {
                        pkk_v16 r[16], col[16];
                        for (int t = 0; t < 16; t++) r[t] = *(const pkk_v16 *)(pb + t * PKK_WG_SW_COLS + 16 * h);
                        pkk_transpose16(r, col);
                        for (int j = 0; j < 16 && 16 * h + j < cn; j++)
                            *(pkk_v16 *)(mp + (size_t)(16 * h + j) * PKK_WG_NR) = col[j];
                    }
                }
            }
        }
    }
}

/* The same turn for the direct convolution of one cube's 4x4 map
 * (pkk_conv3x3_sixteen_pixels): the 16 pixels broadcast from the im2col,
 * 48 output channels per 3 vectors of weights gathered from S as it is, a
 * piece of the 9 cin sums at a time into a buffer that stays in L1. */
#define PKK_C16_PIECE 128

typedef struct {
    const float *col, *s, *bias, *residual;
    float *y;
    int cin, cout, relu;
} pkk_c16_args;

PKK_AVX512 static void pkk_c16_range(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const pkk_c16_args *a = args;
    const int cin = a->cin, k = 9 * cin;
    const size_t tap_stride = (size_t)pkk_wg_rows(a->cout) * cin;
    float w[PKK_C16_PIECE * PKK_WG_SW_COLS] __attribute__((aligned(64)));
    float part[PKK_WG_SW_PART] __attribute__((aligned(64)));
    for (int c0 = 6 * (int)lo; c0 < 6 * (int)hi; c0 += PKK_WG_SW_COLS) {
        const int cn = 6 * (int)hi - c0 < PKK_WG_SW_COLS ? 6 * (int)hi - c0 : PKK_WG_SW_COLS;
        for (int k0 = 0; k0 < k; k0 += PKK_C16_PIECE) {
            const int kn = k - k0 < PKK_C16_PIECE ? k - k0 : PKK_C16_PIECE;
            for (int i = 0; i < kn; i++) {
                const int tap = (k0 + i) / cin, ci = (k0 + i) % cin;
                const float *run = a->s + (size_t)tap * tap_stride + (size_t)c0 * cin + (size_t)ci * 6;
                pkk_v16 v[3];
                if (cn == PKK_WG_SW_COLS) pkk_wg_sw_gather(run, (size_t)6 * cin, 8, v);
                else pkk_wg_sw_gather(run, (size_t)6 * cin, cn / 6, v);
                for (int h = 0; h < 3; h++) *(pkk_v16 *)(w + i * PKK_WG_SW_COLS + 16 * h) = v[h];
            }
            for (int tb = 0; tb < PKK_WG_NR; tb += 8)
                pkk_wg_sw_rows(8, kn, a->col + (size_t)k0 * PKK_WG_NR + tb, w, k0 == 0 ? PKK_SW_FIRST : PKK_SW_ADD,
                               part + tb * PKK_WG_SW_COLS);
        }
        for (int h = 0; h * 16 < cn; h++) {
            pkk_v16 r[16], out[16];
            for (int t = 0; t < 16; t++) r[t] = *(const pkk_v16 *)(part + t * PKK_WG_SW_COLS + 16 * h);
            pkk_transpose16(r, out);
            for (int j = 0; j < 16 && 16 * h + j < cn && c0 + 16 * h + j < a->cout; j++) {
                const int co = c0 + 16 * h + j;
                pkk_v16 v = out[j] + (a->bias ? a->bias[co] : 0.0f);
                if (a->residual) v += *(const pkk_v16u *)(a->residual + (size_t)co * PKK_WG_NR);
                if (a->relu) v = __builtin_elementwise_max(v, (pkk_v16){ 0 });
                *(pkk_v16u *)(a->y + (size_t)co * PKK_WG_NR) = v;
            }
        }
    }
}

void pkk_conv3x3_sixteen_pixels(const float *col, const float *s, int cin, int cout, const float *bias,
                                const float *residual, int relu, float *y)
{
    const pkk_c16_args a = { col, s, bias, residual, y, cin, cout, relu };
    pkk_run(pkk_wg_rows(cout) / 6, (size_t)9 * cin * cout * PKK_WG_NR, pkk_c16_range, &a);
}

PKK_AVX512 static void pkk_wg_products_avx512(long lo, long hi, int thread, const void *args)
{
    pkk_wg_products_range(lo, hi, thread, args, 1);
}

/* ---- output transform ---- */

static inline __attribute__((always_inline)) void pkk_wg_at(const pkk_v8 *in, int s, pkk_v8 *out, int so)
{
    PKK_WG_AT(pkk_v8, in, s, out, so);
}

static inline __attribute__((always_inline)) void pkk_wg_at16(const pkk_v16 *in, int s, pkk_v16 *out, int so)
{
    PKK_WG_AT(pkk_v16, in, s, out, so);
}

/* One 4-float output row of a tile (bias added): plus the residual's row
 * (NULL: none), ReLU, stored at y. */
static inline __attribute__((always_inline)) void pkk_wg_store_row(pkk_v4 value, const float *residual, int relu,
                                                                    float *y)
{
    if (residual) value += *(const pkk_v4u *)residual;
    if (relu) value = __builtin_elementwise_max(value, (pkk_v4){ 0 });
    *(pkk_v4u *)y = value;
}

/* y[co] for channels [lo, hi): inverse transform of the chunk's tiles, then
 * bias, residual and ReLU on the way out. A whole tile leaves as four
 * 4-float rows, transposed out of the lanes; tiles cut by the image's edge
 * (sides not divisible by 4) element by element. */
PKK_CLONES
static void pkk_wg_output(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const pkk_wg_args *a = args;
    const int h = a->h, w = a->w, relu = a->relu;
    const size_t plane = (size_t)h * w;
    const size_t out_ch = (size_t)a->batch * plane;
    const int rows = pkk_wg_rows(a->cout);
    const size_t point_stride = pkk_wg_m_stride((size_t)a->blocks, a->cout);
    pkk_v8 m[PKK_WG_POINTS], t[24], o[16], lanes[2][8];

    for (long co = lo; co < hi; co++) {
        const float *mc = a->m + (size_t)co * PKK_WG_NR;
        float *yc = a->y + (size_t)co * out_ch;
        const float *rc = a->residual ? a->residual + (size_t)co * out_ch : NULL;
        const float bv = a->bias ? a->bias[co] : 0.0f;
        pkk_tile tile = pkk_tile_at(a, a->t0);
        for (int j = 0; j < a->tn; j += PKK_WG_LANES) {
            const int n = a->tn - j < PKK_WG_LANES ? a->tn - j : PKK_WG_LANES;
            const float *src = mc + (size_t)(j / PKK_WG_NR) * rows * PKK_WG_NR + j % PKK_WG_NR;
            for (int p = 0; p < PKK_WG_POINTS; p++) m[p] = *(const pkk_v8 *)(src + (size_t)p * point_stride);
            for (int c = 0; c < 6; c++) pkk_wg_at(m + c, 6, t + c, 6);         /* columns: A^T M */
            for (int r = 0; r < 4; r++) pkk_wg_at(t + 6 * r, 1, o + 4 * r, 1); /* rows: (.) A */
            for (int k = 0; k < 16; k++) o[k] += bv;
            pkk_transpose8(o, lanes[0]);     /* lane l: output rows 0 and 1 */
            pkk_transpose8(o + 8, lanes[1]); /* rows 2 and 3 */
            for (int l = 0; l < n; l++) {
                const int oy0 = 4 * tile.ty, ox0 = 4 * tile.tx;
                const size_t base = (size_t)tile.b * plane + (size_t)oy0 * w + ox0;
                if (oy0 + 4 <= h && ox0 + 4 <= w) {
                    for (int r = 0; r < 4; r++) {
                        const pkk_v8 pair = lanes[r / 2][l];
                        const pkk_v4 value = r % 2 == 0 ? __builtin_shufflevector(pair, pair, 0, 1, 2, 3)
                                                        : __builtin_shufflevector(pair, pair, 4, 5, 6, 7);
                        pkk_wg_store_row(value, rc ? rc + base + (size_t)r * w : NULL, relu,
                                         yc + base + (size_t)r * w);
                    }
                } else {
                    const int rows_in = h - oy0 < 4 ? h - oy0 : 4, cols_in = w - ox0 < 4 ? w - ox0 : 4;
                    for (int r = 0; r < rows_in; r++)
                        for (int c = 0; c < cols_in; c++) {
                            float value = o[r * 4 + c][l];
                            if (rc) value += rc[base + (size_t)r * w + c];
                            if (relu && value < 0.0f) value = 0.0f;
                            yc[base + (size_t)r * w + c] = value;
                        }
                }
                pkk_tile_next(a, &tile);
            }
        }
    }
}

/* pkk_wg_output for image-interleaved tiles (AVX-512): a block of 16 tiles
 * is 16 images at one position, transformed on 16 lanes at once, and a
 * 16 x 16 transpose hands each image its 4x4 tile, rows in the 4-float
 * lane groups. The same arithmetic as pkk_wg_output (the same bits), half
 * the instructions: 8-tile groups of one image order need a transpose per
 * 8 tiles. Interleaved tiles are never cut by an edge. */
PKK_AVX512 static void pkk_wg_output_interleaved(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const pkk_wg_args *a = args;
    const int w = a->w, relu = a->relu;
    const size_t plane = (size_t)a->h * w;
    const size_t out_ch = (size_t)a->batch * plane;
    const int rows = pkk_wg_rows(a->cout);
    const size_t point_stride = pkk_wg_m_stride((size_t)a->blocks, a->cout);

    for (long co = lo; co < hi; co++) {
        const float *mc = a->m + (size_t)co * PKK_WG_NR;
        float *yc = a->y + (size_t)co * out_ch;
        const float *rc = a->residual ? a->residual + (size_t)co * out_ch : NULL;
        const float bv = a->bias ? a->bias[co] : 0.0f;
        for (int j = 0; j < a->tn; j += PKK_WG_NR) {
            const pkk_tile at = pkk_tile_at(a, a->t0 + (size_t)j);
            const float *src = mc + (size_t)(j / PKK_WG_NR) * rows * PKK_WG_NR;
            pkk_v16 m[PKK_WG_POINTS], t[24], o[16], tiles[16];
            for (int p = 0; p < PKK_WG_POINTS; p++) m[p] = *(const pkk_v16 *)(src + (size_t)p * point_stride);
            for (int c = 0; c < 6; c++) pkk_wg_at16(m + c, 6, t + c, 6);         /* columns: A^T M */
            for (int r = 0; r < 4; r++) pkk_wg_at16(t + 6 * r, 1, o + 4 * r, 1); /* rows: (.) A */
            for (int k = 0; k < 16; k++) o[k] += bv;
            pkk_transpose16(o, tiles); /* tiles[l]: image at.b + l's outputs, row by row */
            for (int l = 0; l < PKK_WG_GROUP; l++) {
                const size_t base = (size_t)(at.b + l) * plane + (size_t)(4 * at.ty) * w + 4 * at.tx;
                const pkk_v16 tile = tiles[l];
                const pkk_v4 row[4] = { __builtin_shufflevector(tile, tile, 0, 1, 2, 3),
                                        __builtin_shufflevector(tile, tile, 4, 5, 6, 7),
                                        __builtin_shufflevector(tile, tile, 8, 9, 10, 11),
                                        __builtin_shufflevector(tile, tile, 12, 13, 14, 15) };
                for (int r = 0; r < 4; r++)
                    pkk_wg_store_row(row[r], rc ? rc + base + (size_t)r * w : NULL, relu, yc + base + (size_t)r * w);
            }
        }
    }
}

/* ---- driver ---- */

/* Floats of one thread's padded planes for chunks of `blocks` blocks: the
 * images a chunk touches (it can start inside one image and end inside
 * another; in image-interleaved order, the groups of 16), plus 8: the last
 * patch row's 8-float load runs 2 past its plane. Enough for either order. */
static size_t pkk_wg_pad_floats(int batch, int tiles_y, int tiles_x, size_t blocks)
{
    const size_t plane = (size_t)(4 * tiles_y + 2) * (size_t)(4 * tiles_x + 2);
    const size_t per_image = (size_t)tiles_y * tiles_x;
    size_t images = blocks * PKK_WG_NR / per_image + 2;
    if (batch % PKK_WG_GROUP == 0) {
        const size_t grouped = (blocks * PKK_WG_NR / (per_image * PKK_WG_GROUP) + 2) * PKK_WG_GROUP;
        if (grouped > images) images = grouped;
    }
    if (images > (size_t)batch) images = (size_t)batch;
    return images * plane + 8;
}

static size_t pkk_wg_blocks(size_t tiles) { return (tiles + PKK_WG_NR - 1) / PKK_WG_NR; }

/* Scratch for chunks of `blocks` blocks on `threads` threads: V, M, each
 * thread's transformed weights and padded planes, and 15 floats to align V,
 * M and the weights to 64 bytes (the GEMMs' aligned 16-float loads and
 * stores; scratch may come from anywhere). */
static size_t pkk_wg_need(int cin, int cout, int batch, int tiles_y, int tiles_x, size_t blocks, size_t threads)
{
    return PKK_WG_POINTS * (pkk_wg_v_stride(blocks, cin) + pkk_wg_m_stride(blocks, cout))
         + pkk_wg_u_threads(threads) * pkk_wg_u_floats(cin, cout)
         + threads * pkk_wg_pad_floats(batch, tiles_y, tiles_x, blocks) + 15;
}

/* Scratch floats of one kind of call (the forward's pkk_wg_need, the weight
 * gradient's pkk_wgd_need) for chunks of `blocks` blocks on `threads` threads. */
typedef size_t (*pkk_wg_need_fn)(int cin, int cout, int batch, int tiles_y, int tiles_x, size_t blocks,
                                 size_t threads);

/* The scratch for chunks of `tiles` tiles (0 or more than the batch has:
 * the whole batch) on the calling thread's OpenMP thread count. */
static size_t pkk_wg_scratch_for(pkk_wg_need_fn need, int cin, int cout, int batch, int h, int w, int tiles)
{
    const int tiles_y = (h + 3) / 4, tiles_x = (w + 3) / 4;
    const size_t all = (size_t)batch * tiles_y * tiles_x;
    const size_t blocks = pkk_wg_blocks(tiles > 0 && (size_t)tiles < all ? (size_t)tiles : all);
    return need(cin, cout, batch, tiles_y, tiles_x, blocks, (size_t)omp_get_max_threads());
}

/* The most blocks per chunk whose scratch fits (the padded planes grow with
 * them), or 0 when not even one does. */
static size_t pkk_wg_fit_blocks(pkk_wg_need_fn need, int cin, int cout, int batch, int tiles_y, int tiles_x,
                                size_t threads, size_t scratch_floats)
{
    size_t blocks = pkk_wg_blocks((size_t)batch * tiles_y * tiles_x);
    for (;;) {
        const size_t floats = need(cin, cout, batch, tiles_y, tiles_x, blocks, threads);
        if (floats <= scratch_floats) return blocks;
        if (blocks == 1) return 0;
        const size_t scaled = (size_t)((double)blocks * (double)scratch_floats / (double)floats);
        blocks = scaled >= 1 && scaled < blocks ? scaled : blocks - 1;
    }
}

size_t pkk_winograd_scratch_floats(int cin, int cout, int batch, int h, int w, int tiles)
{
    return pkk_wg_scratch_for(pkk_wg_need, cin, cout, batch, h, w, tiles);
}

/* Below this many tiles (the 4x4 and 8x8 maps of a few cubes) transforming
 * the weights, four times the direct ones, for a block of 16 tiles that is
 * mostly empty costs more than the multiplications saved. Measured at batch
 * 1 (k=2 students, w=16 and w=64): 4 ahead of 1 and 16 with the 8-float
 * blocks; with AVX-512 the packed GEMM is twice as fast and 16 wins (w=64:
 * 117 cubes/s against 102 with 4 and 64; w=16: 758 against 707). With the
 * transform made per call, 8 scored w=64 5% faster at 9 and 17 cubes but
 * the w=16 model 10% slower: 16 stays. */
int pkk_winograd_min_tiles(void) { return pkk_use_avx512() ? 16 : 4; }

/* ---- 16- and 32-wide maps: whole chunks per thread ----
 *
 * On the 32x32 and 16x16 maps the chunked passes above are slow twice
 * over: V and M of a batch go out to memory and back between three
 * parallel passes, and image-interleaved tiles are copied in and out
 * through 16 x 16 transposes of planes 1-4 KiB apart. Here each thread
 * instead takes whole chunks of 16 to 64 tiles and runs all three steps
 * on one chunk before the next, its V and M staying in its L2; the weights
 * are transformed once per call for all points (U, shared, read by every
 * chunk). A block of 16 tiles is whole tile rows of one image: two of a
 * 32-wide map (h % 8 == 0), four of a 16-wide one (h % 16 == 0); lane l is
 * tile (ty + l / tx_count, l % tx_count). A patch element (r, c) of a tile
 * row's tiles is every fourth float of a padded row from c on, so two tile
 * rows' come out of one two-register shuffle; an output row is the four
 * column vectors of a tile row interleaved (4x4 transposes within 128-bit
 * lanes, then of the lanes), so y is written in whole 16-float rows. */

#define PKK_EVERY4(X0, X1, c)                                                                                \
    __builtin_shufflevector(X0, X1, c, c + 4, c + 8, c + 12, c + 16, c + 20, c + 24, c + 28)
#define PKK_JOIN(A, B) __builtin_shufflevector(A, B, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)

/* V of one block (tile rows from ty of image b, on a map W wide) for one
 * channel of the padded planes. For W = 32, lanes 0-7 and 8-15 are two
 * tile rows, each from one row's 32 floats; for W = 16, lanes 4t..4t+3 are
 * tile row ty + t, every fourth float of the low 16 of a pair of rows. */
static inline __attribute__((always_inline)) void pkk_wg_input_rows(const pkk_wg_padded *pad, int b, int ty, int w,
                                                                     float *dst, size_t point_stride)
{
    const float *top = pad->data + (size_t)(b - pad->first) * pad->stride + (size_t)(4 * ty) * pad->pitch;
    const size_t next = (size_t)4 * pad->pitch; /* the next tile row's patch row */
    pkk_v16 d[PKK_WG_POINTS], t[PKK_WG_POINTS];
    for (int r = 0; r < 6; r++) {
        const float *row = top + (size_t)r * pad->pitch;
        if (w == 32) {
            const pkk_v16 a0 = *(const pkk_v16u *)row, a1 = *(const pkk_v16u *)(row + 16);
            const pkk_v16 a4 = *(const pkk_v16u *)(row + 4), a5 = *(const pkk_v16u *)(row + 20);
            const pkk_v16 b0 = *(const pkk_v16u *)(row + next), b1 = *(const pkk_v16u *)(row + next + 16);
            const pkk_v16 b4 = *(const pkk_v16u *)(row + next + 4), b5 = *(const pkk_v16u *)(row + next + 20);
            d[6 * r + 0] = PKK_JOIN(PKK_EVERY4(a0, a1, 0), PKK_EVERY4(b0, b1, 0));
            d[6 * r + 1] = PKK_JOIN(PKK_EVERY4(a0, a1, 1), PKK_EVERY4(b0, b1, 1));
            d[6 * r + 2] = PKK_JOIN(PKK_EVERY4(a0, a1, 2), PKK_EVERY4(b0, b1, 2));
            d[6 * r + 3] = PKK_JOIN(PKK_EVERY4(a0, a1, 3), PKK_EVERY4(b0, b1, 3));
            d[6 * r + 4] = PKK_JOIN(PKK_EVERY4(a4, a5, 0), PKK_EVERY4(b4, b5, 0));
            d[6 * r + 5] = PKK_JOIN(PKK_EVERY4(a4, a5, 1), PKK_EVERY4(b4, b5, 1));
        } else {
            pkk_v16 q[4], q4[4]; /* tile rows 0..3: the row's floats 0..15 and 4..19 */
            for (int k = 0; k < 4; k++) {
                q[k] = *(const pkk_v16u *)(row + (size_t)k * next);
                q4[k] = *(const pkk_v16u *)(row + (size_t)k * next + 4);
            }
            d[6 * r + 0] = PKK_JOIN(PKK_EVERY4(q[0], q[1], 0), PKK_EVERY4(q[2], q[3], 0));
            d[6 * r + 1] = PKK_JOIN(PKK_EVERY4(q[0], q[1], 1), PKK_EVERY4(q[2], q[3], 1));
            d[6 * r + 2] = PKK_JOIN(PKK_EVERY4(q[0], q[1], 2), PKK_EVERY4(q[2], q[3], 2));
            d[6 * r + 3] = PKK_JOIN(PKK_EVERY4(q[0], q[1], 3), PKK_EVERY4(q[2], q[3], 3));
            d[6 * r + 4] = PKK_JOIN(PKK_EVERY4(q4[0], q4[1], 0), PKK_EVERY4(q4[2], q4[3], 0));
            d[6 * r + 5] = PKK_JOIN(PKK_EVERY4(q4[0], q4[1], 1), PKK_EVERY4(q4[2], q4[3], 1));
        }
    }
    for (int c = 0; c < 6; c++) pkk_wg_bt16(d + c, 6, t + c, 6); /* columns: B^T d */
    for (int r = 0; r < 6; r++) {
        pkk_v16 v[6];
        pkk_wg_bt16(t + 6 * r, 1, v, 1); /* rows: (.) B */
        for (int k = 0; k < 6; k++) *(pkk_v16 *)(dst + (size_t)(6 * r + k) * point_stride) = v[k];
    }
}

/* y of output channel co for one block's tiles (tile rows from ty of image
 * b, on a map W wide): bias, residual and ReLU on the way out. 128-bit lane
 * g of the transposes holds tiles 4g..4g+3 of the block. */
static inline __attribute__((always_inline)) void pkk_wg_output_rows(const pkk_wg_args *a, const float *src,
                                                                      size_t point_stride, int co, int b, int ty, int w)
{
    const size_t plane = (size_t)a->h * w, base = (size_t)co * a->batch * plane + (size_t)b * plane
                                                + (size_t)(4 * ty) * w;
    const int per_row = w / 4; /* tiles per tile row */
    const float bv = a->bias ? a->bias[co] : 0.0f;
    pkk_v16 m[PKK_WG_POINTS], t[24], o[16];
    for (int p = 0; p < PKK_WG_POINTS; p++) m[p] = *(const pkk_v16 *)(src + (size_t)p * point_stride);
    for (int c = 0; c < 6; c++) pkk_wg_at16(m + c, 6, t + c, 6);         /* columns: A^T M */
    for (int r = 0; r < 4; r++) pkk_wg_at16(t + 6 * r, 1, o + 4 * r, 1); /* rows: (.) A */
    for (int r = 0; r < 4; r++) {
        const pkk_v16 q0 = o[4 * r] + bv, q1 = o[4 * r + 1] + bv, q2 = o[4 * r + 2] + bv, q3 = o[4 * r + 3] + bv;
        /* per 128-bit lane g: w_i holds tile column 4g + i's four outputs */
        const pkk_v16 u0 = __builtin_shufflevector(q0, q1, 0, 16, 1, 17, 4, 20, 5, 21, 8, 24, 9, 25, 12, 28, 13, 29);
        const pkk_v16 u1 = __builtin_shufflevector(q0, q1, 2, 18, 3, 19, 6, 22, 7, 23, 10, 26, 11, 27, 14, 30, 15, 31);
        const pkk_v16 u2 = __builtin_shufflevector(q2, q3, 0, 16, 1, 17, 4, 20, 5, 21, 8, 24, 9, 25, 12, 28, 13, 29);
        const pkk_v16 u3 = __builtin_shufflevector(q2, q3, 2, 18, 3, 19, 6, 22, 7, 23, 10, 26, 11, 27, 14, 30, 15, 31);
        const pkk_v16 w0 = __builtin_shufflevector(u0, u2, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29);
        const pkk_v16 w1 = __builtin_shufflevector(u0, u2, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31);
        const pkk_v16 w2 = __builtin_shufflevector(u1, u3, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29);
        const pkk_v16 w3 = __builtin_shufflevector(u1, u3, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31);
        const pkk_v16 x01 = __builtin_shufflevector(w0, w1, 0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
        const pkk_v16 x23 = __builtin_shufflevector(w2, w3, 0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
        const pkk_v16 y01 = __builtin_shufflevector(w0, w1, 8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30,
                                                    31);
        const pkk_v16 y23 = __builtin_shufflevector(w2, w3, 8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30,
                                                    31);
        pkk_v16 out[4] = { /* row r of tiles 4g..4g+3, g = 0..3 */
                           __builtin_shufflevector(x01, x23, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23),
                           __builtin_shufflevector(x01, x23, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29,
                                                   30, 31),
                           __builtin_shufflevector(y01, y23, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23),
                           __builtin_shufflevector(y01, y23, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29,
                                                   30, 31) };
        for (int g = 0; g < 4; g++) {
            const size_t at = base + (size_t)(r + 4 * (4 * g / per_row)) * w + 4 * (4 * g % per_row);
            if (a->residual) out[g] += *(const pkk_v16u *)(a->residual + at);
            if (a->relu) out[g] = __builtin_elementwise_max(out[g], (pkk_v16){ 0 });
            *(pkk_v16u *)(a->y + at) = out[g];
        }
    }
}

/* U [36][rows cin], rounded up to whole 64-byte lines: V follows it. */
static size_t pkk_wg_rows_u_floats(int cin, int cout)
{
    return ((size_t)PKK_WG_POINTS * pkk_wg_rows(cout) * cin + 15) / 16 * 16;
}
static size_t pkk_wg_rows_v_floats(size_t blocks, int cin)
{
    return (PKK_WG_POINTS * pkk_wg_v_stride(blocks, cin) + 15) / 16 * 16;
}
static size_t pkk_wg_rows_m_floats(size_t blocks, int cout)
{
    return (PKK_WG_POINTS * pkk_wg_m_stride(blocks, cout) + 15) / 16 * 16;
}
static size_t pkk_wg_rows_pad_floats(int batch, int h, int w, size_t blocks)
{
    return (pkk_wg_pad_floats(batch, h / 4, w / 4, blocks) + 15) / 16 * 16;
}

/* Scratch for chunks of `chunk` tiles on `threads` threads: U, and per
 * thread V, M and the padded planes, 64-byte aligned. */
static size_t pkk_wg_rows_need(int cin, int cout, int batch, int h, int w, int chunk, size_t threads)
{
    const size_t blocks = (size_t)chunk / PKK_WG_NR;
    return pkk_wg_rows_u_floats(cin, cout)
         + threads * (pkk_wg_rows_v_floats(blocks, cin) + pkk_wg_rows_m_floats(blocks, cout)
                      + pkk_wg_rows_pad_floats(batch, h, w, blocks)) + 15;
}

/* Tiles per chunk, 64, 32 or 16: the one whose busiest thread has least to
 * do, its tiles weighted by the chunk size's cost per tile (V and M of 64
 * channels fit a core's L2 at 64 tiles, about 1.2 MB; 32 measured 1.02-1.05x
 * the time per tile, and 16, a single block the products run at 6 x 16,
 * 1.3-1.4x), among those the scratch holds. 17 images of 16x16 take 32
 * (9 chunks: 5 and 4 on two threads) rather than 64 (3 and 2). None (0)
 * where only 16 fits but more would balance as well: every 16 tiles would
 * read all of U again, which for 256 -> 128 channels (4.9 MB) took
 * 1.3-1.4x the chunked passes' time. */
#define PKK_WG_ROWS_CHUNK_MAX 64 /* tiles */
static int pkk_wg_rows_chunk(int cin, int cout, int batch, int h, int w, size_t threads, size_t scratch_floats)
{
    static const int sizes[3] = { PKK_WG_ROWS_CHUNK_MAX, 32, 16 }, cost[3] = { 100, 104, 135 };
    const size_t tiles = (size_t)batch * (size_t)h * (size_t)w / 16;
    int best = 0, best_fit = 0;
    size_t best_load = SIZE_MAX, best_fit_load = SIZE_MAX;
    for (int i = 0; i < 3; i++) {
        const size_t chunks = (tiles + (size_t)sizes[i] - 1) / (size_t)sizes[i];
        const size_t load = (chunks + threads - 1) / threads * (size_t)sizes[i] * (size_t)cost[i];
        if (load < best_load) {
            best_load = load;
            best = sizes[i];
        }
        if (load < best_fit_load && pkk_wg_rows_need(cin, cout, batch, h, w, sizes[i], threads) <= scratch_floats) {
            best_fit_load = load;
            best_fit = sizes[i];
        }
    }
    return best_fit == 16 && best != 16 ? 0 : best_fit;
}

typedef struct {
    const pkk_wg_args *a; /* u: the shared U; v, m, pads: the first thread's */
    size_t v_floats, m_floats, tiles;
    int chunk;
} pkk_wg_rows_args;

/* Chunks [lo, hi) of the batch, one after the other, in the thread's own
 * V, M and padded planes. */
static inline __attribute__((always_inline)) void pkk_wg_rows_chunk_range(long lo, long hi, int thread,
                                                                           const pkk_wg_rows_args *f, int w)
{
    pkk_wg_args a = *f->a;
    a.v += (size_t)thread * f->v_floats;
    a.m += (size_t)thread * f->m_floats;
    const size_t in_ch = (size_t)a.batch * a.h * w;
    const size_t v_points = pkk_wg_v_stride((size_t)a.blocks, a.cin);
    const size_t m_points = pkk_wg_m_stride((size_t)a.blocks, a.cout);
    const int rows = pkk_wg_rows(a.cout);
    for (long c = lo; c < hi; c++) {
        a.t0 = (size_t)c * f->chunk;
        a.tn = (int)(f->tiles - a.t0 < (size_t)f->chunk ? f->tiles - a.t0 : (size_t)f->chunk);
        const int blocks = a.tn / PKK_WG_NR;
        pkk_tile at[PKK_WG_ROWS_CHUNK_MAX / PKK_WG_NR]; /* each block's first tile */
        for (int k = 0; k < blocks; k++) at[k] = pkk_tile_at(&a, a.t0 + (size_t)k * PKK_WG_NR);
        const pkk_wg_padded pad = pkk_wg_chunk_pad(&a, thread);
        pkk_wg_pad_clear(&pad);
        for (int ci = 0; ci < a.cin; ci++) {
            pkk_wg_pad(&a, a.x + (size_t)ci * in_ch, &pad);
            for (int k = 0; k < blocks; k++)
                pkk_wg_input_rows(&pad, at[k].b, at[k].ty, w, a.v + ((size_t)k * a.cin + ci) * PKK_WG_NR, v_points);
        }
        pkk_wg_products_range(0, PKK_WG_POINTS, thread, &a, 1);
        for (int co = 0; co < a.cout; co++)
            for (int k = 0; k < blocks; k++)
                pkk_wg_output_rows(&a, a.m + ((size_t)k * rows + co) * PKK_WG_NR, m_points, co, at[k].b, at[k].ty, w);
    }
}

PKK_AVX512 static void pkk_wg_rows_chunks32(long lo, long hi, int thread, const void *args)
{
    pkk_wg_rows_chunk_range(lo, hi, thread, args, 32);
}

PKK_AVX512 static void pkk_wg_rows_chunks16(long lo, long hi, int thread, const void *args)
{
    pkk_wg_rows_chunk_range(lo, hi, thread, args, 16);
}

typedef struct {
    const float *s;
    size_t count; /* rows x cin: S's taps and U's points are as far apart */
    float *u;
} pkk_wg_u_args;

#define PKK_WG_U_RUN 512 /* weights per work item of U's transform */

/* U [36][rows cin] for the weights [lo, hi) runs of PKK_WG_U_RUN: each
 * run's G columns once for all 36 points. */
PKK_AVX512 static void pkk_wg_u_runs(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const pkk_wg_u_args *g = args;
    const size_t e0 = (size_t)lo * PKK_WG_U_RUN, end = (size_t)hi * PKK_WG_U_RUN;
    const size_t e1 = end < g->count ? end : g->count;
    pkk_wg_transform(g->s + e0, g->count, e1 - e0, 0, PKK_WG_POINTS, g->count, g->u + e0);
}

/* Whether a map takes chunks per thread: AVX-512, 32 wide with a height
 * divisible by 8 or 16 wide with one divisible by 16 (whole blocks of
 * tile rows). */
static int pkk_wg_rows_takes(int h, int w)
{
    return pkk_use_avx512() && ((w == 32 && h % 8 == 0) || (w == 16 && h % 16 == 0));
}

/* The chunks-per-thread path, or 0 where the scratch is too small for it
 * (the chunked passes may still fit). */
static int pkk_conv3x3_winograd_rows(const float *x, int cin, int batch, int h, int w, const float *s,
                                     const float *bias, int cout, const float *residual, int relu, float *y,
                                     float *scratch, size_t scratch_floats)
{
    const int tiles_y = h / 4, tiles_x = w / 4;
    const size_t tiles = (size_t)batch * tiles_y * tiles_x, threads = (size_t)omp_get_max_threads();
    const int chunk = pkk_wg_rows_chunk(cin, cout, batch, h, w, threads, scratch_floats);
    if (chunk == 0) return 0;
    const size_t blocks = (size_t)chunk / PKK_WG_NR;
    const size_t u_floats = pkk_wg_rows_u_floats(cin, cout);
    const size_t v_floats = pkk_wg_rows_v_floats(blocks, cin), m_floats = pkk_wg_rows_m_floats(blocks, cout);
    const size_t pad_floats = pkk_wg_rows_pad_floats(batch, h, w, blocks);
    float *u = scratch + ((64 - ((uintptr_t)scratch & 63)) & 63) / sizeof(float);
    float *v = u + u_floats, *m = v + threads * v_floats, *pad = m + threads * m_floats;
    const pkk_wg_u_args g = { s, (size_t)pkk_wg_rows(cout) * cin, u };
    pkk_run((long)((g.count + PKK_WG_U_RUN - 1) / PKK_WG_U_RUN), u_floats * 4, pkk_wg_u_runs, &g);
    const pkk_wg_args a = { x, s, bias, residual, y, v, m, u, u_floats, pad, pad_floats, cin, cout, batch, h, w,
                            tiles_y, tiles_x, relu, 0, 0, 0, (int)blocks, 1 };
    const pkk_wg_rows_args f = { &a, v_floats, m_floats, tiles, chunk };
    pkk_run((long)((tiles + (size_t)chunk - 1) / (size_t)chunk), tiles * (size_t)cin * cout * PKK_WG_POINTS,
            w == 32 ? pkk_wg_rows_chunks32 : pkk_wg_rows_chunks16, &f);
    return 1;
}

int pkk_conv3x3_winograd(const float *x, int cin, int batch, int h, int w, const float *s, const float *bias,
                         int cout, const float *residual, int relu, float *y, float *scratch, size_t scratch_floats)
{
    if (cin <= 0 || cout <= 0 || batch <= 0 || h <= 0 || w <= 0) return 0;
    if (((uintptr_t)scratch & 3) != 0) return 0;
    if (pkk_wg_rows_takes(h, w)
        && pkk_conv3x3_winograd_rows(x, cin, batch, h, w, s, bias, cout, residual, relu, y, scratch, scratch_floats))
        return 1;
    const int tiles_y = (h + 3) / 4, tiles_x = (w + 3) / 4;
    const size_t tiles = (size_t)batch * tiles_y * tiles_x, threads = (size_t)omp_get_max_threads();
    const size_t blocks = pkk_wg_fit_blocks(pkk_wg_need, cin, cout, batch, tiles_y, tiles_x, threads, scratch_floats);
    if (blocks == 0) return 0;

    float *v = scratch + ((64 - ((uintptr_t)scratch & 63)) & 63) / sizeof(float);
    float *m = v + PKK_WG_POINTS * pkk_wg_v_stride(blocks, cin);
    float *u = m + PKK_WG_POINTS * pkk_wg_m_stride(blocks, cout);
    const size_t u_floats = pkk_wg_u_floats(cin, cout);
    float *pad = u + pkk_wg_u_threads(threads) * u_floats;
    const size_t pad_floats = pkk_wg_pad_floats(batch, tiles_y, tiles_x, blocks);
    const int avx512 = pkk_use_avx512(); /* the 8-tile input transform reads image order only */
    pkk_wg_args a = { x, s, bias, residual, y, v, m, u, u_floats, pad, pad_floats, cin, cout, batch, h, w,
                      tiles_y, tiles_x, relu, avx512 && pkk_wg_interleavable(batch, h, w), 0, 0, (int)blocks };
    const size_t capacity = blocks * PKK_WG_NR;
    for (size_t t0 = 0; t0 < tiles; t0 += capacity) {
        a.t0 = t0;
        a.tn = (int)(tiles - t0 < capacity ? tiles - t0 : capacity);
        const size_t in_work = (size_t)cin * a.tn * PKK_WG_POINTS;
        const size_t out_work = (size_t)cout * a.tn * PKK_WG_POINTS;
        pkk_run(cin, in_work, avx512 ? pkk_wg_input_avx512 : pkk_wg_input, &a);
        const long sw_blocks = pkk_wg_rows(cout) / 6;
        if (avx512 && a.tn <= PKK_WG_SW_TILES && pkk_winograd_block_rows(cout) == 6
            && pkk_wg_sw_piece(cin, PKK_WG_POINTS, (a.tn + PKK_WG_NR - 1) / PKK_WG_NR, u_floats) > 0
            && (size_t)pkk_run_threads(sw_blocks, in_work / PKK_WG_POINTS * cout) <= pkk_wg_u_threads(threads))
            pkk_run(sw_blocks, in_work / PKK_WG_POINTS * cout, pkk_wg_sw_products, &a);
        else
            pkk_run(PKK_WG_POINTS, in_work / PKK_WG_POINTS * cout, avx512 ? pkk_wg_products_avx512 : pkk_wg_products,
                    &a);
        pkk_run(cout, out_work, a.interleaved ? pkk_wg_output_interleaved : pkk_wg_output, &a);
    }
    return 1;
}

/* ---- weight gradient (training) ----
 *
 * The gradient of the same convolution with respect to its 3x3 weights g.
 * y_tile = A^T M A with M[p] = sum over ci of U[p] V[p] and U = G g G^T, so
 * the chain rule runs the three transforms backwards, each as its adjoint:
 *   dM[p][co][t]  = (A dy_t A^T)[p]             dy_t: the tile's 4x4 gradient
 *   dU[p][co][ci] = sum over t of dM[p][co][t] V[p][ci][t]
 *   dg[co][ci]    = G^T dU[co][ci] G
 * 36 products per tile and channel pair where the im2col GEMM does 144, and
 * neither im2col nor a BLAS packing pass: V comes from the forward's input
 * transform (pkk_wg_input) in its GEMM layout, dM from pkk_wg_adjoint in the
 * same layout, and the sums over tiles run in 16-lane vectors, one per
 * channel pair, reduced across lanes once per chunk. Tiles past an image's
 * edge see zero gradient there (the padded copy), so they add nothing.
 *
 * Each thread owns transform points, so dU has one writer per element and
 * sums its chunks in order: the same thread count gives the same bits. The
 * G^T . G step sums in double (36 terms with weights 1/4 .. 1/24). */

/* out[k*so] = (A in)[k*s] for k = 0..5 from the 4 values in[0..3 s]: the
 * adjoint of pkk_wg_at, A's rows (1,0,0,0), (1,1,1,1), (1,-1,1,-1),
 * (1,2,4,8), (1,-2,4,-8), (0,0,0,1). */
#define PKK_WG_A(T, in, s, out, so)                                                                          \
    do {                                                                                                     \
        const T o0 = (in)[0], o1 = (in)[s], o2 = (in)[2 * (s)], o3 = (in)[3 * (s)];                          \
        const T even = o0 + o2, odd = o1 + o3, even4 = o0 + 4.0f * o2, odd8 = 2.0f * o1 + 8.0f * o3;         \
        (out)[0] = o0;                                                                                       \
        (out)[so] = even + odd;                                                                              \
        (out)[2 * (so)] = even - odd;                                                                        \
        (out)[3 * (so)] = even4 + odd8;                                                                      \
        (out)[4 * (so)] = even4 - odd8;                                                                      \
        (out)[5 * (so)] = o3;                                                                                \
    } while (0)

static inline __attribute__((always_inline)) void pkk_wg_a(const pkk_v8 *in, int s, pkk_v8 *out, int so)
{
    PKK_WG_A(pkk_v8, in, s, out, so);
}

static inline __attribute__((always_inline)) void pkk_wg_a16(const pkk_v16 *in, int s, pkk_v16 *out, int so)
{
    PKK_WG_A(pkk_v16, in, s, out, so);
}

/* dM[p][co][j] for the channels [lo, hi) of a->x (dy; a->cin of them) and
 * every tile of the chunk in image order, 8 tiles at a time, in V's layout:
 * each lane's 4x4 block of the padded plane (one row and column in: the
 * tile's outputs), columns out of in-lane 4x4 transposes as in
 * pkk_wg_gather. */
PKK_CLONES
static void pkk_wg_adjoint(long lo, long hi, int thread, const void *args)
{
    const pkk_wg_args *a = args;
    const size_t in_ch = (size_t)a->batch * a->h * a->w;
    const size_t point_stride = pkk_wg_v_stride((size_t)a->blocks, a->cin);
    const pkk_wg_padded pad = pkk_wg_chunk_pad(a, thread);
    pkk_v8 d[16], t[24], m[PKK_WG_POINTS], rows[4];

    if (lo < hi) pkk_wg_pad_clear(&pad);
    for (long co = lo; co < hi; co++) {
        pkk_wg_pad(a, a->x + (size_t)co * in_ch, &pad);
        float *mc = a->v + (size_t)co * PKK_WG_NR;
        pkk_tile tile = pkk_tile_at(a, a->t0);
        for (int j = 0; j < a->tn; j += PKK_WG_LANES) {
            const int n = a->tn - j < PKK_WG_LANES ? a->tn - j : PKK_WG_LANES;
            const float *lane[PKK_WG_LANES];
            for (int l = 0; l < PKK_WG_LANES; l++) {
                if (l >= n) {
                    lane[l] = lane[0];
                    continue;
                }
                lane[l] = pad.data + (size_t)(tile.b - pad.first) * pad.stride + (size_t)(4 * tile.ty + 1) * pad.pitch
                        + 4 * tile.tx + 1;
                pkk_tile_next(a, &tile);
            }
            for (int r = 0; r < 4; r++) {
                for (int l = 0; l < 4; l++) pkk_halves(lane[l] + r * pad.pitch, lane[l + 4] + r * pad.pitch, &rows[l]);
                pkk_columns4(rows, 4, d + 4 * r);
            }
            for (int c = 0; c < 4; c++) pkk_wg_a(d + c, 4, t + c, 4);         /* columns: A dy */
            for (int r = 0; r < 6; r++) pkk_wg_a(t + 4 * r, 1, m + 6 * r, 1); /* rows: (.) A^T */
            pkk_wg_store8(m, n, j, a->tn, a->cin, point_stride, mc);
        }
    }
}

/* pkk_wg_adjoint for image-interleaved tiles (AVX-512): a block of 16 tiles
 * is 16 images at one position, its 4x4 block of gradients 16 loads from
 * the interleaved planes, transformed on 16 lanes, stored as V's rows. */
PKK_AVX512 static void pkk_wg_adjoint_interleaved(long lo, long hi, int thread, const void *args)
{
    const pkk_wg_args *a = args;
    const size_t in_ch = (size_t)a->batch * a->h * a->w;
    const size_t point_stride = pkk_wg_v_stride((size_t)a->blocks, a->cin);
    const pkk_wg_padded pad = pkk_wg_chunk_pad(a, thread);
    const size_t pitch = (size_t)pad.pitch * PKK_WG_GROUP;

    if (lo < hi) pkk_wg_pad_clear(&pad);
    for (long co = lo; co < hi; co++) {
        pkk_wg_pad(a, a->x + (size_t)co * in_ch, &pad);
        float *mc = a->v + (size_t)co * PKK_WG_NR;
        for (int j = 0; j < a->tn; j += PKK_WG_NR) {
            const pkk_tile at = pkk_tile_at(a, a->t0 + (size_t)j);
            const float *block = pad.data + (size_t)(at.b / PKK_WG_GROUP - pad.first) * pad.stride
                               + (size_t)(4 * at.ty + 1) * pitch + (size_t)(4 * at.tx + 1) * PKK_WG_GROUP;
            pkk_v16 d[16], t[24], m[PKK_WG_POINTS];
            for (int r = 0; r < 4; r++)
                for (int c = 0; c < 4; c++) d[4 * r + c] = *(const pkk_v16u *)(block + r * pitch + 16 * c);
            for (int c = 0; c < 4; c++) pkk_wg_a16(d + c, 4, t + c, 4);         /* columns: A dy */
            for (int r = 0; r < 6; r++) pkk_wg_a16(t + 4 * r, 1, m + 6 * r, 1); /* rows: (.) A^T */
            float *dst = mc + (size_t)(j / PKK_WG_NR) * a->cin * PKK_WG_NR;
            for (int p = 0; p < PKK_WG_POINTS; p++) *(pkk_v16 *)(dst + (size_t)p * point_stride) = m[p];
        }
    }
}

typedef struct {
    const float *v, *dm; /* V [36][blocks][cin][16], dM [36][blocks][cout][16] (pkk_wg_v_stride apart) */
    float *du;           /* dU [36][cout][cin], summed into */
    int cin, cout, blocks, used;
} pkk_wgd_args;

/* The lanes of an 8- or 16-float vector summed in pairwise halves, a fixed
 * order (macros: vector arguments of functions built for the baseline ISA
 * would change the ABI). */
#define PKK_LANES_SUM8(x)                                                                                    \
    ({                                                                                                       \
        const pkk_v8 x_ = (x);                                                                               \
        const pkk_v4 h_ = __builtin_shufflevector(x_, x_, 0, 1, 2, 3) + __builtin_shufflevector(x_, x_, 4, 5, 6, 7); \
        (h_[0] + h_[2]) + (h_[1] + h_[3]);                                                                   \
    })
#define PKK_LANES_SUM16(x)                                                                                   \
    ({                                                                                                       \
        const pkk_v16 y_ = (x);                                                                              \
        PKK_LANES_SUM8(__builtin_shufflevector(y_, y_, 0, 1, 2, 3, 4, 5, 6, 7)                               \
                       + __builtin_shufflevector(y_, y_, 8, 9, 10, 11, 12, 13, 14, 15));                     \
    })

/* dU[p][co0 + r][ci0 + c] += sum over the chunk's tiles of dM . V, for the
 * rows r < R and columns c < C; only r >= r_from and c >= c_from are stored
 * (a last block overlaps the one before rather than running short). Vectors
 * of 16 lanes (wide, AVX-512) in a 4 x 5 block, or of 8 in a 3 x 3 block:
 * the accumulators and one step's loads fit the 32 (16) vector registers
 * (a 4 x 6 block of 16 lanes spilled). */
#define PKK_WGD_BLOCK(T, LANES, R, C, SUM)                                                                        \
    do {                                                                                                  \
        T acc[R][C];                                                                                      \
        for (int r = 0; r < (R); r++)                                                                     \
            for (int c = 0; c < (C); c++) acc[r][c] = (T){ 0 };                                           \
        for (int b = 0; b < a->used; b++)                                                                 \
            for (int h = 0; h < PKK_WG_NR; h += (LANES)) {                                                \
                const float *mb = dmp + (size_t)b * m_block + (size_t)co0 * PKK_WG_NR + h;                \
                const float *vb = vp + (size_t)b * v_block + (size_t)ci0 * PKK_WG_NR + h;                 \
                T mv[R], vv[C];                                                                           \
                for (int r = 0; r < (R); r++) mv[r] = *(const T *)(mb + r * PKK_WG_NR);                   \
                for (int c = 0; c < (C); c++) vv[c] = *(const T *)(vb + c * PKK_WG_NR);                   \
                for (int r = 0; r < (R); r++)                                                             \
                    for (int c = 0; c < (C); c++) acc[r][c] += mv[r] * vv[c];                             \
            }                                                                                             \
        for (int r = r_from; r < (R); r++)                                                                \
            for (int c = c_from; c < (C); c++) du[(size_t)(co0 + r) * a->cin + ci0 + c] += SUM(acc[r][c]); \
    } while (0)

/* dU for the transform points [lo, hi). */
static inline __attribute__((always_inline)) void pkk_wgd_products_range(long lo, long hi, const pkk_wgd_args *a,
                                                                          int wide)
{
    const size_t v_block = (size_t)a->cin * PKK_WG_NR, m_block = (size_t)a->cout * PKK_WG_NR;
    const int rows = wide ? 4 : 3, cols = wide ? 5 : 3;
    for (long p = lo; p < hi; p++) {
        const float *vp = a->v + (size_t)p * pkk_wg_v_stride((size_t)a->blocks, a->cin);
        const float *dmp = a->dm + (size_t)p * pkk_wg_v_stride((size_t)a->blocks, a->cout);
        float *du = a->du + (size_t)p * a->cout * a->cin;
        for (int row = 0; row < a->cout; row += rows) {
            const int co0 = row + rows <= a->cout ? row : a->cout - rows, r_from = row - co0;
            for (int col = 0; col < a->cin; col += cols) {
                const int ci0 = col + cols <= a->cin ? col : a->cin - cols, c_from = col - ci0;
                if (wide) PKK_WGD_BLOCK(pkk_v16, 16, 4, 5, PKK_LANES_SUM16);
                else PKK_WGD_BLOCK(pkk_v8, 8, 3, 3, PKK_LANES_SUM8);
            }
        }
    }
}

__attribute__((target_clones("arch=x86-64-v3", "default")))
static void pkk_wgd_products(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    pkk_wgd_products_range(lo, hi, args, 0);
}

PKK_AVX512 static void pkk_wgd_products_avx512(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    pkk_wgd_products_range(lo, hi, args, 1);
}

typedef struct {
    const float *du;
    int pairs; /* cout * cin */
    float *dweight;
} pkk_wgd_fold_args;

/* dweight[e][3 ky + kx] += (G^T dU[.][e] G)[ky][kx] for channel pairs e in
 * [lo, hi), in double: G's rows as in PKK_WG_G. */
static void pkk_wgd_fold(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    static const double G[6][3] = { { 0.25, 0, 0 },
                                    { -1.0 / 6, -1.0 / 6, -1.0 / 6 },
                                    { -1.0 / 6, 1.0 / 6, -1.0 / 6 },
                                    { 1.0 / 24, 1.0 / 12, 1.0 / 6 },
                                    { 1.0 / 24, -1.0 / 12, 1.0 / 6 },
                                    { 0, 0, 1 } };
    const pkk_wgd_fold_args *a = args;
    for (long e = lo; e < hi; e++) {
        double t[3][6]; /* G^T dU */
        for (int k = 0; k < 3; k++)
            for (int j = 0; j < 6; j++) {
                double s = 0;
                for (int i = 0; i < 6; i++) s += G[i][k] * a->du[(size_t)(6 * i + j) * a->pairs + e];
                t[k][j] = s;
            }
        for (int k = 0; k < 3; k++)
            for (int l = 0; l < 3; l++) {
                double s = 0;
                for (int j = 0; j < 6; j++) s += t[k][j] * G[j][l];
                a->dweight[(size_t)e * 9 + 3 * k + l] += (float)s;
            }
    }
}

/* Scratch for chunks of `blocks` blocks: V, dM, the padded planes, and 15
 * floats to align V and dM to 64 bytes. */
static size_t pkk_wgd_need(int cin, int cout, int batch, int tiles_y, int tiles_x, size_t blocks, size_t threads)
{
    return PKK_WG_POINTS * (pkk_wg_v_stride(blocks, cin) + pkk_wg_v_stride(blocks, cout))
         + threads * pkk_wg_pad_floats(batch, tiles_y, tiles_x, blocks) + 15;
}

size_t pkk_winograd_dweight_scratch_floats(int cin, int cout, int batch, int h, int w, int tiles)
{
    return pkk_wg_scratch_for(pkk_wgd_need, cin, cout, batch, h, w, tiles);
}

int pkk_conv3x3_winograd_dweight(const float *x, int cin, int batch, int h, int w, const float *dy, int cout,
                                 float *dweight, float *scratch, size_t scratch_floats)
{
    if (cin <= 0 || cout <= 0 || batch <= 0 || h <= 0 || w <= 0) return 1;
    if (cin < 5 || cout < 4 || ((uintptr_t)scratch & 3) != 0) return 0; /* a register block's rows and columns */
    const int tiles_y = (h + 3) / 4, tiles_x = (w + 3) / 4;
    const size_t tiles = (size_t)batch * tiles_y * tiles_x, threads = (size_t)omp_get_max_threads();
    const size_t blocks = pkk_wg_fit_blocks(pkk_wgd_need, cin, cout, batch, tiles_y, tiles_x, threads, scratch_floats);
    if (blocks == 0) return 0;
    const size_t pairs = (size_t)cout * cin;
    float *du = calloc(PKK_WG_POINTS * pairs, sizeof(float));
    if (du == NULL) return 0;

    float *v = scratch + ((64 - ((uintptr_t)scratch & 63)) & 63) / sizeof(float);
    float *dm = v + PKK_WG_POINTS * pkk_wg_v_stride(blocks, cin);
    float *pad = dm + PKK_WG_POINTS * pkk_wg_v_stride(blocks, cout);
    const size_t pad_floats = pkk_wg_pad_floats(batch, tiles_y, tiles_x, blocks);
    const int avx512 = pkk_use_avx512(); /* the 8-tile input transform reads image order only */
    pkk_wg_args in = { .x = x, .v = v, .pads = pad, .pad_floats = pad_floats, .cin = cin, .batch = batch, .h = h,
                       .w = w, .tiles_y = tiles_y, .tiles_x = tiles_x,
                       .interleaved = avx512 && pkk_wg_interleavable(batch, h, w), .blocks = (int)blocks };
    pkk_wg_args out = in;
    out.x = dy;
    out.v = dm;
    out.cin = cout;
    pkk_wgd_args prod = { v, dm, du, cin, cout, (int)blocks, 0 };
    const size_t capacity = blocks * PKK_WG_NR;
    for (size_t t0 = 0; t0 < tiles; t0 += capacity) {
        in.t0 = out.t0 = t0;
        in.tn = out.tn = (int)(tiles - t0 < capacity ? tiles - t0 : capacity);
        prod.used = (int)pkk_wg_blocks((size_t)in.tn);
        pkk_run(cin, (size_t)cin * in.tn * PKK_WG_POINTS, avx512 ? pkk_wg_input_avx512 : pkk_wg_input, &in);
        pkk_run(cout, (size_t)cout * in.tn * PKK_WG_POINTS, out.interleaved ? pkk_wg_adjoint_interleaved : pkk_wg_adjoint,
                &out);
        pkk_run(PKK_WG_POINTS, pairs * in.tn, avx512 ? pkk_wgd_products_avx512 : pkk_wgd_products, &prod);
    }
    const pkk_wgd_fold_args fold = { du, (int)pairs, dweight };
    pkk_run((long)pairs, pairs * PKK_WG_POINTS, pkk_wgd_fold, &fold);
    free(du);
    return 1;
}
