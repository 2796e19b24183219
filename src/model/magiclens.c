/* magiclens.c - the public model API: loading, tokenizing, embedding. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "core/error.h"
#include "core/mem.h"
#include "core/threads.h"
#include "io/native.h"
#include "io/tokenizer.h"
#include "io/vocab.h"
#include "kernels/cpu.h"
#include "kernels/ops.h"
#include "model/model.h"
#include "model/preprocess.h"

#define VOCAB_TENSOR "vocab/" ML_VOCAB_FILE

/* The lookup order of io/vocab.h.  With no vocabulary anywhere the model
 * still loads: the empty instruction is SOT + EOT, which needs no BPE
 * merges, so image-only embeddings, indexing and --like searches work; any
 * other text is refused by model_encode with what to do. */
static int load_tokenizer(ml_model *m, const char *vocab_path, ml_error *err) {
    vocab_path = ml_vocab_user_path(vocab_path);
    if (vocab_path) {
        m->tok = ml_tokenizer_load(vocab_path, err);
        return m->tok ? 0 : -1;
    }
    const ml_tensor *v = ml_tensor_set_find(&m->tensors, VOCAB_TENSOR);
    if (v) {
        m->tok = ml_tokenizer_from_gz(v->data, v->nbytes, err);
        return m->tok ? 0 : ml_fail_prefix(err, "vocabulary stored in the model file");
    }
    char found[4096];
    if (ml_vocab_search_files(found, sizeof found) == 0) {
        m->tok = ml_tokenizer_load(found, err);
        return m->tok ? 0 : -1;
    }
    return 0;
}

/* Text to ids; without a vocabulary only blank text (SOT + EOT) works. */
static int model_encode(const ml_model *m, const char *text, int truncate, int32_t *ids,
                        ml_error *err) {
    if (m->tok) return ml_tokenizer_encode(m->tok, text, m->cfg.context_length, truncate, ids, err);
    const char *c = text;
    while (*c == ' ' || (*c >= '\t' && *c <= '\r')) c++;
    if (*c)
        return ml_fail(err, "the instruction \"%.60s\" needs the CLIP vocabulary (%s), and none "
                            "was found in: %s; get it with scripts/download-model.sh", text,
                       ML_VOCAB_FILE, ML_VOCAB_ORDER);
    memset(ids, 0, sizeof(int32_t) * (size_t)m->cfg.context_length);
    ids[0] = ML_TOKEN_SOT, ids[1] = ML_TOKEN_EOT;
    return 2;
}

static int compute_empty_text(ml_model *m, ml_error *err) {
    int32_t ids[ML_MAX_SEQ];
    m->empty_text_emb = ml_malloc(sizeof(float) * (size_t)m->cfg.embed_dim, err);
    if (!m->empty_text_emb) return -1;
    if (model_encode(m, "", 0, ids, err) < 0) return -1;
    return ml_text_forward(m, ids, m->empty_text_emb, err);
}

/* auto's accuracy bound is bf16's: cosine >= 0.999 to the float64
 * reference (tests/t_precision.sh), so int8 (>= 0.995) is never chosen.
 * bf16 where the CPU has fast bf16 dot products (AMX; AVX512-BF16 on AMD
 * Zen 4 / 5: about twice the float32 rate); elsewhere bf16 weights are
 * widened into the float32 kernel (avx2-bf16w, avx512-bf16w): no faster
 * than float32 (bench_qgemm: within a few percent either way), and less
 * exact, so float32. */
int ml_precision_auto(void) {
    if (ml_isa_active() == ML_ISA_AMX || (ml_isa_active() == ML_ISA_AVX512 && ml_cpu_bf16_dot()))
        return ML_PRECISION_BF16;
    return ML_PRECISION_FP32;
}

const char *ml_precision_auto_reason(void) {
    if (ml_precision_auto() == ML_PRECISION_BF16)
        return ml_isa_active() == ML_ISA_AMX
                   ? "bf16: AMX tiles run bf16 several times faster than float32, and bf16 meets "
                     "auto's bound (cosine >= 0.999 to float64); int8 (>= 0.995) does not"
                   : "bf16: this CPU's AVX512-BF16 dot products run about twice the float32 rate, "
                     "and bf16 meets auto's bound (cosine >= 0.999 to float64); int8 (>= 0.995) "
                     "does not";
    if (ml_isa_active() == ML_ISA_SCALAR)
        return "fp32: no SIMD path; the portable bf16 and int8 kernels are slower than float32";
    if (ml_isa_active() == ML_ISA_AVX512 && ml_cpu_has_avx512_bf16())
        return "fp32: this CPU's AVX512-BF16 dot products are no faster than float32 FMA (Intel "
               "without AMX), so bf16 weights run the float32 kernel (no faster, less exact); "
               "int8 is faster but its bound (cosine >= 0.995) is below auto's (>= 0.999)";
    return "fp32: without bf16 dot products, bf16 weights run the float32 kernel (no faster, "
           "less exact); int8 is faster but its bound (cosine >= 0.995) is below auto's (>= 0.999)";
}

const char *ml_precision_choice_name(int precision) {
    return precision == ML_PRECISION_AUTO ? "auto" : ml_precision_name((ml_precision)precision);
}

int ml_model_precision(const ml_model *m) { return m->precision; }

int ml_model_has_vocab(const ml_model *m) { return m->tok != NULL; }

/* A forced instruction set the machine cannot run is the user's mistake:
 * say so rather than silently running another path. */
static int check_forced_isa(ml_error *err) {
    const char *env = getenv("MAGICLENS_ISA");
    if (!env || !*env) return 0;
    int isa = ml_isa_parse(env);
    if (isa < 0)
        return ml_fail(err, "MAGICLENS_ISA=%s: unknown instruction set (use scalar, avx2, avx512, "
                            "amx, or on ARM64 neon, dotprod, i8mm, bf16)", env);
    if (!ml_isa_supported((ml_isa)isa))
        return ml_fail(err, "MAGICLENS_ISA=%s: this CPU (or the OS) cannot run it; `magiclens "
                            "cpu` lists the supported ones", env);
    return ml_isa_set((ml_isa)isa, err);
}

ml_model *ml_model_load_opts(const char *path, const char *vocab_path,
                             const ml_load_options *opts, ml_error *err) {
    if (check_forced_isa(err) != 0) return NULL;
    int prec = opts ? opts->precision : ML_PRECISION_FP32;
    if (prec == ML_PRECISION_AUTO) prec = ml_precision_auto();
    if (prec < ML_PRECISION_FP32 || prec > ML_PRECISION_INT8) {
        ml_fail(err, "unknown precision %d", prec);
        return NULL;
    }
    ml_model *m = ml_calloc(1, sizeof *m, err);
    if (!m) return NULL;
    int rc = ml_native_is_native(path) ? ml_native_load(path, &m->tensors, err)
                                       : ml_checkpoint_load_pkl(path, &m->tensors, err);
    if (rc == 0 && ml_model_bind(m, err) != 0) rc = ml_fail_prefix(err, "%s", path);
    if (rc == 0) rc = ml_model_pack(m, (ml_precision)prec, err);
    if (rc == 0) rc = load_tokenizer(m, vocab_path, err);
    if (rc == 0) rc = compute_empty_text(m, err);
    if (rc != 0) {
        ml_model_free(m);
        return NULL;
    }
    return m;
}

ml_model *ml_model_load(const char *path, const char *vocab_path, ml_error *err) {
    ml_load_options o = {ML_PRECISION_FP32};
    return ml_model_load_opts(path, vocab_path, &o, err);
}

void ml_model_free(ml_model *m) {
    if (!m) return;
    ml_model_unpack(m);
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
    return model_encode(m, text ? text : "", truncate, ids, err) < 0 ? -1 : 0;
}

int ml_embed(ml_model *m, const ml_image *img, const char *text, int truncate, float *out,
             ml_error *err) {
    int ok = 0;
    return ml_embed_batch(m, 1, &img, &text, truncate, out, &ok, err);
}

int ml_model_preprocess(const ml_model *m, const ml_image *img, float *pixels, ml_error *err) {
    return ml_preprocess_image(img, m->cfg.image_size, pixels, err);
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
        j->ok[i] = ml_model_preprocess(j->m, j->imgs[i], j->pixels[i], &j->errs[i]) == 0;
}

/* The CLIP text embedding of an instruction: the cached empty one, or
 * computed into buf.  Returns the embedding or NULL (err set). */
static const float *text_embedding(ml_model *m, const char *text, int truncate, float *buf,
                                   ml_error *err) {
    if (!text || !*text) return m->empty_text_emb;
    int32_t ids[ML_MAX_SEQ];
    if (model_encode(m, text, truncate, ids, err) < 0)
        return NULL;
    return ml_text_forward(m, ids, buf, err) == 0 ? buf : NULL;
}

static void nan_row(float *row, int D) {
    for (int d = 0; d < D; d++) row[d] = NAN;
}

int ml_embed_clip_image(ml_model *m, int n, const float *const *pixels, float *clip_raw,
                        ml_error *err) {
    return ml_vision_forward(m, n, pixels, clip_raw, err);
}

int ml_embed_from_clip(ml_model *m, int n, const float *clip_raw, const char *const *texts,
                       int truncate, float *out, int *item_ok, ml_error *err) {
    int D = m->cfg.embed_dim, nfail = 0, g = 0;
    size_t nd = (size_t)n * D;
    /* txt: instruction embeddings [n, D]; then the good items' image
     * embeddings and fused outputs, compacted. */
    float *buf = ml_aligned_alloc(3 * nd * sizeof(float) + 64, err);
    const float **tptr = ml_calloc((size_t)n, sizeof *tptr, err);
    int *map = ml_calloc((size_t)n, sizeof *map, err);
    if (!buf || !tptr || !map) {
        for (int i = 0; i < n; i++) item_ok[i] = 0, nan_row(out + (size_t)i * D, D);
        free(buf), free(tptr), free(map);
        return -1;
    }
    float *txt = buf, *gimg = txt + nd, *gout = gimg + nd;
    for (int i = 0; i < n; i++) {
        ml_error e;
        const float *t = text_embedding(m, texts ? texts[i] : NULL, truncate, txt + (size_t)i * D, &e);
        item_ok[i] = t != NULL;
        if (!t) {
            nan_row(out + (size_t)i * D, D);
            if (nfail++ == 0 && err) *err = e;
            continue;
        }
        memcpy(gimg + (size_t)g * D, clip_raw + (size_t)i * D, sizeof(float) * D);
        tptr[g] = t;
        map[g++] = i;
    }
    ml_error e;
    if (g && ml_fusion_forward_batch(m, g, gimg, tptr, gout, &e) != 0) {
        for (int j = 0; j < g; j++) item_ok[map[j]] = 0, nan_row(out + (size_t)map[j] * D, D);
        if (nfail++ == 0 && err) *err = e;
    } else {
        for (int j = 0; j < g; j++)
            memcpy(out + (size_t)map[j] * D, gout + (size_t)j * D, sizeof(float) * D);
    }
    free(buf), free(tptr), free(map);
    return nfail ? -1 : 0;
}

int ml_embed_pixels_batch(ml_model *m, int n, const float *const *pixels,
                          const char *const *texts, int truncate, float *out, float *clip_img,
                          int *item_ok, ml_error *err) {
    int D = m->cfg.embed_dim;
    float *clip = ml_aligned_alloc((size_t)n * D * sizeof(float) + 64, err);
    if (!clip || ml_vision_forward(m, n, pixels, clip, err) != 0) {
        for (int i = 0; i < n; i++) item_ok[i] = 0, nan_row(out + (size_t)i * D, D);
        free(clip);
        return -1;
    }
    int rc = ml_embed_from_clip(m, n, clip, texts, truncate, out, item_ok, err);
    if (clip_img)
        for (int i = 0; i < n; i++) {
            memcpy(clip_img + (size_t)i * D, clip + (size_t)i * D, sizeof(float) * D);
            ml_l2_normalize(clip_img + (size_t)i * D, D);
        }
    free(clip);
    return rc;
}

int ml_embed_batch(ml_model *m, int n, const ml_image *const *imgs, const char *const *texts,
                   int truncate, float *out, int *item_ok, ml_error *err) {
    int D = m->cfg.embed_dim, S = m->cfg.image_size, ngood = 0, nfail = 0;
    size_t px = (size_t)S * S * 3;
    float *pix = ml_aligned_alloc((size_t)n * px * sizeof(float), err);
    float **ptrs = ml_calloc((size_t)n, sizeof *ptrs, err);
    const char **gtexts = ml_calloc((size_t)n, sizeof *gtexts, err);
    int *map = ml_calloc((size_t)n, sizeof *map, err), *gok = ml_calloc((size_t)n, sizeof *gok, err);
    float *gout = ml_aligned_alloc((size_t)n * D * sizeof(float), err);
    ml_error *errs = ml_calloc((size_t)n, sizeof *errs, err);
    int rc = -1;
    for (int i = 0; i < n; i++) item_ok[i] = 0;
    if (!pix || !ptrs || !gtexts || !map || !gok || !gout || !errs) goto done;
    for (int i = 0; i < n; i++) ptrs[i] = pix + (size_t)i * px;
    prep_job pj = {m, imgs, ptrs, item_ok, errs};
    ml_parallel_for(n, 1, prep_tasks, &pj);
    /* Only the images that preprocessed go through the model, as one batch. */
    for (int i = 0; i < n; i++) {
        if (item_ok[i]) {
            ptrs[ngood] = ptrs[i], gtexts[ngood] = texts ? texts[i] : NULL, map[ngood++] = i;
        } else {
            nan_row(out + (size_t)i * D, D);
            if (nfail++ == 0 && err) *err = errs[i];
        }
    }
    ml_error e;
    if (ngood && ml_embed_pixels_batch(m, ngood, (const float *const *)ptrs, gtexts, truncate,
                                       gout, NULL, gok, &e) != 0 && nfail++ == 0 && err)
        *err = e;
    for (int g = 0; g < ngood; g++) {
        item_ok[map[g]] = gok[g];
        memcpy(out + (size_t)map[g] * D, gout + (size_t)g * D, sizeof(float) * D);
    }
    rc = nfail ? -1 : 0;
done:
    free(pix), free(ptrs), free(gtexts), free(map), free(gok), free(gout), free(errs);
    return rc;
}

int ml_embed_clip_text(ml_model *m, const char *text, int truncate, float *out, ml_error *err) {
    const float *t = text_embedding(m, text, truncate, out, err);
    if (!t) return -1;
    if (t != out) memcpy(out, t, sizeof(float) * (size_t)m->cfg.embed_dim);
    ml_l2_normalize(out, m->cfg.embed_dim);
    return 0;
}

static int by_name(const void *a, const void *b) {
    return strcmp((*(const ml_tensor *const *)a)->name, (*(const ml_tensor *const *)b)->name);
}

/* Hashes the tensors in name order, so that key order in the file (and the
 * file format) does not matter; the stored vocabulary counts too. */
void ml_model_fingerprint(const ml_model *m, char out[33]) {
    const ml_tensor_set *s = &m->tensors;
    const ml_tensor **order = malloc(sizeof *order * (s->count ? s->count : 1));
    XXH3_state_t *st = XXH3_createState();
    if (!order || !st) {
        snprintf(out, 33, "%032x", 0);
        free(order), XXH3_freeState(st);
        return;
    }
    for (size_t i = 0; i < s->count; i++) order[i] = &s->items[i];
    qsort(order, s->count, sizeof *order, by_name);
    XXH3_128bits_reset(st);
    for (size_t i = 0; i < s->count; i++) {
        const ml_tensor *t = order[i];
        if (strncmp(t->name, "vocab/", 6) == 0 || strncmp(t->name, "meta/", 5) == 0) continue;
        int32_t hdr[2 + ML_MAX_DIMS] = {(int32_t)t->dtype, t->ndim};
        for (int d = 0; d < t->ndim; d++) hdr[2 + d] = (int32_t)t->shape[d];
        XXH3_128bits_update(st, t->name, strlen(t->name) + 1);
        XXH3_128bits_update(st, hdr, sizeof hdr);
        XXH3_128bits_update(st, t->data, t->nbytes);
    }
    XXH128_hash_t h = XXH3_128bits_digest(st);
    snprintf(out, 33, "%016llx%016llx", (unsigned long long)h.high64, (unsigned long long)h.low64);
    XXH3_freeState(st);
    free(order);
}
