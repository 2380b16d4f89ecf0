/*
 * Weights rearranged once per layer (GEMM packing, transposition) and kept
 * for the model's lifetime, one array per use (slot). A layer's cache is
 * shared by every session of the model, so the first calls may race: each
 * racer computes a copy, one is installed atomically, the others are
 * freed. No lock, and every caller sees the same array.
 */
#include "pkgnet_kernels.h"
#include "pkk_internal.h"

#include <stdatomic.h>
#include <stdlib.h>

struct pkk_weight_cache {
    _Atomic(float *) data[PKK_CACHE_SLOTS];
};

pkk_weight_cache *pkk_weight_cache_new(void)
{
    pkk_weight_cache *cache = malloc(sizeof *cache);
    if (cache != NULL)
        for (int slot = 0; slot < PKK_CACHE_SLOTS; slot++) atomic_init(&cache->data[slot], NULL);
    return cache;
}

void pkk_weight_cache_free(pkk_weight_cache *cache)
{
    if (cache == NULL) return;
    for (int slot = 0; slot < PKK_CACHE_SLOTS; slot++) free(atomic_load(&cache->data[slot]));
    free(cache);
}

const float *pkk_weight_cache_get(pkk_weight_cache *cache, int slot, size_t floats, pkk_weight_fill_fn fill,
                                  const void *args)
{
    float *data = atomic_load_explicit(&cache->data[slot], memory_order_acquire);
    if (data != NULL || fill == NULL) return data;
    float *fresh = NULL;
    if (posix_memalign((void **)&fresh, 64, sizeof(float) * floats) != 0) return NULL;
    fill(fresh, args);
    float *expected = NULL;
    if (atomic_compare_exchange_strong_explicit(&cache->data[slot], &expected, fresh, memory_order_acq_rel,
                                                memory_order_acquire))
        return fresh;
    free(fresh);
    return expected;
}
