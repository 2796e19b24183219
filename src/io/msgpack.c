/* msgpack.c - see msgpack.h.
 *
 * Hostile input is the design constraint: every length is checked against
 * the bytes left, the tree is walked with an explicit bounded stack (never
 * recursion), and skipping a value counts pending items instead of
 * recursing into them. */
#include "io/msgpack.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/mem.h"

typedef enum {
    MP_NIL, MP_BOOL, MP_UINT, MP_INT, MP_FLOAT, MP_STR, MP_BIN, MP_ARRAY, MP_MAP, MP_EXT
} mp_type;

static const char *const mp_type_names[] = {"nil", "bool", "int", "int", "float",
                                            "str", "bin", "array", "map", "ext"};

/* One decoded header.  STR/BIN/EXT carry their payload in p/n; ARRAY/MAP
 * carry their item count in n and are followed by the items. */
typedef struct {
    mp_type type;
    uint64_t u;     /* UINT, BOOL */
    int64_t i;      /* INT (negative values only) */
    double f;       /* FLOAT */
    const uint8_t *p;
    size_t n;
    int ext;        /* EXT type code */
} mp_obj;

typedef struct {
    const uint8_t *d;
    size_t len, pos;
} mp_reader;

static uint64_t be(const uint8_t *p, size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v = v << 8 | p[i];
    return v;
}

static int need(mp_reader *r, size_t n, ml_error *err) {
    if (r->len - r->pos < n)
        return ml_fail(err, "msgpack: truncated at offset %zu (need %zu more bytes)", r->pos, n);
    return 0;
}

/* Reads an n-byte big-endian length or value. */
static int rd(mp_reader *r, size_t n, uint64_t *v, ml_error *err) {
    if (need(r, n, err) != 0) return -1;
    *v = be(r->d + r->pos, n);
    r->pos += n;
    return 0;
}

/* Consumes a payload of n bytes (STR/BIN/EXT). */
static int payload(mp_reader *r, uint64_t n, mp_obj *o, ml_error *err) {
    if (n > r->len - r->pos)
        return ml_fail(err, "msgpack: %s of %llu bytes at offset %zu runs past the end",
                       mp_type_names[o->type], (unsigned long long)n, r->pos);
    o->p = r->d + r->pos;
    o->n = (size_t)n;
    r->pos += (size_t)n;
    return 0;
}

/* Containers: every item takes at least one byte, so a count larger than
 * the bytes left is a lie caught here rather than after a long loop. */
static int container(mp_reader *r, mp_type t, uint64_t n, mp_obj *o, ml_error *err) {
    o->type = t;
    uint64_t min_bytes = t == MP_MAP ? 2 : 1;
    if (n > (r->len - r->pos) / min_bytes)
        return ml_fail(err, "msgpack: %s of %llu items at offset %zu exceeds the data",
                       mp_type_names[t], (unsigned long long)n, r->pos);
    o->n = (size_t)n;
    return 0;
}

static int sized(mp_reader *r, mp_type t, size_t lenbytes, mp_obj *o, ml_error *err) {
    uint64_t n;
    o->type = t;
    if (rd(r, lenbytes, &n, err) != 0) return -1;
    return payload(r, n, o, err);
}

static int ext_obj(mp_reader *r, uint64_t n, mp_obj *o, ml_error *err) {
    o->type = MP_EXT;
    if (need(r, 1, err) != 0) return -1;
    o->ext = (int8_t)r->d[r->pos++];
    return payload(r, n, o, err);
}

static int mp_next(mp_reader *r, mp_obj *o, ml_error *err) {
    memset(o, 0, sizeof *o);
    if (need(r, 1, err) != 0) return -1;
    size_t at = r->pos;
    uint8_t c = r->d[r->pos++];
    uint64_t v;
    if (c <= 0x7f) { o->type = MP_UINT; o->u = c; return 0; }
    if (c >= 0xe0) { o->type = MP_INT; o->i = (int8_t)c; return 0; }
    if (c >= 0x80 && c <= 0x8f) return container(r, MP_MAP, c & 0x0f, o, err);
    if (c >= 0x90 && c <= 0x9f) return container(r, MP_ARRAY, c & 0x0f, o, err);
    if (c >= 0xa0 && c <= 0xbf) { o->type = MP_STR; return payload(r, c & 0x1f, o, err); }
    switch (c) {
    case 0xc0: o->type = MP_NIL; return 0;
    case 0xc2: case 0xc3: o->type = MP_BOOL; o->u = c & 1; return 0;
    case 0xc4: return sized(r, MP_BIN, 1, o, err);
    case 0xc5: return sized(r, MP_BIN, 2, o, err);
    case 0xc6: return sized(r, MP_BIN, 4, o, err);
    case 0xc7: return rd(r, 1, &v, err) ? -1 : ext_obj(r, v, o, err);
    case 0xc8: return rd(r, 2, &v, err) ? -1 : ext_obj(r, v, o, err);
    case 0xc9: return rd(r, 4, &v, err) ? -1 : ext_obj(r, v, o, err);
    case 0xca: {
        if (rd(r, 4, &v, err) != 0) return -1;
        uint32_t u32 = (uint32_t)v;
        float f;
        memcpy(&f, &u32, 4);
        o->type = MP_FLOAT;
        o->f = f;
        return 0;
    }
    case 0xcb:
        if (rd(r, 8, &v, err) != 0) return -1;
        o->type = MP_FLOAT;
        memcpy(&o->f, &v, 8);
        return 0;
    case 0xcc: case 0xcd: case 0xce: case 0xcf:
        o->type = MP_UINT;
        return rd(r, (size_t)1 << (c - 0xcc), &o->u, err);
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
        size_t n = (size_t)1 << (c - 0xd0);
        if (rd(r, n, &v, err) != 0) return -1;
        /* Sign-extend; non-negative values are reported as UINT. */
        int64_t s = n == 8 ? (int64_t)v : (int64_t)(v << (64 - 8 * n)) >> (64 - 8 * n);
        if (s >= 0) { o->type = MP_UINT; o->u = (uint64_t)s; }
        else { o->type = MP_INT; o->i = s; }
        return 0;
    }
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
        return ext_obj(r, (uint64_t)1 << (c - 0xd4), o, err);
    case 0xd9: return sized(r, MP_STR, 1, o, err);
    case 0xda: return sized(r, MP_STR, 2, o, err);
    case 0xdb: return sized(r, MP_STR, 4, o, err);
    case 0xdc: return rd(r, 2, &v, err) ? -1 : container(r, MP_ARRAY, v, o, err);
    case 0xdd: return rd(r, 4, &v, err) ? -1 : container(r, MP_ARRAY, v, o, err);
    case 0xde: return rd(r, 2, &v, err) ? -1 : container(r, MP_MAP, v, o, err);
    case 0xdf: return rd(r, 4, &v, err) ? -1 : container(r, MP_MAP, v, o, err);
    default: return ml_fail(err, "msgpack: invalid byte 0x%02x at offset %zu", c, at);
    }
}

/* Skips one complete value without recursion. */
static int mp_skip(mp_reader *r, ml_error *err) {
    uint64_t pending = 1;
    while (pending > 0) {
        mp_obj o;
        pending--;
        if (mp_next(r, &o, err) != 0) return -1;
        /* Counts are bounded by the bytes left (see container()), so no overflow. */
        if (o.type == MP_ARRAY) pending += o.n;
        if (o.type == MP_MAP) pending += 2 * (uint64_t)o.n;
    }
    return 0;
}

static bool str_is(const mp_obj *o, const char *s) {
    size_t n = strlen(s);
    return (o->type == MP_STR || o->type == MP_BIN) && o->n == n && memcmp(o->p, s, n) == 0;
}

/* ---- ndarray payloads ------------------------------------------------ */

typedef enum { SRC_F32, SRC_F16, SRC_BF16, SRC_U8, SRC_F64, SRC_I32 } src_dtype;

typedef struct {
    src_dtype dt;
    int ndim;
    int64_t shape[ML_MAX_DIMS];
    const uint8_t *p;
    size_t n;
} ndarray;

static const struct {
    const char *name;
    src_dtype dt;
    size_t size;
} dtypes[] = {{"float32", SRC_F32, 4}, {"float16", SRC_F16, 2}, {"bfloat16", SRC_BF16, 2},
              {"uint8", SRC_U8, 1},    {"float64", SRC_F64, 8}, {"int32", SRC_I32, 4}};

static size_t src_size(src_dtype dt) {
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (dtypes[i].dt == dt) return dtypes[i].size;
    return 0;
}

static int parse_dtype(const mp_obj *o, src_dtype *dt, ml_error *err) {
    if (o->type != MP_STR && o->type != MP_BIN) return ml_fail(err, "dtype is not a string");
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (str_is(o, dtypes[i].name)) {
            *dt = dtypes[i].dt;
            return 0;
        }
    return ml_fail(err, "unsupported dtype '%.*s'", (int)(o->n > 32 ? 32 : o->n),
                   (const char *)o->p);
}

/* Product of the shape, failing on overflow past what any buffer could hold. */
static int shape_numel(int ndim, const int64_t *shape, size_t *numel, ml_error *err) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++)
        if (__builtin_mul_overflow(n, (size_t)shape[i], &n))
            return ml_fail(err, "shape overflows");
    *numel = n;
    return 0;
}

static int parse_shape(mp_reader *r, ndarray *a, ml_error *err) {
    mp_obj o;
    if (mp_next(r, &o, err) != 0) return -1;
    if (o.type != MP_ARRAY) return ml_fail(err, "shape is a %s, not an array", mp_type_names[o.type]);
    if (o.n > ML_MAX_DIMS) return ml_fail(err, "%zu dimensions (at most %d)", o.n, ML_MAX_DIMS);
    a->ndim = (int)o.n;
    for (int i = 0; i < a->ndim; i++) {
        mp_obj d;
        if (mp_next(r, &d, err) != 0) return -1;
        if (d.type != MP_UINT || d.u > (uint64_t)INT64_MAX)
            return ml_fail(err, "dimension %d is not a non-negative integer", i);
        a->shape[i] = (int64_t)d.u;
    }
    return 0;
}

/* Parses msgpack([shape, dtype, bytes]) from an ext payload. */
static int parse_ndarray(const mp_obj *ext, ndarray *a, ml_error *err) {
    mp_reader r = {ext->p, ext->n, 0};
    mp_obj o, dt, buf;
    memset(a, 0, sizeof *a);
    if (mp_next(&r, &o, err) != 0) return -1;
    if (o.type != MP_ARRAY || o.n != 3)
        return ml_fail(err, "ndarray payload is not a 3-item array");
    if (parse_shape(&r, a, err) != 0 || mp_next(&r, &dt, err) != 0 ||
        parse_dtype(&dt, &a->dt, err) != 0 || mp_next(&r, &buf, err) != 0)
        return -1;
    if (buf.type != MP_BIN && buf.type != MP_STR) return ml_fail(err, "ndarray data is not bytes");
    if (r.pos != r.len) return ml_fail(err, "%zu stray bytes after the ndarray", r.len - r.pos);
    size_t numel = 0, nbytes = 0;
    if (shape_numel(a->ndim, a->shape, &numel, err) != 0) return -1;
    if (__builtin_mul_overflow(numel, src_size(a->dt), &nbytes) || nbytes != buf.n)
        return ml_fail(err, "shape needs %zu elements of %zu bytes but the data has %zu bytes",
                       numel, src_size(a->dt), buf.n);
    a->p = buf.p;
    a->n = buf.n;
    return 0;
}

/* ---- emitting tensors ------------------------------------------------- */

/* Converts float64/int32 data to an owned float32 buffer. */
static int emit_converted(ml_tensor_set *s, const char *name, const ndarray *a, ml_error *err) {
    size_t numel = a->n / src_size(a->dt);
    float *f = ml_aligned_alloc(numel * sizeof *f, err);
    if (!f) return -1;
    for (size_t i = 0; i < numel; i++) {
        if (a->dt == SRC_F64) {
            double d;
            memcpy(&d, a->p + 8 * i, 8);
            f[i] = (float)d;
        } else {
            int32_t v;
            memcpy(&v, a->p + 4 * i, 4);
            f[i] = (float)v;
        }
    }
    if (ml_tensor_set_own(s, f, err) != 0) {
        free(f);
        return -1;
    }
    return ml_tensor_set_add(s, name, ML_F32, a->ndim, a->shape, f, numel * sizeof *f, err);
}

static int emit(ml_tensor_set *s, const char *name, const ndarray *a, ml_error *err) {
    static const ml_dtype direct[] = {[SRC_F32] = ML_F32, [SRC_F16] = ML_F16,
                                      [SRC_BF16] = ML_BF16, [SRC_U8] = ML_U8};
    if (a->dt == SRC_F64 || a->dt == SRC_I32) return emit_converted(s, name, a, err);
    return ml_tensor_set_add(s, name, direct[a->dt], a->ndim, a->shape, a->p, a->n, err);
}

static int emit_number(ml_tensor_set *s, const char *name, const mp_obj *o, ml_error *err) {
    float *f = ml_aligned_alloc(sizeof *f, err);
    if (!f) return -1;
    *f = o->type == MP_FLOAT ? (float)o->f : o->type == MP_INT ? (float)o->i : (float)o->u;
    if (ml_tensor_set_own(s, f, err) != 0) {
        free(f);
        return -1;
    }
    return ml_tensor_set_add(s, name, ML_F32, 0, NULL, f, sizeof *f, err);
}

static int emit_ext(ml_tensor_set *s, const char *name, const mp_obj *o, ml_error *err) {
    ndarray a;
    if (o->ext != 1 && o->ext != 3)
        return ml_fail(err, "unsupported ext type %d (ndarray=1, scalar=3)", o->ext);
    if (parse_ndarray(o, &a, err) != 0) return -1;
    if (o->ext == 3 && a.ndim != 0) return ml_fail(err, "numpy scalar with %d dimensions", a.ndim);
    return emit(s, name, &a, err);
}

/* ---- chunked arrays --------------------------------------------------- */

/* Parses a decimal map key "0".."count-1" (no sign, no leading zeros). */
static int index_key(const mp_obj *k, size_t count, size_t *idx, ml_error *err) {
    size_t v = 0;
    if (k->type != MP_STR || k->n == 0 || k->n > 19 || (k->n > 1 && k->p[0] == '0'))
        return ml_fail(err, "chunked array: bad index key");
    for (size_t i = 0; i < k->n; i++) {
        if (k->p[i] < '0' || k->p[i] > '9') return ml_fail(err, "chunked array: bad index key");
        v = v * 10 + (size_t)(k->p[i] - '0');
    }
    if (v >= count) return ml_fail(err, "chunked array: index %zu out of range (%zu)", v, count);
    *idx = v;
    return 0;
}

typedef struct {
    bool flag, have_shape, have_chunks;
    ndarray whole;     /* dtype, shape */
    ndarray *chunks;   /* by index */
    size_t n_chunks;
} chunked;

static int chunked_shape(mp_reader *r, chunked *c, ml_error *err) {
    mp_obj m;
    bool seen[ML_MAX_DIMS] = {false};
    if (mp_next(r, &m, err) != 0) return -1;
    if (m.type != MP_MAP || m.n > ML_MAX_DIMS)
        return ml_fail(err, "chunked array: shape is not a map of at most %d entries", ML_MAX_DIMS);
    c->whole.ndim = (int)m.n;
    for (size_t i = 0; i < m.n; i++) {
        mp_obj k, d;
        size_t idx;
        if (mp_next(r, &k, err) != 0 || index_key(&k, m.n, &idx, err) != 0 ||
            mp_next(r, &d, err) != 0)
            return -1;
        if (seen[idx] || d.type != MP_UINT || d.u > (uint64_t)INT64_MAX)
            return ml_fail(err, "chunked array: bad or repeated dimension %zu", idx);
        seen[idx] = true;
        c->whole.shape[idx] = (int64_t)d.u;
    }
    c->have_shape = true;
    return 0;
}

static int chunked_chunks(mp_reader *r, chunked *c, ml_error *err) {
    mp_obj m;
    if (mp_next(r, &m, err) != 0) return -1;
    if (m.type != MP_MAP || m.n == 0) return ml_fail(err, "chunked array: chunks is not a map");
    if (c->chunks) return ml_fail(err, "chunked array: chunks given twice");
    c->chunks = ml_calloc(m.n, sizeof *c->chunks, err);
    if (!c->chunks) return -1;
    c->n_chunks = m.n;
    for (size_t i = 0; i < m.n; i++) {
        mp_obj k, v;
        size_t idx;
        if (mp_next(r, &k, err) != 0 || index_key(&k, m.n, &idx, err) != 0 ||
            mp_next(r, &v, err) != 0)
            return -1;
        /* A parsed chunk always has p set (even when empty): p marks it as seen. */
        if (c->chunks[idx].p) return ml_fail(err, "chunked array: chunk %zu repeated", idx);
        if (v.type != MP_EXT || v.ext != 1)
            return ml_fail(err, "chunked array: chunk %zu is not an ndarray", idx);
        ndarray *a = &c->chunks[idx];
        if (parse_ndarray(&v, a, err) != 0) return ml_fail_prefix(err, "chunk %zu", idx);
        if (a->ndim != 1) return ml_fail(err, "chunked array: chunk %zu is not 1-D", idx);
    }
    c->have_chunks = true;
    return 0;
}

/* Concatenates the chunks into one owned buffer and emits it. */
static int chunked_emit(ml_tensor_set *s, const char *name, chunked *c, ml_error *err) {
    size_t total = 0, numel = 0;
    src_dtype dt = c->chunks[0].dt;
    for (size_t i = 0; i < c->n_chunks; i++) {
        if (c->chunks[i].dt != dt) return ml_fail(err, "chunked array: mixed dtypes");
        total += c->chunks[i].n; /* each n lies inside the input: no overflow */
    }
    if (shape_numel(c->whole.ndim, c->whole.shape, &numel, err) != 0) return -1;
    if (numel > SIZE_MAX / src_size(dt) || numel * src_size(dt) != total)
        return ml_fail(err, "chunked array: shape does not match the %zu bytes of its chunks", total);
    uint8_t *buf = ml_aligned_alloc(total, err);
    if (!buf) return -1;
    size_t off = 0;
    for (size_t i = 0; i < c->n_chunks; i++) {
        if (c->chunks[i].n) memcpy(buf + off, c->chunks[i].p, c->chunks[i].n);
        off += c->chunks[i].n;
    }
    if (ml_tensor_set_own(s, buf, err) != 0) {
        free(buf);
        return -1;
    }
    c->whole.dt = dt;
    c->whole.p = buf;
    c->whole.n = total;
    return emit(s, name, &c->whole, err);
}

static int parse_chunked(mp_reader *r, size_t entries, ml_tensor_set *s, const char *name,
                         ml_error *err) {
    chunked c;
    memset(&c, 0, sizeof c);
    int rc = 0;
    for (size_t i = 0; i < entries && rc == 0; i++) {
        mp_obj k, v;
        if ((rc = mp_next(r, &k, err)) != 0) break;
        if (str_is(&k, "__msgpack_chunked_array__")) {
            rc = mp_next(r, &v, err);
            if (rc == 0 && (v.type != MP_BOOL || !v.u))
                rc = ml_fail(err, "chunked array: marker is not true");
            c.flag = true;
        } else if (str_is(&k, "shape") && !c.have_shape) {
            rc = chunked_shape(r, &c, err);
        } else if (str_is(&k, "chunks")) {
            rc = chunked_chunks(r, &c, err);
        } else {
            rc = ml_fail(err, "chunked array: unexpected or repeated key");
        }
    }
    if (rc == 0 && (!c.flag || !c.have_shape || !c.have_chunks))
        rc = ml_fail(err, "chunked array: missing shape or chunks");
    if (rc == 0) rc = chunked_emit(s, name, &c, err);
    free(c.chunks);
    return rc;
}

/* Looks ahead through a map's keys for the chunked-array marker. */
static int is_chunked(const mp_reader *r0, size_t entries, bool *yes, ml_error *err) {
    mp_reader r = *r0;
    *yes = false;
    for (size_t i = 0; i < entries; i++) {
        mp_obj k;
        if (mp_next(&r, &k, err) != 0) return -1;
        if (str_is(&k, "__msgpack_chunked_array__")) {
            *yes = true;
            return 0;
        }
        if (mp_skip(&r, err) != 0) return -1;
    }
    return 0;
}

/* ---- the tree walk ---------------------------------------------------- */

typedef struct {
    size_t left;     /* entries still to read in this map */
    size_t path_len; /* length of the path naming this map */
} frame;

typedef struct {
    mp_reader r;
    frame st[ML_MSGPACK_MAX_DEPTH];
    int depth;
    char path[ML_MSGPACK_MAX_NAME + 1];
    ml_tensor_set *out;
    ml_error *err;
} walker;

/* Sets w->path to the parent's path + "/" + key. */
static int extend_path(walker *w, const frame *f, const mp_obj *k) {
    if (k->type != MP_STR)
        return ml_fail(w->err, "%s: map key is a %s, not a string",
                       f->path_len ? w->path : "(top level)", mp_type_names[k->type]);
    if (k->n == 0 || memchr(k->p, '\0', k->n))
        return ml_fail(w->err, "%s: empty key or key with a NUL byte",
                       f->path_len ? w->path : "(top level)");
    size_t sep = f->path_len ? 1 : 0;
    if (f->path_len + sep + k->n > ML_MSGPACK_MAX_NAME)
        return ml_fail(w->err, "%.*s...: tensor name longer than %d bytes", 64, w->path,
                       ML_MSGPACK_MAX_NAME);
    if (sep) w->path[f->path_len] = '/';
    memcpy(w->path + f->path_len + sep, k->p, k->n);
    w->path[f->path_len + sep + k->n] = '\0';
    return 0;
}

static int push_map(walker *w, size_t entries, size_t path_len) {
    if (w->depth >= ML_MSGPACK_MAX_DEPTH)
        return ml_fail(w->err, "maps nested deeper than %d", ML_MSGPACK_MAX_DEPTH);
    w->st[w->depth++] = (frame){entries, path_len};
    return 0;
}

/* Handles the value under the key now in w->path. */
static int visit_value(walker *w) {
    mp_obj v;
    if (mp_next(&w->r, &v, w->err) != 0) return -1;
    if (w->path[0] == '\0' && v.type != MP_MAP)
        return ml_fail(w->err, "params: a %s, not a map", mp_type_names[v.type]);
    switch (v.type) {
    case MP_MAP: {
        bool chunk;
        if (v.n == 0) return 0; /* a module without parameters */
        if (is_chunked(&w->r, v.n, &chunk, w->err) != 0) return -1;
        if (chunk) return parse_chunked(&w->r, v.n, w->out, w->path, w->err);
        return push_map(w, v.n, strlen(w->path));
    }
    case MP_EXT: return emit_ext(w->out, w->path, &v, w->err);
    case MP_UINT: case MP_INT: case MP_FLOAT: return emit_number(w->out, w->path, &v, w->err);
    default: return ml_fail(w->err, "unsupported %s value", mp_type_names[v.type]);
    }
}

static int walk(walker *w) {
    mp_obj root;
    if (mp_next(&w->r, &root, w->err) != 0) return -1;
    if (root.type != MP_MAP)
        return ml_fail(w->err, "top level is a %s, not a map", mp_type_names[root.type]);
    w->path[0] = '\0';
    if (push_map(w, root.n, 0) != 0) return -1;
    while (w->depth > 0) {
        frame *f = &w->st[w->depth - 1];
        if (f->left == 0) {
            w->depth--;
            continue;
        }
        f->left--;
        mp_obj k;
        w->path[f->path_len] = '\0';
        if (mp_next(&w->r, &k, w->err) != 0) return -1;
        frame parent = *f;
        if (w->depth == 1 && str_is(&k, "params") && k.type == MP_STR)
            w->path[0] = '\0'; /* drop the leading "params" level */
        else if (extend_path(w, &parent, &k) != 0)
            return -1;
        if (visit_value(w) != 0)
            return w->path[0] ? ml_fail_prefix(w->err, "%s", w->path) : -1;
    }
    if (w->r.pos != w->r.len)
        return ml_fail(w->err, "msgpack: %zu stray bytes after the tree", w->r.len - w->r.pos);
    return 0;
}

int ml_flax_msgpack_to_tensors(const uint8_t *data, size_t len, ml_tensor_set *out,
                               ml_error *err) {
    walker *w = ml_calloc(1, sizeof *w, err); /* ~2 KB: keep it off small stacks */
    if (!w) {
        ml_tensor_set_free(out);
        return -1;
    }
    w->r = (mp_reader){data, len, 0};
    w->out = out;
    w->err = err;
    int rc = walk(w);
    free(w);
    if (rc == 0) rc = ml_tensor_set_check_unique(out, err);
    if (rc != 0) ml_tensor_set_free(out);
    return rc;
}
