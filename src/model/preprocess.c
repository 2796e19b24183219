/* preprocess.c - the MagicLens input pipeline (model-spec section 2).
 *
 * jax.image.resize(method="bilinear", antialias=True) is a separable
 * resampling (jax/_src/image/scale.py, compute_weight_mat): for an axis going
 * from n_in to n_out, s = n_out/n_in, kernel scale ks = max(1/s, 1), output j
 * samples at c = (j + 0.5)/s - 0.5 with tent weights max(0, 1 - |c - i|/ks)
 * over every input index i (no edge clamping: weights falling outside the
 * input are simply absent), divided by their sum.  jax also zeroes a column
 * whose weight sum is <= 1000 * FLT_EPSILON and samples outside
 * [-0.5, n_in - 0.5]; neither happens for a plain resize, but both rules are
 * kept.  Axes whose length does not change are skipped (jax does the same,
 * and the weights would be the identity anyway).  Everything is computed in
 * double and stored as float at the end. */
#include "model/preprocess.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/mem.h"

static const double CLIP_MEAN[3] = {0.48145466, 0.4578275, 0.40821073};
static const double CLIP_STD[3] = {0.26862954, 0.26130258, 0.27577711};

/* Resampling weights of one axis: output j uses inputs first[j] ..
 * first[j]+count[j]-1 with weights w[j*stride ..]. */
typedef struct axis_w {
    int n_out, stride;
    int *first, *count;
    double *w;
} axis_w;

static void axis_free(axis_w *a) {
    free(a->first);
    free(a->count);
    free(a->w);
    memset(a, 0, sizeof *a);
}

static void axis_sample(axis_w *a, int j, int n_in, double s, double ks) {
    double c = (j + 0.5) / s - 0.5;
    int lo = (int)ceil(c - ks), hi = (int)floor(c + ks);
    if (lo < 0) lo = 0;
    if (hi > n_in - 1) hi = n_in - 1;
    double *w = a->w + (size_t)j * a->stride, sum = 0;
    int n = hi >= lo ? hi - lo + 1 : 0;
    for (int t = 0; t < n; t++) {
        double v = 1.0 - fabs(c - (lo + t)) / ks;
        w[t] = v > 0 ? v : 0;
        sum += w[t];
    }
    /* jax: near-zero weight sums and out-of-range samples give 0. */
    if (sum <= 1000.0 * FLT_EPSILON || c < -0.5 || c > n_in - 0.5) n = 0;
    for (int t = 0; t < n; t++) w[t] /= sum;
    a->first[j] = lo;
    a->count[j] = n;
}

static int axis_init(axis_w *a, int n_in, int n_out, ml_error *err) {
    memset(a, 0, sizeof *a);
    double s = (double)n_out / n_in, ks = fmax(1.0 / s, 1.0);
    a->n_out = n_out;
    a->stride = (int)(2 * ks) + 2; /* the tent covers at most 2*ks + 1 indices */
    if (a->stride > n_in) a->stride = n_in;
    a->first = ml_malloc(sizeof(int) * (size_t)n_out, err);
    a->count = a->first ? ml_malloc(sizeof(int) * (size_t)n_out, err) : NULL;
    a->w = a->count ? ml_malloc(sizeof(double) * (size_t)n_out * (size_t)a->stride, err) : NULL;
    if (!a->w) {
        axis_free(a);
        return -1;
    }
    for (int j = 0; j < n_out; j++) axis_sample(a, j, n_in, s, ks);
    return 0;
}

/* An h x w x 3 image read either as bytes through a lookup table (the
 * max-normalised input, never widened as a whole) or as doubles. */
typedef struct src_img {
    int h, w;
    const uint8_t *u8;
    const double *lut;
    const double *f;
} src_img;

/* dst[0..n) += coef * src[off .. off+n) */
static void axpy_row(double *dst, const src_img *s, size_t off, size_t n, double coef) {
    if (s->u8) {
        const uint8_t *p = s->u8 + off;
        for (size_t k = 0; k < n; k++) dst[k] += coef * s->lut[p[k]];
    } else {
        const double *p = s->f + off;
        for (size_t k = 0; k < n; k++) dst[k] += coef * p[k];
    }
}

/* Resamples the rows (height axis): dst is a->n_out x w x 3. */
static void pass_vertical(const src_img *s, const axis_w *a, double *dst) {
    size_t row = (size_t)s->w * 3;
    for (int j = 0; j < a->n_out; j++) {
        double *d = dst + (size_t)j * row;
        memset(d, 0, row * sizeof *d);
        const double *w = a->w + (size_t)j * a->stride;
        for (int t = 0; t < a->count[j]; t++)
            axpy_row(d, s, (size_t)(a->first[j] + t) * row, row, w[t]);
    }
}

/* Resamples the columns (width axis): dst is h x a->n_out x 3.  `tmp` holds
 * one source row widened to double. */
static void pass_horizontal(const src_img *s, const axis_w *a, double *dst, double *tmp) {
    size_t row = (size_t)s->w * 3;
    for (int y = 0; y < s->h; y++) {
        const double *r = s->f ? s->f + (size_t)y * row : tmp;
        if (s->u8)
            for (size_t k = 0; k < row; k++) tmp[k] = s->lut[s->u8[(size_t)y * row + k]];
        double *d = dst + (size_t)y * a->n_out * 3;
        for (int j = 0; j < a->n_out; j++) {
            const double *w = a->w + (size_t)j * a->stride;
            const double *p = r + (size_t)a->first[j] * 3;
            double acc[3] = {0, 0, 0};
            for (int t = 0; t < a->count[j]; t++)
                for (int c = 0; c < 3; c++) acc[c] += w[t] * p[3 * t + c];
            memcpy(d + 3 * j, acc, sizeof acc);
        }
    }
}

static void copy_src(const src_img *s, double *dst) {
    size_t n = (size_t)s->h * s->w * 3;
    for (size_t k = 0; k < n; k++) dst[k] = s->u8 ? s->lut[s->u8[k]] : s->f[k];
}

/* One pass on each axis that changes, in the cheaper order; `ah`/`aw` are the
 * weights of the height and width axes. */
static int resize_passes(const src_img *s, const axis_w *ah, const axis_w *aw, double *dst,
                         ml_error *err) {
    int oh = ah->n_out, ow = aw->n_out;
    double *tmp = ml_malloc(sizeof(double) * (size_t)s->w * 3, err);
    if (!tmp) return -1;
    int rc = 0;
    if (oh == s->h && ow == s->w) {
        copy_src(s, dst);
    } else if (oh == s->h) {
        pass_horizontal(s, aw, dst, tmp);
    } else if (ow == s->w) {
        pass_vertical(s, ah, dst);
    } else {
        /* Work ~ outputs x taps of each pass; the first pass dominates. */
        double v_first = (double)oh * s->w * ah->stride + (double)oh * ow * aw->stride;
        double h_first = (double)s->h * ow * aw->stride + (double)oh * ow * ah->stride;
        int vf = v_first <= h_first;
        size_t mid_n = vf ? (size_t)oh * s->w * 3 : (size_t)s->h * ow * 3;
        double *mid = ml_malloc(sizeof(double) * mid_n, err);
        if (!mid) {
            rc = -1;
        } else if (vf) {
            pass_vertical(s, ah, mid);
            src_img m = {oh, s->w, NULL, NULL, mid};
            pass_horizontal(&m, aw, dst, tmp);
        } else {
            pass_horizontal(s, aw, mid, tmp);
            src_img m = {s->h, ow, NULL, NULL, mid};
            pass_vertical(&m, ah, dst);
        }
        free(mid);
    }
    free(tmp);
    return rc;
}

/* jax.image.resize(x, (oh, ow), "bilinear", antialias=True) into dst. */
static int resize(const src_img *s, int oh, int ow, double *dst, ml_error *err) {
    axis_w ah, aw;
    if (axis_init(&ah, s->h, oh, err) != 0) return -1;
    if (axis_init(&aw, s->w, ow, err) != 0) {
        axis_free(&ah);
        return -1;
    }
    int rc = resize_passes(s, &ah, &aw, dst, err);
    axis_free(&ah);
    axis_free(&aw);
    return rc;
}

/* x / (max + 1e-12) for every byte value: the max-normalisation as a table. */
static void normalise_lut(const ml_image *img, double lut[256]) {
    size_t n = (size_t)img->width * img->height * 3;
    uint8_t mx = 0;
    for (size_t k = 0; k < n; k++)
        if (img->rgb[k] > mx) mx = img->rgb[k];
    for (int v = 0; v < 256; v++) lut[v] = v / (mx + 1e-12);
}

int ml_preprocess_image(const ml_image *img, int size, float *out, ml_error *err) {
    if (!img || !img->rgb || img->width <= 0 || img->height <= 0)
        return ml_fail(err, "preprocess: empty image");
    if (size < 1 || size > 8192) return ml_fail(err, "preprocess: bad input size %d", size);
    const int base = ML_PREPROCESS_BASE;
    double lut[256];
    normalise_lut(img, lut);
    double *x = ml_malloc(sizeof(double) * base * base * 3, err);
    double *y = x ? ml_malloc(sizeof(double) * (size_t)size * size * 3, err) : NULL;
    int rc = -1;
    src_img s = {img->height, img->width, img->rgb, lut, NULL};
    if (y && resize(&s, base, base, x, err) == 0) {
        /* The model's largest centred square crop is a no-op on base x base. */
        src_img m = {base, base, NULL, NULL, x};
        rc = resize(&m, size, size, y, err);
    }
    if (rc == 0) {
        size_t n = (size_t)size * size;
        for (size_t k = 0; k < n; k++)
            for (int c = 0; c < 3; c++)
                out[3 * k + c] = (float)((y[3 * k + c] - CLIP_MEAN[c]) / CLIP_STD[c]);
    }
    free(x);
    free(y);
    return rc;
}
