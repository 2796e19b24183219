/* export_flax.h - writes a tensor set in the released checkpoint format: a
 * pickle whose single object is the bytes of
 * flax.serialization.to_bytes({"params": tree}) (model-spec section 1), so
 * the official JAX code, tests/reference/magiclens_ref.py and every
 * magiclens command read the result like magic_lens_clip_base.pkl. */
#ifndef ML_TRAIN_EXPORT_FLAX_H
#define ML_TRAIN_EXPORT_FLAX_H

#include <stdint.h>

#include "io/tensors.h"

#define ML_FLAX_MAX_CHUNK (1u << 30) /* flax.serialization.MAX_CHUNK_SIZE */

/* Writes PATH atomically (PATH.tmp, fsync, rename, fsync of the folder).
 * Names are split at '/' into nested maps with keys in sorted order (as a
 * params tree that went through jax.tree_util has them); leaves are float32
 * ndarrays (float16 / bfloat16 widened exactly; uint8 kept); the native
 * format's "meta/..." and "vocab/..." blobs are left out; arrays over 2^30
 * bytes take flax's chunked form.  Pickle protocol 4, byte-identical to
 * pickle.dumps(payload, 4). */
int ml_export_flax_pkl(const ml_tensor_set *ts, const char *path, ml_error *err);

/* The same with another chunk threshold (1 .. ML_FLAX_MAX_CHUNK bytes), for
 * tests of the chunked form on small models. */
int ml_export_flax_pkl_chunked(const ml_tensor_set *ts, const char *path, uint64_t chunk_bytes,
                               ml_error *err);

#endif
