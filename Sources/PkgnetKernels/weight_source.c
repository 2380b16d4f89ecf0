/* Reading a model file's weight tensors in place (pkk_weight_source in
 * pkgnet_kernels.h). */
#include <stdint.h>
#include <string.h>

#include "pkgnet_kernels.h"
#include "pkk_internal.h"

/* Clones: x86-64-v3 converts F16 with F16C instructions (the default build
 * converts in software) and both vector builds scale 4 or 8 values at a time. */
PKK_CLONES
void pkk_weight_source_span(pkk_weight_source *source, size_t e, size_t n, size_t row, float *out)
{
    const unsigned char *p = source->data;
    switch (source->dtype) {
    case PKK_DTYPE_F16:
        for (size_t j = 0; j < n; j++) {
            _Float16 h;
            memcpy(&h, p + 2 * (e + j), 2);
            out[j] = (float)h;
        }
        break;
    case PKK_DTYPE_BF16:
        for (size_t j = 0; j < n; j++) {
            uint16_t h;
            memcpy(&h, p + 2 * (e + j), 2);
            const uint32_t bits = (uint32_t)h << 16;
            memcpy(out + j, &bits, 4);
        }
        break;
    default: /* the file's data has no alignment guarantee: copy bytes */
        if (n > 0) memcpy(out, p + 4 * e, 4 * n);
    }
    uint32_t nonfinite = 0; /* branch-free over the run: it vectorises */
    for (size_t j = 0; j < n; j++) {
        uint32_t bits;
        memcpy(&bits, out + j, 4);
        nonfinite |= (uint32_t)((bits & 0x7f800000u) == 0x7f800000u);
    }
    if (nonfinite) __atomic_store_n(&source->nonfinite, 1, __ATOMIC_RELAXED);
    if (source->row_scale) {
        const double scale = source->row_scale[row];
        for (size_t j = 0; j < n; j++) out[j] = (float)((double)out[j] * scale);
    }
}

void pkk_weight_source_read(pkk_weight_source *source, size_t rows, size_t row_len, float *out)
{
    for (size_t r = 0; r < rows; r++) pkk_weight_source_span(source, r * row_len, row_len, r, out + r * row_len);
}
