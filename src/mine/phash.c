/* phash.c - DCT perceptual hash and its near-duplicate index (see phash.h). */
#include "mine/phash.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

#define SIDE 32 /* the grey downscale */
#define LOW 8   /* lowest frequencies kept per axis */

/* Area-average weights for one axis: w[o * n + i] is the share of input
 * pixel i in output pixel o (each row sums to 1).  Dense but only n x 32. */
static void area_weights(int n, double *w) {
    double scale = (double)n / SIDE;
    for (int o = 0; o < SIDE; o++) {
        double a = o * scale, b = (o + 1) * scale;
        for (int i = 0; i < n; i++) {
            double lo = i > a ? i : a, hi = i + 1 < b ? i + 1 : b;
            w[(size_t)o * n + i] = hi > lo ? (hi - lo) / scale : 0;
        }
    }
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int ml_phash(const ml_image *img, uint64_t *out, ml_error *err) {
    int w = img->width, h = img->height;
    double *wx = malloc((size_t)SIDE * w * sizeof *wx);
    double *wy = malloc((size_t)SIDE * h * sizeof *wy);
    double *rows = calloc((size_t)h * SIDE, sizeof *rows); /* h x 32: columns resampled */
    double *row = malloc((size_t)w * sizeof *row);
    if (!wx || !wy || !rows || !row) {
        free(wx), free(wy), free(rows), free(row);
        return ml_fail(err, "out of memory");
    }
    area_weights(w, wx);
    area_weights(h, wy);
    /* Columns first: each input row to 32 values (only the nonzero weights). */
    double scale = (double)w / SIDE;
    for (int y = 0; y < h; y++) {
        const uint8_t *p = img->rgb + (size_t)y * w * 3;
        for (int x = 0; x < w; x++)
            row[x] = 0.299 * p[3 * x] + 0.587 * p[3 * x + 1] + 0.114 * p[3 * x + 2];
        for (int o = 0; o < SIDE; o++) {
            int i0 = (int)floor(o * scale), i1 = (int)ceil((o + 1) * scale);
            if (i1 > w) i1 = w;
            double s = 0;
            for (int i = i0; i < i1; i++) s += wx[(size_t)o * w + i] * row[i];
            rows[(size_t)y * SIDE + o] = s;
        }
    }
    double grey[SIDE][SIDE];
    scale = (double)h / SIDE;
    for (int o = 0; o < SIDE; o++) {
        int i0 = (int)floor(o * scale), i1 = (int)ceil((o + 1) * scale);
        if (i1 > h) i1 = h;
        for (int x = 0; x < SIDE; x++) {
            double s = 0;
            for (int i = i0; i < i1; i++) s += wy[(size_t)o * h + i] * rows[(size_t)i * SIDE + x];
            grey[o][x] = s;
        }
    }
    free(wx), free(wy), free(rows), free(row);

    double c[LOW][SIDE], tmp[LOW][SIDE], d[LOW * LOW], sorted[LOW * LOW];
    for (int k = 0; k < LOW; k++)
        for (int n = 0; n < SIDE; n++) c[k][n] = cos(M_PI * k * (2 * n + 1) / (2.0 * SIDE));
    for (int u = 0; u < LOW; u++) /* tmp = C * grey (vertical frequencies) */
        for (int x = 0; x < SIDE; x++) {
            double s = 0;
            for (int y = 0; y < SIDE; y++) s += c[u][y] * grey[y][x];
            tmp[u][x] = s;
        }
    for (int u = 0; u < LOW; u++) /* d = tmp * C^T */
        for (int v = 0; v < LOW; v++) {
            double s = 0;
            for (int x = 0; x < SIDE; x++) s += tmp[u][x] * c[v][x];
            d[u * LOW + v] = sorted[u * LOW + v] = s;
        }
    qsort(sorted, LOW * LOW, sizeof *sorted, cmp_double);
    double med = (sorted[LOW * LOW / 2 - 1] + sorted[LOW * LOW / 2]) / 2;
    uint64_t hash = 0;
    for (int i = 0; i < LOW * LOW; i++)
        if (d[i] > med) hash |= 1ull << (63 - i);
    *out = hash;
    return 0;
}

void ml_phash_hex(uint64_t h, char buf[17]) { snprintf(buf, 17, "%016llx", (unsigned long long)h); }

int ml_phash_parse(const char *s, uint64_t *out) {
    uint64_t h = 0;
    for (int i = 0; i < 16; i++) {
        char ch = s[i];
        int v = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
        if (v < 0) return -1;
        h = h << 4 | (uint64_t)v;
    }
    if (s[16]) return -1;
    *out = h;
    return 0;
}

/* ---- the index ----------------------------------------------------------- */

struct ml_phash_index {
    int d, nb;       /* distance, blocks (d + 1) */
    uint64_t *h;     /* the hashes */
    uint32_t *next;  /* next[i * nb + b]: chain of entry i in block b's table */
    uint32_t *heads; /* heads[b * nbuck + bucket] */
    size_t n, cap, nbuck;
};

#define NONE UINT32_MAX

static uint64_t block_of(const ml_phash_index *x, uint64_t h, int b) {
    int lo = b * 64 / x->nb, hi = (b + 1) * 64 / x->nb;
    uint64_t v = h >> lo;
    return hi - lo == 64 ? v : v & ((1ull << (hi - lo)) - 1);
}

static size_t bucket_of(const ml_phash_index *x, uint64_t v, int b) {
    uint64_t m = (v + (uint64_t)b * 0x632BE59BD9B4E019ull) * 0x9E3779B97F4A7C15ull;
    return (size_t)(m >> 32) & (x->nbuck - 1);
}

ml_phash_index *ml_phash_index_new(int max_distance) {
    if (max_distance < 0 || max_distance > 31) return NULL;
    ml_phash_index *x = calloc(1, sizeof *x);
    if (!x) return NULL;
    x->d = max_distance, x->nb = max_distance + 1;
    return x;
}

void ml_phash_index_free(ml_phash_index *x) {
    if (!x) return;
    free(x->h), free(x->next), free(x->heads);
    free(x);
}

size_t ml_phash_index_size(const ml_phash_index *x) { return x->n; }

static void link_entry(ml_phash_index *x, size_t i) {
    for (int b = 0; b < x->nb; b++) {
        uint32_t *head = &x->heads[(size_t)b * x->nbuck + bucket_of(x, block_of(x, x->h[i], b), b)];
        x->next[i * x->nb + b] = *head;
        *head = (uint32_t)i;
    }
}

/* Doubles the storage and the tables (the chains are rebuilt). */
static int grow(ml_phash_index *x) {
    size_t cap = x->cap ? 2 * x->cap : 256;
    if (cap >= NONE) return -1;
    uint64_t *h = realloc(x->h, cap * sizeof *h);
    if (!h) return -1;
    x->h = h;
    uint32_t *next = realloc(x->next, cap * x->nb * sizeof *next);
    if (!next) return -1;
    x->next = next;
    uint32_t *heads = malloc(cap * x->nb * sizeof *heads); /* nbuck = cap */
    if (!heads) return -1;
    free(x->heads);
    x->heads = heads, x->nbuck = cap, x->cap = cap;
    memset(heads, 0xff, cap * x->nb * sizeof *heads);
    for (size_t i = 0; i < x->n; i++) link_entry(x, i);
    return 0;
}

int ml_phash_index_add(ml_phash_index *x, uint64_t h) {
    if (x->n == x->cap && grow(x)) return -1;
    x->h[x->n] = h;
    link_entry(x, x->n++);
    return 0;
}

int ml_phash_index_near(const ml_phash_index *x, uint64_t h) {
    if (!x->n) return 0;
    for (int b = 0; b < x->nb; b++) {
        uint64_t v = block_of(x, h, b);
        uint32_t i = x->heads[(size_t)b * x->nbuck + bucket_of(x, v, b)];
        for (; i != NONE; i = x->next[(size_t)i * x->nb + b])
            if (block_of(x, x->h[i], b) == v && ml_phash_distance(x->h[i], h) <= x->d) return 1;
    }
    return 0;
}
