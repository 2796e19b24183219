/* tensors.h - a named set of tensors, the common currency between the
 * checkpoint readers (.pkl / .mlens) and the model builder.
 *
 * Names are '/'-joined paths of the Flax parameter tree without the leading
 * "params/", e.g. "clip/visual/conv1/kernel".  Data may point into a file
 * mapping owned by the set (zero-copy) or into buffers the set owns. */
#ifndef ML_IO_TENSORS_H
#define ML_IO_TENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/mem.h"
#include "magiclens.h"

typedef enum ml_dtype { ML_F32 = 0, ML_F16 = 1, ML_BF16 = 2, ML_U8 = 3 } ml_dtype;

#define ML_MAX_DIMS 8

typedef struct ml_tensor {
    char *name;          /* owned */
    ml_dtype dtype;
    int ndim;
    int64_t shape[ML_MAX_DIMS];
    const void *data;    /* little-endian, C order; may be unaligned for .pkl */
    size_t nbytes;
} ml_tensor;

typedef struct ml_tensor_set {
    ml_tensor *items;
    size_t count, cap;
    ml_file_map file;    /* the mapping tensors may point into */
    void **owned;        /* buffers freed with the set */
    size_t n_owned, cap_owned;
} ml_tensor_set;

size_t ml_dtype_size(ml_dtype t);
const char *ml_dtype_name(ml_dtype t);
int64_t ml_tensor_numel(const ml_tensor *t);

/* Appends a tensor (the name is copied). Returns 0 or -1. */
int ml_tensor_set_add(ml_tensor_set *s, const char *name, ml_dtype dtype, int ndim,
                      const int64_t *shape, const void *data, size_t nbytes, ml_error *err);
/* Takes ownership of a malloc'ed buffer, freed by ml_tensor_set_free.
 * On failure (-1) the caller still owns `buf` and must free it. */
int ml_tensor_set_own(ml_tensor_set *s, void *buf, ml_error *err);
const ml_tensor *ml_tensor_set_find(const ml_tensor_set *s, const char *name);
void ml_tensor_set_free(ml_tensor_set *s);

/* Fails naming the first name that occurs twice (O(n log n)). */
int ml_tensor_set_check_unique(const ml_tensor_set *s, ml_error *err);

/* Reads any element as float (f32/f16/bf16/u8). */
float ml_tensor_get_f32(const ml_tensor *t, int64_t i);
/* Exact conversions of one IEEE half / bfloat16 value (subnormals, inf, nan kept). */
float ml_f16_to_f32(uint16_t h);
float ml_bf16_to_f32(uint16_t b);

/* Loads a released checkpoint (.pkl: pickle wrapping Flax msgpack bytes).
 * *out is overwritten; on failure it is left empty. The set keeps the file
 * mapping: float32/float16/bfloat16 tensors point into it (zero copy). */
int ml_checkpoint_load_pkl(const char *path, ml_tensor_set *out, ml_error *err);

#endif
