/* cli.c - small helpers the command files share (cli.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"

int cli_number(const char *cmd, const char *opt, const char *value, double lo, double hi,
               double *out) {
    char *end;
    errno = 0;
    double x = strtod(value, &end);
    if (errno || end == value || *end || !(x >= lo && x <= hi)) {
        fprintf(stderr, "magiclens %s: %s %s: expected a number in [%g, %g]\n", cmd, opt, value, lo,
                hi);
        return -1;
    }
    *out = x;
    return 0;
}
