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

/* ML_INDEX_SYNC/ADD/REMOVE, ml_index_stats and ml_index_compact are public
 * (include/magiclens_index.h); this is the engine behind ml_index_update. */

typedef struct ml_index_opts {
    const char *const *sources;
    int nsources;
    int mode;
    int batch;       /* images per model call and per commit */
    int progress;    /* progress bar / lines on stderr */
    int verbose;     /* a line per commit ("committed N items") */
    int max_errors;  /* per-image errors printed (the rest are counted) */
    const char *model_name, *precision;
    ml_index_progress_fn on_progress; /* non-zero return: stop after this batch */
    void *progress_ctx;
} ml_index_opts;

/* Runs one indexing pass over `dir` (created if absent). */
int ml_index_run(ml_model *m, const char *dir, const ml_index_opts *o, ml_index_stats *st,
                 ml_error *err);

#endif
