/*
 * The machine's fp32 FMA peak, the figure benchmarks quote GFLOP/s against:
 * every OpenMP thread runs 12 independent FMA chains in registers (enough
 * to cover the FMA latency on two pipes) for a fixed count, best of 5 runs;
 * with 8-float vectors (AVX2), and with 16-float ones where the CPU has
 * AVX-512 (the peak pkgnet's AVX-512 kernels are read against: twice the
 * AVX2 one on CPUs with two 512-bit FMA units).
 *
 *   cc -O2 -fopenmp benchmarks/fma_peak.c -o /tmp/fma_peak && /tmp/fma_peak [threads]
 */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#define CHAINS 12
#define STEPS 100000000L

/* One thread's chains; returns a checksum so nothing is optimised away. */
#define FMA_CHAINS(V, SET1, FMADD, ADD, STORE, LANES)                                                          \
    const V a = SET1(0.999999f), b = SET1(1e-7f);                                                            \
    /* named registers: an array would live in memory */                                                     \
    V c0 = SET1(0), c1 = SET1(1), c2 = SET1(2), c3 = SET1(3), c4 = SET1(4), c5 = SET1(5);                    \
    V c6 = SET1(6), c7 = SET1(7), c8 = SET1(8), c9 = SET1(9), c10 = SET1(10), c11 = SET1(11);                \
    for (long s = 0; s < STEPS; s++) {                                                                       \
        c0 = FMADD(c0, a, b); c1 = FMADD(c1, a, b); c2 = FMADD(c2, a, b);                                    \
        c3 = FMADD(c3, a, b); c4 = FMADD(c4, a, b); c5 = FMADD(c5, a, b);                                    \
        c6 = FMADD(c6, a, b); c7 = FMADD(c7, a, b); c8 = FMADD(c8, a, b);                                    \
        c9 = FMADD(c9, a, b); c10 = FMADD(c10, a, b); c11 = FMADD(c11, a, b);                                \
    }                                                                                                        \
    float out[LANES];                                                                                        \
    STORE(out, ADD(ADD(ADD(ADD(c0, c1), ADD(c2, c3)), ADD(ADD(c4, c5), ADD(c6, c7))),                        \
                   ADD(ADD(c8, c9), ADD(c10, c11))));                                                        \
    return out[0];

__attribute__((target("avx2,fma"))) static float chains8(void)
{
    FMA_CHAINS(__m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps, _mm256_storeu_ps, 8)
}

__attribute__((target("avx512f"))) static float chains16(void)
{
    FMA_CHAINS(__m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps, _mm512_storeu_ps, 16)
}

static void peak(const char *name, float (*chains)(void), int lanes, int threads)
{
    double best = 0.0;
    float sink = 0.0f;
    for (int run = 0; run < 5; run++) {
        const double start = omp_get_wtime();
#pragma omp parallel num_threads(threads) reduction(+ : sink)
        sink += chains();
        const double seconds = omp_get_wtime() - start;
        const double gflops = (double)threads * STEPS * CHAINS * lanes * 2 / seconds * 1e-9;
        if (gflops > best) best = gflops;
    }
    printf("fp32 FMA peak, %s, %d thread%s: %.1f GFLOP/s (checksum %g)\n", name, threads, threads == 1 ? "" : "s",
           best, sink);
}

int main(int argc, char **argv)
{
    const int threads = argc > 1 ? atoi(argv[1]) : omp_get_max_threads();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
        fprintf(stderr, "this CPU has no AVX2 and FMA\n");
        return 1;
    }
    peak("8-float vectors (AVX2)", chains8, 8, threads);
    if (__builtin_cpu_supports("avx512f")) peak("16-float vectors (AVX-512)", chains16, 16, threads);
    return 0;
}
