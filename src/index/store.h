/* store.h - the on-disk index: a folder of append-only, checksummed shard
 * logs plus a small JSON manifest.
 *
 *   my.mlindex/
 *     index.json        format, version, uuid, dims, model fingerprint, shard count
 *     shard-0000.log    records: PUT (id, path, size, mtime, content hash,
 *     shard-0001.log    MagicLens + CLIP embeddings) and DEL (id)
 *     ann.ivf           optional approximate-search structure (see search.h)
 *
 * Crash safety: records are appended past the committed end of a shard,
 * fdatasync'ed, and only then is the new end written into one of two commit
 * slots in the shard header (alternating, each checksummed) and synced
 * again.  Readers never look past the committed end, so a torn write is
 * invisible and the next writer overwrites it; every committed record is
 * checked (XXH3) when the shard is opened, so a flipped bit, a truncated
 * file or a foreign file is refused with a message naming the file.
 *
 * Ids are int64, unique across shards and never reused.  An id lives in one
 * shard: a changed file is re-written (PUT with the same id) in its shard.
 * With MPI, shard s is written by rank s % K, so no shard has two writers.
 */
#ifndef ML_INDEX_STORE_H
#define ML_INDEX_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "magiclens.h"

#define ML_STORE_VERSION 1
#define ML_STORE_MAX_SHARDS 4096

/* One live item.  Strings and vectors point into the shard mappings (read
 * mode) and stay valid until ml_store_close; emb/clip are NULL for items
 * written in this session. */
typedef struct ml_item {
    int64_t id;
    const char *path;
    uint64_t size;
    int64_t mtime_ns;
    uint8_t hash[16]; /* XXH3-128 of the file's bytes */
    const float *emb;  /* MagicLens gallery embedding (image + empty instruction) */
    const float *clip; /* CLIP image embedding as the tower outputs it (not normalised) */
    int shard;
} ml_item;

typedef struct ml_store_meta {
    int dim, clip_dim;
    char fingerprint[33]; /* ml_model_fingerprint of the model that embedded it */
    char model_name[256]; /* informative: file name of that model */
    char precision[8];    /* informative: precision the tower ran at */
} ml_store_meta;

typedef struct ml_store ml_store;

enum { ML_STORE_READ = 0, ML_STORE_WRITE = 1 };

/* Opens an index folder.  ML_STORE_WRITE with `create` non-NULL creates the
 * folder if it does not exist (meta is then written; for an existing index
 * it must match: same dims and fingerprint). */
ml_store *ml_store_open(const char *dir, int mode, const ml_store_meta *create, ml_error *err);
/* Reads only the shards s with s % k == r (MPI search: rank r of k). */
ml_store *ml_store_open_part(const char *dir, int mode, const ml_store_meta *create, int k, int r,
                             ml_error *err);
void ml_store_close(ml_store *s);

const ml_store_meta *ml_store_get_meta(const ml_store *s);
int ml_store_shard_count(const ml_store *s);
/* Live items, ordered by id. */
size_t ml_store_count(const ml_store *s);
const ml_item *ml_store_items(const ml_store *s);
/* Lookups (NULL when absent). */
const ml_item *ml_store_find_id(const ml_store *s, int64_t id);
const ml_item *ml_store_find_path(const ml_store *s, const char *path);
/* 1 + the largest id ever used (live or deleted). */
int64_t ml_store_next_id(const ml_store *s);
/* Total committed bytes and records over all shards (cheap change check). */
uint64_t ml_store_generation(const ml_store *s);

/* ---- Writing (ML_STORE_WRITE) ----------------------------------------- */

/* Makes sure shards 0..n-1 exist (creating empty ones). */
int ml_store_ensure_shards(ml_store *s, int n, ml_error *err);
/* Queue a PUT / DEL for `shard`; nothing is durable until ml_store_commit. */
int ml_store_put(ml_store *s, int shard, const ml_item *it, const float *emb, const float *clip,
                 ml_error *err);
int ml_store_del(ml_store *s, int shard, int64_t id, ml_error *err);
/* Writes the queued records of every shard, fsyncs, publishes the new ends.
 * When it returns 0 the records survive a crash or power loss. */
int ml_store_commit(ml_store *s, ml_error *err);

/* Rewrites shard `idx` with only its live items (plus a DEL keeping the
 * largest id used, so ids stay unique), atomically (tmp file, fsync,
 * rename).  *freed = bytes saved.  Readers that opened the old file keep
 * reading it; the store must be reopened before writing that shard again. */
int ml_store_compact(ml_store *s, int idx, uint64_t *freed, ml_error *err);

#endif
