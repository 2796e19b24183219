/* preprocess_avx2.c - the AVX2 resampling kernels (built with this ISA's
 * -m flags; preprocess.c calls them only when ml_isa_active() allows). */
#if defined(__x86_64__)
#include <math.h>
#define PRE_AVX2
#define PRE_NAME avx2
#include "model/preprocess_tmpl.h"
#else
typedef int ml_preprocess_avx2_unused; /* ISO C wants a non-empty file */
#endif
