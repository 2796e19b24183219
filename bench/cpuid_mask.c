/* cpuid_mask.c - an LD_PRELOAD library that makes a process see a CPU
 * without AVX-512 (and optionally without AVX-VNNI), so that ONNX Runtime
 * and magiclens can both be measured on their AVX2 code on a bigger x86.
 *
 * ONNX Runtime (MLAS) picks its kernels from CPUID alone and has no switch
 * to keep it off AVX-512; magiclens has MAGICLENS_ISA, but forcing only one
 * side would compare our AVX2 code with its AVX-512 code.  Linux can make
 * the CPUID instruction fault (arch_prctl ARCH_SET_CPUID, on CPUs with
 * "cpuid_fault", which KVM provides to guests); this library turns that on
 * in a constructor, before the program's own code runs, and answers each
 * faulting CPUID from a SIGSEGV handler with the real values less the
 * masked feature bits.  The setting is inherited by threads and reset by
 * execve (where LD_PRELOAD applies it again).
 *
 *   CPUID_MASK=avx2     AVX-512 (all of it) hidden        (Zen 3-like + AVX-VNNI if present)
 *   CPUID_MASK=avx2-novnni   AVX-512 and AVX-VNNI hidden  (Zen 3 / Haswell-Skylake client)
 *   CPUID_MASK_VERBOSE=1     one line on stderr when active
 *
 * Also hidden: AMX (leaf 7 EDX bits 22/24/25) and the AVX10 leaf, so no
 * path can reach 512-bit code by another route.  Bench-only: built by
 * bench/vs_onnxruntime.sh --emulate, never linked into magiclens.
 *
 * Other SIGSEGVs go to the handler the program installs (signal/sigaction
 * for SIGSEGV are wrapped so that a runtime such as node's cannot replace
 * this one), or kill the process as usual. */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

static int mask_vnni;
static struct sigaction app_segv; /* the program's own SIGSEGV handler */
static int (*real_sigaction)(int, const struct sigaction *, struct sigaction *);

/* CPUID itself would fault inside the handler, so the handler turns
 * faulting off for this thread, executes it, and turns it back on. */
static void emulate(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1L);
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0L);
    if (leaf == 7 && sub == 0) {
        /* EBX: avx512f 16, dq 17, ifma 21, pf 26, er 27, cd 28, bw 30, vl 31 */
        r[1] &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) |
                  (1u << 30) | (1u << 31));
        /* ECX: vbmi 1, vbmi2 6, vnni 11, bitalg 12, vpopcntdq 14 */
        r[2] &= ~((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14));
        /* EDX: 4vnniw 2, 4fmaps 3, vp2intersect 8, avx512_fp16 23, amx bf16 22 / tile 24 / int8 25 */
        r[3] &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) |
                  (1u << 25));
    } else if (leaf == 7 && sub == 1) {
        /* EAX: avx_vnni 4, avx512_bf16 5, amx_fp16 21; EDX: avx10 19 */
        r[0] &= ~((1u << 5) | (1u << 21));
        if (mask_vnni) r[0] &= ~(1u << 4);
        r[3] &= ~(1u << 19);
    } else if (leaf == 0xd && sub == 0) {
        r[0] &= ~0xe0u; /* XCR0-supported: opmask / ZMM state */
    } else if (leaf == 0x24 || leaf == 0x1d || leaf == 0x1e) {
        r[0] = r[1] = r[2] = r[3] = 0; /* AVX10 and AMX tile leaves */
    }
}

static void on_segv(int sig, siginfo_t *si, void *ctxv) {
    ucontext_t *uc = ctxv;
    greg_t *g = uc->uc_mcontext.gregs;
    const uint8_t *ip = (const uint8_t *)g[REG_RIP];
    if (si->si_code == SI_KERNEL && ip[0] == 0x0f && ip[1] == 0xa2) { /* cpuid */
        uint32_t r[4];
        emulate((uint32_t)g[REG_RAX], (uint32_t)g[REG_RCX], r);
        g[REG_RAX] = r[0], g[REG_RBX] = r[1], g[REG_RCX] = r[2], g[REG_RDX] = r[3];
        g[REG_RIP] += 2;
        return;
    }
    if (app_segv.sa_flags & SA_SIGINFO) {
        if (app_segv.sa_sigaction) {
            app_segv.sa_sigaction(sig, si, ctxv);
            return;
        }
    } else if (app_segv.sa_handler != SIG_DFL && app_segv.sa_handler != SIG_IGN) {
        app_segv.sa_handler(sig);
        return;
    }
    struct sigaction dfl; /* no handler of the program's: die as without this library */
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    real_sigaction(SIGSEGV, &dfl, NULL); /* the faulting instruction re-raises it */
}

int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    if (!real_sigaction) real_sigaction = (int (*)(int, const struct sigaction *, struct sigaction *))dlsym(RTLD_NEXT, "sigaction");
    if (sig != SIGSEGV || !getenv("CPUID_MASK")) return real_sigaction(sig, act, old);
    if (old) *old = app_segv;
    if (act) app_segv = *act;
    return 0;
}

sighandler_t signal(int sig, sighandler_t h) {
    struct sigaction a, o;
    memset(&a, 0, sizeof a);
    a.sa_handler = h;
    if (sigaction(sig, &a, &o) != 0) return SIG_ERR;
    return o.sa_handler;
}

__attribute__((constructor)) static void cpuid_mask_init(void) {
    const char *m = getenv("CPUID_MASK");
    if (!m || !*m) return;
    if (strcmp(m, "avx2") != 0 && strcmp(m, "avx2-novnni") != 0) {
        fprintf(stderr, "cpuid_mask: CPUID_MASK=%s: expected avx2 or avx2-novnni\n", m);
        exit(2);
    }
    mask_vnni = strcmp(m, "avx2-novnni") == 0;
    real_sigaction = (int (*)(int, const struct sigaction *, struct sigaction *))dlsym(RTLD_NEXT, "sigaction");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    if (real_sigaction(SIGSEGV, &sa, NULL) != 0 || syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0L) != 0) {
        fprintf(stderr, "cpuid_mask: this CPU or kernel cannot make CPUID fault (no cpuid_fault)\n");
        exit(2);
    }
    if (getenv("CPUID_MASK_VERBOSE")) fprintf(stderr, "cpuid_mask: %s active in pid %d\n", m, (int)getpid());
}
