/* The register blocks of this library's own GEMMs (6 x 16: winograd.c,
 * packed_gemm.c; 4 x 16: winograd.c). Private, not installed. */
#ifndef PKK_MICROKERNEL_H
#define PKK_MICROKERNEL_H

typedef float pkk_v8 __attribute__((vector_size(32)));
typedef float pkk_v8u __attribute__((vector_size(32), aligned(4))); /* unaligned access */

/* acc[2r + h] = sum_i a[i][r] * b[i][8h .. 8h + 7] for r < 6, h < 2, over k
 * rows of a [k][6] and b [k][16] (contiguous; b 32-byte aligned), summed in
 * order of i: per row of b, six broadcast values of a and twelve 8-float
 * accumulators (AVX2 registers; two SSE halves each on the baseline). */
static inline __attribute__((always_inline)) void pkk_block_6x16(int k, const float *restrict a,
                                                                  const float *restrict b, pkk_v8 acc[12])
{
    pkk_v8 c00 = { 0 }, c01 = { 0 }, c10 = { 0 }, c11 = { 0 }, c20 = { 0 }, c21 = { 0 };
    pkk_v8 c30 = { 0 }, c31 = { 0 }, c40 = { 0 }, c41 = { 0 }, c50 = { 0 }, c51 = { 0 };
    for (int i = 0; i < k; i++, a += 6, b += 16) {
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
                                                                 const float *restrict b, pkk_v8 acc[12])
{
    pkk_v8 c0 = { 0 }, c1 = { 0 }, c2 = { 0 }, c3 = { 0 }, c4 = { 0 }, c5 = { 0 };
    for (int i = 0; i < k; i++, a += 6, b += 16) {
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

#endif /* PKK_MICROKERNEL_H */
