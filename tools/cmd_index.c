/* cmd_index.c - the retrieval commands: index, search, export.
 *
 *   magiclens index  --model M --images SRC... --output X.mlindex [--add P] [--remove P]
 *   magiclens search --index X.mlindex --model M [--image Q] [--text T] [--like ID] [-k N]
 *   magiclens export --index X.mlindex --output DIR
 *
 * index and search run as one process, or as K MPI ranks under mpirun. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "core/dist.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/progress.h"
#include "index/indexer.h"
#include "index/searcher.h"
#include "index/store.h"
#include "io/native.h"
#include "io/npy.h"
#include "io/vocab.h"
#include "kernels/ops.h"
#include "train/export_flax.h"
#include "train/init.h"

#define MAX_SOURCES 1024

typedef struct ix_opts {
    const char *model, *vocab, *index, *output, *image, *text, *prefix, *store;
    const char *sources[MAX_SOURCES];
    int nsources, mode, batch, threads, precision, quiet, verbose, json, truncate, exact;
    int k, offset, ann, nlist, nprobe, compact;
    long long like;
    double min_score;
} ix_opts;

static int add_source(ix_opts *o, const char *s, int mode) {
    if (o->nsources && o->mode != mode) {
        fprintf(stderr, "magiclens: --images, --add and --remove cannot be mixed\n");
        return -1;
    }
    if (o->nsources == MAX_SOURCES) {
        fprintf(stderr, "magiclens: too many sources (max %d; use a list file)\n", MAX_SOURCES);
        return -1;
    }
    o->mode = mode;
    o->sources[o->nsources++] = s;
    return 0;
}

static int parse_number(const char *name, const char *v, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !(x >= lo && x <= hi)) {
        fprintf(stderr, "magiclens: %s %s: expected a number in [%g, %g]\n", name, v, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

static int parse(int argc, char **argv, ix_opts *o) {
    enum { O_ADD = 256, O_REMOVE, O_LIKE, O_OFFSET, O_MIN, O_PREFIX, O_JSON, O_STORE, O_EXACT,
           O_ANN, O_NLIST, O_NPROBE, O_VERBOSE, O_COMPACT };
    static const struct option lo[] = {
        {"model", required_argument, 0, 'm'},   {"vocab", required_argument, 0, 'v'},
        {"index", required_argument, 0, 'x'},   {"output", required_argument, 0, 'o'},
        {"images", required_argument, 0, 'i'},  {"add", required_argument, 0, O_ADD},
        {"remove", required_argument, 0, O_REMOVE}, {"image", required_argument, 0, 'I'},
        {"text", required_argument, 0, 't'},    {"like", required_argument, 0, O_LIKE},
        {"k", required_argument, 0, 'k'},       {"offset", required_argument, 0, O_OFFSET},
        {"min-score", required_argument, 0, O_MIN}, {"prefix", required_argument, 0, O_PREFIX},
        {"json", no_argument, 0, O_JSON},       {"store", required_argument, 0, O_STORE},
        {"exact", no_argument, 0, O_EXACT},     {"ann", no_argument, 0, O_ANN},
        {"nlist", required_argument, 0, O_NLIST}, {"nprobe", required_argument, 0, O_NPROBE},
        {"batch", required_argument, 0, 'b'},   {"threads", required_argument, 0, 'j'},
        {"precision", required_argument, 0, 'p'}, {"truncate", no_argument, 0, 'T'},
        {"quiet", no_argument, 0, 'q'},         {"verbose", no_argument, 0, O_VERBOSE},
        {"compact", no_argument, 0, O_COMPACT},
        {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    o->batch = 8, o->k = 10, o->precision = ML_PRECISION_AUTO, o->like = -1;
    o->min_score = -INFINITY;
    double x;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:v:x:o:i:I:t:k:b:j:p:Tq", lo, NULL)) != -1) {
        switch (c) {
        case 'm': o->model = optarg; break;
        case 'v': o->vocab = optarg; break;
        case 'x': o->index = optarg; break;
        case 'o': o->output = optarg; break;
        case 'i': if (add_source(o, optarg, ML_INDEX_SYNC)) return -1; break;
        case O_ADD: if (add_source(o, optarg, ML_INDEX_ADD)) return -1; break;
        case O_REMOVE: if (add_source(o, optarg, ML_INDEX_REMOVE)) return -1; break;
        case 'I': o->image = optarg; break;
        case 't': o->text = optarg; break;
        case O_LIKE:
            if (parse_number("--like", optarg, 0, 9e15, &x)) return -1;
            o->like = (long long)x;
            break;
        case 'k': if (parse_number("-k", optarg, 1, 100000, &x)) return -1; o->k = (int)x; break;
        case O_OFFSET:
            if (parse_number("--offset", optarg, 0, 1e9, &x)) return -1;
            o->offset = (int)x;
            break;
        case O_MIN: if (parse_number("--min-score", optarg, -2, 2, &o->min_score)) return -1; break;
        case O_PREFIX: o->prefix = optarg; break;
        case O_JSON: o->json = 1; break;
        case O_STORE: o->store = optarg; break;
        case O_EXACT: o->exact = 1; break;
        case O_ANN: o->ann = 1; break;
        case O_NLIST: if (parse_number("--nlist", optarg, 1, 1 << 20, &x)) return -1; o->nlist = (int)x; break;
        case O_NPROBE: if (parse_number("--nprobe", optarg, 1, 1 << 20, &x)) return -1; o->nprobe = (int)x; break;
        case 'b': if (parse_number("--batch", optarg, 1, 256, &x)) return -1; o->batch = (int)x; break;
        case 'j': if (parse_number("--threads", optarg, 1, 1024, &x)) return -1; o->threads = (int)x; break;
        case 'p':
            if (strcmp(optarg, "auto") == 0) o->precision = ML_PRECISION_AUTO;
            else if ((o->precision = cli_parse_precision(optarg)) < 0) return -1;
            break;
        case 'T': o->truncate = 1; break;
        case 'q': o->quiet = 1; break;
        case O_VERBOSE: o->verbose = 1; break;
        case O_COMPACT: o->compact = 1; break;
        default: return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "magiclens: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (o->threads > 0) ml_set_threads(o->threads);
    return 0;
}

static int need(const char *v, const char *what) {
    if (v) return 0;
    fprintf(stderr, "magiclens: %s is required\n", what);
    return -1;
}

/* ---- index ------------------------------------------------------------- */

static void print_stats(const char *dir, const ml_index_stats *st) {
    fprintf(stderr,
            "%s: %lld items; %lld found, %lld added, %lld updated, %lld touched, %lld unchanged, "
            "%lld removed, %lld failed; %.1f s",
            dir, st->items, st->found, st->added, st->updated, st->touched, st->unchanged,
            st->removed, st->failed, st->seconds);
    if (st->added + st->updated > 0 && st->seconds > 0)
        fprintf(stderr, " (%.1f images/s)", (st->added + st->updated) / st->seconds);
    fputc('\n', stderr);
}

int cmd_index(int argc, char **argv) {
    ix_opts o;
    if (parse(argc, argv, &o) != 0) return 2;
    if (!o.index) o.index = o.output; /* `index --output X` names the index */
    if (need(o.index, "--output (the index folder)") != 0) return 2;
    if (!o.nsources && !o.ann && !o.compact) {
        fprintf(stderr, "magiclens: give --images SRC (or --add / --remove PATH, --compact, --ann)\n");
        return 2;
    }
    ml_error err;
    int rc = 0;
    if (o.nsources) {
        ml_model *m = NULL;
        if (o.mode != ML_INDEX_REMOVE) {
            if (need(o.model, "--model") != 0) return 2;
            if (!(m = cli_load_model(o.model, o.vocab, o.precision))) return 1;
        }
        ml_index_opts io = {o.sources, o.nsources, o.mode, o.batch, !o.quiet, o.verbose, 20,
                            o.model, m ? ml_precision_choice_name(ml_model_precision(m)) : NULL};
        ml_index_stats st;
        rc = ml_index_run(m, o.index, &io, &st, &err);
        ml_model_free(m);
        if (rc != 0) {
            fprintf(stderr, "magiclens: index %s: %s\n", o.index, err.msg);
            return 1;
        }
        if (ml_dist_rank() == 0 && !o.quiet) print_stats(o.index, &st);
    }
    if (o.compact) {
        long long freed;
        if (ml_index_compact(o.index, &freed, &err) != 0) {
            fprintf(stderr, "magiclens: index --compact %s: %s\n", o.index, err.msg);
            return 1;
        }
        if (ml_dist_rank() == 0 && !o.quiet)
            fprintf(stderr, "%s: compacted, %lld bytes freed\n", o.index, freed);
    }
    if (o.ann && ml_dist_rank() == 0) {
        double t0 = ml_now();
        if (ml_searcher_build_ann(o.index, o.nlist, &err) != 0) {
            fprintf(stderr, "magiclens: index --ann %s: %s\n", o.index, err.msg);
            return 1;
        }
        if (!o.quiet) fprintf(stderr, "%s: ANN structure built in %.1f s\n", o.index, ml_now() - t0);
    }
    return 0;
}

/* ---- search ------------------------------------------------------------ */

/* The query vector and its space, computed on rank 0. */
static int make_query(const ix_opts *o, const ml_store *st, float *q, int *space) {
    if (!o->image && !o->text && o->like < 0) {
        fprintf(stderr, "magiclens: give --image, --text and/or --like ID\n");
        return 2;
    }
    if (o->image && o->like >= 0) {
        fprintf(stderr, "magiclens: --image and --like cannot be combined\n");
        return 2;
    }
    if (need(o->model, "--model") != 0) return 2;
    ml_model *m = cli_load_model(o->model, o->vocab, o->precision);
    if (!m) return 1;
    const ml_store_meta *meta = ml_store_get_meta(st);
    char fp[33];
    ml_model_fingerprint(m, fp);
    ml_error err;
    int rc = 0;
    if (strcmp(fp, meta->fingerprint) != 0) {
        fprintf(stderr, "magiclens: the index was built with another model (%s, fingerprint %s; "
                        "this one is %s)\n", meta->model_name, meta->fingerprint, fp);
        rc = 1;
    } else if (o->like >= 0) {
        const ml_item *it = ml_store_find_id(st, o->like);
        int ok;
        if (!it) fprintf(stderr, "magiclens: --like %lld: no such item in the index\n", o->like), rc = 1;
        else if (ml_embed_from_clip(m, 1, it->clip, &o->text, o->truncate, q, &ok, &err) != 0)
            fprintf(stderr, "magiclens: %s\n", err.msg), rc = 1;
        *space = ML_SPACE_MAGICLENS;
    } else if (o->image) {
        ml_image img;
        if (ml_image_load(o->image, 0, &img, &err) != 0 ||
            ml_embed(m, &img, o->text, o->truncate, q, &err) != 0) {
            fprintf(stderr, "magiclens: %s\n", err.msg);
            rc = 1;
        }
        if (img.rgb || rc == 0) ml_image_free(&img);
        *space = ML_SPACE_MAGICLENS;
    } else {
        if (ml_embed_clip_text(m, o->text, o->truncate, q, &err) != 0)
            fprintf(stderr, "magiclens: %s\n", err.msg), rc = 1;
        *space = ML_SPACE_CLIP;
    }
    ml_model_free(m);
    return rc;
}

static void print_results(const ix_opts *o, const ml_result *r, int n, double ms) {
    if (o->json) {
        json_t *arr = json_array();
        for (int i = 0; i < n; i++)
            json_array_append_new(arr, json_pack("{s:i, s:I, s:s, s:f}", "rank", o->offset + i + 1,
                                                 "id", (json_int_t)r[i].id, "path", r[i].path,
                                                 "score", (double)r[i].score));
        json_t *j = json_pack("{s:o, s:f}", "results", arr, "took_ms", ms);
        char *s = json_dumps(j, JSON_COMPACT);
        puts(s ? s : "{}");
        free(s);
        json_decref(j);
        return;
    }
    for (int i = 0; i < n; i++)
        printf("%d\t%.6f\t%lld\t%s\n", o->offset + i + 1, r[i].score, (long long)r[i].id, r[i].path);
}

/* MPI: every rank sends its top offset+k as (score, id, path) records; rank
 * 0 merges them by (score desc, id asc), the same order as one process. */
typedef struct wire_hit {
    float score;
    int64_t id;
    char *path;
} wire_hit;

static int cmp_wire(const void *a, const void *b) {
    const wire_hit *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static int gather_results(ml_result *r, int *n, int want, ml_error *err) {
    size_t len = 0;
    for (int i = 0; i < *n; i++) len += 12 + strlen(r[i].path) + 1;
    unsigned char *buf = malloc(len + 1), *p = buf;
    if (!buf) return ml_fail(err, "out of memory");
    for (int i = 0; i < *n; i++) {
        memcpy(p, &r[i].score, 4), memcpy(p + 4, &r[i].id, 8);
        size_t pl = strlen(r[i].path) + 1;
        memcpy(p + 12, r[i].path, pl);
        p += 12 + pl;
    }
    uint8_t *all;
    size_t lens[1024];
    if (ml_dist_size() > 1024) return free(buf), ml_fail(err, "too many ranks");
    int rc = ml_dist_gather(buf, len, &all, lens, err);
    free(buf);
    if (rc != 0 || ml_dist_rank() != 0) return rc;
    size_t total = 0, cnt = 0;
    for (int k = 0; k < ml_dist_size(); k++) total += lens[k];
    wire_hit *h = malloc(sizeof *h * (total / 13 + 1));
    for (size_t off = 0; h && off < total; cnt++) {
        memcpy(&h[cnt].score, all + off, 4), memcpy(&h[cnt].id, all + off + 4, 8);
        h[cnt].path = (char *)all + off + 12;
        off += 12 + strlen(h[cnt].path) + 1;
    }
    if (!h) return free(all), ml_fail(err, "out of memory");
    qsort(h, cnt, sizeof *h, cmp_wire);
    *n = (int)(cnt < (size_t)want ? cnt : (size_t)want);
    /* Paths now live in `all`: copy them (the caller frees via cli_keep). */
    for (int i = 0; i < *n; i++)
        r[i] = (ml_result){h[i].id, strdup(h[i].path), h[i].score};
    free(h), free(all);
    return 0;
}

static int run_search(const ix_opts *o, ml_searcher *s, const float *q, int space) {
    int K = ml_dist_size(), want = o->offset + o->k;
    ml_query qu = {q, space, K > 1 ? want : o->k, K > 1 ? 0 : o->offset, (float)o->min_score,
                   o->prefix, o->nprobe, o->like};
    ml_result *res = calloc((size_t)want, sizeof *res);
    int n = 0;
    ml_error err;
    double t0 = ml_now();
    int rc = res ? ml_searcher_search(s, &qu, res, &n, &err) : -1;
    if (!res) snprintf(err.msg, sizeof err.msg, "out of memory");
    if (!ml_dist_all_true(rc == 0)) {
        if (rc == 0) return 1;
        fprintf(stderr, "magiclens: search: %s\n", err.msg);
        free(res);
        return 1;
    }
    if (K > 1 && gather_results(res, &n, want, &err) != 0) {
        fprintf(stderr, "magiclens: search: %s\n", err.msg);
        free(res);
        return 1;
    }
    if (ml_dist_rank() == 0) {
        int first = K > 1 ? (o->offset < n ? o->offset : n) : 0;
        print_results(o, res + first, n - first, (ml_now() - t0) * 1e3);
        if (K > 1)
            for (int i = 0; i < n; i++) free((char *)res[i].path);
    }
    free(res);
    return 0;
}

int cmd_search(int argc, char **argv) {
    ix_opts o;
    if (parse(argc, argv, &o) != 0 || need(o.index, "--index") != 0) return 2;
    ml_searcher_opts so = {(ml_vec_type)-1, !o.exact, ml_dist_size(), ml_dist_rank()};
    if (o.store && strcmp(o.store, "auto") != 0 && ml_vec_type_parse(o.store, &so.store) != 0) {
        fprintf(stderr, "magiclens: --store %s: use auto, f32, f16 or int8\n", o.store);
        return 2;
    }
    ml_error err;
    ml_searcher *s = ml_searcher_open(o.index, &so, &err);
    if (!ml_dist_all_true(s != NULL)) {
        if (!s) fprintf(stderr, "magiclens: %s\n", err.msg);
        ml_searcher_close(s);
        return 1;
    }
    int D = ml_store_get_meta(ml_searcher_store(s))->dim;
    float *q = calloc((size_t)D + 1, sizeof *q);
    int space = 0, rc = 0;
    if (ml_dist_rank() == 0) {
        /* --like needs the item's CLIP embedding: look in the whole index. */
        ml_store *all = ml_dist_size() > 1 ? ml_store_open(o.index, ML_STORE_READ, NULL, &err) : NULL;
        rc = (ml_dist_size() > 1 && !all) ? (fprintf(stderr, "magiclens: %s\n", err.msg), 1)
                                          : make_query(&o, all ? all : ml_searcher_store(s), q, &space);
        ml_store_close(all);
    }
    int ok = ml_dist_all_true(rc == 0);
    if (ok) {
        ml_dist_bcast(q, sizeof(float) * D, 0);
        ml_dist_bcast(&space, sizeof space, 0);
        rc = run_search(&o, s, q, space);
    } else if (rc == 0) {
        rc = 1;
    }
    free(q);
    ml_searcher_close(s);
    return rc;
}

/* ---- export ------------------------------------------------------------- */

static char *out_path(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int write_metadata(const char *path, const ml_item *items, size_t n) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    for (size_t i = 0; i < n; i++) {
        char hash[33];
        for (int b = 0; b < 16; b++) sprintf(hash + 2 * b, "%02x", items[i].hash[b]);
        json_t *j = json_pack("{s:I, s:s, s:I, s:I, s:s}", "id", (json_int_t)items[i].id, "path",
                              items[i].path, "size", (json_int_t)items[i].size, "mtime_ns",
                              (json_int_t)items[i].mtime_ns, "hash", hash);
        char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
        if (s) fprintf(f, "%s\n", s);
        free(s);
        json_decref(j);
    }
    return fclose(f) == 0 ? 0 : -1;
}

/* ---- export of a model (docs/training-init.md) --------------------------- */

typedef struct mx_opts {
    const char *model, *format, *output, *init, *vocab;
    uint64_t seed, chunk;
    int quiet;
} mx_opts;

static int mx_parse(int argc, char **argv, mx_opts *o) {
    enum { O_FORMAT = 256, O_INIT, O_SEED, O_CHUNK };
    static const struct option lo[] = {
        {"model", required_argument, 0, 'm'},      {"output", required_argument, 0, 'o'},
        {"format", required_argument, 0, O_FORMAT}, {"init-fusion", required_argument, 0, O_INIT},
        {"seed", required_argument, 0, O_SEED},    {"vocab", required_argument, 0, 'v'},
        {"chunk-bytes", required_argument, 0, O_CHUNK}, {"quiet", no_argument, 0, 'q'},
        {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    o->format = "flax", o->chunk = ML_FLAX_MAX_CHUNK;
    int c;
    char *end;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:o:v:q", lo, NULL)) != -1) {
        switch (c) {
        case 'm': o->model = optarg; break;
        case 'o': o->output = optarg; break;
        case 'v': o->vocab = optarg; break;
        case 'q': o->quiet = 1; break;
        case O_FORMAT: o->format = optarg; break;
        case O_INIT: o->init = optarg; break;
        case O_SEED:
        case O_CHUNK:
            errno = 0;
            uint64_t v = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end || optarg[0] == '-') {
                fprintf(stderr, "magiclens: %s %s: expected a non-negative integer\n",
                        c == O_SEED ? "--seed" : "--chunk-bytes", optarg);
                return -1;
            }
            if (c == O_SEED) o->seed = v;
            else o->chunk = v;
            break;
        default: return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "magiclens: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (strcmp(o->format, "flax") && strcmp(o->format, "mlens")) {
        fprintf(stderr, "magiclens: --format must be flax or mlens\n");
        return -1;
    }
    return need(o->model, "--model") || need(o->output, "--output") ? -1 : 0;
}

static int64_t mx_dim(const ml_tensor_set *ts, const char *name, int axis) {
    const ml_tensor *t = ml_tensor_set_find(ts, name);
    return t && axis < t->ndim ? t->shape[axis] : 0;
}

static int mx_count(const ml_tensor_set *ts, const char *fmt) {
    char name[160];
    int n = 0;
    for (;; n++) {
        snprintf(name, sizeof name, fmt, n);
        if (!ml_tensor_set_find(ts, name)) return n;
    }
}

/* The informational meta/config.json of a .mlens, from the tensor shapes
 * (the keys `magiclens convert` writes). */
static char *mx_config(const ml_tensor_set *ts) {
    const char *vq = "clip/visual/transformer/resblocks_0/attn/query/kernel";
    const char *tq = "clip/text/transformer/resblocks_0/attn/query/kernel";
    const char *fq = "multimodal_encoder/x_layers_0/self_attention/query/w";
    const char *pq = "contrastive_multimodal_pooler/pool_attn/query/w";
    int64_t P = mx_dim(ts, "clip/visual/conv1/kernel", 0);
    int64_t ntok = mx_dim(ts, "clip/visual/positional_embedding", 0), g = 0;
    while ((g + 1) * (g + 1) <= ntok - 1) g++;
    json_t *o = json_pack(
        "{s:s,s:I,s:I,s:I,s:I,s:i,s:I,s:I,s:i,s:I,s:I,s:I,s:i,s:I,s:I,s:I,s:I}", "format",
        "magiclens", "embed_dim", (json_int_t)mx_dim(ts, "clip/visual/proj/kernel", 1),
        "image_size", (json_int_t)(P * g), "patch_size", (json_int_t)P, "vision_width",
        (json_int_t)mx_dim(ts, "clip/visual/class_embedding", 0), "vision_layers",
        mx_count(ts, "clip/visual/transformer/resblocks_%d/ln_1/scale"), "vision_heads",
        (json_int_t)mx_dim(ts, vq, 1), "text_width",
        (json_int_t)mx_dim(ts, "clip/text/positional_embedding", 1), "text_layers",
        mx_count(ts, "clip/text/transformer/resblocks_%d/ln_1/scale"), "text_heads",
        (json_int_t)mx_dim(ts, tq, 1), "vocab_size",
        (json_int_t)mx_dim(ts, "clip/text/token_embedding/embedding", 0), "context_length",
        (json_int_t)mx_dim(ts, "clip/text/positional_embedding", 0), "fusion_layers",
        mx_count(ts, "multimodal_encoder/x_layers_%d/layer_norm/scale"), "fusion_heads",
        (json_int_t)mx_dim(ts, fq, 1), "fusion_ff",
        (json_int_t)mx_dim(ts, "multimodal_encoder/x_layers_0/ff_layer/ffn_layer1/linear/w", 1),
        "pool_heads", (json_int_t)mx_dim(ts, pq, 1), "pool_head_dim", (json_int_t)mx_dim(ts, pq, 2));
    char *s = o ? json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    return s;
}

/* magiclens export --model M.pkl|M.mlens|M.safetensors --format flax|mlens --output OUT */
static int cmd_export_model(int argc, char **argv) {
    mx_opts o;
    if (mx_parse(argc, argv, &o) != 0) return 2;
    ml_error err;
    ml_tensor_set ts;
    if (ml_train_init_load(o.model, o.init, o.seed, &ts, &err) != 0) {
        fprintf(stderr, "magiclens: %s\n", err.msg);
        return 1;
    }
    int rc = 0;
    if (!strcmp(o.format, "flax")) {
        rc = ml_export_flax_pkl_chunked(&ts, o.output, o.chunk, &err);
    } else {
        char vbuf[4096];
        const char *vp = ml_vocab_find(o.vocab, vbuf, sizeof vbuf) == 0 ? vbuf : NULL;
        unsigned char *vocab = NULL;
        size_t vlen = 0;
        char *cfg = mx_config(&ts);
        if (vp && ml_read_all(vp, 64u << 20, &vocab, &vlen, &err) != 0) rc = -1;
        else if (!cfg) rc = ml_fail(&err, "out of memory");
        else rc = ml_native_write(o.output, &ts, cfg, vocab, vlen, &err);
        if (rc == 0 && !vp && !o.quiet)
            fprintf(stderr, "magiclens: note: no vocabulary found (%s), none stored in %s\n",
                    ML_VOCAB_ORDER, o.output);
        free(vocab);
        free(cfg);
    }
    if (rc != 0) fprintf(stderr, "magiclens: %s\n", err.msg);
    else if (!o.quiet)
        fprintf(stderr, "magiclens: wrote %s (%s, %zu tensors)\n", o.output, o.format, ts.count);
    ml_tensor_set_free(&ts);
    return rc == 0 ? 0 : 1;
}

int cmd_export_index(int argc, char **argv) {
    /* --model without --index: a model export (training init / Flax .pkl). */
    int model = 0, index = 0;
    for (int i = 1; i < argc; i++) {
        model |= !strcmp(argv[i], "--model") || !strncmp(argv[i], "--model=", 8) ||
                 !strcmp(argv[i], "-m");
        index |= !strcmp(argv[i], "--index") || !strncmp(argv[i], "--index=", 8) ||
                 !strcmp(argv[i], "-x");
    }
    if (model && !index) return cmd_export_model(argc, argv);
    ix_opts o;
    if (parse(argc, argv, &o) != 0 || need(o.index, "--index") != 0 || need(o.output, "--output") != 0)
        return 2;
    const char *dir = o.output;
    ml_error err;
    ml_store *st = ml_store_open(o.index, ML_STORE_READ, NULL, &err);
    if (!st) {
        fprintf(stderr, "magiclens: %s\n", err.msg);
        return 1;
    }
    size_t n = ml_store_count(st);
    int D = ml_store_get_meta(st)->dim, rc = 0;
    const ml_item *items = ml_store_items(st);
    float *emb = malloc(sizeof(float) * (n ? n : 1) * D), *clip = malloc(sizeof(float) * (n ? n : 1) * D);
    char *pe = out_path(dir, "embeddings.npy"), *pc = out_path(dir, "clip_embeddings.npy");
    char *pm = out_path(dir, "metadata.jsonl");
    if (!emb || !clip || !pe || !pc || !pm || (mkdir(dir, 0755) != 0 && errno != EEXIST)) {
        fprintf(stderr, "magiclens: export: cannot create %s: %s\n", dir, strerror(errno));
        rc = 1;
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        memcpy(emb + i * D, items[i].emb, sizeof(float) * D);
        memcpy(clip + i * D, items[i].clip, sizeof(float) * D);
        ml_l2_normalize(clip + i * D, D); /* as clip-retrieval ships them */
    }
    if (rc == 0 && (ml_npy_write_f32(pe, emb, (int64_t)n, D, &err) != 0 ||
                    ml_npy_write_f32(pc, clip, (int64_t)n, D, &err) != 0)) {
        fprintf(stderr, "magiclens: export: %s\n", err.msg);
        rc = 1;
    }
    if (rc == 0 && write_metadata(pm, items, n) != 0) {
        fprintf(stderr, "magiclens: export: cannot write %s\n", pm);
        rc = 1;
    }
    if (rc == 0 && !o.quiet)
        fprintf(stderr, "%s: %zu items -> %s (embeddings.npy, clip_embeddings.npy, metadata.jsonl)\n",
                o.index, n, dir);
    free(emb), free(clip), free(pe), free(pc), free(pm);
    ml_store_close(st);
    return rc;
}
