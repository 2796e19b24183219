/* media.c - see media.h. */
#include "serve/media.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

#include "core/error.h"

static int b64_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

uint8_t *ml_base64_decode(const char *s, size_t n, size_t *out_len) {
    /* Browsers hand out data URLs; accept them as they are. */
    if (n > 5 && !memcmp(s, "data:", 5)) {
        const char *c = memchr(s, ',', n);
        if (!c || c - s < 7 || memcmp(c - 7, ";base64", 7) != 0) return NULL;
        n -= (size_t)(c + 1 - s), s = c + 1;
    }
    while (n && s[n - 1] == '=') n--;
    if (n % 4 == 1) return NULL;
    uint8_t *out = malloc(n / 4 * 3 + 3);
    if (!out) return NULL;
    size_t o = 0;
    uint32_t acc = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64_value((unsigned char)s[i]);
        if (v < 0) return free(out), NULL;
        acc = acc << 6 | (uint32_t)v;
        if (i % 4 == 3) out[o++] = (uint8_t)(acc >> 16), out[o++] = (uint8_t)(acc >> 8),
                        out[o++] = (uint8_t)acc, acc = 0;
    }
    if (n % 4 == 2) out[o++] = (uint8_t)(acc >> 4);
    if (n % 4 == 3) out[o++] = (uint8_t)(acc >> 10), out[o++] = (uint8_t)(acc >> 2);
    *out_len = o;
    return out;
}

int ml_utf8_valid(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!len || c == 0 || i + (size_t)len > n) return 0;
        uint32_t cp = len == 1 ? c : c & (0x7Fu >> len);
        for (int k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        i += (size_t)len;
    }
    return 1;
}

const char *ml_sniff_image_type(const uint8_t *p, size_t n) {
    if (n >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) return "image/jpeg";
    if (n >= 8 && !memcmp(p, "\x89PNG\r\n\x1a\n", 8)) return "image/png";
    if (n >= 6 && (!memcmp(p, "GIF87a", 6) || !memcmp(p, "GIF89a", 6))) return "image/gif";
    if (n >= 12 && !memcmp(p, "RIFF", 4) && !memcmp(p + 8, "WEBP", 4)) return "image/webp";
    return "application/octet-stream";
}

/* Box filter: each output pixel averages the source rectangle it covers. */
static uint8_t *shrink(const ml_image *img, int w, int h) {
    uint8_t *out = malloc((size_t)w * h * 3);
    if (!out) return NULL;
    for (int y = 0; y < h; y++) {
        int y0 = (int)((long long)y * img->height / h), y1 = (int)((long long)(y + 1) * img->height / h);
        if (y1 <= y0) y1 = y0 + 1;
        for (int x = 0; x < w; x++) {
            int x0 = (int)((long long)x * img->width / w), x1 = (int)((long long)(x + 1) * img->width / w);
            if (x1 <= x0) x1 = x0 + 1;
            unsigned long long acc[3] = {0, 0, 0}, cnt = (unsigned long long)(y1 - y0) * (x1 - x0);
            for (int yy = y0; yy < y1; yy++) {
                const uint8_t *row = img->rgb + ((size_t)yy * img->width + x0) * 3;
                for (int xx = 0; xx < x1 - x0; xx++)
                    acc[0] += row[3 * xx], acc[1] += row[3 * xx + 1], acc[2] += row[3 * xx + 2];
            }
            for (int c = 0; c < 3; c++) out[((size_t)y * w + x) * 3 + c] = (uint8_t)((acc[c] + cnt / 2) / cnt);
        }
    }
    return out;
}

typedef struct jerr {
    struct jpeg_error_mgr mgr;
    jmp_buf jb;
} jerr;

/* libjpeg's default error handler calls exit(); jump back instead. */
static void on_jpeg_error(j_common_ptr c) { longjmp(((jerr *)c->err)->jb, 1); }

static int encode_jpeg(const uint8_t *rgb, int w, int h, uint8_t **out, size_t *out_len) {
    struct jpeg_compress_struct c;
    jerr je;
    unsigned char *mem = NULL;
    unsigned long mlen = 0;
    c.err = jpeg_std_error(&je.mgr);
    je.mgr.error_exit = on_jpeg_error;
    if (setjmp(je.jb)) {
        jpeg_destroy_compress(&c);
        free(mem);
        return -1;
    }
    jpeg_create_compress(&c);
    jpeg_mem_dest(&c, &mem, &mlen);
    c.image_width = (JDIMENSION)w, c.image_height = (JDIMENSION)h;
    c.input_components = 3, c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 85, TRUE);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(rgb + (size_t)c.next_scanline * w * 3);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    *out = mem, *out_len = mlen;
    return 0;
}

int ml_thumbnail_jpeg(const ml_image *img, int side, uint8_t **out, size_t *out_len,
                      ml_error *err) {
    int w = img->width, h = img->height;
    if (w > side || h > side) {
        if (w >= h) h = (int)((long long)h * side / w), w = side;
        else w = (int)((long long)w * side / h), h = side;
        if (w < 1) w = 1;
        if (h < 1) h = 1;
    }
    uint8_t *small = (w == img->width && h == img->height) ? img->rgb : shrink(img, w, h);
    if (!small) return ml_fail(err, "out of memory");
    int rc = encode_jpeg(small, w, h, out, out_len);
    if (small != img->rgb) free(small);
    return rc == 0 ? 0 : ml_fail(err, "JPEG encoding failed");
}
