/* bench.h - a benchmark as the evaluation runner sees it.
 *
 * Loaders (loaders.c) read a benchmark's own files under --data and turn
 * them into tasks: a gallery (benchmark key -> image path), the queries
 * (image, instruction, targets given as gallery positions) and the metrics
 * to report.  Benchmarks with several parts (FashionIQ's three categories,
 * DTIN's four domains, GeneCIS's tasks) give one task per part and the
 * runner adds their average.
 *
 * Nothing is dropped silently: a query whose reference image, target or
 * annotation is missing keeps its place with `problem` set and scores 0;
 * gallery images that do not exist are counted. */
#ifndef ML_EVAL_BENCH_H
#define ML_EVAL_BENCH_H

#include <stdint.h>

#include "magiclens.h"

enum { ML_METRIC_RECALL = 0, ML_METRIC_MAP = 1, ML_METRIC_RECALL_SUBSET = 2 };
#define ML_EVAL_MAX_METRICS 12

typedef struct ml_metric_spec {
    int kind, k;
} ml_metric_spec;

typedef struct ml_eval_query {
    char *id;       /* as the benchmark names it (pairid, id, line number) */
    char *image;    /* absolute path of a query image that is not a gallery item */
    char *text;     /* the instruction in the official wording ("" : none) */
    int32_t ref;    /* gallery position of the query image (-1: not in it); with
                       image NULL too, the query is text to image through the CLIP
                       towers (t2i, text-only custom queries) */
    int32_t *targets;
    int ntargets;
    int32_t *subset; /* CIRR img_set members, or the query's own gallery */
    int nsubset;
    char *problem; /* why the query cannot be scored (it then scores 0) */
} ml_eval_query;

/* A gallery item that is a region of another image (GeneCIS attribute
 * tasks): the loader names the crop file it will be read from, the runner
 * writes that file from `src` before indexing (crops.c). */
typedef struct ml_eval_crop {
    char *src;      /* the whole image; NULL: the item is not a crop */
    double box[4];  /* x, y, width, height in pixels, as the annotation gives it */
} ml_eval_crop;

typedef struct ml_eval_task {
    char *name;       /* "dress", "cartoon", "val", ... */
    char *index_name; /* gallery index under --output (tasks may share one) */
    char **keys;      /* gallery: benchmark key and absolute path per position */
    char **paths;
    ml_eval_crop *crops; /* per gallery position, or NULL when no item is a crop */
    int ngallery, gcap, ccap;
    ml_eval_query *q;
    int nq, qcap;
    int exclude_ref;   /* leave the query image out of its ranking (CIRR) */
    int subset_gallery; /* rank only the query's own subset (GeneCIS) */
    ml_metric_spec metrics[ML_EVAL_MAX_METRICS];
    int nmetrics;
    void *lookup; /* key -> position (private to bench.c) */
} ml_eval_task;

typedef struct ml_eval_bench {
    char *name; /* the benchmark argument ("fiq", "cirr", ...) */
    char *split;
    ml_eval_task *tasks;
    int ntasks;
    int submission; /* test split: write the server's submission files */
    char *work;     /* absolute output folder (derived files such as crops go there) */
} ml_eval_bench;

/* Loads benchmark `name` (split NULL = its default) from `data`.  `work` is
 * the output folder (created if needed): files derived from the data (the
 * GeneCIS attribute crops) are written under it. */
int ml_eval_load(const char *name, const char *split, const char *data, const char *work,
                 ml_eval_bench *b, ml_error *err);
void ml_eval_bench_free(ml_eval_bench *b);
/* The benchmark names, for usage messages. */
const char *ml_eval_bench_names(void);

/* ---- helpers for loaders ---------------------------------------------- */
ml_eval_task *ml_eval_add_task(ml_eval_bench *b, const char *name, const char *index_name,
                               ml_error *err);
/* Adds (or finds) gallery item `key` with image `path` (may be relative to
 * nothing: it is made absolute); returns its position or -1. */
int32_t ml_eval_gallery_add(ml_eval_task *t, const char *key, const char *path, ml_error *err);
/* Adds gallery item `key` read from `crop_path`, the region `box` (x, y,
 * w, h) of image `src` (see ml_eval_crop); returns its position or -1. */
int32_t ml_eval_gallery_add_crop(ml_eval_task *t, const char *key, const char *crop_path,
                                 const char *src, const double box[4], ml_error *err);
/* Position of `key`, or -1. */
int32_t ml_eval_gallery_find(const ml_eval_task *t, const char *key);
ml_eval_query *ml_eval_add_query(ml_eval_task *t, const char *id, const char *image,
                                 const char *text, ml_error *err);
int ml_eval_query_target(ml_eval_query *q, int32_t pos, ml_error *err);
int ml_eval_query_subset(ml_eval_query *q, int32_t pos, ml_error *err);
/* Records the first problem of a query (printf-style). */
void ml_eval_query_problem(ml_eval_query *q, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
void ml_eval_add_metric(ml_eval_task *t, int kind, int k);
const char *ml_metric_name(const ml_metric_spec *m, char *buf, int n);

/* ---- crops.c ----------------------------------------------------------- */
/* Writes `dst` (PNG): the region box = (x, y, w, h) of image `src` cut as
 * GeneCIS's evaluation does (datasets/vaw_dataset.py, load_cropped_image
 * with DILATION 0.7 and PAD_CROP): left = max(0, x - 0.7 w), top = max(0,
 * y - 0.7 h), right = min(W, left + 1.7 w), bottom = min(H, top + 1.7 h),
 * rounded half to even as PIL's crop does, then padded with black to a
 * centred square (expand2square).  The file is written whole or not at all. */
int ml_eval_make_crop(const char *src, const double box[4], const char *dst, ml_error *err);
/* The same region as an image (caller frees with ml_image_free). */
int ml_eval_crop_image(const ml_image *im, const double box[4], ml_image *out, ml_error *err);

#endif
