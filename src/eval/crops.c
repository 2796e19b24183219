/* crops.c - GeneCIS attribute-task crops (see bench.h, ml_eval_make_crop).
 *
 * The attribute tasks compare object instances, not whole images: every
 * reference, target and gallery entry is a Visual Genome image plus a box.
 * GeneCIS's evaluation cuts each box out with a dilation of 0.7 (applied, as
 * its code does, to the left and top edges: right = left + 1.7 w) and pads
 * the crop to a square with black.  The crop is written as a PNG (lossless)
 * so that the ordinary indexer then embeds it like any other image. */
#include <errno.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "eval/bench.h"

#define DILATION 0.7

/* Python's round() on a float: half to even, which is what nearbyint does
 * in the default rounding mode. */
static long round_half_even(double v) { return (long)nearbyint(v); }

int ml_eval_crop_image(const ml_image *im, const double box[4], ml_image *out, ml_error *err) {
    memset(out, 0, sizeof *out);
    for (int i = 0; i < 4; i++)
        if (!isfinite(box[i]) || fabs(box[i]) > 1e7)
            return ml_fail(err, "bad box [%g, %g, %g, %g]", box[0], box[1], box[2], box[3]);
    double W = im->width, H = im->height, w = box[2], h = box[3];
    /* The same operations, in the same order, as load_cropped_image. */
    double left = box[0] - DILATION * w, top = box[1] - DILATION * h;
    if (left < 0) left = 0;
    if (top < 0) top = 0;
    double right = left + (1 + DILATION) * w, bottom = top + (1 + DILATION) * h;
    if (right > W) right = W;
    if (bottom > H) bottom = H;
    long x0 = round_half_even(left), y0 = round_half_even(top);
    long x1 = round_half_even(right), y1 = round_half_even(bottom);
    if (x1 <= x0 || y1 <= y0 || x0 >= im->width || y0 >= im->height)
        return ml_fail(err, "box [%g, %g, %g, %g] is empty in a %dx%d image", box[0], box[1],
                       box[2], box[3], im->width, im->height);
    long cw = x1 - x0, ch = y1 - y0, side = cw > ch ? cw : ch;
    /* expand2square: the crop pasted at ((side - cw) / 2, (side - ch) / 2)
     * on black; only one of the two offsets is non-zero. */
    long ox = cw < side ? (side - cw) / 2 : 0, oy = ch < side ? (side - ch) / 2 : 0;
    uint8_t *rgb = calloc((size_t)side * (size_t)side * 3, 1);
    if (!rgb) return ml_fail(err, "out of memory");
    for (long y = 0; y < ch; y++)
        memcpy(rgb + ((size_t)(y + oy) * (size_t)side + (size_t)ox) * 3,
               im->rgb + ((size_t)(y + y0) * (size_t)im->width + (size_t)x0) * 3,
               (size_t)cw * 3);
    out->width = (int)side, out->height = (int)side, out->rgb = rgb;
    return 0;
}

static int write_png(const ml_image *im, FILE *f, ml_error *err) {
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, info ? &info : NULL);
        return ml_fail(err, "out of memory");
    }
    png_bytep *rows = malloc((size_t)im->height * sizeof *rows);
    if (!rows || setjmp(png_jmpbuf(png))) {
        free(rows);
        png_destroy_write_struct(&png, &info);
        return ml_fail(err, "PNG encoding failed");
    }
    png_init_io(png, f);
    png_set_compression_level(png, 1);
    png_set_IHDR(png, info, (png_uint_32)im->width, (png_uint_32)im->height, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    for (int y = 0; y < im->height; y++) rows[y] = im->rgb + (size_t)y * (size_t)im->width * 3;
    png_set_rows(png, info, rows);
    png_write_png(png, info, PNG_TRANSFORM_IDENTITY, NULL);
    free(rows);
    png_destroy_write_struct(&png, &info);
    return 0;
}

int ml_eval_make_crop(const char *src, const double box[4], const char *dst, ml_error *err) {
    ml_image im, crop;
    if (ml_image_load(src, 0, &im, err) != 0) return -1;
    int rc = ml_eval_crop_image(&im, box, &crop, err);
    ml_image_free(&im);
    if (rc != 0) return ml_fail_prefix(err, "%s", src);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp%ld", dst, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) rc = ml_fail(err, "%s: %s", tmp, strerror(errno));
    if (rc == 0) {
        rc = write_png(&crop, f, err);
        if (fclose(f) != 0 && rc == 0) rc = ml_fail(err, "%s: write failed", tmp);
        if (rc == 0 && rename(tmp, dst) != 0) rc = ml_fail(err, "%s: %s", dst, strerror(errno));
        if (rc != 0) remove(tmp);
    }
    ml_image_free(&crop);
    return rc;
}
