/* data.c - training triplets from JSONL or WebDataset tars (see data.h). */
#include "train/data.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <libgen.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

#include "core/error.h"
#include "index/sources.h"
#include "index/table.h"
#include "model/preprocess.h"

#define MAX_TEXT_BYTES 4096
#define MAX_SMALL_MEMBER (1u << 20) /* a sample's instruction file */

/* ---- name tables: image keys and instructions, deduplicated ------------ */

typedef struct name_list {
    char ***names; /* &d->images or &d->texts: stable while d lives */
    ml_table table;
} name_list;

typedef struct tdata_index {
    name_list images, texts;
} tdata_index;

static uint64_t name_hash(const void *ctx, int64_t row) {
    const char *s = (*(char ***)ctx)[row];
    return XXH3_64bits(s, strlen(s));
}

static int name_eq(const void *ctx, int64_t row, const void *key) {
    return strcmp((*(char ***)ctx)[row], key) == 0;
}

/* The id of `name` in the list, adding it when new. */
static int64_t intern(name_list *l, size_t *n, size_t *cap, const char *name, ml_error *err) {
    uint64_t h = XXH3_64bits(name, strlen(name));
    int64_t row = ml_table_find(&l->table, h, name, name_eq);
    if (row >= 0) return row;
    if (*n == UINT32_MAX) return ml_fail(err, "too many distinct names");
    if (*n == *cap) {
        size_t c = *cap ? 2 * *cap : 256;
        char **p = realloc(*l->names, c * sizeof *p);
        if (!p) return ml_fail(err, "out of memory");
        *l->names = p, *cap = c;
    }
    char *copy = strdup(name);
    if (!copy) return ml_fail(err, "out of memory");
    (*l->names)[*n] = copy;
    if (ml_table_add(&l->table, (int64_t)*n, err) != 0) {
        free(copy);
        return -1;
    }
    return (int64_t)(*n)++;
}

static int add_triplet(ml_tdata *d, const char *query, const char *instruction, const char *target,
                       ml_error *err) {
    tdata_index *ix = d->index;
    int64_t q = intern(&ix->images, &d->n_images, &d->cap_images, query, err);
    int64_t t = q < 0 ? -1 : intern(&ix->images, &d->n_images, &d->cap_images, target, err);
    int64_t s = t < 0 ? -1 : intern(&ix->texts, &d->n_texts, &d->cap_texts, instruction, err);
    if (s < 0) return -1;
    if (d->n == d->cap) {
        size_t c = d->cap ? 2 * d->cap : 1024;
        ml_triplet *p = realloc(d->items, c * sizeof *p);
        if (!p) return ml_fail(err, "out of memory");
        d->items = p, d->cap = c;
    }
    d->items[d->n++] = (ml_triplet){(uint32_t)q, (uint32_t)t, (uint32_t)s};
    return 0;
}

static void warnf(ml_tdata_warn_fn warn, void *wctx, const char *fmt, ...) ML_PRINTF(3, 4);
static void warnf(ml_tdata_warn_fn warn, void *wctx, const char *fmt, ...) {
    if (!warn) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    warn(wctx, msg);
}

/* ---- JSONL ------------------------------------------------------------- */

/* An absolute image key: `p` as is when absolute, else relative to dir. */
static char *resolve(const char *dir, const char *p) {
    if (p[0] == '/') return strdup(p);
    size_t n = strlen(dir) + strlen(p) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s", dir, p);
    return s;
}

static const char *str_field(json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Parses one line; 1 = skipped (warned), 0 = added, -1 = fatal. */
static int jsonl_line(ml_tdata *d, const char *dir, const char *path, long lineno, char *line,
                      ml_tdata_warn_fn warn, void *wctx, ml_error *err) {
    json_error_t je;
    json_t *o = json_loads(line, 0, &je);
    const char *q = NULL, *t = NULL, *s = NULL;
    if (!json_is_object(o)) {
        warnf(warn, wctx, "%s line %ld: not a JSON object (%s)", path, lineno,
              o ? "another JSON value" : je.text);
    } else if (!(q = str_field(o, "query_image")) || !(t = str_field(o, "target_image")) ||
               !(s = str_field(o, "instruction"))) {
        warnf(warn, wctx,
              "%s line %ld: needs string fields query_image, instruction, "
              "target_image",
              path, lineno);
    } else if (!*q || !*t) {
        warnf(warn, wctx, "%s line %ld: empty image path", path, lineno);
        q = NULL;
    } else if (strlen(s) > MAX_TEXT_BYTES) {
        warnf(warn, wctx, "%s line %ld: instruction over %d bytes", path, lineno, MAX_TEXT_BYTES);
        q = NULL;
    }
    int rc = 1;
    if (q && t && s) {
        char *qa = resolve(dir, q), *ta = resolve(dir, t);
        rc = qa && ta ? add_triplet(d, qa, s, ta, err) : ml_fail(err, "out of memory");
        free(qa), free(ta);
    }
    json_decref(o);
    return rc;
}

static int load_jsonl(ml_tdata *d, const char *path, ml_tdata_warn_fn warn, void *wctx,
                      ml_error *err) {
    FILE *f = fopen(path, "r");
    if (!f) return ml_fail(err, "%s: cannot open: %s", path, strerror(errno));
    char *copy = strdup(path), *line = NULL;
    char *dir = copy ? dirname(copy) : NULL;
    size_t cap = 0;
    long lineno = 0;
    int rc = dir ? 0 : ml_fail(err, "out of memory");
    ssize_t len;
    while (rc == 0 && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (len == 0) continue;
        int r = jsonl_line(d, dir, path, lineno, line, warn, wctx, err);
        if (r < 0) rc = -1;
        if (r == 1) d->skipped++;
    }
    if (rc == 0 && ferror(f)) rc = ml_fail(err, "%s: read error", path);
    free(line), free(copy);
    fclose(f);
    return rc;
}

/* ---- WebDataset tars ---------------------------------------------------- */

typedef struct wds_sample {
    char *key, *query, *target, *text; /* member names / instruction text */
} wds_sample;

static void sample_clear(wds_sample *s) {
    free(s->key), free(s->query), free(s->target), free(s->text);
    memset(s, 0, sizeof *s);
}

/* The instruction in a .txt or .json member. */
static char *read_instruction(struct archive *a, const char *name, int64_t size) {
    if (size < 0 || size > MAX_SMALL_MEMBER) return NULL;
    char *buf = malloc((size_t)size + 1);
    if (!buf) return NULL;
    la_ssize_t got = archive_read_data(a, buf, (size_t)size);
    if (got != size) {
        free(buf);
        return NULL;
    }
    buf[size] = 0;
    if (strstr(name, ".json")) {
        json_t *o = json_loads(buf, 0, NULL);
        const char *s = json_is_object(o) ? str_field(o, "instruction") : NULL;
        char *r = s ? strdup(s) : NULL;
        json_decref(o);
        free(buf);
        return r;
    }
    size_t n = strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) buf[--n] = 0;
    return buf;
}

/* Adds the finished sample (or reports why it is skipped). */
static int flush_sample(ml_tdata *d, const char *tar, wds_sample *s, ml_tdata_warn_fn warn,
                        void *wctx, ml_error *err) {
    int rc = 0;
    if (!s->key) return 0;
    if (!s->query || !s->target || !s->text) {
        warnf(warn, wctx, "%s: sample %s lacks %s", tar, s->key,
              !s->query    ? "a .query image"
              : !s->target ? "a .target image"
                           : "an instruction");
        d->skipped++;
    } else {
        size_t n = strlen(tar) + 2 * strlen(ML_TAR_SEP) + strlen(s->query) + strlen(s->target) + 1;
        char *q = malloc(n), *t = malloc(n);
        if (!q || !t)
            rc = ml_fail(err, "out of memory");
        else {
            snprintf(q, n, "%s%s%s", tar, ML_TAR_SEP, s->query);
            snprintf(t, n, "%s%s%s", tar, ML_TAR_SEP, s->target);
            rc = add_triplet(d, q, s->text, t, err);
        }
        free(q), free(t);
    }
    sample_clear(s);
    return rc;
}

static int member_role(const char *name, const char *dot) {
    if (!strncmp(dot, ".query.", 7) && ml_is_image_name(name)) return 1;
    if (!strncmp(dot, ".target.", 8) && ml_is_image_name(name)) return 2;
    if (!strcmp(dot, ".txt") || !strcmp(dot, ".instruction.txt") || !strcmp(dot, ".json")) return 3;
    return 0;
}

static int load_tar(ml_tdata *d, const char *tar, ml_tdata_warn_fn warn, void *wctx,
                    ml_error *err) {
    struct archive *a = archive_read_new();
    if (!a) return ml_fail(err, "out of memory");
    archive_read_support_format_tar(a);
    if (archive_read_open_filename(a, tar, 1 << 16) != ARCHIVE_OK) {
        ml_fail(err, "%s: cannot open tar: %s", tar, archive_error_string(a));
        archive_read_free(a);
        return -1;
    }
    wds_sample s = {0};
    struct archive_entry *e;
    int rc = 0, r;
    while (rc == 0 && (r = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
        const char *name = archive_entry_pathname(e);
        if (!name || archive_entry_filetype(e) != AE_IFREG) continue;
        const char *base = strrchr(name, '/') ? strrchr(name, '/') + 1 : name;
        const char *dot = strchr(base, '.');
        if (!dot) continue;
        size_t klen = (size_t)(dot - name);
        if (!s.key || strlen(s.key) != klen || strncmp(s.key, name, klen) != 0) {
            rc = flush_sample(d, tar, &s, warn, wctx, err);
            if (rc == 0 && !(s.key = strndup(name, klen))) rc = ml_fail(err, "out of memory");
            if (rc) break;
        }
        int role = member_role(name, dot);
        char **slot = role == 1 ? &s.query : role == 2 ? &s.target : NULL;
        if (slot && !*slot && !(*slot = strdup(name))) rc = ml_fail(err, "out of memory");
        if (role == 3 && !s.text) {
            s.text = read_instruction(a, name, archive_entry_size(e));
            if (!s.text) warnf(warn, wctx, "%s: %s: unreadable instruction", tar, name);
        }
    }
    if (rc == 0 && r != ARCHIVE_EOF)
        rc = ml_fail(err, "%s: corrupt tar: %s", tar, archive_error_string(a));
    if (rc == 0) rc = flush_sample(d, tar, &s, warn, wctx, err);
    sample_clear(&s);
    archive_read_free(a);
    return rc;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int load_folder(ml_tdata *d, const char *dir, ml_tdata_warn_fn warn, void *wctx,
                       ml_error *err) {
    DIR *dh = opendir(dir);
    if (!dh) return ml_fail(err, "%s: cannot open folder: %s", dir, strerror(errno));
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(dh))) {
        if (de->d_name[0] == '.' || !ends_with(de->d_name, ".tar")) continue;
        if (n == cap) {
            char **p = realloc(names, (cap = cap ? 2 * cap : 64) * sizeof *p);
            if (!p)
                rc = ml_fail(err, "out of memory");
            else
                names = p;
        }
        if (rc == 0 && !(names[n++] = resolve(dir, de->d_name))) rc = ml_fail(err, "out of memory");
    }
    closedir(dh);
    if (rc == 0 && n == 0) rc = ml_fail(err, "%s: no .tar shards in the folder", dir);
    if (rc == 0) qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        if (rc == 0) rc = load_tar(d, names[i], warn, wctx, err);
        free(names[i]);
    }
    free(names);
    return rc;
}

/* ---- the dataset ----------------------------------------------------------
 */

static int index_init(ml_tdata *d, ml_error *err) {
    tdata_index *ix = calloc(1, sizeof *ix);
    if (!ix) return ml_fail(err, "out of memory");
    d->index = ix;
    ix->images.names = &d->images;
    ix->texts.names = &d->texts;
    if (ml_table_init(&ix->images.table, 1024, name_hash, &d->images, err) != 0 ||
        ml_table_init(&ix->texts.table, 1024, name_hash, &d->texts, err) != 0)
        return -1;
    return intern(&ix->texts, &d->n_texts, &d->cap_texts, "", err) == 0 ? 0 : -1;
}

int ml_tdata_load(ml_tdata *d, const char *path, ml_tdata_warn_fn warn, void *wctx, ml_error *err) {
    memset(d, 0, sizeof *d);
    char *abs = ml_abs_path(path);
    if (!abs) return ml_fail(err, "%s: cannot resolve path", path);
    struct stat st;
    int rc = index_init(d, err);
    if (rc == 0 && stat(abs, &st) != 0)
        rc = ml_fail(err, "%s: %s", path, strerror(errno));
    else if (rc == 0 && S_ISDIR(st.st_mode))
        rc = load_folder(d, abs, warn, wctx, err);
    else if (rc == 0 && ends_with(abs, ".tar"))
        rc = load_tar(d, abs, warn, wctx, err);
    else if (rc == 0)
        rc = load_jsonl(d, abs, warn, wctx, err);
    free(abs);
    if (rc == 0 && d->n == 0) rc = ml_fail(err, "%s: no usable triplets", path);
    if (rc == 0 && d->n > UINT32_MAX) rc = ml_fail(err, "%s: over 2^32 triplets", path);
    if (rc != 0) ml_tdata_free(d);
    return rc;
}

void ml_tdata_free(ml_tdata *d) {
    tdata_index *ix = d->index;
    if (ix) {
        ml_table_free(&ix->images.table);
        ml_table_free(&ix->texts.table);
        free(ix);
    }
    for (size_t i = 0; i < d->n_images; i++) free(d->images[i]);
    for (size_t i = 0; i < d->n_texts; i++) free(d->texts[i]);
    free(d->images), free(d->texts), free(d->items);
    memset(d, 0, sizeof *d);
}

/* ---- order ------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

void ml_tdata_order(size_t n, uint64_t seed, int64_t epoch, uint32_t *perm) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ULL + (uint64_t)epoch;
    for (size_t i = 0; i < n; i++) perm[i] = (uint32_t)i;
    for (size_t i = n; i > 1; i--) {
        /* j uniform in [0, i): the top bits of a 64-bit draw times i */
        size_t j = (size_t)(((unsigned __int128)splitmix64(&s) * i) >> 64);
        uint32_t t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
}

/* ---- image loading ----------------------------------------------------- */

typedef struct load_job {
    const ml_tdata *d;
    int n, size, workers;
    const uint32_t *ids;
    float *const *pixels;
    int *ok;
    char **msgs;
    int w; /* this worker's number */
} load_job;

static void load_one(const load_job *j, ml_source_reader *r, int i) {
    const char *key = j->d->images[j->ids[i]];
    uint8_t *bytes = NULL;
    size_t len = 0;
    ml_image img = {0};
    ml_error err = {{0}};
    int rc = ml_source_read(r, key, &bytes, &len, &err);
    if (rc == 0) rc = ml_image_decode(bytes, len, 0, &img, &err);
    if (rc == 0) rc = ml_preprocess_image(&img, j->size, j->pixels[i], &err);
    free(bytes);
    ml_image_free(&img);
    j->ok[i] = rc == 0;
    if (rc != 0 && j->msgs) {
        size_t n = strlen(key) + strlen(err.msg) + 4;
        if ((j->msgs[i] = malloc(n))) snprintf(j->msgs[i], n, "%s: %s", key, err.msg);
    }
}

static void *load_worker(void *arg) {
    load_job *j = arg;
    ml_source_reader *r = ml_source_reader_new();
    for (int i = j->w; i < j->n; i += j->workers) {
        if (r)
            load_one(j, r, i);
        else
            j->ok[i] = 0;
    }
    ml_source_reader_free(r);
    return NULL;
}

int ml_tdata_load_images(const ml_tdata *d, int n, const uint32_t *ids, int size, int workers,
                         float *const *pixels, int *ok, char **msgs) {
    enum { MAX_WORKERS = 64 };
    if (workers > n) workers = n;
    if (workers > MAX_WORKERS) workers = MAX_WORKERS;
    if (workers < 1) workers = 1;
    if (msgs)
        for (int i = 0; i < n; i++) msgs[i] = NULL;
    load_job jobs[MAX_WORKERS];
    pthread_t th[MAX_WORKERS];
    int started[MAX_WORKERS] = {0};
    for (int w = 0; w < workers; w++)
        jobs[w] = (load_job){d, n, size, workers, ids, pixels, ok, msgs, w};
    for (int w = 1; w < workers; w++)
        started[w] = pthread_create(&th[w], NULL, load_worker, &jobs[w]) == 0;
    load_worker(&jobs[0]);
    for (int w = 1; w < workers; w++) {
        if (started[w])
            pthread_join(th[w], NULL);
        else
            load_worker(&jobs[w]); /* no thread: do its share here */
    }
    int all = 1;
    for (int i = 0; i < n; i++) all &= ok[i] != 0;
    return all ? 0 : -1;
}
