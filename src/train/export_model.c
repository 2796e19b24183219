/* export_model.c - `magiclens export --model`: a model (released .pkl,
 * .mlens or Hugging Face CLIP safetensors, optionally with fresh fusion
 * layers) written as a Flax checkpoint or a .mlens (docs/training-init.md). */
#include "train/export_model.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/fileio.h"
#include "io/native.h"
#include "train/export_flax.h"
#include "train/init.h"

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

int ml_export_model(const ml_export_model_opts *o, size_t *ntensors, ml_error *err) {
    ml_tensor_set ts;
    *ntensors = 0;
    if (strcmp(o->format, "flax") && strcmp(o->format, "mlens"))
        return ml_fail(err, "--format must be flax or mlens");
    if (ml_train_init_load(o->model, o->init, o->seed, &ts, err) != 0) return -1;
    int rc = 0;
    if (!strcmp(o->format, "flax")) {
        rc = ml_export_flax_pkl_chunked(&ts, o->output, o->chunk, err);
    } else {
        unsigned char *vocab = NULL;
        size_t vlen = 0;
        char *cfg = mx_config(&ts);
        if (o->vocab && ml_read_all(o->vocab, 64u << 20, &vocab, &vlen, err) != 0) rc = -1;
        else if (!cfg) rc = ml_fail(err, "out of memory");
        else rc = ml_native_write(o->output, &ts, cfg, vocab, vlen, err);
        free(vocab);
        free(cfg);
    }
    if (rc == 0) *ntensors = ts.count;
    ml_tensor_set_free(&ts);
    return rc;
}
