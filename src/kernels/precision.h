/* precision.h - low-precision weights for the linear layers.
 *
 * float32 weights are used in place (memory-mapped); bf16 and int8 weights
 * are packed once at load time into the layout their kernel wants
 * (e.g. VNNI pairs / AMX tiles), with per-output-channel scales for int8. */
#ifndef ML_KERNELS_PRECISION_H
#define ML_KERNELS_PRECISION_H

#include "kernels/cpu.h"
#include "magiclens.h"

typedef enum ml_precision { ML_PREC_FP32 = 0, ML_PREC_BF16 = 1, ML_PREC_INT8 = 2 } ml_precision;

typedef struct ml_packed ml_packed; /* opaque, owned by whoever packed it */

/* Packs B [K, N] (row-major, Flax [in, out]) for `prec` on `isa`. */
ml_packed *ml_pack_weights(const float *B, int K, int N, ml_precision prec, ml_isa isa,
                           ml_error *err);
void ml_packed_free(ml_packed *p);
size_t ml_packed_bytes(const ml_packed *p);

/* C[M,N] = A[M,K] @ dequant(B) (+ bias) (+ C if accumulate).  A is float32;
 * it is converted (bf16) or quantised per row (int8) on the fly. */
void ml_gemm_packed(int M, const float *A, int lda, const ml_packed *B, const float *bias,
                    float *C, int ldc, int accumulate);

/* C[M,N] = quick_gelu(A[M,K] @ dequant(B) + bias): on AMX the activation
 * runs in the GEMM's epilogue (C is written once); elsewhere it is a
 * separate pass over C. */
void ml_gemm_packed_gelu(int M, const float *A, int lda, const ml_packed *B, const float *bias,
                         float *C, int ldc);

const char *ml_precision_name(ml_precision p);
int ml_precision_parse(const char *name); /* -1 if unknown */

#endif
