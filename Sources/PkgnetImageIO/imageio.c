/* File handling and dispatch of PkgnetImageIO: which decoder, and the
 * checks every decoder shares (file exists and is a regular file, size). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <stdio.h> /* jpeglib.h needs FILE declared first */
#include <jpeglib.h>
#include <png.h>
#include <tiffio.h>

#include "pkio_internal.h"

pkio_status pkio_fail(const pkio_context *ctx, pkio_status status, const char *format, ...) {
    if (ctx->message && ctx->message_size > 0) {
        int used = snprintf(ctx->message, ctx->message_size, "%s: ", ctx->path ? ctx->path : "(image)");
        if (used >= 0 && (size_t)used < ctx->message_size) {
            va_list args;
            va_start(args, format);
            vsnprintf(ctx->message + used, ctx->message_size - (size_t)used, format, args);
            va_end(args);
        }
    }
    return status;
}

pkio_status pkio_alloc(const pkio_context *ctx, pkio_image *image, long width, long height, int channels) {
    if (width <= 0 || height <= 0) {
        return pkio_fail(ctx, PKIO_FORMAT, "image has no pixels (%ldx%ld)", width, height);
    }
    if (width > PKIO_MAX_SIDE || height > PKIO_MAX_SIDE) {
        return pkio_fail(ctx, PKIO_UNSUPPORTED, "image is %ldx%ld; pkgnet reads at most %dx%d",
                         width, height, PKIO_MAX_SIDE, PKIO_MAX_SIDE);
    }
    size_t stride = (size_t)width * (size_t)channels;
    image->pixels = malloc(stride * (size_t)height);
    if (!image->pixels) {
        return pkio_fail(ctx, PKIO_OUT_OF_MEMORY, "out of memory for a %ldx%ld image", width, height);
    }
    image->width = (int)width;
    image->height = (int)height;
    image->channels = channels;
    image->stride = stride;
    return PKIO_OK;
}

pkio_kind pkio_detect(const uint8_t *head, size_t size) {
    if (!head) return PKIO_KIND_UNKNOWN;
    if (size >= 3 && head[0] == 0xFF && head[1] == 0xD8 && head[2] == 0xFF) return PKIO_KIND_JPEG;
    static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
    if (size >= 8 && memcmp(head, png_magic, 8) == 0) return PKIO_KIND_PNG;
    /* Classic TIFF (42) and BigTIFF (43), either byte order. */
    if (size >= 4 && ((head[0] == 'I' && head[1] == 'I' && (head[2] == 42 || head[2] == 43) && head[3] == 0) ||
                      (head[0] == 'M' && head[1] == 'M' && head[2] == 0 && (head[3] == 42 || head[3] == 43)))) {
        return PKIO_KIND_TIFF;
    }
    return PKIO_KIND_UNKNOWN;
}

pkio_status pkio_read(const char *path, int channels, pkio_image *out, char *message, size_t message_size) {
    pkio_context ctx = {path, message, message_size};
    if (message && message_size > 0) message[0] = '\0';
    if (!out) return pkio_fail(&ctx, PKIO_INVALID_ARGUMENT, "no output image given");
    memset(out, 0, sizeof *out);
    if (!path) return pkio_fail(&ctx, PKIO_INVALID_ARGUMENT, "no path given");
    if (channels != 1 && channels != 3) {
        return pkio_fail(&ctx, PKIO_INVALID_ARGUMENT, "cannot decode to %d channels (1 = grey, 3 = BGR)", channels);
    }

    FILE *file = fopen(path, "rb");
    if (!file) return pkio_fail(&ctx, PKIO_IO, "cannot open image: %s", strerror(errno));
    struct stat info;
    if (fstat(fileno(file), &info) != 0) {
        int err = errno;
        fclose(file);
        return pkio_fail(&ctx, PKIO_IO, "cannot stat image: %s", strerror(err));
    }
    if (!S_ISREG(info.st_mode)) {
        fclose(file);
        return pkio_fail(&ctx, PKIO_IO, "not a regular file");
    }
    uint8_t head[8];
    size_t got = fread(head, 1, sizeof head, file);
    if (ferror(file)) {
        int err = errno;
        fclose(file);
        return pkio_fail(&ctx, PKIO_IO, "cannot read image: %s", strerror(err));
    }
    if (got == 0) {
        fclose(file);
        return pkio_fail(&ctx, PKIO_FORMAT, "image file is empty");
    }
    rewind(file);

    pkio_status status;
    switch (pkio_detect(head, got)) {
    case PKIO_KIND_JPEG:
        status = pkio_read_jpeg(&ctx, file, channels, out);
        fclose(file);
        break;
    case PKIO_KIND_PNG:
        status = pkio_read_png(&ctx, file, channels, out);
        fclose(file);
        break;
    case PKIO_KIND_TIFF:
        fclose(file); /* libtiff opens the path itself */
        status = pkio_read_tiff(&ctx, channels, out);
        break;
    default:
        fclose(file);
        status = pkio_fail(&ctx, PKIO_FORMAT, "not a JPEG, PNG or TIFF image (unknown signature)");
    }
    if (status != PKIO_OK) pkio_image_free(out);
    return status;
}

void pkio_image_free(pkio_image *image) {
    if (!image) return;
    free(image->pixels);
    memset(image, 0, sizeof *image);
}

void pkio_free(void *memory) { free(memory); }

#define PKIO_STR2(x) #x
#define PKIO_STR(x) PKIO_STR2(x)

static char versions[256];
static pthread_once_t versions_once = PTHREAD_ONCE_INIT;

static void make_versions(void) {
    /* TIFFGetVersion() is "LIBTIFF, Version X.Y.Z\nCopyright...": keep X.Y.Z. */
    char tiff[32] = "?";
    const char *v = strstr(TIFFGetVersion(), "Version ");
    if (v) {
        v += 8;
        size_t n = strcspn(v, "\n ");
        if (n >= sizeof tiff) n = sizeof tiff - 1;
        memcpy(tiff, v, n);
        tiff[n] = '\0';
    }
#ifdef LIBJPEG_TURBO_VERSION
    const char *jpeg = "libjpeg-turbo " PKIO_STR(LIBJPEG_TURBO_VERSION);
#else
    const char *jpeg = "libjpeg " PKIO_STR(JPEG_LIB_VERSION);
#endif
    snprintf(versions, sizeof versions, "%s, libpng %s, libtiff %s", jpeg, png_get_libpng_ver(NULL), tiff);
}

const char *pkio_versions(void) {
    pthread_once(&versions_once, make_versions);
    return versions;
}
