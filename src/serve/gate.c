/* gate.c - admission control (see gate.h). */
#include "serve/gate.h"

#include <errno.h>
#include <time.h>

int ml_gate_init(ml_gate *g, int slots, int queue) {
    g->slots = slots > 0 ? slots : 1;
    g->queue = queue >= 0 ? queue : 0;
    g->running = g->waiting = 0;
    if (pthread_mutex_init(&g->mu, NULL) != 0) return -1;
    /* Deadlines use CLOCK_MONOTONIC so a wall-clock jump cannot stall a wait. */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&g->cv, &ca);
    pthread_condattr_destroy(&ca);
    return rc == 0 ? 0 : -1;
}

void ml_gate_destroy(ml_gate *g) {
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
}

static struct timespec deadline_after(double s) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long long ns = ts.tv_nsec + (long long)(s * 1e9);
    ts.tv_sec += (time_t)(ns / 1000000000LL);
    ts.tv_nsec = (long)(ns % 1000000000LL);
    return ts;
}

int ml_gate_enter(ml_gate *g, double timeout_s) {
    pthread_mutex_lock(&g->mu);
    if (g->running < g->slots && g->waiting == 0) {
        g->running++;
        pthread_mutex_unlock(&g->mu);
        return ML_GATE_OK;
    }
    if (g->waiting >= g->queue) {
        pthread_mutex_unlock(&g->mu);
        return ML_GATE_FULL;
    }
    struct timespec dl = deadline_after(timeout_s);
    g->waiting++;
    int rc = 0;
    while (g->running >= g->slots && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&g->cv, &g->mu, &dl);
    g->waiting--;
    int got = g->running < g->slots;
    if (got) g->running++;
    pthread_mutex_unlock(&g->mu);
    return got ? ML_GATE_OK : ML_GATE_TIMEOUT;
}

void ml_gate_leave(ml_gate *g) {
    pthread_mutex_lock(&g->mu);
    g->running--;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

void ml_gate_load(ml_gate *g, int *running, int *waiting) {
    pthread_mutex_lock(&g->mu);
    *running = g->running, *waiting = g->waiting;
    pthread_mutex_unlock(&g->mu);
}
