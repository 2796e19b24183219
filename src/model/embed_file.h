/* embed_file.h - embedding a JSONL file of items into .npy or .jsonl
 * (`magiclens embed --input`).  Each line: {"id", "image", "text"}; image
 * paths are relative to the file's folder; text absent or "" gives the
 * gallery embedding. */
#ifndef ML_MODEL_EMBED_FILE_H
#define ML_MODEL_EMBED_FILE_H

#include "magiclens.h"

typedef struct ml_embed_file_opts {
    const char *input, *output; /* output: *.jsonl, else .npy (float32 [N, D]) */
    int batch;                  /* images per model call */
    int truncate;               /* cut over-long instructions instead of failing the item */
    int quiet;                  /* no progress bar, no summary line */
} ml_embed_file_opts;

/* Embeds every item; progress, per-item errors and a summary go to stderr.
 * Returns 0 when every item was embedded and the output written, 1 when an
 * item failed or nothing could be written (the reason is printed). */
int ml_embed_file(ml_model *m, const ml_embed_file_opts *o);

#endif
