/* native.c - see native.h and docs/native-format.md.
 *
 * All integers are little-endian and encoded byte by byte, so the layout
 * does not depend on struct padding or the host. */
#include "io/native.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "core/error.h"
#include "core/mem.h"

/* ---- little-endian helpers and CRC ---------------------------------- */

static void put_le(uint8_t *p, uint64_t v, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* zlib's crc32 takes a uInt length: feed big tensors in 1 GiB pieces. */
static uint32_t crc_update(uint32_t crc, const void *data, size_t n) {
    const uint8_t *p = data;
    while (n > 0) {
        size_t k = n > (1u << 30) ? (1u << 30) : n;
        crc = (uint32_t)crc32(crc, p, (uInt)k);
        p += k;
        n -= k;
    }
    return crc;
}

static uint64_t align64(uint64_t x) { return (x + 63) & ~(uint64_t)63; }

static size_t entry_size(size_t name_len) { return ML_NATIVE_ENTRY_SIZE + ((name_len + 7) & ~(size_t)7); }

/* ---- writer --------------------------------------------------------- */

/* What one directory entry will describe. */
typedef struct {
    const char *name;
    const ml_tensor *src; /* NULL for a blob */
    const uint8_t *blob;
    ml_dtype dtype;       /* as written: F32 or U8 */
    int ndim;
    int64_t shape[ML_MAX_DIMS];
    uint64_t offset, nbytes;
    uint32_t crc;
} wentry;

typedef struct {
    int fd;
    uint64_t pos;
    const char *path;
    ml_error *err;
} wfile;

static int write_all(wfile *f, const void *buf, size_t n) {
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t k = write(f->fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return ml_fail(f->err, "%s: write failed: %s", f->path, strerror(errno));
        p += k;
        n -= (size_t)k;
        f->pos += (uint64_t)k;
    }
    return 0;
}

static int pad_to(wfile *f, uint64_t target) {
    static const uint8_t zeros[64];
    while (f->pos < target) {
        size_t k = target - f->pos > sizeof zeros ? sizeof zeros : (size_t)(target - f->pos);
        if (write_all(f, zeros, k) != 0) return -1;
    }
    return 0;
}

/* Writes a tensor's data as float32 (or bytes), computing its CRC on the way.
 * float32 input is written straight from its buffer: no copy of big models. */
static int write_data(wfile *f, wentry *e) {
    e->crc = 0;
    if (e->blob || e->src->dtype == ML_F32 || e->src->dtype == ML_U8) {
        const void *p = e->blob ? (const void *)e->blob : e->src->data;
        e->crc = crc_update(0, p, (size_t)e->nbytes);
        return write_all(f, p, (size_t)e->nbytes);
    }
    enum { CHUNK = 16384 };
    float *buf = ml_malloc(CHUNK * sizeof *buf, f->err);
    if (!buf) return -1;
    int64_t n = (int64_t)(e->nbytes / 4);
    int rc = 0;
    for (int64_t i = 0; i < n && rc == 0; i += CHUNK) {
        int64_t k = n - i < CHUNK ? n - i : CHUNK;
        for (int64_t j = 0; j < k; j++) buf[j] = ml_tensor_get_f32(e->src, i + j);
        e->crc = crc_update(e->crc, buf, (size_t)k * 4);
        rc = write_all(f, buf, (size_t)k * 4);
    }
    free(buf);
    return rc;
}

static int is_reserved(const char *name) {
    return strcmp(name, ML_NATIVE_CONFIG_NAME) == 0 || strcmp(name, ML_NATIVE_VOCAB_NAME) == 0;
}

static void add_blob(wentry *v, size_t *n, const char *name, const uint8_t *p, size_t len) {
    wentry *e = &v[(*n)++];
    memset(e, 0, sizeof *e);
    e->name = name;
    e->blob = p;
    e->dtype = ML_U8;
    e->ndim = 1;
    e->shape[0] = (int64_t)len;
    e->nbytes = len;
}

/* Lists what will be written; blobs passed by the caller replace those in src. */
static int plan(const ml_tensor_set *src, const char *config_json, const uint8_t *vocab,
                size_t vocab_len, wentry *v, size_t *n, ml_error *err) {
    *n = 0;
    for (size_t i = 0; i < src->count; i++) {
        const ml_tensor *t = &src->items[i];
        if ((config_json && strcmp(t->name, ML_NATIVE_CONFIG_NAME) == 0) ||
            (vocab && strcmp(t->name, ML_NATIVE_VOCAB_NAME) == 0))
            continue;
        size_t nl = strlen(t->name);
        if (nl == 0 || nl > ML_NATIVE_MAX_NAME)
            return ml_fail(err, "%s: tensor name empty or longer than %u bytes", t->name,
                           ML_NATIVE_MAX_NAME);
        if (is_reserved(t->name) && t->dtype != ML_U8)
            return ml_fail(err, "%s: reserved name used by a non-byte tensor", t->name);
        wentry *e = &v[(*n)++];
        memset(e, 0, sizeof *e);
        e->name = t->name;
        e->src = t;
        e->dtype = t->dtype == ML_U8 ? ML_U8 : ML_F32;
        e->ndim = t->ndim;
        memcpy(e->shape, t->shape, sizeof e->shape);
        int64_t numel = ml_tensor_numel(t);
        if (t->nbytes != (size_t)numel * ml_dtype_size(t->dtype))
            return ml_fail(err, "%s: %zu bytes do not match its shape", t->name, t->nbytes);
        e->nbytes = (uint64_t)numel * ml_dtype_size(e->dtype);
    }
    if (config_json) add_blob(v, n, ML_NATIVE_CONFIG_NAME, (const uint8_t *)config_json, strlen(config_json));
    if (vocab) add_blob(v, n, ML_NATIVE_VOCAB_NAME, vocab, vocab_len);
    return 0;
}

/* Assigns aligned offsets; returns the data offset and total file size. */
static void layout(wentry *v, size_t n, uint64_t *dir_size, uint64_t *data_off, uint64_t *total) {
    uint64_t d = 0;
    for (size_t i = 0; i < n; i++) d += entry_size(strlen(v[i].name));
    *dir_size = d;
    *data_off = align64(ML_NATIVE_HEADER_SIZE + d);
    uint64_t pos = *data_off;
    for (size_t i = 0; i < n; i++) {
        v[i].offset = pos;
        pos = align64(pos + v[i].nbytes);
    }
    *total = pos;
}

static void encode_entry(uint8_t *p, const wentry *e) {
    size_t nl = strlen(e->name);
    memset(p, 0, entry_size(nl));
    put_le(p + 0, e->offset, 8);
    put_le(p + 8, e->nbytes, 8);
    put_le(p + 16, e->crc, 4);
    p[20] = (uint8_t)e->dtype;
    p[21] = (uint8_t)e->ndim;
    put_le(p + 22, nl, 2);
    for (int d = 0; d < e->ndim; d++) put_le(p + 24 + 8 * d, (uint64_t)e->shape[d], 8);
    memcpy(p + ML_NATIVE_ENTRY_SIZE, e->name, nl);
}

/* Builds header + directory (with its CRC) once every tensor CRC is known. */
static uint8_t *encode_head(const wentry *v, size_t n, uint64_t dir_size, uint64_t data_off,
                            uint64_t total, ml_error *err) {
    uint8_t *h = ml_calloc(1, ML_NATIVE_HEADER_SIZE + dir_size, err);
    if (!h) return NULL;
    memcpy(h, ML_NATIVE_MAGIC, 8);
    put_le(h + 8, ML_NATIVE_VERSION, 4);
    put_le(h + 12, ML_NATIVE_HEADER_SIZE, 4);
    put_le(h + 16, total, 8);
    put_le(h + 24, n, 8);
    put_le(h + 32, ML_NATIVE_HEADER_SIZE, 8);
    put_le(h + 40, dir_size, 8);
    put_le(h + 48, data_off, 8);
    put_le(h + 56, 0, 4); /* flags */
    uint8_t *p = h + ML_NATIVE_HEADER_SIZE;
    for (size_t i = 0; i < n; i++) {
        encode_entry(p, &v[i]);
        p += entry_size(strlen(v[i].name));
    }
    uint32_t crc = crc_update(0, h, 60);
    crc = crc_update(crc, h + ML_NATIVE_HEADER_SIZE, (size_t)dir_size);
    put_le(h + 60, crc, 4);
    return h;
}

static int write_body(wfile *f, wentry *v, size_t n) {
    uint64_t dir_size, data_off, total;
    layout(v, n, &dir_size, &data_off, &total);
    if (pad_to(f, data_off) != 0) return -1; /* header written last, below */
    for (size_t i = 0; i < n; i++)
        if (pad_to(f, v[i].offset) != 0 || write_data(f, &v[i]) != 0) return -1;
    if (pad_to(f, total) != 0) return -1;
    uint8_t *h = encode_head(v, n, dir_size, data_off, total, f->err);
    if (!h) return -1;
    size_t hn = (size_t)(ML_NATIVE_HEADER_SIZE + dir_size), done = 0;
    while (done < hn) {
        ssize_t k = pwrite(f->fd, h + done, hn - done, (off_t)done);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            free(h);
            return ml_fail(f->err, "%s: write failed: %s", f->path, strerror(errno));
        }
        done += (size_t)k;
    }
    free(h);
    if (fsync(f->fd) != 0) return ml_fail(f->err, "%s: fsync failed: %s", f->path, strerror(errno));
    return 0;
}

/* fsync the directory holding `path` so the rename itself is durable. */
static void sync_dir(const char *path) {
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash - path == 0 ? 1 : slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd); /* best effort: some filesystems refuse directory fsync */
        close(fd);
    }
}

int ml_native_write(const char *path, const ml_tensor_set *src, const char *config_json,
                    const uint8_t *vocab_gz, size_t vocab_len, ml_error *err) {
    wentry *v = ml_calloc(src->count + 2, sizeof *v, err);
    if (!v) return -1;
    size_t n;
    if (plan(src, config_json, vocab_gz, vocab_len, v, &n, err) != 0) {
        free(v);
        return ml_fail_prefix(err, "%s", path);
    }
    size_t tl = strlen(path) + 5;
    char *tmp = ml_malloc(tl, err);
    if (!tmp) {
        free(v);
        return -1;
    }
    snprintf(tmp, tl, "%s.tmp", path);
    wfile f = {open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644), 0, tmp, err};
    int rc;
    if (f.fd < 0) {
        rc = ml_fail(err, "%s: cannot create: %s", tmp, strerror(errno));
    } else {
        rc = write_body(&f, v, n);
        if (close(f.fd) != 0 && rc == 0) rc = ml_fail(err, "%s: close failed: %s", tmp, strerror(errno));
        if (rc == 0 && rename(tmp, path) != 0)
            rc = ml_fail(err, "%s: cannot rename %s: %s", path, tmp, strerror(errno));
        if (rc != 0) unlink(tmp);
        else sync_dir(path);
    }
    free(tmp);
    free(v);
    return rc;
}

/* ---- reader --------------------------------------------------------- */

typedef struct {
    uint64_t file_size, count, dir_off, dir_size, data_off;
} nheader;

static int parse_header(const uint8_t *d, size_t size, nheader *h, ml_error *err) {
    if (size < ML_NATIVE_HEADER_SIZE || memcmp(d, ML_NATIVE_MAGIC, 8) != 0)
        return ml_fail(err, "not a native .mlens file (bad magic or shorter than its header)");
    uint32_t version = (uint32_t)get_le(d + 8, 4);
    if (version > ML_NATIVE_VERSION)
        return ml_fail(err, "format version %u is newer than this build supports (%u)", version,
                       ML_NATIVE_VERSION);
    if (version == 0 || get_le(d + 12, 4) != ML_NATIVE_HEADER_SIZE || get_le(d + 56, 4) != 0)
        return ml_fail(err, "corrupted header (version, header size or flags)");
    h->file_size = get_le(d + 16, 8);
    h->count = get_le(d + 24, 8);
    h->dir_off = get_le(d + 32, 8);
    h->dir_size = get_le(d + 40, 8);
    h->data_off = get_le(d + 48, 8);
    if (h->file_size != size)
        return ml_fail(err, "%s: header says %llu bytes, file has %zu",
                       h->file_size > size ? "truncated" : "size mismatch",
                       (unsigned long long)h->file_size, size);
    if (h->dir_off != ML_NATIVE_HEADER_SIZE || h->dir_size > size - h->dir_off ||
        h->data_off < h->dir_off + h->dir_size || h->data_off > size ||
        h->count > h->dir_size / ML_NATIVE_ENTRY_SIZE)
        return ml_fail(err, "corrupted header (directory bounds)");
    uint32_t crc = crc_update(0, d, 60);
    crc = crc_update(crc, d + h->dir_off, (size_t)h->dir_size);
    if (crc != (uint32_t)get_le(d + 60, 4))
        return ml_fail(err, "header/directory checksum mismatch (file corrupted)");
    return 0;
}

/* Validates one directory entry at d[*pos] and adds its tensor. */
static int load_entry(const uint8_t *d, const nheader *h, uint64_t *pos, ml_tensor_set *out,
                      ml_error *err) {
    const uint64_t end = h->dir_off + h->dir_size;
    if (end - *pos < ML_NATIVE_ENTRY_SIZE) return ml_fail(err, "directory entry past its end");
    const uint8_t *e = d + *pos;
    uint64_t off = get_le(e, 8), nbytes = get_le(e + 8, 8);
    uint32_t crc = (uint32_t)get_le(e + 16, 4);
    unsigned dtype = e[20], ndim = e[21];
    size_t nl = (size_t)get_le(e + 22, 2);
    if (nl == 0 || nl > ML_NATIVE_MAX_NAME || end - *pos < entry_size(nl))
        return ml_fail(err, "directory entry with a bad name length");
    char name[ML_NATIVE_MAX_NAME + 1];
    memcpy(name, e + ML_NATIVE_ENTRY_SIZE, nl);
    name[nl] = '\0';
    if (memchr(name, '\0', nl)) return ml_fail(err, "tensor name with a NUL byte");
    *pos += entry_size(nl);
    if (dtype > ML_U8 || ndim > ML_MAX_DIMS)
        return ml_fail(err, "%s: bad dtype %u or rank %u", name, dtype, ndim);
    int64_t shape[ML_MAX_DIMS] = {0};
    uint64_t numel = 1;
    for (unsigned i = 0; i < ML_MAX_DIMS; i++) {
        uint64_t s = get_le(e + 24 + 8 * i, 8);
        if (i >= ndim ? s != 0 : (s > (uint64_t)INT64_MAX || __builtin_mul_overflow(numel, s, &numel)))
            return ml_fail(err, "%s: bad shape", name);
        shape[i] = (int64_t)s;
    }
    uint64_t want;
    if (__builtin_mul_overflow(numel, (uint64_t)ml_dtype_size((ml_dtype)dtype), &want) || want != nbytes)
        return ml_fail(err, "%s: %llu bytes do not match its shape", name, (unsigned long long)nbytes);
    if (off % 64 != 0 || off < h->data_off || off > h->file_size || nbytes > h->file_size - off)
        return ml_fail(err, "%s: data offset %llu / size %llu out of bounds", name,
                       (unsigned long long)off, (unsigned long long)nbytes);
    if (crc_update(0, d + off, (size_t)nbytes) != crc)
        return ml_fail(err, "%s: data checksum mismatch (file corrupted)", name);
    return ml_tensor_set_add(out, name, (ml_dtype)dtype, (int)ndim, shape, d + off, (size_t)nbytes, err);
}

int ml_native_load_mem(const uint8_t *data, size_t size, ml_tensor_set *out, ml_error *err) {
    nheader h = {0};
    int rc = parse_header(data, size, &h, err);
    uint64_t pos = h.dir_off;
    for (uint64_t i = 0; rc == 0 && i < h.count; i++) rc = load_entry(data, &h, &pos, out, err);
    if (rc == 0 && pos != h.dir_off + h.dir_size)
        rc = ml_fail(err, "directory has %llu stray bytes",
                     (unsigned long long)(h.dir_off + h.dir_size - pos));
    if (rc == 0) rc = ml_tensor_set_check_unique(out, err);
    if (rc != 0) ml_tensor_set_free(out);
    return rc;
}

int ml_native_load(const char *path, ml_tensor_set *out, ml_error *err) {
    ml_tensor_set s = {0};
    *out = s;
    if (ml_file_map_open(path, &s.file, err) != 0) return -1;
    if (ml_native_load_mem(s.file.data, s.file.size, &s, err) != 0)
        return ml_fail_prefix(err, "%s", path); /* s (and its mapping) already released */
    *out = s;
    return 0;
}

int ml_native_is_native(const char *path) {
    uint8_t magic[8];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t k = read(fd, magic, sizeof magic);
    close(fd);
    return k == (ssize_t)sizeof magic && memcmp(magic, ML_NATIVE_MAGIC, 8) == 0;
}
