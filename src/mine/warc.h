/* warc.h - a lenient streaming reader of WARC (0.17 .. 1.1) and ARC files.
 *
 * The input may be plain, one gzip stream, or (the usual layout) one gzip
 * member per record; the reader finds out from the first bytes.  Damage is
 * reported through the warning callback with the file name and offset, and
 * the reader carries on: garbage between records is skipped up to the next
 * "WARC/" line or ARC header line, a damaged gzip member is skipped up to the
 * next member, and a record cut short by the end of the file or by a damaged
 * member is reported as truncated.  It never reads more than it is asked to
 * keep: block bytes that nobody reads are skipped.
 *
 * Offsets: for gzip input, the file offset of the gzip member holding the
 * record's first header byte (where a reader can seek to and start
 * inflating, as in CDX indexes); for plain input, the offset of the record's
 * first header byte. */
#ifndef ML_MINE_WARC_H
#define ML_MINE_WARC_H

#include <stddef.h>
#include <stdio.h>

#include "magiclens.h"

typedef struct ml_warc_reader ml_warc_reader;

/* Called for every recoverable problem; `offset` as described above. */
typedef void (*ml_warc_warn_fn)(void *ctx, const char *file, long long offset, const char *msg);

typedef struct ml_warc_record {
    int arc;            /* 1: an ARC record (type is "response" or "filedesc") */
    char type[24];      /* WARC-Type in lower case ("response", "revisit", ...); "" if absent */
    char *uri;          /* WARC-Target-URI / ARC URL without <>; NULL if absent */
    char *content_type; /* record Content-Type (ARC: the mime field); NULL if absent */
    int segmented;      /* WARC-Segment-Number present: a piece of a larger record */
    long long length;   /* block length (Content-Length) */
    long long offset;   /* see above */
} ml_warc_record;

enum { ML_WARC_BLOCK_OK = 0, ML_WARC_BLOCK_TRUNCATED = 1, ML_WARC_BLOCK_TOO_LARGE = 2 };

/* Reads from `f` (not closed by the reader); `name` is used in warnings and
 * must outlive the reader.  warn may be NULL. */
ml_warc_reader *ml_warc_open(FILE *f, const char *name, ml_warc_warn_fn warn, void *ctx,
                             ml_error *err);
void ml_warc_close(ml_warc_reader *r);

/* The next record: 1, 0 at the end of the input, -1 on a read error.  The
 * strings in rec belong to the reader and stay valid until the next call. */
int ml_warc_next(ml_warc_reader *r, ml_warc_record *rec, ml_error *err);

/* The current record's block (at most `max` bytes, else TOO_LARGE and
 * nothing read).  *data is malloc'ed and NUL-terminated (owned by the
 * caller).  Returns ML_WARC_BLOCK_* or -1 on a read error; TRUNCATED (after
 * a warning) when the input ends or a gzip member breaks inside the block,
 * *data then holds the bytes that were there. */
int ml_warc_read_block(ml_warc_reader *r, size_t max, unsigned char **data, size_t *len,
                       ml_error *err);

/* Bytes of the file consumed so far (for progress) and warnings issued. */
long long ml_warc_consumed(const ml_warc_reader *r);
long ml_warc_warnings(const ml_warc_reader *r);

#endif
