/* JPEG through libjpeg(-turbo). libjpeg reports fatal errors by calling
 * error_exit, which must not return: we longjmp back with the message. Its
 * corrupt-data warnings (truncated file, bad Huffman code...) still produce
 * an image, grey-filled where data is missing; a video frame like that would
 * give meaningless scores, so any warning fails the read. */
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include <stdio.h> /* jpeglib.h needs FILE declared first */
#include <jpeglib.h>

#include "pkio_internal.h"

typedef struct {
    struct jpeg_error_mgr base; /* first: libjpeg hands us a pointer to it */
    jmp_buf jump;
    char error[JMSG_LENGTH_MAX];
    char warning[JMSG_LENGTH_MAX];
    int warnings;
} jpeg_errors;

static void on_error(j_common_ptr cinfo) {
    jpeg_errors *errors = (jpeg_errors *)cinfo->err;
    errors->base.format_message(cinfo, errors->error);
    longjmp(errors->jump, 1);
}

static void on_message(j_common_ptr cinfo, int level) {
    if (level >= 0) return; /* trace messages */
    jpeg_errors *errors = (jpeg_errors *)cinfo->err;
    if (errors->warnings++ == 0) errors->base.format_message(cinfo, errors->warning);
}

/* Outside the function that calls setjmp, so nothing it changes after
 * setjmp lives in a register the longjmp would restore stale. */
typedef struct {
    struct jpeg_decompress_struct cinfo;
    jpeg_errors errors;
    uint8_t *row; /* CMYK scratch row */
} jpeg_state;

static pkio_status decode(const pkio_context *ctx, jpeg_state *s, FILE *file, int channels, pkio_image *out) {
    struct jpeg_decompress_struct *cinfo = &s->cinfo;
    jpeg_stdio_src(cinfo, file);
    jpeg_read_header(cinfo, TRUE);

    int cmyk = cinfo->jpeg_color_space == JCS_CMYK || cinfo->jpeg_color_space == JCS_YCCK;
    if (cmyk) {
        cinfo->out_color_space = JCS_CMYK; /* converted below, as OpenCV does */
    } else if (channels == 1) {
        cinfo->out_color_space = JCS_GRAYSCALE; /* YCbCr: the decoded Y, like cv::IMREAD_GRAYSCALE */
    } else {
        cinfo->out_color_space = JCS_EXT_BGR;
    }
    jpeg_start_decompress(cinfo);
    pkio_status status = pkio_alloc(ctx, out, (long)cinfo->output_width, (long)cinfo->output_height, channels);
    if (status != PKIO_OK) return status;

    if (cmyk) {
        s->row = malloc((size_t)cinfo->output_width * 4);
        if (!s->row) return pkio_fail(ctx, PKIO_OUT_OF_MEMORY, "out of memory decoding a CMYK JPEG");
    }
    while (cinfo->output_scanline < cinfo->output_height) {
        uint8_t *dst = out->pixels + (size_t)cinfo->output_scanline * out->stride;
        JSAMPROW rows[1] = {cmyk ? s->row : dst};
        if (jpeg_read_scanlines(cinfo, rows, 1) != 1) {
            return pkio_fail(ctx, PKIO_FORMAT, "JPEG data ends early at row %u", cinfo->output_scanline);
        }
        if (cmyk) {
            /* Adobe's CMYK JPEGs store inverted inks: then R = C * K / 255. */
            int inverted = cinfo->saw_Adobe_marker;
            for (unsigned x = 0; x < cinfo->output_width; x++) {
                unsigned c = s->row[4 * x], m = s->row[4 * x + 1], y = s->row[4 * x + 2], k = s->row[4 * x + 3];
                if (!inverted) { c = 255 - c; m = 255 - m; y = 255 - y; k = 255 - k; }
                unsigned r = (c * k + 127) / 255, g = (m * k + 127) / 255, b = (y * k + 127) / 255;
                if (channels == 1) {
                    dst[x] = pkio_grey(b, g, r);
                } else {
                    dst[3 * x] = (uint8_t)b;
                    dst[3 * x + 1] = (uint8_t)g;
                    dst[3 * x + 2] = (uint8_t)r;
                }
            }
        }
    }
    jpeg_finish_decompress(cinfo);
    if (s->errors.warnings > 0) {
        return pkio_fail(ctx, PKIO_FORMAT, "corrupt JPEG data: %s", s->errors.warning);
    }
    return PKIO_OK;
}

pkio_status pkio_read_jpeg(const pkio_context *ctx, FILE *file, int channels, pkio_image *out) {
    jpeg_state *s = calloc(1, sizeof *s);
    if (!s) return pkio_fail(ctx, PKIO_OUT_OF_MEMORY, "out of memory for the JPEG decoder");
    s->cinfo.err = jpeg_std_error(&s->errors.base);
    s->errors.base.error_exit = on_error;
    s->errors.base.emit_message = on_message;

    pkio_status status;
    if (setjmp(s->errors.jump)) {
        status = pkio_fail(ctx, PKIO_FORMAT, "cannot decode JPEG: %s", s->errors.error);
    } else {
        jpeg_create_decompress(&s->cinfo);
        status = decode(ctx, s, file, channels, out);
    }
    jpeg_destroy_decompress(&s->cinfo);
    free(s->row);
    free(s);
    return status;
}
