/* Shared by the decoders of PkgnetImageIO; not installed, not exported. */
#ifndef PKIO_INTERNAL_H
#define PKIO_INTERNAL_H

#include <stdarg.h>
#include <stdio.h>
#include "pkgnet_imageio.h"

/* The caller's message buffer plus the file being read, so every decoder
 * can say which file failed without passing both around. */
typedef struct {
    const char *path;
    char *message;
    size_t message_size;
} pkio_context;

/* Writes "<path>: <formatted text>" into the context's message; returns status. */
pkio_status pkio_fail(const pkio_context *ctx, pkio_status status, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

/* Allocates image->pixels for width x height x channels (rows packed) after
 * checking the size against PKIO_MAX_SIDE; fills the other fields. */
pkio_status pkio_alloc(const pkio_context *ctx, pkio_image *image, long width, long height, int channels);

/* OpenCV's fixed-point BGR -> grey (cv::COLOR_BGR2GRAY), so grey models see
 * the values OpenCV-based training code saw. */
static inline uint8_t pkio_grey(unsigned b, unsigned g, unsigned r) {
    return (uint8_t)((b * 1868u + g * 9617u + r * 4899u + 8192u) >> 14);
}

pkio_status pkio_read_jpeg(const pkio_context *ctx, FILE *file, int channels, pkio_image *out);
pkio_status pkio_read_png(const pkio_context *ctx, FILE *file, int channels, pkio_image *out);
pkio_status pkio_read_tiff(const pkio_context *ctx, int channels, pkio_image *out);

#endif
