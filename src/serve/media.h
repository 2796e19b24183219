/* media.h - small byte-level helpers for the server: base64, UTF-8
 * validation, image type sniffing and JPEG thumbnails. */
#ifndef ML_SERVE_MEDIA_H
#define ML_SERVE_MEDIA_H

#include <stddef.h>
#include <stdint.h>

#include "magiclens.h"

/* Strict base64 (standard alphabet, padding optional, no whitespace other
 * than none); an optional "data:...;base64," prefix is skipped.  Returns a
 * malloc'ed buffer or NULL (invalid input or out of memory). */
uint8_t *ml_base64_decode(const char *s, size_t n, size_t *out_len);
/* 1 when s[0..n) is well-formed UTF-8 (no overlongs, surrogates or NULs). */
int ml_utf8_valid(const char *s, size_t n);
/* MIME type from the first bytes (image/jpeg, image/png, image/gif,
 * image/webp), or application/octet-stream. */
const char *ml_sniff_image_type(const uint8_t *p, size_t n);
/* Shrinks img to fit side x side (box filter, aspect kept; never enlarges)
 * and encodes it as JPEG.  *out is malloc'ed.  Returns 0 or -1. */
int ml_thumbnail_jpeg(const ml_image *img, int side, uint8_t **out, size_t *out_len,
                      ml_error *err);

#endif
