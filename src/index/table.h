/* table.h - an open-addressing hash set of row numbers.
 *
 * The table stores only row numbers (int64 >= 0) into an array the caller
 * owns; hashing and equality go through the caller's callbacks, so one
 * structure serves "id -> row" and "path -> row" lookups without copying
 * keys.  Linear probing, load factor <= 1/2, no deletion (rebuilt instead). */
#ifndef ML_INDEX_TABLE_H
#define ML_INDEX_TABLE_H

#include <stddef.h>
#include <stdint.h>

#include "magiclens.h"

typedef uint64_t (*ml_table_hash_fn)(const void *ctx, int64_t row);
/* Does row `row` hold `key`? */
typedef int (*ml_table_eq_fn)(const void *ctx, int64_t row, const void *key);

typedef struct ml_table {
    int64_t *slots; /* -1 = empty */
    size_t mask;    /* capacity - 1 */
    size_t count;
    ml_table_hash_fn hash;
    const void *ctx;
} ml_table;

int ml_table_init(ml_table *t, size_t expected, ml_table_hash_fn hash, const void *ctx,
                  ml_error *err);
void ml_table_free(ml_table *t);
/* Adds row (grows as needed). */
int ml_table_add(ml_table *t, int64_t row, ml_error *err);
/* The row whose key equals `key` (hashing to `h`), or -1. */
int64_t ml_table_find(const ml_table *t, uint64_t h, const void *key, ml_table_eq_fn eq);
/* Replaces the entry holding `old_row` with `new_row` (same key). */
void ml_table_replace(ml_table *t, uint64_t h, int64_t old_row, int64_t new_row);

#endif
