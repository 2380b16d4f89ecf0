/*
 * 3x3 stride-2 pad-1 convolution (AVX-512) straight from the input's four
 * phases: the CIFAR ResNet teachers' stage transitions (16 -> 32 channels
 * down to 16x16, 32 -> 64 down to 8x8).
 *
 * As im2col + GEMM they ran at 25-65 GFLOP/s on one core (a fifth to a
 * third of its FMA peak): the im2col gathers every other input element, one
 * at a time, and writes 9 rows per input channel that the GEMM reads back.
 * Here, per image, each thread splits the input once into its four phases
 * P[rp][cp][r][c] = x[2r + rp][2c + cp] (even and odd rows and columns,
 * each plane after one zero row). Output (i, j) reads input row 2i - 1 + ky
 * and column 2j - 1 + kx, which for ky (kx) = 0, 1, 2 is row (column) i - 1
 * of the odd phase, i of the even one, i of the odd one: every tap is a
 * whole-vector load from one phase plane, one row up (the zero row above
 * the plane) or one column left (a masked load zeroes the lanes of column
 * 0), and no gather or shuffle is left in the loop. A vector is 16 output
 * columns of one row (16-wide outputs) or 2 rows of 8 (8-wide ones).
 *
 * The register block is the packed GEMM's 6 rows (output channels) x 4
 * vectors, 24 accumulators; per input channel and tap, 6 weight broadcasts,
 * 4 loads, 24 FMAs. The weights are the GEMM's packing (the model keeps
 * nothing else for these layers), regrouped per call so that each block's
 * run over the whole reduction is contiguous (at most a few hundred KB).
 *
 * Numerics: each output is its 9 cin products summed by input channel,
 * then tap, in fused multiply-adds, plus the bias, then the residual, by
 * one thread: the same bits on any thread count, within float rounding of
 * the GEMM's sums (the same products in the same order, but the GEMM blocks
 * the reduction in chunks of 128).
 */
#include "pkgnet_kernels.h"
#include "pkk_internal.h"
#include "pkk_microkernel.h"

#include <immintrin.h>
#include <stdint.h>

#define PKK_S2_MR 6   /* output channels per block: the packed GEMM's row blocks */
#define PKK_S2_VECS 4 /* 16-float output vectors per block */

/* 16-wide outputs of a height divisible by 4, or 8-wide of one divisible by
 * 8 (inputs 32 and 16 wide): whole blocks of 4 vectors. */
static int pkk_s2_takes(int cin, int cout, int batch, int h, int w)
{
    if (!pkk_use_avx512() || cin <= 0 || cout <= 0 || batch <= 0 || h % 2 != 0 || w % 2 != 0) return 0;
    return (w == 32 && h % 8 == 0) || (w == 16 && h % 16 == 0);
}

/* Floats of one phase plane: a zero row, then ho rows of wo. */
static size_t pkk_s2_plane(int h, int w) { return ((size_t)h / 2 + 1) * ((size_t)w / 2); }

typedef struct {
    const float *x, *bias, *residual;
    const float *weights; /* [cout / 6][cin][9][6] */
    float *y, *phases;    /* per slot: [4][cin][plane] */
    int cin, cout, batch, h, w, relu;
    int blocks; /* output blocks per image and channel block */
    long items, slots;
} pkk_s2_args;

/* The 32 floats at src: the even ones to evens, the odd ones to odds. */
PKK_AVX512 static inline void pkk_s2_deinterleave(const float *src, float *evens, float *odds)
{
    const pkk_v16 lo = *(const pkk_v16u *)src, hi = *(const pkk_v16u *)(src + 16);
    *(pkk_v16u *)evens = __builtin_shufflevector(lo, hi, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    *(pkk_v16u *)odds = __builtin_shufflevector(lo, hi, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}

/* Image b's four phases into ph ([ee, eo, oe, oo][cin][plane]: row phase,
 * column phase), each plane after its zero row. */
PKK_AVX512 static void pkk_s2_split(const pkk_s2_args *a, int b, float *ph)
{
    const int w = a->w, wo = w / 2, ho = a->h / 2;
    const size_t plane = pkk_s2_plane(a->h, w), phase = (size_t)a->cin * plane;
    for (int ci = 0; ci < a->cin; ci++) {
        const float *src = a->x + ((size_t)ci * a->batch + b) * (size_t)a->h * w;
        float *ee = ph + (size_t)ci * plane, *eo = ee + phase, *oe = eo + phase, *oo = oe + phase;
        for (int c = 0; c < wo; c++) ee[c] = eo[c] = oe[c] = oo[c] = 0.0f;
        for (int r = 0; r < ho; r++) {
            const float *even = src + (size_t)2 * r * w, *odd = even + w;
            const size_t at = (size_t)(r + 1) * wo;
            if (wo == 16) {
                pkk_s2_deinterleave(even, ee + at, eo + at);
                pkk_s2_deinterleave(odd, oe + at, oo + at);
            } else { /* wo == 8: a row is one vector, its evens and odds two halves */
                const pkk_v16 e = *(const pkk_v16u *)even, o = *(const pkk_v16u *)odd;
                *(pkk_v8u *)(ee + at) = __builtin_shufflevector(e, e, 0, 2, 4, 6, 8, 10, 12, 14);
                *(pkk_v8u *)(eo + at) = __builtin_shufflevector(e, e, 1, 3, 5, 7, 9, 11, 13, 15);
                *(pkk_v8u *)(oe + at) = __builtin_shufflevector(o, o, 0, 2, 4, 6, 8, 10, 12, 14);
                *(pkk_v8u *)(oo + at) = __builtin_shufflevector(o, o, 1, 3, 5, 7, 9, 11, 13, 15);
            }
        }
    }
}

/* One block: output channels 6 cb .. 6 cb + 5 at output vectors v0 ..
 * v0 + 3 of image b (split in ph). `wo` constant where inlined. */
PKK_AVX512 static inline __attribute__((always_inline)) void pkk_s2_block(const pkk_s2_args *a, const float *ph,
                                                                          int b, int cb, int v0, int wo)
{
    const int cin = a->cin;
    const size_t plane = pkk_s2_plane(a->h, 2 * wo), phase = (size_t)cin * plane;
    /* Column 0 of each row has no left neighbour in the odd column phase. */
    const __mmask16 left = wo == 16 ? 0xfffe : 0xfefe;
    pkk_v16 acc[PKK_S2_MR][PKK_S2_VECS];
    for (int r = 0; r < PKK_S2_MR; r++)
        for (int q = 0; q < PKK_S2_VECS; q++) acc[r][q] = (pkk_v16){ 0 };
    const float *wc = a->weights + (size_t)cb * cin * 9 * PKK_S2_MR;
    /* the block's first vector in each phase plane (after the zero row) */
    const float *xc = ph + wo + (size_t)v0 * 16;
    for (int ci = 0; ci < cin; ci++, xc += plane, wc += 9 * PKK_S2_MR)
        for (int k = 0; k < 9; k++) {
            const int ky = k / 3, kx = k % 3;
            /* rows: ky 0 the odd phase one row up, 1 the even phase, 2 the
             * odd phase; columns likewise with kx */
            const float *src = xc + (size_t)((ky != 1) * 2 + (kx != 1)) * phase - (ky == 0) * wo - (kx == 0);
            pkk_v16 xv[PKK_S2_VECS];
            for (int q = 0; q < PKK_S2_VECS; q++)
                xv[q] = (pkk_v16)_mm512_maskz_loadu_ps(kx == 0 ? left : 0xffff, src + 16 * q);
            for (int r = 0; r < PKK_S2_MR; r++) {
                const float wr = wc[k * PKK_S2_MR + r];
                for (int q = 0; q < PKK_S2_VECS; q++) acc[r][q] += wr * xv[q];
            }
        }
    const size_t out_plane = (size_t)(a->h / 2) * wo;
    for (int r = 0; r < PKK_S2_MR; r++) {
        const int co = PKK_S2_MR * cb + r;
        if (co >= a->cout) break;
        const float bias = a->bias ? a->bias[co] : 0.0f;
        for (int q = 0; q < PKK_S2_VECS; q++) {
            const size_t at = ((size_t)co * a->batch + b) * out_plane + (size_t)(v0 + q) * 16;
            pkk_v16 value = acc[r][q] + bias;
            if (a->residual) value += *(const pkk_v16u *)(a->residual + at);
            if (a->relu) value = __builtin_elementwise_max(value, (pkk_v16){ 0 });
            *(pkk_v16u *)(a->y + at) = value;
        }
    }
}

/* Slots [lo, hi): slot j takes items [j items / slots, (j + 1) items /
 * slots) in order (image, channel block, output block), output blocks
 * fastest; the thread splits each image it meets once, into slot lo's
 * buffer. */
PKK_AVX512 static void pkk_s2_slots(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const pkk_s2_args *a = args;
    float *ph = a->phases + (size_t)lo * 4 * a->cin * pkk_s2_plane(a->h, a->w);
    const int cblocks = (a->cout + PKK_S2_MR - 1) / PKK_S2_MR;
    int split = -1;
    for (long i = lo * a->items / a->slots; i < hi * a->items / a->slots; i++) {
        const int ob = (int)(i % a->blocks), cb = (int)(i / a->blocks % cblocks), b = (int)(i / a->blocks / cblocks);
        if (b != split) {
            pkk_s2_split(a, b, ph);
            split = b;
        }
        if (a->w == 32) pkk_s2_block(a, ph, b, cb, PKK_S2_VECS * ob, 16);
        else pkk_s2_block(a, ph, b, cb, PKK_S2_VECS * ob, 8);
    }
}

int pkk_conv3x3s2_packed(const float *x, int cin, int batch, int h, int w, const float *a, const float *bias,
                         int cout, const float *residual, int relu, float *y, float *scratch, size_t scratch_floats)
{
    if (!pkk_s2_takes(cin, cout, batch, h, w) || ((uintptr_t)scratch & 3) != 0) return 0;
    const size_t weight_floats = (pkk_packed_weight_floats(cout, 9 * cin) + 15) / 16 * 16;
    const size_t per_image = 4 * (size_t)cin * pkk_s2_plane(h, w);
    if (scratch_floats < weight_floats + per_image + 15) return 0;
    const int cblocks = (cout + PKK_S2_MR - 1) / PKK_S2_MR, blocks = (h / 2) * (w / 2) / (16 * PKK_S2_VECS);
    const long items = (long)batch * cblocks * blocks;
    /* a quarter of the multiply-adds: what pkk_run's threshold weighs */
    const size_t work = (size_t)items * PKK_S2_MR * PKK_S2_VECS * 16 * 9 * (size_t)cin / 4;
    long slots = pkk_run_threads(items, work);
    const size_t fit = (scratch_floats - 15 - weight_floats) / per_image;
    if ((size_t)slots > fit) slots = (long)fit;
    float *weights = scratch + ((64 - ((uintptr_t)scratch & 63)) & 63) / sizeof(float);
    pkk_packed_row_blocks(a, cout, 9 * cin, weights);
    const pkk_s2_args args = { x, bias, residual, weights, y, weights + weight_floats, cin, cout, batch, h, w, relu,
                               blocks, items, slots };
    pkk_run(slots, work, pkk_s2_slots, &args);
    return 1;
}
