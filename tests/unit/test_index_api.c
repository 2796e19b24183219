/* test_index_api.c - the public index API (include/magiclens_index.h).
 *
 * Run bare (as the unit-test runner does) it checks the error paths that
 * need no model.  tests/t_index_api.sh runs it again with a tiny random
 * model and a fixture gallery:
 *   test_index_api MODEL LIST QUERY_IMAGE WORKDIR
 * and then checks that what it wrote (WORKDIR/api.json) equals `magiclens search --json` and
 * `magiclens export` for the same queries (the two must not drift).  Here
 * the API's hits are checked against a ranking computed in this file: dot
 * products (double) of query embeddings from ml_embed / ml_embed_clip_text
 * with gallery embeddings computed from the decoded images, not read from
 * the index. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "magiclens.h"

/* ---- error paths (no model) --------------------------------------------- */

static void test_errors(const char *tmp) {
    ml_error err;
    ml_index *ix = ml_index_open("/nonexistent/dir/x.mlindex", NULL, &err);
    CHECK(ix == NULL);
    CHECK_MSG(strstr(err.msg, "/nonexistent/dir/x.mlindex") != NULL, "%s", err.msg);
    const char *src[] = {"/nonexistent/img"};
    char dir[512];
    snprintf(dir, sizeof dir, "%s/api-err.mlindex", tmp);
    CHECK(ml_index_update(dir, NULL, ML_INDEX_SYNC, src, 1, NULL, NULL, &err) == -1);
    CHECK_MSG(strstr(err.msg, "model") != NULL, "%s", err.msg);
    CHECK(ml_index_update(dir, NULL, 7, src, 1, NULL, NULL, &err) == -1);
    CHECK_MSG(strstr(err.msg, "mode") != NULL, "%s", err.msg);
    /* Removing from an index that does not exist names it. */
    CHECK(ml_index_update(dir, NULL, ML_INDEX_REMOVE, src, 1, NULL, NULL, &err) == -1);
    CHECK_MSG(strstr(err.msg, "api-err.mlindex") != NULL, "%s", err.msg);
    struct stat sb;
    CHECK(stat(dir, &sb) != 0); /* nothing was created */
}

/* ---- with a model -------------------------------------------------------- */

typedef struct gallery {
    size_t n;
    int D;
    int64_t *ids;
    const char **paths;
    double *emb, *clip; /* n x D, from the images, L2-normalised */
} gallery;

static void normalise(double *v, int D) {
    double s = 0;
    for (int i = 0; i < D; i++) s += v[i] * v[i];
    s = sqrt(s);
    for (int i = 0; i < D; i++) v[i] /= s;
}

/* Embeds every indexed image again (gallery and CLIP embeddings). */
static int embed_gallery(ml_model *m, const ml_index *ix, gallery *g) {
    ml_error err;
    const ml_config *c = ml_model_config(m);
    g->n = ml_index_count(ix), g->D = c->embed_dim;
    g->ids = calloc(g->n, sizeof *g->ids);
    g->paths = calloc(g->n, sizeof *g->paths);
    g->emb = calloc(g->n * g->D, sizeof *g->emb);
    g->clip = calloc(g->n * g->D, sizeof *g->clip);
    float *px = malloc(sizeof(float) * c->image_size * c->image_size * 3);
    float *e = malloc(sizeof(float) * g->D), *ci = malloc(sizeof(float) * g->D);
    int rc = 0;
    for (size_t i = 0; i < g->n && rc == 0; i++) {
        const float *stored;
        ml_index_item(ix, i, &g->ids[i], &g->paths[i], &stored);
        ml_image img;
        const float *pp[1] = {px};
        int ok;
        rc = ml_image_load(g->paths[i], 0, &img, &err);
        if (rc == 0) rc = ml_model_preprocess(m, &img, px, &err);
        if (rc == 0) rc = ml_embed_pixels_batch(m, 1, pp, NULL, 0, e, ci, &ok, &err);
        if (rc == 0) ml_image_free(&img);
        if (rc != 0) fprintf(stderr, "%s: %s\n", g->paths[i], err.msg);
        double dmax = 0;
        for (int d = 0; rc == 0 && d < g->D; d++) {
            g->emb[i * g->D + d] = e[d], g->clip[i * g->D + d] = ci[d];
            dmax = fmax(dmax, fabs(e[d] - stored[d]));
        }
        CHECK_MSG(dmax < 1e-5, "item %zu: stored embedding differs by %g", i, dmax);
        normalise(g->emb + i * g->D, g->D), normalise(g->clip + i * g->D, g->D);
    }
    free(px), free(e), free(ci);
    return rc;
}

static void gallery_free(gallery *g) {
    free(g->ids), free(g->paths), free(g->emb), free(g->clip);
}

typedef struct ref_hit {
    double score;
    int64_t id;
    const char *path;
} ref_hit;

static int cmp_ref(const void *a, const void *b) {
    const ref_hit *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* Checks hits against the ranking of `q` (dim floats) over the gallery's
 * `space` rows, honouring k, offset, min_score, prefix and like. */
static void check_hits(const char *label, const gallery *g, const float *q, int clip,
                       const ml_index_query *qq, const ml_index_hit *h, int n) {
    ref_hit *r = calloc(g->n, sizeof *r);
    size_t m = 0;
    for (size_t i = 0; i < g->n; i++) {
        if (qq->prefix && strncmp(g->paths[i], qq->prefix, strlen(qq->prefix)) != 0) continue;
        if (g->ids[i] == qq->like) continue;
        const double *row = (clip ? g->clip : g->emb) + i * g->D;
        double s = 0;
        for (int d = 0; d < g->D; d++) s += row[d] * q[d];
        r[m++] = (ref_hit){s, g->ids[i], g->paths[i]};
    }
    qsort(r, m, sizeof *r, cmp_ref);
    /* Expected count; a score within rounding of min_score may go either way. */
    int want = 0, loose = 0;
    for (size_t j = (size_t)qq->offset; j < m && loose < qq->k; j++) {
        if (r[j].score < qq->min_score - 1e-5) break;
        loose++;
        want += r[j].score >= qq->min_score + 1e-5;
    }
    CHECK_MSG(n >= want && n <= loose, "%s: %d hits, expected %d", label, n, want);
    for (int j = 0; j < n && j < want; j++) {
        const ref_hit *e = &r[qq->offset + j];
        /* Ties within float rounding may swap; the score at each rank may not. */
        CHECK_MSG(fabs(h[j].score - e->score) < 1e-5, "%s: rank %d score %.7f, expected %.7f (id %lld)",
                  label, qq->offset + j + 1, h[j].score, e->score, (long long)e->id);
        CHECK_MSG(h[j].id == e->id || fabs(h[j].score - e->score) < 1e-6,
                  "%s: rank %d is id %lld, expected %lld", label, qq->offset + j + 1,
                  (long long)h[j].id, (long long)e->id);
        CHECK(h[j].path && strcmp(h[j].path, "") != 0);
        CHECK(h[j].score >= qq->min_score);
        CHECK(!qq->prefix || strncmp(h[j].path, qq->prefix, strlen(qq->prefix)) == 0);
    }
    free(r);
}

/* Prints hits as `magiclens search --json` does (without took_ms). */
static void print_json(FILE *f, const ml_index_query *q, const ml_index_hit *h, int n) {
    json_t *arr = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(arr, json_pack("{s:i, s:I, s:s, s:f}", "rank", q->offset + i + 1,
                                             "id", (json_int_t)h[i].id, "path", h[i].path,
                                             "score", (double)h[i].score));
    json_t *j = json_pack("{s:o}", "results", arr);
    char *s = json_dumps(j, JSON_COMPACT);
    fprintf(f, "%.*s\n", (int)strlen(s) - 1, s); /* drop the closing brace */
    free(s);
    json_decref(j);
}

typedef struct counter {
    int calls, stop_at;
    long long last_done, last_total;
} counter;

static int on_progress(void *ctx, long long done, long long total) {
    counter *c = ctx;
    c->calls++, c->last_done = done, c->last_total = total;
    return c->stop_at && c->calls >= c->stop_at;
}

static void test_build_and_cancel(ml_model *m, const char *list, const char *work,
                                  long long *nitems) {
    ml_error err;
    char a[600], c[600];
    snprintf(a, sizeof a, "%s/a.mlindex", work);
    snprintf(c, sizeof c, "%s/c.mlindex", work);
    const char *src[] = {list};
    counter cnt = {0};
    ml_index_update_opts uo = {.batch = 3, .on_progress = on_progress, .progress_ctx = &cnt};
    ml_index_stats st;
    int rc = ml_index_build(a, m, src, 1, &uo, &st, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    CHECK(st.found > 3 && st.added == st.found && st.items == st.found && st.failed == 0);
    CHECK(!st.cancelled);
    CHECK(cnt.calls == (int)((st.found + 2) / 3) && cnt.last_done == st.found &&
          cnt.last_total == st.found);
    *nitems = st.items;
    /* Sync again: nothing to do. */
    rc = ml_index_build(a, m, src, 1, NULL, &st, &err);
    CHECK(rc == 0 && st.unchanged == *nitems && st.added == 0);

    /* Cancelled after the first batch: the index holds that batch, is valid,
     * and a sync completes it with the same embeddings. */
    counter stop = {.stop_at = 1};
    ml_index_update_opts uc = {.batch = 2, .on_progress = on_progress, .progress_ctx = &stop};
    rc = ml_index_build(c, m, src, 1, &uc, &st, &err);
    CHECK(rc == -1 && st.cancelled == 1);
    CHECK_MSG(strstr(err.msg, "cancelled") != NULL, "%s", err.msg);
    ml_index *ix = ml_index_open(c, NULL, &err);
    CHECK_MSG(ix != NULL, "%s", err.msg);
    if (!ix) return;
    CHECK_MSG(ml_index_count(ix) == 2, "%zu items after cancelling", ml_index_count(ix));
    rc = ml_index_sync(ix, m, src, 1, NULL, &st, &err);
    CHECK_MSG(rc == 0 && st.added == *nitems - 2 && st.unchanged == 2, "%s", err.msg);
    CHECK(ml_index_count(ix) == (size_t)*nitems);
    ml_index *ia = ml_index_open(a, NULL, &err);
    for (size_t i = 0; ia && i < ml_index_count(ix); i++) {
        const char *p, *pa;
        const float *e, *ea;
        ml_index_item(ix, i, NULL, &p, &e);
        ml_index_item(ia, i, NULL, &pa, &ea);
        double dmax = 0;
        for (int d = 0; d < ml_index_dim(ix); d++) dmax = fmax(dmax, fabs(e[d] - ea[d]));
        CHECK_MSG(strcmp(p, pa) == 0 && dmax < 1e-5, "item %zu: %s vs %s, %g", i, p, pa, dmax);
    }
    ml_index_close(ia);
    ml_index_close(ix);
}

/* remove / add on an open handle (c.mlindex: a.mlindex stays as the CLI
 * will search it). */
static void test_remove_add(ml_model *m, const char *work, const ml_index_query *q) {
    ml_error err;
    char c[600];
    snprintf(c, sizeof c, "%s/c.mlindex", work);
    ml_index *ix = ml_index_open(c, NULL, &err);
    CHECK_MSG(ix != NULL, "%s", err.msg);
    if (!ix) return;
    size_t count = ml_index_count(ix);
    const char *p0;
    ml_index_item(ix, 0, NULL, &p0, NULL);
    const char *victim = strdup(p0);
    ml_index_hit h[64];
    int n;
    ml_index_stats st;
    CHECK(ml_index_remove(ix, &victim, 1, NULL, &st, &err) == 0 && st.removed == 1);
    CHECK(ml_index_count(ix) == count - 1);
    CHECK(ml_index_search(ix, m, q, h, &n, &err) == 0 && n > 0);
    for (int i = 0; i < n; i++) CHECK(strcmp(h[i].path, victim) != 0);
    CHECK(ml_index_add(ix, m, &victim, 1, NULL, &st, &err) == 0 && st.added == 1);
    CHECK(ml_index_count(ix) == count);
    CHECK(ml_index_search(ix, m, q, h, &n, &err) == 0);
    int seen = 0;
    for (int i = 0; i < n; i++) seen |= strcmp(h[i].path, victim) == 0;
    CHECK(seen || n < (int)count);
    free((char *)victim);
    ml_index_close(ix);
}

static void test_search(ml_model *m, const char *work, const char *qimg_path, FILE *out) {
    ml_error err;
    char a[600];
    snprintf(a, sizeof a, "%s/a.mlindex", work);
    ml_index *ix = ml_index_open(a, NULL, &err);
    CHECK_MSG(ix != NULL, "%s", err.msg);
    if (!ix) return;
    gallery g = {0};
    if (embed_gallery(m, ix, &g) != 0) {
        CHECK(!"gallery embedded");
        ml_index_close(ix);
        return;
    }
    int D = g.D;
    float *q = malloc(sizeof(float) * D);
    ml_image img;
    CHECK(ml_image_load(qimg_path, 0, &img, &err) == 0);
    ml_index_hit h[64];
    int n;
    /* The query embeddings, computed here from the public embedding calls. */
    char prefix[600];
    snprintf(prefix, sizeof prefix, "%s", g.paths[g.n / 2]);
    snprintf(strrchr(prefix, '/'), 6, "/png_"); /* the fixture's PNG files */
    int nq = 6;
    ml_index_query qs[6] = {
        {&img, "the same chair in a living room", -1, 0, 10, 0, -INFINITY, NULL, 0},
        {&img, NULL, -1, 0, 5, 2, -INFINITY, NULL, 0},
        {NULL, "a photo of a dog", -1, 0, 8, 0, -INFINITY, NULL, 0},
        {NULL, "make it red", g.ids[1], 0, 10, 0, -INFINITY, NULL, 0},
        {&img, "at night", -1, 0, 20, 0, 0.0f, NULL, 0},
        {NULL, NULL, g.ids[2], 0, 0 /* default 10 */, 0, NAN, NULL, 0},
    };
    for (int i = 0; i < nq; i++) {
        ml_index_query *qq = &qs[i];
        int clip = 0, ok;
        if (qq->like >= 0) {
            /* like: the item's CLIP embedding, fused with the text.  The
             * stored raw CLIP output is not in the public API: recompute it. */
            const ml_config *c = ml_model_config(m);
            float *px = malloc(sizeof(float) * c->image_size * c->image_size * 3), *raw = malloc(sizeof(float) * D);
            const float *pp[1] = {px};
            ml_image li;
            size_t row = qq->like == g.ids[1] ? 1 : 2;
            CHECK(ml_image_load(g.paths[row], 0, &li, &err) == 0);
            CHECK(ml_model_preprocess(m, &li, px, &err) == 0);
            CHECK(ml_embed_clip_image(m, 1, pp, raw, &err) == 0);
            CHECK(ml_embed_from_clip(m, 1, raw, &qq->text, 0, q, &ok, &err) == 0);
            ml_image_free(&li);
            free(px), free(raw);
        } else if (qq->image) {
            CHECK(ml_embed(m, qq->image, qq->text, 0, q, &err) == 0);
        } else {
            CHECK(ml_embed_clip_text(m, qq->text, 0, q, &err) == 0);
            clip = 1;
        }
        int rc = ml_index_search(ix, m, qq, h, &n, &err);
        CHECK_MSG(rc == 0, "query %d: %s", i, err.msg);
        ml_index_query qk = *qq;
        if (!qk.k) qk.k = 10;
        if (isnan(qk.min_score)) qk.min_score = -INFINITY;
        char label[32];
        snprintf(label, sizeof label, "query %d", i);
        if (rc == 0) check_hits(label, &g, q, clip, &qk, h, n);
        if (rc == 0) print_json(out, &qk, h, n);
    }
    /* A path prefix (printed last: the script passes it to the CLI). */
    ml_index_query qp = {&img, "in the snow", -1, 0, 10, 0, -INFINITY, prefix, 0};
    CHECK(ml_embed(m, &img, qp.text, 0, q, &err) == 0);
    CHECK(ml_index_search(ix, m, &qp, h, &n, &err) == 0);
    CHECK(n > 0 && n < (int)g.n);
    for (int i = 0; i < n; i++) CHECK(strstr(h[i].path, "/png_") != NULL);
    check_hits("prefix", &g, q, 0, &qp, h, n);
    print_json(out, &qp, h, n);
    fprintf(out, "PREFIX %s\nLIKE %lld %lld\n", prefix, (long long)g.ids[1], (long long)g.ids[2]);

    /* Errors name the reason. */
    ml_index_query bad = {&img, NULL, g.ids[1], 0, 10, 0, -INFINITY, NULL, 0};
    CHECK(ml_index_search(ix, m, &bad, h, &n, &err) == -1 && strstr(err.msg, "like"));
    ml_index_query none = {NULL, NULL, -1, 0, 10, 0, -INFINITY, NULL, 0};
    CHECK(ml_index_search(ix, m, &none, h, &n, &err) == -1);
    ml_index_query missing = {NULL, NULL, 1 << 30, 0, 10, 0, -INFINITY, NULL, 0};
    CHECK(ml_index_search(ix, m, &missing, h, &n, &err) == -1 && strstr(err.msg, "no such item"));
    CHECK(ml_index_search(ix, NULL, &qs[0], h, &n, &err) == -1 && strstr(err.msg, "model"));

    /* embeddings(): ids ascending, rows equal to the items' (no copy there). */
    int64_t *ids = malloc(sizeof(int64_t) * g.n);
    float *emb = malloc(sizeof(float) * g.n * D);
    CHECK(ml_index_embeddings(ix, ids, emb, &err) == 0);
    for (size_t i = 0; i < g.n; i++) {
        int64_t id;
        const float *e;
        CHECK(ml_index_item(ix, i, &id, NULL, &e) == 0);
        CHECK(ids[i] == id && (i == 0 || ids[i] > ids[i - 1]));
        CHECK(memcmp(emb + i * D, e, sizeof(float) * D) == 0);
    }
    CHECK(ml_index_item(ix, g.n, NULL, NULL, NULL) == -1);
    CHECK(ml_index_dim(ix) == D);
    CHECK(strlen(ml_index_fingerprint(ix)) == 32);
    test_remove_add(m, work, &qs[2]);

    char exp[700];
    snprintf(exp, sizeof exp, "%s/export-api", work);
    ml_index_close(ix);
    ix = ml_index_open(a, &(ml_index_open_opts){"int8", 1}, &err);
    CHECK_MSG(ix != NULL, "%s", err.msg);
    if (ix) CHECK(ml_index_export(ix, exp, &err) == 0);
    CHECK(ml_index_open(a, &(ml_index_open_opts){"f64", 0}, &err) == NULL &&
          strstr(err.msg, "f64"));

    ml_image_free(&img);
    free(ids), free(emb), free(q);
    gallery_free(&g);
    ml_index_close(ix);
}

int main(int argc, char **argv) {
    const char *tmp = getenv("ML_TMP") ? getenv("ML_TMP") : "/tmp";
    test_errors(tmp);
    if (argc == 5) {
        ml_error err;
        ml_load_options lo = {ML_PRECISION_FP32};
        ml_model *m = ml_model_load_opts(argv[1], getenv("MAGICLENS_VOCAB"), &lo, &err);
        CHECK_MSG(m != NULL, "%s", err.msg);
        long long n = 0;
        if (m) test_build_and_cancel(m, argv[2], argv[4], &n);
        char path[600];
        snprintf(path, sizeof path, "%s/api.json", argv[4]);
        FILE *out = fopen(path, "w");
        CHECK_MSG(out != NULL, "cannot write %s", path);
        if (m && n && out) test_search(m, argv[4], argv[3], out);
        if (out) fclose(out);
        ml_model_free(m);
    } else if (argc != 1) {
        fprintf(stderr, "usage: test_index_api [MODEL LIST QUERY_IMAGE WORKDIR]\n");
        return 2;
    }
    return check_done("test_index_api");
}
