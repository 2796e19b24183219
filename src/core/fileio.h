/* fileio.h - durable file writes. */
#ifndef ML_CORE_FILEIO_H
#define ML_CORE_FILEIO_H

#include <stddef.h>
#include <stdio.h>

#include "magiclens.h"

/* fsync of a folder: makes a rename or a new entry in it durable. */
int ml_fsync_dir(const char *dir, ml_error *err);
/* Replaces `path` with `len` bytes atomically: path.tmp, fsync, rename,
 * fsync of the folder.  Readers see the old or the new file, never a mix. */
int ml_write_atomic(const char *path, const void *data, size_t len, ml_error *err);
/* The folder of `path` (malloc'ed): "." when it names none, "/" for a file
 * at the root; NULL when out of memory. */
char *ml_dir_of(const char *path);
/* Finishes an output written to `tmp` through f: flush, fsync, close,
 * rename over `out`, fsync of out's folder.  f is closed either way. */
int ml_finish_tmp(FILE *f, const char *tmp, const char *out, ml_error *err);
/* Reads a whole (small) file; *data is malloc'ed, owned by the caller. */
int ml_read_all(const char *path, size_t max, unsigned char **data, size_t *len, ml_error *err);

#endif
