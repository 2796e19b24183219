/* pairs.h - stage 4 of mining: scored image pairs inside each page group
 * (docs/mining-pairs.md).
 *
 * Input: WebDataset-style shards from `mine fetch`, each sample KEY.json
 * (metadata) + KEY.{jpg,png,webp,gif}; the images of one page share a group
 * id and are stored next to each other.  Each image gets its CLIP image
 * embedding (L2-normalised) and, when it has alt text (else caption, else
 * title), the CLIP text embedding of that text.  For every pair (i < j) of a
 * group:
 *
 *   image_sim = cos(img_i, img_j)
 *   text_sim  = cos(txt_i, txt_j)            (only when both have text)
 *   score     = (1 - w) * image_sim + w * text_sim, or image_sim without text
 *
 * A pair is a candidate when min_sim <= image_sim <= max_sim (above: a near
 * duplicate, below: unrelated).  Candidates are taken greedily by score
 * (ties: lower i, then lower j) while the page has fewer than
 * max_pairs_per_page pairs and both images were used fewer than max_uses
 * times.  The query is the image that comes first on the page. */
#ifndef ML_MINE_PAIRS_H
#define ML_MINE_PAIRS_H

#include <jansson.h>
#include <stdio.h>

#include "magiclens.h"
#include "mine/pages.h" /* ml_counts */

typedef struct ml_pairs_opts {
    double min_sim, max_sim; /* image_sim band, inclusive */
    double alt_weight;       /* w above, in [0, 1] */
    int max_pairs_per_page;
    int max_uses;        /* times one image may appear in the pairs of its page */
    int both_directions; /* also emit target -> query */
    int batch;           /* images per image-tower call */
    int quiet;           /* no progress bar */
} ml_pairs_opts;

void ml_pairs_opts_default(ml_pairs_opts *o);

/* One selected pair: q, t index the group's images. */
typedef struct ml_pair {
    int q, t;
    int has_text;
    double image_sim, text_sim, score;
} ml_pair;

/* Scores and selects the pairs of one group of n images.  img: n*dim
 * normalised embeddings; txt: n*dim, row i used only when has_txt[i].
 * out must hold n*(n-1)/2 pairs; *nout receives the number selected, in
 * selection order.  Drop reasons are added to `drops` (near_duplicate,
 * unrelated, page_cap, image_cap).  -1 only when out of memory. */
int ml_pairs_select(int n, int dim, const float *img, const float *txt, const int *has_txt,
                    const ml_pairs_opts *o, ml_pair *out, int *nout, ml_counts *drops);

/* Counters of one run (stats JSON: ml_pairs_stats_json). */
typedef struct ml_pairs_stats {
    long long shards, members, samples, images_in, images_embedded, groups, groups_used,
        candidate_pairs, pairs_out, lines_out, warnings;
    ml_counts samples_dropped, groups_dropped, pairs_dropped;
} ml_pairs_stats;

/* Reads every shard (`shards` is a folder of *.tar, read in name order, or
 * one .tar), embeds, selects and writes one JSON line per pair to `out`.
 * Image keys are "TAR::MEMBER" with TAR relative to `out_dir` (the output
 * file's folder).  Damaged samples are warned about and counted; -1 for
 * errors that stop the run (unreadable shard, write failure). */
int ml_pairs_run(ml_model *m, const char *shards, const char *out_dir, FILE *out,
                 const ml_pairs_opts *o, ml_pairs_stats *st, ml_error *err);
json_t *ml_pairs_stats_json(const ml_pairs_stats *st);
void ml_pairs_stats_free(ml_pairs_stats *st);

/* `path` relative to the folder `from_dir` ("a/b.tar", "../x/b.tar"), both
 * made absolute first (symlinks resolved where the path exists).  NULL when
 * out of memory or the working folder is unknown.  malloc'ed. */
char *ml_path_relative(const char *path, const char *from_dir);

#endif
