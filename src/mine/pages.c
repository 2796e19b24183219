/* pages.c - WARC records -> pages with cleaned image groups (see pages.h).
 *
 * Per record: HTTP message (status, headers, chunked transfer encoding,
 * content encoding), HTML extraction (html.c), URL resolution (url.c), the
 * cleaning rules and duplicate removal (clean.c), then one JSON object. */
#include "mine/pages.h"

#include <brotli/decode.h>
#include <ctype.h>
#include <libxml/encoding.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "core/error.h"
#include "mine/html.h"
#include "mine/url.h"

#define DEFAULT_MAX_RECORD (32u << 20)

/* ---- counters -------------------------------------------------------- */

void ml_counts_add(ml_counts *c, const char *name, long long k) {
    for (size_t i = 0; i < c->n; i++)
        if (!strcmp(c->v[i].name, name)) {
            c->v[i].n += k;
            return;
        }
    if (c->n == c->cap) {
        size_t nc = c->cap ? 2 * c->cap : 8;
        struct ml_count *v = realloc(c->v, nc * sizeof *v);
        if (!v) return; /* a lost counter is not worth failing the run */
        c->v = v, c->cap = nc;
    }
    snprintf(c->v[c->n].name, sizeof c->v[c->n].name, "%s", name);
    c->v[c->n++].n = k;
}

long long ml_counts_get(const ml_counts *c, const char *name) {
    for (size_t i = 0; i < c->n; i++)
        if (!strcmp(c->v[i].name, name)) return c->v[i].n;
    return 0;
}

json_t *ml_counts_json(const ml_counts *c) {
    json_t *o = json_object();
    for (size_t i = 0; o && i < c->n; i++)
        json_object_set_new(o, c->v[i].name, json_integer(c->v[i].n));
    return o;
}

void ml_counts_print(const char *label, const ml_counts *c) {
    if (!c->n) return;
    fprintf(stderr, "  %s:", label);
    for (size_t i = 0; i < c->n; i++)
        fprintf(stderr, "%s %s %lld", i ? "," : "", c->v[i].name, c->v[i].n);
    fputc('\n', stderr);
}

void ml_counts_free(ml_counts *c) {
    free(c->v);
    memset(c, 0, sizeof *c);
}

/* ---- HTTP ------------------------------------------------------------ */

typedef struct http_msg {
    int status;
    char ctype[256], cenc[64];
    int chunked;
    const unsigned char *body;
    size_t body_len;
} http_msg;

static void copy_value(char *dst, size_t cap, const char *v, size_t n) {
    while (n && (*v == ' ' || *v == '\t')) v++, n--;
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == '\r')) n--;
    if (n >= cap) n = cap - 1;
    memcpy(dst, v, n);
    dst[n] = 0;
}

/* Status line and headers; lenient about line ends (LF, CR LF, CR CR LF)
 * and a missing reason phrase.  0 ok, -1 not an HTTP response. */
static int http_parse(const unsigned char *s, size_t n, http_msg *m) {
    memset(m, 0, sizeof *m);
    if (n < 12 || strncasecmp((const char *)s, "HTTP/", 5)) return -1;
    const unsigned char *sp = memchr(s, ' ', n < 64 ? n : 64);
    if (!sp || sp + 4 > s + n || !isdigit(sp[1]) || !isdigit(sp[2]) || !isdigit(sp[3])) return -1;
    m->status = (sp[1] - '0') * 100 + (sp[2] - '0') * 10 + (sp[3] - '0');
    size_t i = 0;
    for (int line = 0;; line++) {
        const unsigned char *nl = memchr(s + i, '\n', n - i);
        if (!nl) return -1; /* no end of headers */
        size_t len = (size_t)(nl - (s + i));
        const char *l = (const char *)s + i;
        i = (size_t)(nl - s) + 1;
        while (len && l[len - 1] == '\r') len--;
        if (line > 0 && len == 0) break;
        const char *colon = line > 0 ? memchr(l, ':', len) : NULL;
        if (!colon) continue;
        size_t kn = (size_t)(colon - l);
        const char *v = colon + 1;
        size_t vn = len - kn - 1;
        if (kn == 12 && !strncasecmp(l, "Content-Type", 12) && !m->ctype[0])
            copy_value(m->ctype, sizeof m->ctype, v, vn);
        else if (kn == 16 && !strncasecmp(l, "Content-Encoding", 16))
            copy_value(m->cenc, sizeof m->cenc, v, vn);
        else if (kn == 17 && !strncasecmp(l, "Transfer-Encoding", 17)) {
            char te[64];
            copy_value(te, sizeof te, v, vn);
            m->chunked = strcasestr(te, "chunked") != NULL;
        }
    }
    m->body = s + i, m->body_len = n - i;
    return 0;
}

/* A chunk-size line at s: its value and the line length, or -1. */
static long long chunk_size(const unsigned char *s, size_t n, size_t *line) {
    size_t i = 0;
    long long v = 0;
    while (i < n && isxdigit(s[i]) && i < 15) {
        v = v * 16 + (isdigit(s[i]) ? s[i] - '0' : (tolower(s[i]) - 'a' + 10));
        i++;
    }
    if (i == 0) return -1;
    const unsigned char *nl = memchr(s + i, '\n', n - i);
    if (!nl) return -1;
    const unsigned char *p = s + i; /* then spaces, a ";extension" or CR only */
    while (p < nl && (*p == ' ' || *p == '\t')) p++;
    if (p < nl && *p != ';' && *p != '\r') return -1;
    *line = (size_t)(nl - s) + 1;
    return v;
}

/* Undoes chunked transfer encoding into out (capacity n); returns the
 * length, or -1 when the body does not start like a chunked body (some
 * crawlers store it decoded but keep the header).  A cut-short body keeps
 * what was there. */
static long long dechunk(const unsigned char *s, size_t n, unsigned char *out) {
    size_t i = 0, o = 0, line;
    for (int first = 1;; first = 0) {
        long long sz = chunk_size(s + i, n - i, &line);
        if (sz < 0) return first ? -1 : (long long)o;
        i += line;
        if (sz == 0) break;
        size_t k = (size_t)sz < n - i ? (size_t)sz : n - i;
        memcpy(out + o, s + i, k);
        o += k, i += k;
        if (i >= n) break;
        if (i < n && s[i] == '\r') i++;
        if (i < n && s[i] == '\n') i++;
    }
    return (long long)o;
}

typedef struct dbuf {
    unsigned char *p;
    size_t n, cap, max;
} dbuf;

/* Room for more output: 0, or -1 when past max. */
static int dbuf_room(dbuf *d) {
    if (d->n < d->cap) return 0;
    if (d->cap >= d->max) return -1;
    size_t nc = d->cap ? 2 * d->cap : 1 << 16;
    if (nc > d->max) nc = d->max;
    unsigned char *p = realloc(d->p, nc + 1);
    if (!p) return -1;
    d->p = p, d->cap = nc;
    return 0;
}

/* zlib with the given windowBits; 0 ok (a cut-short stream keeps what
 * decoded), -1 data error, -2 too large. */
static int inflate_body(const unsigned char *s, size_t n, int wbits, dbuf *d) {
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, wbits) != Z_OK) return -1;
    z.next_in = (unsigned char *)s;
    z.avail_in = (uInt)n;
    int rc = Z_OK;
    while (rc == Z_OK) {
        if (dbuf_room(d)) {
            rc = -2;
            break;
        }
        z.next_out = d->p + d->n;
        z.avail_out = (uInt)(d->cap - d->n);
        size_t before = z.avail_out;
        rc = inflate(&z, Z_NO_FLUSH);
        d->n += before - z.avail_out;
        if (rc == Z_BUF_ERROR && z.avail_in == 0)
            rc = Z_STREAM_END; /* cut short */
        else if (rc == Z_BUF_ERROR)
            rc = Z_OK; /* out of room */
    }
    inflateEnd(&z);
    return rc == Z_STREAM_END ? 0 : rc == -2 ? -2 : -1;
}

static int brotli_body(const unsigned char *s, size_t n, dbuf *d) {
    BrotliDecoderState *st = BrotliDecoderCreateInstance(NULL, NULL, NULL);
    if (!st) return -1;
    size_t in_left = n;
    const uint8_t *in = s;
    int rc = 0;
    for (;;) {
        if (dbuf_room(d)) {
            rc = -2;
            break;
        }
        size_t out_left = d->cap - d->n;
        uint8_t *out = d->p + d->n;
        BrotliDecoderResult r =
            BrotliDecoderDecompressStream(st, &in_left, &in, &out_left, &out, NULL);
        d->n = (size_t)(out - d->p);
        if (r == BROTLI_DECODER_RESULT_SUCCESS) break;
        if (r == BROTLI_DECODER_RESULT_NEEDS_MORE_OUTPUT) continue;
        if (r == BROTLI_DECODER_RESULT_NEEDS_MORE_INPUT) break; /* cut short */
        rc = -1;
        break;
    }
    BrotliDecoderDestroyInstance(st);
    return rc;
}

static int looks_like_markup(const unsigned char *s, size_t n) {
    size_t i = 0;
    if (n >= 3 && s[0] == 0xef && s[1] == 0xbb && s[2] == 0xbf) i = 3;
    while (i < n && isspace(s[i])) i++;
    return i < n && s[i] == '<';
}

/* The decoded body (malloc'ed, NUL-terminated) or NULL with *why set. */
static unsigned char *decode_body(const http_msg *m, size_t max, size_t *len, const char **why) {
    const unsigned char *s = m->body;
    size_t n = m->body_len;
    unsigned char *dechunked = NULL;
    if (m->chunked && (dechunked = malloc(n + 1))) {
        long long k = dechunk(s, n, dechunked);
        if (k >= 0) s = dechunked, n = (size_t)k;
    }
    dbuf d = {NULL, 0, 0, max};
    int rc = 0;
    const char *e = m->cenc;
    if (!*e || !strcasecmp(e, "identity") || !strcasecmp(e, "none")) {
        rc = 1; /* as is */
    } else if (!strcasecmp(e, "gzip") || !strcasecmp(e, "x-gzip")) {
        rc = inflate_body(s, n, 47, &d);
    } else if (!strcasecmp(e, "deflate")) {
        rc = inflate_body(s, n, 15, &d); /* zlib wrapper, as the RFC says */
        if (rc == -1) {
            d.n = 0;
            rc = inflate_body(s, n, -15, &d); /* raw deflate, as some servers send */
        }
    } else if (!strcasecmp(e, "br")) {
        rc = brotli_body(s, n, &d);
    } else {
        rc = -3;
    }
    /* Some crawlers store the decoded body but keep the header. */
    if ((rc == -1 || rc == -3) && looks_like_markup(s, n)) rc = 1;
    unsigned char *out = NULL;
    if (rc == 1) {
        if (n > max)
            *why = "too_large";
        else if ((out = malloc(n + 1)))
            memcpy(out, s, n), *len = n, out[n] = 0;
    } else if (rc == 0) {
        out = d.p, *len = d.n, d.p = NULL;
        if (!out && (out = malloc(1))) *len = 0;
        if (out) out[*len] = 0;
    } else {
        *why = rc == -2 ? "too_large" : rc == -3 ? "unsupported_encoding" : "decode_error";
    }
    if (!out && !*why) *why = "out_of_memory";
    free(d.p);
    free(dechunked);
    return out;
}

/* media type is HTML? (parameters after ';' ignored) */
static int is_html_type(const char *ct) {
    if (!ct) return 0;
    while (*ct == ' ' || *ct == '\t') ct++;
    size_t n = strcspn(ct, "; \t");
    return (n == 9 && !strncasecmp(ct, "text/html", 9)) ||
           (n == 21 && !strncasecmp(ct, "application/xhtml+xml", 21));
}

/* The charset parameter if libxml2 can convert it, else "" (detect). */
static void charset_of(const char *ct, char *out, size_t cap) {
    out[0] = 0;
    const char *p = ct ? strcasestr(ct, "charset=") : NULL;
    if (!p) return;
    p += 8;
    while (*p == ' ' || *p == '"' || *p == '\'') p++;
    size_t n = strcspn(p, "\"'; \t");
    if (n == 0 || n >= cap) return;
    memcpy(out, p, n);
    out[n] = 0;
    xmlCharEncodingHandlerPtr h = xmlFindCharEncodingHandler(out);
    if (!h)
        out[0] = 0;
    else
        xmlCharEncCloseFunc(h);
}

static int has_bom(const unsigned char *s, size_t n) {
    return (n >= 3 && s[0] == 0xef && s[1] == 0xbb && s[2] == 0xbf) ||
           (n >= 2 && ((s[0] == 0xfe && s[1] == 0xff) || (s[0] == 0xff && s[1] == 0xfe)));
}

/* ---- pages ----------------------------------------------------------- */

static json_t *str_or_null(const char *s) {
    json_t *v = s ? json_string(s) : NULL;
    return v ? v : json_null();
}

static json_t *int_or_null(long v) { return v >= 0 ? json_integer(v) : json_null(); }

static const char *url_reason(int rc) {
    switch (rc) {
    case ML_URL_EMPTY: return "no_url";
    case ML_URL_DATA: return "data_uri";
    case ML_URL_NOT_HTTP: return "not_http";
    default: return "bad_url";
    }
}

/* Applies the rules to the page's images: the kept ones as JSON. */
static int clean_images(ml_pages *p, const ml_html_page *pg, const ml_url_base *base,
                        json_t *images, ml_counts *dropped, ml_error *err) {
    ml_url_set_clear(&p->in_page);
    for (size_t i = 0; i < pg->nimages; i++) {
        const ml_html_image *im = &pg->images[i];
        ml_url u;
        int rc = ml_url_resolve(base, im->ref, &u);
        const char *why = rc != ML_URL_OK ? url_reason(rc) : ml_clean_image(p->rules, &u, im);
        if (!why) {
            int fresh = ml_url_set_add(&p->in_page, u.full, err);
            if (fresh < 0) {
                ml_url_free(&u);
                return -1;
            }
            if (!fresh) why = "duplicate_in_page";
        }
        if (!why) {
            int fresh = ml_url_set_add(&p->seen, u.full, err);
            if (fresh < 0) {
                ml_url_free(&u);
                return -1;
            }
            if (!fresh) why = "seen_on_earlier_page";
        }
        if (why) {
            ml_counts_add(dropped, why, 1);
        } else {
            json_t *o = json_object();
            if (!o) return ml_fail(err, "out of memory");
            json_object_set_new(o, "url", str_or_null(u.full));
            json_object_set_new(o, "alt", str_or_null(im->alt));
            json_object_set_new(o, "title", str_or_null(im->title));
            json_object_set_new(o, "width", int_or_null(im->width));
            json_object_set_new(o, "height", int_or_null(im->height));
            json_object_set_new(o, "caption", str_or_null(im->caption));
            json_object_set_new(o, "context", str_or_null(im->context));
            json_array_append_new(images, o);
        }
        ml_url_free(&u);
    }
    return 0;
}

/* One HTML document: extract, clean, emit (or count why not). */
static int do_page(ml_pages *p, const ml_warc_record *rec, const char *name,
                   const unsigned char *html, size_t len, const char *charset, ml_error *err) {
    ml_url_base *page_base = ml_url_base_new(rec->uri);
    if (!page_base) {
        ml_counts_add(&p->skipped, "bad_page_url", 1);
        return 0;
    }
    ml_html_page pg;
    ml_error perr;
    if (ml_html_extract((const char *)html, len, charset, &pg, &perr) != 0) {
        ml_url_base_free(page_base);
        ml_counts_add(&p->skipped, "html_parse_error", 1);
        return 0;
    }
    p->html_pages++;
    p->images_found += (long long)pg.nimages;
    ml_url_base *doc_base = pg.base ? ml_url_base_resolve(page_base, pg.base) : NULL;
    json_t *images = json_array();
    ml_counts dropped = {0};
    int rc = images ? clean_images(p, &pg, doc_base ? doc_base : page_base, images, &dropped, err)
                    : ml_fail(err, "out of memory");
    for (size_t i = 0; i < dropped.n; i++)
        ml_counts_add(&p->images_dropped, dropped.v[i].name, dropped.v[i].n);
    long long kept = images ? (long long)json_array_size(images) : 0;
    if (rc == 0 && (kept < p->rules->min_images || kept > p->rules->max_images)) {
        ml_counts_add(&p->pages_dropped,
                      kept < p->rules->min_images ? "too_few_images" : "too_many_images", 1);
    } else if (rc == 0) {
        char *url = ml_url_base_string(page_base);
        json_t *o = json_object();
        if (!o || !url) {
            rc = ml_fail(err, "out of memory");
        } else {
            json_object_set_new(o, "url", str_or_null(url));
            json_object_set_new(o, "title", str_or_null(pg.title));
            json_object_set_new(o, "lang", str_or_null(pg.lang));
            json_object_set(o, "images", images);
            json_object_set_new(o, "warc", str_or_null(name));
            json_object_set_new(o, "offset", json_integer(rec->offset));
            json_object_set_new(o, "dropped", ml_counts_json(&dropped));
            rc = p->emit ? p->emit(p->emit_ctx, o, err) : 0;
            if (rc == 0) {
                p->pages_out++;
                p->images_out += kept;
            }
        }
        json_decref(o);
        free(url);
    }
    json_decref(images);
    ml_counts_free(&dropped);
    ml_url_base_free(doc_base);
    ml_url_base_free(page_base);
    ml_html_page_free(&pg);
    return rc;
}

static int http_url(const char *u) {
    return u && (!strncasecmp(u, "http://", 7) || !strncasecmp(u, "https://", 8));
}

/* Why a record is not a candidate page, or NULL. */
static const char *record_filter(const ml_warc_record *rec) {
    if (rec->arc) return !strcmp(rec->type, "filedesc") ? "filedesc" : NULL;
    if (!strcmp(rec->type, "response") || !strcmp(rec->type, "resource")) return NULL;
    static const char *const known[] = {"request",  "revisit",    "warcinfo",
                                        "metadata", "conversion", "continuation"};
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        if (!strcmp(rec->type, known[i])) return known[i];
    return "other_type";
}

static int do_record(ml_pages *p, ml_warc_reader *r, const ml_warc_record *rec, const char *name,
                     ml_error *err) {
    const char *why = record_filter(rec);
    int resource = !rec->arc && !strcmp(rec->type, "resource");
    if (!why && rec->segmented) why = "segmented";
    if (!why && !http_url(rec->uri)) why = "not_http_url";
    if (!why && resource && !is_html_type(rec->content_type)) why = "not_html";
    if (why) {
        ml_counts_add(&p->skipped, why, 1);
        return 0;
    }
    unsigned char *block;
    size_t len;
    int brc = ml_warc_read_block(r, p->max_record, &block, &len, err);
    if (brc < 0) return -1;
    if (brc != ML_WARC_BLOCK_OK) {
        free(block);
        ml_counts_add(&p->skipped, brc == ML_WARC_BLOCK_TRUNCATED ? "truncated" : "too_large", 1);
        return 0;
    }
    http_msg m;
    if (resource) {
        memset(&m, 0, sizeof m);
        m.status = 200, m.body = block, m.body_len = len;
        snprintf(m.ctype, sizeof m.ctype, "%s", rec->content_type);
    } else if (http_parse(block, len, &m) != 0) {
        why = "bad_http";
    } else if (m.status < 200 || m.status > 299 || m.status == 204 || m.status == 206) {
        why = "http_status";
    } else if (!is_html_type(m.ctype[0] ? m.ctype : rec->arc ? rec->content_type : NULL)) {
        why = "not_html";
    }
    int rc = 0;
    if (!why) {
        size_t blen = 0;
        unsigned char *body = decode_body(&m, p->max_record, &blen, &why);
        if (body) {
            char charset[64];
            charset_of(m.ctype, charset, sizeof charset);
            rc = do_page(p, rec, name, body, blen,
                         charset[0] && !has_bom(body, blen) ? charset : NULL, err);
            free(body);
        }
    }
    if (why) ml_counts_add(&p->skipped, why, 1);
    free(block);
    return rc;
}

static void count_warning(void *ctx, const char *file, long long offset, const char *msg) {
    ml_pages *p = ctx;
    p->warnings++;
    if (p->warn) p->warn(p->warn_ctx, file, offset, msg);
}

int ml_pages_file(ml_pages *p, FILE *f, const char *name, ml_error *err) {
    ml_warc_reader *r = ml_warc_open(f, name, count_warning, p, err);
    if (!r) return -1;
    p->files++;
    ml_warc_record rec;
    int rc;
    while ((rc = ml_warc_next(r, &rec, err)) == 1) {
        p->records++;
        char type[40];
        snprintf(type, sizeof type, "%s%s", rec.arc ? "arc_" : "", rec.type[0] ? rec.type : "none");
        ml_counts_add(&p->record_types, type, 1);
        if (do_record(p, r, &rec, name, err) != 0) {
            rc = -1;
            break;
        }
        if (p->progress) p->progress(p->progress_ctx, ml_warc_consumed(r));
    }
    if (p->progress) p->progress(p->progress_ctx, ml_warc_consumed(r));
    ml_warc_close(r);
    return rc < 0 ? ml_fail_prefix(err, "%s", name) : 0;
}

int ml_pages_init(ml_pages *p, const ml_clean_rules *rules, ml_error *err) {
    memset(p, 0, sizeof *p);
    p->rules = rules;
    p->max_record = DEFAULT_MAX_RECORD;
    ml_html_init();
    if (ml_url_set_init(&p->seen, err) || ml_url_set_init(&p->in_page, err)) {
        ml_pages_free(p);
        return -1;
    }
    return 0;
}

void ml_pages_free(ml_pages *p) {
    ml_url_set_free(&p->seen);
    ml_url_set_free(&p->in_page);
    ml_counts_free(&p->record_types);
    ml_counts_free(&p->skipped);
    ml_counts_free(&p->pages_dropped);
    ml_counts_free(&p->images_dropped);
}

json_t *ml_pages_stats(const ml_pages *p) {
    return json_pack(
        "{sI sI so so sI sI so sI sI so sI}", "files", (json_int_t)p->files, "records",
        (json_int_t)p->records, "record_types", ml_counts_json(&p->record_types), "records_skipped",
        ml_counts_json(&p->skipped), "html_pages", (json_int_t)p->html_pages, "pages_out",
        (json_int_t)p->pages_out, "pages_dropped", ml_counts_json(&p->pages_dropped),
        "images_found", (json_int_t)p->images_found, "images_out", (json_int_t)p->images_out,
        "images_dropped", ml_counts_json(&p->images_dropped), "warnings", (json_int_t)p->warnings);
}
