/* data.h - training triplets: (query image, instruction, target image).
 *
 * Sources:
 *  - a JSONL file, one {"query_image", "instruction", "target_image"} per
 *    line; relative paths are resolved against the file's folder, and a path
 *    may name a tar member as "shard.tar::member" (what `mine instruct`
 *    writes);
 *  - a WebDataset-style .tar, or a folder of them (sorted by name): the
 *    members of one sample share the key (the name up to its first '.'):
 *    KEY.query.{jpg,png,webp,gif}, KEY.target.{...}, and the instruction in
 *    KEY.txt / KEY.instruction.txt or KEY.json {"instruction": ...}.
 * Lines or samples that are malformed are skipped, counted and reported
 * (with the line number or member name); an image that fails to decode
 * during training drops its triplet from that batch (counted).
 *
 * The dataset holds only names (images and instructions are deduplicated,
 * so a frozen-tower cache can key on them); images are read when a batch is
 * loaded.  The epoch order is a permutation of the triplets computed from
 * (seed, epoch), so a data position is just (epoch, index): resuming is
 * exact, and K processes agree on every batch without talking. */
#ifndef ML_TRAIN_DATA_H
#define ML_TRAIN_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "magiclens.h"

typedef struct ml_triplet {
    uint32_t query, target; /* indices into images */
    uint32_t instruction;   /* index into texts */
} ml_triplet;

typedef struct ml_tdata {
    ml_triplet *items;
    size_t n, cap;
    char **images; /* unique image keys (path or tar::member) */
    size_t n_images, cap_images;
    char **texts; /* unique instructions; texts[0] is "" */
    size_t n_texts, cap_texts;
    void *index;    /* name -> id tables used while loading */
    size_t skipped; /* malformed lines / samples */
} ml_tdata;

/* Loads `path` (JSONL, .tar or folder of .tar).  Malformed entries are
 * reported through warn (may be NULL) and counted in skipped. */
typedef void (*ml_tdata_warn_fn)(void *ctx, const char *msg);
int ml_tdata_load(ml_tdata *d, const char *path, ml_tdata_warn_fn warn, void *wctx, ml_error *err);
void ml_tdata_free(ml_tdata *d);

/* The order of epoch `epoch`: perm[i] = index of the i-th triplet
 * (Fisher-Yates driven by splitmix64 seeded with seed and epoch). */
void ml_tdata_order(size_t n, uint64_t seed, int64_t epoch, uint32_t *perm);

/* Reads and preprocesses images by id on `workers` threads.  pixels[i]
 * receives size*size*3 floats (caller-allocated) or, on failure, ok[i] = 0
 * and msgs[i] (may be NULL) a malloc'ed reason. */
int ml_tdata_load_images(const ml_tdata *d, int n, const uint32_t *ids, int size, int workers,
                         float *const *pixels, int *ok, char **msgs);

#endif
