#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int ml_fail(ml_error *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int ml_fail_prefix(ml_error *err, const char *fmt, ...) {
    if (err) {
        char old[sizeof err->msg];
        memcpy(old, err->msg, sizeof old);
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        /* Append ": cause" after the prefix, truncating the cause if needed. */
        if (n >= 0 && (size_t)n < sizeof err->msg - 2) {
            size_t room = sizeof err->msg - (size_t)n - 1;
            strncat(err->msg, ": ", room);
            strncat(err->msg, old, room > 2 ? room - 2 : 0);
        }
    }
    return -1;
}
