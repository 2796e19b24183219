/* magiclens - command-line tool.
 *
 *   magiclens embed --model M [--vocab V] --input items.jsonl --output out.npy|out.jsonl
 *   magiclens embed --model M --image X.jpg [--text T]
 *   magiclens convert --model X.pkl [--vocab V] --output X.mlens
 *   magiclens tokenize [--vocab V] [--truncate] TEXT...
 *   magiclens info --model M
 *   magiclens index / search / export: see cmd_index.c
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/dist.h"
#include "core/error.h"
#include "core/progress.h"
#include "core/threads.h"
#include "io/native.h"
#include "io/npy.h"
#include "io/tokenizer.h"
#include "kernels/cpu.h"
#include "kernels/precision.h"
#include "magiclens.h"
#include "model/loader.h"
#include "model/model.h"

static void usage(FILE *f) {
    fprintf(f,
            "magiclens %s - image retrieval with open-ended instructions (MagicLens)\n\n"
            "usage:\n"
            "  magiclens embed --model M [--vocab V] --input items.jsonl --output out.npy|out.jsonl\n"
            "                  [--batch N] [--threads N] [--precision P] [--truncate] [--quiet]\n"
            "  magiclens embed --model M [--vocab V] --image X.jpg [--text T] [--truncate]\n"
            "  magiclens convert --model X.pkl [--vocab V] --output X.mlens\n"
            "  magiclens tokenize [--vocab V] [--truncate] TEXT...\n"
            "  magiclens info --model M [--vocab V]\n"
            "  magiclens index --model M --images DIR|LIST|TAR [--images ...] --output X.mlindex\n"
            "                  [--batch N] [--precision P] [--threads N] [--verbose] [--quiet]\n"
            "  magiclens index --model M --add PATH [--add ...] --output X.mlindex  # drops nothing\n"
            "  magiclens index --remove PATH [--remove ...] --output X.mlindex  # files, dirs, tars\n"
            "  magiclens index --output X.mlindex --ann [--nlist N]           # approximate search\n"
            "  magiclens index --output X.mlindex --compact    # drop deleted/superseded records\n"
            "  magiclens search --index X.mlindex --model M [--image Q] [--text T] [--like ID]\n"
            "                  [-k N] [--offset N] [--min-score S] [--prefix P] [--json]\n"
            "                  [--store auto|f32|f16|int8] [--exact] [--nprobe N]\n"
            "  magiclens export --index X.mlindex --output DIR  # embeddings.npy, metadata.jsonl\n"
            "  magiclens export --model M.pkl|M.mlens|model.safetensors [--init-fusion random]\n"
            "                  [--seed S] [--format flax|mlens] --output OUT  # docs/training-init.md\n"
            "  magiclens train --init MODEL --data TRIPLETS --output DIR [--steps N] [--batch B]\n"
            "                  [--lr LR] [--train fusion|all] [--resume] ...  # docs/training.md\n"
            "  magiclens mine pages|fetch|pairs|instruct ...  # web pages -> triplets, docs/mining.md\n"
            "  magiclens eval BENCHMARK --data DIR --model M [--split val|test] [--output DIR]\n"
            "                  [--k 50] [--json]   # circo cirr fiq dtin genecis t2i custom\n"
            "  magiclens serve --index X.mlindex --model M [--host 127.0.0.1] [--port 8080]\n"
            "                  [--token T] [--workers N] [--queue N] [--web DIR]  # docs/serve.md\n"
            "  magiclens cpu                                  # instruction sets, default precision\n"
            "  magiclens bench --model M [--precision P] [--batch B] [--threads N] [--seconds S]\n"
            "                  [--text T]\n\n"
            "--precision fp32|bf16|int8|auto: numeric precision of the CLIP towers; auto (the\n"
            "default) is the fastest one that meets the accuracy bounds on this CPU: here %s.\n"
            "--threads N: compute threads (default: every CPU the process may use).\n"
            "M is an official checkpoint (magic_lens_clip_base.pkl / _large.pkl) or a .mlens\n"
            "file.  The vocabulary comes from --vocab, else $MAGICLENS_VOCAB, else the .mlens.\n",
            ML_VERSION, ml_precision_choice_name(ml_precision_auto()));
}

typedef struct opts {
    const char *model, *vocab, *input, *output, *image, *text;
    int batch, threads, truncate, quiet, text_set, precision;
    double seconds;
} opts;

static int parse_opts(int argc, char **argv, opts *o) {
    static const struct option longopts[] = {
        {"model", required_argument, 0, 'm'},  {"vocab", required_argument, 0, 'v'},
        {"input", required_argument, 0, 'i'},  {"output", required_argument, 0, 'o'},
        {"image", required_argument, 0, 'I'},  {"text", required_argument, 0, 't'},
        {"batch", required_argument, 0, 'b'},  {"threads", required_argument, 0, 'j'},
        {"truncate", no_argument, 0, 'T'},     {"quiet", no_argument, 0, 'q'},
        {"precision", required_argument, 0, 'p'}, {"seconds", required_argument, 0, 's'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    o->batch = 8;
    o->precision = ML_PRECISION_AUTO;
    o->seconds = 10;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:v:i:o:I:t:b:j:Tqhp:s:", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': o->model = optarg; break;
        case 'v': o->vocab = optarg; break;
        case 'i': o->input = optarg; break;
        case 'o': o->output = optarg; break;
        case 'I': o->image = optarg; break;
        case 't': o->text = optarg; o->text_set = 1; break;
        case 'b': o->batch = atoi(optarg); break;
        case 'j': o->threads = atoi(optarg); break;
        case 'T': o->truncate = 1; break;
        case 'q': o->quiet = 1; break;
        case 's': o->seconds = atof(optarg); break;
        case 'p':
            o->precision = !strcmp(optarg, "auto") ? ML_PRECISION_AUTO : ml_precision_parse(optarg);
            if (o->precision == -1 && strcmp(optarg, "auto")) {
                fprintf(stderr, "magiclens: --precision must be fp32, bf16, int8 or auto\n");
                return -1;
            }
            break;
        case 'h': usage(stdout); exit(0);
        default: return -1;
        }
    }
    if (o->batch < 1 || o->batch > 4096) {
        fprintf(stderr, "magiclens: --batch must be between 1 and 4096\n");
        return -1;
    }
    if (o->threads > 0) ml_set_threads(o->threads);
    return 0;
}

ml_model *cli_load_model(const char *path, const char *vocab, int precision) {
    if (!path) {
        fprintf(stderr, "magiclens: --model is required\n");
        return NULL;
    }
    ml_error err;
    ml_load_options lo = {precision};
    ml_model *m = ml_model_load_opts(path, vocab, &lo, &err);
    if (!m) fprintf(stderr, "magiclens: %s\n", err.msg);
    return m;
}

int cli_parse_precision(const char *s) {
    int p = ml_precision_parse(s);
    if (p < 0) fprintf(stderr, "magiclens: --precision must be fp32, bf16, int8 or auto\n");
    return p;
}

static ml_model *load_model(const opts *o) { return cli_load_model(o->model, o->vocab, o->precision); }

/* ---- embed ------------------------------------------------------------ */

typedef struct item {
    json_t *id;      /* owned reference */
    char *image;     /* resolved path, owned */
    char *text;      /* owned, may be NULL */
    char *error;     /* owned, set when the item failed */
} item;

static char *resolve_path(const char *base_dir, const char *p) {
    if (p[0] == '/' || !base_dir) return strdup(p);
    size_t n = strlen(base_dir) + strlen(p) + 2;
    char *r = malloc(n);
    if (r) snprintf(r, n, "%s/%s", base_dir, p);
    return r;
}

static char *item_error(const char *fmt, const char *a) {
    char buf[600];
    snprintf(buf, sizeof buf, fmt, a);
    return strdup(buf);
}

/* Parses one JSONL line into `it`; problems become it->error, not failures. */
static void parse_item(const char *line, long lineno, const char *base_dir, item *it) {
    memset(it, 0, sizeof *it);
    json_error_t je;
    json_t *o = json_loads(line, 0, &je);
    char where[64];
    snprintf(where, sizeof where, "line %ld", lineno);
    if (!o || !json_is_object(o)) {
        it->id = json_string(where);
        it->error = item_error("not a JSON object (%s)", o ? "wrong type" : je.text);
        json_decref(o);
        return;
    }
    json_t *id = json_object_get(o, "id");
    it->id = id ? json_incref(id) : json_string(where);
    json_t *img = json_object_get(o, "image"), *txt = json_object_get(o, "text");
    if (!json_is_string(img)) it->error = strdup("missing \"image\" (a path string)");
    else it->image = resolve_path(base_dir, json_string_value(img));
    if (txt && !json_is_null(txt)) {
        if (!json_is_string(txt)) {
            free(it->error);
            it->error = strdup("\"text\" is not a string");
        } else {
            it->text = strdup(json_string_value(txt));
        }
    }
    json_decref(o);
}

static void free_items(item *items, long n) {
    for (long i = 0; i < n; i++) {
        json_decref(items[i].id);
        free(items[i].image);
        free(items[i].text);
        free(items[i].error);
    }
    free(items);
}

static item *read_items(const char *path, long *count) {
    FILE *f = strcmp(path, "-") ? fopen(path, "r") : stdin;
    if (!f) {
        fprintf(stderr, "magiclens: %s: cannot open: %s\n", path, strerror(errno));
        return NULL;
    }
    char *dup = strdup(path), *base_dir = strcmp(path, "-") ? dirname(dup) : NULL;
    item *items = NULL;
    long n = 0, cap = 0, lineno = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    while ((len = getline(&line, &lcap, f)) != -1) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (len == 0) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            item *grown = realloc(items, sizeof *items * (size_t)cap);
            if (!grown) {
                fprintf(stderr, "magiclens: out of memory reading %s\n", path);
                free_items(items, n);
                items = NULL;
                n = 0;
                break;
            }
            items = grown;
        }
        parse_item(line, lineno, base_dir, &items[n++]);
    }
    free(line);
    free(dup);
    if (f != stdin) fclose(f);
    *count = n;
    return items ? items : calloc(1, sizeof(item));
}

/* Runs the model on one loaded batch; failed items keep NaN rows. */
static void embed_loaded(ml_model *m, item *items, const ml_loader_batch *b, int truncate,
                         float *out) {
    int D = ml_model_config(m)->embed_dim, k = 0;
    const float *px[4096];
    const char *texts[4096];
    int map[4096], ok[4096];
    for (int i = 0; i < b->count; i++) {
        item *it = &items[b->first + i];
        for (int d = 0; d < D; d++) out[(size_t)(b->first + i) * D + d] = NAN;
        if (b->errors[i] && !it->error) it->error = strdup(b->errors[i]);
        if (!b->pixels[i]) continue;
        px[k] = b->pixels[i], texts[k] = it->text, map[k++] = b->first + i;
    }
    float *tmp = malloc(sizeof(float) * (size_t)(k ? k : 1) * D);
    ml_error err;
    if (!tmp) {
        for (int j = 0; j < k; j++) items[map[j]].error = strdup("out of memory");
        return;
    }
    if (k && ml_embed_pixels_batch(m, k, px, texts, truncate, tmp, NULL, ok, &err) != 0) {
        /* Find each failed item's own reason (the batch reports the first). */
        for (int j = 0; j < k; j++) {
            if (ok[j]) continue;
            ml_error e1;
            int ok1;
            float *row = tmp + (size_t)j * D;
            if (ml_embed_pixels_batch(m, 1, &px[j], &texts[j], truncate, row, NULL, &ok1, &e1) != 0)
                items[map[j]].error = strdup(e1.msg);
            else
                ok[j] = 1;
        }
    }
    for (int j = 0; j < k; j++)
        if (ok[j]) memcpy(out + (size_t)map[j] * D, tmp + (size_t)j * D, sizeof(float) * D);
    free(tmp);
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static int write_jsonl(const char *path, const item *items, long n, const float *emb, int D) {
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "magiclens: %s: cannot create: %s\n", path, strerror(errno));
        return -1;
    }
    for (long i = 0; i < n; i++) {
        json_t *o = json_object();
        json_object_set(o, "id", items[i].id);
        if (items[i].error) {
            json_object_set_new(o, "error", json_string(items[i].error));
        } else {
            json_t *a = json_array();
            for (int d = 0; d < D; d++) json_array_append_new(a, json_real(emb[(size_t)i * D + d]));
            json_object_set_new(o, "embedding", a);
        }
        char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9));
        fprintf(f, "%s\n", s ? s : "{}");
        free(s);
        json_decref(o);
    }
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        fprintf(stderr, "magiclens: %s: write failed\n", path);
        return -1;
    }
    return 0;
}

static void report_errors(const item *items, long n, long *failed) {
    *failed = 0;
    for (long i = 0; i < n; i++) {
        if (!items[i].error) continue;
        char *id = json_dumps(items[i].id, JSON_ENCODE_ANY | JSON_COMPACT);
        fprintf(stderr, "magiclens: item %s: %s\n", id ? id : "?", items[i].error);
        free(id);
        (*failed)++;
    }
}

static int embed_file(ml_model *m, const opts *o) {
    if (!o->output) {
        fprintf(stderr, "magiclens: embed --input needs --output out.npy or out.jsonl\n");
        return 2;
    }
    long n = 0, failed = 0;
    item *items = read_items(o->input, &n);
    if (!items) return 1;
    int D = ml_model_config(m)->embed_dim;
    float *emb = malloc(sizeof(float) * (size_t)(n ? n : 1) * D);
    if (!emb) {
        fprintf(stderr, "magiclens: out of memory for %ld embeddings\n", n);
        free_items(items, n);
        return 1;
    }
    const char **paths = calloc((size_t)(n ? n : 1), sizeof *paths);
    ml_error err;
    ml_loader *ld = NULL;
    for (long i = 0; paths && i < n; i++) paths[i] = items[i].error ? NULL : items[i].image;
    if (!paths || !(ld = ml_loader_start(m, (int)n, paths, o->batch, &err))) {
        fprintf(stderr, "magiclens: %s\n", paths ? err.msg : "out of memory");
        free(paths), free(emb);
        free_items(items, n);
        return 1;
    }
    ml_progress pr;
    ml_progress_start(&pr, "embed", n, !o->quiet && n >= 16);
    ml_loader_batch b;
    while (ml_loader_next(ld, &b) == 0) {
        embed_loaded(m, items, &b, o->truncate, emb);
        ml_loader_release(ld, &b);
        ml_progress_add(&pr, b.count);
    }
    ml_progress_finish(&pr);
    ml_loader_free(ld);
    free(paths);
    report_errors(items, n, &failed);
    int rc;
    if (ends_with(o->output, ".jsonl")) {
        rc = write_jsonl(o->output, items, n, emb, D);
    } else {
        rc = ml_npy_write_f32(o->output, emb, n, D, &err);
        if (rc != 0) fprintf(stderr, "magiclens: %s\n", err.msg);
    }
    if (!o->quiet)
        fprintf(stderr, "magiclens: embedded %ld of %ld items into %s\n", n - failed, n, o->output);
    free(emb);
    free_items(items, n);
    return rc != 0 ? 1 : failed ? 1 : 0;
}

static int embed_one(ml_model *m, const opts *o) {
    ml_image img;
    ml_error err;
    if (ml_image_load(o->image, 0, &img, &err) != 0) {
        fprintf(stderr, "magiclens: %s\n", err.msg);
        return 1;
    }
    int D = ml_model_config(m)->embed_dim;
    float *e = malloc(sizeof(float) * (size_t)D);
    int rc = e ? ml_embed(m, &img, o->text, o->truncate, e, &err) : -1;
    ml_image_free(&img);
    if (rc != 0) {
        fprintf(stderr, "magiclens: %s: %s\n", o->image, e ? err.msg : "out of memory");
        free(e);
        return 1;
    }
    json_t *obj = json_object(), *a = json_array();
    json_object_set_new(obj, "image", json_string(o->image));
    json_object_set_new(obj, "text", json_string(o->text ? o->text : ""));
    for (int d = 0; d < D; d++) json_array_append_new(a, json_real(e[d]));
    json_object_set_new(obj, "embedding", a);
    char *s = json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(9));
    printf("%s\n", s);
    free(s);
    json_decref(obj);
    free(e);
    return 0;
}

static int cmd_embed(int argc, char **argv) {
    opts o;
    if (parse_opts(argc, argv, &o) != 0) return 2;
    if (!o.input == !o.image) {
        fprintf(stderr, "magiclens: embed needs exactly one of --input FILE or --image FILE\n");
        return 2;
    }
    ml_model *m = load_model(&o);
    if (!m) return 1;
    int rc = o.input ? embed_file(m, &o) : embed_one(m, &o);
    ml_model_free(m);
    return rc;
}

/* ---- convert / tokenize / info ----------------------------------------- */

static char *config_json(const ml_config *c) {
    json_t *o = json_pack(
        "{s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i}", "format",
        "magiclens", "embed_dim", c->embed_dim, "image_size", c->image_size, "patch_size",
        c->patch_size, "vision_width", c->vision_width, "vision_layers", c->vision_layers,
        "vision_heads", c->vision_heads, "text_width", c->text_width, "text_layers",
        c->text_layers, "text_heads", c->text_heads, "vocab_size", c->vocab_size,
        "context_length", c->context_length, "fusion_layers", c->fusion_layers, "fusion_heads",
        c->fusion_heads, "fusion_ff", c->fusion_ff, "pool_heads", c->pool_heads, "pool_head_dim",
        c->pool_head_dim);
    char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(o);
    return s;
}

static int read_file(const char *path, unsigned char **data, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t cap = 1 << 20, n = 0, r;
    unsigned char *buf = malloc(cap);
    while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            unsigned char *g = realloc(buf, cap *= 2);
            if (!g) free(buf);
            buf = g;
        }
    }
    fclose(f);
    if (!buf) return -1;
    *data = buf;
    *len = n;
    return 0;
}

static const char *vocab_source(const opts *o) {
    if (o->vocab) return o->vocab;
    return getenv("MAGICLENS_VOCAB");
}

static int cmd_convert(int argc, char **argv) {
    opts o;
    if (parse_opts(argc, argv, &o) != 0) return 2;
    o.precision = ML_PRECISION_FP32; /* the file keeps the checkpoint's own weights */
    const char *vpath = vocab_source(&o);
    if (!o.output || !vpath) {
        fprintf(stderr, "magiclens: convert needs --model, --output and a vocabulary "
                        "(--vocab or MAGICLENS_VOCAB)\n");
        return 2;
    }
    ml_model *m = load_model(&o);
    if (!m) return 1;
    unsigned char *vocab = NULL;
    size_t vlen = 0;
    ml_error err;
    int rc = 1;
    if (read_file(vpath, &vocab, &vlen) != 0) {
        fprintf(stderr, "magiclens: %s: cannot read vocabulary\n", vpath);
    } else {
        /* Copy only the network's tensors: a .mlens input also holds blobs. */
        ml_tensor_set net = {0};
        int ok = 1;
        for (size_t i = 0; i < m->tensors.count && ok; i++) {
            const ml_tensor *t = &m->tensors.items[i];
            if (!strncmp(t->name, "vocab/", 6) || !strncmp(t->name, "meta/", 5)) continue;
            ok = ml_tensor_set_add(&net, t->name, t->dtype, t->ndim, t->shape, t->data, t->nbytes,
                                   &err) == 0;
        }
        char *cfg = config_json(ml_model_config(m));
        if (ok && ml_native_write(o.output, &net, cfg, vocab, vlen, &err) == 0) rc = 0;
        else fprintf(stderr, "magiclens: %s\n", err.msg);
        if (rc == 0 && !o.quiet)
            fprintf(stderr, "magiclens: wrote %s (%zu tensors)\n", o.output, net.count);
        free(cfg);
        ml_tensor_set_free(&net);
    }
    free(vocab);
    ml_model_free(m);
    return rc;
}

static int cmd_tokenize(int argc, char **argv) {
    opts o;
    if (parse_opts(argc, argv, &o) != 0) return 2;
    const char *vpath = vocab_source(&o);
    ml_error err;
    if (!vpath) {
        fprintf(stderr, "magiclens: no vocabulary: pass --vocab or set MAGICLENS_VOCAB "
                        "(scripts/download-model.sh fetches it)\n");
        return 2;
    }
    ml_tokenizer *t = ml_tokenizer_load(vpath, &err);
    if (!t) {
        fprintf(stderr, "magiclens: %s\n", err.msg);
        return 1;
    }
    int rc = 0;
    for (int i = optind; i < argc; i++) {
        int32_t ids[77];
        if (ml_tokenizer_encode(t, argv[i], 77, o.truncate, ids, &err) < 0) {
            fprintf(stderr, "magiclens: %s\n", err.msg);
            rc = 1;
            continue;
        }
        printf("[");
        for (int k = 0; k < 77; k++) printf(k ? ",%d" : "%d", ids[k]);
        printf("]\n");
    }
    ml_tokenizer_free(t);
    return rc;
}

static int cmd_info(int argc, char **argv) {
    opts o;
    if (parse_opts(argc, argv, &o) != 0) return 2;
    o.precision = ML_PRECISION_FP32;
    ml_model *m = load_model(&o);
    if (!m) return 1;
    char *s = config_json(ml_model_config(m));
    printf("%s\n", s);
    free(s);
    ml_model_free(m);
    return 0;
}

/* ---- bench ------------------------------------------------------------ */

/* Times `fn` over whole batches until `seconds` pass (at least 2 batches
 * after one warm-up); returns items per second. */
static double time_batches(ml_model *m, int batch, const float *const *px, const char *const *texts,
                           double seconds, int *ok_all) {
    int D = ml_model_config(m)->embed_dim, *ok = calloc((size_t)batch, sizeof(int));
    float *out = malloc(sizeof(float) * (size_t)batch * D);
    ml_error err;
    double rate = 0;
    *ok_all = ok && out && ml_embed_pixels_batch(m, batch, px, texts, 0, out, NULL, ok, &err) == 0;
    if (*ok_all) {
        long done = 0;
        double t0 = ml_now(), el = 0;
        while (done < 2L * batch || el < seconds) {
            ml_embed_pixels_batch(m, batch, px, texts, 0, out, NULL, ok, &err);
            done += batch;
            el = ml_now() - t0;
        }
        rate = done / el;
    }
    free(ok), free(out);
    return rate;
}

static int cmd_bench(int argc, char **argv) {
    opts o;
    if (parse_opts(argc, argv, &o) != 0) return 2;
    ml_model *m = load_model(&o);
    if (!m) return 1;
    const ml_config *c = ml_model_config(m);
    size_t px = (size_t)c->image_size * c->image_size * 3;
    float *pix = malloc(sizeof(float) * px * (size_t)o.batch);
    const float **ptrs = calloc((size_t)o.batch, sizeof *ptrs);
    const char **texts = calloc((size_t)o.batch, sizeof *texts);
    if (!pix || !ptrs || !texts) {
        fprintf(stderr, "magiclens: out of memory\n");
        return 1;
    }
    /* Normalised-looking inputs: the speed does not depend on the values. */
    uint32_t r = 12345;
    for (size_t i = 0; i < px * (size_t)o.batch; i++) {
        r = r * 1664525u + 1013904223u;
        pix[i] = (float)(r >> 8) / 16777216.0f * 4.0f - 2.0f;
    }
    for (int i = 0; i < o.batch; i++) ptrs[i] = pix + px * (size_t)i, texts[i] = o.text;
    int ok1 = 0, ok2 = 1;
    double img_rate = time_batches(m, o.batch, ptrs, NULL, o.seconds, &ok1), q_rate = 0;
    if (o.text_set) q_rate = time_batches(m, o.batch, ptrs, texts, o.seconds, &ok2);
    int rc = ok1 && ok2 ? 0 : 1;
    if (rc) {
        fprintf(stderr, "magiclens: bench: embedding failed\n");
    } else {
        printf("{\"images_per_s\": %.3f, \"ms_per_image\": %.2f, \"precision\": \"%s\", "
               "\"isa\": \"%s\", \"threads\": %d, \"batch\": %d, \"image_size\": %d, "
               "\"embed_dim\": %d",
               img_rate, 1000.0 / img_rate, ml_precision_choice_name(ml_model_precision(m)),
               ml_isa_name(ml_isa_active()), ml_num_threads(), o.batch, c->image_size,
               c->embed_dim);
        if (o.text_set)
            printf(", \"queries_per_s\": %.3f, \"ms_per_query\": %.2f", q_rate, 1000.0 / q_rate);
        printf("}\n");
    }
    free(pix), free(ptrs), free(texts);
    ml_model_free(m);
    return rc;
}

/* Prints what this machine supports, for scripts and bug reports. */
static int cmd_cpu(void) {
    printf("{\"isa_active\": \"%s\", \"isa_supported\": [", ml_isa_name(ml_isa_active()));
    for (int i = ML_ISA_SCALAR, n = 0; i < ML_ISA_COUNT; i++)
        if (ml_isa_supported((ml_isa)i)) printf(n++ ? ", \"%s\"" : "\"%s\"", ml_isa_name((ml_isa)i));
    printf("], \"avx512_bf16\": %s, \"avx512_vnni\": %s, \"precision_auto\": \"%s\", "
           "\"threads\": %d}\n",
           ml_cpu_has_avx512_bf16() ? "true" : "false", ml_cpu_has_avx512_vnni() ? "true" : "false",
           ml_precision_choice_name(ml_precision_auto()), ml_num_threads());
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    argv[1] = argv[0];
    argc--;
    argv++;
    if (!strcmp(cmd, "embed")) return cmd_embed(argc, argv);
    if (!strcmp(cmd, "convert")) return cmd_convert(argc, argv);
    if (!strcmp(cmd, "tokenize")) return cmd_tokenize(argc, argv);
    if (!strcmp(cmd, "info")) return cmd_info(argc, argv);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc, argv);
    if (!strcmp(cmd, "cpu")) return cmd_cpu();
    if (!strcmp(cmd, "export")) return cmd_export_index(argc, argv);
    if (!strcmp(cmd, "eval")) return cmd_eval(argc, argv);
    if (!strcmp(cmd, "serve")) return cmd_serve(argc, argv);
    if (!strcmp(cmd, "mine")) return cmd_mine(argc, argv);
    if (!strcmp(cmd, "index") || !strcmp(cmd, "search") || !strcmp(cmd, "train")) {
        if (ml_dist_init(&argc, &argv) != 0) {
            fprintf(stderr, "magiclens: started by mpirun, but MPI is not available (built "
                            "without OpenMPI?)\n");
            return 1;
        }
        int rc = !strcmp(cmd, "index")    ? cmd_index(argc, argv)
                 : !strcmp(cmd, "search") ? cmd_search(argc, argv)
                                          : cmd_train(argc, argv);
        /* One rank failing alone must not leave the others waiting. */
        if (ml_dist_size() > 1 && !ml_dist_all_true(rc == 0) && rc == 0) rc = 1;
        ml_dist_finalize();
        return rc;
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("magiclens %s\n", ML_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "magiclens: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
