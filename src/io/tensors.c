/* tensors.c - the named tensor set and the dtype helpers.
 *
 * A zeroed ml_tensor_set is the empty set; ml_tensor_set_free returns a set
 * to that state, so freeing twice is harmless. */
#include "io/tensors.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"

size_t ml_dtype_size(ml_dtype t) {
    switch (t) {
    case ML_F32: return 4;
    case ML_F16: return 2;
    case ML_BF16: return 2;
    case ML_U8: return 1;
    }
    return 0;
}

const char *ml_dtype_name(ml_dtype t) {
    switch (t) {
    case ML_F32: return "float32";
    case ML_F16: return "float16";
    case ML_BF16: return "bfloat16";
    case ML_U8: return "uint8";
    }
    return "?";
}

int64_t ml_tensor_numel(const ml_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

/* Grows an array of `elem`-sized items to hold at least `need` of them. */
static int grow(void **items, size_t *cap, size_t need, size_t elem, ml_error *err) {
    if (need <= *cap) return 0;
    size_t ncap = *cap ? *cap : 16;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2 / elem) return ml_fail(err, "tensor set too large");
        ncap *= 2;
    }
    void *p = realloc(*items, ncap * elem);
    if (!p) return ml_fail(err, "out of memory growing the tensor set to %zu entries", ncap);
    *items = p;
    *cap = ncap;
    return 0;
}

int ml_tensor_set_add(ml_tensor_set *s, const char *name, ml_dtype dtype, int ndim,
                      const int64_t *shape, const void *data, size_t nbytes, ml_error *err) {
    if (ndim < 0 || ndim > ML_MAX_DIMS)
        return ml_fail(err, "%s: %d dimensions (at most %d supported)", name, ndim, ML_MAX_DIMS);
    void *items = s->items;
    if (grow(&items, &s->cap, s->count + 1, sizeof *s->items, err) != 0) return -1;
    s->items = items;
    size_t nl = strlen(name);
    char *copy = ml_malloc(nl + 1, err);
    if (!copy) return -1;
    memcpy(copy, name, nl + 1);
    ml_tensor *t = &s->items[s->count++];
    memset(t, 0, sizeof *t);
    t->name = copy;
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->data = data;
    t->nbytes = nbytes;
    return 0;
}

int ml_tensor_set_own(ml_tensor_set *s, void *buf, ml_error *err) {
    void *owned = s->owned;
    if (grow(&owned, &s->cap_owned, s->n_owned + 1, sizeof *s->owned, err) != 0)
        return -1; /* the caller still owns buf */
    s->owned = owned;
    s->owned[s->n_owned++] = buf;
    return 0;
}

const ml_tensor *ml_tensor_set_find(const ml_tensor_set *s, const char *name) {
    for (size_t i = 0; i < s->count; i++)
        if (strcmp(s->items[i].name, name) == 0) return &s->items[i];
    return NULL;
}

void ml_tensor_set_free(ml_tensor_set *s) {
    if (!s) return;
    for (size_t i = 0; i < s->count; i++) free(s->items[i].name);
    free(s->items);
    for (size_t i = 0; i < s->n_owned; i++) free(s->owned[i]);
    free(s->owned);
    ml_file_map_close(&s->file);
    memset(s, 0, sizeof *s);
}

static int cmp_tensor_ptr(const void *a, const void *b) {
    const ml_tensor *x = *(const ml_tensor *const *)a, *y = *(const ml_tensor *const *)b;
    return strcmp(x->name, y->name);
}

int ml_tensor_set_check_unique(const ml_tensor_set *s, ml_error *err) {
    if (s->count < 2) return 0;
    /* Sorting pointers keeps this O(n log n) even for hostile files with many names. */
    const ml_tensor **v = ml_malloc(s->count * sizeof *v, err);
    if (!v) return -1;
    for (size_t i = 0; i < s->count; i++) v[i] = &s->items[i];
    qsort(v, s->count, sizeof *v, cmp_tensor_ptr);
    int rc = 0;
    for (size_t i = 1; i < s->count && rc == 0; i++)
        if (strcmp(v[i - 1]->name, v[i]->name) == 0)
            rc = ml_fail(err, "%s: duplicate tensor name", v[i]->name);
    free(v);
    return rc;
}

static float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float ml_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) /* inf / nan: keep the payload bits */
        return f32_from_bits(sign | 0x7f800000u | (man << 13));
    if (exp != 0) return f32_from_bits(sign | ((exp + 112) << 23) | (man << 13));
    if (man == 0) return f32_from_bits(sign); /* signed zero */
    /* Subnormal half: normalise the mantissa; every half subnormal is a normal float. */
    int e = 113;
    while (!(man & 0x400u)) {
        man <<= 1;
        e--;
    }
    return f32_from_bits(sign | ((uint32_t)e << 23) | ((man & 0x3ffu) << 13));
}

float ml_bf16_to_f32(uint16_t b) { return f32_from_bits((uint32_t)b << 16); }

float ml_tensor_get_f32(const ml_tensor *t, int64_t i) {
    const uint8_t *p = (const uint8_t *)t->data + (size_t)i * ml_dtype_size(t->dtype);
    /* memcpy: .pkl tensors may be unaligned. Data is little-endian, as is every target. */
    switch (t->dtype) {
    case ML_F32: {
        float f;
        memcpy(&f, p, 4);
        return f;
    }
    case ML_F16: {
        uint16_t h;
        memcpy(&h, p, 2);
        return ml_f16_to_f32(h);
    }
    case ML_BF16: {
        uint16_t h;
        memcpy(&h, p, 2);
        return ml_bf16_to_f32(h);
    }
    case ML_U8: return (float)p[0];
    }
    return 0.0f;
}
