/* preprocess_isa.h - the resampling kernels behind ml_preprocess_image
 * (internal to preprocess*.c).
 *
 * preprocess.c builds the portable set from preprocess_tmpl.h; on x86-64
 * preprocess_avx2.c and preprocess_avx512.c build the same template with
 * their own -m flags and are called only when ml_isa_active() says so. */
#ifndef ML_MODEL_PREPROCESS_ISA_H
#define ML_MODEL_PREPROCESS_ISA_H

#include <stddef.h>
#include <stdint.h>

/* The resampling weights of one axis (n_in -> n_out), as float: output j is
 * sum_{t < count[j]} w[j * stride + t] * input[first[j] + t]. */
typedef struct ml_pre_axis {
    int n_in, n_out, stride;
    int *first, *count;
    float *w;
} ml_pre_axis;

typedef struct ml_pre_kernels {
    /* One output row of a pass along the height: d[k] = sum_t w[t] *
     * src[t][k] for k < n (count 0: zeros).  u8: the source rows are the
     * decoded bytes, widened on the fly. */
    void (*vrow_u8)(const uint8_t *const *src, int count, const float *w, size_t n, float *d);
    void (*vrow_f32)(const float *const *src, int count, const float *w, size_t n, float *d);
    /* `rows` rows of a pass along the width, RGB interleaved: source row y
     * holds a->n_in * 3 floats at src + y * sp, destination row y receives
     * a->n_out * 3 at d + y * dp.  The float after the last source row
     * must be readable (a pixel is read as 4 floats). */
    void (*hrows)(const float *src, size_t sp, int rows, const ml_pre_axis *a, float *d,
                  size_t dp);
    /* The largest of n bytes (0 for none). */
    uint8_t (*max_u8)(const uint8_t *p, size_t n);
    /* x = x * a[c] + b[c] over npix RGB pixels, computed in double. */
    void (*affine_rgb)(float *x, size_t npix, const double a[3], const double b[3]);
} ml_pre_kernels;

extern const ml_pre_kernels ml_pre_scalar;
#if defined(__x86_64__)
extern const ml_pre_kernels ml_pre_avx2, ml_pre_avx512;
#endif
#if defined(__aarch64__)
extern const ml_pre_kernels ml_pre_neon; /* preprocess_neon.c, every aarch64 path */
#endif

#endif
