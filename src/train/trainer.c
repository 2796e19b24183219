/* trainer.c - the training loop (see trainer.h and docs/training.md).
 *
 * One optimiser step = `accum` micro-steps.  A micro-step takes the next
 * `batch` positions of the epoch order (data.h); rank r of K encodes the
 * positions [r*batch/K, (r+1)*batch/K).  Every rank all-gathers the
 * query, target and query-negative embeddings, computes the same loss over
 * the global batch and back-propagates its own rows; the parameter
 * gradients are then summed over ranks.  K ranks therefore compute what
 * one process computes with the same global batch (up to float summation
 * order). */
#include "train/trainer.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <xxhash.h>

#include "core/dist.h"
#include "core/error.h"
#include "core/fileio.h"
#include "io/native.h"
#include "io/tokenizer.h"
#include "io/vocab.h"
#include "train/ckpt.h"
#include "train/data.h"
#include "train/init.h"
#include "train/optim.h"
#include "train/tmodel.h"

/* The one piece of process-wide state: set by SIGINT/SIGTERM handlers. */
static volatile sig_atomic_t g_stop_requested;

void ml_train_request_stop(void) { g_stop_requested = 1; }

void ml_train_opts_default(ml_train_opts *o) {
    memset(o, 0, sizeof *o);
    o->seed = 0;
    o->steps = 1000;
    o->warmup = -1; /* 5% of steps */
    o->batch = 32;
    o->accum = 1;
    o->lr = 1e-4;
    o->min_lr_ratio = 0.0;
    o->weight_decay = 0.05;
    o->beta1 = 0.9, o->beta2 = 0.98, o->eps = 1e-6;
    o->clip_norm = 1.0;
    o->workers = 2;
    o->cache_towers = 1;
    o->save_every = 500;
    o->eval_every = 0;
    o->log_every = 1;
    o->keep = 2;
}

typedef struct trainer {
    const ml_train_opts *o;
    int rank, size, E, S; /* S: image side */
    ml_tmodel tm;
    ml_adamw opt;
    ml_tdata data, eval;
    ml_tokenizer *tok;
    uint8_t *vocab;
    size_t vocab_len;
    char *config_json;
    ml_range *ranges;
    int n_ranges;
    const ml_tparam *scale; /* clip/logit_scale */
    int learn_scale;
    ml_ckpt_pos pos;
    uint32_t *perm;
    int64_t perm_epoch;
    uint64_t settings_hash;
    /* Frozen towers: raw tower outputs by image / text id (state 0 unknown,
     * 1 cached, 2 unusable). */
    float *img_cache, *txt_cache;
    uint8_t *img_state, *txt_state;
    FILE *log;
    int64_t dropped;
} trainer;

typedef struct step_stats {
    double loss, acc;
    int micro; /* micro-steps with a non-empty batch */
    int64_t triplets;
} step_stats;

/* ---- set-up ------------------------------------------------------------ */

static void warn_cb(void *ctx, const char *msg) {
    const trainer *T = ctx;
    if (T->rank == 0) fprintf(stderr, "magiclens train: warning: %s\n", msg);
}

/* The vocabulary in io/vocab.h's order: --vocab, $MAGICLENS_VOCAB, the copy
 * in the init model file, models/ of the repository, ../shared/assets/. */
static int read_vocab(trainer *T, const ml_tensor_set *ts, ml_error *err) {
    const char *path = ml_vocab_user_path(T->o->vocab);
    const ml_tensor *v = path ? NULL : ml_tensor_set_find(ts, ML_NATIVE_VOCAB_NAME);
    char found[4096];
    if (!path && !v && ml_vocab_search_files(found, sizeof found) == 0) path = found;
    if (path) {
        if (ml_read_all(path, 64u << 20, &T->vocab, &T->vocab_len, err) != 0) return -1;
    } else {
        if (!v)
            return ml_fail(err, "no CLIP vocabulary found (%s); scripts/download-model.sh "
                                "fetches it into models/", ML_VOCAB_ORDER);
        if (!(T->vocab = malloc(v->nbytes))) return ml_fail(err, "out of memory");
        memcpy(T->vocab, v->data, v->nbytes);
        T->vocab_len = v->nbytes;
    }
    T->tok = ml_tokenizer_from_gz(T->vocab, T->vocab_len, err);
    if (!T->tok) return ml_fail_prefix(err, "vocabulary");
    const ml_tensor *c = ml_tensor_set_find(ts, ML_NATIVE_CONFIG_NAME);
    if (c && (T->config_json = malloc(c->nbytes + 1))) {
        memcpy(T->config_json, c->data, c->nbytes);
        T->config_json[c->nbytes] = 0;
    }
    return 0;
}

/* Which parameters the optimiser updates, and which of them decay. */
static int choose_ranges(trainer *T, ml_error *err) {
    T->ranges = calloc((size_t)T->tm.n_params, sizeof *T->ranges);
    if (!T->ranges) return ml_fail(err, "out of memory");
    for (int i = 0; i < T->tm.n_params; i++) {
        const ml_tparam *p = &T->tm.params[i];
        int on = (p->flags & ML_TP_FUSION) ||
                 (T->o->train_towers && (p->flags & (ML_TP_VISION | ML_TP_TEXT))) ||
                 ((p->flags & ML_TP_SCALE) && T->learn_scale);
        if (on)
            T->ranges[T->n_ranges++] = (ml_range){p->offset, p->count, !(p->flags & ML_TP_NODECAY)};
    }
    return 0;
}

static uint64_t settings_hash(const ml_train_opts *o) {
    char s[4096];
    snprintf(s, sizeof s,
             "data=%s|init=%s|fusion=%s|seed=%llu|batch=%d|accum=%d|towers=%d|"
             "temp=%.9g",
             o->data, o->init, o->init_fusion ? o->init_fusion : "", (unsigned long long)o->seed,
             o->batch, o->accum, o->train_towers, o->temperature);
    return XXH3_64bits(s, strlen(s));
}

static int setup_model(trainer *T, ml_error *err) {
    ml_tensor_set ts = {0};
    if (ml_train_init_load(T->o->init, T->o->init_fusion, T->o->seed, &ts, err) != 0) return -1;
    int rc = ml_tmodel_init(&T->tm, &ts, err);
    if (rc == 0) rc = read_vocab(T, &ts, err);
    ml_tensor_set_free(&ts);
    if (rc != 0) return -1;
    T->tm.bf16 = T->o->bf16;
    T->E = T->tm.cfg.embed_dim;
    T->S = T->tm.cfg.image_size;
    T->scale = ml_tmodel_find(&T->tm, "clip/logit_scale");
    if (!T->scale) return ml_fail(err, "model has no clip/logit_scale");
    T->learn_scale = T->o->temperature <= 0;
    if (!T->learn_scale) T->tm.w[T->scale->offset] = (float)log(1.0 / T->o->temperature);
    if (choose_ranges(T, err) != 0) return -1;
    return ml_adamw_init(&T->opt, T->tm.total, T->o->beta1, T->o->beta2, T->o->eps,
                         T->o->weight_decay, err);
}

static int setup_caches(trainer *T, ml_error *err) {
    if (T->o->train_towers || !T->o->cache_towers) return 0;
    size_t ni = T->data.n_images, nt = T->data.n_texts, E = (size_t)T->E;
    T->img_cache = malloc(ni * E * sizeof(float));
    T->txt_cache = malloc(nt * E * sizeof(float));
    T->img_state = calloc(ni, 1);
    T->txt_state = calloc(nt, 1);
    if (!T->img_cache || !T->txt_cache || !T->img_state || !T->txt_state)
        return ml_fail(err, "out of memory for the tower cache (%zu images, %zu texts)", ni, nt);
    return 0;
}

static int make_output_dir(const char *dir, ml_error *err) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return ml_fail(err, "%s: cannot create: %s", dir, strerror(errno));
    return 0;
}

/* log.jsonl: truncated to the steps before `upto` (a resumed run rewrites
 * what came after its checkpoint), then opened for appending. */
static int open_log(trainer *T, int64_t upto, ml_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/log.jsonl", T->o->output);
    char *kept = NULL;
    size_t klen = 0;
    FILE *in = upto > 0 ? fopen(path, "r") : NULL;
    FILE *mem = open_memstream(&kept, &klen);
    if (!mem) return ml_fail(err, "out of memory");
    char *line = NULL;
    size_t cap = 0;
    while (in && getline(&line, &cap, in) > 0) {
        json_t *o = json_loads(line, 0, NULL);
        json_t *s = json_object_get(o, "step");
        if (json_is_integer(s) && json_integer_value(s) <= upto) fputs(line, mem);
        json_decref(o);
    }
    free(line);
    if (in) fclose(in);
    fclose(mem);
    int rc = ml_write_atomic(path, kept ? kept : "", klen, err);
    free(kept);
    if (rc == 0 && !(T->log = fopen(path, "a"))) rc = ml_fail(err, "%s: %s", path, strerror(errno));
    return rc;
}

/* ---- data position ---------------------------------------------------- */

/* The triplet at the current position; advances it (next epoch as needed). */
static uint32_t next_triplet(trainer *T) {
    if (T->pos.index >= (int64_t)T->data.n) T->pos.epoch++, T->pos.index = 0;
    if (T->perm_epoch != T->pos.epoch) {
        ml_tdata_order(T->data.n, T->o->seed, T->pos.epoch, T->perm);
        T->perm_epoch = T->pos.epoch;
    }
    return T->perm[T->pos.index++];
}

/* ---- one micro-step ---------------------------------------------------- */

typedef struct micro {
    int n;          /* local triplets (valid ones after loading) */
    uint32_t *trip; /* [n] triplet ids */
    int n_img, n_txt;
    uint32_t *img_ids, *txt_ids; /* unique ids, and per triplet their slots: */
    int *q_slot, *t_slot, *s_slot;
    float **pixels;           /* n_img buffers (tower-trained or uncached) */
    float *img_emb, *txt_emb; /* cached tower outputs, [n_img/n_txt, E] */
    int32_t *ids;             /* [n_txt, context] */
} micro;

static void micro_free(micro *m) {
    if (m->pixels)
        for (int i = 0; i < m->n_img; i++) free(m->pixels[i]);
    free(m->pixels), free(m->trip), free(m->img_ids), free(m->txt_ids);
    free(m->q_slot), free(m->t_slot), free(m->s_slot);
    free(m->img_emb), free(m->txt_emb), free(m->ids);
    memset(m, 0, sizeof *m);
}

static int slot_of(uint32_t *ids, int *n, uint32_t id) {
    for (int i = 0; i < *n; i++)
        if (ids[i] == id) return i;
    ids[*n] = id;
    return (*n)++;
}

/* Unique images and texts of the triplets in m->trip. */
static void micro_slots(trainer *T, micro *m) {
    m->n_img = m->n_txt = 0;
    m->txt_ids[m->n_txt++] = 0; /* the empty instruction, slot 0 */
    for (int i = 0; i < m->n; i++) {
        const ml_triplet *t = &T->data.items[m->trip[i]];
        m->q_slot[i] = slot_of(m->img_ids, &m->n_img, t->query);
        m->t_slot[i] = slot_of(m->img_ids, &m->n_img, t->target);
        m->s_slot[i] = slot_of(m->txt_ids, &m->n_txt, t->instruction);
    }
}

/* Drops triplets whose images or text failed (bad[slot] set). */
static int micro_filter(trainer *T, micro *m, const uint8_t *img_bad, const uint8_t *txt_bad) {
    int k = 0;
    for (int i = 0; i < m->n; i++) {
        if (img_bad[m->q_slot[i]] || img_bad[m->t_slot[i]] || txt_bad[m->s_slot[i]]) {
            T->dropped++;
            continue;
        }
        m->trip[k++] = m->trip[i];
    }
    int changed = k != m->n;
    m->n = k;
    return changed;
}

/* After dropping triplets: rebuilds the image and text lists from the
 * triplets left, so that no unused (possibly undecodable) image goes through
 * the towers, where its garbage would reach the weight gradients. */
static int micro_compact(trainer *T, micro *m, ml_error *err) {
    int ctx = T->tm.cfg.context_length, n_img = m->n_img, n_txt = m->n_txt;
    uint32_t *img = malloc(((size_t)n_img + 1) * sizeof *img);
    uint32_t *txt = malloc(((size_t)n_txt + 1) * sizeof *txt);
    float **px = malloc(((size_t)n_img + 1) * sizeof *px);
    int32_t *ids = malloc(((size_t)n_txt + 1) * ctx * sizeof *ids);
    if (!img || !txt || !px || !ids) {
        free(img), free(txt), free(px), free(ids);
        return ml_fail(err, "out of memory");
    }
    memcpy(img, m->img_ids, (size_t)n_img * sizeof *img);
    memcpy(txt, m->txt_ids, (size_t)n_txt * sizeof *txt);
    memcpy(px, m->pixels, (size_t)n_img * sizeof *px);
    memcpy(ids, m->ids, (size_t)n_txt * ctx * sizeof *ids);
    micro_slots(T, m);
    for (int i = 0; i < m->n_img; i++)
        for (int o = 0; o < n_img; o++)
            if (img[o] == m->img_ids[i]) m->pixels[i] = px[o], px[o] = NULL;
    for (int o = 0; o < n_img; o++) free(px[o]);
    for (int i = m->n_img; i < n_img; i++) m->pixels[i] = NULL;
    for (int i = 0; i < m->n_txt; i++)
        for (int o = 0; o < n_txt; o++)
            if (txt[o] == m->txt_ids[i])
                memcpy(m->ids + (size_t)i * ctx, ids + (size_t)o * ctx, ctx * sizeof *ids);
    free(img), free(txt), free(px), free(ids);
    return 0;
}

static int load_pixels(trainer *T, micro *m, const uint8_t *want, uint8_t *bad, ml_error *err) {
    size_t px = (size_t)T->S * T->S * 3;
    int n = 0;
    uint32_t *ids = calloc((size_t)m->n_img + 1, sizeof *ids);
    int *slot = malloc((size_t)m->n_img * sizeof *slot),
        *ok = malloc((size_t)m->n_img * sizeof *ok);
    char **msgs = calloc((size_t)m->n_img, sizeof *msgs);
    float **bufs = calloc((size_t)m->n_img, sizeof *bufs);
    if (!ids || !slot || !ok || !msgs || !bufs) {
        free(ids), free(slot), free(ok), free(msgs), free(bufs);
        return ml_fail(err, "out of memory");
    }
    for (int i = 0; i < m->n_img; i++) {
        if (!want[i]) continue;
        if (!(m->pixels[i] = malloc(px * sizeof(float)))) continue;
        ids[n] = m->img_ids[i], slot[n] = i, bufs[n] = m->pixels[i], n++;
    }
    ml_tdata_load_images(&T->data, n, ids, T->S, T->o->workers, bufs, ok, msgs);
    for (int k = 0; k < n; k++) {
        if (!ok[k]) {
            bad[slot[k]] = 1;
            warn_cb(T, msgs[k] ? msgs[k] : "image failed to load");
        }
        free(msgs[k]);
    }
    for (int i = 0; i < m->n_img; i++)
        if (want[i] && !m->pixels[i]) bad[i] = 1;
    free(ids), free(slot), free(ok), free(msgs), free(bufs);
    return 0;
}

static int tokenize_texts(trainer *T, micro *m, uint8_t *bad) {
    int ctx = T->tm.cfg.context_length;
    for (int i = 0; i < m->n_txt; i++) {
        ml_error e;
        if (ml_tokenizer_encode(T->tok, T->data.texts[m->txt_ids[i]], ctx, 1,
                                m->ids + (size_t)i * ctx, &e) < 0) {
            bad[i] = 1;
            warn_cb(T, e.msg);
        }
    }
    return 0;
}

/* Frozen, cached towers: fills the cache for what this batch needs, one
 * tower call per kind for all the new images / texts. */
static int fill_cache(trainer *T, micro *m, uint8_t *img_bad, uint8_t *txt_bad, ml_error *err) {
    size_t E = (size_t)T->E;
    int ctx = T->tm.cfg.context_length, n = m->n_img > m->n_txt ? m->n_img : m->n_txt;
    uint8_t *want = calloc((size_t)m->n_img + 1, 1);
    int *slot = malloc(((size_t)n + 1) * sizeof *slot);
    const float **px = malloc(((size_t)m->n_img + 1) * sizeof *px);
    int32_t *ids = malloc(((size_t)m->n_txt + 1) * ctx * sizeof *ids);
    float *out = malloc(((size_t)n + 1) * E * sizeof(float));
    int rc = want && slot && px && ids && out ? 0 : ml_fail(err, "out of memory"), k = 0;
    for (int i = 0; rc == 0 && i < m->n_img; i++) k += want[i] = T->img_state[m->img_ids[i]] == 0;
    if (rc == 0 && k) rc = load_pixels(T, m, want, img_bad, err);
    k = 0;
    for (int i = 0; rc == 0 && i < m->n_img; i++) {
        if (!want[i]) continue;
        if (img_bad[i])
            T->img_state[m->img_ids[i]] = 2;
        else
            slot[k] = i, px[k++] = m->pixels[i];
    }
    if (rc == 0 && k) rc = ml_tmodel_image_tower(&T->tm, k, px, out, err);
    for (int j = 0; rc == 0 && j < k; j++) {
        uint32_t id = m->img_ids[slot[j]];
        memcpy(T->img_cache + id * E, out + (size_t)j * E, E * sizeof(float));
        T->img_state[id] = 1;
    }
    for (int i = 0; rc == 0 && i < m->n_img; i++)
        if (T->img_state[m->img_ids[i]] == 2) img_bad[i] = 1;
    k = 0;
    for (int i = 0; rc == 0 && i < m->n_txt; i++) {
        uint32_t id = m->txt_ids[i];
        if (T->txt_state[id] == 0 && txt_bad[i]) T->txt_state[id] = 2;
        if (T->txt_state[id] == 0) {
            memcpy(ids + (size_t)k * ctx, m->ids + (size_t)i * ctx, ctx * sizeof *ids);
            slot[k++] = i;
        }
    }
    if (rc == 0 && k) rc = ml_tmodel_text_tower(&T->tm, k, ids, out, err);
    for (int j = 0; rc == 0 && j < k; j++) {
        uint32_t id = m->txt_ids[slot[j]];
        memcpy(T->txt_cache + id * E, out + (size_t)j * E, E * sizeof(float));
        T->txt_state[id] = 1;
    }
    for (int i = 0; rc == 0 && i < m->n_txt; i++)
        if (T->txt_state[m->txt_ids[i]] == 2) txt_bad[i] = 1;
    free(want), free(slot), free(px), free(ids), free(out);
    return rc;
}

static int micro_alloc(micro *m, int n, int ctx) {
    int cap = 2 * n + 1;
    m->trip = calloc((size_t)n + 1, sizeof *m->trip);
    m->img_ids = calloc((size_t)cap, sizeof *m->img_ids);
    m->txt_ids = calloc((size_t)cap, sizeof *m->txt_ids);
    m->q_slot = calloc((size_t)n + 1, sizeof(int));
    m->t_slot = calloc((size_t)n + 1, sizeof(int));
    m->s_slot = calloc((size_t)n + 1, sizeof(int));
    m->pixels = calloc((size_t)cap, sizeof *m->pixels);
    m->ids = calloc((size_t)cap * ctx, sizeof *m->ids);
    return m->trip && m->img_ids && m->txt_ids && m->q_slot && m->t_slot && m->s_slot &&
                   m->pixels && m->ids
               ? 0
               : -1;
}

/* Reads this rank's share of the next micro-batch and prepares the inputs. */
static int micro_prepare(trainer *T, micro *m, ml_error *err) {
    int B = T->o->batch, lo = (int)((int64_t)T->rank * B / T->size);
    int hi = (int)((int64_t)(T->rank + 1) * B / T->size);
    int ctx = T->tm.cfg.context_length;
    if (micro_alloc(m, B, ctx) != 0) return ml_fail(err, "out of memory");
    for (int i = 0; i < B; i++) {
        uint32_t t = next_triplet(T);
        if (i >= lo && i < hi) m->trip[m->n++] = t;
    }
    micro_slots(T, m);
    uint8_t *img_bad = calloc((size_t)m->n_img + 1, 1), *txt_bad = calloc((size_t)m->n_txt + 1, 1);
    uint8_t *all = malloc((size_t)m->n_img + 1);
    if (!img_bad || !txt_bad || !all) {
        free(img_bad), free(txt_bad), free(all);
        return ml_fail(err, "out of memory");
    }
    memset(all, 1, (size_t)m->n_img + 1);
    int rc = tokenize_texts(T, m, txt_bad);
    if (rc == 0 && T->img_cache)
        rc = fill_cache(T, m, img_bad, txt_bad, err);
    else if (rc == 0)
        rc = load_pixels(T, m, all, img_bad, err);
    if (rc == 0 && micro_filter(T, m, img_bad, txt_bad)) rc = micro_compact(T, m, err);
    if (rc == 0 && T->img_cache) {
        size_t E = (size_t)T->E;
        m->img_emb = malloc((size_t)(m->n_img + 1) * E * sizeof(float));
        m->txt_emb = malloc((size_t)(m->n_txt + 1) * E * sizeof(float));
        if (!m->img_emb || !m->txt_emb) rc = ml_fail(err, "out of memory");
        for (int i = 0; rc == 0 && i < m->n_img; i++)
            memcpy(m->img_emb + i * E, T->img_cache + (size_t)m->img_ids[i] * E, E * sizeof(float));
        for (int i = 0; rc == 0 && i < m->n_txt; i++)
            memcpy(m->txt_emb + i * E, T->txt_cache + (size_t)m->txt_ids[i] * E, E * sizeof(float));
    }
    free(img_bad), free(txt_bad), free(all);
    return rc;
}

/* Forward over this rank's triplets: emb = [q (n rows); t (n); qn (n)]. */
static ml_tstate *micro_forward(trainer *T, micro *m, float *emb, ml_error *err) {
    int n = m->n;
    int *oi = malloc(3 * (size_t)n * sizeof *oi), *ot = malloc(3 * (size_t)n * sizeof *ot);
    if (!oi || !ot) {
        free(oi), free(ot);
        ml_fail(err, "out of memory");
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        oi[i] = m->q_slot[i], ot[i] = m->s_slot[i];      /* query + instruction */
        oi[n + i] = m->t_slot[i], ot[n + i] = 0;         /* target, "" */
        oi[2 * n + i] = m->q_slot[i], ot[2 * n + i] = 0; /* query negative */
    }
    ml_tbatch b = {0};
    b.n_img = m->n_img, b.n_txt = m->n_txt, b.n_out = 3 * n, b.out_img = oi, b.out_txt = ot;
    if (m->img_emb) {
        b.img_emb = m->img_emb, b.txt_emb = m->txt_emb;
    } else {
        b.pixels = (const float *const *)m->pixels;
        b.ids = m->ids;
    }
    ml_tstate *st = ml_tmodel_forward(&T->tm, &b, T->o->train_towers, emb, err);
    free(oi), free(ot);
    return st;
}

/* Loss over the global batch; writes this rank's gradient rows into d_emb. */
static int global_loss(trainer *T, int n, const float *emb, float *d_emb, step_stats *ss,
                       ml_error *err) {
    size_t E = (size_t)T->E, B = (size_t)T->o->batch;
    float *g = malloc(6 * B * E * sizeof(float) + 1);
    int *counts = calloc((size_t)T->size, sizeof *counts);
    if (!g || !counts) {
        free(g), free(counts);
        return ml_fail(err, "out of memory");
    }
    float *Q = g, *Tt = Q + B * E, *QN = Tt + B * E, *dQ = QN + B * E, *dT = dQ + B * E,
          *dQN = dT + B * E;
    int rc = 0;
    for (int k = 0; k < 3 && rc == 0; k++)
        rc = ml_dist_allgather_f32(emb + (size_t)k * n * E, (int)((size_t)n * E),
                                   k == 0   ? Q
                                   : k == 1 ? Tt
                                            : QN,
                                   counts, err);
    int64_t N = 0, off = 0;
    for (int r = 0; r < T->size; r++) {
        if (r == T->rank) off = N;
        N += counts[r] / (int64_t)E;
    }
    if (rc == 0 && N > 0) {
        float dscale = 0;
        double acc = 0;
        double loss = ml_contrastive_loss((int)N, (int)E, Q, Tt, QN, T->tm.w[T->scale->offset], dQ,
                                          dT, dQN, &dscale, &acc);
        float inv = 1.0f / (float)T->o->accum;
        for (size_t i = 0; i < (size_t)n * E; i++) {
            d_emb[i] = dQ[off * E + i] * inv;
            d_emb[n * E + i] = dT[off * E + i] * inv;
            d_emb[2 * n * E + i] = dQN[off * E + i] * inv;
        }
        /* Every rank computed the same d/dlog_scale: count it once. */
        if (T->learn_scale && T->rank == 0) T->tm.g[T->scale->offset] += dscale * inv;
        ss->loss += loss, ss->acc += acc, ss->micro++, ss->triplets += N;
    }
    free(g), free(counts);
    return rc;
}

static int micro_step(trainer *T, step_stats *ss, ml_error *err) {
    micro m = {0};
    int rc = micro_prepare(T, &m, err);
    size_t E = (size_t)T->E;
    float *emb = NULL, *d_emb = NULL;
    ml_tstate *st = NULL;
    if (rc == 0) {
        emb = malloc((3 * (size_t)m.n + 1) * E * sizeof(float));
        d_emb = malloc((3 * (size_t)m.n + 1) * E * sizeof(float));
        if (!emb || !d_emb) rc = ml_fail(err, "out of memory");
    }
    if (rc == 0 && m.n > 0 && !(st = micro_forward(T, &m, emb, err))) rc = -1;
    /* Every rank joins the gathers, even with nothing of its own. */
    if (!ml_dist_all_true(rc == 0)) rc = rc ? rc : ml_fail(err, "another rank failed");
    if (rc == 0) rc = global_loss(T, m.n, emb, d_emb, ss, err);
    if (rc == 0 && st) rc = ml_tmodel_backward(&T->tm, st, d_emb, err);
    ml_tstate_free(st);
    free(emb), free(d_emb);
    micro_free(&m);
    return rc;
}

/* ---- one optimiser step --------------------------------------------- */

static void zero_grads(trainer *T) {
    if (T->o->train_towers) {
        ml_tmodel_zero_grad(&T->tm);
        return;
    }
    for (int r = 0; r < T->n_ranges; r++)
        memset(T->tm.g + T->ranges[r].offset, 0, T->ranges[r].count * sizeof(float));
}

static int train_step(trainer *T, step_stats *ss, double *lr, double *gnorm, ml_error *err) {
    memset(ss, 0, sizeof *ss);
    zero_grads(T);
    for (int a = 0; a < T->o->accum; a++)
        if (micro_step(T, ss, err) != 0) return -1;
    if (T->size > 1)
        for (int r = 0; r < T->n_ranges; r++)
            ml_dist_sum_f32(T->tm.g + T->ranges[r].offset, T->ranges[r].count);
    *gnorm = ml_grad_norm(T->tm.g, T->ranges, T->n_ranges);
    /* torch.nn.utils.clip_grad_norm_'s rule, so runs compare with PyTorch's. */
    double coef = T->o->clip_norm / (*gnorm + 1e-6);
    if (T->o->clip_norm > 0 && coef < 1.0)
        ml_grad_scale(T->tm.g, T->ranges, T->n_ranges, (float)coef);
    int64_t warmup = T->o->warmup >= 0 ? T->o->warmup : T->o->steps / 20;
    *lr = ml_lr_at(T->o->lr, warmup, T->o->steps, T->o->min_lr_ratio, T->pos.step);
    if (ss->micro > 0) ml_adamw_step(&T->opt, T->tm.w, T->tm.g, T->ranges, T->n_ranges, *lr);
    T->pos.step++;
    return 0;
}

/* ---- evaluation --------------------------------------------------------- */

/* Embeds (image slot, text) pairs of one id list in chunks. */
static int eval_embed(trainer *T, int n, const uint32_t *img, const uint32_t *txt, float *out,
                      int *ok, ml_error *err) {
    const int chunk = 16;
    size_t px = (size_t)T->S * T->S * 3, E = (size_t)T->E;
    int ctx = T->tm.cfg.context_length, rc = 0;
    float *pix = malloc(chunk * px * sizeof(float));
    int32_t *ids = malloc((size_t)chunk * ctx * sizeof *ids);
    if (!pix || !ids) rc = ml_fail(err, "out of memory");
    for (int s = 0; rc == 0 && s < n; s += chunk) {
        int c = n - s < chunk ? n - s : chunk, good = 0;
        float *bufs[16];
        int oks[16], oi[16], ot[16];
        for (int i = 0; i < c; i++) bufs[i] = pix + i * px;
        ml_tdata_load_images(&T->eval, c, img + s, T->S, T->o->workers, bufs, oks, NULL);
        const float *use[16];
        for (int i = 0; i < c; i++) {
            ml_error e;
            ok[s + i] = oks[i] && ml_tokenizer_encode(T->tok, T->eval.texts[txt[s + i]], ctx, 1,
                                                      ids + (size_t)good * ctx, &e) >= 0;
            if (!ok[s + i]) continue;
            use[good] = bufs[i], oi[good] = good, ot[good] = good, good++;
        }
        if (good == 0) continue;
        float emb[16 * 1024];
        float *e = E <= 1024 ? emb : malloc((size_t)good * E * sizeof(float));
        ml_tbatch b = {good, use, NULL, good, ids, NULL, good, oi, ot};
        ml_tstate *st = e ? ml_tmodel_forward(&T->tm, &b, 0, e, err) : NULL;
        if (!st) rc = -1;
        ml_tstate_free(st);
        for (int i = 0, k = 0; rc == 0 && i < c; i++)
            if (ok[s + i])
                memcpy(out + (size_t)(s + i) * E, e + (size_t)k++ * E, E * sizeof(float));
        if (e != emb) free(e);
    }
    free(pix), free(ids);
    return rc;
}

static double dotf(const float *a, const float *b, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* Recall@1/5/10 of each held-out query's target among all held-out targets. */
static int evaluate(trainer *T, double rec[3], ml_error *err) {
    const ml_tdata *d = &T->eval;
    size_t E = (size_t)T->E;
    int nq = (int)d->n, ng = 0;
    /* The gallery: the distinct target images of the held-out set (slot[] maps an
     * image id to its gallery row, -1 for images that are only queries). */
    int *slot = malloc(d->n_images * sizeof *slot);
    uint32_t *qi = malloc(nq * sizeof *qi), *qt = malloc(nq * sizeof *qt);
    uint32_t *gi = malloc(nq * sizeof *gi), *gt = calloc(nq, sizeof *gt);
    float *qe = malloc((size_t)nq * E * sizeof(float)),
          *ge = malloc((size_t)nq * E * sizeof(float));
    int *qok = malloc(nq * sizeof *qok), *gok = malloc(nq * sizeof *gok);
    int rc =
        slot && qi && qt && gi && gt && qe && ge && qok && gok ? 0 : ml_fail(err, "out of memory");
    for (size_t i = 0; rc == 0 && i < d->n_images; i++) slot[i] = -1;
    for (int i = 0; rc == 0 && i < nq; i++) {
        qi[i] = d->items[i].query, qt[i] = d->items[i].instruction;
        uint32_t t = d->items[i].target;
        if (slot[t] < 0) slot[t] = ng, gi[ng++] = t;
    }
    if (rc == 0) rc = eval_embed(T, nq, qi, qt, qe, qok, err);
    if (rc == 0) rc = eval_embed(T, ng, gi, gt, ge, gok, err);
    int counted = 0, hits[3] = {0};
    for (int i = 0; rc == 0 && i < nq; i++) {
        int tgt = slot[d->items[i].target];
        if (!qok[i] || !gok[tgt]) continue;
        const float *q = qe + (size_t)i * E;
        double st = dotf(q, ge + (size_t)tgt * E, (int)E);
        int rank = 0;
        for (int g = 0; g < ng; g++)
            if (g != tgt && gok[g] && dotf(q, ge + (size_t)g * E, (int)E) > st) rank++;
        counted++;
        hits[0] += rank < 1, hits[1] += rank < 5, hits[2] += rank < 10;
    }
    for (int k = 0; k < 3; k++) rec[k] = counted ? (double)hits[k] / counted : 0;
    free(slot), free(qi), free(qt), free(gi), free(gt), free(qe), free(ge), free(qok), free(gok);
    return rc;
}

/* ---- logging, saving ----------------------------------------------------- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double temperature(const trainer *T) {
    double s = exp(T->tm.w[T->scale->offset]);
    return 1.0 / (s > 100 ? 100 : s);
}

static void log_step(trainer *T, const step_stats *ss, double lr, double gnorm, double secs) {
    double loss = ss->micro ? ss->loss / ss->micro : NAN,
           acc = ss->micro ? ss->acc / ss->micro : NAN;
    double tps = secs > 0 ? ss->triplets / secs : 0;
    if (!T->o->quiet && T->o->log_every > 0 && T->pos.step % T->o->log_every == 0)
        fprintf(stderr,
                "step %lld/%lld  loss %.4f  acc %.3f  lr %.2e  temp %.4f  |g| %.3g "
                " %.1f triplets/s\n",
                (long long)T->pos.step, (long long)T->o->steps, loss, acc, lr, temperature(T),
                gnorm, tps);
    json_t *o = json_pack("{sI sI sf sf sf sf sf sI sI sf}", "step", (json_int_t)T->pos.step,
                          "epoch", (json_int_t)T->pos.epoch, "loss", ss->micro ? loss : 0.0, "acc",
                          ss->micro ? acc : 0.0, "lr", lr, "temperature", temperature(T),
                          "grad_norm", gnorm, "triplets", (json_int_t)ss->triplets, "dropped",
                          (json_int_t)T->dropped, "triplets_per_s", tps);
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(10)) : NULL;
    if (s && T->log) fprintf(T->log, "%s\n", s), fflush(T->log);
    free(s);
    json_decref(o);
}

static void log_eval(trainer *T, const double rec[3]) {
    if (!T->o->quiet)
        fprintf(stderr, "eval step %lld: recall@1 %.4f  @5 %.4f  @10 %.4f (%zu queries)\n",
                (long long)T->pos.step, rec[0], rec[1], rec[2], T->eval.n);
    json_t *o = json_pack("{sI s{sf sf sf}}", "step", (json_int_t)T->pos.step, "eval", "recall@1",
                          rec[0], "recall@5", rec[1], "recall@10", rec[2]);
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(10)) : NULL;
    if (s && T->log) fprintf(T->log, "%s\n", s), fflush(T->log);
    free(s);
    json_decref(o);
}

static int save(trainer *T, const char *name, int with_state, ml_error *err) {
    int rc = 0;
    if (T->rank == 0) {
        ml_ckpt_meta meta = {T->config_json, T->vocab, T->vocab_len, T->settings_hash};
        rc = ml_ckpt_save(T->o->output, name, &T->tm, with_state ? &T->opt : NULL, &T->pos, &meta,
                          err);
        if (rc == 0 && with_state) ml_ckpt_prune(T->o->output, T->o->keep);
        if (rc == 0 && !T->o->quiet) fprintf(stderr, "saved %s/%s.mlens\n", T->o->output, name);
    }
    if (!ml_dist_all_true(rc == 0)) return rc ? rc : ml_fail(err, "rank 0 failed to save");
    return 0;
}

static int save_step(trainer *T, ml_error *err) {
    char name[64];
    snprintf(name, sizeof name, "step_%lld", (long long)T->pos.step);
    return save(T, name, 1, err);
}

/* ---- the run ------------------------------------------------------------ */

static int resume_or_start(trainer *T, ml_error *err) {
    int64_t latest = ml_ckpt_latest(T->o->output);
    if (latest >= 0 && !T->o->resume)
        return ml_fail(err,
                       "%s already holds checkpoints (step_%lld); pass --resume to continue "
                       "or choose another --output",
                       T->o->output, (long long)latest);
    if (latest < 0) {
        if (T->o->resume && T->rank == 0 && !T->o->quiet)
            fprintf(stderr, "magiclens train: nothing to resume in %s; starting\n", T->o->output);
        return 0;
    }
    if (ml_ckpt_load(T->o->output, latest, &T->tm, &T->opt, &T->pos, T->settings_hash, err) != 0)
        return -1;
    if (T->rank == 0 && !T->o->quiet)
        fprintf(stderr,
                "magiclens train: resuming from step %lld (epoch %lld, position "
                "%lld)\n",
                (long long)T->pos.step, (long long)T->pos.epoch, (long long)T->pos.index);
    return 0;
}

static void on_signal(int sig) {
    (void)sig;
    g_stop_requested = 1;
}

static int setup(trainer *T, ml_error *err) {
    T->rank = ml_dist_rank(), T->size = ml_dist_size();
    const ml_train_opts *o = T->o;
    if (o->batch < 1 || o->accum < 1 || o->steps < 1)
        return ml_fail(err, "--batch, --accum and --steps must be at least 1");
    if (o->batch < T->size)
        return ml_fail(err, "--batch %d is smaller than the %d ranks", o->batch, T->size);
    if (T->rank == 0 && make_output_dir(o->output, err) != 0) return -1;
    if (!ml_dist_all_true(1)) return -1;
    T->settings_hash = settings_hash(o);
    if (setup_model(T, err) != 0) return -1;
    if (ml_tdata_load(&T->data, o->data, warn_cb, T, err) != 0) return -1;
    if (o->eval_data && ml_tdata_load(&T->eval, o->eval_data, warn_cb, T, err) != 0) return -1;
    if (!(T->perm = malloc(T->data.n * sizeof *T->perm))) return ml_fail(err, "out of memory");
    T->perm_epoch = -1;
    if (setup_caches(T, err) != 0) return -1;
    if (resume_or_start(T, err) != 0) return -1;
    if (T->rank == 0 && open_log(T, T->pos.step, err) != 0) return -1;
    if (T->rank == 0 && !o->quiet)
        fprintf(stderr,
                "magiclens train: %zu triplets (%zu images, %zu instructions, %zu "
                "skipped), "
                "%d rank(s), batch %d x %d, training %s, %s temperature\n",
                T->data.n, T->data.n_images, T->data.n_texts - 1, T->data.skipped, T->size,
                o->batch, o->accum, o->train_towers ? "all layers" : "the fusion layers",
                T->learn_scale ? "learned" : "fixed");
    return 0;
}

static void teardown(trainer *T) {
    if (T->log) fclose(T->log);
    ml_adamw_free(&T->opt);
    ml_tmodel_free(&T->tm);
    ml_tdata_free(&T->data);
    ml_tdata_free(&T->eval);
    ml_tokenizer_free(T->tok);
    free(T->vocab), free(T->config_json), free(T->ranges), free(T->perm);
    free(T->img_cache), free(T->txt_cache), free(T->img_state), free(T->txt_state);
}

/* Rank 0 evaluates; the others wait for its verdict. */
static int eval_and_log(trainer *T, ml_error *err) {
    double rec[3];
    int rc = T->rank == 0 ? evaluate(T, rec, err) : 0;
    if (rc == 0 && T->rank == 0) log_eval(T, rec);
    return ml_dist_all_true(rc == 0) ? 0 : -1;
}

static int run_loop(trainer *T, ml_error *err) {
    const ml_train_opts *o = T->o;
    int64_t first = T->pos.step;
    if (o->eval_data && first == 0 && eval_and_log(T, err) != 0) return -1; /* the baseline */
    while (T->pos.step < o->steps) {
        step_stats ss;
        double lr = 0, gnorm = 0, t0 = now_s();
        if (train_step(T, &ss, &lr, &gnorm, err) != 0) return -1;
        if (T->rank == 0) log_step(T, &ss, lr, gnorm, now_s() - t0);
        if (o->eval_data && o->eval_every > 0 && T->pos.step % o->eval_every == 0)
            if (eval_and_log(T, err) != 0) return -1;
        int stop = (int)ml_dist_max_u64(
            g_stop_requested || (o->stop_after > 0 && T->pos.step - first >= o->stop_after));
        if (stop || (o->save_every > 0 && T->pos.step % o->save_every == 0))
            if (T->pos.step < o->steps && save_step(T, err) != 0) return -1;
        if (stop && T->pos.step < o->steps) {
            if (T->rank == 0)
                fprintf(stderr, "magiclens train: stopped at step %lld; continue with --resume\n",
                        (long long)T->pos.step);
            return 0;
        }
    }
    if (first < o->steps || ml_ckpt_latest(o->output) != T->pos.step)
        if (save_step(T, err) != 0) return -1;
    return save(T, "final", 0, err);
}

int ml_train_run(const ml_train_opts *o, ml_error *err) {
    trainer T;
    memset(&T, 0, sizeof T);
    T.o = o;
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    int rc = setup(&T, err);
    if (!ml_dist_all_true(rc == 0)) rc = rc ? rc : ml_fail(err, "another rank failed to start");
    if (rc == 0) rc = run_loop(&T, err);
    teardown(&T);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    return rc;
}
