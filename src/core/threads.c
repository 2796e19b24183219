#include "core/threads.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
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
 * small text-tower matmul.  Workers spin briefly, then sleep on a condition
 * variable between jobs (see ML_SPIN_US).  One job runs at a time: a second
 * caller (another API thread, or a nested call from inside a job) runs its
 * work serially instead of waiting, which keeps nesting deadlock-free and
 * the result independent of timing. */
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

/* Between two jobs of a model pass there are only microseconds, but a
 * futex sleep and wake-up costs ~35 us on the VMs measured (the woken
 * thread's CPU had gone idle), paid by every one of the ~90 parallel
 * regions of a ViT-B pass.  So a waiting thread first spins for up to
 * ML_SPIN_US on the value it waits for, then sleeps as before: +4% bf16
 * images/s (A/B, medians of 6 runs), while an idle pool still costs no CPU
 * after that moment. */
#ifndef ML_SPIN_US
#define ML_SPIN_US 50
#endif

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec * 1e-3;
}

/* One pause of a spin that began at `start` (us); 0 once ML_SPIN_US have
 * passed (the clock is read every 32 pauses). */
static int spin_on(int i, double start) {
    cpu_relax();
    return i % 32 != 0 || now_us() < start + ML_SPIN_US;
}

/* Spins while *v == val (atomic reads, no lock), for up to ML_SPIN_US. */
static void spin_while_ul(unsigned long *v, unsigned long val) {
    double start = now_us();
    for (int i = 1; __atomic_load_n(v, __ATOMIC_ACQUIRE) == val && spin_on(i, start); i++) {}
}

/* Spins while *v != 0, likewise. */
static void spin_until_zero(int *v) {
    double start = now_us();
    for (int i = 1; __atomic_load_n(v, __ATOMIC_ACQUIRE) != 0 && spin_on(i, start); i++) {}
}

static void *worker_main(void *arg) {
    pool *p = &g_pool;
    int id = (int)(long)arg; /* runs part id + 1; the caller runs part 0 */
    unsigned long seen = 0;
    t_in_job = 1;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        if (p->generation == seen) {
            pthread_mutex_unlock(&p->mu);
            spin_while_ul(&p->generation, seen);
            pthread_mutex_lock(&p->mu);
        }
        while (p->generation == seen) pthread_cond_wait(&p->wake, &p->mu);
        seen = p->generation;
        if (id + 1 < p->parts) {
            ml_range_fn fn = p->fn;
            void *ctx = p->ctx;
            int n = p->n, parts = p->parts;
            pthread_mutex_unlock(&p->mu);
            run_part(fn, ctx, n, id + 1, parts);
            pthread_mutex_lock(&p->mu);
            if (__atomic_sub_fetch(&p->pending, 1, __ATOMIC_RELEASE) == 0) pthread_cond_signal(&p->done);
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
    __atomic_store_n(&p->pending, parts - 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&p->generation, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    t_in_job = 1;
    run_part(fn, ctx, n, 0, parts);
    t_in_job = 0;
    spin_until_zero(&p->pending);
    pthread_mutex_lock(&p->mu);
    while (p->pending > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_unlock(&p->busy);
}
