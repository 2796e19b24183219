/* indexer.h - builds and updates an index from image sources.
 *
 * Three modes:
 *   SYNC    the index becomes a mirror of the sources: new and changed files
 *           are embedded, files that disappeared are dropped, unchanged files
 *           (same size and mtime) cost nothing.
 *   ADD     like SYNC for the given sources, but nothing is dropped.
 *   REMOVE  drops the given files, folders (everything under them) or tars.
 * A file whose size or mtime changed but whose bytes did not (same content
 * hash) gets its metadata refreshed without running the model.
 *
 * Under MPI every rank computes the same plan (checked), then rank r embeds
 * new items j with j % K == r into shard r and rewrites changed or deleted
 * items of shards s with s % K == r. */
#ifndef ML_INDEX_INDEXER_H
#define ML_INDEX_INDEXER_H

#include "magiclens.h"

enum { ML_INDEX_SYNC = 0, ML_INDEX_ADD = 1, ML_INDEX_REMOVE = 2 };

typedef struct ml_index_opts {
    const char *const *sources;
    int nsources;
    int mode;
    int batch;       /* images per model call and per commit */
    int progress;    /* progress bar / lines on stderr */
    int verbose;     /* a line per commit ("committed N items") */
    int max_errors;  /* per-image errors printed (the rest are counted) */
    const char *model_name, *precision;
} ml_index_opts;

typedef struct ml_index_stats {
    long long found, added, updated, touched, unchanged, removed, failed;
    long long items; /* live items after the run (all shards) */
    double seconds;
} ml_index_stats;

/* Runs one indexing pass over `dir` (created if absent). */
int ml_index_run(ml_model *m, const char *dir, const ml_index_opts *o, ml_index_stats *st,
                 ml_error *err);

/* Drops dead records (deleted and superseded items) from every shard this
 * rank owns; *freed = bytes saved over all ranks. */
int ml_index_compact(const char *dir, long long *freed, ml_error *err);

#endif
