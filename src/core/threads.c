#include "core/threads.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "magiclens.h"

#define ML_MAX_THREADS 256

/* Process-wide setting: 0 = not set yet (use MAGICLENS_THREADS or all cores). */
static atomic_int g_threads = 0;

void ml_set_threads(int n) { atomic_store(&g_threads, n > 0 ? n : 0); }

int ml_num_threads(void) {
    int n = atomic_load(&g_threads);
    if (n > 0) return n;
    const char *env = getenv("MAGICLENS_THREADS");
    if (env && atoi(env) > 0) n = atoi(env);
    else n = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    if (n > ML_MAX_THREADS) n = ML_MAX_THREADS;
    return n;
}

typedef struct {
    ml_range_fn fn;
    void *ctx;
    int begin, end;
} range_job;

static void *run_range(void *arg) {
    range_job *j = arg;
    j->fn(j->ctx, j->begin, j->end);
    return NULL;
}

void ml_parallel_for(int n, int grain, ml_range_fn fn, void *ctx) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    int t = ml_num_threads();
    if (t > n / grain) t = n / grain;
    if (t <= 1) {
        fn(ctx, 0, n);
        return;
    }
    range_job jobs[ML_MAX_THREADS];
    pthread_t tids[ML_MAX_THREADS];
    int started[ML_MAX_THREADS] = {0};
    for (int i = 0; i < t; i++) {
        jobs[i] = (range_job){fn, ctx, (int)((long long)n * i / t), (int)((long long)n * (i + 1) / t)};
    }
    /* Thread 0's range runs on the caller; if a thread cannot be created its
     * range also runs here, so the result never depends on thread creation. */
    for (int i = 1; i < t; i++) started[i] = pthread_create(&tids[i], NULL, run_range, &jobs[i]) == 0;
    run_range(&jobs[0]);
    for (int i = 1; i < t; i++) {
        if (started[i]) pthread_join(tids[i], NULL);
        else run_range(&jobs[i]);
    }
}
