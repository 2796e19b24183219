/* Vector search against a brute-force ranking computed here in double
 * precision: every storage type on every instruction set the machine runs,
 * allow masks, k > n, n = 0, batches; the kernels against the portable ones;
 * IVF recall, exactness with nprobe = nlist, save / load, and refusal of
 * damaged files. */
#include <math.h>
#include <stdint.h>
#include <unistd.h>

#include "check.h"
#include "magiclens.h"
#include "core/threads.h"
#include "index/search.h"
#include "index/search_internal.h"
#include "kernels/cpu.h"

static uint64_t rng = 0x9E3779B97F4A7C15ULL;
static double urand(void) { /* [0, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (rng >> 11) * (1.0 / 9007199254740992.0);
}
static float grand(void) { /* standard normal (Box-Muller) */
    double u = urand() + 1e-12, v = urand();
    return (float)(sqrt(-2 * log(u)) * cos(6.283185307179586 * v));
}

static void normalise(float *x, int d) {
    double s = 0;
    for (int i = 0; i < d; i++) s += (double)x[i] * x[i];
    for (int i = 0; i < d; i++) x[i] = (float)(x[i] / sqrt(s));
}

/* n unit vectors around `nc` random centres (spread sigma per coordinate). */
static float *clustered(int n, int d, int nc, float sigma, const float *centres_in) {
    float *c = malloc(sizeof(float) * (size_t)nc * d), *x = malloc(sizeof(float) * (size_t)n * d + 4);
    if (centres_in) memcpy(c, centres_in, sizeof(float) * (size_t)nc * d);
    else
        for (int i = 0; i < nc; i++) {
            for (int k = 0; k < d; k++) c[(size_t)i * d + k] = grand();
            normalise(c + (size_t)i * d, d);
        }
    for (int i = 0; i < n; i++) {
        int j = (int)(urand() * nc);
        for (int k = 0; k < d; k++) x[(size_t)i * d + k] = c[(size_t)j * d + k] + sigma * grand();
        normalise(x + (size_t)i * d, d);
    }
    free(c);
    return x;
}

typedef struct rows_ctx {
    const float *x;
    int d;
} rows_ctx;
static const float *row_of(void *ctx, int64_t row) {
    const rows_ctx *r = ctx;
    return r->x + (size_t)row * r->d;
}

static int hit_order(const void *a, const void *b) {
    const ml_hit *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->row < y->row ? -1 : x->row > y->row;
}

/* Expected hits: double dot products rounded to float, score desc, row asc. */
static void brute(const float *x, int n, int d, const float *q, int nq, int k,
                  const uint8_t *allow, ml_hit *out) {
    ml_hit *all = malloc(sizeof(ml_hit) * (size_t)(n + 1));
    for (int i = 0; i < nq; i++) {
        int m = 0;
        for (int r = 0; r < n; r++) {
            if (allow && !allow[r]) continue;
            double s = 0;
            for (int j = 0; j < d; j++) s += (double)q[(size_t)i * d + j] * x[(size_t)r * d + j];
            all[m++] = (ml_hit){(float)s, r};
        }
        qsort(all, (size_t)m, sizeof *all, hit_order);
        for (int j = 0; j < k; j++) out[(size_t)i * k + j] = j < m ? all[j] : (ml_hit){0.0f, -1};
    }
    free(all);
}

static int same_hits(const ml_hit *a, const ml_hit *b, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++)
        if (a[i].row != b[i].row || a[i].score != b[i].score) {
            fprintf(stderr, "%s: hit %zu: row %lld score %.9g, expected row %lld score %.9g\n", what,
                    i, (long long)a[i].row, a[i].score, (long long)b[i].row, b[i].score);
            return 0;
        }
    return 1;
}

static const char *isa_name = "scalar";

static void exact_case(ml_vec_type type, int n, int d, int nq, int k, int masked) {
    float *x = clustered(n, d, n / 20 + 1, 0.3f, NULL), *q = clustered(nq, d, 4, 1.0f, NULL);
    uint8_t *allow = NULL;
    if (masked) {
        allow = malloc((size_t)n + 1);
        for (int i = 0; i < n; i++) allow[i] = masked == 2 ? 0 : urand() < 0.5;
    }
    ml_error err = {{0}};
    ml_vecset *vs = ml_vecset_new(d, type, &err);
    CHECK(vs != NULL);
    /* appended in two parts: the second starts inside a partial panel */
    int first = n / 3;
    CHECK(ml_vecset_append(vs, x, (size_t)first, &err) == 0);
    CHECK(ml_vecset_append(vs, x + (size_t)first * d, (size_t)(n - first), &err) == 0);
    CHECK(ml_vecset_size(vs) == (size_t)n && ml_vecset_dim(vs) == d && ml_vecset_type(vs) == type);
    rows_ctx rc = {x, d};
    ml_search_opts o = {.k = k, .allow = allow, .row_f32 = row_of, .row_ctx = &rc};
    ml_hit *got = malloc(sizeof(ml_hit) * (size_t)nq * k), *want = malloc(sizeof(ml_hit) * (size_t)nq * k);
    brute(x, n, d, q, nq, k, allow, want);
    int rc2 = ml_vecset_search(vs, q, nq, &o, got, &err);
    char what[160];
    snprintf(what, sizeof what, "%s %s n=%d d=%d nq=%d k=%d mask=%d", isa_name,
             ml_vec_type_name(type), n, d, nq, k, masked);
    CHECK_MSG(rc2 == 0, "%s: %s", what, err.msg);
    CHECK_MSG(same_hits(got, want, (size_t)nq * k, what), "%s", what);
    ml_vecset_free(vs);
    free(x), free(q), free(allow), free(got), free(want);
}

static void test_exact_all(void) {
    static const int sizes[][2] = {{1, 8}, {5, 3}, {63, 17}, {64, 64}, {65, 1}, {1000, 100}, {3001, 64}};
    for (int t = 0; t < 3; t++)
        for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
            int n = sizes[s][0], d = sizes[s][1];
            exact_case((ml_vec_type)t, n, d, 1, 10, 0);
            exact_case((ml_vec_type)t, n, d, 7, 5, 0);
            exact_case((ml_vec_type)t, n, d, 3, n + 5, 0); /* k > n */
            exact_case((ml_vec_type)t, n, d, 9, 10, 1);    /* half the rows allowed */
        }
    for (int t = 0; t < 3; t++) {
        exact_case((ml_vec_type)t, 300, 32, 2, 4, 2); /* nothing allowed */
        exact_case((ml_vec_type)t, 4000, 16, 300, 10, 0); /* > one query chunk, 2 slots */
        exact_case((ml_vec_type)t, 2000, 64, 53, 10, 1);  /* AMX passes + VNNI rest */
    }
}

/* n = 0 and argument errors. */
static void test_edges(void) {
    ml_error err = {{0}};
    ml_vecset *vs = ml_vecset_new(16, ML_VEC_I8, &err);
    float q[16] = {1};
    ml_hit h[3];
    ml_search_opts o = {.k = 3, .row_f32 = row_of};
    CHECK(ml_vecset_search(vs, q, 1, &o, h, &err) == 0);
    CHECK(h[0].row == -1 && h[2].row == -1);
    CHECK(ml_vecset_search(vs, q, 0, &o, h, &err) == 0);
    o.k = 0;
    CHECK(ml_vecset_search(vs, q, 1, &o, h, &err) == -1 && strstr(err.msg, "k must be"));
    o.k = 3, o.row_f32 = NULL;
    CHECK(ml_vecset_search(vs, q, 1, &o, h, &err) == -1 && strstr(err.msg, "row_f32"));
    ml_vecset_free(vs);
    CHECK(ml_vecset_new(0, ML_VEC_F32, &err) == NULL && strstr(err.msg, "dimension"));
    ml_vec_type t;
    CHECK(ml_vec_type_parse("int8", &t) == 0 && t == ML_VEC_I8);
    CHECK(ml_vec_type_parse("f16", &t) == 0 && t == ML_VEC_F16);
    CHECK(ml_vec_type_parse("bf16", &t) == -1);
}

/* Half conversion: every half round-trips; ties round to even. */
static void test_f16(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = sk_f16_to_f32((uint16_t)h);
        if (isnan(f)) continue;
        if (sk_f32_to_f16(f) != h) bad++;
    }
    CHECK_MSG(bad == 0, "%d halves do not round-trip", bad);
    CHECK(sk_f32_to_f16(1.0f + 1.0f / 2048) == 0x3c00);         /* tie -> even (down) */
    CHECK(sk_f32_to_f16(1.0f + 3.0f / 2048) == 0x3c02);         /* tie -> even (up) */
    CHECK(sk_f32_to_f16(65520.0f) == 0x7c00);                   /* overflow -> inf */
    CHECK(sk_f32_to_f16(5.9604644775390625e-8f * 0.5f) == 0);   /* tie to even: zero */
    CHECK(sk_f32_to_f16(5.9604644775390625e-8f * 1.5f) == 2);   /* tie to even: 2 */
}

/* Each kernel against the portable one on one block: int8 scores are
 * computed exactly the same way (integers, then two products), so they must
 * be bit-equal; f32 / f16 differ only by summation rounding. */
static void test_kernels(ml_isa isa) {
    const sk_kernels *ref = sk_kernels_for(ML_ISA_SCALAR), *k = sk_kernels_for(isa);
    /* d = 128: a multiple of 64 (the AMX tiles' width); 53 queries = one
     * 32-query pass, one 16-query pass and 5 left for the VNNI kernel */
    int d = 128, dp = 128, nq = 53;
    float *x = clustered(SK_BLOCK, d, 3, 0.5f, NULL), *q = clustered(nq, d, 2, 1.0f, NULL);
    size_t pb = sk_panel_bytes(ML_VEC_F32, d) * SK_BLOCK_PANELS;
    void *pf = calloc(1, pb), *ph = calloc(1, pb), *pi = calloc(1, pb);
    float scale[SK_BLOCK];
    for (int r = 0; r < SK_BLOCK; r++) {
        sk_store_put(ML_VEC_F32, d, pf, NULL, (size_t)r, x + (size_t)r * d);
        sk_store_put(ML_VEC_F16, d, ph, NULL, (size_t)r, x + (size_t)r * d);
        sk_store_put(ML_VEC_I8, d, pi, scale, (size_t)r, x + (size_t)r * d);
    }
    int8_t q8[53 * 128];
    float qs[53], thr[53], o1[53 * SK_BLOCK], o2[53 * SK_BLOCK];
    int32_t qc[53];
    uint16_t m1[53 * SK_BLOCK_PANELS], m2[53 * SK_BLOCK_PANELS];
    sk_prepare_i8(q, nq, d, dp, q8, qs, qc);
    for (int i = 0; i < nq; i++) thr[i] = i % 3 == 0 ? -INFINITY : 0.1f * (float)(i % 5);
    sk_queries sq = {q, d, q8, qs, qc};
    for (int t = 0; t < 3; t++) {
        if (t == 0) ref->f32(pf, d, &sq, 0, nq, thr, o1, m1), k->f32(pf, d, &sq, 0, nq, thr, o2, m2);
        if (t == 1) ref->f16(ph, d, &sq, 0, nq, thr, o1, m1), k->f16(ph, d, &sq, 0, nq, thr, o2, m2);
        if (t == 2) ref->i8(pi, scale, dp, &sq, 0, nq, thr, o1, m1), k->i8(pi, scale, dp, &sq, 0, nq, thr, o2, m2);
        double worst = 0;
        int mask_bad = 0;
        for (int i = 0; i < nq * SK_BLOCK; i++) {
            /* (not fmax: aarch64 gcc 12 crashes vectorising that reduction) */
            double e = fabs((double)o1[i] - o2[i]);
            if (e > worst) worst = e;
            int bit = (m2[i / SK_PANEL] >> (i % SK_PANEL)) & 1;
            if (bit != (o2[i] >= thr[i / SK_BLOCK])) mask_bad++;
        }
        CHECK_MSG(t == 2 ? worst == 0 : worst < 1e-5, "%s kernel type %d: max diff %g", k->name, t, worst);
        CHECK_MSG(mask_bad == 0, "%s kernel type %d: %d mask bits wrong", k->name, t, mask_bad);
    }
    /* the low-precision scores are close to the exact ones */
    double wf16 = 0, wi8 = 0;
    ref->f16(ph, d, &sq, 0, nq, thr, o1, m1);
    ref->i8(pi, scale, dp, &sq, 0, nq, thr, o2, m2);
    for (int i = 0; i < nq; i++)
        for (int r = 0; r < SK_BLOCK; r++) {
            double s = 0;
            for (int j = 0; j < d; j++) s += (double)q[i * d + j] * x[(size_t)r * d + j];
            wf16 = fmax(wf16, fabs(s - o1[i * SK_BLOCK + r]));
            wi8 = fmax(wi8, fabs(s - o2[i * SK_BLOCK + r]));
        }
    CHECK_MSG(wf16 < 2e-3 && wi8 < 2e-2, "low-precision error f16 %g int8 %g", wf16, wi8);
    free(x), free(q), free(pf), free(ph), free(pi);
}

/* ---- IVF ---- */

static double recall(const ml_hit *got, const ml_hit *want, int nq, int k) {
    int hit = 0;
    for (int i = 0; i < nq; i++)
        for (int j = 0; j < k; j++)
            for (int t = 0; t < k; t++)
                if (got[(size_t)i * k + j].row == want[(size_t)i * k + t].row &&
                    want[(size_t)i * k + t].row >= 0) {
                    hit++;
                    break;
                }
    return (double)hit / ((double)nq * k);
}

static const char *tmp_path(const char *name, char *buf, size_t n) {
    const char *dir = getenv("ML_TMP");
    snprintf(buf, n, "%s/%s", dir ? dir : "/tmp", name);
    return buf;
}

static unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*n + 1);
    if (fread(b, 1, *n, f) != *n) *n = 0;
    fclose(f);
    return b;
}

static void spit(const char *path, const unsigned char *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (f) fwrite(b, 1, n, f), fclose(f);
}

static void expect_refused(const char *path, const char *why, const char *needle) {
    ml_error err = {{0}};
    ml_ivf *v = ml_ivf_load(path, &err);
    CHECK_MSG(v == NULL, "%s: damaged file was accepted", why);
    CHECK_MSG(strstr(err.msg, path) != NULL, "%s: message does not name the file: %s", why, err.msg);
    if (needle) CHECK_MSG(strstr(err.msg, needle) != NULL, "%s: message: %s", why, err.msg);
    ml_ivf_free(v);
}

static void test_ivf_file(const ml_ivf *ivf, const float *q, int nq, const ml_search_opts *o) {
    char path[512], bad[600];
    tmp_path("test_search.ivf", path, sizeof path);
    snprintf(bad, sizeof bad, "%s.bad", path);
    ml_error err = {{0}};
    CHECK_MSG(ml_ivf_save(ivf, path, &err) == 0, "%s", err.msg);
    ml_ivf *back = ml_ivf_load(path, &err);
    CHECK_MSG(back != NULL, "%s", err.msg);
    if (!back) return;
    ml_hit *a = malloc(sizeof(ml_hit) * (size_t)nq * o->k), *b = malloc(sizeof(ml_hit) * (size_t)nq * o->k);
    CHECK(ml_ivf_search(ivf, q, nq, o, a, &err) == 0 && ml_ivf_search(back, q, nq, o, b, &err) == 0);
    CHECK(same_hits(b, a, (size_t)nq * o->k, "IVF after load"));
    CHECK(ml_ivf_size(back) == ml_ivf_size(ivf) && ml_ivf_dim(back) == ml_ivf_dim(ivf));
    ml_ivf_free(back);
    free(a), free(b);

    size_t n;
    unsigned char *f = slurp(path, &n);
    CHECK(f && n > 100);
    if (!f) return;
    size_t cuts[] = {0, 7, 20, 39, 40, 41, n / 2, n - 9, n - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        spit(bad, f, cuts[i]);
        expect_refused(bad, "truncated", NULL);
    }
    size_t flips[] = {9, 13, 25, 33, 200, n / 3, n / 2, n - 20, n - 3};
    for (size_t i = 0; i < sizeof flips / sizeof *flips; i++) {
        f[flips[i]] ^= 0x10;
        spit(bad, f, n);
        expect_refused(bad, "flipped byte", NULL);
        f[flips[i]] ^= 0x10;
    }
    unsigned char keep = f[0];
    f[0] = 'X';
    spit(bad, f, n);
    expect_refused(bad, "wrong magic", "magic");
    f[0] = keep;
    f[8] = 2; /* version 2 */
    spit(bad, f, n);
    expect_refused(bad, "wrong version", "version 2");
    f[8] = 1;
    spit(bad, (const unsigned char *)"{\"not\": \"an index\"}\n", 20);
    expect_refused(bad, "foreign file", NULL);
    expect_refused("/nonexistent/dir/x.ivf", "missing file", NULL);
    free(f);
    unlink(bad);
    unlink(path);
}

static void test_ivf(void) {
    int n = 20000, d = 64, nq = 200, k = 10;
    /* 200 centres: a few lists per centre, like embeddings of many themes */
    float *centres = clustered(200, d, 200, 0.0f, NULL);
    float *x = clustered(n, d, 200, 0.12f, centres), *q = clustered(nq, d, 200, 0.12f, centres);
    free(centres);
    ml_error err = {{0}};
    ml_ivf_params p = {.seed = 42};
    ml_ivf *ivf = ml_ivf_build(x, (size_t)n, d, &p, &err);
    CHECK_MSG(ivf != NULL, "%s", err.msg);
    if (!ivf) return;
    rows_ctx rc = {x, d};
    ml_search_opts o = {.k = k, .row_f32 = row_of, .row_ctx = &rc};
    ml_hit *got = malloc(sizeof(ml_hit) * nq * k), *want = malloc(sizeof(ml_hit) * nq * k);
    brute(x, n, d, q, nq, k, NULL, want);
    CHECK(ml_ivf_search(ivf, q, nq, &o, got, &err) == 0);
    double r = recall(got, want, nq, k);
    CHECK_MSG(r >= 0.95, "IVF recall@10 %.3f with the default nprobe", r);
    printf("IVF recall@10 (default nprobe) %.4f\n", r);
    /* the batch was scanned list-major; single queries (lists split over
     * threads) and small batches (query-major) give the same answers */
    ml_hit one[5 * 10];
    for (int i = 0; i < 5; i++) {
        CHECK(ml_ivf_search(ivf, q + (size_t)i * d, 1, &o, one, &err) == 0);
        CHECK(same_hits(one, got + (size_t)i * k, (size_t)k, "IVF single query"));
    }
    CHECK(ml_ivf_search(ivf, q, 5, &o, one, &err) == 0);
    CHECK(same_hits(one, got, (size_t)5 * k, "IVF batch of 5"));
    /* every list probed: exactly the brute-force answer */
    o.nprobe = 1 << 20;
    CHECK(ml_ivf_search(ivf, q, nq, &o, got, &err) == 0);
    CHECK(same_hits(got, want, (size_t)nq * k, "IVF nprobe = nlist"));
    /* allow mask */
    uint8_t *allow = malloc((size_t)n);
    for (int i = 0; i < n; i++) allow[i] = (i % 3) != 0;
    o.allow = allow;
    brute(x, n, d, q, 20, k, allow, want);
    CHECK(ml_ivf_search(ivf, q, 20, &o, got, &err) == 0);
    CHECK(same_hits(got, want, (size_t)20 * k, "IVF allow mask, nprobe = nlist"));
    o.allow = NULL, o.nprobe = 0;
    /* determinism: one thread gives the same results */
    ml_set_threads(1);
    ml_ivf *ivf1 = ml_ivf_build(x, (size_t)n, d, &p, &err);
    ml_hit *g1 = malloc(sizeof(ml_hit) * nq * k);
    CHECK(ivf1 && ml_ivf_search(ivf1, q, nq, &o, g1, &err) == 0);
    ml_set_threads(0);
    CHECK(ml_ivf_search(ivf, q, nq, &o, got, &err) == 0);
    CHECK(same_hits(g1, got, (size_t)nq * k, "IVF 1 thread vs all"));
    ml_ivf_free(ivf1);
    free(g1);
    /* incremental add: rows numbered after the first ones */
    ml_ivf *inc = ml_ivf_build(x, (size_t)n / 2, d, &p, &err);
    CHECK(inc && ml_ivf_add(inc, x + (size_t)(n / 2) * d, (size_t)(n - n / 2), &err) == 0);
    o.nprobe = 1 << 20;
    brute(x, n, d, q, nq, k, NULL, want);
    CHECK(ml_ivf_search(inc, q, nq, &o, got, &err) == 0);
    CHECK(same_hits(got, want, (size_t)nq * k, "IVF after add, nprobe = nlist"));
    o.nprobe = 0;
    ml_ivf_free(inc);
    test_ivf_file(ivf, q, 30, &o);
    /* tiny sets: fewer rows than lists, one row */
    ml_ivf *tiny = ml_ivf_build(x, 3, d, &(ml_ivf_params){.nlist = 50}, &err);
    CHECK(tiny && ml_ivf_size(tiny) == 3);
    brute(x, 3, d, q, 2, k, NULL, want);
    CHECK(tiny && ml_ivf_search(tiny, q, 2, &o, got, &err) == 0);
    CHECK(same_hits(got, want, (size_t)2 * k, "IVF 3 rows"));
    ml_ivf_free(tiny);
    CHECK(ml_ivf_build(x, 0, d, NULL, &err) == NULL && strstr(err.msg, "no rows"));
    ml_ivf_free(ivf);
    free(x), free(q), free(got), free(want), free(allow);
}

int main(void) {
    ml_error err = {{0}};
    test_f16();
    test_edges();
    for (int isa = ML_ISA_SCALAR; isa < ML_ISA_COUNT; isa++) {
        if (!check_isa(isa)) continue;
        CHECK(ml_isa_set((ml_isa)isa, &err) == 0);
        isa_name = ml_isa_name((ml_isa)isa);
        if (isa != ML_ISA_SCALAR) test_kernels((ml_isa)isa);
        test_exact_all();
        /* same answers on one thread */
        ml_set_threads(1);
        exact_case(ML_VEC_I8, 5000, 40, 5, 10, 1);
        ml_set_threads(0);
    }
    ml_isa_set(ml_isa_active(), NULL);
    test_ivf();
    return check_done("test_search");
}
