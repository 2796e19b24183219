/* metrics.h - request counters and latency histograms for GET /metrics
 * (Prometheus text format 0.0.4). */
#ifndef ML_SERVE_METRICS_H
#define ML_SERVE_METRICS_H

#include <stddef.h>

enum {
    ML_ROUTE_PAGE, ML_ROUTE_SEARCH, ML_ROUTE_EMBED, ML_ROUTE_IMAGE, ML_ROUTE_THUMB,
    ML_ROUTE_HEALTH, ML_ROUTE_METRICS, ML_ROUTE_RELOAD, ML_ROUTE_ADD, ML_ROUTE_OTHER,
    ML_ROUTE_COUNT
};

/* Records one finished request. */
void ml_metrics_observe(int route, int status, double seconds);
void ml_metrics_reload(int ok);
/* Renders everything plus the given gauges; returns a malloc'ed string. */
typedef struct ml_gauges {
    int running, waiting, workers, queue;
    long long items;
} ml_gauges;
char *ml_metrics_render(const ml_gauges *g, size_t *len);

#endif
