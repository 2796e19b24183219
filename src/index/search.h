/* search.h - nearest-neighbour search over unit vectors (inner product).
 *
 * Two engines share one result type:
 *   - ml_vecset: exact search.  Rows are stored as float32, float16 or int8
 *     (per-row scale); lossy storage scores every row cheaply, keeps a
 *     candidate pool, then re-ranks the pool with the float32 rows supplied
 *     by the caller, so the returned scores are exact float32 inner products.
 *   - ml_ivf: approximate search (inverted file, int8 codes, float32 re-rank)
 *     for large collections.
 *
 * Rows are addressed by their position 0..n-1 in the set ("row").  The index
 * layer maps rows to item ids.  Ties are broken by the smaller row, so every
 * engine returns a deterministic order.  All functions are thread-safe for
 * concurrent searches on the same (read-only) set.
 */
#ifndef ML_INDEX_SEARCH_H
#define ML_INDEX_SEARCH_H

#include <stddef.h>
#include <stdint.h>

#include "magiclens.h"

typedef enum ml_vec_type {
    ML_VEC_F32 = 0,
    ML_VEC_F16 = 1,
    ML_VEC_I8 = 2,
} ml_vec_type;

const char *ml_vec_type_name(ml_vec_type t); /* "f32", "f16", "int8" */
int ml_vec_type_parse(const char *s, ml_vec_type *out); /* 0 ok, -1 unknown */

typedef struct ml_hit {
    float score;
    int64_t row; /* -1 marks an empty slot (fewer than k rows matched) */
} ml_hit;

/* Float32 rows for re-ranking: returns row `row` (d floats).  Must be
 * thread-safe (it is called from the search threads). */
typedef const float *(*ml_row_fn)(void *ctx, int64_t row);

typedef struct ml_search_opts {
    int k;               /* results wanted per query (>= 1) */
    const uint8_t *allow; /* optional: allow[row] != 0 keeps the row (deletions, filters) */
    ml_row_fn row_f32;   /* required for F16/I8 sets and for ml_ivf */
    void *row_ctx;
    int rerank;          /* candidates re-ranked per query; 0 = default: max(4k, k+64) for
                            f16 / int8 / IVF, k+8 for f32 (search.c says why) */
    int nprobe;          /* ml_ivf only: lists visited per query; 0 = default (ivf.c) */
} ml_search_opts;

/* ---- Exact search ---------------------------------------------------- */

typedef struct ml_vecset ml_vecset;

ml_vecset *ml_vecset_new(int d, ml_vec_type type, ml_error *err);
/* Appends n float32 rows (quantised as the set's type). */
int ml_vecset_append(ml_vecset *vs, const float *rows, size_t n, ml_error *err);
size_t ml_vecset_size(const ml_vecset *vs);
int ml_vecset_dim(const ml_vecset *vs);
ml_vec_type ml_vecset_type(const ml_vecset *vs);
size_t ml_vecset_bytes(const ml_vecset *vs); /* memory held by the stored rows */
void ml_vecset_free(ml_vecset *vs);

/* Top-k of each of nq queries (nq*d floats).  out receives nq*k hits, best
 * first; unused slots have row -1 and score 0.  Scores are the float64 sum
 * of the float32 products, rounded to float32, for every storage type (and
 * for ml_ivf), so all engines agree bit for bit on a (query, row) pair.
 * Multi-threaded (ml_parallel_for); the result does not depend on the
 * thread count (nor, short of float32 rounding of near-tied stored-precision
 * scores at the pool's edge, on the instruction set). */
int ml_vecset_search(const ml_vecset *vs, const float *q, int nq, const ml_search_opts *o,
                     ml_hit *out, ml_error *err);

/* ---- Approximate search (IVF) ---------------------------------------- */

typedef struct ml_ivf ml_ivf;

typedef struct ml_ivf_params {
    int nlist;       /* coarse clusters; 0 = about sqrt(n) (at most n) */
    int train_max;   /* rows sampled for k-means; 0 = min(n, 64*nlist) */
    int iters;       /* k-means iterations; 0 = 10 */
    uint64_t seed;
} ml_ivf_params;

/* Trains the coarse quantiser on (a sample of) n rows and adds all of them
 * as rows 0..n-1. */
ml_ivf *ml_ivf_build(const float *rows, size_t n, int d, const ml_ivf_params *p, ml_error *err);
/* Adds rows numbered ml_ivf_size()..+n-1 to the trained index. */
int ml_ivf_add(ml_ivf *ivf, const float *rows, size_t n, ml_error *err);
size_t ml_ivf_size(const ml_ivf *ivf);
int ml_ivf_dim(const ml_ivf *ivf);
int ml_ivf_search(const ml_ivf *ivf, const float *q, int nq, const ml_search_opts *o,
                  ml_hit *out, ml_error *err);
/* Serialised form, checksummed and versioned: save writes to path.tmp,
 * fsyncs and renames; load refuses a truncated, corrupt or foreign file with
 * a message naming it. */
int ml_ivf_save(const ml_ivf *ivf, const char *path, ml_error *err);
ml_ivf *ml_ivf_load(const char *path, ml_error *err);
void ml_ivf_free(ml_ivf *ivf);

#endif
