/* searcher.h - an opened index, ready for queries.
 *
 * Two vector spaces:
 *   ML_SPACE_MAGICLENS  the gallery embeddings; queries are MagicLens query
 *                       embeddings (image + instruction, or image alone).
 *   ML_SPACE_CLIP       the CLIP image embeddings (normalised on load);
 *                       queries are CLIP text embeddings (text-to-image).
 * Rows are the live items in id order.  The optional approximate structure
 * (ann.ivf + ann.ids, built by ml_searcher_build_ann) covers the items that
 * existed when it was built; items added or changed since are searched
 * exactly and merged in, deleted ones are masked out, so it never returns
 * a stale or deleted item.  Searches are thread-safe. */
#ifndef ML_INDEX_SEARCHER_H
#define ML_INDEX_SEARCHER_H

#include <stdint.h>

#include "index/search.h"
#include "index/store.h"
#include "magiclens.h"

enum { ML_SPACE_MAGICLENS = 0, ML_SPACE_CLIP = 1 };

typedef struct ml_searcher ml_searcher;

typedef struct ml_searcher_opts {
    ml_vec_type store; /* in-memory form of the vectors (f32, f16, int8); -1: f32
                          up to 1 GiB of vectors, int8 beyond */
    int ann;           /* 1: use ann.ivf when present; 0: always exact */
    int part_k, part_r; /* MPI: open only shards s % part_k == part_r (0, 0: all) */
} ml_searcher_opts;

typedef struct ml_query {
    const float *vec; /* embed_dim floats, L2-normalised */
    int space;
    int k, offset;    /* results offset .. offset+k-1 of the ranking */
    float min_score;  /* drop results scoring below (use -INFINITY for none) */
    const char *prefix; /* keep only paths starting with it (NULL: all) */
    int nprobe;       /* ANN lists to visit; 0 = default */
    int64_t exclude_id; /* leave this item out (the query image itself); -1: none */
} ml_query;

typedef struct ml_result {
    int64_t id;
    const char *path; /* valid while the searcher is open */
    float score;
} ml_result;

ml_searcher *ml_searcher_open(const char *dir, const ml_searcher_opts *o, ml_error *err);
void ml_searcher_close(ml_searcher *s);
const ml_store *ml_searcher_store(const ml_searcher *s);
int ml_searcher_has_ann(const ml_searcher *s);

/* Fills out[0..*n) (out has room for q->k).  Returns 0 or -1. */
int ml_searcher_search(ml_searcher *s, const ml_query *q, ml_result *out, int *n, ml_error *err);

/* Trains an IVF over the current gallery embeddings and saves it next to
 * the shards (atomically).  nlist 0 = default. */
int ml_searcher_build_ann(const char *dir, int nlist, ml_error *err);

#endif
