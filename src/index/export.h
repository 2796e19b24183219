/* export.h - writing an index's embeddings out as clip-retrieval ships them. */
#ifndef ML_INDEX_EXPORT_H
#define ML_INDEX_EXPORT_H

#include "index/store.h"
#include "magiclens.h"

/* embeddings.npy, clip_embeddings.npy (L2-normalised) and metadata.jsonl
 * of every item of `st`, in id order, into the folder `dir` (created if
 * absent). */
int ml_index_export_store(const ml_store *st, const char *dir, ml_error *err);

#endif
