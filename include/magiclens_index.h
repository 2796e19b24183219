/* magiclens_index.h - public API of the image index (included by
 * magiclens.h): build and update an index folder from image sources,
 * search it with image / text / "more like this" queries, read its
 * embeddings back.  This is what `magiclens index`, `magiclens search` and
 * `magiclens export --index` call; their results are the same.
 *
 * An index is a folder (my.mlindex/) of append-only, checksummed shard logs;
 * every update is committed in batches, each durable before the next one
 * starts, so an update that is interrupted (crash, kill, or cancelled by the
 * progress callback) leaves the index valid with the batches committed so
 * far, and the next sync redoes only the rest.
 *
 * Threads: one ml_index handle may be searched from several threads at once
 * (ml_index_search_vector, ml_index_count, ml_index_item,
 * ml_index_embeddings; ml_index_search and ml_index_query_vector too, but
 * they run the model, and one ml_model must not compute two embeddings at
 * once: give each thread its own model, or compute the query vectors under
 * your own lock and call ml_index_search_vector, as the server does).
 * ml_index_sync / _add / _remove and ml_index_close need the handle to
 * themselves (no search running on it): they reopen it, which invalidates
 * the paths returned by earlier searches.  Other processes may read an index
 * while one updates it; two writers to one index are not supported.
 *
 * MPI: under mpirun (a build with MPI) the index updates and searches are
 * collective: every rank calls them; search results are complete on rank 0.
 */
#ifndef MAGICLENS_INDEX_H
#define MAGICLENS_INDEX_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* How an update treats the sources (see ml_index_update). */
enum {
    ML_INDEX_SYNC = 0,   /* the index mirrors the sources: new/changed files embedded, gone ones dropped */
    ML_INDEX_ADD = 1,    /* like SYNC for the given sources, but nothing is dropped */
    ML_INDEX_REMOVE = 2, /* drops the given files, folders (all under them) or tars */
};

/* What an update did. */
typedef struct ml_index_stats {
    long long found, added, updated, touched, unchanged, removed, failed;
    long long items; /* live items after the run (all shards) */
    double seconds;
    int cancelled;   /* 1: stopped early by the progress callback */
} ml_index_stats;

/* Called after each committed batch with the items embedded so far and the
 * total to embed; a non-zero return stops the update cleanly (what was
 * committed stays, the call returns -1 with "cancelled" and
 * stats->cancelled = 1). */
typedef int (*ml_index_progress_fn)(void *ctx, long long done, long long total);

/* Options of an update; all-zero gives the defaults. */
typedef struct ml_index_update_opts {
    int batch;              /* images per model call and per commit; 0 = 8 (max 256) */
    int progress;           /* 1: progress bar / lines on stderr */
    int verbose;            /* 1: a line per commit on stderr */
    int max_errors;         /* images that fail are skipped; the first max_errors are
                               printed on stderr ("skipped: ..."); 0 = 20, < 0 = none */
    const char *model_name; /* recorded in the index (informative; its file name is kept) */
    ml_index_progress_fn on_progress;
    void *progress_ctx;
} ml_index_update_opts;

/* Updates the index folder `dir` (created if absent) from `sources`: image
 * files, folders (recursive, sorted), WebDataset .tar files or text files
 * listing such paths; `mode` is ML_INDEX_SYNC/ADD/REMOVE.  The model is not
 * needed (may be NULL) for ML_INDEX_REMOVE.  A model with another
 * fingerprint than the index's is refused.  `st` may be NULL.  This is
 * `magiclens index --images/--add/--remove`. */
int ml_index_update(const char *dir, ml_model *m, int mode, const char *const *sources,
                    int nsources, const ml_index_update_opts *o, ml_index_stats *st,
                    ml_error *err);
/* ml_index_update with ML_INDEX_SYNC: builds a new index or brings one up to date. */
int ml_index_build(const char *dir, ml_model *m, const char *const *sources, int nsources,
                   const ml_index_update_opts *o, ml_index_stats *st, ml_error *err);
/* Drops dead records (deleted or superseded items) from the shards;
 * *freed = bytes saved.  `magiclens index --compact`. */
int ml_index_compact(const char *dir, long long *freed, ml_error *err);
/* Trains the approximate-search structure (IVF) over the current gallery
 * embeddings; nlist 0 = default.  `magiclens index --ann`. */
int ml_index_build_ann(const char *dir, int nlist, ml_error *err);

/* ---- An opened index --------------------------------------------------- */

typedef struct ml_index ml_index;

typedef struct ml_index_open_opts {
    const char *store; /* vectors in memory: "f32", "f16", "int8"; NULL or "auto": f32 up
                          to 1 GiB of vectors, int8 beyond (`search --store`) */
    int exact;         /* 1: never use the approximate structure (`search --exact`) */
} ml_index_open_opts;

/* Opens an existing index for searching (opts may be NULL). */
ml_index *ml_index_open(const char *dir, const ml_index_open_opts *o, ml_error *err);
void ml_index_close(ml_index *ix);
/* Live items (in this rank's shards under MPI) and the embedding width. */
size_t ml_index_count(const ml_index *ix);
int ml_index_dim(const ml_index *ix);
/* The model the index was built with: file name and fingerprint (see
 * ml_model_fingerprint). */
const char *ml_index_model_name(const ml_index *ix);
const char *ml_index_fingerprint(const ml_index *ix);

/* Updates the opened index's folder (as ml_index_update) and reopens the
 * handle on the result. */
int ml_index_sync(ml_index *ix, ml_model *m, const char *const *sources, int nsources,
                  const ml_index_update_opts *o, ml_index_stats *st, ml_error *err);
int ml_index_add(ml_index *ix, ml_model *m, const char *const *paths, int npaths,
                 const ml_index_update_opts *o, ml_index_stats *st, ml_error *err);
int ml_index_remove(ml_index *ix, const char *const *paths, int npaths,
                    const ml_index_update_opts *o, ml_index_stats *st, ml_error *err);

/* A query.  image and/or text give a MagicLens query (image + instruction),
 * like = an indexed item's id stands for the image (its stored CLIP
 * embedding, no decoding), text alone is a CLIP text-to-image query over
 * the CLIP image embeddings.  image and like cannot be combined. */
typedef struct ml_index_query {
    const ml_image *image; /* NULL: none */
    const char *text;      /* NULL: none */
    int64_t like;          /* item id, or -1: none */
    int truncate;          /* 1: cut an over-long text instead of failing */
    int k, offset;         /* results offset .. offset+k-1 of the ranking; k 0 = 10 */
    float min_score;       /* drop results below; -INFINITY (or NAN) for none */
    const char *prefix;    /* keep only paths starting with it; NULL: all */
    int nprobe;            /* approximate search: lists visited; 0 = default */
} ml_index_query;

/* A search result.  path stays valid until the handle is updated or closed. */
typedef struct ml_index_hit {
    int64_t id;
    float score; /* dot product of the L2-normalised query and item embeddings */
    const char *path;
} ml_index_hit;

/* Vector spaces of ml_index_query_vector / ml_index_search_vector. */
enum { ML_INDEX_SPACE_MAGICLENS = 0, ML_INDEX_SPACE_CLIP = 1 };

/* Searches: fills out[0..*n), best first (score descending, then id
 * ascending), *n <= q->k; out has room for q->k hits.  The model must be the
 * one the index was built with (same fingerprint; refused otherwise).  This
 * is `magiclens search`: the same hits, order and scores. */
int ml_index_search(ml_index *ix, ml_model *m, const ml_index_query *q, ml_index_hit *out,
                    int *n, ml_error *err);
/* The two halves of ml_index_search: the query embedding (dim floats) and
 * its space, then the search for a given vector (q's text/image/like are
 * ignored there; q->like still leaves the query item out of the results). */
int ml_index_query_vector(ml_index *ix, ml_model *m, const ml_index_query *q, float *vec,
                          int *space, ml_error *err);
int ml_index_search_vector(ml_index *ix, const float *vec, int space, const ml_index_query *q,
                           ml_index_hit *out, int *n, ml_error *err);

/* ---- Reading the stored items ------------------------------------------ */

/* Item i (0 <= i < count, in id order): id, path and the stored gallery
 * embedding (dim floats), all pointing into the index's memory (no copy;
 * valid until the handle is updated or closed).  Returns -1 when i is out
 * of range. */
int ml_index_item(const ml_index *ix, size_t i, int64_t *id, const char **path,
                  const float **emb);
/* Copies every item's id and gallery embedding (ids: count int64, emb:
 * count*dim floats, either may be NULL), in id order.  The shard logs
 * interleave records, so one contiguous matrix needs this one copy. */
int ml_index_embeddings(const ml_index *ix, int64_t *ids, float *emb, ml_error *err);
/* Writes embeddings.npy, clip_embeddings.npy (L2-normalised) and
 * metadata.jsonl into the folder `out` (created if absent), as
 * clip-retrieval ships them.  `magiclens export --index`. */
int ml_index_export(const ml_index *ix, const char *out, ml_error *err);

#ifdef __cplusplus
}
#endif
#endif
