/* preprocess_neon.c - the aarch64 NEON resampling kernels (Advanced SIMD is
 * baseline there; preprocess.c uses them on every aarch64 path). */
#if defined(__aarch64__)
#include <math.h>
#define PRE_NEON
#define PRE_NAME neon
#include "model/preprocess_tmpl.h"
#else
typedef int ml_preprocess_neon_unused; /* ISO C wants a non-empty file */
#endif
