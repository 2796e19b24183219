/* gather.c - merging the search hits of K MPI ranks on rank 0: every rank
 * sends its top offset+k as (score, id) records; rank 0 sorts them by
 * (score desc, id asc), the same order as one process, and takes the paths
 * from its store of every shard. */
#include "index/gather.h"

#include <stdlib.h>
#include <string.h>

#include "core/dist.h"
#include "core/error.h"

typedef struct wire_hit {
    float score;
    int64_t id;
} wire_hit;

#define WIRE_BYTES 12 /* float score + int64 id, packed */

static int cmp_wire(const void *a, const void *b) {
    const wire_hit *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

int ml_index_gather_hits(ml_result *r, int *n, int want, const ml_store *all, ml_error *err) {
    size_t len = (size_t)*n * WIRE_BYTES;
    unsigned char *buf = malloc(len + 1);
    if (!buf) return ml_fail(err, "out of memory");
    for (int i = 0; i < *n; i++) {
        memcpy(buf + (size_t)i * WIRE_BYTES, &r[i].score, 4);
        memcpy(buf + (size_t)i * WIRE_BYTES + 4, &r[i].id, 8);
    }
    uint8_t *got;
    size_t lens[1024];
    if (ml_dist_size() > 1024) return free(buf), ml_fail(err, "too many ranks");
    int rc = ml_dist_gather(buf, len, &got, lens, err);
    free(buf);
    if (rc != 0 || ml_dist_rank() != 0) return rc;
    size_t total = 0;
    for (int k = 0; k < ml_dist_size(); k++) total += lens[k];
    size_t cnt = total / WIRE_BYTES;
    wire_hit *h = malloc(sizeof *h * (cnt + 1));
    if (!h) return free(got), ml_fail(err, "out of memory");
    for (size_t i = 0; i < cnt; i++) {
        memcpy(&h[i].score, got + i * WIRE_BYTES, 4);
        memcpy(&h[i].id, got + i * WIRE_BYTES + 4, 8);
    }
    free(got);
    qsort(h, cnt, sizeof *h, cmp_wire);
    *n = (int)(cnt < (size_t)want ? cnt : (size_t)want);
    for (int i = 0; i < *n; i++) {
        const ml_item *it = all ? ml_store_find_id(all, h[i].id) : NULL;
        if (!it) {
            long long id = (long long)h[i].id;
            free(h);
            return ml_fail(err, "item %lld: found by a rank but not in the index", id);
        }
        r[i] = (ml_result){h[i].id, it->path, h[i].score};
    }
    free(h);
    return 0;
}
