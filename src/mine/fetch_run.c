/* fetch_run.c - the `mine fetch` stage: pages.jsonl -> tar shards of the
 * downloaded, checked and deduplicated images (docs/mining-fetch.md).
 *
 *   magiclens mine fetch --pages pages.jsonl --output shards/ [options]
 *
 * Each line of pages.jsonl is a group (id = line index).  Its images are
 * downloaded concurrently (src/mine/fetch.c), decoded and checked as they
 * arrive; a group is decided and written only when it is complete and every
 * earlier group has been written, so the output never depends on the order
 * in which downloads finish.  Deduplication (pHash, src/mine/phash.c) is
 * done at that point, in input order.
 *
 * Resuming: OUTPUT/fetch.log is an append-only journal.  When a shard is
 * closed (fsync'ed and renamed into place) the records of the groups it
 * covers, with the hashes of their kept images, are appended and fsync'ed,
 * followed by a commit line.  A re-run reads the committed part, skips those
 * groups, restores the dedup index and the counters, removes anything
 * written after the last commit, and goes on with the next shard number:
 * the final shards are the same bytes as an uninterrupted run's. */
#include "mine/fetch_run.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/error.h"
#include "core/fileio.h"
#include "core/progress.h"
#include "mine/pages.h" /* ml_counts */
#include "mine/phash.h"
#include "mine/shards.h"

#define JOURNAL "fetch.log"
#define MAX_BUFFER (512ll << 20) /* downloaded bytes held for groups not yet written */
#define IDX_BITS 20              /* fetch tag = group << IDX_BITS | image index */
#define MAX_IMAGES ((1 << IDX_BITS) - 1)

typedef ml_mine_fetch_opts fetch_opts;

/* One image of a group while it is being fetched. */
typedef struct image {
    const char *why; /* drop reason (a static string), NULL while a candidate */
    uint8_t *data;
    size_t len;
    const char *format;
    char *final_url, *content_type;
    int w, h;
    uint64_t phash;
} image;

typedef struct group {
    long long id;
    json_t *page; /* NULL: the line is not a page */
    int n, left;  /* images, still downloading */
    image *img;
} group;

typedef struct run {
    const fetch_opts *o;
    ml_fetcher *f;
    group **win; /* ring of groups in input order */
    size_t whead, wn;
    long long wfirst; /* id of win[whead] */
    long long buffered;
    ml_phash_index *seen; /* kept images of earlier groups (dedup across the run) */
    ml_shard_writer *shard;
    int next_shard;
    int jfd;    /* the journal */
    char *jbuf; /* group records waiting for the next commit */
    size_t jlen, jcap;
    long long done; /* groups emitted (also those skipped when resuming) */
    /* counts, including the groups of earlier runs read from the journal */
    long long pages_in, pages_bad, images_in, images_kept, samples, shards, kept_bytes;
    long long groups_by_kept[12]; /* 0..10, then 11 = more */
    ml_counts dropped;
    /* this run */
    long long resumed, processed;
    ml_progress bar;
    ml_error *err;
    int failed;
} run;

/* The settings that decide which samples are written: a resumed run must
 * use the same (timeouts and concurrency may change). */
static json_t *settings_json(const fetch_opts *o) {
    static const char *const dedup[] = {"none", "page", "run"};
    return json_pack("{si sf si ss si sI sI}", "min_side", o->min_side, "max_aspect", o->max_aspect,
                     "phash_distance", o->phash_distance, "dedup", dedup[o->dedup], "shard_size",
                     o->shard_size, "max_bytes", (json_int_t)o->net.max_bytes, "max_pixels",
                     (json_int_t)o->max_pixels);
}

/* ---- the journal ----------------------------------------------------------- */

static int jappend(run *r, const char *s, size_t n) {
    if (r->jlen + n > r->jcap) {
        size_t cap = r->jcap ? r->jcap : 4096;
        while (cap < r->jlen + n) cap *= 2;
        char *b = realloc(r->jbuf, cap);
        if (!b) return ml_fail(r->err, "out of memory");
        r->jbuf = b, r->jcap = cap;
    }
    memcpy(r->jbuf + r->jlen, s, n);
    r->jlen += n;
    return 0;
}

static int jappend_json(run *r, json_t *j) {
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    if (!s) return ml_fail(r->err, "out of memory");
    int rc = jappend(r, s, strlen(s));
    free(s);
    return rc ? rc : jappend(r, "\n", 1);
}

/* Writes the waiting records and fsyncs: they are committed. */
static int jflush(run *r) {
    for (size_t off = 0; off < r->jlen;) {
        ssize_t w = write(r->jfd, r->jbuf + off, r->jlen - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            return ml_fail(r->err, "%s/%s: write failed: %s", r->o->output, JOURNAL,
                           strerror(errno));
        off += (size_t)w;
    }
    r->jlen = 0;
    if (fsync(r->jfd) != 0)
        return ml_fail(r->err, "%s/%s: fsync failed: %s", r->o->output, JOURNAL, strerror(errno));
    return 0;
}

/* Closes the open shard (if any), then commits the group records. */
static int commit(run *r) {
    json_t *c = json_pack("{sI so si}", "commit", (json_int_t)r->done, "shard",
                          r->shard ? json_integer(r->next_shard) : json_null(), "next_shard",
                          r->next_shard + (r->shard ? 1 : 0));
    if (r->shard) {
        ml_shard_writer *w = r->shard;
        r->shard = NULL;
        if (ml_shard_writer_finish(w, r->err)) {
            json_decref(c);
            return -1;
        }
        r->next_shard++, r->shards++;
    }
    if (jappend_json(r, c)) return -1;
    return jflush(r);
}

static void count_group(run *r, int kept) { r->groups_by_kept[kept < 11 ? kept : 11]++; }

/* Replays the committed part of the journal (see the file comment); returns
 * the journal's committed length, or -1. */
static long long replay(run *r, FILE *f, json_t *settings, const char *pages_hash, int *complete) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long long off = 0, committed = -1, lineno = 0;
    json_t *pend = json_array(); /* group records not yet committed */
    *complete = 0;
    while (!*complete && (n = getline(&line, &cap, f)) > 0) {
        lineno++;
        json_t *j = line[n - 1] == '\n' ? json_loadb(line, (size_t)n, 0, NULL) : NULL;
        if (!json_is_object(j)) { /* a torn last write: everything after is dropped */
            json_decref(j);
            break;
        }
        off += n;
        if (lineno == 1) {
            json_t *s = json_object_get(j, "settings");
            if (json_integer_value(json_object_get(j, "fetch_journal")) != 1 || !s) {
                json_decref(j);
                break;
            }
            const char *was = json_string_value(json_object_get(j, "pages_xxh3"));
            if (!was || strcmp(was, pages_hash)) {
                ml_fail(r->err,
                        "%s holds a run of another pages file (xxh3 %s, now %s): use another "
                        "output folder",
                        r->o->output, was ? was : "?", pages_hash);
                json_decref(j), json_decref(pend), free(line);
                return -1;
            }
            if (!json_equal(s, settings)) {
                char *a = json_dumps(s, JSON_COMPACT), *b = json_dumps(settings, JSON_COMPACT);
                ml_fail(r->err,
                        "%s holds a run with other settings (%s, now %s): use the same options "
                        "or another output folder",
                        r->o->output, a ? a : "?", b ? b : "?");
                free(a), free(b);
                json_decref(j), json_decref(pend), free(line);
                return -1;
            }
            committed = off;
        } else if (json_object_get(j, "group")) {
            json_array_append(pend, j);
        } else if (json_object_get(j, "commit")) {
            size_t i;
            json_t *g;
            json_array_foreach(pend, i, g) {
                json_t *why = json_object_get(g, "why"), *w, *h;
                size_t k;
                int kept = 0;
                r->pages_in++;
                if (json_is_true(json_object_get(g, "bad"))) r->pages_bad++;
                json_array_foreach(why, k, w) {
                    const char *s = json_string_value(w);
                    r->images_in++;
                    if (s && !strcmp(s, "kept"))
                        kept++;
                    else if (s)
                        ml_counts_add(&r->dropped, s, 1);
                }
                r->images_kept += kept, r->samples += kept;
                r->kept_bytes += json_integer_value(json_object_get(g, "kept_bytes"));
                count_group(r, kept);
                json_array_foreach(json_object_get(g, "phash"), k, h) {
                    uint64_t v;
                    if (json_is_string(h) && !ml_phash_parse(json_string_value(h), &v) && r->seen &&
                        ml_phash_index_add(r->seen, v)) {
                        json_decref(j), json_decref(pend), free(line);
                        return ml_fail(r->err, "out of memory");
                    }
                }
            }
            json_array_clear(pend);
            r->done = json_integer_value(json_object_get(j, "commit"));
            if (json_is_integer(json_object_get(j, "shard"))) r->shards++;
            r->next_shard = (int)json_integer_value(json_object_get(j, "next_shard"));
            if (json_is_true(json_object_get(j, "end"))) *complete = 1;
            committed = off;
        }
        json_decref(j);
    }
    json_decref(pend);
    free(line);
    if (committed < 0 && lineno <= 1 && off == 0)
        return 0; /* killed while the header was written: start afresh */
    if (committed < 0)
        return ml_fail(r->err, "%s/%s: not a fetch journal (remove it or use another folder)",
                       r->o->output, JOURNAL);
    return committed;
}

static int is_stale(const char *name, int next_shard) {
    size_t n = strlen(name);
    if (n > 4 && !strcmp(name + n - 4, ".tmp")) return 1;
    int k;
    char tail[8];
    return sscanf(name, "shard-%d.ta%7s", &k, tail) == 2 && !strcmp(tail, "r") && k >= next_shard;
}

/* Removes shard-*.tmp and shards written after the last commit. */
static int clean_folder(run *r) {
    DIR *d = opendir(r->o->output);
    if (!d) return ml_fail(r->err, "%s: %s", r->o->output, strerror(errno));
    struct dirent *de;
    int rc = 0;
    while (rc == 0 && (de = readdir(d))) {
        if (strncmp(de->d_name, "shard-", 6) || !is_stale(de->d_name, r->next_shard)) continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", r->o->output, de->d_name);
        if (unlink(p) != 0) rc = ml_fail(r->err, "%s: cannot remove: %s", p, strerror(errno));
    }
    closedir(d);
    return rc ? rc : ml_fsync_dir(r->o->output, r->err);
}

static int has_shards(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *de;
    int found = 0;
    while (d && !found && (de = readdir(d)))
        found = !strncmp(de->d_name, "shard-", 6) && !strstr(de->d_name, ".tmp");
    if (d) closedir(d);
    return found;
}

/* Opens (creating) the folder and journal; replays it.  *complete: an
 * earlier run finished. */
static int open_output(run *r, const char *pages_hash, int *complete) {
    const fetch_opts *o = r->o;
    if (mkdir(o->output, 0755) != 0 && errno != EEXIST)
        return ml_fail(r->err, "%s: cannot create: %s", o->output, strerror(errno));
    char jp[4096];
    snprintf(jp, sizeof jp, "%s/%s", o->output, JOURNAL);
    r->jfd = open(jp, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (r->jfd < 0) return ml_fail(r->err, "%s: cannot open: %s", jp, strerror(errno));
    if (flock(r->jfd, LOCK_EX | LOCK_NB) != 0)
        return ml_fail(r->err, "%s: another fetch is writing this folder", o->output);
    json_t *settings = settings_json(o);
    struct stat sb;
    long long keep = fstat(r->jfd, &sb) ? ml_fail(r->err, "%s: %s", jp, strerror(errno)) : 0;
    *complete = 0;
    if (keep == 0 && sb.st_size > 0) {
        FILE *f = fdopen(dup(r->jfd), "r");
        keep = f ? replay(r, f, settings, pages_hash, complete)
                 : ml_fail(r->err, "%s: %s", jp, strerror(errno));
        if (f) fclose(f);
    }
    if (keep == 0) { /* a new journal (or one cut inside its first line) */
        if (has_shards(o->output))
            keep = ml_fail(r->err, "%s holds shards but no %s: use an empty output folder",
                           o->output, JOURNAL);
        else if (ftruncate(r->jfd, 0) != 0 || lseek(r->jfd, 0, SEEK_SET) != 0)
            keep = ml_fail(r->err, "%s: cannot truncate: %s", jp, strerror(errno));
        else if (jappend_json(r, json_pack("{si ss ss sO}", "fetch_journal", 1, "pages", o->pages,
                                           "pages_xxh3", pages_hash, "settings", settings)) ||
                 jflush(r))
            keep = -1;
        else
            keep = lseek(r->jfd, 0, SEEK_END);
    }
    json_decref(settings);
    if (keep < 0) return -1;
    if (ftruncate(r->jfd, (off_t)keep) != 0 || lseek(r->jfd, 0, SEEK_END) < 0 || fsync(r->jfd))
        return ml_fail(r->err, "%s: cannot truncate: %s", jp, strerror(errno));
    return clean_folder(r);
}

/* ---- images ------------------------------------------------------------------ */

static group *group_at(run *r, long long id) {
    if (id < r->wfirst || id >= r->wfirst + (long long)r->wn) return NULL;
    return r->win[(r->whead + (size_t)(id - r->wfirst)) % (size_t)r->o->window];
}

static const char *jfield(json_t *o, const char *k) {
    return json_string_value(json_object_get(o, k));
}

/* Decodes and checks a downloaded image; its reason when dropped. */
static const char *check_image(run *r, image *im, group *g, int idx) {
    ml_image pix = {0};
    ml_error e = {{0}};
    if (ml_image_decode(im->data, im->len, r->o->max_pixels, &pix, &e)) {
        if (r->o->verbose)
            fprintf(stderr, "mine fetch: g%08lld_%03d: decode_error: %s\n", g->id, idx, e.msg);
        return "decode_error";
    }
    im->w = pix.width, im->h = pix.height;
    int lo = pix.width < pix.height ? pix.width : pix.height;
    int hi = pix.width < pix.height ? pix.height : pix.width;
    const char *why = lo < r->o->min_side                  ? "too_small"
                      : (double)hi > r->o->max_aspect * lo ? "aspect"
                      : ml_phash(&pix, &im->phash, &e)     ? "out_of_memory"
                                                           : NULL;
    ml_image_free(&pix);
    return why;
}

static void on_fetched(void *ctx, uint64_t tag, ml_fetch_result *res) {
    run *r = ctx;
    long long gid = (long long)(tag >> IDX_BITS);
    int idx = (int)(tag & MAX_IMAGES);
    group *g = group_at(r, gid);
    if (!g || idx >= g->n) return; /* cannot happen: every tag is ours */
    image *im = &g->img[idx];
    g->left--;
    if (res->reason) {
        im->why = res->reason;
        if (r->o->verbose)
            fprintf(stderr, "mine fetch: g%08lld_%03d %s: %s (%s)\n", gid, idx,
                    jfield(json_array_get(json_object_get(g->page, "images"), (size_t)idx), "url"),
                    res->reason, res->detail);
        return;
    }
    im->data = res->data, im->len = res->len, im->format = res->format;
    res->data = NULL;
    im->final_url = res->final_url ? strdup(res->final_url) : NULL;
    im->content_type = res->content_type ? strdup(res->content_type) : NULL;
    im->why = check_image(r, im, g, idx);
    if (im->why) {
        free(im->data), im->data = NULL;
        if (r->o->verbose && strcmp(im->why, "decode_error"))
            fprintf(stderr, "mine fetch: g%08lld_%03d: %s (%dx%d)\n", gid, idx, im->why, im->w,
                    im->h);
    } else {
        r->buffered += (long long)im->len;
    }
}

/* ---- groups -------------------------------------------------------------------- */

static void group_free(group *g) {
    if (!g) return;
    for (int i = 0; i < g->n; i++) {
        free(g->img[i].data), free(g->img[i].final_url), free(g->img[i].content_type);
    }
    free(g->img);
    json_decref(g->page);
    free(g);
}

/* Parses line `id` into a group and queues its images. */
static int admit(run *r, long long id, const char *line, size_t n) {
    group *g = calloc(1, sizeof *g);
    if (!g) return ml_fail(r->err, "out of memory");
    g->id = id;
    json_error_t je;
    g->page = json_loadb(line, n, 0, &je);
    json_t *imgs = json_object_get(g->page, "images");
    if (!json_is_object(g->page) || !json_is_array(imgs)) {
        fprintf(stderr, "%smagiclens mine fetch: warning: %s line %lld: %s (skipped)\n",
                r->bar.tty && r->bar.enabled ? "\n" : "", r->o->pages, id + 1,
                g->page ? "not a page object with an \"images\" array" : je.text);
        json_decref(g->page), g->page = NULL;
    }
    size_t ni = g->page ? json_array_size(imgs) : 0;
    g->n = (int)(ni > MAX_IMAGES ? MAX_IMAGES : ni);
    if (g->n && !(g->img = calloc((size_t)g->n, sizeof *g->img))) {
        group_free(g);
        return ml_fail(r->err, "out of memory");
    }
    r->win[(r->whead + r->wn) % (size_t)r->o->window] = g;
    if (r->wn++ == 0) r->wfirst = id;
    for (int i = 0; i < g->n; i++) {
        const char *url = jfield(json_array_get(imgs, (size_t)i), "url");
        if (!url) {
            g->img[i].why = "bad_url";
            continue;
        }
        if (ml_fetcher_add(r->f, url, (uint64_t)id << IDX_BITS | (uint64_t)i, r->err)) return -1;
        g->left++;
    }
    return 0;
}

static json_t *jstr_or_null(json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_incref(v) : json_null();
}

static json_t *jint_or_null(json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? json_incref(v) : json_null();
}

static char *sample_meta(const group *g, int i, int kept, const char *key) {
    const image *im = &g->img[i];
    json_t *src = json_array_get(json_object_get(g->page, "images"), (size_t)i);
    char ph[17], xx[33];
    ml_phash_hex(im->phash, ph);
    XXH128_hash_t x = XXH3_128bits(im->data, im->len);
    snprintf(xx, sizeof xx, "%016llx%016llx", (unsigned long long)x.high64,
             (unsigned long long)x.low64);
    json_t *m = json_object();
    json_object_set_new(m, "key", json_string(key));
    json_object_set_new(m, "group", json_integer(g->id));
    json_object_set_new(m, "index", json_integer(i));
    json_object_set_new(m, "url", jstr_or_null(src, "url"));
    json_object_set_new(m, "final_url", im->final_url ? json_string(im->final_url) : json_null());
    static const char *const text[] = {"alt", "title", "caption", "context"};
    for (size_t k = 0; k < 4; k++) json_object_set_new(m, text[k], jstr_or_null(src, text[k]));
    json_object_set_new(m, "width", jint_or_null(src, "width"));
    json_object_set_new(m, "height", jint_or_null(src, "height"));
    json_object_set_new(m, "page_url", jstr_or_null(g->page, "url"));
    json_object_set_new(m, "page_title", jstr_or_null(g->page, "title"));
    json_object_set_new(m, "page_lang", jstr_or_null(g->page, "lang"));
    json_object_set_new(m, "decoded_width", json_integer(im->w));
    json_object_set_new(m, "decoded_height", json_integer(im->h));
    json_object_set_new(m, "content_type",
                        im->content_type ? json_string(im->content_type) : json_null());
    json_object_set_new(m, "format", json_string(im->format));
    json_object_set_new(m, "bytes", json_integer((json_int_t)im->len));
    json_object_set_new(m, "phash", json_string(ph));
    json_object_set_new(m, "xxh3_128", json_string(xx));
    json_object_set_new(m, "group_images", json_integer(g->n));
    json_object_set_new(m, "group_kept", json_integer(kept));
    char *s = json_dumps(m, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(m);
    return s;
}

/* Decides duplicates (input order), writes the kept images and the group's
 * journal record, and closes the shard when it is full. */
static int emit(run *r, group *g) {
    const fetch_opts *o = r->o;
    int kept = 0;
    long long kbytes = 0;
    for (int i = 0; i < g->n; i++) {
        image *im = &g->img[i];
        if (im->why) continue;
        if (o->dedup != ML_DEDUP_NONE) {
            for (int j = 0; j < i && !im->why; j++)
                if (!g->img[j].why &&
                    ml_phash_distance(g->img[j].phash, im->phash) <= o->phash_distance)
                    im->why = "duplicate_in_page";
            if (!im->why && o->dedup == ML_DEDUP_RUN && ml_phash_index_near(r->seen, im->phash))
                im->why = "duplicate_earlier_page";
        }
        if (im->why) {
            if (o->verbose) fprintf(stderr, "mine fetch: g%08lld_%03d: %s\n", g->id, i, im->why);
            r->buffered -= (long long)im->len;
            free(im->data), im->data = NULL;
        } else {
            kept++, kbytes += (long long)im->len;
        }
    }
    json_t *why = json_array(), *hashes = json_array();
    int rc = 0;
    for (int i = 0; i < g->n && rc == 0; i++) {
        image *im = &g->img[i];
        json_array_append_new(why, json_string(im->why ? im->why : "kept"));
        if (im->why) {
            ml_counts_add(&r->dropped, im->why, 1);
            continue;
        }
        char key[40], ph[17];
        snprintf(key, sizeof key, "g%08lld_%03d", g->id, i);
        ml_phash_hex(im->phash, ph);
        json_array_append_new(hashes, json_string(ph));
        char *meta = sample_meta(g, i, kept, key);
        if (!meta) rc = ml_fail(r->err, "out of memory");
        if (rc == 0 && !r->shard &&
            !(r->shard = ml_shard_writer_open(o->output, r->next_shard, r->err)))
            rc = -1;
        if (rc == 0)
            rc = ml_shard_writer_add(r->shard, key, im->format, im->data, im->len, meta, r->err);
        free(meta);
        if (rc == 0 && o->dedup == ML_DEDUP_RUN && ml_phash_index_add(r->seen, im->phash))
            rc = ml_fail(r->err, "out of memory");
        r->buffered -= (long long)im->len;
        free(im->data), im->data = NULL;
    }
    r->processed += g->n;
    r->pages_in++, r->pages_bad += !g->page;
    r->images_in += g->n, r->images_kept += kept, r->samples += kept, r->kept_bytes += kbytes;
    count_group(r, kept);
    r->done = g->id + 1;
    json_t *rec =
        json_pack("{sI si si sI so so}", "group", (json_int_t)g->id, "images", g->n, "kept", kept,
                  "kept_bytes", (json_int_t)kbytes, "why", why, "phash", hashes);
    if (rec && !g->page) json_object_set_new(rec, "bad", json_true());
    if (rc == 0)
        rc = jappend_json(r, rec);
    else
        json_decref(rec);
    ml_progress_add(&r->bar, 1);
    if (rc == 0 && r->shard && ml_shard_writer_samples(r->shard) >= o->shard_size) rc = commit(r);
    return rc;
}

/* Emits the complete groups at the head of the window. */
static int emit_ready(run *r) {
    while (r->wn) {
        group *g = r->win[r->whead];
        if (g->left) break;
        int rc = emit(r, g);
        group_free(g);
        r->win[r->whead] = NULL;
        r->whead = (r->whead + 1) % (size_t)r->o->window;
        r->wn--, r->wfirst++;
        if (rc) return rc;
    }
    return 0;
}

/* ---- the run ------------------------------------------------------------------- */

/* XXH3 of the pages file and its line count. */
static int hash_pages(const char *path, char out[17], long long *lines, ml_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return ml_fail(err, "%s: cannot open: %s", path, strerror(errno));
    XXH3_state_t *st = XXH3_createState();
    if (!st) {
        fclose(f);
        return ml_fail(err, "out of memory");
    }
    XXH3_64bits_reset(st);
    char buf[1 << 16];
    size_t n;
    *lines = 0;
    int last = '\n';
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        XXH3_64bits_update(st, buf, n);
        for (size_t i = 0; i < n; i++) *lines += buf[i] == '\n';
        last = buf[n - 1];
    }
    *lines += last != '\n';
    int bad = ferror(f);
    fclose(f);
    snprintf(out, 17, "%016llx", (unsigned long long)XXH3_64bits_digest(st));
    XXH3_freeState(st);
    return bad ? ml_fail(err, "%s: read error", path) : 0;
}

static json_t *stats_json(const run *r, double secs) {
    ml_fetch_counts c = {0};
    if (r->f) ml_fetcher_counts(r->f, &c);
    json_t *byk = json_object();
    for (int k = 0; k < 12; k++) {
        char name[8];
        snprintf(name, sizeof name, k < 11 ? "%d" : "11+", k);
        json_object_set_new(byk, name, json_integer(r->groups_by_kept[k]));
    }
    json_t *s =
        json_pack("{sI sI sI sI so sI sI sI so}", "pages_in", (json_int_t)r->pages_in, "pages_bad",
                  (json_int_t)r->pages_bad, "images_in", (json_int_t)r->images_in, "images_kept",
                  (json_int_t)r->images_kept, "images_dropped", ml_counts_json(&r->dropped),
                  "samples", (json_int_t)r->samples, "shards", (json_int_t)r->shards, "kept_bytes",
                  (json_int_t)r->kept_bytes, "groups_by_kept", byk);
    json_t *t = json_pack(
        "{sI sI sI sI sI sI sI sf sf}", "groups_resumed", (json_int_t)r->resumed, "images_done",
        (json_int_t)r->processed, "requests", (json_int_t)c.requests, "retries",
        (json_int_t)c.retries, "bytes_downloaded", (json_int_t)c.bytes, "max_active",
        (json_int_t)c.max_active, "max_active_per_host", (json_int_t)c.max_active_per_host,
        "seconds", secs, "images_per_s", secs > 0 ? r->processed / secs : 0.0);
    json_object_set_new(s, "this_run", t);
    return s;
}

static void summary(const run *r, double secs) {
    fprintf(stderr,
            "mine fetch: %lld pages (%lld bad), %lld images -> %lld kept in %lld shards "
            "(%.1f MB); this run %lld images in %.1f s (%.1f/s)%s\n",
            r->pages_in, r->pages_bad, r->images_in, r->images_kept, r->shards, r->kept_bytes / 1e6,
            r->processed, secs, secs > 0 ? r->processed / secs : 0, r->resumed ? ", resumed" : "");
    if (r->dropped.n) {
        fprintf(stderr, "  images dropped:");
        for (size_t i = 0; i < r->dropped.n; i++)
            fprintf(stderr, "%s %s %lld", i ? "," : "", r->dropped.v[i].name, r->dropped.v[i].n);
        fputc('\n', stderr);
    }
    fprintf(stderr, "  groups by images kept:");
    for (int k = 0; k < 12; k++)
        if (r->groups_by_kept[k])
            fprintf(stderr, " %d%s: %lld", k, k == 11 ? "+" : "", r->groups_by_kept[k]);
    fputc('\n', stderr);
}

static int fetch_all(run *r, FILE *in) {
    const fetch_opts *o = r->o;
    char *line = NULL;
    size_t cap = 0;
    long long id = 0;
    int eof = 0, rc = 0;
    while (rc == 0) {
        while (!eof && r->wn < (size_t)o->window && r->buffered < MAX_BUFFER) {
            ssize_t n = getline(&line, &cap, in);
            if (n < 0) {
                if (ferror(in)) rc = ml_fail(r->err, "%s: read error", o->pages);
                eof = 1;
                break;
            }
            if (id++ < r->done) continue; /* committed by an earlier run */
            if ((rc = admit(r, id - 1, line, (size_t)n))) break;
        }
        if (rc || (rc = emit_ready(r))) break;
        if (eof && !r->wn) break;
        if (ml_fetcher_step(r->f, 0.5, r->err) < 0) rc = -1;
    }
    free(line);
    return rc;
}

static int run_fetch(const fetch_opts *o, ml_error *err) {
    char hash[17];
    long long lines;
    if (hash_pages(o->pages, hash, &lines, err)) return -1;
    run r = {.o = o, .err = err, .jfd = -1};
    int rc = 0, complete = 0;
    r.win = calloc((size_t)o->window, sizeof *r.win);
    if (!r.win) rc = ml_fail(err, "out of memory");
    if (rc == 0 && o->dedup == ML_DEDUP_RUN && !(r.seen = ml_phash_index_new(o->phash_distance)))
        rc = ml_fail(err, "out of memory");
    if (rc == 0) rc = open_output(&r, hash, &complete);
    r.resumed = r.done;
    double t0 = ml_now();
    FILE *in = NULL;
    if (rc == 0 && complete) {
        fprintf(stderr, "mine fetch: %s is complete (%s); nothing to do\n", o->output, JOURNAL);
    } else if (rc == 0) {
        if (r.done)
            fprintf(stderr, "mine fetch: resuming after %lld committed pages (next shard %d)\n",
                    r.done, r.next_shard);
        if (!(in = fopen(o->pages, "rb")))
            rc = ml_fail(err, "%s: cannot open: %s", o->pages, strerror(errno));
        if (rc == 0 && !(r.f = ml_fetcher_new(&o->net, on_fetched, &r, err))) rc = -1;
        ml_progress_start(&r.bar, "mine fetch (pages)", (long)lines, !o->quiet);
        r.bar.done = (long)r.done;
        if (rc == 0) rc = fetch_all(&r, in);
        ml_progress_finish(&r.bar);
        if (rc == 0) { /* the last shard, and the end mark */
            json_t *c = json_pack("{sI so si sb}", "commit", (json_int_t)r.done, "shard",
                                  r.shard ? json_integer(r.next_shard) : json_null(), "next_shard",
                                  r.next_shard + (r.shard ? 1 : 0), "end", 1);
            if (r.shard) {
                ml_shard_writer *w = r.shard;
                r.shard = NULL;
                rc = ml_shard_writer_finish(w, err);
                if (rc == 0) r.next_shard++, r.shards++;
            }
            if (rc == 0)
                rc = jappend_json(&r, c);
            else
                json_decref(c);
            if (rc == 0) rc = jflush(&r);
        }
    }
    double secs = ml_now() - t0;
    if (in) fclose(in);
    if (r.shard) ml_shard_writer_abort(r.shard);
    if (rc == 0) summary(&r, secs);
    if (rc == 0 && o->stats) {
        json_t *s = stats_json(&r, secs);
        char *text = s ? json_dumps(s, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
        rc = text ? ml_write_atomic(o->stats, text, strlen(text), err)
                  : ml_fail(err, "out of memory");
        free(text);
        json_decref(s);
    }
    for (size_t i = 0; i < r.wn; i++) group_free(r.win[(r.whead + i) % (size_t)o->window]);
    free(r.win);
    ml_fetcher_free(r.f);
    ml_phash_index_free(r.seen);
    ml_counts_free(&r.dropped);
    free(r.jbuf);
    if (r.jfd >= 0) close(r.jfd);
    return rc;
}
int ml_mine_fetch(const ml_mine_fetch_opts *o, ml_error *err) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = run_fetch(o, err);
    curl_global_cleanup();
    return rc;
}
