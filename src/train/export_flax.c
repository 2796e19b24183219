/* export_flax.c - see export_flax.h.
 *
 * The payload is streamed twice through the same msgpack-c packer: once into
 * a counting sink (the pickle header needs the payload length first), then
 * into the file.  Tensor data is never copied into the payload buffer, so a
 * 1.9 GB model needs no second 1.9 GB in memory. */
#include "train/export_flax.h"

#include <errno.h>
#include <fcntl.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "core/fileio.h"
#include "core/mem.h"

#define EX_MAX_DEPTH 64
#define EX_BUF (1u << 20)

/* ---- output: a counter or a buffered file ----------------------------- */

typedef struct sink {
    int fd; /* -1: count only */
    const char *path;
    uint64_t bytes; /* bytes accepted so far */
    uint8_t *buf;
    size_t used;
    int failed;
    ml_error *err;
} sink;

static int sink_raw(sink *s, const void *p, size_t n) {
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t k = write(s->fd, b, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            s->failed = 1;
            return ml_fail(s->err, "%s.tmp: write failed: %s", s->path, strerror(errno));
        }
        b += k;
        n -= (size_t)k;
    }
    return 0;
}

static int sink_flush(sink *s) {
    if (s->fd < 0 || s->used == 0) return 0;
    size_t n = s->used;
    s->used = 0;
    return sink_raw(s, s->buf, n);
}

/* msgpack_packer_write: small pieces are buffered, tensor data goes straight. */
static int sink_write(void *data, const char *p, size_t n) {
    sink *s = data;
    if (s->failed) return -1;
    s->bytes += n;
    if (s->fd < 0) return 0;
    if (n >= EX_BUF / 2) return sink_flush(s) != 0 || sink_raw(s, p, n) != 0 ? -1 : 0;
    if (s->used + n > EX_BUF && sink_flush(s) != 0) return -1;
    memcpy(s->buf + s->used, p, n);
    s->used += n;
    return 0;
}

/* ---- the tree --------------------------------------------------------- */

typedef struct exporter {
    msgpack_packer pk;
    sink *out;
    const ml_tensor **v; /* exported tensors in key order */
    size_t n;
    uint64_t chunk; /* arrays over this many bytes are chunked */
    ml_error *err;
} exporter;

/* Orders names component by component ("a/b" before "a-b", as nested
 * sorted dicts have it): '/' sorts below every other byte, the end below '/'. */
static int rank(unsigned char c) { return c == 0 ? 0 : c == '/' ? 1 : c + 1; }

static int cmp_path(const void *a, const void *b) {
    const unsigned char *x = (const unsigned char *)(*(const ml_tensor *const *)a)->name;
    const unsigned char *y = (const unsigned char *)(*(const ml_tensor *const *)b)->name;
    while (*x && *x == *y) x++, y++;
    return rank(*x) - rank(*y);
}

static int skipped(const char *name) {
    return !strncmp(name, "meta/", 5) || !strncmp(name, "vocab/", 6);
}

/* Length of the component of `name` that starts at `off`. */
static size_t comp_len(const char *name, size_t off) {
    const char *e = strchr(name + off, '/');
    return e ? (size_t)(e - name) - off : strlen(name + off);
}

static int same_comp(const char *a, const char *b, size_t off, size_t len) {
    return comp_len(b, off) == len && memcmp(a + off, b + off, len) == 0;
}

/* msgpack([shape, dtype, raw bytes]) wrapped in ext type 1.  The ext length
 * must be known first: the small prefix goes through a buffer, the data
 * follows it straight into the sink. */
static int put_ndarray(exporter *x, int ndim, const int64_t *shape, const char *dtype,
                       const void *data, size_t nbytes) {
    msgpack_sbuffer sb;
    msgpack_packer pp;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pp, &sb, msgpack_sbuffer_write);
    int rc = msgpack_pack_array(&pp, 3) | msgpack_pack_array(&pp, (size_t)ndim);
    for (int i = 0; i < ndim; i++) rc |= msgpack_pack_uint64(&pp, (uint64_t)shape[i]);
    rc |= msgpack_pack_str_with_body(&pp, dtype, strlen(dtype));
    rc |= msgpack_pack_bin(&pp, nbytes);
    if (rc == 0) rc = msgpack_pack_ext(&x->pk, sb.size + nbytes, 1);
    if (rc == 0) rc = msgpack_pack_ext_body(&x->pk, sb.data, sb.size);
    if (rc == 0 && nbytes) rc = msgpack_pack_ext_body(&x->pk, data, nbytes);
    msgpack_sbuffer_destroy(&sb);
    return rc == 0 ? 0 : -1;
}

static int put_key(exporter *x, const char *k, size_t n) {
    return msgpack_pack_str_with_body(&x->pk, k, n) == 0 ? 0 : -1;
}

static int put_index_key(exporter *x, uint64_t i) {
    char k[24];
    int n = snprintf(k, sizeof k, "%llu", (unsigned long long)i);
    return put_key(x, k, (size_t)n);
}

static int put_leaf(exporter *x, const ml_tensor *t) {
    const char *dtype = t->dtype == ML_U8 ? "uint8" : "float32";
    size_t item = t->dtype == ML_U8 ? 1 : 4;
    size_t numel = (size_t)ml_tensor_numel(t), nbytes = numel * item;
    const void *data = t->data;
    float *conv = NULL;
    if (t->nbytes != numel * ml_dtype_size(t->dtype))
        return ml_fail(x->err, "%s: %zu bytes do not match its shape", t->name, t->nbytes);
    /* Widen float16 / bfloat16 (exact); the counting pass needs only sizes. */
    if ((t->dtype == ML_F16 || t->dtype == ML_BF16) && x->out->fd >= 0) {
        conv = ml_malloc(nbytes ? nbytes : 1, x->err);
        if (!conv) return -1;
        for (size_t i = 0; i < numel; i++) conv[i] = ml_tensor_get_f32(t, (int64_t)i);
        data = conv;
    }
    int rc;
    if ((uint64_t)nbytes > x->chunk) {
        /* flax _chunk: {"__msgpack_chunked_array__": true, "shape": {"0": d0,
         * ...}, "chunks": {"0": 1-D array, ...}} in that (insertion) order,
         * chunks of max(1, chunk / itemsize) elements. */
        uint64_t per = x->chunk / item ? x->chunk / item : 1;
        uint64_t nch = (numel + per - 1) / per;
        rc = msgpack_pack_map(&x->pk, 3) | put_key(x, "__msgpack_chunked_array__", 25) |
             msgpack_pack_true(&x->pk) | put_key(x, "shape", 5) |
             msgpack_pack_map(&x->pk, (size_t)t->ndim);
        for (int i = 0; i < t->ndim && rc == 0; i++)
            rc = put_index_key(x, (uint64_t)i) | msgpack_pack_uint64(&x->pk, (uint64_t)t->shape[i]);
        rc |= put_key(x, "chunks", 6) | msgpack_pack_map(&x->pk, (size_t)nch);
        for (uint64_t c = 0; c < nch && rc == 0; c++) {
            uint64_t lo = c * per, k = numel - lo < per ? numel - lo : per;
            int64_t len = (int64_t)k;
            rc = put_index_key(x, c) |
                 put_ndarray(x, 1, &len, dtype, (const uint8_t *)data + lo * item,
                             (size_t)(k * item));
        }
    } else {
        rc = put_ndarray(x, t->ndim, t->shape, dtype, data, nbytes);
    }
    free(conv);
    if (rc != 0 && !x->out->failed) return ml_fail(x->err, "%s: msgpack packing failed", t->name);
    return rc == 0 ? 0 : -1;
}

/* Writes the map of v[lo, hi): names that agree up to byte `off`. */
static int put_map(exporter *x, size_t lo, size_t hi, size_t off, int depth) {
    if (depth > EX_MAX_DEPTH)
        return ml_fail(x->err, "%s: nested deeper than %d", x->v[lo]->name, EX_MAX_DEPTH);
    size_t groups = 0;
    for (size_t i = lo; i < hi; groups++) {
        size_t len = comp_len(x->v[i]->name, off), j = i + 1;
        while (j < hi && same_comp(x->v[i]->name, x->v[j]->name, off, len)) j++;
        i = j;
    }
    if (msgpack_pack_map(&x->pk, groups) != 0) return -1;
    for (size_t i = lo; i < hi;) {
        const char *name = x->v[i]->name;
        size_t len = comp_len(name, off), j = i + 1;
        while (j < hi && same_comp(name, x->v[j]->name, off, len)) j++;
        if (len == 0) return ml_fail(x->err, "%s: empty path component", name);
        if (put_key(x, name + off, len) != 0) return -1;
        int leaf = name[off + len] == '\0';
        if (leaf && j - i > 1)
            return ml_fail(x->err, "%s: both a tensor and a prefix of %s", name, x->v[i + 1]->name);
        if (leaf ? put_leaf(x, x->v[i]) : put_map(x, i, j, off + len + 1, depth + 1)) return -1;
        i = j;
    }
    return 0;
}

static int put_tree(exporter *x, sink *s) {
    x->out = s;
    msgpack_packer_init(&x->pk, s, sink_write);
    if (msgpack_pack_map(&x->pk, 1) != 0 || put_key(x, "params", 6) != 0 ||
        put_map(x, 0, x->n, 0, 0) != 0)
        return -1; /* the sink or put_map wrote the message */
    return 0;
}

/* ---- pickle around it ------------------------------------------------- */

static void le(uint8_t *p, uint64_t v, int n) {
    for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* What pickle.dumps(payload, protocol=4) puts before the payload: payloads
 * under 64 KiB sit in a FRAME, longer ones follow PROTO directly. */
static size_t pickle_head(uint64_t n, uint8_t *h) {
    size_t k = 0;
    h[k++] = 0x80, h[k++] = 4;
    if (n < 65536) {
        uint64_t op = n < 256 ? 2 : 5;
        h[k++] = 0x95; /* FRAME: opcode + length + payload + MEMOIZE + STOP */
        le(h + k, op + n + 2, 8), k += 8;
    }
    if (n < 256)
        h[k++] = 'C', h[k++] = (uint8_t)n; /* SHORT_BINBYTES */
    else if (n <= 0xffffffffu)
        h[k++] = 'B', le(h + k, n, 4), k += 4; /* BINBYTES */
    else
        h[k++] = 0x8e, le(h + k, n, 8), k += 8; /* BINBYTES8 */
    return k;
}

static int write_file(exporter *x, const char *path, uint64_t payload_len, ml_error *err) {
    size_t pl = strlen(path);
    char *tmp = ml_malloc(pl + 5, err);
    if (!tmp) return -1;
    memcpy(tmp, path, pl);
    memcpy(tmp + pl, ".tmp", 5);
    sink s = {open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644), path, 0, NULL, 0, 0, err};
    if (s.fd < 0) {
        ml_fail(err, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    uint8_t head[32];
    static const uint8_t tail[2] = {0x94, '.'}; /* MEMOIZE, STOP */
    size_t hl = pickle_head(payload_len, head);
    int rc = (s.buf = ml_malloc(EX_BUF, err)) ? 0 : -1;
    if (rc == 0) rc = sink_write(&s, (const char *)head, hl);
    if (rc == 0) rc = put_tree(x, &s);
    if (rc == 0) rc = sink_write(&s, (const char *)tail, 2);
    if (rc == 0) rc = sink_flush(&s);
    if (rc == 0 && s.bytes != hl + payload_len + 2)
        rc = ml_fail(err, "%s: payload changed between passes", tmp);
    if (rc == 0 && fsync(s.fd) != 0) rc = ml_fail(err, "%s: fsync: %s", tmp, strerror(errno));
    if (close(s.fd) != 0 && rc == 0) rc = ml_fail(err, "%s: close: %s", tmp, strerror(errno));
    if (rc == 0 && rename(tmp, path) != 0)
        rc = ml_fail(err, "%s: rename failed: %s", path, strerror(errno));
    if (rc == 0) {
        char *dir = ml_malloc(pl + 2, err);
        if (!dir)
            rc = -1;
        else {
            memcpy(dir, path, pl + 1);
            char *slash = strrchr(dir, '/');
            if (!slash)
                strcpy(dir, ".");
            else if (slash == dir)
                slash[1] = '\0';
            else
                *slash = '\0';
            rc = ml_fsync_dir(dir, err);
            free(dir);
        }
    }
    if (rc != 0) unlink(tmp);
    free(s.buf);
    free(tmp);
    return rc;
}

int ml_export_flax_pkl_chunked(const ml_tensor_set *ts, const char *path, uint64_t chunk_bytes,
                               ml_error *err) {
    if (chunk_bytes < 1 || chunk_bytes > ML_FLAX_MAX_CHUNK)
        return ml_fail(err, "%s: chunk size %llu outside 1..%u bytes", path,
                       (unsigned long long)chunk_bytes, ML_FLAX_MAX_CHUNK);
    exporter x = {.chunk = chunk_bytes, .err = err};
    x.v = ml_malloc((ts->count ? ts->count : 1) * sizeof *x.v, err);
    if (!x.v) return -1;
    for (size_t i = 0; i < ts->count; i++)
        if (!skipped(ts->items[i].name)) x.v[x.n++] = &ts->items[i];
    int rc = 0;
    if (x.n == 0) rc = ml_fail(err, "%s: no tensors to export", path);
    if (rc == 0) {
        qsort(x.v, x.n, sizeof *x.v, cmp_path);
        for (size_t i = 1; i < x.n && rc == 0; i++)
            if (!strcmp(x.v[i - 1]->name, x.v[i]->name))
                rc = ml_fail(err, "%s: duplicate tensor name", x.v[i]->name);
    }
    sink count = {-1, path, 0, NULL, 0, 0, err};
    if (rc == 0 && put_tree(&x, &count) != 0) rc = ml_fail_prefix(err, "%s", path);
    if (rc == 0) rc = write_file(&x, path, count.bytes, err);
    free(x.v);
    return rc;
}

int ml_export_flax_pkl(const ml_tensor_set *ts, const char *path, ml_error *err) {
    return ml_export_flax_pkl_chunked(ts, path, ML_FLAX_MAX_CHUNK, err);
}
