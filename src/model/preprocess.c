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
 * and the weights would be the identity anyway).
 *
 * How it is computed (the cost is about 0.3 ms per 640x480 image on one
 * core, next to about 1.3 ms of JPEG decoding):
 * - The weights of each axis are computed in double, normalised, then stored
 *   as float (only the taps inside the tent: about 2 * ks of them).
 * - The max-normalisation x / (max + 1e-12) is a scale, and resizing is
 *   linear, so the image is resized in its own units (0..255, exact in
 *   float) and the scale is applied at the end together with the CLIP
 *   mean/std, in double.
 * - Resampling accumulates in float32: one pass per axis, in the cheaper
 *   order.  The pass along the height reads whole source rows (the bytes,
 *   widened on the fly) and vectorises over the row; the pass along the
 *   width does one RGB pixel per 4-float step.  AVX2 / AVX-512 versions of
 *   the passes (preprocess_tmpl.h) are chosen by ml_isa_active().
 * Against the float64 reference this adds float32 rounding of the weights
 * and of the sums (a few 1e-7 relative), below 1e-6 absolute on the
 * normalised output. */
#include "model/preprocess.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/mem.h"
#include "kernels/cpu.h"
#include "model/preprocess_isa.h"

#define PRE_NAME scalar
#include "model/preprocess_tmpl.h"

static const double CLIP_MEAN[3] = {0.48145466, 0.4578275, 0.40821073};
static const double CLIP_STD[3] = {0.26862954, 0.26130258, 0.27577711};

static const ml_pre_kernels *active_kernels(void) {
#if defined(__x86_64__)
    ml_isa isa = ml_isa_active();
    if (isa == ML_ISA_AVX512 || isa == ML_ISA_AMX) return &ml_pre_avx512;
    if (isa == ML_ISA_AVX2) return &ml_pre_avx2;
#endif
#if defined(__aarch64__)
    if (ml_isa_active() >= ML_ISA_NEON) return &ml_pre_neon;
#endif
    return &ml_pre_scalar;
}

static void axis_free(ml_pre_axis *a) {
    free(a->first);
    free(a->count);
    free(a->w);
    memset(a, 0, sizeof *a);
}

/* The weights of output j, computed and normalised in double. */
static void axis_sample(ml_pre_axis *a, int j, double s, double ks, double *wd) {
    int n_in = a->n_in;
    double c = (j + 0.5) / s - 0.5;
    int lo = (int)ceil(c - ks), hi = (int)floor(c + ks);
    if (lo < 0) lo = 0;
    if (hi > n_in - 1) hi = n_in - 1;
    double sum = 0;
    int n = hi >= lo ? hi - lo + 1 : 0;
    for (int t = 0; t < n; t++) {
        double v = 1.0 - fabs(c - (lo + t)) / ks;
        wd[t] = v > 0 ? v : 0;
        sum += wd[t];
    }
    /* jax: near-zero weight sums and out-of-range samples give 0. */
    if (sum <= 1000.0 * FLT_EPSILON || c < -0.5 || c > n_in - 0.5) n = 0;
    float *w = a->w + (size_t)j * a->stride;
    /* Rounded to float, the weights no longer sum to 1 exactly (up to
     * n/2 ulp off, a bias on every output); the largest one takes the
     * remainder so that the float weights sum to 1 as nearly as they can. */
    double fsum = 0;
    int big = 0;
    for (int t = 0; t < n; t++) {
        w[t] = (float)(wd[t] / sum);
        fsum += w[t];
        if (w[t] > w[big]) big = t;
    }
    if (n > 0) w[big] = (float)(w[big] + (1.0 - fsum));
    a->first[j] = lo;
    a->count[j] = n;
}

/* Every output takes the same number of taps (the most any takes): the
 * window is moved left at the far end and the extra weights are 0, which
 * leaves every sum bit-identical and the width pass's tap loop a fixed
 * count (a varying count costs a mispredicted branch per pixel). */
static void axis_uniform(ml_pre_axis *a) {
    int taps = 0;
    for (int j = 0; j < a->n_out; j++) taps = a->count[j] > taps ? a->count[j] : taps;
    for (int j = 0; j < a->n_out; j++) {
        if (a->count[j] == 0) continue; /* jax's zero column: nothing read */
        float *w = a->w + (size_t)j * a->stride;
        int shift = a->first[j] + taps - a->n_in;
        if (shift > 0) {
            memmove(w + shift, w, sizeof(float) * (size_t)a->count[j]);
            memset(w, 0, sizeof(float) * (size_t)shift);
            a->first[j] -= shift;
        }
        a->count[j] = taps;
    }
}

static int axis_init(ml_pre_axis *a, int n_in, int n_out, int uniform, ml_error *err) {
    memset(a, 0, sizeof *a);
    double s = (double)n_out / n_in, ks = fmax(1.0 / s, 1.0);
    a->n_in = n_in;
    a->n_out = n_out;
    a->stride = (int)(2 * ks) + 2; /* the tent covers at most 2*ks + 1 indices */
    if (a->stride > n_in) a->stride = n_in;
    a->first = ml_malloc(sizeof(int) * (size_t)n_out, err);
    a->count = a->first ? ml_malloc(sizeof(int) * (size_t)n_out, err) : NULL;
    a->w = a->count ? ml_calloc((size_t)n_out * (size_t)a->stride, sizeof(float), err) : NULL;
    double *wd = a->w ? ml_malloc(sizeof(double) * (size_t)a->stride, err) : NULL;
    if (!wd) {
        axis_free(a);
        return -1;
    }
    for (int j = 0; j < n_out; j++) axis_sample(a, j, s, ks, wd);
    free(wd);
    if (uniform) axis_uniform(a);
    return 0;
}

static double axis_taps(const ml_pre_axis *a) {
    double n = 0;
    for (int j = 0; j < a->n_out; j++) n += a->count[j];
    return n;
}

/* An h x w x 3 image: the decoded bytes or floats.  A float image has one
 * readable float after its last pixel (hrows reads 4 floats per pixel). */
typedef struct src_img {
    int h, w;
    const uint8_t *u8;
    const float *f;
} src_img;

/* Rows the width pass handles at a time (the SIMD kernels' row block). */
#define HROWS 4

/* Scratch of one resize: the source rows of one output row (vertical
 * pass), HROWS source rows widened from bytes, and the intermediate rows
 * between the two passes. */
typedef struct resize_buf {
    const uint8_t **pu;
    const float **pf;
    float *tmp, *mid;
} resize_buf;

/* Output row j of the pass along the height into d. */
static void vert_row(const ml_pre_kernels *K, const src_img *s, const ml_pre_axis *a, int j,
                     resize_buf *b, float *d) {
    size_t row = (size_t)s->w * 3;
    int n = a->count[j];
    const float *w = a->w + (size_t)j * a->stride;
    for (int t = 0; t < n; t++) {
        size_t off = (size_t)(a->first[j] + t) * row;
        if (s->u8)
            b->pu[t] = s->u8 + off;
        else
            b->pf[t] = s->f + off;
    }
    if (s->u8)
        K->vrow_u8(b->pu, n, w, row, d);
    else
        K->vrow_f32(b->pf, n, w, row, d);
}

/* Source rows [y, y + r) (r <= HROWS) through the pass along the width
 * into d (rows dp floats apart). */
static void horiz_rows(const ml_pre_kernels *K, const src_img *s, const ml_pre_axis *a, int y,
                       int r, resize_buf *b, float *d, size_t dp) {
    size_t row = (size_t)s->w * 3;
    if (s->f) {
        K->hrows(s->f + (size_t)y * row, row, r, a, d, dp);
        return;
    }
    const uint8_t *p = s->u8 + (size_t)y * row;
    for (size_t k = 0; k < (size_t)r * row; k++) b->tmp[k] = p[k];
    b->tmp[(size_t)r * row] = 0;
    K->hrows(b->tmp, row, r, a, d, dp);
}

/* Height pass first, HROWS output rows at a time through `mid`. */
static void resize_v_first(const ml_pre_kernels *K, const src_img *s, const ml_pre_axis *ah,
                           const ml_pre_axis *aw, resize_buf *b, float *dst) {
    size_t row = (size_t)s->w * 3, orow = (size_t)aw->n_out * 3;
    for (int j0 = 0; j0 < ah->n_out; j0 += HROWS) {
        int r = ah->n_out - j0 < HROWS ? ah->n_out - j0 : HROWS;
        for (int i = 0; i < r; i++) vert_row(K, s, ah, j0 + i, b, b->mid + (size_t)i * row);
        b->mid[(size_t)r * row] = 0;
        src_img m = {r, s->w, NULL, b->mid};
        horiz_rows(K, &m, aw, 0, r, b, dst + (size_t)j0 * orow, orow);
    }
}

/* Width pass first: source rows go through it HROWS at a time into a ring
 * of `ring` rows (a multiple of HROWS, > ah->stride + HROWS - 2, so that a
 * new block never overwrites a row the current output row still needs:
 * first[] never decreases). */
static void resize_h_first(const ml_pre_kernels *K, const src_img *s, const ml_pre_axis *ah,
                           const ml_pre_axis *aw, int ring, resize_buf *b, float *dst) {
    size_t orow = (size_t)aw->n_out * 3;
    int have = 0; /* source rows done: [0, have) */
    for (int j = 0; j < ah->n_out; j++) {
        int n = ah->count[j], need = ah->first[j] + n;
        for (; n > 0 && have < need; have += HROWS) {
            int r = s->h - have < HROWS ? s->h - have : HROWS;
            horiz_rows(K, s, aw, have, r, b, b->mid + (size_t)(have % ring) * orow, orow);
        }
        for (int t = 0; t < n; t++) b->pf[t] = b->mid + (size_t)((ah->first[j] + t) % ring) * orow;
        K->vrow_f32(b->pf, n, ah->w + (size_t)j * ah->stride, orow, dst + (size_t)j * orow);
    }
}

/* One pass on each axis that changes, in the cheaper order. */
static int resize_passes(const ml_pre_kernels *K, const src_img *s, const ml_pre_axis *ah,
                         const ml_pre_axis *aw, float *dst, ml_error *err) {
    int oh = ah->n_out, ow = aw->n_out;
    size_t row = (size_t)s->w * 3, orow = (size_t)ow * 3;
    /* Cost in multiply-adds, a width tap counting one 4-float step and
     * a height tap one float (several per vector, no shuffling); the
     * width pass on bytes also widens each row first. */
    double th = axis_taps(ah), tw = axis_taps(aw);
    double v_first = th * s->w * 3 / 4.0 + (double)oh * tw * 2;
    double h_first = (double)s->h * tw * 2 + th * ow * 3 / 4.0 +
                     (s->u8 ? (double)s->h * s->w * 3 / 8.0 : 0);
    int vf = v_first <= h_first;
    int ring = (ah->stride + HROWS - 2) / HROWS * HROWS + HROWS;
    resize_buf b = {0};
    b.pu = ml_malloc(sizeof *b.pu * (size_t)ah->stride, err);
    b.pf = b.pu ? ml_malloc(sizeof *b.pf * (size_t)ah->stride, err) : NULL;
    b.tmp = b.pf ? ml_malloc(sizeof(float) * (row * HROWS + 1), err) : NULL;
    b.mid = b.tmp ? ml_malloc(sizeof(float) * (vf ? row * HROWS + 1 : orow * ring), err) : NULL;
    int rc = b.mid ? 0 : -1;
    if (rc != 0) {
    } else if (oh == s->h && ow == s->w) {
        for (size_t k = 0; k < (size_t)s->h * row; k++) dst[k] = s->f ? s->f[k] : s->u8[k];
    } else if (oh == s->h) {
        for (int y = 0; y < s->h; y += HROWS)
            horiz_rows(K, s, aw, y, s->h - y < HROWS ? s->h - y : HROWS, &b, dst + (size_t)y * orow,
                       orow);
    } else if (ow == s->w) {
        for (int j = 0; j < oh; j++) vert_row(K, s, ah, j, &b, dst + (size_t)j * orow);
    } else if (vf) {
        resize_v_first(K, s, ah, aw, &b, dst);
    } else {
        resize_h_first(K, s, ah, aw, ring, &b, dst);
    }
    free(b.pu);
    free(b.pf);
    free(b.tmp);
    free(b.mid);
    return rc;
}

/* jax.image.resize(x, (oh, ow), "bilinear", antialias=True) into dst
 * (oh * ow * 3 floats). */
static int resize(const ml_pre_kernels *K, const src_img *s, int oh, int ow, float *dst,
                  ml_error *err) {
    ml_pre_axis ah, aw;
    if (axis_init(&ah, s->h, oh, 0, err) != 0) return -1;
    if (axis_init(&aw, s->w, ow, 1, err) != 0) {
        axis_free(&ah);
        return -1;
    }
    int rc = resize_passes(K, s, &ah, &aw, dst, err);
    axis_free(&ah);
    axis_free(&aw);
    return rc;
}

int ml_preprocess_image(const ml_image *img, int size, float *out, ml_error *err) {
    if (!img || !img->rgb || img->width <= 0 || img->height <= 0)
        return ml_fail(err, "preprocess: empty image");
    if (size < 1 || size > 8192) return ml_fail(err, "preprocess: bad input size %d", size);
    const int base = ML_PREPROCESS_BASE;
    const ml_pre_kernels *K = active_kernels();
    uint8_t mx = K->max_u8(img->rgb, (size_t)img->width * img->height * 3);
    /* The base x base image goes straight to `out` when that is the size. */
    float *x = size == base ? out : ml_malloc(sizeof(float) * ((size_t)base * base * 3 + 1), err);
    if (!x) return -1;
    src_img s = {img->height, img->width, img->rgb, NULL};
    int rc = resize(K, &s, base, base, x, err);
    if (rc == 0 && x != out) {
        /* The model's largest centred square crop is a no-op on base x base. */
        x[(size_t)base * base * 3] = 0;
        src_img m = {base, base, NULL, x};
        rc = resize(K, &m, size, size, out, err);
    }
    if (rc == 0) {
        /* ((y / (max + 1e-12)) - mean) / std, y still in byte units. */
        double a[3], b[3];
        for (int c = 0; c < 3; c++) {
            a[c] = 1.0 / ((mx + 1e-12) * CLIP_STD[c]);
            b[c] = -CLIP_MEAN[c] / CLIP_STD[c];
        }
        K->affine_rgb(out, (size_t)size * size, a, b);
    }
    if (x != out) free(x);
    return rc;
}
