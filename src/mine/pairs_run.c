/* pairs_run.c - the `mine pairs` stage: shards -> pairs.jsonl (the scoring
 * is ml_pairs_run, src/mine/pairs.c), written to OUT.tmp and renamed at the
 * end, so a killed run leaves no half file (and the old one intact). */
#include "mine/pairs_run.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "core/fileio.h"
#include "core/progress.h"

static void summary(const ml_pairs_stats *s, double secs) {
    fprintf(stderr,
            "mine pairs: %lld shards, %lld samples, %lld images embedded in %.2f s "
            "(%.1f images/s, %.1f pairs/s)\n",
            s->shards, s->samples, s->images_embedded, secs,
            secs > 0 ? s->images_embedded / secs : 0, secs > 0 ? s->candidate_pairs / secs : 0);
    ml_counts_print("samples dropped", &s->samples_dropped);
    fprintf(stderr, "  groups %lld -> with pairs %lld\n", s->groups, s->groups_used);
    ml_counts_print("groups dropped", &s->groups_dropped);
    fprintf(stderr, "  candidate pairs %lld -> kept %lld (%lld lines)\n", s->candidate_pairs,
            s->pairs_out, s->lines_out);
    ml_counts_print("pairs dropped", &s->pairs_dropped);
}

int ml_mine_pairs(const ml_mine_pairs_opts *a, ml_model *m, ml_error *err) {
    size_t tn = strlen(a->output) + 5;
    char *tmp = malloc(tn), *dir = ml_dir_of(a->output);
    if (!tmp || !dir) {
        free(tmp), free(dir);
        return ml_fail(err, "out of memory");
    }
    snprintf(tmp, tn, "%s.tmp", a->output);
    ml_pairs_stats st = {0};
    int rc = 0;
    FILE *f = fopen(tmp, "w");
    if (!f) rc = ml_fail(err, "%s: cannot create: %s", tmp, strerror(errno));
    double t0 = ml_now();
    if (rc == 0) rc = ml_pairs_run(m, a->shards, dir, f, &a->o, &st, err);
    double secs = ml_now() - t0;
    if (rc == 0)
        rc = ml_finish_tmp(f, tmp, a->output, err);
    else if (f)
        fclose(f);
    if (rc != 0) unlink(tmp);
    summary(&st, secs);
    if (rc == 0 && a->stats) {
        json_t *s = ml_pairs_stats_json(&st);
        json_object_set_new(s, "seconds", json_real(secs));
        json_object_set_new(s, "images_per_s", json_real(secs > 0 ? st.images_embedded / secs : 0));
        json_object_set_new(s, "pairs_per_s", json_real(secs > 0 ? st.candidate_pairs / secs : 0));
        char *text = json_dumps(s, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        rc = text ? ml_write_atomic(a->stats, text, strlen(text), err)
                  : ml_fail(err, "out of memory");
        free(text);
        json_decref(s);
    }
    ml_pairs_stats_free(&st);
    free(tmp), free(dir);
    return rc;
}
