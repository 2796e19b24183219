/* error.h - error reporting helpers.
 *
 * Every fallible function takes an ml_error* (NULL allowed) and returns -1
 * (or NULL) after ml_fail() has written a message.  There is no global error
 * state, so errors are thread-safe by construction. */
#ifndef ML_CORE_ERROR_H
#define ML_CORE_ERROR_H

#include "magiclens.h"

#if defined(__GNUC__)
#define ML_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define ML_PRINTF(a, b)
#endif

/* Formats a message into err (if not NULL) and returns -1. */
int ml_fail(ml_error *err, const char *fmt, ...) ML_PRINTF(2, 3);

/* Prepends "prefix: " to the message already in err (keeps the cause). */
int ml_fail_prefix(ml_error *err, const char *fmt, ...) ML_PRINTF(2, 3);

#endif
