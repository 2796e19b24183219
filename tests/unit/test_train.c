/* test_train.c - the trainable network (src/train/tmodel.h) and the
 * contrastive loss.
 *
 * With no arguments: self-contained checks -- the loss against values
 * worked out by hand and against finite differences, the forward pass
 * against the inference model (ml_embed_pixels_batch) on a small random
 * model, a few gradient entries against finite differences, frozen towers,
 * and bad input.
 *
 * With `--grad DIR MODE` (tests/t_train_grad.sh): reads DIR/model.pkl,
 * DIR/pixels.npy [2N, S*S*3], DIR/ids.npy [N+1, 77] and DIR/plan.npy [3N, 2]
 * (image, text) per output: N queries, N targets, N query negatives), runs
 * forward + loss + backward with MODE = all (towers trained), frozen
 * (towers run, not trained) or cached (tower outputs computed first, the
 * pass starts at the fusion) and writes DIR/MODE/{grad.npy, params.tsv,
 * loss.npy, emb.npy} for tests/reference/train_ref.py to compare with
 * PyTorch autograd.
 *
 * With `--bench N [bf16] [frozen]`: times three training steps (forward +
 * loss + backward) of N triplets on a random model of the released base
 * size (ViT-B/16 towers, D = 512). */
#include <stdarg.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "core/error.h"
#include "core/threads.h"
#include "io/native.h"
#include "kernels/cpu.h"
#include "io/npy.h"
#include "io/tensors.h"
#include "train/tlayers.h"
#include "train/tmodel.h"

/* ---- helpers ------------------------------------------------------------- */

static uint64_t rng_state = 88172645463325252ull;

static double urand(void) {
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return ((rng_state >> 11) + 0.5) / 9007199254740992.0;
}

static float nrand(void) {
    return (float)(sqrt(-2 * log(urand())) * cos(6.283185307179586 * urand()));
}

/* Adds a tensor of random normal values * sd + mean, owned by the set. */
static void add(ml_tensor_set *ts, const char *name, float mean, float sd, int ndim, ...) {
    int64_t shape[8], n = 1;
    va_list ap;
    va_start(ap, ndim);
    for (int i = 0; i < ndim; i++) shape[i] = va_arg(ap, int), n *= shape[i];
    va_end(ap);
    float *d = malloc(sizeof(float) * (size_t)n);
    if (!d) abort();
    for (int64_t i = 0; i < n; i++) d[i] = mean + sd * nrand();
    if (ml_tensor_set_own(ts, d, NULL) != 0 ||
        ml_tensor_set_add(ts, name, ML_F32, ndim, shape, d, sizeof(float) * (size_t)n, NULL) != 0)
        abort();
}

static void add_block(ml_tensor_set *ts, const char *p, int W, int H) {
    char n[256];
    int hd = W / H;
    float s = 1.0f / sqrtf((float)W);
    const char *qkv[3] = {"query", "key", "value"};
#define NM(fmt, ...) (snprintf(n, sizeof n, fmt, __VA_ARGS__), n)
    add(ts, NM("%s/ln_1/scale", p), 1, 0.1f, 1, W);
    add(ts, NM("%s/ln_1/bias", p), 0, 0.02f, 1, W);
    for (int i = 0; i < 3; i++) {
        add(ts, NM("%s/attn/%s/kernel", p, qkv[i]), 0, s, 3, W, H, hd);
        add(ts, NM("%s/attn/%s/bias", p, qkv[i]), 0, 0.02f, 2, H, hd);
    }
    add(ts, NM("%s/attn/out/kernel", p), 0, s, 3, H, hd, W);
    add(ts, NM("%s/attn/out/bias", p), 0, 0.02f, 1, W);
    add(ts, NM("%s/ln_2/scale", p), 1, 0.1f, 1, W);
    add(ts, NM("%s/ln_2/bias", p), 0, 0.02f, 1, W);
    add(ts, NM("%s/mlp/c_fc/kernel", p), 0, s, 2, W, 4 * W);
    add(ts, NM("%s/mlp/c_fc/bias", p), 0, 0.02f, 1, 4 * W);
    add(ts, NM("%s/mlp/c_proj/kernel", p), 0, s / 2, 2, 4 * W, W);
    add(ts, NM("%s/mlp/c_proj/bias", p), 0, 0.02f, 1, W);
}

static void add_mm_attention(ml_tensor_set *ts, const char *p, int D, int H, int hd) {
    char n[256];
    const char *qkv[3] = {"query", "key", "value"};
    for (int i = 0; i < 3; i++) {
        add(ts, NM("%s/%s/w", p, qkv[i]), 0, 1.0f / sqrtf((float)D), 3, D, H, hd);
        add(ts, NM("%s/%s/b", p, qkv[i]), 0, 0.02f, 2, H, hd);
    }
    add(ts, NM("%s/post/w", p), 0, 1.0f / sqrtf((float)(H * hd)), 3, D, H, hd);
    add(ts, NM("%s/post/b", p), 0, 0.02f, 1, D);
}

/* Sizes of a random model: image side, patch, vision width / blocks (heads
 * = width / 32), text width / heads / blocks, D, fusion layers / heads. */
typedef struct msize {
    int img, P, VW, VL, TW, TH, TL, D, FL, FH;
} msize;

static const msize SMALL = {32, 8, 64, 1, 32, 2, 1, 32, 2, 2};
/* ViT-B/16 towers, as the released base model (vision heads = width / 64). */
static const msize BASE = {224, 16, 768, 12, 512, 8, 12, 512, 4, 8};

/* A random MagicLens of size z (SMALL: 32 px images, patch 8, vision width
 * 64, text width 32, D = 32, 2 fusion layers).  with_scale = 0 leaves out
 * clip/logit_scale. */
static void make_model_sized(ml_tensor_set *ts, msize z, int with_scale) {
    const int P = z.P, G = z.img / z.P, VW = z.VW, TW = z.TW, D = z.D, FH = z.FH;
    int VH = z.VW >= 256 ? z.VW / 64 : 2;
    char n[256];
    add(ts, "clip/visual/conv1/kernel", 0, 1.0f / sqrtf(P * P * 3.0f), 4, P, P, 3, VW);
    add(ts, "clip/visual/class_embedding", 0, 0.1f, 1, VW);
    add(ts, "clip/visual/positional_embedding", 0, 0.1f, 2, G * G + 1, VW);
    add(ts, "clip/visual/ln_pre/scale", 1, 0.1f, 1, VW);
    add(ts, "clip/visual/ln_pre/bias", 0, 0.02f, 1, VW);
    for (int l = 0; l < z.VL; l++)
        add_block(ts, NM("clip/visual/transformer/resblocks_%d", l), VW, VH);
    add(ts, "clip/visual/ln_post/scale", 1, 0.1f, 1, VW);
    add(ts, "clip/visual/ln_post/bias", 0, 0.02f, 1, VW);
    add(ts, "clip/visual/proj/kernel", 0, 1.0f / sqrtf(VW), 2, VW, D);
    add(ts, "clip/text/token_embedding/embedding", 0, 1.0f, 2, 49408, TW);
    add(ts, "clip/text/positional_embedding", 0, 0.1f, 2, 77, TW);
    for (int l = 0; l < z.TL; l++)
        add_block(ts, NM("clip/text/transformer/resblocks_%d", l), TW, z.TH);
    add(ts, "clip/text/ln_final/scale", 1, 0.1f, 1, TW);
    add(ts, "clip/text/ln_final/bias", 0, 0.02f, 1, TW);
    add(ts, "clip/text/text_projection/kernel", 0, 1.0f / sqrtf(TW), 2, TW, D);
    if (with_scale) add(ts, "clip/logit_scale", 2.659f, 0, 0);
    for (int l = 0; l < z.FL; l++) {
        char p[128];
        snprintf(p, sizeof p, "multimodal_encoder/x_layers_%d", l);
        add(ts, NM("%s/layer_norm/scale", p), 0, 0.1f, 1, D);
        add(ts, NM("%s/layer_norm/bias", p), 0, 0.02f, 1, D);
        add_mm_attention(ts, NM("%s/self_attention", p), D, FH, D / FH);
        add(ts, NM("%s/ff_layer/layer_norm/scale", p), 0, 0.1f, 1, D);
        add(ts, NM("%s/ff_layer/layer_norm/bias", p), 0, 0.02f, 1, D);
        add(ts, NM("%s/ff_layer/ffn_layer1/linear/w", p), 0, 1.0f / sqrtf(D), 2, D, 4 * D);
        add(ts, NM("%s/ff_layer/ffn_layer1/bias/b", p), 0, 0.02f, 1, 4 * D);
        add(ts, NM("%s/ff_layer/ffn_layer2/linear/w", p), 0, 0.5f / sqrtf(D), 2, 4 * D, D);
        add(ts, NM("%s/ff_layer/ffn_layer2/bias/b", p), 0, 0.02f, 1, D);
    }
    add_mm_attention(ts, "contrastive_multimodal_pooler/pool_attn", D, FH, 4 * D / FH);
    add(ts, "contrastive_multimodal_pooler/pool_attn/per_dim_scale/per_dim_scale", 0, 0.3f, 1,
        4 * D / FH);
    add(ts, "contrastive_multimodal_pooler/pool_attn_ln/scale", 0, 0.1f, 1, D);
    add(ts, "contrastive_multimodal_pooler/pool_attn_ln/bias", 0, 0.02f, 1, D);
    add(ts, "contrastive_multimodal_pooler/pooling_attn_query", 0, 1.0f, 2, 1, D);
#undef NM
}

static void make_model(ml_tensor_set *ts, int with_scale) {
    make_model_sized(ts, SMALL, with_scale);
}

/* ---- the loss ------------------------------------------------------------ */

static void test_loss_hand(void) {
    /* Two queries, E = 2, s = exp(log 2) = 2.  Query 0 = (1, 0) scores
     * 2*(1, 0.6, 0, 0.8) against t0 = (1,0), t1 = (0.6,0.8), qn0 = (0,1),
     * qn1 = (0.8,0.6); its positive is the first.  Query 1 = (0, 1) scores
     * 2*(0, 0.8, 1, 0.6), positive the second.
     *   loss0 = log(e^2 + e^1.2 + 1 + e^1.6) - 2   = 0.8131430...
     *   loss1 = log(1 + e^1.6 + e^2 + e^1.2) - 1.6 = 1.2131430...
     * mean 1.0131430; query 0 ranks t0 first (hit), query 1 ranks qn0
     * first (miss): accuracy 0.5. */
    float q[4] = {1, 0, 0, 1}, t[4] = {1, 0, 0.6f, 0.8f}, qn[4] = {0, 1, 0.8f, 0.6f};
    float dq[4], dt[4], dqn[4], dls;
    double acc;
    double L = ml_contrastive_loss(2, 2, q, t, qn, (float)log(2.0), dq, dt, dqn, &dls, &acc);
    double lse = log(exp(2.0) + exp(1.2) + 1 + exp(1.6));
    CHECK_MSG(fabs(L - (lse - 1.8)) < 1e-6, "loss %.9f expected %.9f", L, lse - 1.8);
    CHECK_MSG(fabs(L - 1.0131430) < 1e-6, "loss %.9f", L);
    CHECK(acc == 0.5);
    /* dL/dq0 = s/N * (sum_j p_j c_j - t0): p = (e^2, e^1.2, 1, e^1.6)/Z. */
    double Z = exp(lse), p[4] = {exp(2.0) / Z, exp(1.2) / Z, 1 / Z, exp(1.6) / Z};
    double g0 = (p[0] * 1 + p[1] * 0.6 + p[2] * 0 + p[3] * 0.8 - 1) * 2 / 2;
    double g1 = (p[0] * 0 + p[1] * 0.8 + p[2] * 1 + p[3] * 0.6 - 0) * 2 / 2;
    CHECK_MSG(fabs(dq[0] - g0) < 1e-6 && fabs(dq[1] - g1) < 1e-6, "dq0 %g %g vs %g %g", dq[0],
              dq[1], g0, g1);
    /* Clamped scale: exp(5) > 100, so s = 100 and no gradient for it. */
    ml_contrastive_loss(2, 2, q, t, qn, 5.0f, NULL, NULL, NULL, &dls, NULL);
    CHECK(dls == 0.0f);
    /* Without query negatives: candidates t only. */
    L = ml_contrastive_loss(2, 2, q, t, NULL, 0.0f, NULL, NULL, dqn, NULL, &acc);
    double l0 = log(exp(1.0) + exp(0.6)) - 1, l1 = log(exp(0.0) + exp(0.8)) - 0.8;
    CHECK_MSG(fabs(L - (l0 + l1) / 2) < 1e-6, "loss without negatives %.9f", L);
    CHECK(dqn[0] == 0 && dqn[3] == 0);
}

/* Every analytic gradient of the loss against central differences. */
static void test_loss_fd(void) {
    enum { N = 3, E = 5 };
    float v[3][N * E], d[3][N * E], dls;
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < N * E; i++) v[k][i] = nrand();
    float ls = 0.7f;
    ml_contrastive_loss(N, E, v[0], v[1], v[2], ls, d[0], d[1], d[2], &dls, NULL);
    double worst = 0, h = 1e-3;
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < N * E; i++) {
            float keep = v[k][i];
            v[k][i] = keep + (float)h;
            double up =
                ml_contrastive_loss(N, E, v[0], v[1], v[2], ls, NULL, NULL, NULL, NULL, NULL);
            v[k][i] = keep - (float)h;
            double dn =
                ml_contrastive_loss(N, E, v[0], v[1], v[2], ls, NULL, NULL, NULL, NULL, NULL);
            v[k][i] = keep;
            double fd = (up - dn) / (2 * h), e = fabs(fd - d[k][i]);
            if (e > worst) worst = e;
        }
    double up =
        ml_contrastive_loss(N, E, v[0], v[1], v[2], ls + 1e-3f, NULL, NULL, NULL, NULL, NULL);
    double dn =
        ml_contrastive_loss(N, E, v[0], v[1], v[2], ls - 1e-3f, NULL, NULL, NULL, NULL, NULL);
    CHECK_MSG(fabs((up - dn) / 2e-3 - dls) < 1e-3, "d log_scale %g vs fd %g", dls,
              (up - dn) / 2e-3);
    CHECK_MSG(worst < 1e-3, "loss gradient vs finite differences: %g", worst);
}

/* ---- the network on a small random model ------------------------------- */

typedef struct fixture {
    ml_tensor_set ts;
    ml_tmodel tm;
    ml_model *m;
    int n, S;
    float *pix;
    const float *pp[4];
    int32_t ids[4 * 77];
    const char *texts[4];
} fixture;

static int fixture_init(fixture *f, const char *dir) {
    memset(f, 0, sizeof *f);
    ml_error err;
    make_model(&f->ts, 1);
    char path[512], vb[512];
    snprintf(path, sizeof path, "%s/t.mlens", dir);
    if (ml_native_write(path, &f->ts, NULL, NULL, 0, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    /* the lookup every command uses: $MAGICLENS_VOCAB, models/, ../shared */
    const char *vocab = ml_vocab_find(NULL, vb, sizeof vb) == 0 ? vb : NULL;
    f->m = ml_model_load(path, vocab, &err);
    unlink(path);
    if (!f->m || ml_tmodel_init(&f->tm, &f->ts, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    f->n = 4, f->S = f->tm.cfg.image_size;
    size_t ps = (size_t)f->S * f->S * 3;
    f->pix = malloc(sizeof(float) * ps * f->n);
    for (size_t i = 0; i < ps * f->n; i++) f->pix[i] = nrand();
    /* "wow!\"$" holds id 0 (the byte '!'), which the text tower treats as padding. */
    const char *texts[4] = {"a red one", "", "make it wow!\"$ bigger", "the same dog at night"};
    for (int i = 0; i < f->n; i++) {
        f->pp[i] = f->pix + ps * i;
        f->texts[i] = texts[i];
        if (ml_model_tokenize(f->m, texts[i], 0, f->ids + 77 * i, &err) != 0) return -1;
    }
    int zero_inside = 0;
    for (int t = 1; t < 77 && f->ids[2 * 77 + t] != 49407; t++)
        zero_inside |= f->ids[2 * 77 + t] == 0;
    CHECK(zero_inside);
    return 0;
}

static void fixture_free(fixture *f) {
    ml_tmodel_free(&f->tm);
    ml_model_free(f->m);
    ml_tensor_set_free(&f->ts);
    free(f->pix);
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

static void test_forward_matches_inference(fixture *f) {
    int D = f->tm.cfg.embed_dim, n = f->n, item_ok[4];
    float ref[4 * 64], emb[4 * 64], rawc[4 * 64], rawt[4 * 64];
    ml_error err;
    CHECK(ml_embed_pixels_batch(f->m, n, f->pp, f->texts, 0, ref, NULL, item_ok, &err) == 0);
    int idx[4] = {0, 1, 2, 3};
    ml_tbatch b = {n, f->pp, NULL, n, f->ids, NULL, n, idx, idx};
    for (int train = 0; train < 2; train++) {
        ml_tstate *st = ml_tmodel_forward(&f->tm, &b, train, emb, &err);
        CHECK(st != NULL);
        double d = max_abs_diff(emb, ref, (size_t)n * D);
        CHECK_MSG(d < 1e-5, "train=%d: forward differs from ml_embed by %g", train, d);
        ml_tstate_free(st);
    }
    /* The image tower alone equals the inference tower; the cached path
     * (tower outputs in, fusion only) gives the same embeddings. */
    CHECK(ml_embed_clip_image(f->m, n, f->pp, rawc, &err) == 0);
    CHECK(ml_tmodel_image_tower(&f->tm, n, f->pp, emb, &err) == 0);
    CHECK_MSG(max_abs_diff(emb, rawc, (size_t)n * D) < 1e-5, "image tower %g",
              max_abs_diff(emb, rawc, (size_t)n * D));
    CHECK(ml_tmodel_text_tower(&f->tm, n, f->ids, rawt, &err) == 0);
    ml_tbatch c = {n, NULL, rawc, n, NULL, rawt, n, idx, idx};
    ml_tstate *st = ml_tmodel_forward(&f->tm, &c, 0, emb, &err);
    CHECK(st != NULL);
    CHECK_MSG(max_abs_diff(emb, ref, (size_t)n * D) < 1e-5, "cached path %g",
              max_abs_diff(emb, ref, (size_t)n * D));
    ml_tstate_free(st);
}

/* L = sum_j r_j . emb_j for fixed random r: its gradient is backward(r). */
static double probe_loss(fixture *f, const ml_tbatch *b, const float *r) {
    float emb[4 * 64];
    ml_error err;
    ml_tstate *st = ml_tmodel_forward(&f->tm, b, 1, emb, &err);
    if (!st) return NAN;
    ml_tstate_free(st);
    double L = 0;
    for (int i = 0; i < b->n_out * f->tm.cfg.embed_dim; i++) L += (double)r[i] * emb[i];
    return L;
}

/* The largest-gradient entry of several tensors against central
 * differences (float32 forward, so the tolerance is loose; the exact
 * proof is tests/t_train_grad.sh against PyTorch). */
static void test_backward_fd(fixture *f) {
    int D = f->tm.cfg.embed_dim;
    int oi[3] = {0, 1, 2}, ot[3] = {2, 3, 1};
    ml_tbatch b = {4, f->pp, NULL, 4, f->ids, NULL, 3, oi, ot};
    float r[3 * 64], emb[3 * 64];
    for (int i = 0; i < 3 * D; i++) r[i] = nrand();
    ml_error err;
    ml_tmodel_zero_grad(&f->tm);
    ml_tstate *st = ml_tmodel_forward(&f->tm, &b, 1, emb, &err);
    CHECK(st && ml_tmodel_backward(&f->tm, st, r, &err) == 0);
    ml_tstate_free(st);
    const char *names[] = {"clip/visual/conv1/kernel",
                           "clip/visual/class_embedding",
                           "clip/visual/transformer/resblocks_0/attn/query/kernel",
                           "clip/visual/transformer/resblocks_0/ln_2/scale",
                           "clip/visual/proj/kernel",
                           "clip/text/token_embedding/embedding",
                           "clip/text/positional_embedding",
                           "clip/text/transformer/resblocks_0/attn/key/bias",
                           "clip/text/transformer/resblocks_0/mlp/c_fc/kernel",
                           "multimodal_encoder/x_layers_0/self_attention/post/w",
                           "multimodal_encoder/x_layers_1/ff_layer/layer_norm/scale",
                           "contrastive_multimodal_pooler/pool_attn/per_dim_scale/per_dim_scale",
                           "contrastive_multimodal_pooler/pooling_attn_query",
                           "contrastive_multimodal_pooler/pool_attn/query/w"};
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        const ml_tparam *p = ml_tmodel_find(&f->tm, names[k]);
        CHECK_MSG(p != NULL, "%s", names[k]);
        if (!p) continue;
        size_t best = 0;
        for (size_t i = 0; i < p->count; i++)
            if (fabsf(f->tm.g[p->offset + i]) > fabsf(f->tm.g[p->offset + best])) best = i;
        float *w = f->tm.w + p->offset + best, keep = *w, h = 2e-3f;
        *w = keep + h;
        double up = probe_loss(f, &b, r);
        *w = keep - h;
        double dn = probe_loss(f, &b, r);
        *w = keep;
        double fd = (up - dn) / (2.0 * h), g = f->tm.g[p->offset + best];
        CHECK_MSG(fabs(fd - g) <= 2e-2 * fabs(g) + 2e-3, "%s[%zu]: backward %g, finite diff %g",
                  names[k], best, g, fd);
    }
}

/* Frozen towers: no tower gradient, the same fusion gradients. */
static void test_frozen(fixture *f) {
    int D = f->tm.cfg.embed_dim;
    int oi[3] = {0, 1, 2}, ot[3] = {2, 3, 1};
    ml_tbatch b = {4, f->pp, NULL, 4, f->ids, NULL, 3, oi, ot};
    float r[3 * 64], emb[3 * 64];
    for (int i = 0; i < 3 * D; i++) r[i] = nrand();
    ml_error err;
    size_t T = f->tm.total;
    float *gall = malloc(sizeof(float) * T);
    ml_tmodel_zero_grad(&f->tm);
    ml_tstate *st = ml_tmodel_forward(&f->tm, &b, 1, emb, &err);
    CHECK(st && ml_tmodel_backward(&f->tm, st, r, &err) == 0);
    ml_tstate_free(st);
    memcpy(gall, f->tm.g, sizeof(float) * T);
    ml_tmodel_zero_grad(&f->tm);
    st = ml_tmodel_forward(&f->tm, &b, 0, emb, &err);
    CHECK(st && ml_tmodel_backward(&f->tm, st, r, &err) == 0);
    /* backward adds: a second call doubles the gradients */
    CHECK(ml_tmodel_backward(&f->tm, st, r, &err) == 0);
    ml_tstate_free(st);
    int tower_nonzero = 0, fusion_bad = 0;
    for (int i = 0; i < f->tm.n_params; i++) {
        const ml_tparam *p = &f->tm.params[i];
        for (size_t j = 0; j < p->count; j++) {
            float g = f->tm.g[p->offset + j], a = gall[p->offset + j];
            if (p->flags & (ML_TP_VISION | ML_TP_TEXT))
                tower_nonzero |= g != 0;
            else if (fabsf(g - 2 * a) > 1e-5f * (1 + fabsf(a)))
                fusion_bad = 1;
        }
    }
    CHECK(!tower_nonzero);
    CHECK(!fusion_bad);
    free(gall);
}

/* bf16 products: close to float32 (bf16 keeps 8 bits), and really used
 * when the CPU has native bf16; identical to float32 elsewhere. */
static void test_bf16(fixture *f) {
    /* vdpbf16ps even where the CPU's default widens bf16 into float32
     * (Intel without AMX), so that it is tested wherever it exists */
    int forced = ml_isa_active() == ML_ISA_AVX512 && ml_cpu_has_avx512_bf16() && ml_cpu_set_bf16_dot(1) == 0;
    int D = f->tm.cfg.embed_dim;
    int oi[3] = {0, 1, 2}, ot[3] = {2, 3, 1};
    ml_tbatch b = {4, f->pp, NULL, 4, f->ids, NULL, 3, oi, ot};
    float r[3 * 64], e32[3 * 64], e16[3 * 64];
    for (int i = 0; i < 3 * D; i++) r[i] = nrand();
    ml_error err;
    size_t T = f->tm.total;
    float *g32 = malloc(sizeof(float) * T);
    for (int bf = 0; bf < 2; bf++) {
        f->tm.bf16 = bf;
        ml_tmodel_zero_grad(&f->tm);
        ml_tstate *st = ml_tmodel_forward(&f->tm, &b, 1, bf ? e16 : e32, &err);
        CHECK(st && ml_tmodel_backward(&f->tm, st, r, &err) == 0);
        ml_tstate_free(st);
        if (!bf) memcpy(g32, f->tm.g, sizeof(float) * T);
    }
    f->tm.bf16 = 0;
    double d = max_abs_diff(e16, e32, (size_t)3 * D), worst = 0, tnum = 0, tden = 0;
    for (int i = 0; i < f->tm.n_params; i++) {
        const ml_tparam *p = &f->tm.params[i];
        double num = 0, den = 0;
        for (size_t j = 0; j < p->count; j++) {
            double a = f->tm.g[p->offset + j], c = g32[p->offset + j];
            num += (a - c) * (a - c), den += c * c;
        }
        if (den > 1e-12) worst = fmax(worst, sqrt(num / den));
        tnum += num, tden += den;
    }
    if (tl_bf16_native()) {
        CHECK_MSG(d > 0 && d < 2e-2, "bf16 embeddings differ from fp32 by %g", d);
        /* Whole gradient within a few %; any one tensor within 25% (a
         * wrong product would be off by ~100%).  bf16 keeps 3 digits, and
         * the attention gradients come from differences of logits. */
        double all = sqrt(tnum / tden);
        CHECK_MSG(all < 5e-2 && worst < 0.25, "bf16 gradients: relative error %g, one tensor %g",
                  all, worst);
        printf("bf16 (native): embeddings within %.2g of fp32, gradient within %.2g (one tensor "
               "%.2g)\n",
               d, all, worst);
    } else {
        CHECK_MSG(d == 0 && worst == 0, "bf16 without native support should be fp32: %g %g", d,
                  worst);
    }
    free(g32);
    if (forced) ml_cpu_set_bf16_dot(-1);
}

static void test_params_and_errors(fixture *f) {
    ml_error err;
    const ml_tparam *p =
        ml_tmodel_find(&f->tm, "multimodal_encoder/x_layers_1/self_attention/post/w");
    CHECK(p && p->ndim == 3 && p->shape[0] == 32 && p->shape[1] == 2 && p->shape[2] == 16);
    CHECK(p && p->flags == ML_TP_FUSION && p->offset % 16 == 0);
    p = ml_tmodel_find(&f->tm, "clip/visual/ln_pre/bias");
    CHECK(p && p->flags == (ML_TP_VISION | ML_TP_NODECAY));
    p = ml_tmodel_find(&f->tm, "clip/text/token_embedding/embedding");
    CHECK(p && p->flags == (ML_TP_TEXT | ML_TP_NODECAY));
    p = ml_tmodel_find(&f->tm, "clip/logit_scale");
    CHECK(p && p->flags == (ML_TP_SCALE | ML_TP_NODECAY) && p->ndim == 0);
    ml_tensor_set out = {0};
    CHECK(ml_tmodel_to_tensors(&f->tm, &out, &err) == 0);
    CHECK(out.count == (size_t)f->tm.n_params && out.count == f->ts.count);
    for (size_t i = 0; i < out.count; i++) {
        const ml_tensor *a = &out.items[i], *o = ml_tensor_set_find(&f->ts, a->name);
        CHECK_MSG(o && o->ndim == a->ndim && o->nbytes == a->nbytes &&
                      memcmp(o->data, a->data, a->nbytes) == 0,
                  "%s", a->name);
    }
    ml_tensor_set_free(&out);
    /* A set without clip/logit_scale gets log(1/0.07). */
    ml_tensor_set ts = {0};
    ml_tmodel tm;
    make_model(&ts, 0);
    CHECK(ml_tmodel_init(&tm, &ts, &err) == 0);
    p = ml_tmodel_find(&tm, "clip/logit_scale");
    CHECK(p && fabsf(tm.w[p->offset] - 2.6592600f) < 1e-6f);
    ml_tmodel_free(&tm);
    ml_tensor_set_free(&ts);
    /* A broken set is refused with the tensor's name. */
    make_model(&ts, 1);
    ts.items[2].shape[1] += 1; /* positional embedding: shape and size disagree */
    CHECK(ml_tmodel_init(&tm, &ts, &err) != 0 && strstr(err.msg, "positional_embedding"));
    ml_tensor_set_free(&ts);
    /* Bad batches. */
    float emb[4 * 64];
    int idx[2] = {0, 5};
    ml_tbatch b = {4, f->pp, NULL, 4, f->ids, NULL, 2, idx, idx};
    CHECK(ml_tmodel_forward(&f->tm, &b, 1, emb, &err) == NULL && strstr(err.msg, "output 1"));
    int32_t bad[77] = {49406, 60000, 49407};
    int z[1] = {0};
    ml_tbatch c = {1, f->pp, NULL, 1, bad, NULL, 1, z, z};
    CHECK(ml_tmodel_forward(&f->tm, &c, 1, emb, &err) == NULL && strstr(err.msg, "60000"));
    CHECK(ml_tmodel_text_tower(&f->tm, 1, bad, emb, &err) != 0);
}

/* ---- --grad: outputs for the PyTorch comparison --------------------------- */

static void *read_npy(const char *dir, const char *name, int64_t *shape, int *nd, char want,
                      int want_size) {
    char path[1024], t;
    int isz;
    void *data = NULL;
    ml_error err;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (ml_npy_read(path, &t, &isz, shape, nd, &data, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return NULL;
    }
    if (t != want || isz != want_size) {
        fprintf(stderr, "%s: unexpected dtype\n", path);
        free(data);
        return NULL;
    }
    return data;
}

static int write_outputs(const char *out, ml_tmodel *tm, double loss, float dls, double acc,
                         const float *emb, int n, ml_error *err) {
    char path[1200];
    snprintf(path, sizeof path, "%.1100s/grad.npy", out);
    if (ml_npy_write_f32(path, tm->g, (int64_t)tm->total, 1, err) != 0) return -1;
    snprintf(path, sizeof path, "%.1100s/emb.npy", out);
    if (ml_npy_write_f32(path, emb, n, tm->cfg.embed_dim, err) != 0) return -1;
    float l[3] = {(float)loss, dls, (float)acc};
    snprintf(path, sizeof path, "%.1100s/loss.npy", out);
    if (ml_npy_write_f32(path, l, 1, 3, err) != 0) return -1;
    snprintf(path, sizeof path, "%.1100s/params.tsv", out);
    FILE *fp = fopen(path, "w");
    if (!fp) return ml_fail(err, "%s: cannot write", path);
    for (int i = 0; i < tm->n_params; i++)
        fprintf(fp, "%s\t%zu\t%zu\t%u\n", tm->params[i].name, tm->params[i].offset,
                tm->params[i].count, tm->params[i].flags);
    return fclose(fp) == 0 ? 0 : ml_fail(err, "%s: write failed", path);
}

static int run_grad(const char *dir, const char *mode) {
    ml_error err;
    char path[1024], out[1100];
    snprintf(path, sizeof path, "%s/model.pkl", dir);
    ml_tensor_set ts = {0};
    ml_tmodel tm;
    if (ml_checkpoint_load_pkl(path, &ts, &err) != 0 || ml_tmodel_init(&tm, &ts, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        ml_tensor_set_free(&ts);
        return 1;
    }
    ml_tensor_set_free(&ts);
    int64_t sp[8], si[8], sl[8];
    int np, ni, nl, rc = 1;
    float *pix = read_npy(dir, "pixels.npy", sp, &np, 'f', 4);
    double *idd = read_npy(dir, "ids.npy", si, &ni, 'f', 8);
    double *plan = read_npy(dir, "plan.npy", sl, &nl, 'f', 8);
    int C = tm.cfg.context_length, S = tm.cfg.image_size, D = tm.cfg.embed_dim;
    int n_img = pix ? (int)sp[0] : 0, n_txt = idd ? (int)si[0] : 0, n_out = plan ? (int)sl[0] : 0;
    int N = n_out / 3;
    if (!pix || !idd || !plan || np != 2 || sp[1] != (int64_t)S * S * 3 || ni != 2 || si[1] != C ||
        nl != 2 || sl[1] != 2 || N * 3 != n_out) {
        fprintf(stderr, "bad inputs in %s\n", dir);
        goto done;
    }
    const float **pp = malloc(sizeof *pp * n_img);
    int32_t *ids = malloc(sizeof *ids * (size_t)n_txt * C);
    int *oi = malloc(sizeof *oi * n_out), *ot = malloc(sizeof *ot * n_out);
    float *emb = malloc(sizeof(float) * n_out * D), *demb = malloc(sizeof(float) * n_out * D);
    float *rawi = malloc(sizeof(float) * n_img * D), *rawt = malloc(sizeof(float) * n_txt * D);
    for (int i = 0; i < n_img; i++) pp[i] = pix + (size_t)i * S * S * 3;
    for (size_t i = 0; i < (size_t)n_txt * C; i++) ids[i] = (int32_t)idd[i];
    for (int j = 0; j < n_out; j++) oi[j] = (int)plan[2 * j], ot[j] = (int)plan[2 * j + 1];
    ml_tbatch b = {n_img, pp, NULL, n_txt, ids, NULL, n_out, oi, ot};
    int train = strcmp(mode, "all") == 0;
    if (strcmp(mode, "cached") == 0) {
        if (ml_tmodel_image_tower(&tm, n_img, pp, rawi, &err) != 0 ||
            ml_tmodel_text_tower(&tm, n_txt, ids, rawt, &err) != 0) {
            fprintf(stderr, "%s\n", err.msg);
            goto done2;
        }
        b.pixels = NULL, b.img_emb = rawi, b.ids = NULL, b.txt_emb = rawt;
    }
    ml_tstate *st = ml_tmodel_forward(&tm, &b, train, emb, &err);
    if (!st) {
        fprintf(stderr, "%s\n", err.msg);
        goto done2;
    }
    const ml_tparam *ls = ml_tmodel_find(&tm, "clip/logit_scale");
    float dls;
    double acc, loss = ml_contrastive_loss(N, D, emb, emb + (size_t)N * D, emb + (size_t)2 * N * D,
                                           tm.w[ls->offset], demb, demb + (size_t)N * D,
                                           demb + (size_t)2 * N * D, &dls, &acc);
    if (ml_tmodel_backward(&tm, st, demb, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        ml_tstate_free(st);
        goto done2;
    }
    ml_tstate_free(st);
    tm.g[ls->offset] += dls;
    snprintf(out, sizeof out, "%s/%s", dir, mode);
    mkdir(out, 0755);
    if (write_outputs(out, &tm, loss, dls, acc, emb, n_out, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        goto done2;
    }
    printf("%s: loss %.7f accuracy %.3f d_log_scale %.6g\n", mode, loss, acc, dls);
    rc = 0;
done2:
    free(pp), free(ids), free(oi), free(ot), free(emb), free(demb), free(rawi), free(rawt);
done:
    free(pix), free(idd), free(plan);
    ml_tmodel_free(&tm);
    return rc;
}

/* ---- --bench: one training step at base size ----------------------------- */

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* N triplets on a random base-size model (ViT-B/16 towers): 2N images,
 * N instructions of 9-18 tokens + the empty one, 3N outputs; forward +
 * loss + backward, `iters` times (the first also faults in the memory). */
static int run_bench(int N, int iters, int train, int bf16) {
    ml_tensor_set ts = {0};
    ml_tmodel tm;
    ml_error err;
    make_model_sized(&ts, BASE, 1);
    int rc = ml_tmodel_init(&tm, &ts, &err);
    ml_tensor_set_free(&ts);
    if (rc != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    tm.bf16 = bf16;
    int S = tm.cfg.image_size, D = tm.cfg.embed_dim, C = tm.cfg.context_length;
    int ni = 2 * N, nt = N + 1, no = 3 * N;
    size_t ps = (size_t)S * S * 3;
    float *pix = malloc(sizeof(float) * ps * ni), *emb = malloc(sizeof(float) * no * D);
    float *demb = malloc(sizeof(float) * no * D);
    const float **pp = malloc(sizeof *pp * ni);
    int32_t *ids = calloc((size_t)nt * C, sizeof *ids);
    int *oi = malloc(sizeof(int) * no), *ot = malloc(sizeof(int) * no);
    for (size_t i = 0; i < ps * ni; i++) pix[i] = nrand();
    for (int i = 0; i < ni; i++) pp[i] = pix + ps * i;
    for (int i = 0; i < nt; i++) {
        int L = i == N ? 0 : 8 + i % 10;
        ids[(size_t)i * C] = 49406;
        for (int t = 1; t <= L; t++) ids[(size_t)i * C + t] = 300 + (i * 31 + t * 7) % 40000;
        ids[(size_t)i * C + L + 1] = 49407;
    }
    for (int i = 0; i < N; i++) {
        oi[i] = ot[i] = i;                    /* query: image i + instruction i */
        oi[N + i] = N + i, ot[N + i] = N;     /* target: image N+i + "" */
        oi[2 * N + i] = i, ot[2 * N + i] = N; /* query negative: image i + "" */
    }
    ml_tbatch b = {ni, pp, NULL, nt, ids, NULL, no, oi, ot};
    printf("base model (%zu parameters), %d triplets, train %s, bf16 %d, %d threads\n", tm.total, N,
           train ? "all" : "fusion", bf16, ml_num_threads());
    rc = 0;
    for (int it = 0; it < iters && rc == 0; it++) {
        ml_tmodel_zero_grad(&tm);
        double t0 = now_s();
        ml_tstate *st = ml_tmodel_forward(&tm, &b, train, emb, &err);
        double t1 = now_s(), acc;
        float dls;
        double loss = st ? ml_contrastive_loss(
                               N, D, emb, emb + (size_t)N * D, emb + (size_t)2 * N * D, 2.659f,
                               demb, demb + (size_t)N * D, demb + (size_t)2 * N * D, &dls, &acc)
                         : 0;
        if (!st || ml_tmodel_backward(&tm, st, demb, &err) != 0) {
            fprintf(stderr, "%s\n", err.msg);
            rc = 1;
        }
        double t2 = now_s();
        ml_tstate_free(st);
        printf("step %d: forward %.3f s, loss + backward %.3f s, total %.3f s (loss %.4f)\n", it,
               t1 - t0, t2 - t1, t2 - t0, loss);
    }
    free(pix), free(emb), free(demb), free(pp), free(ids), free(oi), free(ot);
    ml_tmodel_free(&tm);
    return rc;
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "--bench") == 0) {
        int bf16 = 0, train = 1;
        for (int i = 3; i < argc; i++)
            bf16 |= !strcmp(argv[i], "bf16"), train &= !!strcmp(argv[i], "frozen");
        return run_bench(atoi(argv[2]) > 0 ? atoi(argv[2]) : 1, 3, train, bf16);
    }
    if (argc == 4 && strcmp(argv[1], "--grad") == 0) return run_grad(argv[2], argv[3]);
    if (argc != 1) {
        fprintf(stderr,
                "usage: test_train [--grad DIR all|frozen|cached | --bench N [bf16] [frozen]]\n");
        return 2;
    }
    test_loss_hand();
    test_loss_fd();
    char dir[] = "/tmp/ml-test-train-XXXXXX";
    fixture f;
    if (!mkdtemp(dir) || fixture_init(&f, dir) != 0) {
        CHECK(!"fixture");
        return check_done("test_train");
    }
    rmdir(dir);
    test_forward_matches_inference(&f);
    test_backward_fd(&f);
    test_frozen(&f);
    test_bf16(&f);
    test_params_and_errors(&f);
    fixture_free(&f);
    return check_done("test_train");
}
