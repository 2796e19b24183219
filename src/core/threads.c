#include "core/threads.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "magiclens.h"

#define ML_MAX_THREADS 256

/* Process-wide setting: 0 = not set yet (use MAGICLENS_THREADS or all cores). */
static atomic_int g_threads = 0;

void ml_set_threads(int n) { atomic_store(&g_threads, n > 0 ? n : 0); }

/* The CPUs this process may run on (taskset, cgroups' cpusets), not every
 * CPU of the machine: more threads than that only time-slice. */
static int cpus_allowed(void) {
#if defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
#endif
    return (int)sysconf(_SC_NPROCESSORS_ONLN);
}

int ml_num_threads(void) {
    int n = atomic_load(&g_threads);
    if (n > 0) return n;
    const char *env = getenv("MAGICLENS_THREADS");
    if (env && atoi(env) > 0) n = atoi(env);
    else n = cpus_allowed();
    if (n < 1) n = 1;
    if (n > ML_MAX_THREADS) n = ML_MAX_THREADS;
    return n;
}

/* A persistent pool: creating threads per call costs ~50 us, more than a
 * small text-tower matmul.  Workers sleep on a condition variable between
 * jobs.  One job runs at a time: a second caller (another API thread, or a
 * nested call from inside a job) runs its work serially instead of waiting,
 * which keeps nesting deadlock-free and the result independent of timing. */
typedef struct pool {
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    pthread_mutex_t busy;       /* held by the caller that owns the current job */
    int workers;                /* started so far (grow-only) */
    unsigned long generation;   /* bumped per job */
    int pending;                /* workers yet to finish the current job */
    ml_range_fn fn;
    void *ctx;
    int n, parts;
} pool;

static pool g_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                      PTHREAD_COND_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, NULL, NULL, 0, 0};
static _Thread_local int t_in_job; /* set while this thread runs pool work */

static void run_part(ml_range_fn fn, void *ctx, int n, int part, int parts) {
    int b = (int)((long long)n * part / parts), e = (int)((long long)n * (part + 1) / parts);
    if (b < e) fn(ctx, b, e);
}

static void *worker_main(void *arg) {
    pool *p = &g_pool;
    int id = (int)(long)arg; /* runs part id + 1; the caller runs part 0 */
    unsigned long seen = 0;
    t_in_job = 1;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->generation == seen) pthread_cond_wait(&p->wake, &p->mu);
        seen = p->generation;
        if (id + 1 < p->parts) {
            ml_range_fn fn = p->fn;
            void *ctx = p->ctx;
            int n = p->n, parts = p->parts;
            pthread_mutex_unlock(&p->mu);
            run_part(fn, ctx, n, id + 1, parts);
            pthread_mutex_lock(&p->mu);
            if (--p->pending == 0) pthread_cond_signal(&p->done);
        }
    }
    return NULL;
}

/* Starts workers up to `want`; returns how many exist. */
static int pool_grow(pool *p, int want) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    while (p->workers < want) {
        pthread_t tid;
        if (pthread_create(&tid, &attr, worker_main, (void *)(long)p->workers) != 0) break;
        p->workers++;
    }
    pthread_attr_destroy(&attr);
    return p->workers;
}

void ml_parallel_for(int n, int grain, ml_range_fn fn, void *ctx) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    int t = ml_num_threads();
    if (t > n / grain) t = n / grain;
    pool *p = &g_pool;
    if (t <= 1 || t_in_job || pthread_mutex_trylock(&p->busy) != 0) {
        fn(ctx, 0, n);
        return;
    }
    pthread_mutex_lock(&p->mu);
    /* If fewer threads could be started, the job is split into fewer parts:
     * the ranges still cover [0, n). */
    int parts = pool_grow(p, t - 1) + 1;
    if (parts > t) parts = t;
    p->fn = fn, p->ctx = ctx, p->n = n, p->parts = parts;
    p->pending = parts - 1;
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    t_in_job = 1;
    run_part(fn, ctx, n, 0, parts);
    t_in_job = 0;
    pthread_mutex_lock(&p->mu);
    while (p->pending > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_unlock(&p->busy);
}
