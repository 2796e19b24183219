/* native.h - the native model file (.mlens): one self-contained,
 * memory-mappable file holding float32 tensors plus the model's config JSON
 * and BPE vocabulary.  The byte layout is documented in docs/native-format.md. */
#ifndef ML_IO_NATIVE_H
#define ML_IO_NATIVE_H

#include <stddef.h>
#include <stdint.h>

#include "io/tensors.h"

#define ML_NATIVE_MAGIC "MLENS\r\x1a\n" /* 8 bytes, no NUL */
#define ML_NATIVE_VERSION 1u
#define ML_NATIVE_HEADER_SIZE 64u
#define ML_NATIVE_ENTRY_SIZE 88u       /* fixed part of a directory entry */
#define ML_NATIVE_MAX_NAME 4096u
/* Reserved names of the metadata blobs (U8 tensors). */
#define ML_NATIVE_CONFIG_NAME "meta/config.json"
#define ML_NATIVE_VOCAB_NAME "vocab/bpe_simple_vocab_16e6.txt.gz"

/* Writes all tensors of `src` converted to float32 (U8 tensors kept as
 * bytes) plus the extra U8 blobs, atomically (write to PATH.tmp, fsync,
 * rename, fsync dir).  config_json / vocab_gz may be NULL: then a blob of
 * that reserved name found in `src` is kept, else none is written. */
int ml_native_write(const char *path, const ml_tensor_set *src, const char *config_json,
                    const uint8_t *vocab_gz, size_t vocab_len, ml_error *err);

/* Memory-maps PATH; tensors point into the mapping (no copy, 64-byte
 * aligned); verifies every checksum.  *out is overwritten; on failure it is
 * left empty and the message starts with the path. */
int ml_native_load(const char *path, ml_tensor_set *out, ml_error *err);

/* The same checks on a buffer the caller keeps alive while *out is used
 * (tensors point into it).  Appends to *out; on failure *out is released. */
int ml_native_load_mem(const uint8_t *data, size_t size, ml_tensor_set *out, ml_error *err);

/* 1 if the file starts with the native magic, 0 if not (or unreadable). */
int ml_native_is_native(const char *path);

#endif
