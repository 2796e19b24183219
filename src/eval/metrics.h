/* metrics.h - retrieval metrics, plain and independent of the rest of eval.
 *
 * Gallery items are small integers (positions in a benchmark's gallery
 * table).  A ranking is an array of them, best first.  Every metric looks at
 * one query; the caller averages over ALL queries of a benchmark (a query
 * that could not be run scores 0, it is never dropped).
 *
 * Ranking order: higher score first; equal scores are broken by the smaller
 * item number, so ties give one deterministic ranking (the index searcher
 * breaks ties the same way, by the smaller id). */
#ifndef ML_EVAL_METRICS_H
#define ML_EVAL_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* Ranks items[0..n) by scores[0..n) (parallel arrays), skipping items equal
 * to `skip` (-1: none), and writes the best min(k, n') items to out.
 * Returns how many were written. */
int ml_rank_topk(const float *scores, const int32_t *items, int n, int32_t skip, int k,
                 int32_t *out);

/* 1 if any of targets[0..nt) is among ranked[0..min(k, n)), else 0. */
double ml_recall_at_k(const int32_t *ranked, int n, const int32_t *targets, int nt, int k);

/* Average precision at k with several ground truths, as CIRCO defines it:
 *   AP@k = sum_{i<=k} P@i * rel(i) / min(k, |G|)
 * where rel(i) says whether the i-th result is a ground truth and P@i is the
 * precision over the first i results.  Repeated ground truths count once. */
double ml_ap_at_k(const int32_t *ranked, int n, const int32_t *targets, int nt, int k);

/* CIRR's Recall_subset@k: the query's img_set members (which include the
 * reference image) are ranked by their scores with the reference left out,
 * and the query counts if `target` is among the first k. */
double ml_recall_subset_at_k(const float *scores, const int32_t *members, int n,
                             int32_t reference, int32_t target, int k);

#endif
