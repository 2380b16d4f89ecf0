/* The register blocks of this library's own GEMMs (6 x 16: winograd.c,
 * packed_gemm.c; 4 x 16: winograd.c), in 8-float vectors (AVX2), and their
 * AVX-512 forms of up to four 16-float vectors per row. Private, not
 * installed. */
#ifndef PKK_MICROKERNEL_H
#define PKK_MICROKERNEL_H

typedef float pkk_v8 __attribute__((vector_size(32)));
typedef float pkk_v8u __attribute__((vector_size(32), aligned(4))); /* unaligned access */

/* Prefetching a's stream: the blocks below that take `pf` touch pf[mr i]
 * into L1 at their step i (pf NULL: none), so that a caller walking blocks
 * whose a is streamed from memory can have the next block's a arrive
 * during this one. Where each weight serves only 16-64 FMAs (the packed
 * GEMM at batch 1) the hardware prefetchers fall behind the kernel: with
 * the next block prefetched, measured (2 threads, weights cold) 1.3x at 16
 * columns, 1.06x at 64, the same at 256 and more. */
static inline __attribute__((always_inline)) void pkk_prefetch_step(const float *pf, int i, int mr)
{
    if (pf) __builtin_prefetch(pf + (size_t)i * mr, 0, 3);
}

/* acc[2r + h] = sum_i a[i][r] * b[i][8h .. 8h + 7] for r < 6, h < 2, over k
 * rows of a [k][6] and b [k][16] (contiguous; b 32-byte aligned), summed in
 * order of i: per row of b, six broadcast values of a and twelve 8-float
 * accumulators (AVX2 registers; two SSE halves each on the baseline). pf:
 * as pkk_prefetch_step. */
static inline __attribute__((always_inline)) void pkk_block_6x16(int k, const float *restrict a,
                                                                  const float *restrict b, const float *pf,
                                                                  pkk_v8 acc[12])
{
    pkk_v8 c00 = { 0 }, c01 = { 0 }, c10 = { 0 }, c11 = { 0 }, c20 = { 0 }, c21 = { 0 };
    pkk_v8 c30 = { 0 }, c31 = { 0 }, c40 = { 0 }, c41 = { 0 }, c50 = { 0 }, c51 = { 0 };
    for (int i = 0; i < k; i++, a += 6, b += 16) {
        pkk_prefetch_step(pf, i, 6);
        const pkk_v8 b0 = *(const pkk_v8 *)b, b1 = *(const pkk_v8 *)(b + 8);
        c00 += a[0] * b0; c01 += a[0] * b1;
        c10 += a[1] * b0; c11 += a[1] * b1;
        c20 += a[2] * b0; c21 += a[2] * b1;
        c30 += a[3] * b0; c31 += a[3] * b1;
        c40 += a[4] * b0; c41 += a[4] * b1;
        c50 += a[5] * b0; c51 += a[5] * b1;
    }
    acc[0] = c00; acc[1] = c01; acc[2] = c10; acc[3] = c11; acc[4] = c20; acc[5] = c21;
    acc[6] = c30; acc[7] = c31; acc[8] = c40; acc[9] = c41; acc[10] = c50; acc[11] = c51;
}

/* The first 8 columns only (acc[2r]), for a last block of at most 8
 * columns: half the work. */
static inline __attribute__((always_inline)) void pkk_block_6x8(int k, const float *restrict a,
                                                                 const float *restrict b, const float *pf,
                                                                 pkk_v8 acc[12])
{
    pkk_v8 c0 = { 0 }, c1 = { 0 }, c2 = { 0 }, c3 = { 0 }, c4 = { 0 }, c5 = { 0 };
    for (int i = 0; i < k; i++, a += 6, b += 16) {
        pkk_prefetch_step(pf, i, 6);
        const pkk_v8 b0 = *(const pkk_v8 *)b;
        c0 += a[0] * b0; c1 += a[1] * b0; c2 += a[2] * b0;
        c3 += a[3] * b0; c4 += a[4] * b0; c5 += a[5] * b0;
    }
    acc[0] = c0; acc[2] = c1; acc[4] = c2; acc[6] = c3; acc[8] = c4; acc[10] = c5;
}

/* acc[2r + h] as pkk_block_6x16 for r < 4, over rows of a [k][4]: eight
 * accumulators, as many as two FMA units with a 4-cycle latency keep busy,
 * and per row of b four broadcasts and two loads, so as fast per output row
 * as the 6 x 16 block. */
static inline __attribute__((always_inline)) void pkk_block_4x16(int k, const float *restrict a,
                                                                  const float *restrict b, pkk_v8 acc[8])
{
    pkk_v8 c00 = { 0 }, c01 = { 0 }, c10 = { 0 }, c11 = { 0 }, c20 = { 0 }, c21 = { 0 }, c30 = { 0 }, c31 = { 0 };
    for (int i = 0; i < k; i++, a += 4, b += 16) {
        const pkk_v8 b0 = *(const pkk_v8 *)b, b1 = *(const pkk_v8 *)(b + 8);
        c00 += a[0] * b0; c01 += a[0] * b1;
        c10 += a[1] * b0; c11 += a[1] * b1;
        c20 += a[2] * b0; c21 += a[2] * b1;
        c30 += a[3] * b0; c31 += a[3] * b1;
    }
    acc[0] = c00; acc[1] = c01; acc[2] = c10; acc[3] = c11; acc[4] = c20; acc[5] = c21; acc[6] = c30; acc[7] = c31;
}

/* The first 8 columns of pkk_block_4x16 (acc[2r]). */
static inline __attribute__((always_inline)) void pkk_block_4x8(int k, const float *restrict a,
                                                                 const float *restrict b, pkk_v8 acc[8])
{
    pkk_v8 c0 = { 0 }, c1 = { 0 }, c2 = { 0 }, c3 = { 0 };
    for (int i = 0; i < k; i++, a += 4, b += 16) {
        const pkk_v8 b0 = *(const pkk_v8 *)b;
        c0 += a[0] * b0; c1 += a[1] * b0; c2 += a[2] * b0; c3 += a[3] * b0;
    }
    acc[0] = c0; acc[2] = c1; acc[4] = c2; acc[6] = c3;
}

/* ---- AVX-512 ----
 *
 * On CPUs with AVX-512 a 16-float FMA costs what an 8-float one does: twice
 * the arithmetic per cycle. Functions that use 16-float vectors carry
 * PKK_AVX512 (the x86-64-v4 instruction set, and 512-bit registers: clang
 * otherwise splits 64-byte vectors into two 256-bit halves, its default
 * tuning for these CPUs) and run only where pkk_use_avx512() holds. */
#define PKK_AVX512 __attribute__((target("arch=x86-64-v4"), min_vector_width(512)))

typedef float pkk_v16 __attribute__((vector_size(64)));
typedef float pkk_v16u __attribute__((vector_size(64), aligned(4))); /* unaligned access */

/* Vectors of b per register block at most: the AVX-512 blocks' accumulators
 * are acc[PKK_ZMM_NB r + h]. */
#define PKK_ZMM_NB 4

/* acc[PKK_ZMM_NB r + h] = sum_i a[i][r] * b_h[i][0 .. 15] for r < mr,
 * h < nb, over k rows of a [k][mr] and of b_h = b + h b_next ([k][16] each,
 * 64-byte aligned), summed in order of i, as the 8-float blocks do. Per row
 * of b: mr broadcasts, nb 16-float loads and mr * nb accumulators in
 * registers. The loads are what limit it: measured on one core (Xeon, b in
 * L1), 6 x 2 ran at 60-80% of the FMA peak, 6 x 4 and 4 x 4 at 92-99% (a
 * load per 2.4 FMAs instead of per 1.5). mr (6 or 4) and nb (1 to 4) are
 * constants where this is inlined, so the loops unroll onto named
 * registers. pf: as pkk_prefetch_step. */
static inline __attribute__((always_inline)) void pkk_block_zmm(int k, int mr, int nb, const float *restrict a,
                                                                 const float *restrict b, size_t b_next,
                                                                 const float *pf, pkk_v16 acc[6 * PKK_ZMM_NB])
{
    pkk_v16 c[6][PKK_ZMM_NB];
    for (int r = 0; r < mr; r++)
        for (int h = 0; h < nb; h++) c[r][h] = (pkk_v16){ 0 };
    for (int i = 0; i < k; i++, a += mr, b += 16) {
        pkk_prefetch_step(pf, i, mr);
        pkk_v16 bv[PKK_ZMM_NB];
        for (int h = 0; h < nb; h++) bv[h] = *(const pkk_v16 *)(b + h * b_next);
        for (int r = 0; r < mr; r++)
            for (int h = 0; h < nb; h++) c[r][h] += a[r] * bv[h];
    }
    for (int r = 0; r < mr; r++)
        for (int h = 0; h < nb; h++) acc[PKK_ZMM_NB * r + h] = c[r][h];
}

/* pkk_block_zmm with nb (1 to PKK_ZMM_NB) known only at run time: a branch
 * per value, each with nb a constant so that it unrolls (mr must be a
 * constant where this is inlined). */
static inline __attribute__((always_inline)) void pkk_block_zmm_any(int k, int mr, int nb, const float *restrict a,
                                                                     const float *restrict b, size_t b_next,
                                                                     const float *pf, pkk_v16 acc[6 * PKK_ZMM_NB])
{
    switch (nb) {
    case 4: pkk_block_zmm(k, mr, 4, a, b, b_next, pf, acc); break;
    case 3: pkk_block_zmm(k, mr, 3, a, b, b_next, pf, acc); break;
    case 2: pkk_block_zmm(k, mr, 2, a, b, b_next, pf, acc); break;
    default: pkk_block_zmm(k, mr, 1, a, b, b_next, pf, acc); break;
    }
}

#endif /* PKK_MICROKERNEL_H */
