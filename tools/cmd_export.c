/* cmd_export.c - `magiclens export --model`: a model written out as a Flax
 * checkpoint (.pkl) or a .mlens, optionally with freshly initialised fusion
 * layers (docs/training-init.md).  `export --index` is in cmd_index.c. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/error.h"
#include "core/fileio.h"
#include "io/native.h"
#include "io/vocab.h"
#include "train/export_flax.h"
#include "train/init.h"

static int need(const char *v, const char *what) {
    if (v) return 0;
    fprintf(stderr, "magiclens: %s is required\n", what);
    return -1;
}

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
int cmd_export_model(int argc, char **argv) {
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
