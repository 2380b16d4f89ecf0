/* PNG through libpng's classic API, with the transforms OpenCV's imread
 * uses (strip 16-bit to the high byte, expand palettes and low bit depths,
 * drop alpha), so pixels match what OpenCV-based training code read. */
#include <errno.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include <png.h>

#include "pkio_internal.h"

typedef struct {
    png_structp png;
    png_infop info;
    png_bytep *rows;
    uint8_t *colour; /* BGR rows when a colour file is read as grey */
    char error[256];
} png_state;

static void on_error(png_structp png, png_const_charp text) {
    png_state *s = png_get_error_ptr(png);
    snprintf(s->error, sizeof s->error, "%s", text ? text : "unknown libpng error");
    png_longjmp(png, 1);
}

/* Warnings (odd ICC profiles, ancillary-chunk CRCs) leave the pixels intact. */
static void on_warning(png_structp png, png_const_charp text) {
    (void)png;
    (void)text;
}

static pkio_status decode(const pkio_context *ctx, png_state *s, FILE *file, int channels, pkio_image *out) {
    png_init_io(s->png, file);
    /* Frames are far below this, and it caps what a hostile header can make us allocate. */
    png_set_user_limits(s->png, PKIO_MAX_SIDE, PKIO_MAX_SIDE);
    png_read_info(s->png, s->info);

    png_uint_32 width = png_get_image_width(s->png, s->info);
    png_uint_32 height = png_get_image_height(s->png, s->info);
    int bit_depth = png_get_bit_depth(s->png, s->info);
    int colour_type = png_get_color_type(s->png, s->info);

    if (bit_depth == 16) png_set_strip_16(s->png);
    if (colour_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(s->png);
    if (colour_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(s->png);
    if (colour_type & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(s->png);
    int stored_colour = (colour_type & PNG_COLOR_MASK_COLOR) != 0; /* palette counts as colour */
    if (stored_colour) {
        png_set_bgr(s->png);
    } else if (channels == 3) {
        png_set_gray_to_rgb(s->png);
    }
    png_set_interlace_handling(s->png);
    png_read_update_info(s->png, s->info);

    int decoded_channels = stored_colour ? 3 : channels;
    if (png_get_rowbytes(s->png, s->info) != (size_t)width * (size_t)decoded_channels) {
        return pkio_fail(ctx, PKIO_UNSUPPORTED, "unexpected PNG layout (%zu bytes per row for %u pixels)",
                         (size_t)png_get_rowbytes(s->png, s->info), (unsigned)width);
    }
    pkio_status status = pkio_alloc(ctx, out, (long)width, (long)height, channels);
    if (status != PKIO_OK) return status;

    uint8_t *target = out->pixels;
    size_t target_stride = out->stride;
    if (decoded_channels != channels) { /* colour file, grey wanted */
        s->colour = malloc((size_t)width * 3 * (size_t)height);
        if (!s->colour) return pkio_fail(ctx, PKIO_OUT_OF_MEMORY, "out of memory decoding PNG");
        target = s->colour;
        target_stride = (size_t)width * 3;
    }
    s->rows = malloc(sizeof(png_bytep) * height);
    if (!s->rows) return pkio_fail(ctx, PKIO_OUT_OF_MEMORY, "out of memory decoding PNG");
    for (png_uint_32 y = 0; y < height; y++) s->rows[y] = target + (size_t)y * target_stride;
    png_read_image(s->png, s->rows);
    png_read_end(s->png, NULL); /* checks the trailing chunks' CRCs */

    if (s->colour) {
        for (png_uint_32 y = 0; y < height; y++) {
            const uint8_t *src = s->colour + (size_t)y * target_stride;
            uint8_t *dst = out->pixels + (size_t)y * out->stride;
            for (png_uint_32 x = 0; x < width; x++) dst[x] = pkio_grey(src[3 * x], src[3 * x + 1], src[3 * x + 2]);
        }
    }
    return PKIO_OK;
}

pkio_status pkio_read_png(const pkio_context *ctx, FILE *file, int channels, pkio_image *out) {
    png_state *s = calloc(1, sizeof *s);
    if (!s) return pkio_fail(ctx, PKIO_OUT_OF_MEMORY, "out of memory for the PNG decoder");
    pkio_status status;
    s->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, s, on_error, on_warning);
    s->info = s->png ? png_create_info_struct(s->png) : NULL;
    if (!s->png || !s->info) {
        status = pkio_fail(ctx, PKIO_OUT_OF_MEMORY, "cannot create the PNG decoder");
    } else if (setjmp(png_jmpbuf(s->png))) {
        status = pkio_fail(ctx, PKIO_FORMAT, "cannot decode PNG: %s", s->error);
    } else {
        status = decode(ctx, s, file, channels, out);
    }
    if (s->png) png_destroy_read_struct(&s->png, s->info ? &s->info : NULL, NULL);
    free(s->rows);
    free(s->colour);
    free(s);
    return status;
}

/* Writing goes through the simplified API: no setjmp, errors in image.message. */
static int png_format(int channels) {
    switch (channels) {
    case 1: return PNG_FORMAT_GRAY;
    case 3: return PNG_FORMAT_RGB;
    case 4: return PNG_FORMAT_RGBA;
    default: return -1;
    }
}

static pkio_status check_encode_args(const pkio_context *ctx, const uint8_t *pixels, int width, int height,
                                     int channels, size_t stride) {
    if (!pixels) return pkio_fail(ctx, PKIO_INVALID_ARGUMENT, "no pixels given");
    if (png_format(channels) < 0) {
        return pkio_fail(ctx, PKIO_INVALID_ARGUMENT, "cannot encode %d channels (1 = grey, 3 = RGB, 4 = RGBA)", channels);
    }
    if (width <= 0 || height <= 0 || width > PKIO_MAX_SIDE || height > PKIO_MAX_SIDE) {
        return pkio_fail(ctx, PKIO_INVALID_ARGUMENT, "cannot encode a %dx%d image", width, height);
    }
    if (stride < (size_t)width * (size_t)channels || stride > 0x7fffffff) {
        return pkio_fail(ctx, PKIO_INVALID_ARGUMENT, "row stride %zu does not fit %d pixels of %d channels",
                         stride, width, channels);
    }
    return PKIO_OK;
}

static pkio_status encode(const pkio_context *ctx_, const uint8_t *pixels, int width, int height, int channels,
                          size_t stride, uint8_t **png, size_t *size) {
    pkio_context ctx = *ctx_;
    if (!png || !size) return pkio_fail(&ctx, PKIO_INVALID_ARGUMENT, "no output given");
    *png = NULL;
    *size = 0;
    pkio_status status = check_encode_args(&ctx, pixels, width, height, channels, stride);
    if (status != PKIO_OK) return status;

    png_image image;
    memset(&image, 0, sizeof image);
    image.version = PNG_IMAGE_VERSION;
    image.width = (png_uint_32)width;
    image.height = (png_uint_32)height;
    image.format = (png_uint_32)png_format(channels);
    /* The stride is in components, which are bytes here. */
    png_int_32 row_stride = (png_int_32)stride;
    png_alloc_size_t needed = 0;
    if (!png_image_write_to_memory(&image, NULL, &needed, 0, pixels, row_stride, NULL)) {
        status = pkio_fail(&ctx, PKIO_FORMAT, "cannot encode PNG: %s", image.message);
        png_image_free(&image);
        return status;
    }
    uint8_t *buffer = malloc(needed ? needed : 1);
    if (!buffer) return pkio_fail(&ctx, PKIO_OUT_OF_MEMORY, "out of memory for a %zu-byte PNG", (size_t)needed);
    png_alloc_size_t written = needed;
    if (!png_image_write_to_memory(&image, buffer, &written, 0, pixels, row_stride, NULL)) {
        status = pkio_fail(&ctx, PKIO_FORMAT, "cannot encode PNG: %s", image.message);
        png_image_free(&image);
        free(buffer);
        return status;
    }
    *png = buffer;
    *size = written;
    return PKIO_OK;
}

pkio_status pkio_encode_png(const uint8_t *pixels, int width, int height, int channels, size_t stride,
                            uint8_t **png, size_t *size, char *message, size_t message_size) {
    pkio_context ctx = {"PNG image in memory", message, message_size};
    if (message && message_size > 0) message[0] = '\0';
    return encode(&ctx, pixels, width, height, channels, stride, png, size);
}

pkio_status pkio_write_png(const char *path, const uint8_t *pixels, int width, int height, int channels,
                           size_t stride, char *message, size_t message_size) {
    pkio_context ctx = {path, message, message_size};
    if (message && message_size > 0) message[0] = '\0';
    if (!path) return pkio_fail(&ctx, PKIO_INVALID_ARGUMENT, "no path given");
    uint8_t *png = NULL;
    size_t size = 0;
    pkio_status status = encode(&ctx, pixels, width, height, channels, stride, &png, &size);
    if (status != PKIO_OK) return status;
    FILE *file = fopen(path, "wb");
    if (!file) {
        pkio_free(png);
        return pkio_fail(&ctx, PKIO_IO, "cannot create file: %s", strerror(errno));
    }
    size_t done = fwrite(png, 1, size, file);
    int failed = done != size;
    int err = errno;
    if (fclose(file) != 0 && !failed) {
        failed = 1;
        err = errno;
    }
    pkio_free(png);
    if (failed) return pkio_fail(&ctx, PKIO_IO, "cannot write file: %s", strerror(err));
    return PKIO_OK;
}
