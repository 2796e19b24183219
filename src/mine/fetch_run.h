/* fetch_run.h - the `mine fetch` stage as a library call: pages.jsonl ->
 * tar shards of the downloaded, checked and deduplicated images, resumable
 * through its journal (docs/mining-fetch.md).  fetch.h is the downloader
 * it drives, phash.h the deduplication, shards.h the output. */
#ifndef ML_MINE_FETCH_RUN_H
#define ML_MINE_FETCH_RUN_H

#include "magiclens.h"
#include "mine/fetch.h"

enum { ML_DEDUP_NONE, ML_DEDUP_PAGE, ML_DEDUP_RUN };

typedef struct ml_mine_fetch_opts {
    const char *pages, *output, *stats, *list;
    ml_fetch_opts net;
    int min_side, phash_distance, dedup, shard_size, window, quiet, verbose;
    double max_aspect;
    long long max_pixels;
} ml_mine_fetch_opts;

/* Runs the stage (the options as `magiclens mine fetch --help` describes
 * them; `list` is the CLI's and ignored here).  Progress and the summary go
 * to stderr, the counts also to o->stats.  Call it with SIGPIPE ignored (a
 * server closing early must not end the process).  Returns 0, or -1 with
 * err set; committed shards stay and a re-run resumes after them. */
int ml_mine_fetch(const ml_mine_fetch_opts *o, ml_error *err);

#endif
