#include "core/progress.h"

#include <time.h>
#include <unistd.h>

double ml_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void ml_progress_start(ml_progress *p, const char *label, long total, int enabled) {
    p->label = label;
    p->total = total;
    p->done = 0;
    p->t0 = p->last_print = ml_now();
    p->out = stderr;
    p->tty = isatty(fileno(stderr));
    p->enabled = enabled;
}

static void print_line(ml_progress *p, double now, int final) {
    double el = now - p->t0, rate = el > 0 ? p->done / el : 0;
    if (p->tty) {
        int width = 30, fill = p->total > 0 ? (int)(width * p->done / p->total) : 0;
        char bar[64];
        for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
        bar[width] = 0;
        double eta = rate > 0 && p->total > 0 ? (p->total - p->done) / rate : 0;
        fprintf(p->out, "\r%s [%s] %ld/%ld %.1f/s ETA %.0fs ", p->label, bar, p->done, p->total,
                rate, eta);
        if (final) fputc('\n', p->out);
    } else {
        fprintf(p->out, "%s: %ld/%ld done, %.1f/s, %.0fs elapsed\n", p->label, p->done, p->total,
                rate, el);
    }
    fflush(p->out);
}

void ml_progress_add(ml_progress *p, long n) {
    p->done += n;
    if (!p->enabled) return;
    double now = ml_now();
    /* Terminal: redraw up to 5 times a second.  Logs: a line every 30 s. */
    if (now - p->last_print >= (p->tty ? 0.2 : 30.0)) {
        p->last_print = now;
        print_line(p, now, 0);
    }
}

void ml_progress_finish(ml_progress *p) {
    if (p->enabled) print_line(p, ml_now(), 1);
}
