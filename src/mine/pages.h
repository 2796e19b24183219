/* pages.h - stage 1+2 of mining: WARC records -> pages with their cleaned
 * image groups (one JSON object per page, see docs/mining.md).
 *
 * A record becomes a page when it is a response (or ARC record, or resource
 * record) for an http(s) URL, its HTTP status is 2xx, it is text/html or
 * application/xhtml+xml, and its body decodes (chunked transfer encoding;
 * gzip, deflate or br content encoding).  Everything else is counted under a
 * reason and skipped.  Pages are emitted in input order, so a run is
 * deterministic.  The URL set of images seen on earlier pages spans all the
 * files of one ml_pages. */
#ifndef ML_MINE_PAGES_H
#define ML_MINE_PAGES_H

#include <jansson.h>
#include <stdio.h>

#include "magiclens.h"
#include "mine/clean.h"
#include "mine/warc.h"

/* Named counters ("reason" -> count), in order of first use. */
typedef struct ml_counts {
    struct ml_count {
        char name[32];
        long long n;
    } * v;
    size_t n, cap;
} ml_counts;

void ml_counts_add(ml_counts *c, const char *name, long long k);
long long ml_counts_get(const ml_counts *c, const char *name);
json_t *ml_counts_json(const ml_counts *c);
/* "  LABEL: name n, name n" on stderr (nothing when empty): the stages' summaries. */
void ml_counts_print(const char *label, const ml_counts *c);
void ml_counts_free(ml_counts *c);

/* Receives each kept page (the callee does not own it). */
typedef int (*ml_pages_emit_fn)(void *ctx, json_t *page, ml_error *err);
typedef void (*ml_pages_progress_fn)(void *ctx, long long bytes_of_file);

typedef struct ml_pages {
    const ml_clean_rules *rules;
    size_t max_record; /* larger blocks (and decoded bodies) are skipped as too_large */
    ml_pages_emit_fn emit;
    void *emit_ctx;
    ml_warc_warn_fn warn; /* NULL: warnings are only counted */
    void *warn_ctx;
    ml_pages_progress_fn progress;
    void *progress_ctx;
    /* state */
    ml_url_set seen, in_page;
    /* counts */
    long long files, records, html_pages, pages_out, images_found, images_out, warnings;
    ml_counts record_types, skipped, pages_dropped, images_dropped;
} ml_pages;

/* rules must outlive p; set the callbacks after init. */
int ml_pages_init(ml_pages *p, const ml_clean_rules *rules, ml_error *err);
void ml_pages_free(ml_pages *p);

/* Reads one WARC/ARC stream (`name` goes into the output and warnings).
 * Damaged input is warned about and skipped; -1 only for read errors, out
 * of memory, or an emit failure. */
int ml_pages_file(ml_pages *p, FILE *f, const char *name, ml_error *err);

/* The counters as a JSON object (new reference). */
json_t *ml_pages_stats(const ml_pages *p);

#endif
