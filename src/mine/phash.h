/* phash.h - 64-bit perceptual hash (DCT pHash) and a near-duplicate index.
 *
 * The hash of an RGB image:
 *   1. grey = 0.299 R + 0.587 G + 0.114 B (float, 0..255);
 *   2. area-average resample to 32x32 (each output pixel is the exact mean of
 *      the input area it covers, fractional pixels weighted by overlap);
 *   3. 2-D DCT-II (unnormalised: sum x[n] cos(pi k (2n+1) / 64)) of the 32x32,
 *      keeping the 8x8 lowest frequencies (DC included, as imagehash does);
 *   4. bit i (i = 8 u + v, row-major over the 8x8) is set when coefficient
 *      (u, v) is above the median of the 64 (mean of the two middle values);
 *      bit i is bit (63 - i) of the uint64, so the hex string reads in order.
 * Resizing, re-encoding and mild colour changes move a few bits; different
 * pictures differ in about half of them.  tests/reference/img_server.py has
 * the same definition in numpy. */
#ifndef ML_MINE_PHASH_H
#define ML_MINE_PHASH_H

#include <stddef.h>
#include <stdint.h>

#include "magiclens.h"

/* The hash of `img` (at least 1x1).  -1 only when out of memory. */
int ml_phash(const ml_image *img, uint64_t *out, ml_error *err);

static inline int ml_phash_distance(uint64_t a, uint64_t b) { return __builtin_popcountll(a ^ b); }

/* "%016llx" into buf[17]. */
void ml_phash_hex(uint64_t h, char buf[17]);
/* Parses 16 hex digits; -1 when it is not one. */
int ml_phash_parse(const char *s, uint64_t *out);

/* Hashes with a Hamming-distance query, by multi-index hashing: the 64 bits
 * are cut into max_distance + 1 blocks, and two hashes within the distance
 * agree exactly on at least one block (pigeonhole), so a query looks only
 * at the entries sharing one of its blocks. */
typedef struct ml_phash_index ml_phash_index;

/* max_distance in [0, 31]. */
ml_phash_index *ml_phash_index_new(int max_distance);
void ml_phash_index_free(ml_phash_index *x);
int ml_phash_index_add(ml_phash_index *x, uint64_t h); /* -1: out of memory */
/* 1 when some added hash is within max_distance of h. */
int ml_phash_index_near(const ml_phash_index *x, uint64_t h);
size_t ml_phash_index_size(const ml_phash_index *x);

#endif
