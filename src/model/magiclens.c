/* magiclens.c - the public model API: loading, tokenizing, embedding. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/mem.h"
#include "core/threads.h"
#include "io/native.h"
#include "io/tokenizer.h"
#include "kernels/ops.h"
#include "model/model.h"
#include "model/preprocess.h"

#define VOCAB_TENSOR "vocab/bpe_simple_vocab_16e6.txt.gz"
#define VOCAB_HELP                                                                         \
    "get bpe_simple_vocab_16e6.txt.gz with scripts/download-model.sh (or from "            \
    "https://github.com/openai/CLIP/raw/main/clip/bpe_simple_vocab_16e6.txt.gz) and pass " \
    "--vocab or set MAGICLENS_VOCAB"

static int load_tokenizer(ml_model *m, const char *vocab_path, ml_error *err) {
    if (!vocab_path || !*vocab_path) vocab_path = getenv("MAGICLENS_VOCAB");
    if (vocab_path && *vocab_path) {
        m->tok = ml_tokenizer_load(vocab_path, err);
        return m->tok ? 0 : -1;
    }
    const ml_tensor *v = ml_tensor_set_find(&m->tensors, VOCAB_TENSOR);
    if (!v) return ml_fail(err, "no CLIP vocabulary: the model file has none; " VOCAB_HELP);
    m->tok = ml_tokenizer_from_gz(v->data, v->nbytes, err);
    return m->tok ? 0 : ml_fail_prefix(err, "vocabulary stored in the model file");
}

static int compute_empty_text(ml_model *m, ml_error *err) {
    int32_t ids[ML_MAX_SEQ];
    m->empty_text_emb = ml_malloc(sizeof(float) * (size_t)m->cfg.embed_dim, err);
    if (!m->empty_text_emb) return -1;
    if (ml_tokenizer_encode(m->tok, "", m->cfg.context_length, 0, ids, err) < 0) return -1;
    return ml_text_forward(m, ids, m->empty_text_emb, err);
}

ml_model *ml_model_load(const char *path, const char *vocab_path, ml_error *err) {
    ml_model *m = ml_calloc(1, sizeof *m, err);
    if (!m) return NULL;
    int rc = ml_native_is_native(path) ? ml_native_load(path, &m->tensors, err)
                                       : ml_checkpoint_load_pkl(path, &m->tensors, err);
    if (rc == 0 && ml_model_bind(m, err) != 0) rc = ml_fail_prefix(err, "%s", path);
    if (rc == 0) rc = load_tokenizer(m, vocab_path, err);
    if (rc == 0) rc = compute_empty_text(m, err);
    if (rc != 0) {
        ml_model_free(m);
        return NULL;
    }
    return m;
}

void ml_model_free(ml_model *m) {
    if (!m) return;
    free(m->vision.blocks);
    free(m->text.blocks);
    free(m->fusion);
    free(m->empty_text_emb);
    free(m->pool_qscale);
    ml_tokenizer_free(m->tok);
    ml_tensor_set_free(&m->tensors);
    free(m);
}

const ml_config *ml_model_config(const ml_model *m) { return &m->cfg; }

int ml_model_tokenize(const ml_model *m, const char *text, int truncate, int32_t *ids,
                      ml_error *err) {
    return ml_tokenizer_encode(m->tok, text ? text : "", m->cfg.context_length, truncate, ids,
                               err) < 0
               ? -1
               : 0;
}

int ml_embed(ml_model *m, const ml_image *img, const char *text, int truncate, float *out,
             ml_error *err) {
    int ok = 0;
    return ml_embed_batch(m, 1, &img, &text, truncate, out, &ok, err);
}

/* Preprocessing of a batch, one task per image. */
typedef struct prep_job {
    const ml_model *m;
    const ml_image *const *imgs;
    float **pixels;
    int *ok;
    ml_error *errs;
} prep_job;

static void prep_tasks(void *ctx, int begin, int end) {
    prep_job *j = ctx;
    for (int i = begin; i < end; i++)
        j->ok[i] = ml_preprocess_image(j->imgs[i], j->m->cfg.image_size, j->pixels[i], &j->errs[i]) == 0;
}

/* Text and fusion for item i, whose CLIP image embedding is img_emb. */
static int embed_item(ml_model *m, const float *img_emb, const char *text, int truncate,
                      float *txt_buf, float *out, ml_error *err) {
    const float *txt = m->empty_text_emb;
    if (text && *text) {
        int32_t ids[ML_MAX_SEQ];
        if (ml_tokenizer_encode(m->tok, text, m->cfg.context_length, truncate, ids, err) < 0)
            return -1;
        if (ml_text_forward(m, ids, txt_buf, err) != 0) return -1;
        txt = txt_buf;
    }
    return ml_fusion_forward(m, img_emb, txt, out, err);
}

static void fail_item(int i, float *out, int D, int *item_ok, ml_error *first, int *nfail,
                      const ml_error *e) {
    for (int d = 0; d < D; d++) out[(size_t)i * D + d] = 0.0f / 0.0f;
    item_ok[i] = 0;
    if ((*nfail)++ == 0 && first) *first = *e;
}

int ml_embed_batch(ml_model *m, int n, const ml_image *const *imgs, const char *const *texts,
                   int truncate, float *out, int *item_ok, ml_error *err) {
    int D = m->cfg.embed_dim, S = m->cfg.image_size, nfail = 0, ngood = 0;
    size_t px = (size_t)S * S * 3;
    float *pix = ml_aligned_alloc((size_t)n * px * sizeof(float), err);
    float **ptrs = ml_calloc((size_t)n, sizeof *ptrs, err);
    float *clip = ml_aligned_alloc((size_t)n * D * sizeof(float) + sizeof(float) * D, err);
    ml_error *errs = ml_calloc((size_t)n, sizeof *errs, err);
    if (!pix || !ptrs || !clip || !errs) {
        free(pix), free(ptrs), free(clip), free(errs);
        return -1;
    }
    for (int i = 0; i < n; i++) ptrs[i] = pix + (size_t)i * px;
    prep_job pj = {m, imgs, ptrs, item_ok, errs};
    ml_parallel_for(n, 1, prep_tasks, &pj);
    /* Compact the images that preprocessed into one vision batch. */
    for (int i = 0; i < n; i++) {
        if (item_ok[i]) ptrs[ngood++] = ptrs[i];
        else fail_item(i, out, D, item_ok, err, &nfail, &errs[i]);
    }
    int rc = ngood ? ml_vision_forward(m, ngood, (const float *const *)ptrs, clip, err) : 0;
    if (rc != 0) /* out of memory for the batch: every remaining item failed */
        for (int i = 0; i < n; i++) item_ok[i] = 0;
    float *txt_buf = clip + (size_t)n * D;
    for (int i = 0, g = 0; i < n && rc == 0; i++) {
        if (!item_ok[i]) continue;
        ml_error e;
        if (embed_item(m, clip + (size_t)g++ * D, texts ? texts[i] : NULL, truncate, txt_buf,
                       out + (size_t)i * D, &e) != 0)
            fail_item(i, out, D, item_ok, err, &nfail, &e);
    }
    free(pix), free(ptrs), free(clip), free(errs);
    return rc == 0 && nfail == 0 ? 0 : -1;
}
