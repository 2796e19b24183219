/* npy.h - NumPy .npy files: a float32 matrix writer and a small reader. */
#ifndef ML_IO_NPY_H
#define ML_IO_NPY_H

#include <stdint.h>

#include "magiclens.h"

#define ML_NPY_MAX_DIMS 8

/* Writes a rows x cols float32 (little-endian, C order) array to `path`. */
int ml_npy_write_f32(const char *path, const float *data, int64_t rows, int64_t cols,
                     ml_error *err);

/* Reads a C-order little-endian array of dtype f4, f8 or u1.  On success
 * *dtype_char is 'f' or 'u', *itemsize 4, 8 or 1, shape[0..*ndim) the shape
 * (ndim <= ML_NPY_MAX_DIMS) and *data a malloc'd buffer the caller frees. */
int ml_npy_read(const char *path, char *dtype_char, int *itemsize, int64_t *shape, int *ndim,
                void **data, ml_error *err);

#endif
