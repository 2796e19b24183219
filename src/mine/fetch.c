/* fetch.c - the image downloader (see fetch.h). */
#include "mine/fetch.h"

#include <ctype.h>
#include <curl/curl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/error.h"
#include "core/progress.h" /* ml_now */

enum { OK = 0, ABORT_STATUS, ABORT_NOT_IMAGE, ABORT_TOO_BIG, ABORT_BAD_MAGIC };

typedef struct req {
    char *url;
    uint64_t tag;
    size_t host;
    int attempts;
    double not_before; /* a retry waits until then */
    struct req *next;  /* in the host queue, or the done list */
    CURL *easy;
    uint8_t *buf;
    size_t len, cap;
    int slot;         /* in running[] while active */
    int checked;      /* status and type of the final response looked at */
    int abort;        /* why the write callback stopped the transfer */
    const char *fail; /* set before starting: completes with this reason */
    long long max_bytes;
    char errbuf[CURL_ERROR_SIZE];
} req;

typedef struct host {
    char *name;
    int active, ready; /* ready: in the ready list */
    double next_start;
    req *head, *tail;
} host;

struct ml_fetcher {
    ml_fetch_opts o;
    ml_fetch_done_fn done;
    void *ctx;
    CURLM *multi;
    host *hosts;
    size_t nhosts, hcap;
    size_t *table, tcap; /* open addressing: host index + 1, 0 = empty */
    size_t *ready, nready, rcap;
    req *failed; /* completes at the next step without a transfer */
    size_t pending;
    req **running; /* the active transfers, `active` of them */
    int active;
    ml_fetch_counts counts;
};

void ml_fetch_opts_default(ml_fetch_opts *o) {
    *o = (ml_fetch_opts){.concurrency = 16,
                         .per_host = 2,
                         .rate = 0,
                         .timeout = 30,
                         .connect_timeout = 10,
                         .low_speed_bytes = 1024,
                         .low_speed_time = 10,
                         .retries = 2,
                         .backoff = 1,
                         .max_retry_after = 30,
                         .max_bytes = 20ll << 20,
                         .max_redirs = 5,
                         .user_agent = "magiclens-mine/1"};
}

const char *ml_image_magic(const uint8_t *p, size_t n) {
    if (n >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff) return "jpg";
    if (n >= 8 && !memcmp(p, "\x89PNG\r\n\x1a\n", 8)) return "png";
    if (n >= 6 && (!memcmp(p, "GIF87a", 6) || !memcmp(p, "GIF89a", 6))) return "gif";
    if (n >= 12 && !memcmp(p, "RIFF", 4) && !memcmp(p + 8, "WEBP", 4)) return "webp";
    return NULL;
}

/* ---- hosts ---------------------------------------------------------------- */

static uint64_t str_hash(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static int table_grow(ml_fetcher *f) {
    size_t cap = f->tcap ? 2 * f->tcap : 256;
    size_t *t = calloc(cap, sizeof *t);
    if (!t) return -1;
    for (size_t i = 0; i < f->nhosts; i++) {
        size_t k = str_hash(f->hosts[i].name) & (cap - 1);
        while (t[k]) k = (k + 1) & (cap - 1);
        t[k] = i + 1;
    }
    free(f->table);
    f->table = t, f->tcap = cap;
    return 0;
}

/* The index of host `name`, added when new; -1 when out of memory. */
static long host_index(ml_fetcher *f, const char *name) {
    if (2 * (f->nhosts + 1) > f->tcap && table_grow(f)) return -1;
    size_t k = str_hash(name) & (f->tcap - 1);
    for (; f->table[k]; k = (k + 1) & (f->tcap - 1))
        if (!strcmp(f->hosts[f->table[k] - 1].name, name)) return (long)f->table[k] - 1;
    if (f->nhosts == f->hcap) {
        size_t cap = f->hcap ? 2 * f->hcap : 64;
        host *h = realloc(f->hosts, cap * sizeof *h);
        if (!h) return -1;
        f->hosts = h, f->hcap = cap;
    }
    host *h = &f->hosts[f->nhosts];
    memset(h, 0, sizeof *h);
    if (!(h->name = strdup(name))) return -1;
    f->table[k] = ++f->nhosts;
    return (long)f->nhosts - 1;
}

static int mark_ready(ml_fetcher *f, size_t hi) {
    if (f->hosts[hi].ready) return 0;
    if (f->nready == f->rcap) {
        size_t cap = f->rcap ? 2 * f->rcap : 64;
        size_t *v = realloc(f->ready, cap * sizeof *v);
        if (!v) return -1;
        f->ready = v, f->rcap = cap;
    }
    f->ready[f->nready++] = hi;
    f->hosts[hi].ready = 1;
    return 0;
}

static int enqueue(ml_fetcher *f, req *q) {
    if (mark_ready(f, q->host)) return -1;
    host *h = &f->hosts[q->host];
    q->next = NULL;
    if (h->tail)
        h->tail->next = q;
    else
        h->head = q;
    h->tail = q;
    return 0;
}

/* ---- setup ---------------------------------------------------------------- */

ml_fetcher *ml_fetcher_new(const ml_fetch_opts *o, ml_fetch_done_fn done, void *ctx,
                           ml_error *err) {
    ml_fetcher *f = calloc(1, sizeof *f);
    int conc = o->concurrency < 1 ? 1 : o->concurrency;
    if (!f || !(f->multi = curl_multi_init()) ||
        !(f->running = calloc((size_t)conc, sizeof *f->running))) {
        if (f && f->multi) curl_multi_cleanup(f->multi);
        free(f);
        ml_fail(err, "out of memory");
        return NULL;
    }
    f->o = *o, f->done = done, f->ctx = ctx;
    f->o.concurrency = conc;
    if (f->o.per_host < 1) f->o.per_host = 1;
    return f;
}

static void req_free(req *q) {
    if (!q) return;
    if (q->easy) curl_easy_cleanup(q->easy);
    free(q->url), free(q->buf);
    free(q);
}

void ml_fetcher_free(ml_fetcher *f) {
    if (!f) return;
    for (size_t i = 0; i < f->nhosts; i++) {
        for (req *q = f->hosts[i].head, *n; q; q = n) n = q->next, req_free(q);
        free(f->hosts[i].name);
    }
    for (req *q = f->failed, *n; q; q = n) n = q->next, req_free(q);
    for (int i = 0; i < f->active; i++) { /* an error stopped the caller mid-run */
        curl_multi_remove_handle(f->multi, f->running[i]->easy);
        req_free(f->running[i]);
    }
    curl_multi_cleanup(f->multi);
    free(f->hosts), free(f->table), free(f->ready), free(f->running);
    free(f);
}

size_t ml_fetcher_pending(const ml_fetcher *f) { return f->pending; }

void ml_fetcher_counts(const ml_fetcher *f, ml_fetch_counts *c) { *c = f->counts; }

/* The lower-cased host of an absolute http(s) URL into *out (malloc'ed). */
static const char *url_host(const char *url, char **out) {
    CURLU *u = curl_url();
    char *scheme = NULL, *hostname = NULL;
    const char *why = NULL;
    if (!u) return "out of memory";
    if (curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &hostname, 0) != CURLUE_OK)
        why = "not an absolute URL";
    else if (strcasecmp(scheme, "http") && strcasecmp(scheme, "https"))
        why = "not http(s)";
    else if (!(*out = strdup(hostname)))
        why = "out of memory";
    else
        for (char *p = *out; *p; p++) *p = (char)tolower((unsigned char)*p);
    curl_free(scheme), curl_free(hostname);
    curl_url_cleanup(u);
    return why;
}

int ml_fetcher_add(ml_fetcher *f, const char *url, uint64_t tag, ml_error *err) {
    req *q = calloc(1, sizeof *q);
    char *name = NULL;
    const char *why = q && (q->url = strdup(url)) ? url_host(url, &name) : "out of memory";
    long hi = why ? 0 : host_index(f, name);
    free(name);
    if ((why && !strcmp(why, "out of memory")) || hi < 0) {
        req_free(q);
        return ml_fail(err, "out of memory");
    }
    q->tag = tag, q->max_bytes = f->o.max_bytes;
    if (why) { /* completes at the next step */
        q->fail = "bad_url";
        snprintf(q->errbuf, sizeof q->errbuf, "%s", why);
        q->next = f->failed, f->failed = q;
    } else if (q->host = (size_t)hi, enqueue(f, q)) {
        req_free(q);
        return ml_fail(err, "out of memory");
    }
    f->pending++;
    return 0;
}

/* ---- one transfer ----------------------------------------------------------- */

static int is_image_type(const char *ct) {
    if (!ct) return 0;
    while (*ct == ' ') ct++;
    return !strncasecmp(ct, "image/", 6);
}

static size_t on_data(char *p, size_t size, size_t nmemb, void *ud) {
    req *q = ud;
    size_t n = size * nmemb;
    if (!q->checked) {
        long code = 0;
        curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &code);
        if (code >= 300 && code < 400) return n; /* the body of a redirect: ignored */
        char *ct = NULL;
        curl_easy_getinfo(q->easy, CURLINFO_CONTENT_TYPE, &ct);
        q->abort = code < 200 || code >= 300 ? ABORT_STATUS
                   : !is_image_type(ct)      ? ABORT_NOT_IMAGE
                                             : OK;
        if (q->abort) return 0; /* no need for the rest */
        q->checked = 1;
        curl_off_t cl = -1;
        curl_easy_getinfo(q->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
        if (cl > 0 && cl <= q->max_bytes && !q->buf && (q->buf = malloc((size_t)cl)))
            q->cap = (size_t)cl;
    }
    if ((long long)(q->len + n) > q->max_bytes) {
        q->abort = ABORT_TOO_BIG;
        return 0;
    }
    if (q->len + n > q->cap) {
        size_t cap = q->cap ? q->cap : 65536;
        while (cap < q->len + n) cap *= 2;
        if ((long long)cap > q->max_bytes) cap = (size_t)q->max_bytes;
        uint8_t *b = realloc(q->buf, cap);
        if (!b) return 0; /* reported as a network error; the run goes on */
        q->buf = b, q->cap = cap;
    }
    size_t before = q->len;
    memcpy(q->buf + q->len, p, n);
    q->len += n;
    if (before < 12 && q->len >= 12 && !ml_image_magic(q->buf, q->len)) {
        q->abort = ABORT_BAD_MAGIC;
        return 0;
    }
    return n;
}

static int start(ml_fetcher *f, req *q) {
    const ml_fetch_opts *o = &f->o;
    CURL *e = q->easy = curl_easy_init();
    if (!e) return -1;
    q->len = 0, q->checked = 0, q->abort = OK, q->errbuf[0] = 0;
    curl_easy_setopt(e, CURLOPT_URL, q->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)q);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, q);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, q->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(e, CURLOPT_MAXREDIRS, (long)o->max_redirs);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(o->timeout * 1000));
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(fmin(o->connect_timeout, o->timeout) * 1000));
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, o->low_speed_bytes);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (long)fmax(1, ceil(o->low_speed_time)));
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)o->max_bytes);
    curl_easy_setopt(e, CURLOPT_USERAGENT, o->user_agent);
    if (curl_multi_add_handle(f->multi, e) != CURLM_OK) {
        curl_easy_cleanup(e), q->easy = NULL;
        return -1;
    }
    f->counts.requests++;
    q->attempts++;
    return 0;
}

/* Starts whatever the limits allow; *wake: when a waiting host can go next. */
static int start_ready(ml_fetcher *f, double now, double *wake) {
    size_t keep = 0;
    for (size_t r = 0; r < f->nready; r++) {
        size_t hi = f->ready[r];
        host *h = &f->hosts[hi];
        while (h->head && h->active < f->o.per_host && f->active < f->o.concurrency) {
            if (f->o.rate > 0 && h->next_start > now) {
                *wake = fmin(*wake, h->next_start);
                break;
            }
            req *prev = NULL, *q = h->head;
            for (; q && q->not_before > now; prev = q, q = q->next)
                *wake = fmin(*wake, q->not_before);
            if (!q) break;
            if (prev)
                prev->next = q->next;
            else
                h->head = q->next;
            if (h->tail == q) h->tail = prev;
            q->next = NULL;
            if (start(f, q)) {
                enqueue(f, q); /* cannot fail: the host is in the ready list */
                return -1;
            }
            q->slot = f->active;
            f->running[f->active++] = q;
            h->active++;
            if (f->o.rate > 0) h->next_start = now + 1.0 / f->o.rate;
            if (h->active > f->counts.max_active_per_host)
                f->counts.max_active_per_host = h->active;
            if (f->active > f->counts.max_active) f->counts.max_active = f->active;
        }
        if (h->head)
            f->ready[keep++] = hi;
        else
            h->ready = 0;
    }
    f->nready = keep;
    return 0;
}

static int retryable(const char *why, long status) {
    if (!strcmp(why, "timeout") || !strcmp(why, "connect_error") || !strcmp(why, "network_error"))
        return 1;
    return !strncmp(why, "http_", 5) && (status == 408 || status == 429 || status >= 500);
}

static const char *http_reason(long status) {
    static const char *const common[] = {"http_400", "http_401", "http_403", "http_404",
                                         "http_408", "http_410", "http_429", "http_500",
                                         "http_502", "http_503", "http_504"};
    static const long codes[] = {400, 401, 403, 404, 408, 410, 429, 500, 502, 503, 504};
    for (size_t i = 0; i < sizeof codes / sizeof *codes; i++)
        if (codes[i] == status) return common[i];
    return status >= 500 ? "http_5xx" : status >= 400 ? "http_4xx" : "http_other";
}

/* Why a finished transfer failed, or NULL when it is a usable image. */
static const char *classify(req *q, CURLcode rc, long status, const char *ct) {
    if (q->abort == ABORT_TOO_BIG || rc == CURLE_FILESIZE_EXCEEDED) return "too_big";
    if (q->abort == ABORT_NOT_IMAGE) return "not_image";
    if (q->abort == ABORT_BAD_MAGIC) return "bad_magic";
    if (q->abort == ABORT_STATUS || (rc == CURLE_OK && (status < 200 || status >= 300))) {
        snprintf(q->errbuf, sizeof q->errbuf, "HTTP %ld", status);
        return http_reason(status);
    }
    switch (rc) {
    case CURLE_OK:
        break;
    case CURLE_OPERATION_TIMEDOUT:
        return "timeout";
    case CURLE_COULDNT_CONNECT:
        return "connect_error";
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return "dns_error";
    case CURLE_TOO_MANY_REDIRECTS:
        return "too_many_redirects";
    case CURLE_UNSUPPORTED_PROTOCOL:
        return "bad_redirect"; /* added URLs are http(s) */
    case CURLE_URL_MALFORMAT:
        return "bad_url";
    default:
        return "network_error";
    }
    if (!is_image_type(ct)) return "not_image";
    if (q->len == 0) return "empty";
    if (!ml_image_magic(q->buf, q->len)) return "bad_magic";
    return NULL;
}

static void deliver(ml_fetcher *f, req *q, const char *why, long status, const char *final_url,
                    const char *ct) {
    ml_fetch_result r = {.reason = why,
                         .status = status,
                         .final_url = final_url,
                         .content_type = ct,
                         .attempts = q->attempts};
    if (why) {
        snprintf(r.detail, sizeof r.detail, "%s", q->errbuf[0] ? q->errbuf : why);
        size_t n = strlen(r.detail); /* curl's messages end with a newline at times */
        while (n && r.detail[n - 1] == '\n') r.detail[--n] = 0;
    } else {
        r.format = ml_image_magic(q->buf, q->len);
        r.data = q->buf, r.len = q->len;
        q->buf = NULL, q->cap = 0;
    }
    f->pending--;
    f->done(f->ctx, q->tag, &r);
    free(r.data); /* unless the callback took it */
}

static int finish(ml_fetcher *f, CURL *e, CURLcode rc) {
    req *q = NULL;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&q);
    curl_multi_remove_handle(f->multi, e);
    f->hosts[q->host].active--;
    f->running[q->slot] = f->running[--f->active];
    f->running[q->slot]->slot = q->slot;
    long status = 0;
    char *ct = NULL, *final_url = NULL;
    curl_off_t retry_after = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(e, CURLINFO_CONTENT_TYPE, &ct);
    curl_easy_getinfo(e, CURLINFO_EFFECTIVE_URL, &final_url);
    curl_easy_getinfo(e, CURLINFO_RETRY_AFTER, &retry_after);
    f->counts.bytes += (long long)q->len;
    const char *why = classify(q, rc, status, ct);
    if (why && q->attempts <= f->o.retries && retryable(why, status) &&
        (double)retry_after <= f->o.max_retry_after) {
        double wait = fmax(f->o.backoff * pow(2, q->attempts - 1), (double)retry_after);
        curl_easy_cleanup(e), q->easy = NULL;
        q->not_before = ml_now() + wait;
        f->counts.retries++;
        return enqueue(f, q);
    }
    if (why && (double)retry_after > f->o.max_retry_after && retryable(why, status))
        snprintf(q->errbuf, sizeof q->errbuf, "HTTP %ld, Retry-After %lld s is too long", status,
                 (long long)retry_after);
    deliver(f, q, why, status, final_url, ct);
    req_free(q);
    return 0;
}

static int drain(ml_fetcher *f, int *delivered) {
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(f->multi, &left)))
        if (m->msg == CURLMSG_DONE) {
            CURL *e = m->easy_handle;
            CURLcode rc = m->data.result;
            if (finish(f, e, rc)) return -1;
            ++*delivered;
        }
    return 0;
}

int ml_fetcher_step(ml_fetcher *f, double max_wait, ml_error *err) {
    int delivered = 0, running = 0;
    while (f->failed) {
        req *q = f->failed;
        f->failed = q->next;
        deliver(f, q, q->fail, 0, NULL, NULL);
        req_free(q);
        delivered++;
    }
    double now = ml_now(), wake = now + max_wait;
    if (start_ready(f, now, &wake)) return ml_fail(err, "cannot start a transfer (out of memory)");
    CURLMcode mc = curl_multi_perform(f->multi, &running);
    if (mc == CURLM_OK && drain(f, &delivered)) return ml_fail(err, "out of memory");
    if (mc == CURLM_OK && !delivered) {
        int ms = (int)ceil((wake - ml_now()) * 1000), nfds = 0;
        mc = curl_multi_poll(f->multi, NULL, 0, ms > 0 ? ms : 0, &nfds);
        if (mc == CURLM_OK) mc = curl_multi_perform(f->multi, &running);
        if (mc == CURLM_OK && drain(f, &delivered)) return ml_fail(err, "out of memory");
    }
    if (mc != CURLM_OK) return ml_fail(err, "curl: %s", curl_multi_strerror(mc));
    return delivered;
}
