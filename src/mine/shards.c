/* shards.c - tar shard writer and reader on libarchive (see shards.h). */
#include "mine/shards.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/fileio.h"

#define MAX_MEMBER (512u << 20) /* a larger member means a damaged or foreign tar */

void ml_shard_path(char *buf, size_t cap, const char *dir, int index) {
    snprintf(buf, cap, "%s/shard-%06d.tar", dir, index);
}

/* ---- writer --------------------------------------------------------------- */

struct ml_shard_writer {
    struct archive *a;
    struct archive_entry *e;
    int fd, samples;
    char *dir, path[4096], tmp[4100];
};

ml_shard_writer *ml_shard_writer_open(const char *dir, int index, ml_error *err) {
    ml_shard_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->dir = strdup(dir))) {
        free(w);
        ml_fail(err, "out of memory");
        return NULL;
    }
    ml_shard_path(w->path, sizeof w->path, dir, index);
    snprintf(w->tmp, sizeof w->tmp, "%s.tmp", w->path);
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        ml_fail(err, "%s: cannot create: %s", w->tmp, strerror(errno));
        free(w->dir), free(w);
        return NULL;
    }
    w->a = archive_write_new();
    w->e = archive_entry_new();
    if (!w->a || !w->e || archive_write_set_format_ustar(w->a) != ARCHIVE_OK ||
        archive_write_add_filter_none(w->a) != ARCHIVE_OK ||
        archive_write_open_fd(w->a, w->fd) != ARCHIVE_OK) {
        ml_fail(err, "%s: cannot start the tar: %s", w->tmp,
                w->a ? archive_error_string(w->a) : "out of memory");
        ml_shard_writer_abort(w);
        return NULL;
    }
    return w;
}

static int add_member(ml_shard_writer *w, const char *name, const void *data, size_t len,
                      ml_error *err) {
    struct archive_entry *e = w->e;
    archive_entry_clear(e);
    archive_entry_set_pathname(e, name);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_size(e, (la_int64_t)len);
    archive_entry_set_mtime(e, 0, 0); /* fixed: equal samples give equal shards */
    if (archive_write_header(w->a, e) != ARCHIVE_OK ||
        (len && archive_write_data(w->a, data, len) != (la_ssize_t)len))
        return ml_fail(err, "%s: %s: write failed: %s", w->tmp, name, archive_error_string(w->a));
    return 0;
}

int ml_shard_writer_add(ml_shard_writer *w, const char *key, const char *ext, const void *data,
                        size_t len, const char *meta_json, ml_error *err) {
    char name[256];
    snprintf(name, sizeof name, "%s.%s", key, ext);
    if (add_member(w, name, data, len, err)) return -1;
    snprintf(name, sizeof name, "%s.json", key);
    if (add_member(w, name, meta_json, strlen(meta_json), err)) return -1;
    w->samples++;
    return 0;
}

int ml_shard_writer_samples(const ml_shard_writer *w) { return w->samples; }

static void writer_free(ml_shard_writer *w) {
    if (w->a) archive_write_free(w->a);
    if (w->e) archive_entry_free(w->e);
    if (w->fd >= 0) close(w->fd);
    free(w->dir);
    free(w);
}

int ml_shard_writer_finish(ml_shard_writer *w, ml_error *err) {
    int rc = 0;
    if (archive_write_close(w->a) != ARCHIVE_OK)
        rc = ml_fail(err, "%s: write failed: %s", w->tmp, archive_error_string(w->a));
    else if (fsync(w->fd) != 0)
        rc = ml_fail(err, "%s: fsync failed: %s", w->tmp, strerror(errno));
    else if (close(w->fd) != 0)
        rc = ml_fail(err, "%s: close failed: %s", w->tmp, strerror(errno));
    else if (w->fd = -1, rename(w->tmp, w->path) != 0)
        rc = ml_fail(err, "%s: rename failed: %s", w->path, strerror(errno));
    else
        rc = ml_fsync_dir(w->dir, err);
    if (rc) unlink(w->tmp);
    writer_free(w);
    return rc;
}

void ml_shard_writer_abort(ml_shard_writer *w) {
    if (!w) return;
    unlink(w->tmp);
    writer_free(w);
}

/* ---- reader --------------------------------------------------------------- */

typedef struct member {
    char *name;
    uint8_t *data;
    size_t len;
} member;

struct ml_shard_reader {
    char **paths;
    size_t n, next;
    const char *cur; /* paths[next - 1] while a is open */
    struct archive *a;
    member hold; /* read ahead: the first member of the next sample */
    /* the sample handed out */
    char *key;
    member img;
    json_t *meta;
};

static void member_free(member *m) {
    free(m->name), free(m->data);
    memset(m, 0, sizeof *m);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int is_shard_name(const char *s) {
    size_t n = strlen(s);
    return n > 10 && !strncmp(s, "shard-", 6) && !strcmp(s + n - 4, ".tar");
}

static int add_path(ml_shard_reader *r, size_t *cap, const char *dir, const char *name) {
    if (r->n == *cap) {
        size_t nc = *cap ? 2 * *cap : 16;
        char **v = realloc(r->paths, nc * sizeof *v);
        if (!v) return -1;
        r->paths = v, *cap = nc;
    }
    size_t len = strlen(name) + (dir ? strlen(dir) + 2 : 1);
    if (!(r->paths[r->n] = malloc(len))) return -1;
    if (dir)
        snprintf(r->paths[r->n], len, "%s/%s", dir, name);
    else
        memcpy(r->paths[r->n], name, len);
    r->n++;
    return 0;
}

ml_shard_reader *ml_shard_reader_open(const char *path, ml_error *err) {
    ml_shard_reader *r = calloc(1, sizeof *r);
    if (!r) {
        ml_fail(err, "out of memory");
        return NULL;
    }
    struct stat sb;
    size_t cap = 0;
    int rc = 0;
    if (stat(path, &sb) != 0) {
        rc = ml_fail(err, "%s: %s", path, strerror(errno));
    } else if (!S_ISDIR(sb.st_mode)) {
        rc = add_path(r, &cap, NULL, path) ? ml_fail(err, "out of memory") : 0;
    } else {
        DIR *d = opendir(path);
        if (!d) rc = ml_fail(err, "%s: cannot open folder: %s", path, strerror(errno));
        struct dirent *de;
        while (d && rc == 0 && (de = readdir(d)))
            if (is_shard_name(de->d_name) && add_path(r, &cap, path, de->d_name))
                rc = ml_fail(err, "out of memory");
        if (d) closedir(d);
        if (rc == 0) qsort(r->paths, r->n, sizeof *r->paths, cmp_str);
    }
    if (rc) {
        ml_shard_reader_close(r);
        return NULL;
    }
    return r;
}

static void sample_clear(ml_shard_reader *r) {
    free(r->key), r->key = NULL;
    member_free(&r->img);
    json_decref(r->meta), r->meta = NULL;
}

void ml_shard_reader_close(ml_shard_reader *r) {
    if (!r) return;
    sample_clear(r);
    member_free(&r->hold);
    if (r->a) archive_read_free(r->a);
    for (size_t i = 0; i < r->n; i++) free(r->paths[i]);
    free(r->paths);
    free(r);
}

/* The next regular member of the open tar: 1 got, 0 end of the tar, -1 error. */
static int read_member(ml_shard_reader *r, member *m, ml_error *err) {
    struct archive_entry *e;
    for (;;) {
        int ar = archive_read_next_header(r->a, &e);
        if (ar == ARCHIVE_EOF) return 0;
        if (ar != ARCHIVE_OK && ar != ARCHIVE_WARN)
            return ml_fail(err, "%s: damaged tar: %s", r->cur, archive_error_string(r->a));
        if (archive_entry_filetype(e) == AE_IFREG) break;
    }
    const char *name = archive_entry_pathname(e);
    la_int64_t size = archive_entry_size(e);
    if (!name) return ml_fail(err, "%s: a member without a name", r->cur);
    if (size < 0 || size > MAX_MEMBER)
        return ml_fail(err, "%s: %s: bad size %lld", r->cur, name, (long long)size);
    m->len = (size_t)size;
    if (!(m->name = strdup(name)) || !(m->data = malloc(m->len ? m->len : 1))) {
        member_free(m);
        return ml_fail(err, "out of memory");
    }
    if (m->len && archive_read_data(r->a, m->data, m->len) != (la_ssize_t)m->len) {
        ml_fail(err, "%s: %s: cut short: %s", r->cur, name, archive_error_string(r->a));
        member_free(m);
        return -1;
    }
    return 1;
}

/* The key of a member name (up to the first '.' of its last path part) and
 * its extension (after that '.'). */
static size_t key_len(const char *name, const char **ext) {
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    const char *dot = strchr(base, '.');
    *ext = dot ? dot + 1 : "";
    return dot ? (size_t)(dot - name) : strlen(name);
}

static int is_image_ext(const char *ext) {
    static const char *const v[] = {"jpg", "jpeg", "png", "webp", "gif"};
    for (size_t i = 0; i < sizeof v / sizeof *v; i++)
        if (!strcasecmp(ext, v[i])) return 1;
    return 0;
}

/* Adds member m (ownership taken) to the sample being assembled. */
static int take_member(ml_shard_reader *r, member *m, ml_error *err) {
    const char *ext;
    size_t kl = key_len(m->name, &ext);
    if (!r->key && !(r->key = strndup(m->name, kl))) return ml_fail(err, "out of memory");
    if (!strcasecmp(ext, "json")) {
        if (r->meta) return ml_fail(err, "%s: %s: a second JSON for the sample", r->cur, m->name);
        json_error_t je;
        r->meta = json_loadb((const char *)m->data, m->len, 0, &je);
        if (!json_is_object(r->meta))
            return ml_fail(err, "%s: %s: not a JSON object (%s)", r->cur, m->name,
                           r->meta ? "another value" : je.text);
        member_free(m);
    } else if (is_image_ext(ext)) {
        if (r->img.name)
            return ml_fail(err, "%s: %s: a second image for the sample", r->cur, m->name);
        r->img = *m;
        memset(m, 0, sizeof *m);
    } else {
        member_free(m); /* other members (WebDataset allows more) are skipped */
    }
    return 0;
}

static int finish_sample(ml_shard_reader *r, ml_shard_sample *s, ml_error *err) {
    if (!r->img.name || !r->meta)
        return ml_fail(err, "%s: sample %s has no %s", r->cur, r->key,
                       r->img.name ? "JSON metadata" : "image");
    json_t *g = json_object_get(r->meta, "group"), *i = json_object_get(r->meta, "index");
    if (!json_is_integer(g) || !json_is_integer(i))
        return ml_fail(err, "%s: %s.json: no integer group and index", r->cur, r->key);
    const char *ext;
    key_len(r->img.name, &ext);
    *s = (ml_shard_sample){.shard = r->cur,
                           .key = r->key,
                           .ext = ext,
                           .data = r->img.data,
                           .len = r->img.len,
                           .meta = r->meta,
                           .group = (long long)json_integer_value(g),
                           .index = (int)json_integer_value(i)};
    return 1;
}

int ml_shard_reader_next(ml_shard_reader *r, ml_shard_sample *s, ml_error *err) {
    sample_clear(r);
    for (;;) {
        if (!r->a) {
            if (r->next == r->n) return 0;
            r->cur = r->paths[r->next++];
            r->a = archive_read_new();
            if (!r->a) return ml_fail(err, "out of memory");
            archive_read_support_format_tar(r->a);
            if (archive_read_open_filename(r->a, r->cur, 1 << 16) != ARCHIVE_OK)
                return ml_fail(err, "%s: cannot open: %s", r->cur, archive_error_string(r->a));
        }
        member m = {0};
        int got = 1;
        if (r->hold.name)
            m = r->hold, memset(&r->hold, 0, sizeof r->hold);
        else if ((got = read_member(r, &m, err)) < 0)
            return -1;
        if (!got) { /* end of this tar: a sample never spans two */
            int rc = r->key ? finish_sample(r, s, err) : 0;
            archive_read_free(r->a), r->a = NULL;
            if (rc) return rc;
            continue;
        }
        const char *ext;
        size_t kl = key_len(m.name, &ext);
        if (r->key && (strlen(r->key) != kl || strncmp(r->key, m.name, kl))) {
            r->hold = m;
            return finish_sample(r, s, err);
        }
        int rc = take_member(r, &m, err);
        member_free(&m);
        if (rc) return rc;
    }
}
