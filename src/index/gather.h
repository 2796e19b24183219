/* gather.h - merging the search hits of K MPI ranks on rank 0. */
#ifndef ML_INDEX_GATHER_H
#define ML_INDEX_GATHER_H

#include "index/searcher.h"
#include "index/store.h"
#include "magiclens.h"

/* Every rank passes its best *n hits (r has room for `want`); rank 0 gets
 * the best `want` of them all in r[0..*n), ordered by (score desc, id asc)
 * as one process would order them, their paths pointing into `all` (rank
 * 0's store of every shard).  Collective; returns 0 or -1. */
int ml_index_gather_hits(ml_result *r, int *n, int want, const ml_store *all, ml_error *err);

#endif
