/* metrics.c - see metrics.h.  Kept free of I/O so that it can be checked by
 * hand-computed cases (tests/unit/test_metrics.c). */
#include "eval/metrics.h"

#include <stdlib.h>

typedef struct scored {
    float score;
    int32_t item;
} scored;

/* Higher score first, then the smaller item: the tie rule of metrics.h. */
static int cmp_scored(const void *a, const void *b) {
    const scored *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return (x->item > y->item) - (x->item < y->item);
}

int ml_rank_topk(const float *scores, const int32_t *items, int n, int32_t skip, int k,
                 int32_t *out) {
    if (n <= 0 || k <= 0) return 0;
    scored *s = malloc((size_t)n * sizeof *s);
    if (!s) return 0;
    int m = 0;
    for (int i = 0; i < n; i++)
        if (items[i] != skip || skip < 0) s[m++] = (scored){scores[i], items[i]};
    qsort(s, (size_t)m, sizeof *s, cmp_scored);
    int w = m < k ? m : k;
    for (int i = 0; i < w; i++) out[i] = s[i].item;
    free(s);
    return w;
}

static int contains(const int32_t *a, int n, int32_t v) {
    for (int i = 0; i < n; i++)
        if (a[i] == v) return 1;
    return 0;
}

double ml_recall_at_k(const int32_t *ranked, int n, const int32_t *targets, int nt, int k) {
    int lim = n < k ? n : k;
    for (int i = 0; i < lim; i++)
        if (contains(targets, nt, ranked[i])) return 1.0;
    return 0.0;
}

/* Distinct ground truths: a list that names one twice must not inflate
 * the min(k, |G|) denominator. */
static int count_distinct(const int32_t *a, int n) {
    int d = 0;
    for (int i = 0; i < n; i++)
        if (!contains(a, i, a[i])) d++;
    return d;
}

double ml_ap_at_k(const int32_t *ranked, int n, const int32_t *targets, int nt, int k) {
    int g = count_distinct(targets, nt);
    if (g == 0 || k <= 0) return 0.0;
    int lim = n < k ? n : k, hits = 0;
    double sum = 0.0;
    for (int i = 0; i < lim; i++) {
        /* A result listed twice (cannot happen from a search) counts once. */
        if (!contains(targets, nt, ranked[i]) || contains(ranked, i, ranked[i])) continue;
        hits++;
        sum += (double)hits / (double)(i + 1);
    }
    return sum / (double)(g < k ? g : k);
}

double ml_recall_subset_at_k(const float *scores, const int32_t *members, int n,
                             int32_t reference, int32_t target, int k) {
    if (n <= 0 || k <= 0) return 0.0;
    int32_t *ranked = malloc((size_t)n * sizeof *ranked);
    if (!ranked) return 0.0;
    int w = ml_rank_topk(scores, members, n, reference, k, ranked);
    double r = ml_recall_at_k(ranked, w, &target, 1, k);
    free(ranked);
    return r;
}
