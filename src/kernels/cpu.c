/* cpu.c - which instruction set the kernels use.
 *
 * Detection runs once (pthread_once): cpuid for the instructions, xgetbv for
 * the register state the OS saves (a CPU may have AVX-512 while the kernel
 * does not context-switch the ZMM registers), and, for AMX, the Linux
 * permission request for the tile data state.  MAGICLENS_ISA is read at the
 * same time.  On aarch64, getauxval(AT_HWCAP / AT_HWCAP2) says which of the
 * dotprod / i8mm / bf16 instructions the CPU has.  The active path is the
 * one piece of mutable state: an atomic that ml_isa_set() may change (tests
 * loop over every path). */
#include "kernels/cpu.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#if defined(__aarch64__)
#include <sys/auxv.h>
#endif

typedef struct cpu_caps {
    int isa_ok[ML_ISA_COUNT]; /* indexed by ml_isa */
    int bf16, vnni;
    int bf16_fast; /* AVX512-BF16 dot products faster than float32 FMA (AMD; see below) */
    int avx_vnni; /* AVX-VNNI: vpdpbusd on ymm without AVX-512 (Alder Lake, Zen 5) */
} cpu_caps;

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static cpu_caps g_caps; /* written once inside pthread_once, then read-only */
static atomic_int g_active = -1;
static atomic_int g_avx_vnni_off; /* tests / MAGICLENS_AVXVNNI=0: use the AVX2 u8 x s7 kernel */
static atomic_int g_bf16_dot = -1; /* MAGICLENS_BF16DOT / tests: 1 or 0 forces; -1: bf16_fast */

static const char *const isa_names[ML_ISA_COUNT] = {"scalar", "avx2",    "avx512", "amx",
                                                    "neon",   "dotprod", "i8mm",   "bf16"};

#if defined(__x86_64__)
static unsigned long long read_xcr0(void) {
    unsigned int lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

/* Linux refuses AMX tile data until the process asks for it (kernel >= 5.16). */
static int request_amx_permission(void) {
    const long arch_req_xcomp_perm = 0x1023, xfeature_xtiledata = 18;
    return syscall(SYS_arch_prctl, arch_req_xcomp_perm, xfeature_xtiledata) == 0;
}

static void detect_x86(cpu_caps *c) {
    unsigned int a, b, cx, d;
    if (!__get_cpuid(0, &a, &b, &cx, &d)) return;
    int amd = (b == 0x68747541 && d == 0x69746e65 && cx == 0x444d4163) || /* AuthenticAMD */
              (b == 0x6f677948 && d == 0x6e65476e && cx == 0x656e6975);   /* HygonGenuine */
    if (!__get_cpuid(1, &a, &b, &cx, &d)) return;
    int osxsave = (cx >> 27) & 1, avx = (cx >> 28) & 1, fma = (cx >> 12) & 1;
    if (!osxsave || !avx) return;
    unsigned long long xcr0 = read_xcr0();
    int ymm_state = (xcr0 & 0x6) == 0x6;             /* SSE + AVX state */
    int zmm_state = ymm_state && (xcr0 & 0xe0) == 0xe0; /* opmask, ZMM_Hi256, Hi16_ZMM */
    int tile_state = (xcr0 & 0x60000) == 0x60000;     /* XTILECFG + XTILEDATA */
    unsigned int max_leaf = __get_cpuid_max(0, NULL);
    if (max_leaf < 7) return;
    __cpuid_count(7, 0, a, b, cx, d);
    int avx2 = (b >> 5) & 1, f = (b >> 16) & 1, bw = (b >> 30) & 1, vl = (b >> 31) & 1;
    int vnni = (cx >> 11) & 1;
    int amx = ((d >> 22) & 1) && ((d >> 24) & 1) && ((d >> 25) & 1); /* BF16, TILE, INT8 */
    unsigned int max_sub = a;
    int bf16 = 0, avx_vnni = 0;
    if (max_sub >= 1) {
        __cpuid_count(7, 1, a, b, cx, d);
        bf16 = (a >> 5) & 1;
        avx_vnni = (a >> 4) & 1;
    }
    c->isa_ok[ML_ISA_AVX2] = ymm_state && avx2 && fma;
    c->isa_ok[ML_ISA_AVX512] = c->isa_ok[ML_ISA_AVX2] && zmm_state && f && bw && vl;
    c->bf16 = c->isa_ok[ML_ISA_AVX512] && bf16;
    /* vdpbf16ps does 32 bf16 products a zmm.  On Zen 4 / Zen 5 it issues
     * like an FMA, so bf16 runs at about twice the float32 rate (Zen 5:
     * 8.4 vs 4.9 images/s on the base model).  On Intel it issues at half
     * the FMA rate or less (Xeon family 6 model 207 with AMX hidden by the
     * hypervisor: 75-83 GFLOP/s a core against 150 for float32 FMA, and the
     * base model at 0.63x its float32 speed), and Intel's fast bf16 is AMX.
     * So on Intel the bf16 weights are widened into the float32 kernel. */
    c->bf16_fast = c->bf16 && amd;
    c->vnni = c->isa_ok[ML_ISA_AVX512] && vnni;
    c->avx_vnni = c->isa_ok[ML_ISA_AVX2] && avx_vnni;
    c->isa_ok[ML_ISA_AMX] = c->isa_ok[ML_ISA_AVX512] && amx && request_amx_permission() &&
                            tile_state;
}
#endif

#if defined(__aarch64__)
/* Linux hwcap bits (asm/hwcap.h; spelled out for older headers). */
#define ML_HWCAP_ASIMD (1UL << 1)
#define ML_HWCAP_ASIMDDP (1UL << 20)
#define ML_HWCAP2_I8MM (1UL << 13)
#define ML_HWCAP2_BF16 (1UL << 14)

/* Each path includes the one before it (the tests and `magiclens cpu` list
 * them in order): a CPU with bf16 but no i8mm (none is known; ARMv8.6 has
 * both) would stop at dotprod. */
static void detect_aarch64(cpu_caps *c) {
    unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
    c->isa_ok[ML_ISA_NEON] = (hw & ML_HWCAP_ASIMD) != 0;
    c->isa_ok[ML_ISA_DOTPROD] = c->isa_ok[ML_ISA_NEON] && (hw & ML_HWCAP_ASIMDDP);
    c->isa_ok[ML_ISA_I8MM] = c->isa_ok[ML_ISA_DOTPROD] && (hw2 & ML_HWCAP2_I8MM);
    c->isa_ok[ML_ISA_NEON_BF16] = c->isa_ok[ML_ISA_I8MM] && (hw2 & ML_HWCAP2_BF16);
}
#endif

static void detect(void) {
    cpu_caps *c = &g_caps;
    memset(c, 0, sizeof *c);
    c->isa_ok[ML_ISA_SCALAR] = 1;
#if defined(__x86_64__)
    detect_x86(c);
#endif
#if defined(__aarch64__)
    detect_aarch64(c);
#endif
    const char *vn = getenv("MAGICLENS_AVXVNNI");
    atomic_store(&g_avx_vnni_off, vn && !strcmp(vn, "0"));
    const char *bd = getenv("MAGICLENS_BF16DOT");
    if (bd && (!strcmp(bd, "0") || !strcmp(bd, "1"))) atomic_store(&g_bf16_dot, bd[0] == '1');
    const char *env = getenv("MAGICLENS_ISA");
    int forced = env && *env ? ml_isa_parse(env) : -1;
    int best = ML_ISA_SCALAR;
    for (int i = ML_ISA_COUNT - 1; i > ML_ISA_SCALAR; i--)
        if (c->isa_ok[i]) {
            best = i;
            break;
        }
    /* An unusable MAGICLENS_ISA never selects a path the CPU cannot run: the
     * best one stays active, and the model loader reports the error with
     * ml_isa_set(ml_isa_parse(getenv("MAGICLENS_ISA")), err). */
    atomic_store(&g_active, forced >= 0 && c->isa_ok[forced] ? forced : best);
}

static const cpu_caps *caps(void) {
    pthread_once(&g_once, detect);
    return &g_caps;
}

int ml_isa_supported(ml_isa isa) {
    if ((int)isa < 0 || (int)isa >= ML_ISA_COUNT) return 0;
    return caps()->isa_ok[isa];
}

int ml_cpu_has_avx512_bf16(void) { return caps()->bf16; }

/* The CPUID brand string (leaves 0x80000002-4), spaces trimmed. */
static char g_brand[49];
static pthread_once_t g_brand_once = PTHREAD_ONCE_INIT;
static void read_brand(void) {
#if defined(__x86_64__)
    unsigned int r[12];
    if ((unsigned int)__get_cpuid_max(0x80000000, NULL) < 0x80000004u) return;
    for (unsigned int i = 0; i < 3; i++) __cpuid(0x80000002 + i, r[4 * i], r[4 * i + 1], r[4 * i + 2], r[4 * i + 3]);
    memcpy(g_brand, r, 48);
    g_brand[48] = 0;
    size_t n = strlen(g_brand), b = 0;
    while (n > 0 && g_brand[n - 1] == ' ') g_brand[--n] = 0;
    while (g_brand[b] == ' ') b++;
    memmove(g_brand, g_brand + b, n - b + 1);
#endif
}

const char *ml_cpu_model(void) {
    pthread_once(&g_brand_once, read_brand);
    return g_brand[0] ? g_brand : "unknown";
}

int ml_cpu_bf16_dot(void) {
    int forced = atomic_load(&g_bf16_dot);
    return caps()->bf16 && (forced >= 0 ? forced : caps()->bf16_fast);
}

int ml_cpu_set_bf16_dot(int on) {
    if (!caps()->bf16 && on > 0) return -1;
    atomic_store(&g_bf16_dot, on < 0 ? -1 : on != 0);
    return 0;
}
int ml_cpu_has_avx512_vnni(void) { return caps()->vnni; }
int ml_cpu_has_avx_vnni(void) { return caps()->avx_vnni && !atomic_load(&g_avx_vnni_off); }

int ml_cpu_set_avx_vnni(int on) {
    if (!caps()->avx_vnni && on) return -1;
    atomic_store(&g_avx_vnni_off, !on);
    return 0;
}

ml_isa ml_isa_active(void) {
    caps();
    return (ml_isa)atomic_load(&g_active);
}

int ml_isa_set(ml_isa isa, ml_error *err) {
    if ((int)isa < 0 || (int)isa >= ML_ISA_COUNT)
        return ml_fail(err, "unknown instruction set %d (MAGICLENS_ISA: scalar, avx2, avx512, amx, "
                            "neon, dotprod, i8mm, bf16)", (int)isa);
    if (!ml_isa_supported(isa))
        return ml_fail(err, "this machine cannot run the %s kernels", isa_names[isa]);
    atomic_store(&g_active, (int)isa);
    return 0;
}

const char *ml_isa_name(ml_isa isa) {
    return (int)isa >= 0 && (int)isa < ML_ISA_COUNT ? isa_names[isa] : "unknown";
}

int ml_isa_parse(const char *name) {
    if (!name) return -1;
    for (int i = 0; i < ML_ISA_COUNT; i++)
        if (strcmp(name, isa_names[i]) == 0) return i;
    return -1;
}
