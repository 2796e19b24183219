/* serve.h - `magiclens serve`: an HTTP server (libmicrohttpd) over one index.
 *
 * Routes (docs/serve.md has the full API):
 *   GET  /  /app.js  /style.css        the web page (read once at start-up)
 *   POST /api/search  /api/embed       multipart upload or JSON
 *   GET  /api/images/{id}  /api/thumbs/{id}   indexed items only
 *   GET  /healthz  /metrics
 *   POST /api/admin/reload  /api/admin/add    need the start-up token
 *
 * Threads: libmicrohttpd runs one thread per connection (bounded by
 * max_conns); the expensive part of a request (decode, model, search,
 * thumbnail) must pass an admission gate of `workers` slots with at most
 * `queue` requests waiting, so a burst gets 503 instead of an unbounded
 * backlog.  The model is shared behind one mutex: each forward pass already
 * uses every core through the kernel thread pool, so running two at once
 * would only make both slower.  The index is shared read-only and swapped
 * atomically on reload (reference counted, so in-flight requests finish on
 * the index they started with). */
#ifndef ML_SERVE_SERVE_H
#define ML_SERVE_SERVE_H

#include <stddef.h>

#include "magiclens.h"

typedef struct ml_serve_opts {
    const char *index;      /* index folder */
    const char *model_name; /* recorded in the index by /api/admin/add */
    const char *host;       /* bind address (default 127.0.0.1) */
    int port;               /* 0: any free port (printed) */
    const char *web_dir;    /* folder with index.html, app.js, style.css (NULL: none) */
    const char *token;      /* admin token (NULL: admin endpoints disabled) */
    int workers, queue;     /* admission gate: running and waiting requests */
    int max_conns;          /* open connections */
    int timeout_s;          /* idle connection timeout and longest queue wait */
    size_t max_upload;      /* request body bytes */
    long long max_pixels;   /* decoded image pixels */
    size_t max_text;        /* instruction bytes */
    int max_k;              /* k + offset */
    int quiet;              /* no per-request log lines */
} ml_serve_opts;

/* Serves until SIGINT/SIGTERM; SIGHUP reloads the index.  Call it with those
 * three signals already blocked if other threads exist (the kernel pool).  Takes over the
 * model (frees it).  Prints "listening on http://HOST:PORT" to stdout once
 * the socket is bound.  Returns a process exit status. */
int ml_serve_run(ml_model *model, const ml_serve_opts *o);

#endif
