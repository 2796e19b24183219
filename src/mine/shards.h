/* shards.h - WebDataset-style tar shards of mined images (docs/mining-fetch.md).
 *
 * A shard folder holds shard-000000.tar, shard-000001.tar, ... (plain
 * ustar, no compression).  Each sample is two consecutive members sharing a
 * key: KEY.EXT (the image bytes exactly as downloaded; EXT = jpg, png, webp
 * or gif from the magic bytes) then KEY.json (one JSON object, the
 * metadata).  KEY = "g%08lld_%03d" (group = line index of the page in
 * pages.jsonl, image index in that page's "images").  Members are written
 * with mode 0644, mtime 0, uid/gid 0 and no user names, so the same samples
 * give the same bytes.
 *
 * Writing is crash safe: a shard is written as shard-N.tar.tmp, fsync'ed and
 * renamed, so a shard-N.tar is always complete.
 *
 * Reading (for `mine pairs` and anything else):
 *
 *     ml_shard_reader *r = ml_shard_reader_open("shards/", &err);
 *     ml_shard_sample s;
 *     int rc;
 *     while ((rc = ml_shard_reader_next(r, &s, &err)) == 1)
 *         use(s.key, s.data, s.len, s.meta);   // valid until the next call
 *     ml_shard_reader_close(r);                 // rc == -1: err says what
 */
#ifndef ML_MINE_SHARDS_H
#define ML_MINE_SHARDS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "magiclens.h"

/* ---- writer ---- */

typedef struct ml_shard_writer ml_shard_writer;

/* Starts DIR/shard-%06d.tar.tmp (replacing a stale one). */
ml_shard_writer *ml_shard_writer_open(const char *dir, int index, ml_error *err);
/* Appends KEY.ext (the bytes) and KEY.json (meta, compact). */
int ml_shard_writer_add(ml_shard_writer *w, const char *key, const char *ext, const void *data,
                        size_t len, const char *meta_json, ml_error *err);
int ml_shard_writer_samples(const ml_shard_writer *w);
/* Closes the tar, fsyncs it, renames it to shard-N.tar and fsyncs the
 * folder; frees w whatever happens. */
int ml_shard_writer_finish(ml_shard_writer *w, ml_error *err);
/* Removes the .tmp file and frees w. */
void ml_shard_writer_abort(ml_shard_writer *w);

/* "DIR/shard-%06d.tar" into buf. */
void ml_shard_path(char *buf, size_t cap, const char *dir, int index);

/* ---- reader ---- */

typedef struct ml_shard_reader ml_shard_reader;

typedef struct ml_shard_sample {
    const char *shard;   /* path of the tar it came from */
    const char *key;     /* "g00000012_003" */
    const char *ext;     /* "jpg", "png", "webp", "gif" */
    const uint8_t *data; /* the image bytes */
    size_t len;
    json_t *meta;    /* borrowed: json_incref to keep it */
    long long group; /* meta "group" */
    int index;       /* meta "index" */
} ml_shard_sample;

/* `path`: a folder (its shard-*.tar files, in name order; other files such
 * as fetch.log or *.tmp are ignored) or one .tar file. */
ml_shard_reader *ml_shard_reader_open(const char *path, ml_error *err);
/* 1: *s holds the next sample (valid until the next call or close); 0: no
 * more; -1: a damaged shard (a member cut short, a sample without its
 * image or its JSON, metadata that is not a JSON object with group and
 * index), with err naming the shard and member. */
int ml_shard_reader_next(ml_shard_reader *r, ml_shard_sample *s, ml_error *err);
void ml_shard_reader_close(ml_shard_reader *r);

#endif
