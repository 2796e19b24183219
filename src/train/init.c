/* init.c - see init.h and docs/training-init.md.
 *
 * Three parts: a safetensors reader (hostile files are the design
 * constraint: every offset, size and dtype is checked against the file
 * before a byte of data is read), the Hugging Face CLIPModel -> Flax name
 * and layout mapping, and the seeded initialisation of the fusion layers. */
#include "train/init.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "core/mem.h"
#include "io/native.h"

#define ST_MAX_HEADER (100u << 20) /* the safetensors format's own limit */
#define ST_MAX_LAYERS 1000

/* ---- safetensors ------------------------------------------------------ */

typedef struct st_file {
    const char *path;
    ml_file_map map;
    const uint8_t *data; /* the byte buffer after the header */
    size_t data_len;
    json_t *hdr;
} st_file;

typedef struct st_entry {
    const char *dtype;
    size_t elem; /* bytes per element, 0 for a dtype we do not know */
    int ndim;
    int64_t shape[ML_MAX_DIMS];
    const uint8_t *p;
    size_t n;
} st_entry;

static const struct {
    const char *name;
    size_t size;
} st_dtypes[] = {{"F64", 8}, {"F32", 4}, {"F16", 2},  {"BF16", 2},    {"I64", 8},
                 {"I32", 4}, {"I16", 2}, {"I8", 1},   {"U64", 8},     {"U32", 4},
                 {"U16", 2}, {"U8", 1},  {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};

static int st_int(const json_t *j, uint64_t *v) {
    if (!json_is_integer(j) || json_integer_value(j) < 0) return -1;
    *v = (uint64_t)json_integer_value(j);
    return 0;
}

/* Checks one header entry against the data buffer and describes it. */
static int st_parse_entry(const st_file *f, const char *name, const json_t *o, st_entry *e,
                          ml_error *err) {
    memset(e, 0, sizeof *e);
    const json_t *dt = json_object_get(o, "dtype"), *sh = json_object_get(o, "shape");
    const json_t *off = json_object_get(o, "data_offsets");
    if (!json_is_object(o) || !json_is_string(dt) || !json_is_array(sh) || !json_is_array(off) ||
        json_array_size(off) != 2)
        return ml_fail(err,
                       "%s: tensor '%s': entry needs dtype, shape and data_offsets [begin, end]",
                       f->path, name);
    e->dtype = json_string_value(dt);
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (!strcmp(e->dtype, st_dtypes[i].name)) e->elem = st_dtypes[i].size;
    if (json_array_size(sh) > ML_MAX_DIMS)
        return ml_fail(err, "%s: tensor '%s': %zu dimensions (at most %d)", f->path, name,
                       json_array_size(sh), ML_MAX_DIMS);
    e->ndim = (int)json_array_size(sh);
    uint64_t numel = 1, b, end, d;
    for (int i = 0; i < e->ndim; i++) {
        if (st_int(json_array_get(sh, (size_t)i), &d) != 0 || d > (uint64_t)INT64_MAX)
            return ml_fail(err, "%s: tensor '%s': dimension %d is not a non-negative integer",
                           f->path, name, i);
        e->shape[i] = (int64_t)d;
        if (__builtin_mul_overflow(numel, d, &numel))
            return ml_fail(err, "%s: tensor '%s': shape overflows", f->path, name);
    }
    if (st_int(json_array_get(off, 0), &b) != 0 || st_int(json_array_get(off, 1), &end) != 0 ||
        b > end || end > f->data_len)
        return ml_fail(err,
                       "%s: tensor '%s': data_offsets out of range (data section is %zu bytes)",
                       f->path, name, f->data_len);
    uint64_t want;
    if (e->elem && (__builtin_mul_overflow(numel, (uint64_t)e->elem, &want) || want != end - b))
        return ml_fail(err,
                       "%s: tensor '%s': shape needs %llu elements of %zu bytes but "
                       "data_offsets give %llu bytes",
                       f->path, name, (unsigned long long)numel, e->elem,
                       (unsigned long long)(end - b));
    e->p = f->data + b;
    e->n = (size_t)(end - b);
    return 0;
}

static void st_close(st_file *f) {
    json_decref(f->hdr);
    ml_file_map_close(&f->map);
    memset(f, 0, sizeof *f);
}

/* Maps the file, parses the header and checks every entry. */
static int st_open(const char *path, st_file *f, ml_error *err) {
    memset(f, 0, sizeof *f);
    f->path = path;
    if (ml_file_map_open(path, &f->map, err) != 0) return -1;
    const uint8_t *d = f->map.data;
    size_t size = f->map.size;
    if (size < 8) {
        st_close(f);
        return ml_fail(err, "%s: %zu bytes, too short for a safetensors file", path, size);
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | d[i];
    if (n > size - 8 || n > ST_MAX_HEADER || n < 2) {
        st_close(f);
        return ml_fail(err, "%s: safetensors header length %llu does not fit the file (%zu bytes)",
                       path, (unsigned long long)n, size);
    }
    json_error_t je;
    f->hdr = json_loadb((const char *)d + 8, (size_t)n, JSON_REJECT_DUPLICATES, &je);
    if (!f->hdr || !json_is_object(f->hdr)) {
        int bad = !f->hdr;
        st_close(f);
        return bad ? ml_fail(err, "%s: safetensors header is not valid JSON: %s (column %d)", path,
                             je.text, je.column)
                   : ml_fail(err, "%s: safetensors header is not a JSON object", path);
    }
    f->data = d + 8 + n;
    f->data_len = size - 8 - (size_t)n;
    const char *key;
    json_t *v;
    json_object_foreach(f->hdr, key, v) {
        st_entry e;
        if (!strcmp(key, "__metadata__")) continue;
        if (st_parse_entry(f, key, v, &e, err) != 0) {
            st_close(f);
            return -1;
        }
    }
    return 0;
}

/* Finds a tensor and checks its dtype is a float type we convert. */
static int st_find(const st_file *f, const char *name, st_entry *e, ml_error *err) {
    const json_t *o = json_object_get(f->hdr, name);
    if (!o)
        return ml_fail(err, "%s: no tensor '%s' (not a Hugging Face CLIPModel file?)", f->path,
                       name);
    if (st_parse_entry(f, name, o, e, err) != 0) return -1;
    if (strcmp(e->dtype, "F32") && strcmp(e->dtype, "F16") && strcmp(e->dtype, "BF16"))
        return ml_fail(err, "%s: tensor '%s' has dtype %s (F32, F16 or BF16 expected)", f->path,
                       name, e->dtype);
    return 0;
}

/* Number of blocks PREFIX0., PREFIX1., ... named in the header (max index + 1). */
static int st_count_layers(const st_file *f, const char *prefix) {
    size_t pl = strlen(prefix);
    int n = 0;
    const char *key;
    json_t *v;
    json_object_foreach(f->hdr, key, v) {
        if (strncmp(key, prefix, pl) != 0) continue;
        char *end;
        long i = strtol(key + pl, &end, 10);
        if (end != key + pl && *end == '.' && i >= 0 && i < ST_MAX_LAYERS && i + 1 > n)
            n = (int)i + 1;
    }
    return n;
}

/* ---- Hugging Face CLIPModel -> Flax ----------------------------------- */

typedef struct hf_ctx {
    st_file st;
    ml_tensor_set *out;
    ml_error *err;
} hf_ctx;

/* Reads a float tensor of the expected shape (-1: any; the actual shape is
 * written back) as a new float32 buffer. */
static float *hf_get(hf_ctx *c, const char *name, int ndim, int64_t *shape) {
    st_entry e;
    if (st_find(&c->st, name, &e, c->err) != 0) return NULL;
    if (e.ndim != ndim) {
        ml_fail(c->err, "%s: tensor '%s' has %d dimensions, expected %d", c->st.path, name, e.ndim,
                ndim);
        return NULL;
    }
    for (int i = 0; i < ndim; i++) {
        if (e.shape[i] <= 0 || (shape[i] >= 0 && e.shape[i] != shape[i])) {
            ml_fail(c->err, "%s: tensor '%s' dimension %d is %lld, expected %lld", c->st.path, name,
                    i, (long long)e.shape[i], (long long)shape[i]);
            return NULL;
        }
        shape[i] = e.shape[i];
    }
    size_t elem = e.elem, numel = e.n / elem;
    float *out = ml_aligned_alloc((numel ? numel : 1) * sizeof *out, c->err);
    if (!out) return NULL;
    for (size_t i = 0; i < numel; i++) {
        const uint8_t *p = e.p + i * elem; /* memcpy: the data may be unaligned */
        if (elem == 4) {
            memcpy(&out[i], p, 4);
        } else {
            uint16_t h;
            memcpy(&h, p, 2);
            out[i] = e.dtype[0] == 'B' ? ml_bf16_to_f32(h) : ml_f16_to_f32(h);
        }
    }
    return out;
}

/* Hands buf to the output set under NAME with the given shape. */
static int hf_emit(hf_ctx *c, const char *name, float *buf, int ndim, const int64_t *shape) {
    if (ml_tensor_set_own(c->out, buf, c->err) != 0) {
        free(buf);
        return -1;
    }
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) numel *= (size_t)shape[i];
    return ml_tensor_set_add(c->out, name, ML_F32, ndim, shape, buf, numel * sizeof(float), c->err);
}

/* A tensor whose bytes keep their order (embeddings, norms, biases):
 * reshaped from `ndim` dims `src` (-1: any) to `dndim` dims `dst` (NULL:
 * the source's own shape). */
static int hf_copy(hf_ctx *c, const char *dname, const char *sname, int ndim, const int64_t *src,
                   int dndim, const int64_t *dst) {
    int64_t s[ML_MAX_DIMS];
    memcpy(s, src, sizeof(int64_t) * (size_t)ndim);
    float *b = hf_get(c, sname, ndim, s);
    if (!b) return -1;
    return dst ? hf_emit(c, dname, b, dndim, dst) : hf_emit(c, dname, b, ndim, s);
}

enum { LIN_PLAIN, LIN_QKV, LIN_OUT };

/* torch Linear weight [out, in] -> Flax kernel [in, out], then split into
 * heads: QKV [in, heads, out/heads], OUT [heads, in/heads, out].  out < 0:
 * any (taken from the file); *out_dim receives it. */
static int hf_linear(hf_ctx *c, const char *dname, const char *sname, int64_t in, int64_t out,
                     int mode, int heads, int64_t *out_dim) {
    int64_t s[2] = {out, in};
    float *w = hf_get(c, sname, 2, s);
    if (!w) return -1;
    out = s[0];
    if (out_dim) *out_dim = out;
    float *t = ml_aligned_alloc((size_t)(in * out) * sizeof *t, c->err);
    if (!t) {
        free(w);
        return -1;
    }
    for (int64_t o = 0; o < out; o++)
        for (int64_t i = 0; i < in; i++) t[i * out + o] = w[o * in + i];
    free(w);
    int64_t d[3];
    int nd = 2;
    if (mode == LIN_PLAIN)
        d[0] = in, d[1] = out;
    else if (mode == LIN_QKV)
        nd = 3, d[0] = in, d[1] = heads, d[2] = out / heads;
    else
        nd = 3, d[0] = heads, d[1] = in / heads, d[2] = out;
    return hf_emit(c, dname, t, nd, d);
}

/* Conv weight [W, 3, P, P] (OIHW) -> Flax kernel [P, P, 3, W] (HWIO). */
static int hf_conv(hf_ctx *c, const char *dname, const char *sname, int64_t W, int64_t *patch) {
    int64_t s[4] = {W, 3, -1, -1};
    float *w = hf_get(c, sname, 4, s);
    if (!w) return -1;
    int64_t P = s[2];
    if (s[3] != P) {
        free(w);
        return ml_fail(c->err, "%s: tensor '%s': patches are not square", c->st.path, sname);
    }
    float *t = ml_aligned_alloc((size_t)(P * P * 3 * W) * sizeof *t, c->err);
    if (!t) {
        free(w);
        return -1;
    }
    for (int64_t o = 0; o < W; o++)
        for (int64_t ch = 0; ch < 3; ch++)
            for (int64_t h = 0; h < P; h++)
                for (int64_t x = 0; x < P; x++)
                    t[((h * P + x) * 3 + ch) * W + o] = w[((o * 3 + ch) * P + h) * P + x];
    free(w);
    *patch = P;
    int64_t d[4] = {P, P, 3, W};
    return hf_emit(c, dname, t, 4, d);
}

static int hf_norm(hf_ctx *c, const char *fx, const char *hf, int64_t W) {
    char d[256], s[256];
    int64_t sh[1] = {W};
    snprintf(d, sizeof d, "%s/scale", fx);
    snprintf(s, sizeof s, "%s.weight", hf);
    if (hf_copy(c, d, s, 1, sh, 1, sh) != 0) return -1;
    snprintf(d, sizeof d, "%s/bias", fx);
    snprintf(s, sizeof s, "%s.bias", hf);
    return hf_copy(c, d, s, 1, sh, 1, sh);
}

/* One encoder layer: HF "<hf>.self_attn.q_proj..." -> Flax "<fx>/attn/query/...". */
static int hf_block(hf_ctx *c, const char *hf, const char *fx, int64_t W, int heads) {
    static const char *const proj[4][2] = {
        {"q_proj", "query"}, {"k_proj", "key"}, {"v_proj", "value"}, {"out_proj", "out"}};
    char d[256], s[256], a[256], b[256];
    snprintf(a, sizeof a, "%s/ln_1", fx);
    snprintf(b, sizeof b, "%s.layer_norm1", hf);
    if (hf_norm(c, a, b, W) != 0) return -1;
    int64_t hd = W / heads, bw[1] = {W}, bh[2] = {heads, hd};
    for (int k = 0; k < 4; k++) {
        int out = k == 3;
        snprintf(d, sizeof d, "%s/attn/%s/kernel", fx, proj[k][1]);
        snprintf(s, sizeof s, "%s.self_attn.%s.weight", hf, proj[k][0]);
        if (hf_linear(c, d, s, W, W, out ? LIN_OUT : LIN_QKV, heads, NULL) != 0) return -1;
        snprintf(d, sizeof d, "%s/attn/%s/bias", fx, proj[k][1]);
        snprintf(s, sizeof s, "%s.self_attn.%s.bias", hf, proj[k][0]);
        if (hf_copy(c, d, s, 1, bw, out ? 1 : 2, out ? bw : bh) != 0) return -1;
    }
    snprintf(a, sizeof a, "%s/ln_2", fx);
    snprintf(b, sizeof b, "%s.layer_norm2", hf);
    if (hf_norm(c, a, b, W) != 0) return -1;
    int64_t I;
    snprintf(d, sizeof d, "%s/mlp/c_fc/kernel", fx);
    snprintf(s, sizeof s, "%s.mlp.fc1.weight", hf);
    if (hf_linear(c, d, s, W, -1, LIN_PLAIN, heads, &I) != 0) return -1;
    int64_t bi[1] = {I};
    snprintf(d, sizeof d, "%s/mlp/c_fc/bias", fx);
    snprintf(s, sizeof s, "%s.mlp.fc1.bias", hf);
    if (hf_copy(c, d, s, 1, bi, 1, bi) != 0) return -1;
    snprintf(d, sizeof d, "%s/mlp/c_proj/kernel", fx);
    snprintf(s, sizeof s, "%s.mlp.fc2.weight", hf);
    if (hf_linear(c, d, s, I, W, LIN_PLAIN, heads, NULL) != 0) return -1;
    snprintf(d, sizeof d, "%s/mlp/c_proj/bias", fx);
    snprintf(s, sizeof s, "%s.mlp.fc2.bias", hf);
    return hf_copy(c, d, s, 1, bw, 1, bw);
}

/* Shape of a float tensor without reading it. */
static int hf_shape(hf_ctx *c, const char *name, int ndim, int64_t *shape) {
    st_entry e;
    if (st_find(&c->st, name, &e, c->err) != 0) return -1;
    if (e.ndim != ndim)
        return ml_fail(c->err, "%s: tensor '%s' has %d dimensions, expected %d", c->st.path, name,
                       e.ndim, ndim);
    memcpy(shape, e.shape, sizeof(int64_t) * (size_t)ndim);
    return 0;
}

static int hf_heads(hf_ctx *c, const char *tower, int64_t W, int heads) {
    if (heads <= 0) heads = (int)(W / 64);
    if (heads <= 0 || W % heads != 0)
        return ml_fail(c->err,
                       "%s: %s width %lld does not split into %d heads (give "
                       "num_attention_heads in config.json)",
                       c->st.path, tower, (long long)W, heads);
    return heads;
}

static int hf_tower(hf_ctx *c, const char *hf, const char *fx, const char *tower, int64_t W,
                    int heads) {
    char p[64];
    snprintf(p, sizeof p, "%s.encoder.layers.", hf);
    int n = st_count_layers(&c->st, p);
    if (n == 0) return ml_fail(c->err, "%s: no %s encoder layers (%s0...)", c->st.path, tower, p);
    for (int i = 0; i < n; i++) {
        char a[128], b[128];
        snprintf(a, sizeof a, "%s.encoder.layers.%d", hf, i);
        snprintf(b, sizeof b, "%s/transformer/resblocks_%d", fx, i);
        if (hf_block(c, a, b, W, heads) != 0) return -1;
    }
    return 0;
}

static int hf_vision(hf_ctx *c, int heads, int64_t *E) {
    const char *v = "vision_model";
    int64_t W, P, sh[2];
    if (hf_shape(c, "vision_model.embeddings.class_embedding", 1, sh) != 0) return -1;
    W = sh[0];
    if ((heads = hf_heads(c, "vision", W, heads)) < 0) return -1;
    int64_t w1[1] = {W}, pos[2] = {-1, W};
    if (hf_conv(c, "clip/visual/conv1/kernel", "vision_model.embeddings.patch_embedding.weight", W,
                &P) != 0 ||
        hf_copy(c, "clip/visual/class_embedding", "vision_model.embeddings.class_embedding", 1, w1,
                1, w1) != 0 ||
        hf_copy(c, "clip/visual/positional_embedding",
                "vision_model.embeddings.position_embedding.weight", 2, pos, 2, NULL) != 0 ||
        hf_norm(c, "clip/visual/ln_pre", "vision_model.pre_layrnorm", W) != 0 ||
        hf_tower(c, v, "clip/visual", "vision", W, heads) != 0 ||
        hf_norm(c, "clip/visual/ln_post", "vision_model.post_layernorm", W) != 0 ||
        hf_linear(c, "clip/visual/proj/kernel", "visual_projection.weight", W, -1, LIN_PLAIN, 1,
                  E) != 0)
        return -1;
    return 0;
}

static int hf_text(hf_ctx *c, int heads, int64_t E) {
    int64_t tok[2];
    if (hf_shape(c, "text_model.embeddings.token_embedding.weight", 2, tok) != 0) return -1;
    int64_t W = tok[1], pos[2] = {-1, W}, none[1] = {0};
    if ((heads = hf_heads(c, "text", W, heads)) < 0) return -1;
    if (hf_copy(c, "clip/text/token_embedding/embedding",
                "text_model.embeddings.token_embedding.weight", 2, tok, 2, tok) != 0 ||
        hf_copy(c, "clip/text/positional_embedding",
                "text_model.embeddings.position_embedding.weight", 2, pos, 2, NULL) != 0 ||
        hf_tower(c, "text_model", "clip/text", "text", W, heads) != 0 ||
        hf_norm(c, "clip/text/ln_final", "text_model.final_layer_norm", W) != 0 ||
        hf_linear(c, "clip/text/text_projection/kernel", "text_projection.weight", W, E, LIN_PLAIN,
                  1, NULL) != 0 ||
        hf_copy(c, "clip/logit_scale", "logit_scale", 0, none, 0, none) != 0)
        return -1;
    return 0;
}

int ml_hf_clip_load(const char *path, int vision_heads, int text_heads, ml_tensor_set *out,
                    ml_error *err) {
    hf_ctx c = {{0}, out, err};
    memset(out, 0, sizeof *out);
    if (st_open(path, &c.st, err) != 0) return -1;
    int64_t E = 0;
    int rc = hf_vision(&c, vision_heads, &E);
    if (rc == 0) rc = hf_text(&c, text_heads, E);
    st_close(&c.st); /* every tensor was copied out */
    if (rc != 0) ml_tensor_set_free(out);
    return rc;
}

/* ---- seeded fusion initialisation ------------------------------------ */

/* xoshiro256** seeded through splitmix64 (Vigna's reference recipes). */
typedef struct rng {
    uint64_t s[4];
    int has_spare;
    double spare;
} rng;

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(rng *r) {
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

/* One stream per tensor, keyed by its name: a tensor's values do not depend
 * on which other tensors exist or in what order they are made. */
static void rng_seed(rng *r, uint64_t seed, const char *name) {
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a 64 */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 0x100000001b3ULL;
    uint64_t x = seed ^ h;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
    r->has_spare = 0;
}

static double rng_uniform(rng *r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; } /* [0,1) */

/* Box-Muller, both values of a pair used in turn. */
static double rng_normal(rng *r) {
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare;
    }
    double u1 = (double)((rng_next(r) >> 11) + 1) * 0x1.0p-53; /* (0,1]: log is finite */
    double u2 = rng_uniform(r);
    double rad = sqrt(-2.0 * log(u1)), th = 6.283185307179586 * u2;
    r->spare = rad * sin(th);
    r->has_spare = 1;
    return rad * cos(th);
}

enum { INIT_ZERO, INIT_XAVIER, INIT_NORMAL };

typedef struct fz_ctx {
    ml_tensor_set *s;
    uint64_t seed;
    ml_error *err;
} fz_ctx;

/* Adds one tensor.  XAVIER: U(-a, a), a = sqrt(6 / (fan_in + fan_out));
 * NORMAL: N(0, p^2) with p = fan_in passed as the std. */
static int fz_add(fz_ctx *c, const char *name, int ndim, const int64_t *shape, int kind,
                  double fan_in, double fan_out) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    float *b = ml_aligned_alloc(n * sizeof *b, c->err);
    if (!b) return -1;
    rng r;
    rng_seed(&r, c->seed, name);
    double a = kind == INIT_XAVIER ? sqrt(6.0 / (fan_in + fan_out)) : fan_in;
    for (size_t i = 0; i < n; i++)
        b[i] = kind == INIT_ZERO     ? 0.0f
               : kind == INIT_XAVIER ? (float)(a * (2.0 * rng_uniform(&r) - 1.0))
                                     : (float)(a * rng_normal(&r));
    if (ml_tensor_set_own(c->s, b, c->err) != 0) {
        free(b);
        return -1;
    }
    return ml_tensor_set_add(c->s, name, ML_F32, ndim, shape, b, n * sizeof *b, c->err);
}

static int fz_norm(fz_ctx *c, const char *pfx, int64_t D) {
    char n[160];
    int64_t sh[1] = {D};
    snprintf(n, sizeof n, "%s/scale", pfx); /* used as 1 + scale: 0 = identity gain */
    if (fz_add(c, n, 1, sh, INIT_ZERO, 0, 0) != 0) return -1;
    snprintf(n, sizeof n, "%s/bias", pfx);
    return fz_add(c, n, 1, sh, INIT_ZERO, 0, 0);
}

/* query/key/value/post of one attention with H heads of width hd. */
static int fz_attention(fz_ctx *c, const char *pfx, int64_t D, int64_t H, int64_t hd) {
    static const char *const names[] = {"query", "key", "value", "post"};
    char n[160];
    for (int k = 0; k < 4; k++) {
        int post = k == 3;
        int64_t w[3] = {D, H, hd}, bh[2] = {H, hd}, bd[1] = {D};
        double in = post ? (double)(H * hd) : (double)D, out = post ? (double)D : (double)(H * hd);
        snprintf(n, sizeof n, "%s/%s/w", pfx, names[k]);
        if (fz_add(c, n, 3, w, INIT_XAVIER, in, out) != 0) return -1;
        snprintf(n, sizeof n, "%s/%s/b", pfx, names[k]);
        if (fz_add(c, n, post ? 1 : 2, post ? bd : bh, INIT_ZERO, 0, 0) != 0) return -1;
    }
    return 0;
}

static int fz_layer(fz_ctx *c, int i, int64_t D, int64_t H) {
    char p[96], n[160];
    snprintf(p, sizeof p, "multimodal_encoder/x_layers_%d", i);
    snprintf(n, sizeof n, "%s/layer_norm", p);
    if (fz_norm(c, n, D) != 0) return -1;
    snprintf(n, sizeof n, "%s/self_attention", p);
    if (fz_attention(c, n, D, H, D / H) != 0) return -1;
    snprintf(n, sizeof n, "%s/ff_layer/layer_norm", p);
    if (fz_norm(c, n, D) != 0) return -1;
    int64_t w1[2] = {D, 4 * D}, b1[1] = {4 * D}, w2[2] = {4 * D, D}, b2[1] = {D};
    snprintf(n, sizeof n, "%s/ff_layer/ffn_layer1/linear/w", p);
    if (fz_add(c, n, 2, w1, INIT_XAVIER, (double)D, 4.0 * (double)D) != 0) return -1;
    snprintf(n, sizeof n, "%s/ff_layer/ffn_layer1/bias/b", p);
    if (fz_add(c, n, 1, b1, INIT_ZERO, 0, 0) != 0) return -1;
    snprintf(n, sizeof n, "%s/ff_layer/ffn_layer2/linear/w", p);
    if (fz_add(c, n, 2, w2, INIT_XAVIER, 4.0 * (double)D, (double)D) != 0) return -1;
    snprintf(n, sizeof n, "%s/ff_layer/ffn_layer2/bias/b", p);
    return fz_add(c, n, 1, b2, INIT_ZERO, 0, 0);
}

int ml_fusion_heads_for(int D) {
    if (D == 768) return 16; /* the released large model (MagicLensConfig) */
    if (D >= 64 && D % 64 == 0) return D / 64;
    return 0;
}

int ml_fusion_init_random(ml_tensor_set *s, int D, uint64_t seed, ml_error *err) {
    int H = ml_fusion_heads_for(D);
    if (H == 0) return ml_fail(err, "fusion init: embedding width %d is not a multiple of 64", D);
    fz_ctx c = {s, seed, err};
    for (int i = 0; i < ML_FUSION_LAYERS; i++)
        if (fz_layer(&c, i, D, H) != 0) return -1;
    const char *p = "contrastive_multimodal_pooler";
    char n[160];
    int64_t phd = 4 * (int64_t)D / H, sd[1] = {phd}, q[2] = {1, D};
    snprintf(n, sizeof n, "%s/pool_attn", p);
    if (fz_attention(&c, n, D, H, phd) != 0) return -1;
    snprintf(n, sizeof n, "%s/pool_attn/per_dim_scale/per_dim_scale", p);
    if (fz_add(&c, n, 1, sd, INIT_ZERO, 0, 0) != 0) return -1; /* softplus(0)/ln 2 = 1 */
    snprintf(n, sizeof n, "%s/pool_attn_ln", p);
    if (fz_norm(&c, n, D) != 0) return -1;
    snprintf(n, sizeof n, "%s/pooling_attn_query", p);
    return fz_add(&c, n, 2, q, INIT_NORMAL, 1.0 / sqrt((double)D), 0);
}

/* ---- the entry point -------------------------------------------------- */

static int has_prefix(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

static int is_fusion(const char *n) {
    return has_prefix(n, "multimodal_encoder/") || has_prefix(n, "contrastive_multimodal_pooler/");
}

static int is_blob(const char *n) { return has_prefix(n, "meta/") || has_prefix(n, "vocab/"); }

/* Removes the tensors `drop` selects (their data stays with the set). */
static void drop_tensors(ml_tensor_set *s, int (*drop)(const char *)) {
    size_t k = 0;
    for (size_t i = 0; i < s->count; i++) {
        if (drop(s->items[i].name))
            free(s->items[i].name);
        else
            s->items[k++] = s->items[i];
    }
    s->count = k;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* num_attention_heads of text_config / vision_config in a Hugging Face
 * config.json beside PATH; 0 where absent (no file is not an error). */
static int hf_config_heads(const char *path, int *vh, int *th, ml_error *err) {
    *vh = *th = 0;
    const char *slash = strrchr(path, '/');
    size_t dl = slash ? (size_t)(slash - path) + 1 : 0;
    char *cfg = ml_malloc(dl + sizeof "config.json", err);
    if (!cfg) return -1;
    memcpy(cfg, path, dl);
    memcpy(cfg + dl, "config.json", sizeof "config.json");
    struct stat st;
    if (stat(cfg, &st) != 0 && errno == ENOENT) {
        free(cfg);
        return 0;
    }
    json_error_t je;
    json_t *j = json_load_file(cfg, 0, &je);
    int rc = 0;
    if (!j) rc = ml_fail(err, "%s: %s (line %d)", cfg, je.text, je.line);
    static const char *const towers[2] = {"vision_config", "text_config"};
    for (int t = 0; t < 2 && rc == 0; t++) {
        json_t *h = json_object_get(json_object_get(j, towers[t]), "num_attention_heads");
        if (!h) continue;
        if (!json_is_integer(h) || json_integer_value(h) < 1 || json_integer_value(h) > 4096)
            rc = ml_fail(err, "%s: %s.num_attention_heads is not a positive integer", cfg,
                         towers[t]);
        else
            *(t ? th : vh) = (int)json_integer_value(h);
    }
    json_decref(j);
    free(cfg);
    return rc;
}

static int load_any(const char *path, int *is_hf, ml_tensor_set *out, ml_error *err) {
    *is_hf = 0;
    if (ml_native_is_native(path)) return ml_native_load(path, out, err);
    if (!ends_with(path, ".safetensors")) {
        FILE *f = fopen(path, "rb");
        unsigned char b[2] = {0, 0};
        size_t got = f ? fread(b, 1, 2, f) : 0;
        if (f) fclose(f);
        if (!f) return ml_fail(err, "%s: cannot open: %s", path, strerror(errno));
        if (got == 2 && b[0] == 0x80 && b[1] >= 2 && b[1] <= 5)
            return ml_checkpoint_load_pkl(path, out, err);
    }
    int vh, th;
    *is_hf = 1;
    if (hf_config_heads(path, &vh, &th, err) != 0) return -1;
    if (ml_hf_clip_load(path, vh, th, out, err) == 0) return 0;
    if (!ends_with(path, ".safetensors")) /* say what was tried */
        ml_fail_prefix(err, "not a .pkl, .mlens or .safetensors model");
    return -1;
}

int ml_train_init_load(const char *path, const char *fusion_init, uint64_t seed, ml_tensor_set *out,
                       ml_error *err) {
    ml_tensor_set s = {0};
    int is_hf;
    memset(out, 0, sizeof *out);
    if (fusion_init && strcmp(fusion_init, "random") != 0)
        return ml_fail(err, "unknown fusion initialisation '%s' (only \"random\")", fusion_init);
    if (load_any(path, &is_hf, &s, err) != 0) return -1;
    drop_tensors(&s, is_blob);
    if (is_hf && !fusion_init) {
        ml_tensor_set_free(&s);
        return ml_fail(err,
                       "%s: CLIP weights have no fusion layers: initialise them "
                       "(--init-fusion random)",
                       path);
    }
    if (fusion_init) {
        const ml_tensor *proj = ml_tensor_set_find(&s, "clip/visual/proj/kernel");
        if (!proj || proj->ndim != 2 || proj->shape[1] < 1 || proj->shape[1] > (1 << 20)) {
            ml_tensor_set_free(&s);
            return ml_fail(err, "%s: no 2-D clip/visual/proj/kernel to size the fusion layers",
                           path);
        }
        int D = (int)proj->shape[1];
        drop_tensors(&s, is_fusion);
        if (ml_fusion_init_random(&s, D, seed, err) != 0) {
            ml_tensor_set_free(&s);
            return ml_fail_prefix(err, "%s", path);
        }
    }
    if (ml_tensor_set_check_unique(&s, err) != 0) {
        ml_tensor_set_free(&s);
        return ml_fail_prefix(err, "%s", path);
    }
    *out = s;
    return 0;
}
