/* pairs_run.h - the `mine pairs` stage as a library call: tar shards ->
 * pairs.jsonl, the scored image pairs inside each page, written to OUT.tmp
 * and renamed at the end (docs/mining-pairs.md).  pairs.h is the scoring. */
#ifndef ML_MINE_PAIRS_RUN_H
#define ML_MINE_PAIRS_RUN_H

#include "magiclens.h"
#include "mine/pairs.h"

typedef struct ml_mine_pairs_opts {
    const char *shards, *model, *output, *vocab, *stats;
    int precision, threads;
    ml_pairs_opts o;
} ml_mine_pairs_opts;

/* Runs the stage with model m (model, vocab, precision and threads are the
 * CLI's: the caller loads m).  The summary goes to stderr, the counts also
 * to a->stats.  Returns 0, or -1 with err set (no output written). */
int ml_mine_pairs(const ml_mine_pairs_opts *a, ml_model *m, ml_error *err);

#endif
