#include "index/table.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/mem.h"

static int alloc_slots(ml_table *t, size_t cap, ml_error *err) {
    t->slots = ml_malloc(cap * sizeof *t->slots, err);
    if (!t->slots) return -1;
    memset(t->slots, 0xff, cap * sizeof *t->slots); /* all -1 */
    t->mask = cap - 1;
    return 0;
}

int ml_table_init(ml_table *t, size_t expected, ml_table_hash_fn hash, const void *ctx,
                  ml_error *err) {
    size_t cap = 16;
    while (cap < 2 * expected) cap <<= 1;
    t->count = 0, t->hash = hash, t->ctx = ctx;
    return alloc_slots(t, cap, err);
}

void ml_table_free(ml_table *t) {
    free(t->slots);
    t->slots = NULL;
}

static void insert(ml_table *t, uint64_t h, int64_t row) {
    size_t i = (size_t)h & t->mask;
    while (t->slots[i] >= 0) i = (i + 1) & t->mask;
    t->slots[i] = row;
}

static int grow(ml_table *t, ml_error *err) {
    int64_t *old = t->slots;
    size_t old_cap = t->mask + 1;
    if (alloc_slots(t, old_cap * 2, err) != 0) {
        t->slots = old, t->mask = old_cap - 1;
        return -1;
    }
    for (size_t i = 0; i < old_cap; i++)
        if (old[i] >= 0) insert(t, t->hash(t->ctx, old[i]), old[i]);
    free(old);
    return 0;
}

int ml_table_add(ml_table *t, int64_t row, ml_error *err) {
    if (2 * (t->count + 1) > t->mask + 1 && grow(t, err) != 0) return -1;
    insert(t, t->hash(t->ctx, row), row);
    t->count++;
    return 0;
}

int64_t ml_table_find(const ml_table *t, uint64_t h, const void *key, ml_table_eq_fn eq) {
    for (size_t i = (size_t)h & t->mask; t->slots[i] >= 0; i = (i + 1) & t->mask)
        if (eq(t->ctx, t->slots[i], key)) return t->slots[i];
    return -1;
}

void ml_table_replace(ml_table *t, uint64_t h, int64_t old_row, int64_t new_row) {
    for (size_t i = (size_t)h & t->mask; t->slots[i] >= 0; i = (i + 1) & t->mask)
        if (t->slots[i] == old_row) {
            t->slots[i] = new_row;
            return;
        }
}
