/* mem.h - allocation helpers: checked malloc, aligned buffers, whole-file reads. */
#ifndef ML_CORE_MEM_H
#define ML_CORE_MEM_H

#include <stddef.h>
#include <stdint.h>

#include "magiclens.h"

#define ML_ALIGN 64

/* malloc/calloc that fail with a message instead of returning NULL silently. */
void *ml_malloc(size_t n, ml_error *err);
void *ml_calloc(size_t count, size_t size, ml_error *err);
/* 64-byte aligned allocation; release with free(). */
void *ml_aligned_alloc(size_t n, ml_error *err);

/* A read-only view of a whole file: memory-mapped when possible. */
typedef struct ml_file_map {
    const uint8_t *data;
    size_t size;
    int mapped; /* 1: munmap on close, 0: free() */
} ml_file_map;

int ml_file_map_open(const char *path, ml_file_map *out, ml_error *err);
void ml_file_map_close(ml_file_map *m);

#endif
