/* cpu.h - run-time choice of the instruction set the kernels use.
 *
 * The best path the CPU (and, for AMX, the kernel) supports is chosen once;
 * MAGICLENS_ISA=scalar|avx2|avx512|amx (x86-64) or neon|dotprod|i8mm|bf16
 * (aarch64) forces one (an unsupported forced path is an error at model
 * load, not a crash).  Tests call ml_isa_set() to run every supported path.
 * That choice (and the AVX-VNNI switch below) is the runtime's only mutable
 * global state. */
#ifndef ML_KERNELS_CPU_H
#define ML_KERNELS_CPU_H

#include "magiclens.h"

typedef enum ml_isa {
    ML_ISA_SCALAR = 0, /* portable C */
    ML_ISA_AVX2 = 1,   /* AVX2 + FMA */
    ML_ISA_AVX512 = 2, /* AVX-512 F/BW/VL (+ BF16 / VNNI when present) */
    ML_ISA_AMX = 3,    /* AVX512 + AMX tiles (BF16 / INT8) */
    /* aarch64 (docs/arm64.md): each path includes the one before it. */
    ML_ISA_NEON = 4,    /* Advanced SIMD: fp32 FMA; int8 / bf16 by widening */
    ML_ISA_DOTPROD = 5, /* + SDOT for int8 (ARMv8.2 dotprod) */
    ML_ISA_I8MM = 6,    /* + USMMLA for int8 (i8mm) */
    ML_ISA_NEON_BF16 = 7, /* + BFMMLA for bf16 (named "bf16") */
    ML_ISA_COUNT = 8,
} ml_isa;

/* 1 when this machine (and OS, for AVX-512 state and AMX permission) can run `isa`. */
int ml_isa_supported(ml_isa isa);
/* Finer features used by the low-precision kernels. */
int ml_cpu_has_avx512_bf16(void);
int ml_cpu_has_avx512_vnni(void);
/* 1 where the AVX-512 bf16 products use vdpbf16ps: the CPU has AVX512-BF16
 * and its dot products beat float32 FMA (AMD Zen 4 / 5; not Intel, whose
 * fast bf16 is AMX).  Elsewhere bf16 weights are widened into the float32
 * kernel ("avx512-bf16w").  MAGICLENS_BF16DOT=1 / 0, or
 * ml_cpu_set_bf16_dot(1 / 0; -1: back to the CPU's default) (tests),
 * forces the choice; forcing it on without AVX512-BF16 fails (-1).
 * Affects weights packed later. */
int ml_cpu_bf16_dot(void);
int ml_cpu_set_bf16_dot(int on);
/* The CPU's brand string (x86 CPUID), or "unknown". */
const char *ml_cpu_model(void);
/* AVX-VNNI (vpdpbusd on ymm, VEX-encoded): used by the int8 kernel where
 * AVX-512 VNNI is not.  MAGICLENS_AVXVNNI=0, or ml_cpu_set_avx_vnni(0)
 * (tests), hides it so that the AVX2 u8 x s8 kernel runs instead; setting
 * it on where the CPU lacks it fails (-1).  Affects weights packed later. */
int ml_cpu_has_avx_vnni(void);
int ml_cpu_set_avx_vnni(int on);
/* The path in use: MAGICLENS_ISA if set, else the best supported. */
ml_isa ml_isa_active(void);
/* Forces a path; -1 with a message when the machine cannot run it. */
int ml_isa_set(ml_isa isa, ml_error *err);
const char *ml_isa_name(ml_isa isa);
/* Parses a path name (ml_isa_name's); -1 if unknown. */
int ml_isa_parse(const char *name);

#endif
