/* pairs.c - stage 4 of mining: shards -> scored image pairs (see pairs.h).
 *
 * One streaming pass over the shards.  Samples are buffered in a window;
 * images are embedded in batches (decode + preprocess on all cores, then
 * one image-tower call), and a group is scored and written as soon as the
 * next group has started and all its images are embedded, so memory holds
 * about one batch of image bytes plus the embeddings of the open groups. */
#include "mine/pairs.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/progress.h"
#include "core/threads.h"
#include "index/sources.h"

#define MAX_IMAGE_BYTES (64u << 20)
#define MAX_META_BYTES (1u << 20)
#define WARNINGS_SHOWN 20

void ml_pairs_opts_default(ml_pairs_opts *o) {
    memset(o, 0, sizeof *o);
    o->min_sim = 0.5;
    o->max_sim = 0.92;
    o->alt_weight = 0.3;
    o->max_pairs_per_page = 4;
    o->max_uses = 2;
    o->batch = 16;
}

/* ---- selection ---------------------------------------------------------- */

static double dot(const float *a, const float *b, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

static int cmp_pair(const void *pa, const void *pb) {
    const ml_pair *a = pa, *b = pb;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    if (a->q != b->q) return a->q < b->q ? -1 : 1;
    return (a->t > b->t) - (a->t < b->t);
}

int ml_pairs_select(int n, int dim, const float *img, const float *txt, const int *has_txt,
                    const ml_pairs_opts *o, ml_pair *out, int *nout, ml_counts *drops) {
    *nout = 0;
    if (n < 2) return 0;
    size_t ncand = 0;
    ml_pair *cand = malloc((size_t)n * (n - 1) / 2 * sizeof *cand);
    int *uses = calloc((size_t)n, sizeof *uses);
    if (!cand || !uses) {
        free(cand), free(uses);
        return -1;
    }
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            ml_pair p = {.q = i, .t = j};
            p.image_sim = dot(img + (size_t)i * dim, img + (size_t)j * dim, dim);
            p.has_text = txt && has_txt && has_txt[i] && has_txt[j];
            p.text_sim = p.has_text ? dot(txt + (size_t)i * dim, txt + (size_t)j * dim, dim) : 0;
            p.score = p.has_text ? (1 - o->alt_weight) * p.image_sim + o->alt_weight * p.text_sim
                                 : p.image_sim;
            if (p.image_sim > o->max_sim)
                ml_counts_add(drops, "near_duplicate", 1);
            else if (p.image_sim < o->min_sim)
                ml_counts_add(drops, "unrelated", 1);
            else
                cand[ncand++] = p;
        }
    qsort(cand, ncand, sizeof *cand, cmp_pair);
    for (size_t k = 0; k < ncand; k++) {
        const ml_pair *p = &cand[k];
        if (*nout >= o->max_pairs_per_page) {
            ml_counts_add(drops, "page_cap", 1);
        } else if (uses[p->q] >= o->max_uses || uses[p->t] >= o->max_uses) {
            ml_counts_add(drops, "image_cap", 1);
        } else {
            uses[p->q]++, uses[p->t]++;
            out[(*nout)++] = *p;
        }
    }
    free(cand), free(uses);
    return 0;
}

/* ---- paths -------------------------------------------------------------- */

/* Lexical normalisation of an absolute path: "." and ".." and "//" go. */
static void normalise(char *p) {
    char *out = p, *s = p;
    while (*s) {
        while (*s == '/') s++;
        char *e = s;
        while (*e && *e != '/') e++;
        size_t n = (size_t)(e - s);
        if (n == 0) break;
        if (n == 1 && s[0] == '.') {
        } else if (n == 2 && s[0] == '.' && s[1] == '.') {
            while (out > p && *--out != '/') {
            }
        } else {
            *out++ = '/';
            memmove(out, s, n);
            out += n;
        }
        s = e;
    }
    if (out == p) *out++ = '/';
    *out = 0;
}

static char *absolute(const char *p) {
    char *r = realpath(p, NULL);
    if (r) return r;
    char cwd[PATH_MAX];
    size_t n = strlen(p) + PATH_MAX + 2;
    char *s = malloc(n);
    if (!s) return NULL;
    if (p[0] == '/') {
        snprintf(s, n, "%s", p);
    } else if (getcwd(cwd, sizeof cwd)) {
        snprintf(s, n, "%s/%s", cwd, p);
    } else {
        free(s);
        return NULL;
    }
    normalise(s);
    /* the file may not exist yet: resolve its folder */
    char *slash = strrchr(s, '/');
    if (slash && slash != s) {
        *slash = 0;
        char *dir = realpath(s, NULL);
        *slash = '/';
        if (dir) {
            size_t m = strlen(dir) + strlen(slash) + 1;
            char *t = malloc(m);
            if (t) snprintf(t, m, "%s%s", strcmp(dir, "/") ? dir : "", slash);
            free(dir), free(s);
            return t;
        }
    }
    return s;
}

char *ml_path_relative(const char *path, const char *from_dir) {
    char *a = absolute(path), *b = absolute(from_dir);
    char *r = NULL;
    if (a && b) {
        /* common prefix, on component boundaries */
        size_t i = 0, last = 0;
        while (a[i] && a[i] == b[i]) {
            if (a[i] == '/') last = i;
            i++;
        }
        if ((!a[i] && (!b[i] || b[i] == '/')) || (!b[i] && a[i] == '/')) last = i;
        const char *rest_a = a + last, *rest_b = b + last;
        while (*rest_a == '/') rest_a++;
        int ups = 0;
        for (const char *s = rest_b; *s;) {
            while (*s == '/') s++;
            if (!*s) break;
            ups++;
            while (*s && *s != '/') s++;
        }
        size_t n = (size_t)ups * 3 + strlen(rest_a) + 2;
        if ((r = malloc(n))) {
            r[0] = 0;
            for (int k = 0; k < ups; k++) strcat(r, "../");
            strcat(r, rest_a);
            size_t len = strlen(r);
            if (len == 0)
                strcpy(r, ".");
            else if (r[len - 1] == '/')
                r[len - 1] = 0;
        }
    }
    free(a), free(b);
    return r;
}

/* ---- metadata ----------------------------------------------------------- */

/* A non-empty string field of the sample: meta[k], else meta[sub][k2]. */
static const char *mstr(json_t *meta, const char *k, const char *sub, const char *k2) {
    json_t *v = json_object_get(meta, k);
    if (!json_is_string(v) && sub) v = json_object_get(json_object_get(meta, sub), k2);
    const char *s = json_is_string(v) ? json_string_value(v) : NULL;
    return s && *s ? s : NULL;
}

static const char *image_field(json_t *meta, const char *k) {
    const char *s = mstr(meta, k, "image", k);
    if (!s && !strcmp(k, "url")) s = mstr(meta, "image_url", NULL, NULL);
    return s;
}

/* The text compared between images: alt, else caption, else title. */
static const char *pair_text(json_t *meta) {
    const char *s = image_field(meta, "alt");
    if (!s) s = image_field(meta, "caption");
    if (!s) s = image_field(meta, "title");
    return s;
}

static int sample_group(json_t *meta, const char *key, long long *g) {
    json_t *v = json_object_get(meta, "group");
    if (json_is_integer(v)) {
        *g = json_integer_value(v);
        return 0;
    }
    const char *b = strrchr(key, '/');
    b = b ? b + 1 : key;
    char *end;
    if (b[0] != 'g') return -1;
    errno = 0;
    *g = strtoll(b + 1, &end, 10);
    return errno || end == b + 1 || *end != '_' ? -1 : 0;
}

static json_t *jstr(const char *s) { return s ? json_string(s) : json_null(); }

static json_t *image_json(const char *key, json_t *meta) {
    json_t *o = json_object();
    json_object_set_new(o, "image", json_string(key));
    static const char *const f[] = {"url", "alt", "title", "caption", "context"};
    for (size_t i = 0; i < sizeof f / sizeof *f; i++)
        json_object_set_new(o, f[i], jstr(image_field(meta, f[i])));
    return o;
}

/* ---- the run ------------------------------------------------------------ */

typedef struct rec {
    long long group;
    char *key; /* "TAR::MEMBER", TAR relative to the output folder */
    json_t *meta;
    uint8_t *bytes;
    size_t len;
    const char *text; /* into meta; NULL: none */
    float *emb;       /* 2*dim: image, then text */
    int state;        /* 0 pending, 1 embedded, -1 dropped */
    char *why;        /* decode failure (malloc'ed) */
} rec;

typedef struct run {
    ml_model *m;
    int dim, size;
    const ml_pairs_opts *o;
    ml_pairs_stats *st;
    FILE *out;
    rec *v;
    size_t n, cap, embedded, closed;
    long long last_group;
    int have_last;
    float *pixels;
    ml_progress bar;
} run;

static void warnf(run *r, const char *fmt, ...) ML_PRINTF(2, 3);
static void warnf(run *r, const char *fmt, ...) {
    if (++r->st->warnings > WARNINGS_SHOWN) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%smagiclens mine pairs: warning: ", r->bar.tty && r->bar.enabled ? "\n" : "");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void rec_free(rec *x) {
    free(x->key), free(x->bytes), free(x->emb), free(x->why);
    json_decref(x->meta);
    memset(x, 0, sizeof *x);
}

static void prep_range(void *ctx, int b, int e) {
    run *r = ctx;
    size_t px = (size_t)r->size * r->size * 3;
    for (int i = b; i < e; i++) {
        rec *x = &r->v[r->embedded + i];
        ml_image img = {0};
        ml_error err = {{0}};
        if (ml_image_decode(x->bytes, x->len, 0, &img, &err) ||
            ml_model_preprocess(r->m, &img, r->pixels + (size_t)i * px, &err)) {
            x->state = -1;
            x->why = strdup(err.msg);
        }
        ml_image_free(&img);
    }
}

/* Embeds v[embedded .. n) in batches. */
static int embed_pending(run *r, ml_error *err) {
    size_t px = (size_t)r->size * r->size * 3;
    const float **ptr = malloc((size_t)r->o->batch * sizeof *ptr);
    float *raw = malloc((size_t)r->o->batch * r->dim * sizeof *raw);
    int rc = ptr && raw ? 0 : ml_fail(err, "out of memory");
    while (rc == 0 && r->embedded < r->n) {
        int nb = (int)(r->n - r->embedded < (size_t)r->o->batch ? r->n - r->embedded
                                                                : (size_t)r->o->batch);
        ml_parallel_for(nb, 1, prep_range, r);
        int nok = 0;
        for (int i = 0; i < nb; i++)
            if (r->v[r->embedded + i].state == 0) ptr[nok++] = r->pixels + (size_t)i * px;
        if (nok && ml_embed_clip_image(r->m, nok, ptr, raw, err)) {
            rc = -1;
            break;
        }
        for (int i = 0, k = 0; i < nb && rc == 0; i++) {
            rec *x = &r->v[r->embedded + i];
            free(x->bytes), x->bytes = NULL;
            if (x->state != 0) {
                warnf(r, "%s: cannot decode: %s", x->key, x->why ? x->why : "?");
                ml_counts_add(&r->st->samples_dropped, "decode_error", 1);
                continue;
            }
            if (!(x->emb = malloc(2 * (size_t)r->dim * sizeof *x->emb))) {
                rc = ml_fail(err, "out of memory");
                break;
            }
            const float *e = raw + (size_t)k++ * r->dim;
            double nn = sqrt(dot(e, e, r->dim));
            for (int d = 0; d < r->dim; d++) x->emb[d] = nn > 0 ? (float)(e[d] / nn) : 0.f;
            ml_error terr = {{0}};
            if (x->text && ml_embed_clip_text(r->m, x->text, 1, x->emb + r->dim, &terr)) {
                warnf(r, "%s: text not embedded (%s): compared by image only", x->key, terr.msg);
                x->text = NULL;
            }
            x->state = 1;
            r->st->images_embedded++;
        }
        r->embedded += (size_t)nb;
        ml_progress_add(&r->bar, nb);
    }
    free(ptr), free(raw);
    return rc;
}

static int write_pair(run *r, rec *q, rec *t, const ml_pair *p, ml_error *err) {
    json_t *o = json_object();
    json_object_set_new(o, "group", json_integer(q->group));
    json_object_set_new(o, "page_url", jstr(mstr(q->meta, "page_url", "page", "url")));
    json_object_set_new(o, "page_title", jstr(mstr(q->meta, "page_title", "page", "title")));
    json_object_set_new(o, "query", image_json(q->key, q->meta));
    json_object_set_new(o, "target", image_json(t->key, t->meta));
    json_object_set_new(o, "image_sim", json_real(p->image_sim));
    json_object_set_new(o, "text_sim", p->has_text ? json_real(p->text_sim) : json_null());
    json_object_set_new(o, "score", json_real(p->score));
    int bad = json_dumpf(o, r->out, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(7));
    json_decref(o);
    if (bad || fputc('\n', r->out) == EOF) return ml_fail(err, "write failed: %s", strerror(errno));
    r->st->lines_out++;
    return 0;
}

/* Scores one group (v[a..b)) and writes its pairs. */
static int flush_group(run *r, size_t a, size_t b, ml_error *err) {
    long long g = r->v[a].group;
    if (r->have_last && g <= r->last_group)
        warnf(r,
              "group %lld comes after group %lld: shards are not in group order, pairs are "
              "only formed inside each contiguous run",
              g, r->last_group);
    r->have_last = 1, r->last_group = g;
    r->st->groups++;
    int n = 0, dim = r->dim;
    for (size_t i = a; i < b; i++) n += r->v[i].state == 1;
    if (n < 2) {
        ml_counts_add(&r->st->groups_dropped, n ? "one_image" : "no_image", 1);
        return 0;
    }
    rec **ix = malloc((size_t)n * sizeof *ix);
    float *img = malloc((size_t)n * dim * sizeof *img),
          *txt = malloc((size_t)n * dim * sizeof *txt);
    int *has = malloc((size_t)n * sizeof *has);
    ml_pair *out = malloc((size_t)n * (n - 1) / 2 * sizeof *out);
    int nout = 0, rc = 0;
    if (!ix || !img || !txt || !has || !out) rc = ml_fail(err, "out of memory");
    for (size_t i = a, k = 0; rc == 0 && i < b; i++) {
        if (r->v[i].state != 1) continue;
        ix[k] = &r->v[i];
        memcpy(img + k * dim, ix[k]->emb, (size_t)dim * sizeof *img);
        memcpy(txt + k * dim, ix[k]->emb + dim, (size_t)dim * sizeof *txt);
        has[k] = ix[k]->text != NULL;
        k++;
    }
    if (rc == 0) {
        r->st->candidate_pairs += (long long)n * (n - 1) / 2;
        if (ml_pairs_select(n, dim, img, txt, has, r->o, out, &nout, &r->st->pairs_dropped))
            rc = ml_fail(err, "out of memory");
    }
    for (int k = 0; rc == 0 && k < nout; k++) {
        rc = write_pair(r, ix[out[k].q], ix[out[k].t], &out[k], err);
        if (rc == 0 && r->o->both_directions)
            rc = write_pair(r, ix[out[k].t], ix[out[k].q], &out[k], err);
    }
    r->st->pairs_out += nout;
    r->st->groups_used += nout > 0;
    free(ix), free(img), free(txt), free(has), free(out);
    return rc;
}

/* Scores the groups in v[0 .. closed) (all embedded) and drops them. */
static int flush_closed(run *r, ml_error *err) {
    size_t a = 0;
    int rc = 0;
    while (rc == 0 && a < r->closed) {
        size_t b = a + 1;
        while (b < r->closed && r->v[b].group == r->v[a].group) b++;
        rc = flush_group(r, a, b, err);
        a = b;
    }
    for (size_t i = 0; i < r->closed; i++) rec_free(&r->v[i]);
    memmove(r->v, r->v + r->closed, (r->n - r->closed) * sizeof *r->v);
    r->n -= r->closed, r->embedded -= r->closed, r->closed = 0;
    return rc;
}

/* ---- shard reading ------------------------------------------------------ */

typedef struct sample {
    char *key;   /* member name up to its first '.' (in the last path part) */
    char *image; /* image member name */
    uint8_t *bytes;
    size_t len;
    json_t *meta;
    int bad_meta;
} sample;

static void sample_clear(sample *s) {
    free(s->key), free(s->image), free(s->bytes);
    json_decref(s->meta);
    memset(s, 0, sizeof *s);
}

static int push_sample(run *r, const char *tar_rel, sample *s, ml_error *err) {
    if (!s->key) return 0;
    r->st->samples++;
    const char *why = s->bad_meta ? "bad_metadata"
                      : !s->meta  ? "no_metadata"
                      : !s->image ? "no_image"
                                  : NULL;
    long long g = 0;
    if (!why && sample_group(s->meta, s->key, &g)) why = "no_group";
    if (why) {
        warnf(r, "%s: sample %s dropped: %s", tar_rel, s->key, why);
        ml_counts_add(&r->st->samples_dropped, why, 1);
        sample_clear(s);
        return 0;
    }
    r->st->images_in++;
    if (r->n == r->cap) {
        size_t nc = r->cap ? 2 * r->cap : 64;
        rec *v = realloc(r->v, nc * sizeof *v);
        if (!v) return ml_fail(err, "out of memory");
        r->v = v, r->cap = nc;
    }
    rec *x = &r->v[r->n];
    memset(x, 0, sizeof *x);
    size_t kn = strlen(tar_rel) + strlen(ML_TAR_SEP) + strlen(s->image) + 1;
    if (!(x->key = malloc(kn))) return ml_fail(err, "out of memory");
    snprintf(x->key, kn, "%s%s%s", tar_rel, ML_TAR_SEP, s->image);
    x->group = g;
    x->meta = s->meta, s->meta = NULL;
    x->bytes = s->bytes, s->bytes = NULL;
    x->len = s->len;
    x->text = pair_text(x->meta);
    r->n++;
    sample_clear(s);
    if (r->n > 1 && r->v[r->n - 2].group != g) r->closed = r->n - 1;
    if (r->n - r->embedded >= (size_t)r->o->batch) {
        if (embed_pending(r, err)) return -1;
        return flush_closed(r, err);
    }
    return 0;
}

static int is_ext(const char *ext, const char *const *list) {
    for (; *list; list++)
        if (!strcasecmp(ext, *list)) return 1;
    return 0;
}

static int read_member(struct archive *a, size_t size, size_t max, uint8_t **out) {
    if (size > max) return 1;
    uint8_t *b = malloc(size ? size : 1);
    if (!b) return -1;
    la_ssize_t got = size ? archive_read_data(a, b, size) : 0;
    if (got < 0 || (size_t)got != size) {
        free(b);
        return 2;
    }
    *out = b;
    return 0;
}

static int read_shard(run *r, const char *tar, const char *tar_rel, ml_error *err) {
    static const char *const image_ext[] = {"jpg", "jpeg", "png", "webp", "gif", NULL};
    struct archive *a = archive_read_new();
    if (!a) return ml_fail(err, "out of memory");
    archive_read_support_format_tar(a);
    if (archive_read_open_filename(a, tar, 1 << 16) != ARCHIVE_OK) {
        ml_fail(err, "%s: cannot open tar: %s", tar, archive_error_string(a));
        archive_read_free(a);
        return -1;
    }
    r->st->shards++;
    sample s = {0};
    struct archive_entry *e;
    int rc = 0, ar;
    while (rc == 0 && (ar = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
        if (archive_entry_filetype(e) != AE_IFREG) continue;
        const char *name = archive_entry_pathname(e);
        if (!name) continue;
        r->st->members++;
        const char *base = strrchr(name, '/');
        base = base ? base + 1 : name;
        const char *dot = strchr(base, '.');
        if (!dot) continue;
        size_t klen = (size_t)(dot - name);
        if (!s.key || strlen(s.key) != klen || strncmp(s.key, name, klen)) {
            if ((rc = push_sample(r, tar_rel, &s, err))) break;
            if (!(s.key = strndup(name, klen))) rc = ml_fail(err, "out of memory");
            if (rc) break;
        }
        const char *ext = dot + 1;
        int64_t size = archive_entry_size(e);
        uint8_t *data = NULL;
        int isjson = !strcasecmp(ext, "json"), isimg = is_ext(ext, image_ext);
        if (!isjson && !isimg) continue;
        if (isimg && s.image) {
            warnf(r, "%s: %s: a second image for sample %s (ignored)", tar_rel, name, s.key);
            continue;
        }
        int mr = read_member(a, size < 0 ? SIZE_MAX : (size_t)size,
                             isjson ? MAX_META_BYTES : MAX_IMAGE_BYTES, &data);
        if (mr < 0) rc = ml_fail(err, "out of memory");
        if (mr == 2) {
            rc = ml_fail(err, "%s: %s: corrupt tar: %s", tar, name, archive_error_string(a));
        }
        if (rc) break;
        if (mr == 1) {
            warnf(r, "%s: %s: too large (skipped)", tar_rel, name);
            if (isjson) s.bad_meta = 1;
            continue;
        }
        if (isjson) {
            json_error_t je;
            json_decref(s.meta);
            s.meta = json_loadb((const char *)data, (size_t)size, 0, &je);
            if (!json_is_object(s.meta)) {
                warnf(r, "%s: %s: not a JSON object (%s)", tar_rel, name,
                      s.meta ? "another JSON value" : je.text);
                json_decref(s.meta), s.meta = NULL;
                s.bad_meta = 1;
            }
            free(data);
        } else {
            s.image = strdup(name);
            s.bytes = data, s.len = (size_t)size;
            if (!s.image) rc = ml_fail(err, "out of memory");
        }
    }
    if (rc == 0 && ar != ARCHIVE_EOF)
        rc = ml_fail(err, "%s: corrupt tar: %s", tar, archive_error_string(a));
    if (rc == 0) rc = push_sample(r, tar_rel, &s, err);
    sample_clear(&s);
    archive_read_free(a);
    return rc;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The shard paths: the .tar files of a folder sorted by name, or one .tar. */
static int list_shards(const char *path, char ***out, size_t *n, ml_error *err) {
    struct stat sb;
    *out = NULL, *n = 0;
    if (stat(path, &sb) != 0) return ml_fail(err, "%s: %s", path, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) {
        if (!(*out = malloc(sizeof **out)) || !((*out)[0] = strdup(path)))
            return ml_fail(err, "out of memory");
        *n = 1;
        return 0;
    }
    DIR *d = opendir(path);
    if (!d) return ml_fail(err, "%s: cannot open folder: %s", path, strerror(errno));
    struct dirent *de;
    size_t cap = 0;
    int rc = 0;
    while (rc == 0 && (de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (de->d_name[0] == '.' || len < 5 || strcmp(de->d_name + len - 4, ".tar")) continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            char **v = realloc(*out, cap * sizeof *v);
            if (!v) {
                rc = ml_fail(err, "out of memory");
                break;
            }
            *out = v;
        }
        size_t pn = strlen(path) + len + 2;
        char *p = malloc(pn);
        if (!p) {
            rc = ml_fail(err, "out of memory");
            break;
        }
        snprintf(p, pn, "%s/%s", path, de->d_name);
        (*out)[(*n)++] = p;
    }
    closedir(d);
    if (rc == 0 && *n == 0) rc = ml_fail(err, "%s: no .tar shards in the folder", path);
    if (rc == 0) qsort(*out, *n, sizeof **out, cmp_name);
    return rc;
}

int ml_pairs_run(ml_model *m, const char *shards, const char *out_dir, FILE *out,
                 const ml_pairs_opts *o, ml_pairs_stats *st, ml_error *err) {
    const ml_config *cfg = ml_model_config(m);
    run r = {.m = m, .dim = cfg->embed_dim, .size = cfg->image_size, .o = o, .st = st, .out = out};
    char **tars = NULL;
    size_t ntars = 0;
    int rc = list_shards(shards, &tars, &ntars, err);
    r.pixels = malloc((size_t)o->batch * r.size * r.size * 3 * sizeof *r.pixels);
    if (rc == 0 && !r.pixels) rc = ml_fail(err, "out of memory");
    ml_progress_start(&r.bar, "mine pairs (images)", 0, !o->quiet);
    for (size_t i = 0; rc == 0 && i < ntars; i++) {
        char *rel = ml_path_relative(tars[i], out_dir);
        rc = rel ? read_shard(&r, tars[i], rel, err) : ml_fail(err, "%s: no path", tars[i]);
        free(rel);
    }
    if (rc == 0) rc = embed_pending(&r, err);
    if (rc == 0) {
        r.closed = r.n;
        rc = flush_closed(&r, err);
    }
    ml_progress_finish(&r.bar);
    for (size_t i = 0; i < r.n; i++) rec_free(&r.v[i]);
    for (size_t i = 0; i < ntars; i++) free(tars[i]);
    free(tars), free(r.v), free(r.pixels);
    if (st->warnings > WARNINGS_SHOWN)
        fprintf(stderr, "magiclens mine pairs: %lld warnings (first %d shown)\n", st->warnings,
                WARNINGS_SHOWN);
    return rc;
}

json_t *ml_pairs_stats_json(const ml_pairs_stats *st) {
    json_t *o = json_object();
#define SET(k) json_object_set_new(o, #k, json_integer(st->k))
    SET(shards), SET(members), SET(samples), SET(images_in), SET(images_embedded);
    json_object_set_new(o, "samples_dropped", ml_counts_json(&st->samples_dropped));
    SET(groups), SET(groups_used);
    json_object_set_new(o, "groups_dropped", ml_counts_json(&st->groups_dropped));
    SET(candidate_pairs), SET(pairs_out);
    json_object_set_new(o, "pairs_dropped", ml_counts_json(&st->pairs_dropped));
    SET(lines_out), SET(warnings);
#undef SET
    return o;
}

void ml_pairs_stats_free(ml_pairs_stats *st) {
    ml_counts_free(&st->samples_dropped);
    ml_counts_free(&st->groups_dropped);
    ml_counts_free(&st->pairs_dropped);
}
