/* fetch.h - a polite, bounded image downloader on libcurl's multi interface.
 *
 * Requests are queued per host (the lower-cased host name of the URL as
 * given) and started when the total number of transfers is under
 * `concurrency`, the host's is under `per_host`, and the host's last start
 * was at least 1/rate seconds ago.  Every transfer is bounded: connect and
 * total timeouts, a low-speed limit (a trickling server is cut off), a size
 * cap checked against Content-Length and again while the body arrives, at
 * most `max_redirs` redirects and only to http/https.  A response is
 * accepted when its status is 2xx, its Content-Type is image/..., and its
 * first bytes are a JPEG, PNG, WebP or GIF signature.
 *
 * Timeouts, connection errors, 408, 429 and 5xx are retried up to `retries`
 * times after backoff * 2^(attempt-1) seconds, or the server's Retry-After
 * when that is longer but at most max_retry_after (a longer one gives up at
 * once).  Other failures (404, 403, a refused redirect, a wrong type) are
 * final.
 *
 * Single-threaded: call ml_fetcher_step in a loop; results come back through
 * the callback, in completion order (the caller restores any order it
 * needs). */
#ifndef ML_MINE_FETCH_H
#define ML_MINE_FETCH_H

#include <stddef.h>
#include <stdint.h>

#include "magiclens.h"

typedef struct ml_fetch_opts {
    int concurrency, per_host;
    double rate;            /* starts per second per host; 0: no limit */
    double timeout;         /* seconds per attempt, all included */
    double connect_timeout; /* seconds */
    long low_speed_bytes;   /* abort when slower than this many bytes/s ... */
    double low_speed_time;  /* ... for this many seconds */
    int retries;
    double backoff, max_retry_after; /* seconds */
    long long max_bytes;
    int max_redirs;
    const char *user_agent;
} ml_fetch_opts;

void ml_fetch_opts_default(ml_fetch_opts *o);

/* The outcome of one URL.  On success reason is NULL and data/len/format
 * are set; otherwise reason is a short counter name (http_404, timeout,
 * connect_error, dns_error, network_error, too_big, not_image, bad_magic,
 * empty, too_many_redirects, bad_redirect, bad_url) and detail says more. */
typedef struct ml_fetch_result {
    const char *reason;
    char detail[256];
    long status;           /* last HTTP status, 0 if none */
    const char *final_url; /* after redirects (valid during the callback) */
    const char *content_type;
    const char *format; /* "jpg", "png", "webp", "gif" */
    uint8_t *data;      /* malloc'ed: the callback may take it (set to NULL) */
    size_t len;
    int attempts;
} ml_fetch_result;

/* Called once per added URL.  It must not call back into the fetcher. */
typedef void (*ml_fetch_done_fn)(void *ctx, uint64_t tag, ml_fetch_result *r);

typedef struct ml_fetcher ml_fetcher;

/* curl_global_init must have been called (before any thread started). */
ml_fetcher *ml_fetcher_new(const ml_fetch_opts *o, ml_fetch_done_fn done, void *ctx, ml_error *err);
void ml_fetcher_free(ml_fetcher *f);
/* Queues a URL; a URL that is not absolute http(s) completes at the next
 * step with reason bad_url.  -1 only when out of memory. */
int ml_fetcher_add(ml_fetcher *f, const char *url, uint64_t tag, ml_error *err);
/* Queued + running + waiting for a retry. */
size_t ml_fetcher_pending(const ml_fetcher *f);
/* Starts what may start, waits up to max_wait seconds for network activity,
 * and delivers the finished results.  -1 on a curl failure. */
int ml_fetcher_step(ml_fetcher *f, double max_wait, ml_error *err);

/* Counters since ml_fetcher_new. */
typedef struct ml_fetch_counts {
    long long requests, retries, bytes, max_active, max_active_per_host;
} ml_fetch_counts;
void ml_fetcher_counts(const ml_fetcher *f, ml_fetch_counts *c);

/* "jpg", "png", "webp", "gif" from the first bytes, else NULL. */
const char *ml_image_magic(const uint8_t *p, size_t n);

#endif
