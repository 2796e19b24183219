/* pickle.h - a safe reader for the one pickle shape a checkpoint uses: a
 * single `bytes` object.
 *
 * Nothing is ever executed or imported.  Accepted (protocols 2-5): PROTO,
 * FRAME, SHORT_BINBYTES / BINBYTES / BINBYTES8 / BYTEARRAY8, MEMOIZE /
 * BINPUT / LONG_BINPUT, STOP; plus the two fixed patterns with which
 * protocol 2 spells bytes: `_codecs.encode(<str>, 'latin1')` and, for the
 * empty value, `__builtin__.bytes()`.  Any other opcode or GLOBAL is an error
 * naming the opcode and its offset. */
#ifndef ML_IO_PICKLE_H
#define ML_IO_PICKLE_H

#include <stddef.h>
#include <stdint.h>

#include "magiclens.h"

/* Finds the bytes value in the pickle data[0..len).  On success *payload /
 * *payload_len describe it: normally a pointer into `data` (zero copy) and
 * *owned = NULL; for the protocol-2 latin-1 form the decoded bytes live in a
 * malloc'ed buffer returned in *owned, which the caller frees (owned may be
 * NULL, in which case that form is refused). */
int ml_pickle_unwrap_bytes(const uint8_t *data, size_t len, const uint8_t **payload,
                           size_t *payload_len, uint8_t **owned, ml_error *err);

#endif
