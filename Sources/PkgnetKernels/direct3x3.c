/*
 * Direct 3x3 stride-1 pad-1 convolution for narrow layers (AVX-512).
 *
 * Winograd F(4x4, 3x3) saves three quarters of the multiplications, but
 * its input and output transforms cost per channel what the products cost
 * per channel pair. With 16 output channels on 32x32 maps (the edge
 * students' outer layers, the CIFAR ResNet teachers' first stage) the
 * transforms and their trips through V and M took most of a layer, which
 * ran near half the FMA peak in direct-convolution FLOPs; so did any
 * narrow layer of a single cube, too few tiles to amortise them. Here
 * the multiply-adds run straight from the input, in registers: a block is
 * 4 output channels x 64 outputs (whole rows, 4 vectors of 16) in 16
 * accumulators; per input channel and tap, 4 weight broadcasts, up to 4
 * input loads (rows the taps share are loaded once) and 16 FMAs. Nothing
 * leaves the registers until a block has summed all its taps; single
 * threaded it runs at 80-95% of the FMA peak.
 *
 * Each thread copies the image it works on into a zero-padded buffer of
 * its own (16 zero floats before each row: the interior starts on a
 * 64-byte line, and a row's left and right neighbours are zeros), so edges
 * need no tests and the copy stays in its L2 cache for all the image's
 * blocks. The weights come from the Winograd arrangement the model keeps
 * (pkk_winograd_arrange_weights, blocks of 4 output channels), regrouped per
 * call so that a block's 36 weights per input channel are adjacent.
 *
 * Numerics: each output is its 9 cin products summed by input channel,
 * then tap, in fused multiply-adds, plus the bias, then the residual:
 * within float rounding of the direct definition, like a GEMM's sums and
 * closer than Winograd's.
 */
#include "pkgnet_kernels.h"
#include "pkk_internal.h"
#include "pkk_microkernel.h"

#include <stdint.h>

#define PKK_DC_ROWS 4      /* output channels per block: the arrangement's block rows */
#define PKK_DC_VECTORS 4   /* 16-float output vectors per block */
#define PKK_DC_OUTPUTS 64  /* outputs per block: 4 rows of a 16-wide map, 2 of a 32-wide one */
#define PKK_DC_LEFT 16     /* zero floats before each padded row */

/* Floats from one padded row to the next, and of one padded plane: h + 2
 * rows and one more, which the bottom row's right neighbour reads. */
static size_t pkk_dc_pitch(int w) { return (size_t)w + PKK_DC_LEFT; }
static size_t pkk_dc_plane(int h, int w) { return ((size_t)h + 3) * pkk_dc_pitch(w); }

/* Where the direct kernel beats Winograd (measured on the edge models'
 * shapes, 1 and 2 threads, medians of alternated runs): 32-wide maps (16
 * output channels) at any batch, 1.0-1.8x; 16-wide ones (32 output
 * channels) for one cube only, 1.0-1.3x, while from 2 up Winograd has the
 * tiles to amortise its transforms and runs 1.1-1.4x as fast. */
int pkk_conv3x3_direct_takes(int cin, int cout, int batch, int h, int w)
{
    if (!pkk_use_avx512() || cin <= 0 || cout <= 0 || cout > 32 || batch <= 0 || h <= 0) return 0;
    if (pkk_winograd_block_rows(cout) != PKK_DC_ROWS) return 0;
    return (w == 16 && h % 4 == 0 && batch == 1) || (w == 32 && h % 2 == 0);
}

typedef struct {
    const float *x, *bias, *residual;
    const float *weights; /* [cout / 4][cin][9][4]: a block's taps in the order the FMAs read them */
    float *y, *pads;      /* pads: one image's padded planes per slot */
    int cin, cout, batch, h, w, relu;
    long items, slots; /* (image, channel block, output block) items, shared out in slots */
    int blocks;        /* output blocks per image and channel block */
} pkk_dc_args;

/* Image b's planes with zero borders into pad: per plane a zero row, the h
 * rows each after 16 zeros, two zero rows (the last one for the right
 * neighbour of the bottom row's last output). 16-float stores: w is a
 * multiple of 16 and rows stay on 64-byte lines. */
PKK_AVX512 static void pkk_dc_pad(const pkk_dc_args *a, int b, float *pad)
{
    const int w = a->w, h = a->h;
    const size_t pitch = pkk_dc_pitch(w), in_plane = (size_t)h * w;
    const pkk_v16 zero = { 0 };
    for (int ci = 0; ci < a->cin; ci++) {
        const float *src = a->x + ((size_t)ci * a->batch + b) * in_plane;
        float *dst = pad + (size_t)ci * pkk_dc_plane(h, w);
        for (size_t i = 0; i < pitch; i += 16) *(pkk_v16 *)(dst + i) = zero;
        dst += pitch;
        for (int y = 0; y < h; y++, src += w, dst += pitch) {
            *(pkk_v16 *)dst = zero;
            for (int x = 0; x < w; x += 16) *(pkk_v16 *)(dst + PKK_DC_LEFT + x) = *(const pkk_v16u *)(src + x);
        }
        for (size_t i = 0; i < 2 * pitch; i += 16) *(pkk_v16 *)(dst + i) = zero;
    }
}

/* One block: output channels 4 cb .. 4 cb + 3 at `rows` whole output rows
 * from oy of image b (padded in pad), 4 / rows vectors of 16 each. Inlined
 * with `rows` constant, and with it the image's width and the padded rows'
 * pitch, so that every load is a fixed offset from the input channel's row
 * pointer or its weights. */
static inline __attribute__((always_inline)) void pkk_dc_block(const pkk_dc_args *a, const float *pad, int b, int cb,
                                                               int oy, int rows)
{
    const int w = PKK_DC_OUTPUTS / rows, cin = a->cin, per_row = PKK_DC_VECTORS / rows;
    const size_t pitch = pkk_dc_pitch(w), plane = pkk_dc_plane(a->h, w);
    pkk_v16 acc[PKK_DC_ROWS][PKK_DC_VECTORS];
    for (int r = 0; r < PKK_DC_ROWS; r++)
        for (int v = 0; v < PKK_DC_VECTORS; v++) acc[r][v] = (pkk_v16){ 0 };
    /* the padded row above the block, the column left of it */
    const float *xc = pad + (size_t)oy * pitch + PKK_DC_LEFT - 1;
    const float *wc = a->weights + (size_t)cb * cin * 9 * PKK_DC_ROWS;
    for (int ci = 0; ci < cin; ci++, xc += plane, wc += 9 * PKK_DC_ROWS) {
        for (int k = 0; k < 9; k++) {
            pkk_v16 xv[PKK_DC_VECTORS];
            for (int v = 0; v < PKK_DC_VECTORS; v++)
                xv[v] = *(const pkk_v16u *)(xc + (size_t)(v / per_row + k / 3) * pitch + 16 * (v % per_row) + k % 3);
            for (int r = 0; r < PKK_DC_ROWS; r++) {
                const float wr = wc[k * PKK_DC_ROWS + r];
                for (int v = 0; v < PKK_DC_VECTORS; v++) acc[r][v] += wr * xv[v];
            }
        }
    }
    const size_t out_plane = (size_t)a->h * w;
    for (int r = 0; r < PKK_DC_ROWS; r++) {
        const int co = PKK_DC_ROWS * cb + r;
        if (co >= a->cout) break;
        const float bias = a->bias ? a->bias[co] : 0.0f;
        for (int v = 0; v < PKK_DC_VECTORS; v++) {
            const size_t at = ((size_t)co * a->batch + b) * out_plane + (size_t)(oy + v / per_row) * w + 16 * (v % per_row);
            pkk_v16 value = acc[r][v] + bias;
            if (a->residual) value += *(const pkk_v16u *)(a->residual + at);
            if (a->relu) value = __builtin_elementwise_max(value, (pkk_v16){ 0 });
            *(pkk_v16u *)(a->y + at) = value;
        }
    }
}

/* Slots [lo, hi): slot j takes items [j items / slots, (j + 1) items /
 * slots), in order: (image, channel block, output block), output blocks
 * fastest, so consecutive items share their weights and the rows they
 * read. The thread pads each image it meets once, into slot lo's buffer (a
 * thread runs its slots one after another). */
PKK_AVX512 static void pkk_dc_slots(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const pkk_dc_args *a = args;
    float *pad = a->pads + (size_t)lo * a->cin * pkk_dc_plane(a->h, a->w);
    const int cblocks = (a->cout + PKK_DC_ROWS - 1) / PKK_DC_ROWS, rows = PKK_DC_OUTPUTS / a->w;
    int padded = -1;
    for (long i = lo * a->items / a->slots; i < hi * a->items / a->slots; i++) {
        const int ob = (int)(i % a->blocks), b = (int)(i / a->blocks / cblocks), cb = (int)(i / a->blocks % cblocks);
        if (b != padded) {
            pkk_dc_pad(a, b, pad);
            padded = b;
        }
        if (rows == 4) pkk_dc_block(a, pad, b, cb, 4 * ob, 4);
        else pkk_dc_block(a, pad, b, cb, 2 * ob, 2);
    }
}

/* Floats of the weights in the kernel's order, rounded up to 64 bytes
 * (the padded planes follow them). */
static size_t pkk_dc_weight_floats(int cin, int cout)
{
    return ((size_t)(cout + PKK_DC_ROWS - 1) / PKK_DC_ROWS * (size_t)cin * 9 * PKK_DC_ROWS + 15) / 16 * 16;
}

size_t pkk_conv3x3_direct_scratch_floats(int cin, int cout, int h, int w, int images)
{
    return pkk_dc_weight_floats(cin, cout) + (size_t)images * (size_t)cin * pkk_dc_plane(h, w) + 15;
}

int pkk_conv3x3_direct(const float *x, int cin, int batch, int h, int w, const float *s, const float *bias, int cout,
                       const float *residual, int relu, float *y, float *scratch, size_t scratch_floats)
{
    if (!pkk_conv3x3_direct_takes(cin, cout, batch, h, w)) return 0;
    const size_t weight_floats = pkk_dc_weight_floats(cin, cout), per_image = (size_t)cin * pkk_dc_plane(h, w);
    if (((uintptr_t)scratch & 3) != 0 || scratch_floats < pkk_conv3x3_direct_scratch_floats(cin, cout, h, w, 1)) return 0;
    const int blocks = w * h / PKK_DC_OUTPUTS, cblocks = (cout + PKK_DC_ROWS - 1) / PKK_DC_ROWS;
    const long items = (long)batch * cblocks * blocks;
    const size_t work = (size_t)items * PKK_DC_OUTPUTS * 9 * (size_t)cin; /* a quarter of the multiply-adds */
    /* One slot per thread (or as many as the scratch holds buffers for). */
    long slots = pkk_run_threads(items, work);
    const size_t fit = (scratch_floats - 15 - weight_floats) / per_image;
    if ((size_t)slots > fit) slots = (long)fit;
    /* The arrangement s[k][cb][ci][r] (taps tap_stride apart), regrouped
     * so that a block's 36 weights per input channel are adjacent. */
    float *weights = scratch + ((64 - ((uintptr_t)scratch & 63)) & 63) / sizeof(float);
    const size_t tap_stride = (size_t)cblocks * PKK_DC_ROWS * cin;
    for (int cb = 0; cb < cblocks; cb++)
        for (int ci = 0; ci < cin; ci++)
            for (int k = 0; k < 9; k++)
                for (int r = 0; r < PKK_DC_ROWS; r++)
                    weights[(((size_t)cb * cin + ci) * 9 + k) * PKK_DC_ROWS + r] =
                        s[(size_t)k * tap_stride + ((size_t)cb * cin + ci) * PKK_DC_ROWS + r];
    const pkk_dc_args a = { x, bias, residual, weights, y, weights + weight_floats, cin, cout, batch, h, w, relu,
                            items, slots, blocks };
    pkk_run(slots, work, pkk_dc_slots, &a);
    return 1;
}
