/* cmd_index.c - the retrieval commands: index, search, export.
 *
 *   magiclens index  --model M --images SRC... --output X.mlindex [--add P] [--remove P]
 *   magiclens search --index X.mlindex --model M [--image Q] [--text T] [--like ID] [-k N]
 *   magiclens export --index X.mlindex --output DIR
 *
 * index and search run as one process, or as K MPI ranks under mpirun.
 * The work is the public index API (include/magiclens_index.h); this file
 * parses the options, calls it and prints. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/dist.h"
#include "core/progress.h"
#include "magiclens.h"

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
            if (cli_number(NULL, "--like", optarg, 0, 9e15, &x)) return -1;
            o->like = (long long)x;
            break;
        case 'k': if (cli_number(NULL, "-k", optarg, 1, 100000, &x)) return -1; o->k = (int)x; break;
        case O_OFFSET:
            if (cli_number(NULL, "--offset", optarg, 0, 1e9, &x)) return -1;
            o->offset = (int)x;
            break;
        case O_MIN: if (cli_number(NULL, "--min-score", optarg, -2, 2, &o->min_score)) return -1; break;
        case O_PREFIX: o->prefix = optarg; break;
        case O_JSON: o->json = 1; break;
        case O_STORE: o->store = optarg; break;
        case O_EXACT: o->exact = 1; break;
        case O_ANN: o->ann = 1; break;
        case O_NLIST: if (cli_number(NULL, "--nlist", optarg, 1, 1 << 20, &x)) return -1; o->nlist = (int)x; break;
        case O_NPROBE: if (cli_number(NULL, "--nprobe", optarg, 1, 1 << 20, &x)) return -1; o->nprobe = (int)x; break;
        case 'b': if (cli_number(NULL, "--batch", optarg, 1, 256, &x)) return -1; o->batch = (int)x; break;
        case 'j': if (cli_number(NULL, "--threads", optarg, 1, 1024, &x)) return -1; o->threads = (int)x; break;
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
    if (cli_need(o.index, "--output (the index folder)") != 0) return 2;
    if (!o.nsources && !o.ann && !o.compact) {
        fprintf(stderr, "magiclens: give --images SRC (or --add / --remove PATH, --compact, --ann)\n");
        return 2;
    }
    ml_error err;
    if (o.nsources) {
        ml_model *m = NULL;
        if (o.mode != ML_INDEX_REMOVE) {
            if (cli_need(o.model, "--model") != 0) return 2;
            if (!(m = cli_load_model(o.model, o.vocab, o.precision))) return 1;
        }
        ml_index_update_opts uo = {.batch = o.batch, .progress = !o.quiet, .verbose = o.verbose,
                                   .max_errors = 20, .model_name = o.model};
        ml_index_stats st;
        int rc = ml_index_update(o.index, m, o.mode, o.sources, o.nsources, &uo, &st, &err);
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
        if (ml_index_build_ann(o.index, o.nlist, &err) != 0) {
            fprintf(stderr, "magiclens: index --ann %s: %s\n", o.index, err.msg);
            return 1;
        }
        if (!o.quiet) fprintf(stderr, "%s: ANN structure built in %.1f s\n", o.index, ml_now() - t0);
    }
    return 0;
}

/* ---- search ------------------------------------------------------------ */

static void print_results(const ix_opts *o, const ml_index_hit *r, int n, double ms) {
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

/* The query embedding: the model (and the image) are loaded on rank 0. */
static int query_vector(const ix_opts *o, ml_index *ix, const ml_index_query *q, float *vec,
                        int *space) {
    ml_model *m = NULL;
    ml_image img = {0};
    ml_error err;
    int rc = 0;
    if (ml_dist_rank() == 0) {
        if (!(m = cli_load_model(o->model, o->vocab, o->precision))) rc = 1;
        else if (o->image && ml_image_load(o->image, 0, &img, &err) != 0)
            fprintf(stderr, "magiclens: %s\n", err.msg), rc = 1;
    }
    if (!ml_dist_all_true(rc == 0)) {
        ml_model_free(m);
        return 1;
    }
    ml_index_query qi = *q;
    qi.image = o->image ? &img : NULL;
    if (ml_index_query_vector(ix, m, &qi, vec, space, &err) != 0) {
        if (ml_dist_rank() == 0) fprintf(stderr, "magiclens: %s\n", err.msg);
        rc = 1;
    }
    if (img.rgb) ml_image_free(&img);
    ml_model_free(m);
    return rc;
}

int cmd_search(int argc, char **argv) {
    ix_opts o;
    if (parse(argc, argv, &o) != 0 || cli_need(o.index, "--index") != 0) return 2;
    if (o.store && strcmp(o.store, "auto") != 0 && strcmp(o.store, "f32") != 0 &&
        strcmp(o.store, "f16") != 0 && strcmp(o.store, "int8") != 0) {
        fprintf(stderr, "magiclens: --store %s: use auto, f32, f16 or int8\n", o.store);
        return 2;
    }
    ml_error err;
    ml_index_open_opts oo = {o.store, o.exact};
    ml_index *ix = ml_index_open(o.index, &oo, &err);
    if (!ix) {
        fprintf(stderr, "magiclens: %s\n", err.msg);
        return 1;
    }
    int rc = 0;
    if (!o.image && !o.text && o.like < 0) {
        fprintf(stderr, "magiclens: give --image, --text and/or --like ID\n");
        rc = 2;
    } else if (o.image && o.like >= 0) {
        fprintf(stderr, "magiclens: --image and --like cannot be combined\n");
        rc = 2;
    } else if (cli_need(o.model, "--model") != 0) {
        rc = 2;
    }
    ml_index_query q = {NULL, o.text, o.like, o.truncate, o.k, o.offset, (float)o.min_score,
                        o.prefix, o.nprobe};
    float *vec = calloc((size_t)ml_index_dim(ix) + 1, sizeof *vec);
    int space = 0;
    if (rc == 0 && !vec) fprintf(stderr, "magiclens: out of memory\n"), rc = 1;
    if (rc == 0) rc = query_vector(&o, ix, &q, vec, &space);
    ml_index_hit *hits = rc == 0 ? calloc((size_t)o.k, sizeof *hits) : NULL;
    if (rc == 0 && !hits) fprintf(stderr, "magiclens: out of memory\n"), rc = 1;
    if (rc == 0) {
        int n = 0;
        double t0 = ml_now();
        if (ml_index_search_vector(ix, vec, space, &q, hits, &n, &err) != 0) {
            fprintf(stderr, "magiclens: search: %s\n", err.msg);
            rc = 1;
        } else if (ml_dist_rank() == 0) {
            print_results(&o, hits, n, (ml_now() - t0) * 1e3);
        }
    }
    free(hits), free(vec);
    ml_index_close(ix);
    return rc;
}

/* ---- export ------------------------------------------------------------- */

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
    if (parse(argc, argv, &o) != 0 || cli_need(o.index, "--index") != 0 || cli_need(o.output, "--output") != 0)
        return 2;
    ml_error err;
    ml_index_open_opts oo = {NULL, 1};
    ml_index *ix = ml_index_open(o.index, &oo, &err);
    if (!ix) {
        fprintf(stderr, "magiclens: %s\n", err.msg);
        return 1;
    }
    int rc = 0;
    if (ml_index_export(ix, o.output, &err) != 0) {
        fprintf(stderr, "magiclens: export: %s\n", err.msg);
        rc = 1;
    } else if (!o.quiet) {
        fprintf(stderr, "%s: %zu items -> %s (embeddings.npy, clip_embeddings.npy, metadata.jsonl)\n",
                o.index, ml_index_count(ix), o.output);
    }
    ml_index_close(ix);
    return rc;
}
