/* gate.h - admission control for expensive request work: at most `slots`
 * requests run, at most `queue` wait; anyone beyond is turned away at once
 * (the server answers 503) so memory and latency stay bounded. */
#ifndef ML_SERVE_GATE_H
#define ML_SERVE_GATE_H

#include <pthread.h>

typedef struct ml_gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int slots, queue; /* limits */
    int running, waiting;
} ml_gate;

enum { ML_GATE_OK = 0, ML_GATE_FULL = -1, ML_GATE_TIMEOUT = -2 };

int ml_gate_init(ml_gate *g, int slots, int queue);
void ml_gate_destroy(ml_gate *g);
/* Waits up to timeout_s for a slot.  ML_GATE_OK: call ml_gate_leave after. */
int ml_gate_enter(ml_gate *g, double timeout_s);
void ml_gate_leave(ml_gate *g);
/* Snapshot for /metrics. */
void ml_gate_load(ml_gate *g, int *running, int *waiting);

#endif
