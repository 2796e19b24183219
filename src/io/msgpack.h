/* msgpack.h - a MessagePack reader for flax.serialization.to_bytes output.
 *
 * Flax writes nested maps with string keys whose leaves are ext type 1
 * (ndarray) or 3 (numpy scalar); both carry msgpack([shape, dtype_name,
 * raw C-order little-endian bytes]).  Arrays over 2^30 bytes become maps
 * {"__msgpack_chunked_array__": true, "shape": {"0": d0, ...},
 *  "chunks": {"0": <1-D ndarray>, ...}}. */
#ifndef ML_IO_MSGPACK_H
#define ML_IO_MSGPACK_H

#include <stddef.h>
#include <stdint.h>

#include "io/tensors.h"

#define ML_MSGPACK_MAX_DEPTH 64
#define ML_MSGPACK_MAX_NAME 1024

/* Flattens the tree in data[0..len) into tensors appended to *out, named by
 * '/'-joined keys with a leading "params" level dropped.  float32 / float16 /
 * bfloat16 / uint8 tensors point into `data` (the caller keeps it alive,
 * typically by storing its mapping in out->file or out->owned); float64 and
 * int32 arrays are converted to float32 and chunked arrays reassembled into
 * buffers owned by *out; plain msgpack numbers become 0-dim float32 tensors.
 * Empty maps are skipped.  On failure *out is released (ml_tensor_set_free)
 * and the message names the tensor path. */
int ml_flax_msgpack_to_tensors(const uint8_t *data, size_t len, ml_tensor_set *out,
                               ml_error *err);

#endif
