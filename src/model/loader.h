/* loader.h - decodes and preprocesses images on a background thread, one
 * batch ahead of the model, so that file reading and decoding overlap with
 * the forward pass.  Two batch slots: the model works on one while the
 * loader fills the other. */
#ifndef ML_MODEL_LOADER_H
#define ML_MODEL_LOADER_H

#include "magiclens.h"

typedef struct ml_loader ml_loader;

typedef struct ml_loader_batch {
    int first, count;      /* items [first, first+count) of the input list */
    const float **pixels;  /* count pointers (NULL where the item failed)  */
    char **errors;         /* count messages (NULL where the item is fine)  */
    int slot;
} ml_loader_batch;

/* paths[i] NULL means "skip: already failed" (errors[i] stays NULL then and
 * pixels[i] NULL).  The loader keeps pointers to paths: keep them alive. */
ml_loader *ml_loader_start(const ml_model *m, int n, const char *const *paths, int batch,
                           ml_error *err);
/* A general image source: fills *img for item i and returns 0, returns 1 to
 * skip the item (no error), or -1 with err set.  Called on the loader thread,
 * in increasing i, so a source may stream (e.g. members of a tar file). */
typedef int (*ml_load_fn)(void *ctx, int i, ml_image *img, ml_error *err);
ml_loader *ml_loader_start_fn(const ml_model *m, int n, ml_load_fn load, void *ctx, int batch,
                              ml_error *err);
/* Waits for the next batch; returns 0 with out filled, 1 at the end. */
int ml_loader_next(ml_loader *l, ml_loader_batch *out);
/* Gives the batch's slot back to the loader. */
void ml_loader_release(ml_loader *l, ml_loader_batch *b);
/* Stops the thread (also mid-way) and frees everything. */
void ml_loader_free(ml_loader *l);

#endif
