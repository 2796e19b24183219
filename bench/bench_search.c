/* bench_search - speed and recall of the exact (f32 / f16 / int8) and IVF
 * search engines on a synthetic embedding-like collection.
 *
 * Usage: bench_search [n=1000000] [d=512] [dir=/tmp/magiclens-bench] [mode=all|exact|ivf]
 * The collection (dir/base_N_D.npy, dir/queries_D.npy: 1000 queries) is
 * generated once and reused, so bench_faiss reads the very same vectors;
 * the exact float32 top-10 is written as dir/gt_N_D.npy (row numbers as
 * float32) for bench_faiss's recall.
 *
 * Data: a two-level Gaussian mixture, L2-normalised.  256 "topics" (random
 * unit vectors); 4096 centres around them (cosine ~0.8 to their topic);
 * each point = centre + isotropic noise with a per-centre spread (cosine
 * ~0.55-0.78 to its centre).  Queries are fresh draws from the same mixture,
 * not rows of the set.  Random uniform vectors would be the worst case for
 * an IVF and unlike real embeddings, which cluster by theme.
 *
 * Threads: MAGICLENS_THREADS (default: all CPUs).  Speeds are reported
 * here, never asserted in tests. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/progress.h"
#include "core/threads.h"
#include "index/search.h"
#include "io/npy.h"
#include "kernels/cpu.h"
#include "magiclens.h"

#define NQ_ALL 1000
#define K 10
#define TOPICS 256
#define CENTRES 4096
#define SINGLE_Q 50    /* exact: queries timed one at a time */
#define SINGLE_IVF 200 /* IVF: the same */

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

typedef struct rng {
    uint64_t s;
} rng;
static double urand(rng *r) {
    r->s += 0x9E3779B97F4A7C15ULL;
    return ((mix64(r->s) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}
static float grand(rng *r) {
    double u = urand(r), v = urand(r);
    return (float)(sqrt(-2 * log(u)) * cos(6.283185307179586 * v));
}

static void normalise(float *x, int d) {
    double s = 0;
    for (int i = 0; i < d; i++) s += (double)x[i] * x[i];
    float inv = (float)(1.0 / sqrt(s));
    for (int i = 0; i < d; i++) x[i] *= inv;
}

typedef struct gen {
    int d;
    const float *centres; /* [CENTRES][d] */
    const float *spread;  /* per centre */
    uint64_t seed;
    float *out;
} gen;

/* Row i depends only on (seed, i): the same data for any thread count. */
static void gen_rows(void *ctx, int b, int e) {
    const gen *g = ctx;
    for (int i = b; i < e; i++) {
        rng r = {mix64(g->seed ^ (uint64_t)i * 0x632BE59BD9B4E019ULL)};
        int c = (int)(urand(&r) * CENTRES);
        float *x = g->out + (size_t)i * g->d;
        for (int k = 0; k < g->d; k++)
            x[k] = g->centres[(size_t)c * g->d + k] + g->spread[c] * grand(&r);
        normalise(x, g->d);
    }
}

static void make_data(int n, int d, float *base, float *queries) {
    float *topics = malloc(sizeof(float) * TOPICS * d), *centres = malloc(sizeof(float) * CENTRES * d);
    float spread[CENTRES];
    rng r = {12345};
    float tau = 0.75f / sqrtf((float)d); /* centre-topic cosine ~0.8 */
    for (int t = 0; t < TOPICS; t++) {
        for (int k = 0; k < d; k++) topics[t * d + k] = grand(&r);
        normalise(topics + t * d, d);
    }
    for (int c = 0; c < CENTRES; c++) {
        int t = (int)(urand(&r) * TOPICS);
        for (int k = 0; k < d; k++) centres[(size_t)c * d + k] = topics[t * d + k] + tau * grand(&r);
        normalise(centres + (size_t)c * d, d);
        /* noise norm 0.8-1.5: point-centre cosine ~0.55-0.78, so the
         * neighbours of a query come from several nearby centres */
        spread[c] = (0.8f + 0.7f * (float)urand(&r)) / sqrtf((float)d);
    }
    gen g = {d, centres, spread, 1, base};
    ml_parallel_for(n, 4096, gen_rows, &g);
    gen gq = {d, centres, spread, 2, queries}; /* another seed: not rows of the set */
    ml_parallel_for(NQ_ALL, 64, gen_rows, &gq);
    free(topics), free(centres);
}

static float *load_or_make(const char *dir, int n, int d, float **queries) {
    char bp[600], qp[600];
    snprintf(bp, sizeof bp, "%s/base_%d_%d.npy", dir, n, d);
    snprintf(qp, sizeof qp, "%s/queries_%d.npy", dir, d);
    char dt;
    int isz, nd;
    int64_t sh[8];
    void *b = NULL, *q = NULL;
    ml_error err = {{0}};
    if (ml_npy_read(bp, &dt, &isz, sh, &nd, &b, NULL) == 0 && dt == 'f' && isz == 4 && nd == 2 &&
        sh[0] == n && sh[1] == d && ml_npy_read(qp, &dt, &isz, sh, &nd, &q, NULL) == 0 &&
        sh[0] == NQ_ALL && sh[1] == d) {
        *queries = q;
        printf("data: loaded %s and %s\n", bp, qp);
        return b;
    }
    free(b), free(q);
    float *base = malloc(sizeof(float) * (size_t)n * d);
    *queries = malloc(sizeof(float) * NQ_ALL * d);
    double t0 = ml_now();
    make_data(n, d, base, *queries);
    mkdir(dir, 0755);
    if (ml_npy_write_f32(bp, base, n, d, &err) || ml_npy_write_f32(qp, *queries, NQ_ALL, d, &err))
        fprintf(stderr, "warning: %s\n", err.msg);
    printf("data: generated in %.1f s, written to %s, %s\n", ml_now() - t0, bp, qp);
    return base;
}

typedef struct rows {
    const float *x;
    int d;
} rows;
static const float *row_of(void *ctx, int64_t row) {
    const rows *r = ctx;
    return r->x + (size_t)row * r->d;
}

static double load_now(void) {
    double l[1] = {0};
    return getloadavg(l, 1) == 1 ? l[0] : -1;
}

static double recall(const ml_hit *got, const ml_hit *want, int nq) {
    int hit = 0;
    for (int i = 0; i < nq; i++)
        for (int j = 0; j < K; j++)
            for (int t = 0; t < K; t++)
                if (got[i * K + j].row == want[i * K + t].row) {
                    hit++;
                    break;
                }
    return (double)hit / (nq * K);
}

typedef int (*search_fn)(const void *ix, const float *q, int nq, const ml_search_opts *o,
                         ml_hit *out, ml_error *err);
static int vs_fn(const void *ix, const float *q, int nq, const ml_search_opts *o, ml_hit *out,
                 ml_error *err) {
    return ml_vecset_search(ix, q, nq, o, out, err);
}
static int ivf_fn(const void *ix, const float *q, int nq, const ml_search_opts *o, ml_hit *out,
                  ml_error *err) {
    return ml_ivf_search(ix, q, nq, o, out, err);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void must(int rc, const ml_error *err) {
    if (rc) {
        fprintf(stderr, "search failed: %s\n", err->msg);
        exit(1);
    }
}

/* One query at a time over queries 0..single-1 (after one warm-up): median,
 * p95 and mean ms; results into out. */
typedef struct lat {
    double med, p95, mean;
} lat;
static lat time_single(search_fn fn, const void *ix, const float *q, int d, const ml_search_opts *o,
                       int single, ml_hit *out) {
    ml_error err = {{0}};
    must(fn(ix, q, 1, o, out, &err), &err);
    double *t = malloc(sizeof(double) * single), sum = 0;
    for (int i = 0; i < single; i++) {
        double t0 = ml_now();
        must(fn(ix, q + (size_t)i * d, 1, o, out + (size_t)i * K, &err), &err);
        t[i] = (ml_now() - t0) * 1e3;
        sum += t[i];
    }
    qsort(t, (size_t)single, sizeof *t, cmp_double);
    lat r = {t[single / 2], t[(int)ceil(0.95 * single) - 1], sum / single};
    free(t);
    return r;
}

/* ms per query in batches of `batch` (nb batches, best of 2 passes). */
static double time_batch(search_fn fn, const void *ix, const float *q, int d,
                         const ml_search_opts *o, int batch, int nb, ml_hit *out) {
    ml_error err = {{0}};
    double best = 1e30;
    for (int pass = 0; pass < 2; pass++) {
        double t0 = ml_now();
        for (int b = 0; b < nb; b++)
            must(fn(ix, q + (size_t)b * batch * d, batch, o, out + (size_t)b * batch * K, &err), &err);
        double ms = (ml_now() - t0) * 1e3 / ((double)nb * batch);
        if (ms < best) best = ms;
    }
    return best;
}

/* Memory read bandwidth reference: threads sum disjoint parts of a buffer
 * far larger than the caches (the base vectors). */
typedef struct bw_job {
    const float *x;
    size_t n;
    double *part;
} bw_job;
static void bw_sum(void *ctx, int b, int e) {
    const bw_job *j = ctx;
    for (int t = b; t < e; t++) {
        size_t i0 = j->n * t / 64, i1 = j->n * (t + 1) / 64;
        float s[16] = {0};
        for (size_t i = i0; i + 16 <= i1; i += 16)
            for (int l = 0; l < 16; l++) s[l] += j->x[i + l];
        double a = 0;
        for (int l = 0; l < 16; l++) a += s[l];
        j->part[t] = a;
    }
}
static double read_bandwidth(const float *x, size_t n) {
    double part[64], best = 0;
    bw_job j = {x, n, part};
    for (int rep = 0; rep < 3; rep++) {
        double t0 = ml_now();
        ml_parallel_for(64, 1, bw_sum, &j);
        double gbs = n * 4.0 / 1e9 / (ml_now() - t0);
        if (gbs > best) best = gbs;
    }
    return best;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 1000000, d = argc > 2 ? atoi(argv[2]) : 512;
    const char *dir = argc > 3 ? argv[3] : "/tmp/magiclens-bench";
    const char *mode = argc > 4 ? argv[4] : "all";
    if (n < 1 || d < 1 || (strcmp(mode, "all") && strcmp(mode, "exact") && strcmp(mode, "ivf"))) {
        fprintf(stderr, "usage: bench_search [n] [d] [dir] [all|exact|ivf]\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* progress shows when piped to a file */
    printf("bench_search: n=%d d=%d threads=%d isa=%s load=%.2f\n", n, d, ml_num_threads(),
           ml_isa_name(ml_isa_active()), load_now());
    float *q, *base = load_or_make(dir, n, d, &q);
    printf("memory read bandwidth (%d threads, sum over the %.0f MB of base vectors): %.1f GB/s\n",
           ml_num_threads(), (double)n * d * 4 / 1e6, read_bandwidth(base, (size_t)n * d));
    rows rc = {base, d};
    ml_error err = {{0}};
    ml_hit *gt = malloc(sizeof(ml_hit) * NQ_ALL * K), *res = malloc(sizeof(ml_hit) * NQ_ALL * K);
    ml_search_opts o = {.k = K, .row_f32 = row_of, .row_ctx = &rc};
    double exact_i8_med = 0, exact_i8_b256 = 0;
    int want_exact = strcmp(mode, "ivf") != 0;
    printf("\nexact: single = %d queries one at a time (ms: median, p95); batches of 64 and 256\n"
           "(ms per query, queries/s, GB/s of stored vectors scanned: one pass per batch);\n"
           "recall@10 of the batch-256 answers vs the float32 top-10\n", SINGLE_Q);
    printf("%-5s %7s %7s %8s %8s %8s %8s %8s %8s %8s %8s %7s %5s\n", "type", "MB", "build_s",
           "1q_med", "1q_p95", "1q_GB/s", "b64_ms", "b64_q/s", "b256_ms", "b256_q/s", "b256_GB/s",
           "recall", "load");
    for (int t = 0; t < 3; t++) {
        ml_vec_type ty = (ml_vec_type)t;
        if (!want_exact && ty != ML_VEC_F32) continue;
        double t0 = ml_now();
        ml_vecset *vs = ml_vecset_new(d, ty, &err);
        if (!vs || ml_vecset_append(vs, base, (size_t)n, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        double build = ml_now() - t0, mb = ml_vecset_bytes(vs) / 1e6;
        if (ty == ML_VEC_F32) { /* the ground truth: float32 top-10 of all queries */
            must(ml_vecset_search(vs, q, NQ_ALL, &o, gt, &err), &err);
            char gp[600];
            snprintf(gp, sizeof gp, "%s/gt_%d_%d.npy", dir, n, d);
            float *ids = malloc(sizeof(float) * NQ_ALL * K);
            for (int i = 0; i < NQ_ALL * K; i++) ids[i] = (float)gt[i].row;
            if (ml_npy_write_f32(gp, ids, NQ_ALL, K, &err)) fprintf(stderr, "warning: %s\n", err.msg);
            free(ids);
            double c1 = 0, c10 = 0;
            for (int i = 0; i < NQ_ALL; i++) c1 += gt[i * K].score, c10 += gt[i * K + K - 1].score;
            printf("(queries: mean cosine to their 1st neighbour %.3f, to their 10th %.3f)\n",
                   c1 / NQ_ALL, c10 / NQ_ALL);
            if (!want_exact) {
                ml_vecset_free(vs);
                continue;
            }
        }
        lat l1 = time_single(vs_fn, vs, q, d, &o, SINGLE_Q, res);
        double b64 = time_batch(vs_fn, vs, q, d, &o, 64, 2, res);
        double b256 = time_batch(vs_fn, vs, q, d, &o, 256, 1, res);
        double r = recall(res, gt, 256);
        printf("%-5s %7.0f %7.2f %8.2f %8.2f %8.1f %8.3f %8.0f %8.3f %8.0f %8.1f %7.4f %5.2f\n",
               ml_vec_type_name(ty), mb, build, l1.med, l1.p95, mb / l1.med, b64, 1e3 / b64, b256,
               1e3 / b256, mb / (b256 * 256), r, load_now());
        if (ty == ML_VEC_I8) {
            exact_i8_med = l1.med, exact_i8_b256 = b256;
            for (int bs = 1; bs <= 256; bs *= 4) {
                double mbt = time_batch(vs_fn, vs, q, d, &o, bs, 256 / bs < 2 ? 2 : 256 / bs, res);
                printf("  int8 batch %3d: %.3f ms/query, %.0f queries/s, %.1f GB/s scanned\n", bs,
                       mbt, 1e3 / mbt, mb / (mbt * bs));
            }
        }
        ml_vecset_free(vs);
    }
    if (strcmp(mode, "exact") == 0) return 0;

    double t0 = ml_now();
    ml_ivf_params p = {.seed = 1};
    ml_ivf *ivf = ml_ivf_build(base, (size_t)n, d, &p, &err);
    if (!ivf) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    int nlist = (int)lround(sqrt((double)n)); /* ivf.c's default_nlist */
    /* int8 codes (d rounded up to 4) + scale + 64-bit id per row, two copies
     * of the float32 centroids; list padding to 64 rows not counted. */
    double ivf_mb = ((double)n * ((d + 3) / 4 * 4 + 4 + 8) + 2.0 * nlist * d * 4) / 1e6;
    printf("\nIVF build (defaults: nlist %d, seed 1): %.1f s, ~%.0f MB (+ the float32 rows for "
           "re-ranking), load %.2f\n", nlist, ml_now() - t0, ivf_mb, load_now());
    printf("single = %d queries (ms: median, p95); batch 256 = 3 batches; recall@10 over 768 "
           "queries;\nx_exact = speed-up over exact int8 (single: median vs median; batch 256)\n",
           SINGLE_IVF);
    printf("%-7s %8s %8s %10s %10s %10s %9s %9s %5s\n", "nprobe", "1q_med", "1q_p95", "b256_ms/q",
           "b256_q/s", "recall@10", "x_exact1", "x_exactB", "load");
    int probes[] = {0, 1, 2, 4, 8, 16, 32, 64};
    for (size_t i = 0; i < sizeof probes / sizeof *probes; i++) {
        o.nprobe = probes[i];
        lat l1 = time_single(ivf_fn, ivf, q, d, &o, SINGLE_IVF, res);
        double msb = time_batch(ivf_fn, ivf, q, d, &o, 256, 3, res);
        double r = recall(res, gt, 768);
        char label[16];
        snprintf(label, sizeof label, probes[i] ? "%d" : "default", probes[i]);
        printf("%-7s %8.3f %8.3f %10.4f %10.0f %10.4f %9.1f %9.1f %5.2f\n", label, l1.med, l1.p95,
               msb, 1e3 / msb, r, exact_i8_med > 0 ? exact_i8_med / l1.med : 0,
               exact_i8_b256 > 0 ? exact_i8_b256 / msb : 0, load_now());
    }
    ml_ivf_free(ivf);
    free(base), free(q), free(gt), free(res);
    return 0;
}
