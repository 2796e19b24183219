/* threads.h - a tiny fork-join helper for the compute kernels.
 *
 * The only process-wide state is the thread count (ml_set_threads), read at
 * each call.  Work is split into `n` independent items; items are handed out
 * in contiguous ranges so each thread touches one part of the output. */
#ifndef ML_CORE_THREADS_H
#define ML_CORE_THREADS_H

typedef void (*ml_range_fn)(void *ctx, int begin, int end);

/* Number of threads kernels will use (>= 1). */
int ml_num_threads(void);

/* Calls fn(ctx, b, e) over disjoint ranges covering [0, n), in parallel
 * when n is large enough; `grain` is the smallest range worth a thread. */
void ml_parallel_for(int n, int grain, ml_range_fn fn, void *ctx);

#endif
