/* dist.h - the process group for scale-out (MPI), or a group of one.
 *
 * When the program was started by mpirun (OpenMPI's OMPI_COMM_WORLD_SIZE or
 * a PMI/PMIx rank in the environment) ml_dist_init initialises MPI; a plain
 * start never touches MPI, so the binary works without an MPI runtime.  The
 * rank and size are process-wide state, set once by ml_dist_init (part of
 * the documented runtime, like the thread count). */
#ifndef ML_CORE_DIST_H
#define ML_CORE_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "magiclens.h"

int ml_dist_init(int *argc, char ***argv);
void ml_dist_finalize(void);
int ml_dist_rank(void);
int ml_dist_size(void);
int ml_dist_active(void); /* 1 under mpirun with MPI support built in */
void ml_dist_barrier(void);
void ml_dist_abort(int code);
/* Rank `root`'s bytes to every rank. */
void ml_dist_bcast(void *buf, size_t len, int root);
/* Logical AND / sum / max of one value over all ranks. */
int ml_dist_all_true(int v);
int64_t ml_dist_sum(int64_t v);
uint64_t ml_dist_max_u64(uint64_t v);
/* Gathers every rank's bytes on rank 0: *all (malloc'ed, owned by the
 * caller) holds them concatenated in rank order, lens[r] each length.
 * Other ranks get *all = NULL.  Returns 0 or -1. */
int ml_dist_gather(const void *buf, size_t len, uint8_t **all, size_t *lens, ml_error *err);

/* Element-wise sum over all ranks, in place (any length). */
void ml_dist_sum_f32(float *buf, size_t n);
/* Every rank's n values concatenated in rank order into `all` on every rank;
 * counts[r] = rank r's n (counts has ml_dist_size() entries). */
int ml_dist_allgather_f32(const float *local, int n, float *all, int *counts, ml_error *err);
#endif
