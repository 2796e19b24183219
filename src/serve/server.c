/* server.c - the libmicrohttpd daemon: listening socket, per-connection
 * state (body collection, multipart through MHD's post processor), routing,
 * responses with metrics and a log line, the shared index (reload), the web
 * files, and the signal loop.  The API itself is in handlers.c. */
#include <arpa/inet.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/error.h"
#include "core/fileio.h"
#include "core/progress.h"
#include "serve/internal.h"
#include "serve/metrics.h"

/* JSON bodies carry base64 images (4/3 larger) plus a few fields. */
#define BODY_SLACK 65536

/* ---- the shared index ---------------------------------------------------- */

ml_ixref *ml_ix_acquire(ml_server *S) {
    pthread_mutex_lock(&S->ix_mu);
    ml_ixref *ix = S->cur;
    ix->refs++;
    pthread_mutex_unlock(&S->ix_mu);
    return ix;
}

void ml_ix_release(ml_server *S, ml_ixref *ix) {
    pthread_mutex_lock(&S->ix_mu);
    int last = --ix->refs == 0 && ix != S->cur;
    pthread_mutex_unlock(&S->ix_mu);
    if (last) ml_searcher_close(ix->s), free(ix);
}

static ml_ixref *ix_open(ml_server *S, ml_error *err) {
    ml_searcher_opts so = {(ml_vec_type)-1, 1, 0, 0};
    ml_searcher *s = ml_searcher_open(S->o->index, &so, err);
    if (!s) return NULL;
    const ml_store_meta *m = ml_store_get_meta(ml_searcher_store(s));
    if (strcmp(m->fingerprint, S->fingerprint) != 0) {
        ml_fail(err, "the index was built with another model (%s, fingerprint %s; this one is %s)",
                m->model_name, m->fingerprint, S->fingerprint);
        ml_searcher_close(s);
        return NULL;
    }
    ml_ixref *ix = calloc(1, sizeof *ix);
    if (!ix) return ml_searcher_close(s), ml_fail(err, "out of memory"), NULL;
    ix->s = s;
    return ix;
}

/* The new index is opened while the old one keeps serving; the swap is a
 * pointer change, and the old one closes when its last request is done. */
int ml_ix_reload(ml_server *S, ml_error *err) {
    ml_ixref *ix = ix_open(S, err);
    ml_metrics_reload(ix != NULL);
    if (!ix) return -1;
    pthread_mutex_lock(&S->ix_mu);
    ml_ixref *old = S->cur;
    S->cur = ix;
    int unused = old && old->refs == 0;
    pthread_mutex_unlock(&S->ix_mu);
    if (unused) ml_searcher_close(old->s), free(old);
    return 0;
}

/* ---- connections --------------------------------------------------------- */

enum { BODY_NONE, BODY_JSON, BODY_FORM };

typedef struct conn {
    ml_server *S;
    double t0;
    int route, kind;
    const char *tail;      /* route argument (image id) inside the URL */
    char *body;
    size_t len, cap, received, limit;
    struct MHD_PostProcessor *pp;
    ml_sreq req;
    int status;            /* early failure while reading the body */
    ml_error err;
} conn;

typedef struct route {
    const char *path;
    int prefix, id, post, body;
} route;

static const route routes[] = {
    {"/", 0, ML_ROUTE_PAGE, 0, BODY_NONE},
    {"/index.html", 0, ML_ROUTE_PAGE, 0, BODY_NONE},
    {"/app.js", 0, ML_ROUTE_PAGE, 0, BODY_NONE},
    {"/style.css", 0, ML_ROUTE_PAGE, 0, BODY_NONE},
    {"/healthz", 0, ML_ROUTE_HEALTH, 0, BODY_NONE},
    {"/metrics", 0, ML_ROUTE_METRICS, 0, BODY_NONE},
    {"/api/search", 0, ML_ROUTE_SEARCH, 1, BODY_FORM},
    {"/api/embed", 0, ML_ROUTE_EMBED, 1, BODY_FORM},
    {"/api/images/", 1, ML_ROUTE_IMAGE, 0, BODY_NONE},
    {"/api/thumbs/", 1, ML_ROUTE_THUMB, 0, BODY_NONE},
    {"/api/admin/reload", 0, ML_ROUTE_RELOAD, 1, BODY_NONE},
    {"/api/admin/add", 0, ML_ROUTE_ADD, 1, BODY_JSON},
};
#define NROUTES (sizeof routes / sizeof routes[0])

static const route *find_route(const char *url, const char **tail) {
    for (size_t i = 0; i < NROUTES; i++) {
        size_t n = strlen(routes[i].path);
        if (routes[i].prefix ? !strncmp(url, routes[i].path, n) : !strcmp(url, routes[i].path)) {
            *tail = url + n;
            return &routes[i];
        }
    }
    return NULL;
}

static enum MHD_Result form_iter(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *filename, const char *ctype, const char *enc,
                                 const char *data, uint64_t off, size_t size) {
    conn *k = cls;
    (void)kind, (void)ctype, (void)enc;
    if (k->status) return MHD_NO;
    k->status = ml_sreq_form_chunk(&k->req, key, filename, data, off, size, &k->S->lim, &k->err);
    return k->status ? MHD_NO : MHD_YES;
}

static void fail_early(conn *k, int status, const char *msg) {
    if (!k->status) k->status = status, ml_fail(&k->err, "%s", msg);
}

/* Decides from the headers how the body will be read (or refused). */
static void start_body(conn *k, struct MHD_Connection *c, const route *rt) {
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    k->limit = k->S->o->max_upload / 3 * 4 + BODY_SLACK;
    if (cl && strtoull(cl, NULL, 10) > k->limit)
        return fail_early(k, 413, "the request body is larger than the upload limit");
    int is_json = ct && !strncasecmp(ct, "application/json", 16);
    int is_form = ct && !strncasecmp(ct, "multipart/form-data", 19);
    if (rt->body == BODY_NONE) return;
    if (is_json) {
        k->kind = BODY_JSON;
    } else if (is_form && rt->body == BODY_FORM) {
        k->kind = BODY_FORM;
        k->pp = MHD_create_post_processor(c, 65536, form_iter, k);
        if (!k->pp) fail_early(k, 400, "malformed multipart/form-data request (no boundary)");
    } else {
        fail_early(k, 415, rt->body == BODY_FORM
                               ? "send the query as application/json or multipart/form-data"
                               : "send the body as application/json");
    }
}

static void feed_body(conn *k, const char *data, size_t size) {
    k->received += size;
    if (k->status) return; /* already failed: drain and discard */
    if (k->received > k->limit) return fail_early(k, 413, "the request body is larger than the upload limit");
    if (k->kind == BODY_FORM) {
        if (MHD_post_process(k->pp, data, size) != MHD_YES)
            fail_early(k, 400, "malformed multipart/form-data body");
        return;
    }
    if (k->kind != BODY_JSON) return;
    if (k->len + size + 1 > k->cap) {
        size_t cap = (k->len + size + 1) * 2;
        char *p = realloc(k->body, cap);
        if (!p) return fail_early(k, 500, "out of memory");
        k->body = p, k->cap = cap;
    }
    memcpy(k->body + k->len, data, size);
    k->len += size;
}

static void conn_free(conn *k) {
    if (k->pp) MHD_destroy_post_processor(k->pp);
    ml_sreq_free(&k->req);
    free(k->body);
    free(k);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode why) {
    (void)cls, (void)c, (void)why;
    if (*con_cls) conn_free(*con_cls);
    *con_cls = NULL;
}

/* ---- responses ----------------------------------------------------------- */

static struct MHD_Response *make_response(ml_reply *r) {
    if (r->json) {
        char *s = json_dumps(r->json, JSON_COMPACT);
        if (!s) return NULL;
        struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
        if (resp) MHD_add_response_header(resp, "Content-Type", "application/json");
        else free(s);
        return resp;
    }
    struct MHD_Response *resp =
        r->data ? MHD_create_response_from_buffer(r->len, r->data, MHD_RESPMEM_MUST_FREE)
                : MHD_create_response_from_buffer(r->len, (void *)r->static_data, MHD_RESPMEM_PERSISTENT);
    if (!resp) return NULL;
    r->data = NULL; /* MHD owns it now */
    MHD_add_response_header(resp, "Content-Type", r->type);
    return resp;
}

static enum MHD_Result send_reply(conn *k, struct MHD_Connection *c, const char *method,
                                  const char *url, ml_reply *r) {
    if (!r->json && !r->data && !r->static_data) ml_reply_error(r, 500, "internal error");
    struct MHD_Response *resp = make_response(r);
    json_decref(r->json);
    free(r->data);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Cache-Control", r->cache ? r->cache : "no-store");
    if (r->status == 405) MHD_add_response_header(resp, "Allow", "GET, HEAD, POST");
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    double dt = ml_now() - k->t0;
    ml_metrics_observe(k->route, r->status, dt);
    if (!k->S->o->quiet) fprintf(stderr, "serve: %s %s %d %.1f ms\n", method, url, r->status, dt * 1e3);
    return ok;
}

/* ---- routing ------------------------------------------------------------- */

static int token_ok(ml_server *S, struct MHD_Connection *c) {
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    const char *t = S->o->token;
    if (!h || strncmp(h, "Bearer ", 7) != 0) return 0;
    h += 7;
    /* Compare every byte whatever the mismatch, so timing does not leak it. */
    size_t n = strlen(t), m = strlen(h);
    unsigned diff = (unsigned)(n ^ m);
    for (size_t i = 0; i < m; i++) diff |= (unsigned char)h[i] ^ (unsigned char)t[i % (n ? n : 1)];
    return n > 0 && diff == 0;
}

static void serve_page(ml_server *S, const char *url, ml_reply *r) {
    const char *want = !strcmp(url, "/") ? "/index.html" : url;
    for (int i = 0; i < ML_WEB_FILES; i++)
        if (!strcmp(S->web[i].url, want) && S->web[i].data) {
            r->status = 200, r->static_data = S->web[i].data, r->len = S->web[i].len;
            r->type = S->web[i].type;
            return;
        }
    ml_reply_error(r, 404, "the web page is not installed (start with --web DIR)");
}

static void finish_query(conn *k, int embed_only, ml_reply *r) {
    ml_server *S = k->S;
    ml_error err;
    int rc;
    if (k->kind == BODY_JSON) rc = ml_sreq_parse_json(&k->req, k->body ? k->body : "", k->len, &S->lim, &err);
    else {
        /* Destroying the post processor flushes it and reports a cut-off body. */
        int complete = MHD_destroy_post_processor(k->pp) == MHD_YES;
        k->pp = NULL;
        rc = complete ? ml_sreq_finish_form(&k->req, &S->lim, &err) : 400;
        if (!complete) ml_fail(&err, "malformed multipart/form-data body (incomplete)");
    }
    if (rc) return ml_reply_error(r, rc, err.msg);
    ml_handle_query(S, &k->req, embed_only, r);
}

static void dispatch(conn *k, struct MHD_Connection *c, const char *url, ml_reply *r) {
    ml_server *S = k->S;
    switch (k->route) {
    case ML_ROUTE_PAGE: return serve_page(S, url, r);
    case ML_ROUTE_HEALTH: return ml_handle_health(S, r);
    case ML_ROUTE_METRICS: return ml_handle_metrics(S, r);
    case ML_ROUTE_SEARCH: return finish_query(k, 0, r);
    case ML_ROUTE_EMBED: return finish_query(k, 1, r);
    case ML_ROUTE_IMAGE: return ml_handle_image(S, k->tail, 0, r);
    case ML_ROUTE_THUMB: return ml_handle_image(S, k->tail, 1, r);
    default: break;
    }
    if (!S->o->token) return ml_reply_error(r, 403, "admin endpoints are disabled (start the server with --token)");
    if (!token_ok(S, c)) return ml_reply_error(r, 401, "missing or wrong admin token (Authorization: Bearer TOKEN)");
    if (k->route == ML_ROUTE_RELOAD) return ml_handle_reload(S, r);
    ml_handle_add(S, k->body, k->len, r);
}

/* First call for a request: route it and decide how to read its body. */
static conn *conn_new(ml_server *S, struct MHD_Connection *c, const char *url, const char *method) {
    conn *k = calloc(1, sizeof *k);
    if (!k) return NULL;
    k->S = S, k->t0 = ml_now(), k->route = ML_ROUTE_OTHER;
    ml_sreq_init(&k->req);
    const route *rt = find_route(url, &k->tail);
    int is_get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    int is_post = !strcmp(method, "POST");
    if (!rt) fail_early(k, 404, "no such page or API endpoint");
    else if (rt->post ? !is_post : !is_get) fail_early(k, 405, "method not allowed for this URL");
    if (rt) k->route = rt->id;
    if (rt && !k->status) start_body(k, c, rt);
    return k;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls) {
    (void)version;
    conn *k = *con_cls;
    if (!k) {
        if (!(k = conn_new(cls, c, url, method))) return MHD_NO;
        *con_cls = k;
        /* Refuse an oversized body from its headers, before reading it. */
        if (k->status == 413) goto reply;
        return MHD_YES;
    }
    if (*upload_size) {
        feed_body(k, upload, *upload_size);
        *upload_size = 0;
        /* A refused body is read and dropped so the client sees the answer;
         * one that keeps coming past twice the limit is cut off. */
        return k->status && k->received > 2 * k->limit ? MHD_NO : MHD_YES;
    }
reply:;
    ml_reply r = {0};
    if (k->status) ml_reply_error(&r, k->status, k->err.msg);
    else dispatch(k, c, url, &r);
    return send_reply(k, c, method, url, &r);
}

/* ---- start-up ------------------------------------------------------------ */

static void load_web(ml_server *S) {
    static const ml_webfile files[ML_WEB_FILES] = {
        {"/index.html", "index.html", "text/html; charset=utf-8", NULL, 0},
        {"/app.js", "app.js", "text/javascript; charset=utf-8", NULL, 0},
        {"/style.css", "style.css", "text/css; charset=utf-8", NULL, 0}};
    for (int i = 0; i < ML_WEB_FILES; i++) {
        S->web[i] = files[i];
        if (!S->o->web_dir) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", S->o->web_dir, files[i].file);
        ml_error err;
        unsigned char *data = NULL;
        if (ml_read_all(path, 4 << 20, &data, &S->web[i].len, &err) != 0)
            fprintf(stderr, "serve: web page file missing: %s\n", err.msg);
        S->web[i].data = (char *)data;
    }
}

/* Binds host:port ourselves so that port 0 works and the bound port can be
 * printed (tests parse it). */
static int listen_socket(const char *host, int port, int *bound) {
    struct addrinfo hints = {0}, *ai = NULL;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    hints.ai_family = AF_UNSPEC, hints.ai_socktype = SOCK_STREAM, hints.ai_flags = AI_PASSIVE;
    int rc = getaddrinfo(host, ps, &hints, &ai);
    if (rc != 0) return fprintf(stderr, "serve: %s: %s\n", host, gai_strerror(rc)), -1;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 256) != 0) {
        perror("serve: bind");
        if (fd >= 0) close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    *bound = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                            : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

static struct MHD_Daemon *start_daemon(ml_server *S, int fd) {
    const ml_serve_opts *o = S->o;
    return MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG, 0, NULL,
        NULL, on_request, S, MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)o->max_conns, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)o->timeout_s,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, S, MHD_OPTION_END);
}

/* Waits for signals in this thread (blocked in all others): SIGHUP reloads,
 * SIGINT / SIGTERM stop. */
static void signal_loop(ml_server *S, const sigset_t *set) {
    for (;;) {
        int sig = 0;
        if (sigwait(set, &sig) != 0 || sig != SIGHUP) return;
        ml_error err;
        pthread_mutex_lock(&S->write_mu);
        int rc = ml_ix_reload(S, &err);
        pthread_mutex_unlock(&S->write_mu);
        if (rc) fprintf(stderr, "serve: reload failed, still serving the old index: %s\n", err.msg);
        else fprintf(stderr, "serve: index reloaded\n");
    }
}

static int server_init(ml_server *S, ml_model *m, const ml_serve_opts *o, ml_error *err) {
    memset(S, 0, sizeof *S);
    S->o = o, S->model = m;
    S->lim = (ml_sreq_limits){o->max_upload, o->max_text, o->max_k};
    ml_model_fingerprint(m, S->fingerprint);
    pthread_mutex_init(&S->model_mu, NULL);
    pthread_mutex_init(&S->ix_mu, NULL);
    pthread_mutex_init(&S->write_mu, NULL);
    if (ml_gate_init(&S->gate, o->workers, o->queue) != 0) return ml_fail(err, "gate init failed");
    load_web(S);
    return (S->cur = ix_open(S, err)) ? 0 : -1;
}

static void server_free(ml_server *S) {
    if (S->cur) ml_searcher_close(S->cur->s), free(S->cur);
    for (int i = 0; i < ML_WEB_FILES; i++) free(S->web[i].data);
    ml_gate_destroy(&S->gate);
    pthread_mutex_destroy(&S->model_mu);
    pthread_mutex_destroy(&S->ix_mu);
    pthread_mutex_destroy(&S->write_mu);
    ml_model_free(S->model);
}

int ml_serve_run(ml_model *model, const ml_serve_opts *o) {
    ml_server S;
    ml_error err;
    if (server_init(&S, model, o, &err) != 0) {
        fprintf(stderr, "serve: %s: %s\n", o->index, err.msg);
        server_free(&S);
        return 1;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP), sigaddset(&set, SIGINT), sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* inherited by MHD's threads */
    signal(SIGPIPE, SIG_IGN);
    int port = 0, fd = listen_socket(o->host, o->port, &port);
    struct MHD_Daemon *d = fd >= 0 ? start_daemon(&S, fd) : NULL;
    if (!d) {
        if (fd >= 0) fprintf(stderr, "serve: could not start the HTTP daemon\n"), close(fd);
        server_free(&S);
        return 1;
    }
    printf("listening on http://%s%s%s:%d (%zu items)\n", strchr(o->host, ':') ? "[" : "", o->host,
           strchr(o->host, ':') ? "]" : "", port, ml_store_count(ml_searcher_store(S.cur->s)));
    fflush(stdout);
    signal_loop(&S, &set);
    fprintf(stderr, "serve: stopping\n");
    MHD_stop_daemon(d);
    close(fd);
    server_free(&S);
    return 0;
}
