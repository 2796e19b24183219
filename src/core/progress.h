/* progress.h - progress reporting on stderr: a redrawn bar with rate and ETA
 * on a terminal, an occasional plain line otherwise (logs stay readable). */
#ifndef ML_CORE_PROGRESS_H
#define ML_CORE_PROGRESS_H

#include <stdio.h>

typedef struct ml_progress {
    const char *label;
    long total, done;
    double t0, last_print;
    int tty, enabled;
    FILE *out;
} ml_progress;

/* total <= 0: unknown.  enabled = 0 turns it into a no-op. */
void ml_progress_start(ml_progress *p, const char *label, long total, int enabled);
void ml_progress_add(ml_progress *p, long n);
void ml_progress_finish(ml_progress *p);
double ml_now(void); /* monotonic seconds */

#endif
