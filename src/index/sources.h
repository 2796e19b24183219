/* sources.h - finding the images to index and reading their bytes.
 *
 * A source argument is a folder (walked recursively, in sorted order,
 * hidden entries and *.mlindex folders skipped, symlinked folders not
 * followed), an image file, a WebDataset-style .tar (each image member), or
 * a text file listing one such path per line (relative paths resolved
 * against the list file's folder; blank lines and '#' comments ignored).
 *
 * Every image gets a stable key: its absolute path, or for a tar member
 * "<absolute tar path>::<member name>". */
#ifndef ML_INDEX_SOURCES_H
#define ML_INDEX_SOURCES_H

#include <stddef.h>
#include <stdint.h>

#include "magiclens.h"

#define ML_TAR_SEP "::"

typedef struct ml_source {
    char *path;       /* the key stored in the index (owned) */
    uint64_t size;
    int64_t mtime_ns;
    int member;       /* 1: a tar member (path = tar ML_TAR_SEP member) */
} ml_source;

typedef struct ml_source_list {
    ml_source *items;
    size_t n, cap;
} ml_source_list;

/* Appends the images found under `arg`.  Unreadable entries inside a folder
 * are reported through `warn` (may be NULL) and skipped; a source argument
 * that does not exist or is not an image, folder, tar or list is an error. */
typedef void (*ml_warn_fn)(void *ctx, const char *msg);
int ml_sources_add(ml_source_list *l, const char *arg, ml_warn_fn warn, void *wctx,
                   ml_error *err);
/* Sorts by path and drops repeated paths. */
void ml_sources_finish(ml_source_list *l);
void ml_sources_free(ml_source_list *l);
/* Absolute form of a path that may not exist any more (for --remove). */
char *ml_abs_path(const char *p);
int ml_is_image_name(const char *name);

/* Reads an image's bytes (file or tar member).  Sequential reads of members
 * of one tar reuse an open archive; keep one reader per thread. */
typedef struct ml_source_reader ml_source_reader;
ml_source_reader *ml_source_reader_new(void);
int ml_source_read(ml_source_reader *r, const char *path, uint8_t **data, size_t *len,
                   ml_error *err);
void ml_source_reader_free(ml_source_reader *r);

#endif
