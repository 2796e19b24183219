/* runner.h - runs a loaded benchmark (bench.h) with a model.
 *
 * Per task: the gallery images are embedded into an index under the output
 * folder (<output>/<index_name>.mlindex, from the list file next to it; a
 * later run embeds only what changed), query images that are not in the
 * gallery into <output>/<index_name>-queries.mlindex.  Queries are then
 * formed from the stored CLIP image embeddings plus the instruction
 * (ml_embed_from_clip, in batches: no image is decoded twice), searched,
 * scored, and written one per line to <output>/rankings.jsonl.  On a test
 * split the servers' submission files are written instead of metrics. */
#ifndef ML_EVAL_RUNNER_H
#define ML_EVAL_RUNNER_H

#include <jansson.h>

#include "eval/bench.h"
#include "magiclens.h"

typedef struct ml_eval_opts {
    const char *output; /* folder for indexes, rankings, results */
    int k;              /* ranking depth saved per query (at least the deepest metric) */
    int batch;          /* queries / images per model call */
    int progress;
    const char *model_name, *precision;
} ml_eval_opts;

/* Fills *results with {"benchmark", "split", "tasks": [...], "average"?,
 * "rankings", "submission"?}; metric values are percentages. */
int ml_eval_run(ml_model *m, const ml_eval_bench *b, const ml_eval_opts *o, json_t **results,
                ml_error *err);

#endif
