/* Retrieval metrics (src/eval/metrics.c) on cases computed by hand: CIRCO's
 * mAP@k with several ground truths, Recall@k, ranking with tied scores, and
 * CIRR's Recall_subset@k with the reference image left out. */
#include <stdint.h>

#include "check.h"
#include "eval/metrics.h"

#define NEAR(a, b) (fabs((a) - (b)) < 1e-12)

static void test_ap(void) {
    /* Ground truths 3, 7, 8; hits at ranks 2 and 5.
     * AP@5 = (1/2 + 2/5) / min(5, 3) = 0.9 / 3 = 0.3 */
    const int32_t ranked[] = {5, 3, 9, 1, 7};
    const int32_t gt[] = {3, 7, 8};
    CHECK(NEAR(ml_ap_at_k(ranked, 5, gt, 3, 5), 0.3));
    /* AP@2 = (1/2) / min(2, 3) = 0.25 */
    CHECK(NEAR(ml_ap_at_k(ranked, 5, gt, 3, 2), 0.25));
    CHECK(NEAR(ml_ap_at_k(ranked, 5, gt, 3, 1), 0.0));
    /* k past the ranking: same hits, denominator min(10, 3) = 3 */
    CHECK(NEAR(ml_ap_at_k(ranked, 5, gt, 3, 10), 0.3));
    /* Every ground truth first: AP = 1 */
    const int32_t gt2[] = {5, 3};
    CHECK(NEAR(ml_ap_at_k(ranked, 5, gt2, 2, 5), 1.0));
    /* Ground truth listed twice counts once: (1/2 + 2/5) / min(5, 3) */
    const int32_t gt3[] = {3, 7, 8, 7};
    CHECK(NEAR(ml_ap_at_k(ranked, 5, gt3, 4, 5), 0.3));
    /* More ground truths than k: denominator k.  Hits at 1, 2: (1 + 1) / 2 */
    const int32_t gt4[] = {5, 3, 9, 11, 12};
    CHECK(NEAR(ml_ap_at_k(ranked, 5, gt4, 5, 2), 1.0));
    /* AP@5 = (1 + 1 + 1) / min(5, 5) = 0.6 */
    CHECK(NEAR(ml_ap_at_k(ranked, 5, gt4, 5, 5), 0.6));
    CHECK(NEAR(ml_ap_at_k(ranked, 5, gt, 0, 5), 0.0));
    CHECK(NEAR(ml_ap_at_k(ranked, 0, gt, 3, 5), 0.0));
}

static void test_recall(void) {
    const int32_t ranked[] = {5, 3, 9, 1, 7};
    const int32_t t1[] = {9};
    CHECK(NEAR(ml_recall_at_k(ranked, 5, t1, 1, 2), 0.0));
    CHECK(NEAR(ml_recall_at_k(ranked, 5, t1, 1, 3), 1.0));
    CHECK(NEAR(ml_recall_at_k(ranked, 5, t1, 1, 50), 1.0));
    const int32_t t2[] = {42, 1}; /* any of several targets */
    CHECK(NEAR(ml_recall_at_k(ranked, 5, t2, 2, 3), 0.0));
    CHECK(NEAR(ml_recall_at_k(ranked, 5, t2, 2, 4), 1.0));
    CHECK(NEAR(ml_recall_at_k(ranked, 5, t2, 0, 4), 0.0));
}

static void test_ties(void) {
    /* Items 20 and 4 tie at 0.9: the smaller item (4) ranks first. */
    const float scores[] = {0.5f, 0.9f, 0.9f, 0.1f};
    const int32_t items[] = {10, 20, 4, 7};
    int32_t out[4];
    CHECK(ml_rank_topk(scores, items, 4, -1, 4, out) == 4);
    CHECK(out[0] == 4 && out[1] == 20 && out[2] == 10 && out[3] == 7);
    const int32_t t20 = 20, t4 = 4;
    CHECK(NEAR(ml_recall_at_k(out, 4, &t20, 1, 1), 0.0));
    CHECK(NEAR(ml_recall_at_k(out, 4, &t20, 1, 2), 1.0));
    CHECK(NEAR(ml_recall_at_k(out, 4, &t4, 1, 1), 1.0));
    /* k smaller than n, and skipping an item */
    CHECK(ml_rank_topk(scores, items, 4, 4, 2, out) == 2);
    CHECK(out[0] == 20 && out[1] == 10);
    /* All tied: item order */
    const float same[] = {0.3f, 0.3f, 0.3f};
    const int32_t it3[] = {9, 2, 5};
    CHECK(ml_rank_topk(same, it3, 3, -1, 3, out) == 3);
    CHECK(out[0] == 2 && out[1] == 5 && out[2] == 9);
    CHECK(ml_rank_topk(same, it3, 0, -1, 3, out) == 0);
}

static void test_subset(void) {
    /* Members 1..6 scored in falling order; reference 1 is left out, so the
     * ranking is 2, 3, 4, 5, 6: target 4 is third. */
    const float scores[] = {0.9f, 0.8f, 0.7f, 0.6f, 0.5f, 0.4f};
    const int32_t members[] = {1, 2, 3, 4, 5, 6};
    CHECK(NEAR(ml_recall_subset_at_k(scores, members, 6, 1, 4, 1), 0.0));
    CHECK(NEAR(ml_recall_subset_at_k(scores, members, 6, 1, 4, 2), 0.0));
    CHECK(NEAR(ml_recall_subset_at_k(scores, members, 6, 1, 4, 3), 1.0));
    /* Had the reference stayed in, target 4 would be fourth: R_s@3 = 0. */
    CHECK(NEAR(ml_recall_subset_at_k(scores, members, 6, -1, 4, 3), 0.0));
    /* Target 2 is first once the reference is out. */
    CHECK(NEAR(ml_recall_subset_at_k(scores, members, 6, 1, 2, 1), 1.0));
    /* A target outside the set is never found. */
    CHECK(NEAR(ml_recall_subset_at_k(scores, members, 6, 1, 99, 3), 0.0));
}

int main(void) {
    test_ap();
    test_recall();
    test_ties();
    test_subset();
    return check_done("test_metrics");
}
