/* TIFF through libtiff's RGBA interface, which handles every photometric
 * interpretation, bit depth, tiling and orientation libtiff knows; the first
 * directory (page) is the image. Errors go to a per-open handler
 * (TIFFOpenOptions, libtiff >= 4.5) so that threads do not share one message. */
#include <stdlib.h>
#include <string.h>

#include <tiffio.h>

#include "pkio_internal.h"

typedef struct {
    char error[256];
    int errors;
} tiff_errors;

static int on_error(TIFF *tif, void *user, const char *module, const char *format, va_list args) {
    (void)tif;
    (void)module;
    tiff_errors *errors = user;
    if (errors && errors->errors++ == 0) vsnprintf(errors->error, sizeof errors->error, format, args);
    return 1; /* handled: nothing on stderr */
}

/* Unknown tags and similar are harmless for reading pixels. */
static int on_warning(TIFF *tif, void *user, const char *module, const char *format, va_list args) {
    (void)tif;
    (void)user;
    (void)module;
    (void)format;
    (void)args;
    return 1;
}

pkio_status pkio_read_tiff(const pkio_context *ctx, int channels, pkio_image *out) {
    tiff_errors errors = {{0}, 0};
    TIFFOpenOptions *options = TIFFOpenOptionsAlloc();
    if (!options) return pkio_fail(ctx, PKIO_OUT_OF_MEMORY, "out of memory for the TIFF decoder");
    TIFFOpenOptionsSetErrorHandlerExtR(options, on_error, &errors);
    TIFFOpenOptionsSetWarningHandlerExtR(options, on_warning, NULL);
    TIFF *tif = TIFFOpenExt(ctx->path, "r", options);
    TIFFOpenOptionsFree(options);
    if (!tif) return pkio_fail(ctx, PKIO_FORMAT, "cannot open TIFF: %s", errors.errors ? errors.error : "unknown error");

    pkio_status status = PKIO_OK;
    uint32_t *raster = NULL;
    uint32_t width = 0, height = 0;
    char why[1024] = "";
    if (!TIFFGetField(tif, TIFFTAG_IMAGEWIDTH, &width) || !TIFFGetField(tif, TIFFTAG_IMAGELENGTH, &height)) {
        status = pkio_fail(ctx, PKIO_FORMAT, "TIFF has no image size");
    } else if (width == 0 || height == 0 || width > PKIO_MAX_SIDE || height > PKIO_MAX_SIDE) {
        status = pkio_fail(ctx, width && height ? PKIO_UNSUPPORTED : PKIO_FORMAT,
                           "TIFF image is %ux%u; pkgnet reads 1 to %d pixels per side", width, height, PKIO_MAX_SIDE);
    } else if (!TIFFRGBAImageOK(tif, why)) {
        status = pkio_fail(ctx, PKIO_UNSUPPORTED, "TIFF layout not supported: %s", why);
    } else if (!(raster = _TIFFmalloc((tmsize_t)width * height * sizeof(uint32_t)))) {
        status = pkio_fail(ctx, PKIO_OUT_OF_MEMORY, "out of memory for a %ux%u TIFF", width, height);
    } else if (!TIFFReadRGBAImageOriented(tif, width, height, raster, ORIENTATION_TOPLEFT, 1) || errors.errors) {
        /* stop_on_error = 1: a truncated strip fails instead of leaving holes. */
        status = pkio_fail(ctx, PKIO_FORMAT, "cannot decode TIFF: %s", errors.errors ? errors.error : "read failed");
    } else if ((status = pkio_alloc(ctx, out, width, height, channels)) == PKIO_OK) {
        for (uint32_t y = 0; y < height; y++) {
            const uint32_t *src = raster + (size_t)y * width;
            uint8_t *dst = out->pixels + (size_t)y * out->stride;
            for (uint32_t x = 0; x < width; x++) {
                unsigned r = TIFFGetR(src[x]), g = TIFFGetG(src[x]), b = TIFFGetB(src[x]);
                if (channels == 1) {
                    dst[x] = pkio_grey(b, g, r); /* exact for grey files: the weights sum to 1 */
                } else {
                    dst[3 * x] = (uint8_t)b;
                    dst[3 * x + 1] = (uint8_t)g;
                    dst[3 * x + 2] = (uint8_t)r;
                }
            }
        }
    }
    if (raster) _TIFFfree(raster);
    TIFFClose(tif);
    return status;
}
