/* store.c - the index folder: manifest, shard logs, crash-safe commits.
 * The format is described in store.h and docs/index-format.md. */
#include "index/store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "core/error.h"
#include "core/fileio.h"
#include "core/mem.h"
#include "index/table.h"

#define SHARD_MAGIC "MLIDXSHD"
#define HEADER_SIZE 512
#define SLOT_OFF 64
#define SLOT_SIZE 32
#define REC_MAGIC 0x43524c4du /* "MLRC" */
#define REC_PUT 1
#define REC_DEL 2
#define PUT_FIXED 80 /* bytes before the vectors */
#define MAX_PATH_BYTES 65536

typedef struct shard {
    char *file;
    const uint8_t *map; /* committed records as of open (read-only mapping) */
    size_t map_len;
    int fd;             /* >= 0 once opened for writing (locked) */
    uint64_t end, nrec, seq;
    uint8_t *pending;   /* queued records, not yet durable */
    size_t pend_len, pend_cap;
    uint64_t pend_nrec;
} shard;

struct ml_store {
    char *dir;
    int mode;
    ml_store_meta meta;
    uint8_t uuid[16];
    shard *shards;
    int nshards;
    ml_item *items; /* live, sorted by id */
    size_t nitems;
    int64_t next_id;
    ml_table by_id, by_path;
    int part_k, part_r; /* read only shards s with s % part_k == part_r */
    int max_id_shard;   /* the shard holding a record of id next_id - 1 */
};

/* ---- little-endian field access (the format is little-endian) ---------- */

static uint32_t rd32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static uint64_t rd64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}
static void wr32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void wr64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

static uint64_t record_checksum(const uint8_t *rec, size_t len) {
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    XXH3_64bits_update(&st, rec, 16);
    XXH3_64bits_update(&st, rec + 24, len - 24);
    return XXH3_64bits_digest(&st);
}

static char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static char *shard_file(const char *dir, int i) {
    char name[32];
    snprintf(name, sizeof name, "shard-%04d.log", i);
    return path_join(dir, name);
}

/* ---- manifest ----------------------------------------------------------- */

static void hex(const uint8_t *b, int n, char *out) {
    for (int i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", b[i]);
}

static int unhex(const char *s, uint8_t *b, int n) {
    if (!s || strlen(s) != (size_t)2 * n) return -1;
    for (int i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1) return -1;
        b[i] = (uint8_t)v;
    }
    return 0;
}

static int write_manifest(ml_store *s, ml_error *err) {
    char uuid[33];
    hex(s->uuid, 16, uuid);
    json_t *j = json_pack("{s:s, s:i, s:s, s:i, s:i, s:i, s:{s:s, s:s, s:s}}", "format",
                          "magiclens-index", "version", ML_STORE_VERSION, "uuid", uuid, "dim",
                          s->meta.dim, "clip_dim", s->meta.clip_dim, "shards", s->nshards, "model",
                          "fingerprint", s->meta.fingerprint, "name", s->meta.model_name,
                          "precision", s->meta.precision);
    char *text = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
    json_decref(j);
    if (!text) return ml_fail(err, "out of memory");
    char *path = path_join(s->dir, "index.json");
    int rc = path ? ml_write_atomic(path, text, strlen(text), err) : ml_fail(err, "out of memory");
    free(path);
    free(text);
    return rc;
}

static const char *jstr(json_t *o, const char *k) {
    const char *v = json_string_value(json_object_get(o, k));
    return v ? v : "";
}

static int read_manifest(ml_store *s, const char *path, ml_error *err) {
    json_error_t je;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        if (access(path, F_OK) != 0)
            return ml_fail(err, "%s: not a magiclens index (no index.json)", s->dir);
        return ml_fail(err, "%s: corrupt manifest: %s (line %d)", path, je.text, je.line);
    }
    int rc = -1;
    json_t *model = json_object_get(j, "model");
    json_int_t ver = json_integer_value(json_object_get(j, "version"));
    json_int_t dim = json_integer_value(json_object_get(j, "dim"));
    json_int_t cdim = json_integer_value(json_object_get(j, "clip_dim"));
    json_int_t nsh = json_integer_value(json_object_get(j, "shards"));
    if (strcmp(jstr(j, "format"), "magiclens-index") != 0)
        ml_fail(err, "%s: not a magiclens index manifest", path);
    else if (ver != ML_STORE_VERSION)
        ml_fail(err, "%s: index format version %lld; this build reads version %d", path,
                (long long)ver, ML_STORE_VERSION);
    else if (dim < 1 || dim > 65536 || cdim < 1 || cdim > 65536 || nsh < 0 ||
             nsh > ML_STORE_MAX_SHARDS || !json_is_object(model) ||
             unhex(jstr(j, "uuid"), s->uuid, 16) != 0)
        ml_fail(err, "%s: corrupt manifest (bad dim, clip_dim, shards, uuid or model)", path);
    else {
        s->meta.dim = (int)dim, s->meta.clip_dim = (int)cdim, s->nshards = (int)nsh;
        snprintf(s->meta.fingerprint, sizeof s->meta.fingerprint, "%s", jstr(model, "fingerprint"));
        snprintf(s->meta.model_name, sizeof s->meta.model_name, "%s", jstr(model, "name"));
        snprintf(s->meta.precision, sizeof s->meta.precision, "%s", jstr(model, "precision"));
        rc = 0;
    }
    json_decref(j);
    return rc;
}

/* ---- shard header ------------------------------------------------------ */

static void fill_slot(uint8_t *slot, uint64_t seq, uint64_t end, uint64_t nrec) {
    wr64(slot, seq), wr64(slot + 8, end), wr64(slot + 16, nrec);
    wr64(slot + 24, XXH3_64bits(slot, 24));
}

static void make_header(const ml_store *s, int idx, uint8_t *h) {
    memset(h, 0, HEADER_SIZE);
    memcpy(h, SHARD_MAGIC, 8);
    wr32(h + 8, ML_STORE_VERSION), wr32(h + 12, (uint32_t)idx);
    wr32(h + 16, (uint32_t)s->meta.dim), wr32(h + 20, (uint32_t)s->meta.clip_dim);
    memcpy(h + 24, s->uuid, 16);
    wr64(h + 40, XXH3_64bits(h, 40));
    fill_slot(h + SLOT_OFF, 1, HEADER_SIZE, 0);
}

/* Checks the fixed header and picks the newest valid commit slot. */
static int parse_header(const ml_store *s, int idx, const uint8_t *h, size_t size, shard *sh,
                        ml_error *err) {
    const char *f = sh->file;
    if (size < HEADER_SIZE || memcmp(h, SHARD_MAGIC, 8) != 0)
        return ml_fail(err, "%s: not a magiclens index shard (bad magic or too short)", f);
    if (rd32(h + 8) != ML_STORE_VERSION)
        return ml_fail(err, "%s: shard format version %u; this build reads version %d", f,
                       rd32(h + 8), ML_STORE_VERSION);
    if (rd64(h + 40) != XXH3_64bits(h, 40))
        return ml_fail(err, "%s: corrupt shard header (checksum mismatch)", f);
    if (rd32(h + 12) != (uint32_t)idx || memcmp(h + 24, s->uuid, 16) != 0)
        return ml_fail(err, "%s: shard belongs to another index (uuid or number differs)", f);
    if (rd32(h + 16) != (uint32_t)s->meta.dim || rd32(h + 20) != (uint32_t)s->meta.clip_dim)
        return ml_fail(err, "%s: shard dimensions differ from index.json", f);
    int best = -1;
    for (int i = 0; i < 2; i++) {
        const uint8_t *sl = h + SLOT_OFF + i * SLOT_SIZE;
        if (rd64(sl) == 0 || rd64(sl + 24) != XXH3_64bits(sl, 24)) continue;
        if (best < 0 || rd64(sl) > sh->seq) {
            best = i;
            sh->seq = rd64(sl), sh->end = rd64(sl + 8), sh->nrec = rd64(sl + 16);
        }
    }
    if (best < 0) return ml_fail(err, "%s: corrupt shard header (no valid commit slot)", f);
    if (sh->end < HEADER_SIZE || sh->end % 8 != 0)
        return ml_fail(err, "%s: corrupt commit slot (end %llu)", f, (unsigned long long)sh->end);
    if (sh->end > size)
        return ml_fail(err, "%s: truncated: %zu bytes, but %llu were committed", f, size,
                       (unsigned long long)sh->end);
    return 0;
}

/* ---- item table --------------------------------------------------------- */

static uint64_t hash_id(const void *ctx, int64_t row) {
    const ml_item *items = *(ml_item *const *)ctx;
    return XXH3_64bits(&items[row].id, 8);
}
static int eq_id(const void *ctx, int64_t row, const void *key) {
    const ml_item *items = *(ml_item *const *)ctx;
    return items[row].id == *(const int64_t *)key;
}
static uint64_t hash_path(const void *ctx, int64_t row) {
    const ml_item *items = *(ml_item *const *)ctx;
    return XXH3_64bits(items[row].path, strlen(items[row].path));
}
static int eq_path(const void *ctx, int64_t row, const void *key) {
    const ml_item *items = *(ml_item *const *)ctx;
    return strcmp(items[row].path, key) == 0;
}

typedef struct scan_state {
    ml_item *items; /* every id seen (dead ones have path NULL) */
    size_t n, cap;
    ml_table ids;
} scan_state;

static int apply_record(ml_store *s, scan_state *st, int idx, const uint8_t *r, size_t len,
                        ml_error *err) {
    int type = (int)(r[4] | r[5] << 8);
    int64_t id = (int64_t)rd64(r + 24);
    if (id < 0) return ml_fail(err, "negative id");
    if (id >= s->next_id) s->next_id = id + 1, s->max_id_shard = idx;
    ml_item it = {.id = id, .shard = idx};
    if (type == REC_PUT) {
        uint32_t plen = rd32(r + 64);
        size_t vec = sizeof(float) * ((size_t)s->meta.dim + (size_t)s->meta.clip_dim);
        if (len < PUT_FIXED + vec + plen || rd32(r + 68) != (uint32_t)s->meta.dim ||
            rd32(r + 72) != (uint32_t)s->meta.clip_dim || plen < 2 || plen > MAX_PATH_BYTES ||
            r[PUT_FIXED + vec + plen - 1] != 0 || memchr(r + PUT_FIXED + vec, 0, plen) !=
                                                      r + PUT_FIXED + vec + plen - 1)
            return ml_fail(err, "malformed PUT record for id %lld", (long long)id);
        it.size = rd64(r + 32), it.mtime_ns = (int64_t)rd64(r + 40);
        memcpy(it.hash, r + 48, 16);
        it.emb = (const float *)(r + PUT_FIXED);
        it.clip = it.emb + s->meta.dim;
        it.path = (const char *)(r + PUT_FIXED + vec);
    } else if (type != REC_DEL) {
        return ml_fail(err, "unknown record type %d", type);
    }
    int64_t row = ml_table_find(&st->ids, XXH3_64bits(&id, 8), &id, eq_id);
    if (row >= 0) {
        if (st->items[row].shard != idx)
            return ml_fail(err, "id %lld also lives in shard %d", (long long)id,
                           st->items[row].shard);
        st->items[row] = it;
        return 0;
    }
    if (st->n == st->cap) {
        size_t cap = st->cap ? 2 * st->cap : 1024;
        ml_item *g = realloc(st->items, cap * sizeof *g);
        if (!g) return ml_fail(err, "out of memory");
        st->items = g, st->cap = cap;
    }
    st->items[st->n] = it;
    return ml_table_add(&st->ids, (int64_t)st->n++, err);
}

/* Maps a shard and replays its committed records. */
static int load_shard(ml_store *s, scan_state *st, int idx, ml_error *err) {
    shard *sh = &s->shards[idx];
    sh->fd = -1;
    sh->file = shard_file(s->dir, idx);
    if (!sh->file) return ml_fail(err, "out of memory");
    int fd = open(sh->file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ml_fail(err, "%s: cannot open: %s", sh->file, strerror(errno));
    struct stat stt;
    if (fstat(fd, &stt) != 0 || stt.st_size < HEADER_SIZE) {
        close(fd);
        return ml_fail(err, "%s: not a magiclens index shard (too short)", sh->file);
    }
    size_t size = (size_t)stt.st_size;
    void *map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return ml_fail(err, "%s: mmap: %s", sh->file, strerror(errno));
    sh->map = map, sh->map_len = size;
    if (parse_header(s, idx, map, size, sh, err) != 0) return -1;
    uint64_t off = HEADER_SIZE, nrec = 0;
    while (off < sh->end) {
        const uint8_t *r = sh->map + off;
        uint64_t len = sh->end - off >= 32 ? rd32(r + 8) : 0;
        if (len < 32 || len % 8 || len > sh->end - off || rd32(r) != REC_MAGIC)
            return ml_fail(err, "%s: corrupt record at offset %llu (bad header)", sh->file,
                           (unsigned long long)off);
        if (rd64(r + 16) != record_checksum(r, len))
            return ml_fail(err, "%s: corrupt record at offset %llu (checksum mismatch)",
                           sh->file, (unsigned long long)off);
        if (apply_record(s, st, idx, r, len, err) != 0)
            return ml_fail_prefix(err, "%s: record at offset %llu", sh->file,
                                  (unsigned long long)off);
        off += len, nrec++;
    }
    if (nrec != sh->nrec)
        return ml_fail(err, "%s: %llu records found, the commit slot says %llu", sh->file,
                       (unsigned long long)nrec, (unsigned long long)sh->nrec);
    return 0;
}

static int cmp_id(const void *a, const void *b) {
    int64_t x = ((const ml_item *)a)->id, y = ((const ml_item *)b)->id;
    return (x > y) - (x < y);
}

/* Keeps the live items, sorted by id, and indexes them by id and path. */
static int build_items(ml_store *s, scan_state *st, ml_error *err) {
    size_t n = 0;
    for (size_t i = 0; i < st->n; i++)
        if (st->items[i].path) st->items[n++] = st->items[i];
    if (n) qsort(st->items, n, sizeof *st->items, cmp_id);
    s->items = st->items, s->nitems = n;
    st->items = NULL;
    if (ml_table_init(&s->by_id, n, hash_id, &s->items, err) != 0 ||
        ml_table_init(&s->by_path, n, hash_path, &s->items, err) != 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (ml_table_add(&s->by_id, (int64_t)i, err) != 0 ||
            ml_table_add(&s->by_path, (int64_t)i, err) != 0)
            return -1;
    return 0;
}

static int load_all(ml_store *s, ml_error *err) {
    scan_state st = {0};
    int rc = ml_table_init(&st.ids, 1024, hash_id, &st.items, err);
    s->shards = ml_calloc((size_t)(s->nshards ? s->nshards : 1), sizeof *s->shards, err);
    if (!s->shards) rc = -1;
    for (int i = 0; i < s->nshards; i++) s->shards[i].fd = -1;
    for (int i = 0; rc == 0 && i < s->nshards; i++)
        if (i % s->part_k == s->part_r) rc = load_shard(s, &st, i, err);
    if (rc == 0) rc = build_items(s, &st, err);
    ml_table_free(&st.ids);
    free(st.items);
    return rc;
}

/* ---- open / close --------------------------------------------------------- */

static int check_meta(const ml_store *s, const ml_store_meta *want, ml_error *err) {
    if (want->dim != s->meta.dim || want->clip_dim != s->meta.clip_dim)
        return ml_fail(err, "%s: index holds %d-dim embeddings, the model makes %d", s->dir,
                       s->meta.dim, want->dim);
    if (want->fingerprint[0] && strcmp(want->fingerprint, s->meta.fingerprint) != 0)
        return ml_fail(err, "%s: index was built with another model (%s, fingerprint %s); "
                            "this model's fingerprint is %s",
                       s->dir, s->meta.model_name, s->meta.fingerprint, want->fingerprint);
    return 0;
}

/* A new index goes into a new or empty folder only: anything else there
 * (shards without a manifest, unrelated files) must not be overwritten.
 * Leftover *.tmp files of a creation that crashed are fine. */
static int check_empty(const char *dir, ml_error *err) {
    DIR *d = opendir(dir);
    if (!d) return ml_fail(err, "%s: cannot read folder: %s", dir, strerror(errno));
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") ||
            (n > 4 && !strcmp(e->d_name + n - 4, ".tmp")))
            continue;
        rc = ml_fail(err, "%s: not a magiclens index (no index.json) and not empty (holds %s): "
                          "refusing to create an index there", dir, e->d_name);
    }
    closedir(d);
    return rc;
}

static int create_index(ml_store *s, const ml_store_meta *meta, ml_error *err) {
    if (mkdir(s->dir, 0755) != 0 && errno != EEXIST)
        return ml_fail(err, "%s: cannot create folder: %s", s->dir, strerror(errno));
    if (check_empty(s->dir, err) != 0) return -1;
    s->meta = *meta;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    ssize_t got = fd >= 0 ? read(fd, s->uuid, 16) : -1;
    if (fd >= 0) close(fd);
    if (got != 16) return ml_fail(err, "cannot read /dev/urandom for the index uuid");
    s->nshards = 0;
    size_t n = strlen(s->dir) + 1;
    char *parent = malloc(n + 3);
    if (!parent) return ml_fail(err, "out of memory");
    snprintf(parent, n + 3, "%s/..", s->dir);
    int rc = write_manifest(s, err);
    if (rc == 0) rc = ml_fsync_dir(parent, err);
    free(parent);
    return rc;
}

ml_store *ml_store_open(const char *dir, int mode, const ml_store_meta *create, ml_error *err) {
    return ml_store_open_part(dir, mode, create, 1, 0, err);
}

ml_store *ml_store_open_part(const char *dir, int mode, const ml_store_meta *create, int k, int r,
                             ml_error *err) {
    ml_store *s = ml_calloc(1, sizeof *s, err);
    if (!s) return NULL;
    s->part_k = k > 0 ? k : 1, s->part_r = r;
    s->dir = strdup(dir);
    s->mode = mode;
    char *man = s->dir ? path_join(dir, "index.json") : NULL;
    int rc = man ? 0 : ml_fail(err, "out of memory");
    if (rc == 0 && mode == ML_STORE_WRITE && create && access(man, F_OK) != 0)
        rc = create_index(s, create, err);
    if (rc == 0) rc = read_manifest(s, man, err);
    if (rc == 0 && create) rc = check_meta(s, create, err);
    if (rc == 0) rc = load_all(s, err);
    free(man);
    if (rc != 0) {
        ml_store_close(s);
        return NULL;
    }
    return s;
}

void ml_store_close(ml_store *s) {
    if (!s) return;
    for (int i = 0; s->shards && i < s->nshards; i++) {
        shard *sh = &s->shards[i];
        if (sh->map) munmap((void *)sh->map, sh->map_len);
        if (sh->fd >= 0) close(sh->fd);
        free(sh->pending);
        free(sh->file);
    }
    free(s->shards);
    free(s->items);
    ml_table_free(&s->by_id);
    ml_table_free(&s->by_path);
    free(s->dir);
    free(s);
}

const ml_store_meta *ml_store_get_meta(const ml_store *s) { return &s->meta; }
int ml_store_shard_count(const ml_store *s) { return s->nshards; }
size_t ml_store_count(const ml_store *s) { return s->nitems; }
const ml_item *ml_store_items(const ml_store *s) { return s->items; }
int64_t ml_store_next_id(const ml_store *s) { return s->next_id; }

uint64_t ml_store_generation(const ml_store *s) {
    uint64_t g = 0;
    for (int i = 0; i < s->nshards; i++) g += s->shards[i].end + (s->shards[i].seq << 40);
    return g;
}

const ml_item *ml_store_find_id(const ml_store *s, int64_t id) {
    int64_t r = ml_table_find(&s->by_id, XXH3_64bits(&id, 8), &id, eq_id);
    return r >= 0 ? &s->items[r] : NULL;
}

const ml_item *ml_store_find_path(const ml_store *s, const char *path) {
    int64_t r = ml_table_find(&s->by_path, XXH3_64bits(path, strlen(path)), path, eq_path);
    return r >= 0 ? &s->items[r] : NULL;
}

/* ---- writing -------------------------------------------------------------- */

static int create_shard(ml_store *s, int idx, ml_error *err) {
    uint8_t h[HEADER_SIZE];
    make_header(s, idx, h);
    char *f = shard_file(s->dir, idx);
    int rc = f ? ml_write_atomic(f, h, sizeof h, err) : ml_fail(err, "out of memory");
    free(f);
    return rc;
}

int ml_store_ensure_shards(ml_store *s, int n, ml_error *err) {
    if (s->mode != ML_STORE_WRITE) return ml_fail(err, "%s: opened read-only", s->dir);
    if (n <= s->nshards) return 0;
    if (n > ML_STORE_MAX_SHARDS) return ml_fail(err, "too many shards (%d)", n);
    shard *g = realloc(s->shards, (size_t)n * sizeof *g);
    if (!g) return ml_fail(err, "out of memory");
    s->shards = g;
    /* Shard files first, then the manifest that lists them: a crash in
     * between leaves an unlisted empty file that the next run rewrites. */
    for (int i = s->nshards; i < n; i++)
        if (create_shard(s, i, err) != 0) return -1;
    for (int i = s->nshards; i < n; i++) {
        memset(&s->shards[i], 0, sizeof s->shards[i]);
        s->shards[i].fd = -1;
        s->shards[i].file = shard_file(s->dir, i);
        s->shards[i].seq = 1, s->shards[i].end = HEADER_SIZE;
        if (!s->shards[i].file) return ml_fail(err, "out of memory");
    }
    int old = s->nshards;
    s->nshards = n;
    if (write_manifest(s, err) != 0) {
        s->nshards = old;
        return -1;
    }
    return 0;
}

/* Opens a shard for appending: exclusive lock, uncommitted tail cut off. */
static int open_for_write(ml_store *s, int idx, ml_error *err) {
    shard *sh = &s->shards[idx];
    if (sh->fd >= 0) return 0;
    int fd = open(sh->file, O_RDWR | O_CLOEXEC);
    if (fd < 0) return ml_fail(err, "%s: cannot open for writing: %s", sh->file, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        close(fd);
        return ml_fail(err, "%s: another process is writing this index", sh->file);
    }
    /* Re-read the commit state under the lock: it may have moved since open. */
    uint8_t h[HEADER_SIZE];
    struct stat st;
    shard tmp = *sh;
    if (pread(fd, h, sizeof h, 0) != (ssize_t)sizeof h || fstat(fd, &st) != 0 ||
        parse_header(s, idx, h, (size_t)st.st_size, &tmp, err) != 0) {
        close(fd);
        return err && err->msg[0] ? -1 : ml_fail(err, "%s: cannot read header", sh->file);
    }
    if (tmp.end != sh->end) {
        close(fd);
        return ml_fail(err, "%s: changed by another process since it was opened", sh->file);
    }
    if ((uint64_t)st.st_size > sh->end && ftruncate(fd, (off_t)sh->end) != 0) {
        close(fd);
        return ml_fail(err, "%s: cannot cut the uncommitted tail: %s", sh->file, strerror(errno));
    }
    sh->fd = fd;
    return 0;
}

static uint8_t *reserve(shard *sh, size_t len, ml_error *err) {
    if (sh->pend_len + len > sh->pend_cap) {
        size_t cap = sh->pend_cap ? sh->pend_cap : 65536;
        while (cap < sh->pend_len + len) cap *= 2;
        uint8_t *g = realloc(sh->pending, cap);
        if (!g) {
            ml_fail(err, "out of memory");
            return NULL;
        }
        sh->pending = g, sh->pend_cap = cap;
    }
    uint8_t *r = sh->pending + sh->pend_len;
    memset(r, 0, len);
    sh->pend_len += len, sh->pend_nrec++;
    return r;
}

static int check_shard(ml_store *s, int idx, ml_error *err) {
    if (s->mode != ML_STORE_WRITE) return ml_fail(err, "%s: opened read-only", s->dir);
    if (idx < 0 || idx >= s->nshards) return ml_fail(err, "%s: no shard %d", s->dir, idx);
    return open_for_write(s, idx, err);
}

int ml_store_put(ml_store *s, int idx, const ml_item *it, const float *emb, const float *clip,
                 ml_error *err) {
    if (check_shard(s, idx, err) != 0) return -1;
    size_t plen = strlen(it->path) + 1;
    if (plen < 2 || plen > MAX_PATH_BYTES) return ml_fail(err, "%s: path too long or empty", it->path);
    size_t vec = sizeof(float) * ((size_t)s->meta.dim + (size_t)s->meta.clip_dim);
    size_t len = (PUT_FIXED + vec + plen + 7) & ~(size_t)7;
    uint8_t *r = reserve(&s->shards[idx], len, err);
    if (!r) return -1;
    wr32(r, REC_MAGIC), r[4] = REC_PUT, wr32(r + 8, (uint32_t)len);
    wr64(r + 24, (uint64_t)it->id), wr64(r + 32, it->size), wr64(r + 40, (uint64_t)it->mtime_ns);
    memcpy(r + 48, it->hash, 16);
    wr32(r + 64, (uint32_t)plen), wr32(r + 68, (uint32_t)s->meta.dim);
    wr32(r + 72, (uint32_t)s->meta.clip_dim);
    memcpy(r + PUT_FIXED, emb, sizeof(float) * (size_t)s->meta.dim);
    memcpy(r + PUT_FIXED + sizeof(float) * (size_t)s->meta.dim, clip,
           sizeof(float) * (size_t)s->meta.clip_dim);
    memcpy(r + PUT_FIXED + vec, it->path, plen);
    wr64(r + 16, record_checksum(r, len));
    if (it->id >= s->next_id) s->next_id = it->id + 1;
    return 0;
}

int ml_store_del(ml_store *s, int idx, int64_t id, ml_error *err) {
    if (check_shard(s, idx, err) != 0) return -1;
    uint8_t *r = reserve(&s->shards[idx], 32, err);
    if (!r) return -1;
    wr32(r, REC_MAGIC), r[4] = REC_DEL, wr32(r + 8, 32);
    wr64(r + 24, (uint64_t)id);
    wr64(r + 16, record_checksum(r, 32));
    return 0;
}

static int pwrite_all(int fd, const uint8_t *p, size_t len, uint64_t off) {
    while (len) {
        ssize_t w = pwrite(fd, p, len, (off_t)off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w, len -= (size_t)w, off += (uint64_t)w;
    }
    return 0;
}

/* Commit k lives in slot (k+1) % 2 (the header's first commit, 1, in slot
 * 0), so a new commit never overwrites the one it supersedes.
 * Records, sync, then the commit slot, sync: the slot never points at
 * data that is not on disk. */
static int commit_shard(shard *sh, ml_error *err) {
    if (!sh->pend_len) return 0;
    if (pwrite_all(sh->fd, sh->pending, sh->pend_len, sh->end) != 0 || fdatasync(sh->fd) != 0)
        return ml_fail(err, "%s: write failed: %s", sh->file, strerror(errno));
    uint8_t slot[SLOT_SIZE];
    uint64_t seq = sh->seq + 1, end = sh->end + sh->pend_len, nrec = sh->nrec + sh->pend_nrec;
    fill_slot(slot, seq, end, nrec);
    if (pwrite_all(sh->fd, slot, SLOT_SIZE, SLOT_OFF + ((seq + 1) % 2) * SLOT_SIZE) != 0 ||
        fdatasync(sh->fd) != 0)
        return ml_fail(err, "%s: commit failed: %s", sh->file, strerror(errno));
    sh->seq = seq, sh->end = end, sh->nrec = nrec;
    sh->pend_len = 0, sh->pend_nrec = 0;
    return 0;
}

int ml_store_commit(ml_store *s, ml_error *err) {
    for (int i = 0; i < s->nshards; i++)
        if (commit_shard(&s->shards[i], err) != 0) return -1;
    return 0;
}

/* ---- compaction -------------------------------------------------------------- */

static size_t put_len(const ml_store *s, const ml_item *it) {
    size_t vec = sizeof(float) * ((size_t)s->meta.dim + (size_t)s->meta.clip_dim);
    return (PUT_FIXED + vec + strlen(it->path) + 1 + 7) & ~(size_t)7;
}

static int write_all(int fd, const void *p, size_t n) {
    const uint8_t *b = p;
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        b += w, n -= (size_t)w;
    }
    return 0;
}

/* Streams the new shard into path.tmp: header, the live PUT records copied
 * as they are (each carries its own checksum), and, when this shard holds
 * the largest id ever used and that item is gone, a DEL for it so that ids
 * are still never reused.  Returns the committed length. */
static int write_compacted(ml_store *s, int idx, const char *tmp, uint64_t *len, uint64_t *nrec,
                           ml_error *err) {
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return ml_fail(err, "%s: cannot create: %s", tmp, strerror(errno));
    uint8_t h[HEADER_SIZE], del[32] = {0};
    make_header(s, idx, h);
    int rc = write_all(fd, h, sizeof h);
    uint64_t end = HEADER_SIZE, n = 0;
    for (size_t i = 0; rc == 0 && i < s->nitems; i++) {
        const ml_item *it = &s->items[i];
        if (it->shard != idx) continue;
        size_t l = put_len(s, it);
        rc = write_all(fd, (const uint8_t *)it->emb - PUT_FIXED, l);
        end += l, n++;
    }
    int64_t top = s->next_id - 1;
    if (rc == 0 && top >= 0 && s->max_id_shard == idx && !ml_store_find_id(s, top)) {
        wr32(del, REC_MAGIC), del[4] = REC_DEL, wr32(del + 8, 32), wr64(del + 24, (uint64_t)top);
        wr64(del + 16, record_checksum(del, 32));
        rc = write_all(fd, del, 32);
        end += 32, n++;
    }
    fill_slot(h + SLOT_OFF, 1, end, n);
    if (rc == 0 && (pwrite_all(fd, h, HEADER_SIZE, 0) != 0 || fsync(fd) != 0)) rc = -1;
    close(fd);
    if (rc != 0) {
        unlink(tmp);
        return ml_fail(err, "%s: write failed: %s", tmp, strerror(errno));
    }
    *len = end, *nrec = n;
    return 0;
}

int ml_store_compact(ml_store *s, int idx, uint64_t *freed, ml_error *err) {
    *freed = 0;
    if (check_shard(s, idx, err) != 0) return -1; /* write mode, locked, unchanged */
    shard *sh = &s->shards[idx];
    if (sh->pend_len) return ml_fail(err, "%s: uncommitted records; commit first", sh->file);
    size_t n = strlen(sh->file) + 5;
    char *tmp = malloc(n);
    if (!tmp) return ml_fail(err, "out of memory");
    snprintf(tmp, n, "%s.tmp", sh->file);
    uint64_t len, nrec;
    int rc = write_compacted(s, idx, tmp, &len, &nrec, err);
    if (rc == 0 && rename(tmp, sh->file) != 0)
        rc = ml_fail(err, "%s: rename failed: %s", sh->file, strerror(errno));
    if (rc == 0) rc = ml_fsync_dir(s->dir, err);
    free(tmp);
    if (rc != 0) return -1;
    /* The lock was on the old file; this store may not append any more. */
    close(sh->fd);
    sh->fd = -1;
    *freed = sh->end > len ? sh->end - len : 0;
    sh->end = len, sh->nrec = nrec, sh->seq = 1;
    return 0;
}
