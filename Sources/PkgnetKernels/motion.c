/*
 * Motion proposals: blurred frame differences, thresholded, and the
 * bounding boxes of the external foreground components.
 *
 * Gaussian blur: OpenCV computes 8-bit GaussianBlur bit-exactly in fixed
 * point (GaussianBlurFixedPoint). For sigma 0 and ksize <= 7 its kernel is the
 * fixed table small_gaussian_tab, whose weights are multiples of 1/256 and so
 * exact in its 8.8 fixed point; the separable sum is then an exact dyadic
 * number rounded half up to uint8. Here: integer weights w[] summing to 2^s
 * per axis, a horizontal pass into exact integer sums, a vertical pass, and
 * (sum + 2^(2s-1)) >> 2s. Border: BORDER_REFLECT_101 (OpenCV's default).
 */
#include "pkk_video.h"
#include "pkk_internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_K 7

typedef struct {
    int k, radius, shift; /* shift: log2 of the weight sum of one axis */
    int w[MAX_K];
} blur_kernel;

static int blur_kernel_of(int ksize, blur_kernel *b)
{
    static const int k1[] = {1};
    static const int k3[] = {1, 2, 1};
    static const int k5[] = {1, 4, 6, 4, 1};
    static const int k7[] = {8, 28, 56, 72, 56, 28, 8}; /* OpenCV's 7-tap table in 1/256 */
    const int *w;
    switch (ksize) {
    case 1: w = k1; b->shift = 0; break;
    case 3: w = k3; b->shift = 2; break;
    case 5: w = k5; b->shift = 4; break;
    case 7: w = k7; b->shift = 8; break;
    default:
        pkk_set_errorf("Gaussian blur kernel size %d is not supported (1, 3, 5 or 7)", ksize);
        return -1;
    }
    b->k = ksize;
    b->radius = ksize / 2;
    memcpy(b->w, w, sizeof(int) * (size_t)ksize);
    return 0;
}

/* OpenCV borderInterpolate for BORDER_REFLECT_101 (gfedcb|abcdefgh|gfedcba),
 * including its repeated reflection for tiny images. */
static int reflect101(int p, int n)
{
    if (n == 1) return 0;
    while (p < 0 || p >= n) {
        if (p < 0) p = -p;
        else p = 2 * (n - 1) - p;
    }
    return p;
}

/*
 * Horizontal pass of one source row: out[x*c + ch] = sum_d w[d] * row[refl(x+d-r)][ch],
 * exact. The sums fit 16 bits (at most 255 * 256 for ksize 7). `pad` is scratch
 * for (width + 2r) * c bytes: the row with reflected borders, so the inner loops
 * are plain vectorisable runs.
 */
static void blur_row_h(const uint8_t *row, int width, int c, const blur_kernel *b,
                       uint8_t *pad, uint16_t *out)
{
    const int r = b->radius, wc = width * c;
    memcpy(pad + (size_t)r * c, row, (size_t)wc);
    for (int i = 1; i <= r; i++) {
        const int left = reflect101(-i, width), right = reflect101(width - 1 + i, width);
        memcpy(pad + (size_t)(r - i) * c, row + (size_t)left * c, (size_t)c);
        memcpy(pad + (size_t)(r + width - 1 + i) * c, row + (size_t)right * c, (size_t)c);
    }
    {
        const uint16_t w = (uint16_t)b->w[0];
        for (int x = 0; x < wc; x++) out[x] = (uint16_t)(w * pad[x]);
    }
    for (int d = 1; d < b->k; d++) {
        const uint16_t w = (uint16_t)b->w[d];
        const uint8_t *p = pad + (size_t)d * c;
        for (int x = 0; x < wc; x++) out[x] = (uint16_t)(out[x] + w * p[x]);
    }
}

/* Vertical pass: rows[d] are the horizontal sums of source row refl(y+d-r);
 * acc is scratch for wc sums. */
static void blur_row_v(const uint16_t *const rows[MAX_K], int wc, const blur_kernel *b,
                       uint32_t *acc, uint8_t *out)
{
    const int shift = 2 * b->shift;
    const uint32_t half = shift > 0 ? 1u << (shift - 1) : 0;
    {
        const uint32_t w = (uint32_t)b->w[0];
        const uint16_t *r = rows[0];
        for (int x = 0; x < wc; x++) acc[x] = w * r[x] + half;
    }
    for (int d = 1; d < b->k; d++) {
        const uint32_t w = (uint32_t)b->w[d];
        const uint16_t *r = rows[d];
        for (int x = 0; x < wc; x++) acc[x] += w * r[x];
    }
    /* Weights sum to 2^shift, so the sum is below 256 * 2^shift: the result fits uint8. */
    for (int x = 0; x < wc; x++) out[x] = (uint8_t)(acc[x] >> shift);
}

/*
 * Per-thread cache of horizontal sums: slot (src_row % k) holds row tag[slot].
 * The rows an output row y needs are refl(y-r..y+r), all within [y-r, y+r]
 * (reflection never moves a row farther from y), so they are distinct mod k
 * and consecutive output rows reuse k-1 of them.
 */
typedef struct {
    uint16_t *sums; /* [k][wc] */
    int tag[MAX_K];
} row_cache;

static const uint16_t *cached_row(row_cache *cache, const uint8_t *img, size_t stride, int src_row,
                                  int width, int c, const blur_kernel *b, uint8_t *pad)
{
    const int slot = src_row % b->k;
    uint16_t *sums = cache->sums + (size_t)slot * width * c;
    if (cache->tag[slot] != src_row) {
        blur_row_h(img + (size_t)src_row * stride, width, c, b, pad, sums);
        cache->tag[slot] = src_row;
    }
    return sums;
}

/* Per-thread scratch for `images` images of wc = width*c bytes per row: the
 * row caches, the vertical accumulator, the padded row, `images` blurred rows
 * and one row of flags. Each part starts 64-byte aligned. */
typedef struct {
    size_t sums, acc, pad, out, flags, total; /* offsets, and the size */
} scratch_layout;

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

static scratch_layout layout_for(int width, int c, const blur_kernel *b, int images)
{
    scratch_layout l;
    const size_t wc = (size_t)width * c;
    l.sums = 0;
    l.acc = l.sums + align64((size_t)images * b->k * wc * sizeof(uint16_t));
    l.pad = l.acc + align64(wc * sizeof(uint32_t));
    l.out = l.pad + align64(((size_t)width + 2 * (size_t)b->radius) * c);
    l.flags = l.out + align64((size_t)images * wc);
    l.total = l.flags + align64(wc);
    return l;
}

/* Scratch for `threads` threads (64-byte aligned), or NULL with the error slot set. */
static unsigned char *scratch_for(const scratch_layout *l, int threads, const char *what)
{
    const size_t bytes = l->total * (size_t)threads;
    unsigned char *p = aligned_alloc(64, bytes);
    if (!p) pkk_set_errorf("out of memory: %s scratch of %zu bytes", what, bytes);
    return p;
}

/* ---- plain blur (also what the tests check for exactness) ---- */

typedef struct {
    const uint8_t *src;
    size_t src_stride;
    uint8_t *dst;
    size_t dst_stride;
    int width, height, c;
    blur_kernel b;
    unsigned char *scratch;
    scratch_layout layout;
} blur_args;

static void blur_range(long lo, long hi, int thread, const void *args)
{
    const blur_args *a = args;
    unsigned char *mem = a->scratch + (size_t)thread * a->layout.total;
    row_cache cache = {.sums = (uint16_t *)(mem + a->layout.sums)};
    for (int i = 0; i < MAX_K; i++) cache.tag[i] = -1;
    uint32_t *acc = (uint32_t *)(mem + a->layout.acc);
    uint8_t *pad = mem + a->layout.pad;
    const uint16_t *rows[MAX_K];
    for (long y = lo; y < hi; y++) {
        for (int d = 0; d < a->b.k; d++) {
            const int sr = reflect101((int)y + d - a->b.radius, a->height);
            rows[d] = cached_row(&cache, a->src, a->src_stride, sr, a->width, a->c, &a->b, pad);
        }
        blur_row_v(rows, a->width * a->c, &a->b, acc, a->dst + (size_t)y * a->dst_stride);
    }
}

int pkk_gaussian_blur_u8(const uint8_t *src, size_t src_stride, int width, int height,
                         int channels, int ksize, uint8_t *dst, size_t dst_stride)
{
    blur_args a = {.src = src, .src_stride = src_stride, .dst = dst, .dst_stride = dst_stride,
                   .width = width, .height = height, .c = channels};
    if (blur_kernel_of(ksize, &a.b) != 0) return -1;
    if (width <= 0 || height <= 0) return 0;
    a.layout = layout_for(width, channels, &a.b, 1);
    const size_t work = (size_t)width * height * channels * (size_t)(2 * ksize);
    a.scratch = scratch_for(&a.layout, pkk_run_threads(height, work), "blur");
    if (!a.scratch) return -1;
    pkk_run(height, work, blur_range, &a);
    free(a.scratch);
    return 0;
}

/* ---- motion mask ---- */

typedef struct {
    const uint8_t *const *frames;
    const size_t *strides;
    uint8_t *mask;
    int width, height, c, threshold;
    blur_kernel b;
    unsigned char *scratch;
    scratch_layout layout;
} mask_args;

static void mask_range(long lo, long hi, int thread, const void *args)
{
    const mask_args *a = args;
    const int wc = a->width * a->c, c = a->c;
    unsigned char *mem = a->scratch + (size_t)thread * a->layout.total;
    row_cache cache[3];
    for (int f = 0; f < 3; f++) {
        cache[f].sums = (uint16_t *)(mem + a->layout.sums) + (size_t)f * a->b.k * wc;
        for (int i = 0; i < MAX_K; i++) cache[f].tag[i] = -1;
    }
    uint32_t *acc = (uint32_t *)(mem + a->layout.acc);
    uint8_t *pad = mem + a->layout.pad;
    uint8_t *blurred = mem + a->layout.out; /* [3][wc] */
    uint8_t *over = mem + a->layout.flags;  /* [wc] */
    const uint16_t *rows[MAX_K];
    const int threshold = a->threshold;
    for (long y = lo; y < hi; y++) {
        for (int f = 0; f < 3; f++) {
            for (int d = 0; d < a->b.k; d++) {
                const int sr = reflect101((int)y + d - a->b.radius, a->height);
                rows[d] = cached_row(&cache[f], a->frames[f], a->strides[f], sr, a->width, c, &a->b, pad);
            }
            blur_row_v(rows, wc, &a->b, acc, blurred + (size_t)f * wc);
        }
        const uint8_t *b0 = blurred, *b1 = blurred + wc, *b2 = blurred + 2 * (size_t)wc;
        for (int i = 0; i < wc; i++) {
            /* The published code sums the two uint8 absdiffs in uint8 and so
             * wraps above 255 (a sum of 260 becomes 4, background). pkgnet
             * keeps the sum in int (0..510): no wrap, large motion stays
             * foreground. cv2.threshold THRESH_BINARY: value > thresh is
             * foreground. */
            const int d0 = b0[i] > b1[i] ? b0[i] - b1[i] : b1[i] - b0[i];
            const int d1 = b1[i] > b2[i] ? b1[i] - b2[i] : b2[i] - b1[i];
            over[i] = (uint8_t)(d0 + d1 > threshold);
        }
        /* A pixel of the grey mask is foreground iff any channel is (BGR2GRAY
         * of a 0/255 image is nonzero iff some channel is nonzero). */
        uint8_t *m = a->mask + (size_t)y * a->width;
        if (c == 1) {
            memcpy(m, over, (size_t)a->width);
        } else {
            for (int x = 0; x < a->width; x++) m[x] = over[3 * x] | over[3 * x + 1] | over[3 * x + 2];
        }
    }
}

int pkk_motion_mask(const uint8_t *const frames[3], const size_t strides[3],
                    int width, int height, int channels, int ksize, int threshold,
                    const int32_t *rects, long n_rects, uint8_t *mask)
{
    mask_args a = {.frames = frames, .strides = strides, .mask = mask, .width = width,
                   .height = height, .c = channels, .threshold = threshold};
    if (blur_kernel_of(ksize, &a.b) != 0) return -1;
    if (width <= 0 || height <= 0) return 0;
    a.layout = layout_for(width, channels, &a.b, 3);
    const size_t work = (size_t)width * height * channels * (size_t)(6 * ksize);
    a.scratch = scratch_for(&a.layout, pkk_run_threads(height, work), "motion");
    if (!a.scratch) return -1;
    pkk_run(height, work, mask_range, &a);
    free(a.scratch);

    /* Detector boxes: their (grown, clipped) area is not motion to propose. */
    for (long i = 0; i < n_rects; i++) {
        const int32_t *r = rects + 4 * i;
        if (r[2] < r[0] || r[3] < r[1]) continue;
        for (int y = r[1]; y <= r[3]; y++) memset(mask + (size_t)y * width + r[0], 0, (size_t)(r[2] - r[0] + 1));
    }
    return 0;
}

/* ---- external components ---- */

/* Union-find with path halving; the root is the smallest index of the set,
 * which keeps roots in raster order of first pixels. */
static int32_t uf_find(int32_t *parent, int32_t i)
{
    while (parent[i] != i) {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    return i;
}

static void uf_union(int32_t *parent, int32_t a, int32_t b)
{
    a = uf_find(parent, a);
    b = uf_find(parent, b);
    if (a < b) parent[b] = a;
    else if (b < a) parent[a] = b;
}

typedef struct {
    int32_t xmin, ymin, xmax, ymax;
    int external;
} component;

/* A horizontal run of equal mask values: columns start..end (inclusive) of row y. */
typedef struct {
    int32_t start, end, y, fg;
} run;

/* A growable array of fixed-size items. */
typedef struct {
    void *items;
    size_t count, capacity, size;
} vec;

static void *vec_push(vec *v)
{
    if (v->count == v->capacity) {
        const size_t grown = v->capacity ? 2 * v->capacity : 1024;
        void *more = realloc(v->items, grown * v->size);
        if (!more) return NULL;
        v->items = more;
        v->capacity = grown;
    }
    return (char *)v->items + v->size * v->count++;
}

/*
 * Suzuki-Abe (what cv2.findContours implements) treats foreground as
 * 8-connected and background as 4-connected. The outer border of a component
 * separates it from the one background component around it; any other
 * background component touching it is one of its own holes. So a component is
 * external (its outer border's parent is the frame) iff it touches, 4-adjacently,
 * the background component of the outside: the image is padded with background
 * (cv2.findContours adds a 1-pixel zero border), so that component holds every
 * background pixel 4-connected to the image edge, and a foreground pixel on
 * the edge touches it directly.
 *
 * Labelling works on runs (a motion mask is mostly background, so there are
 * few): union-find over the runs plus one node for the outside. Runs of the
 * same value in consecutive rows join when their columns overlap (foreground
 * also diagonally: columns within one of each other); background runs on the
 * image edge join the outside. Foreground/background runs that touch
 * (side by side in a row, or overlapping columns in consecutive rows) are
 * recorded as pairs, to mark a foreground component external once the
 * background components are known.
 */
int pkk_external_components(const uint8_t *mask, int width, int height,
                            int32_t **rects_out, long *count_out)
{
    *rects_out = NULL;
    *count_out = 0;
    if (width <= 0 || height <= 0) return 0;
    int status = -1;
    vec runs = {.size = sizeof(run)}, pairs = {.size = 2 * sizeof(int32_t)}, comps = {.size = sizeof(component)};
    int32_t *parent = NULL, *index_of = NULL;
    size_t *row_first = malloc(sizeof(size_t) * ((size_t)height + 1));
    if (!row_first) goto out_of_memory;

    for (int y = 0; y < height; y++) {
        const uint8_t *row = mask + (size_t)y * width;
        row_first[y] = runs.count;
        int x = 0;
        while (x < width) {
            const int fg = row[x] != 0;
            int e = x;
            while (e + 1 < width && (row[e + 1] != 0) == fg) e++;
            run *r = vec_push(&runs);
            if (!r) goto out_of_memory;
            *r = (run){x, e, y, fg};
            x = e + 1;
        }
    }
    row_first[height] = runs.count;
    if (runs.count >= INT32_MAX) {
        pkk_set_errorf("motion mask of %dx%d pixels has too many runs to label", width, height);
        goto fail;
    }
    const int32_t n = (int32_t)runs.count, outside = n;
    const run *rs = runs.items;
    parent = malloc(sizeof(int32_t) * ((size_t)n + 1));
    index_of = malloc(sizeof(int32_t) * ((size_t)n + 1));
    if (!parent || !index_of) goto out_of_memory;
    for (int32_t i = 0; i <= n; i++) parent[i] = i;

#define PAIR(f, b)                                   \
    do {                                             \
        int32_t *p_ = vec_push(&pairs);              \
        if (!p_) goto out_of_memory;                 \
        p_[0] = (f);                                 \
        p_[1] = (b);                                 \
    } while (0)

    for (int y = 0; y < height; y++) {
        const int32_t lo = (int32_t)row_first[y], hi = (int32_t)row_first[y + 1];
        for (int32_t i = lo; i < hi; i++) {
            const run *a = &rs[i];
            if (!a->fg && (y == 0 || y == height - 1 || a->start == 0 || a->end == width - 1))
                uf_union(parent, i, outside);
            /* Side by side in the row: runs alternate, so a and i-1 differ. */
            if (i > lo) PAIR(a->fg ? i : i - 1, a->fg ? i - 1 : i);
        }
        if (y == 0) continue;
        const int32_t plo = (int32_t)row_first[y - 1], phi = (int32_t)row_first[y];
        int32_t j = plo;
        for (int32_t i = lo; i < hi; i++) {
            const run *a = &rs[i];
            while (j < phi && rs[j].end < a->start - 1) j++;
            for (int32_t k = j; k < phi && rs[k].start <= a->end + 1; k++) {
                const run *b = &rs[k];
                const int overlap = b->start <= a->end && b->end >= a->start;
                if (a->fg && b->fg) {
                    uf_union(parent, i, k); /* 8-connected: diagonal contact counts */
                } else if (overlap) {
                    if (!a->fg && !b->fg) uf_union(parent, i, k);
                    else PAIR(a->fg ? i : k, a->fg ? k : i);
                }
            }
        }
    }
#undef PAIR

    /* Parents point to smaller indices (the outside node, the largest index,
     * only ever points down), so one pass in index order leaves every run
     * pointing at its root. */
    for (int32_t i = 0; i < n; i++) parent[i] = parent[parent[i]];
    const int32_t outer_bg = uf_find(parent, outside);

    /* Components numbered in raster order of their roots: a root is the
     * smallest run index of its set, the run holding its first pixel. */
    for (int32_t i = 0; i < n; i++) {
        const run *a = &rs[i];
        if (!a->fg) continue;
        const int32_t root = parent[i];
        if (root == i) {
            component *c = vec_push(&comps);
            if (!c) goto out_of_memory;
            *c = (component){a->start, a->y, a->end, a->y, 0};
            index_of[i] = (int32_t)(comps.count - 1);
        }
        component *c = (component *)comps.items + index_of[root];
        if (a->start < c->xmin) c->xmin = a->start;
        if (a->end > c->xmax) c->xmax = a->end;
        c->ymax = a->y;
        if (a->y == 0 || a->y == height - 1 || a->start == 0 || a->end == width - 1) c->external = 1;
    }
    const int32_t *pp = pairs.items;
    for (size_t p = 0; p < pairs.count; p++) {
        if (parent[pp[2 * p + 1]] == outer_bg)
            ((component *)comps.items)[index_of[parent[pp[2 * p]]]].external = 1;
    }

    long external = 0;
    const component *cs = comps.items;
    for (size_t k = 0; k < comps.count; k++) external += cs[k].external;
    if (external > 0) {
        int32_t *rects = malloc(sizeof(int32_t) * 4 * (size_t)external);
        if (!rects) goto out_of_memory;
        long j = 0;
        for (size_t k = 0; k < comps.count; k++) {
            if (!cs[k].external) continue;
            rects[4 * j + 0] = cs[k].xmin;
            rects[4 * j + 1] = cs[k].ymin;
            rects[4 * j + 2] = cs[k].xmax - cs[k].xmin + 1;
            rects[4 * j + 3] = cs[k].ymax - cs[k].ymin + 1;
            j++;
        }
        *rects_out = rects;
    }
    *count_out = external;
    status = 0;
    goto done;

out_of_memory:
    pkk_set_errorf("out of memory labelling the motion components of a %dx%d mask", width, height);
fail:
done:
    free(row_first);
    free(runs.items);
    free(pairs.items);
    free(comps.items);
    free(parent);
    free(index_of);
    return status;
}
