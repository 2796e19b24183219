/* metrics.c - see metrics.h.  One mutex guards everything: an update is a
 * few additions, far cheaper than the request it records. */
#include "serve/metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const route_names[ML_ROUTE_COUNT] = {
    "page", "search", "embed", "image", "thumb", "healthz", "metrics", "reload", "add", "other"};
static const double buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                 0.25,  0.5,    1,     2.5,  5,     10};
#define NBUCKETS (sizeof buckets / sizeof buckets[0])

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned long long g_count[ML_ROUTE_COUNT][600]; /* by status code */
static unsigned long long g_hist[ML_ROUTE_COUNT][NBUCKETS + 1];
static double g_sum[ML_ROUTE_COUNT];
static unsigned long long g_reloads[2];

void ml_metrics_observe(int route, int status, double seconds) {
    if (route < 0 || route >= ML_ROUTE_COUNT) route = ML_ROUTE_OTHER;
    if (status < 100 || status > 599) status = 500;
    size_t b = 0;
    while (b < NBUCKETS && seconds > buckets[b]) b++;
    pthread_mutex_lock(&g_mu);
    g_count[route][status]++;
    g_hist[route][b]++;
    g_sum[route] += seconds;
    pthread_mutex_unlock(&g_mu);
}

void ml_metrics_reload(int ok) {
    pthread_mutex_lock(&g_mu);
    g_reloads[ok ? 1 : 0]++;
    pthread_mutex_unlock(&g_mu);
}

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void put(sbuf *b, const char *fmt, ...) {
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = b->oom ? 0 : vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (b->oom || n < 0) return;
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)n;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q, b->cap = cap;
    }
}

static void render_counts(sbuf *b) {
    put(b, "# HELP magiclens_requests_total HTTP requests by route and status code.\n"
           "# TYPE magiclens_requests_total counter\n");
    for (int r = 0; r < ML_ROUTE_COUNT; r++)
        for (int s = 100; s < 600; s++)
            if (g_count[r][s])
                put(b, "magiclens_requests_total{route=\"%s\",code=\"%d\"} %llu\n", route_names[r],
                    s, g_count[r][s]);
}

static void render_hist(sbuf *b) {
    put(b, "# HELP magiclens_request_duration_seconds Time from request start to response.\n"
           "# TYPE magiclens_request_duration_seconds histogram\n");
    for (int r = 0; r < ML_ROUTE_COUNT; r++) {
        unsigned long long cum = 0;
        for (size_t k = 0; k <= NBUCKETS; k++) {
            cum += g_hist[r][k];
            if (k < NBUCKETS)
                put(b, "magiclens_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n",
                    route_names[r], buckets[k], cum);
            else
                put(b, "magiclens_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n",
                    route_names[r], cum);
        }
        put(b, "magiclens_request_duration_seconds_sum{route=\"%s\"} %.6f\n", route_names[r],
            g_sum[r]);
        put(b, "magiclens_request_duration_seconds_count{route=\"%s\"} %llu\n", route_names[r],
            cum);
    }
}

static void render_gauges(sbuf *b, const ml_gauges *g) {
    put(b, "# HELP magiclens_queue_length Requests waiting for a worker slot.\n"
           "# TYPE magiclens_queue_length gauge\nmagiclens_queue_length %d\n", g->waiting);
    put(b, "# HELP magiclens_workers_busy Worker slots in use.\n"
           "# TYPE magiclens_workers_busy gauge\nmagiclens_workers_busy %d\n", g->running);
    put(b, "# HELP magiclens_workers Worker slots.\n"
           "# TYPE magiclens_workers gauge\nmagiclens_workers %d\n", g->workers);
    put(b, "# HELP magiclens_queue_capacity Longest allowed queue; beyond it requests get 503.\n"
           "# TYPE magiclens_queue_capacity gauge\nmagiclens_queue_capacity %d\n", g->queue);
    put(b, "# HELP magiclens_index_items Live items in the served index.\n"
           "# TYPE magiclens_index_items gauge\nmagiclens_index_items %lld\n", g->items);
    put(b, "# HELP magiclens_reloads_total Index reloads by result.\n"
           "# TYPE magiclens_reloads_total counter\n"
           "magiclens_reloads_total{result=\"ok\"} %llu\n"
           "magiclens_reloads_total{result=\"error\"} %llu\n", g_reloads[1], g_reloads[0]);
}

char *ml_metrics_render(const ml_gauges *g, size_t *len) {
    sbuf b = {malloc(8192), 0, 8192, 0};
    if (!b.p) return NULL;
    pthread_mutex_lock(&g_mu);
    render_counts(&b);
    render_hist(&b);
    render_gauges(&b, g);
    pthread_mutex_unlock(&g_mu);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}
