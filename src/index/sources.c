/* sources.c - folders, image files, tar shards and list files. */
#include "index/sources.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/fileio.h"

#define MAX_IMAGE_BYTES (512LL << 20) /* larger files are refused, not read */
#define MAX_LIST_DEPTH 4              /* a list may name lists, but not forever */

static const char *const IMAGE_EXT[] = {".jpg", ".jpeg", ".png", ".webp", ".gif"};

static int has_suffix(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcasecmp(s + a - b, suf) == 0;
}

int ml_is_image_name(const char *name) {
    for (size_t i = 0; i < sizeof IMAGE_EXT / sizeof *IMAGE_EXT; i++)
        if (has_suffix(name, IMAGE_EXT[i])) return 1;
    return 0;
}

static int64_t mtime_ns(const struct stat *st) {
    return (int64_t)st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec;
}

char *ml_abs_path(const char *p) {
    char *r = realpath(p, NULL);
    if (r) return r;
    /* Gone (or never there): make it absolute without resolving links. */
    if (p[0] == '/') return strdup(p);
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd)) return strdup(p);
    size_t n = strlen(cwd) + strlen(p) + 2;
    char *a = malloc(n);
    if (a) snprintf(a, n, "%s/%s", cwd, p[0] == '.' && p[1] == '/' ? p + 2 : p);
    return a;
}

static int push(ml_source_list *l, char *path, uint64_t size, int64_t mt, int member,
                ml_error *err) {
    if (!path) return ml_fail(err, "out of memory");
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 256;
        ml_source *g = realloc(l->items, cap * sizeof *g);
        if (!g) {
            free(path);
            return ml_fail(err, "out of memory");
        }
        l->items = g, l->cap = cap;
    }
    l->items[l->n++] = (ml_source){path, size, mt, member};
    return 0;
}

static char *join(const char *a, const char *sep, const char *b) {
    size_t n = strlen(a) + strlen(sep) + strlen(b) + 1;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s%s%s", a, sep, b);
    return p;
}

static void warnf(ml_warn_fn warn, void *ctx, const char *fmt, const char *a, const char *b) {
    if (!warn) return;
    char msg[1024];
    snprintf(msg, sizeof msg, fmt, a, b);
    warn(ctx, msg);
}

/* ---- tar ---------------------------------------------------------------- */

static struct archive *open_tar(const char *path, ml_error *err) {
    struct archive *a = archive_read_new();
    if (!a) {
        ml_fail(err, "out of memory");
        return NULL;
    }
    archive_read_support_format_tar(a);
    archive_read_support_format_gnutar(a);
    if (archive_read_open_filename(a, path, 1 << 16) != ARCHIVE_OK) {
        ml_fail(err, "%s: cannot open tar: %s", path, archive_error_string(a));
        archive_read_free(a);
        return NULL;
    }
    return a;
}

static int add_tar(ml_source_list *l, const char *abs, ml_error *err) {
    struct archive *a = open_tar(abs, err);
    if (!a) return -1;
    struct archive_entry *e;
    int r, rc = 0;
    while (rc == 0 && (r = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
        const char *name = archive_entry_pathname(e);
        if (archive_entry_filetype(e) != AE_IFREG || !name || !ml_is_image_name(name)) continue;
        int64_t mt = (int64_t)archive_entry_mtime(e) * 1000000000LL + archive_entry_mtime_nsec(e);
        rc = push(l, join(abs, ML_TAR_SEP, name), (uint64_t)archive_entry_size(e), mt, 1, err);
    }
    if (rc == 0 && r != ARCHIVE_EOF)
        rc = ml_fail(err, "%s: corrupt tar: %s", abs, archive_error_string(a));
    archive_read_free(a);
    return rc;
}

/* ---- folders -------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int add_any(ml_source_list *l, const char *abs, int depth, int in_walk, ml_warn_fn warn,
                   void *wctx, ml_error *err);

static int walk(ml_source_list *l, const char *dir, ml_warn_fn warn, void *wctx, ml_error *err) {
    DIR *d = opendir(dir);
    if (!d) {
        warnf(warn, wctx, "%s: cannot read folder: %s", dir, strerror(errno));
        return 0;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    int rc = 0;
    while (rc == 0 && (de = readdir(d))) {
        if (de->d_name[0] == '.') continue; /* hidden, "." and ".." */
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **g = realloc(names, cap * sizeof *g);
            if (!g) rc = ml_fail(err, "out of memory");
            else names = g;
        }
        if (rc == 0 && !(names[n++] = strdup(de->d_name))) rc = ml_fail(err, "out of memory");
    }
    closedir(d);
    if (names) qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        char *p = rc == 0 ? join(dir, strcmp(dir, "/") ? "/" : "", names[i]) : NULL;
        if (rc == 0) rc = p ? add_any(l, p, 0, 1, warn, wctx, err) : ml_fail(err, "out of memory");
        free(p);
        free(names[i]);
    }
    free(names);
    return rc;
}

/* ---- list files ------------------------------------------------------------ */

static int add_list(ml_source_list *l, const char *abs, int depth, ml_warn_fn warn, void *wctx,
                    ml_error *err) {
    if (depth >= MAX_LIST_DEPTH) return ml_fail(err, "%s: lists nested too deeply", abs);
    FILE *f = fopen(abs, "r");
    if (!f) return ml_fail(err, "%s: cannot open: %s", abs, strerror(errno));
    char *dir = strdup(abs), *line = NULL;
    char *slash = dir ? strrchr(dir, '/') : NULL;
    if (slash) *slash = 0;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0;
    int rc = dir ? 0 : ml_fail(err, "out of memory");
    while (rc == 0 && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (len == 0 || line[0] == '#') continue;
        if (memchr(line, 0, (size_t)len)) {
            rc = ml_fail(err, "%s:%ld: NUL byte in path", abs, lineno);
            break;
        }
        char *p = line[0] == '/' ? strdup(line) : join(dir, "/", line);
        char *ap = p ? ml_abs_path(p) : NULL;
        free(p);
        if (!ap) rc = ml_fail(err, "out of memory");
        else if (add_any(l, ap, depth + 1, 0, warn, wctx, err) != 0)
            rc = ml_fail_prefix(err, "%s:%ld", abs, lineno);
        free(ap);
    }
    free(line);
    free(dir);
    fclose(f);
    return rc;
}

/* in_walk: found while walking a folder (skip what is not an image; report
 * unreadable files as warnings) rather than named by the user. */
static int add_any(ml_source_list *l, const char *abs, int depth, int in_walk, ml_warn_fn warn,
                   void *wctx, ml_error *err) {
    struct stat st, lst;
    if (stat(abs, &st) != 0) {
        if (in_walk) {
            warnf(warn, wctx, "%s: %s", abs, strerror(errno));
            return 0;
        }
        return ml_fail(err, "%s: %s", abs, strerror(errno));
    }
    if (S_ISDIR(st.st_mode)) {
        if (in_walk && (lstat(abs, &lst) != 0 || S_ISLNK(lst.st_mode))) return 0; /* no loops */
        if (in_walk && has_suffix(abs, ".mlindex")) return 0;
        return walk(l, abs, warn, wctx, err);
    }
    if (!S_ISREG(st.st_mode)) {
        if (in_walk) return 0;
        return ml_fail(err, "%s: not a file or folder", abs);
    }
    if (ml_is_image_name(abs)) {
        char *p = strdup(abs);
        return push(l, p, (uint64_t)st.st_size, mtime_ns(&st), 0, err);
    }
    if (has_suffix(abs, ".tar")) {
        if (add_tar(l, abs, err) == 0) return 0;
        if (!in_walk) return -1;
        warn(wctx, err->msg);
        return 0;
    }
    if (in_walk) return 0;
    return add_list(l, abs, depth, warn, wctx, err);
}

int ml_sources_add(ml_source_list *l, const char *arg, ml_warn_fn warn, void *wctx,
                   ml_error *err) {
    char *abs = realpath(arg, NULL);
    if (!abs) return ml_fail(err, "%s: %s", arg, strerror(errno));
    int rc = add_any(l, abs, 0, 0, warn, wctx, err);
    free(abs);
    return rc;
}

static int cmp_source(const void *a, const void *b) {
    return strcmp(((const ml_source *)a)->path, ((const ml_source *)b)->path);
}

void ml_sources_finish(ml_source_list *l) {
    if (!l->n) return;
    qsort(l->items, l->n, sizeof *l->items, cmp_source);
    size_t k = 1;
    for (size_t i = 1; i < l->n; i++) {
        if (strcmp(l->items[i].path, l->items[k - 1].path) == 0) free(l->items[i].path);
        else l->items[k++] = l->items[i];
    }
    l->n = k;
}

void ml_sources_free(ml_source_list *l) {
    for (size_t i = 0; i < l->n; i++) free(l->items[i].path);
    free(l->items);
    l->items = NULL, l->n = l->cap = 0;
}

/* ---- reading bytes ----------------------------------------------------------- */

struct ml_source_reader {
    struct archive *tar; /* the open archive, positioned after `last` */
    char *tar_path;
    char *last;          /* member name of the last entry read */
};

ml_source_reader *ml_source_reader_new(void) { return calloc(1, sizeof(ml_source_reader)); }

static void close_tar(ml_source_reader *r) {
    if (r->tar) archive_read_free(r->tar);
    free(r->tar_path), free(r->last);
    r->tar = NULL, r->tar_path = NULL, r->last = NULL;
}

void ml_source_reader_free(ml_source_reader *r) {
    if (!r) return;
    close_tar(r);
    free(r);
}

/* Positions the reader on `member`: searching forward from the current
 * entry (members are usually read in archive order), then once more from
 * the start. */
static int seek_member(ml_source_reader *r, const char *tar, const char *member, ml_error *err) {
    int restart = !r->tar || strcmp(r->tar_path, tar) != 0;
    for (int pass = restart ? 1 : 0; pass < 2; pass++) {
        if (pass == 1) {
            close_tar(r);
            if (!(r->tar = open_tar(tar, err))) return -1;
            if (!(r->tar_path = strdup(tar))) return ml_fail(err, "out of memory");
        }
        struct archive_entry *e;
        int a;
        while ((a = archive_read_next_header(r->tar, &e)) == ARCHIVE_OK) {
            const char *name = archive_entry_pathname(e);
            if (!name) continue;
            free(r->last);
            if (!(r->last = strdup(name))) return ml_fail(err, "out of memory");
            if (strcmp(name, member) == 0) return 0;
        }
        if (a != ARCHIVE_EOF) {
            ml_fail(err, "%s: corrupt tar: %s", tar, archive_error_string(r->tar));
            close_tar(r);
            return -1;
        }
    }
    return ml_fail(err, "%s: no member %s", tar, member);
}

static int read_member(ml_source_reader *r, const char *key, uint8_t **data, size_t *len,
                       ml_error *err) {
    const char *sep = strstr(key, ".tar" ML_TAR_SEP) + 4;
    char *tar = strndup(key, (size_t)(sep - key));
    if (!tar) return ml_fail(err, "out of memory");
    int rc = seek_member(r, tar, sep + strlen(ML_TAR_SEP), err);
    free(tar);
    if (rc != 0) return -1;
    const void *buf;
    size_t blen;
    la_int64_t off;
    uint8_t *out = NULL;
    size_t n = 0, cap = 0;
    int a;
    while ((a = archive_read_data_block(r->tar, &buf, &blen, &off)) == ARCHIVE_OK) {
        if ((long long)(n + blen) > MAX_IMAGE_BYTES) {
            free(out);
            return ml_fail(err, "%s: member too large", key);
        }
        if (n + blen > cap) {
            cap = (n + blen) * 2;
            uint8_t *g = realloc(out, cap);
            if (!g) {
                free(out);
                return ml_fail(err, "out of memory");
            }
            out = g;
        }
        memcpy(out + n, buf, blen);
        n += blen;
    }
    if (a != ARCHIVE_EOF) {
        free(out);
        ml_fail(err, "%s: corrupt tar member: %s", key, archive_error_string(r->tar));
        close_tar(r);
        return -1;
    }
    *data = out ? out : malloc(1), *len = n;
    return *data ? 0 : ml_fail(err, "out of memory");
}

int ml_source_read(ml_source_reader *r, const char *path, uint8_t **data, size_t *len,
                   ml_error *err) {
    *data = NULL, *len = 0;
    if (strstr(path, ".tar" ML_TAR_SEP)) return read_member(r, path, data, len, err);
    return ml_read_all(path, (size_t)MAX_IMAGE_BYTES, data, len, err);
}
