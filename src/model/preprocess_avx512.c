/* preprocess_avx512.c - the AVX512 resampling kernels (built with this ISA's
 * -m flags; preprocess.c calls them only when ml_isa_active() allows). */
#if defined(__x86_64__)
#include <math.h>
#define PRE_AVX512
#define PRE_NAME avx512
#include "model/preprocess_tmpl.h"
#else
typedef int ml_preprocess_avx512_unused; /* ISO C wants a non-empty file */
#endif
