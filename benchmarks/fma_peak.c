/*
 * The machine's fp32 FMA peak, the figure benchmarks quote GFLOP/s against:
 * every OpenMP thread runs 12 independent 8-float FMA chains in registers
 * (enough to cover the FMA latency on two pipes) for a fixed count, best of
 * 5 runs.
 *
 *   cc -O2 -mavx2 -mfma -fopenmp benchmarks/fma_peak.c -o /tmp/fma_peak && /tmp/fma_peak [threads]
 */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#define CHAINS 12
#define STEPS 100000000L

int main(int argc, char **argv)
{
    const int threads = argc > 1 ? atoi(argv[1]) : omp_get_max_threads();
    double best = 0.0;
    float sink = 0.0f;
    for (int run = 0; run < 5; run++) {
        const double start = omp_get_wtime();
#pragma omp parallel num_threads(threads) reduction(+ : sink)
        {
            const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
            /* named registers: an array would live in memory */
            __m256 c0 = _mm256_set1_ps(0), c1 = _mm256_set1_ps(1), c2 = _mm256_set1_ps(2), c3 = _mm256_set1_ps(3);
            __m256 c4 = _mm256_set1_ps(4), c5 = _mm256_set1_ps(5), c6 = _mm256_set1_ps(6), c7 = _mm256_set1_ps(7);
            __m256 c8 = _mm256_set1_ps(8), c9 = _mm256_set1_ps(9), c10 = _mm256_set1_ps(10), c11 = _mm256_set1_ps(11);
            for (long s = 0; s < STEPS; s++) {
                c0 = _mm256_fmadd_ps(c0, a, b); c1 = _mm256_fmadd_ps(c1, a, b); c2 = _mm256_fmadd_ps(c2, a, b);
                c3 = _mm256_fmadd_ps(c3, a, b); c4 = _mm256_fmadd_ps(c4, a, b); c5 = _mm256_fmadd_ps(c5, a, b);
                c6 = _mm256_fmadd_ps(c6, a, b); c7 = _mm256_fmadd_ps(c7, a, b); c8 = _mm256_fmadd_ps(c8, a, b);
                c9 = _mm256_fmadd_ps(c9, a, b); c10 = _mm256_fmadd_ps(c10, a, b); c11 = _mm256_fmadd_ps(c11, a, b);
            }
            float out[8];
            const __m256 sum = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(c0, c1), _mm256_add_ps(c2, c3)),
                                             _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(c4, c5), _mm256_add_ps(c6, c7)),
                                                           _mm256_add_ps(_mm256_add_ps(c8, c9), _mm256_add_ps(c10, c11))));
            _mm256_storeu_ps(out, sum);
            sink += out[0];
        }
        const double seconds = omp_get_wtime() - start;
        const double gflops = (double)threads * STEPS * CHAINS * 8 * 2 / seconds * 1e-9;
        if (gflops > best) best = gflops;
    }
    printf("fp32 FMA peak, %d thread%s: %.1f GFLOP/s (checksum %g)\n", threads, threads == 1 ? "" : "s", best, sink);
    return 0;
}
