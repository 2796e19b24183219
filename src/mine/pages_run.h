/* pages_run.h - the `mine pages` stage as a library call: WARC/ARC files ->
 * pages.jsonl, one page and its cleaned image group per line, written to
 * OUT.tmp and renamed at the end (docs/mining.md, "pages").  pages.h is the
 * record and page parser it drives, clean.h the rules. */
#ifndef ML_MINE_PAGES_RUN_H
#define ML_MINE_PAGES_RUN_H

#include "magiclens.h"
#include "mine/clean.h"

typedef struct ml_mine_pages_opts {
    const char **warc;
    int nwarc;
    const char *output, *rules, *stats;
    long min_images, max_images; /* -1: from the rules */
    int quiet, dump_rules;
} ml_mine_pages_opts;

/* Runs the stage over o->warc with `rules` (min/max images already
 * applied; rules_path, min_images, max_images and dump_rules are the
 * CLI's).  Progress, warnings and the summary go to stderr, the counts
 * also to o->stats.  Returns 0, or -1 with err set (no output written). */
int ml_mine_pages(const ml_mine_pages_opts *o, const ml_clean_rules *rules, ml_error *err);

#endif
