#include "pkgnet_kernels.h"
#include <omp.h>
int pkk_dummy(int x) { int s = 0;
#pragma omp parallel for reduction(+:s)
 for (int i = 0; i < x; i++) s += i; return s + omp_get_max_threads(); }
