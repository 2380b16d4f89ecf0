/* PkgnetImageIO: image files for the pkgnet command-line tool.
 *
 * Decodes JPEG (libjpeg-turbo), PNG (libpng) and TIFF (libtiff) files into
 * 8-bit grey or BGR buffers, and encodes PNG (report images). It is kept out
 * of the core library on purpose: libpkgnet.so takes raw frames and must not
 * pull in image codecs; only the CLI links this.
 *
 * Every call is thread-safe (no global error state): failures come back as a
 * status plus a message, written into the caller's buffer, naming the file.
 */
#ifndef PKGNET_IMAGEIO_H
#define PKGNET_IMAGEIO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    PKIO_OK = 0,
    PKIO_INVALID_ARGUMENT = 1, /* bad call: null pointer, unsupported channel count */
    PKIO_IO = 2,               /* cannot open or read the file */
    PKIO_FORMAT = 3,           /* not an image we know, or corrupt / truncated data */
    PKIO_UNSUPPORTED = 4,      /* a valid file of a kind we do not decode */
    PKIO_OUT_OF_MEMORY = 5,
} pkio_status;

/* The longest side accepted, so that width * height * channels always fits. */
#define PKIO_MAX_SIDE 32768

/* A decoded image: rows of `stride` bytes, the first width * channels used.
 * channels 1 = grey, 3 = B, G, R (OpenCV's order). Free with pkio_image_free. */
typedef struct {
    uint8_t *pixels;
    int width;
    int height;
    int channels;
    size_t stride;
} pkio_image;

typedef enum { PKIO_KIND_UNKNOWN = 0, PKIO_KIND_JPEG = 1, PKIO_KIND_PNG = 2, PKIO_KIND_TIFF = 3 } pkio_kind;

/* The kind of image a file holds, from its first bytes (never its name). */
pkio_kind pkio_detect(const uint8_t *head, size_t size);

/* Reads the image file at `path` as `channels` (1 = grey, 3 = BGR) 8-bit
 * samples, whatever the file stores: colour becomes grey with OpenCV's
 * weights (JPEG: the luma the codec decodes), grey is repeated, alpha is
 * dropped, 16-bit samples keep their high byte. Corrupt or truncated data is
 * an error (PKIO_FORMAT), including what libjpeg only warns about.
 * On success *out owns a malloc'd buffer; on failure *out is zeroed and
 * `message` (if not NULL) holds a sentence naming the file. */
pkio_status pkio_read(const char *path, int channels, pkio_image *out,
                      char *message, size_t message_size);

void pkio_image_free(pkio_image *image);

/* Encodes 8-bit pixels (channels 1 = grey, 3 = RGB, 4 = RGBA; rows of
 * `stride` bytes) as PNG into a malloc'd buffer. On success *png and *size
 * hold it (free with pkio_free). */
pkio_status pkio_encode_png(const uint8_t *pixels, int width, int height, int channels,
                            size_t stride, uint8_t **png, size_t *size,
                            char *message, size_t message_size);

/* The same, written to a file. */
pkio_status pkio_write_png(const char *path, const uint8_t *pixels, int width, int height,
                           int channels, size_t stride, char *message, size_t message_size);

void pkio_free(void *memory);

/* Library versions, for `pkgnet --version` style reports. */
const char *pkio_versions(void);

#ifdef __cplusplus
}
#endif

#endif
