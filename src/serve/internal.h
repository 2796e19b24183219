/* internal.h - state shared by the server's files (server.c: daemon,
 * connections, routing; handlers.c: the API). */
#ifndef ML_SERVE_INTERNAL_H
#define ML_SERVE_INTERNAL_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>

#include "index/searcher.h"
#include "serve/gate.h"
#include "serve/request.h"
#include "serve/serve.h"

/* An opened index shared by requests; freed by whoever drops the last
 * reference after it was replaced by a reload. */
typedef struct ml_ixref {
    ml_searcher *s;
    int refs;
} ml_ixref;

typedef struct ml_webfile {
    const char *url, *file, *type;
    char *data;
    size_t len;
} ml_webfile;

#define ML_WEB_FILES 3

typedef struct ml_server {
    const ml_serve_opts *o;
    ml_model *model;
    pthread_mutex_t model_mu; /* one forward pass at a time (see serve.h) */
    char fingerprint[33];
    pthread_mutex_t ix_mu;     /* guards cur and every refs count */
    ml_ixref *cur;
    pthread_mutex_t write_mu;  /* one reload or add at a time */
    ml_gate gate;
    ml_sreq_limits lim;
    ml_webfile web[ML_WEB_FILES];
} ml_server;

/* What a handler hands back: a status and either JSON or raw bytes. */
typedef struct ml_reply {
    int status;
    json_t *json;              /* owned */
    uint8_t *data;             /* owned (malloc) */
    size_t len;
    const char *type;          /* for data */
    const char *static_data;   /* not owned (web files, messages) */
    const char *cache;         /* Cache-Control value or NULL */
} ml_reply;

void ml_reply_error(ml_reply *r, int status, const char *msg);

ml_ixref *ml_ix_acquire(ml_server *S);
void ml_ix_release(ml_server *S, ml_ixref *ix);
/* Opens the index again and swaps it in.  0 or -1 (err set). */
int ml_ix_reload(ml_server *S, ml_error *err);

/* Handlers (handlers.c). */
void ml_handle_query(ml_server *S, ml_sreq *q, int embed_only, ml_reply *r);
void ml_handle_image(ml_server *S, const char *id, int thumb, ml_reply *r);
void ml_handle_add(ml_server *S, const char *body, size_t len, ml_reply *r);
void ml_handle_reload(ml_server *S, ml_reply *r);
void ml_handle_health(ml_server *S, ml_reply *r);
void ml_handle_metrics(ml_server *S, ml_reply *r);

#endif
