/* A process that sees an AVX2 machine: preloaded (LD_PRELOAD, by tools/avx2-only), it makes
 * the CPUID instruction fault (Linux's ARCH_SET_CPUID, on CPUs with CPUID faulting) and answers
 * each CPUID from a SIGSEGV handler with the real answer less every AVX-512, AVX-VNNI and AMX
 * bit. Libraries that pick their kernels from CPUID themselves (ONNX Runtime's MLAS, Rust's
 * feature detection) then pick their AVX2 ones, as on an AVX2-only machine. CPUID runs made
 * before the constructor (the dynamic loader's, glibc's string functions) keep the real bits. */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

static void set_cpuid_faulting(int faulting) {
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, faulting ? 0 : 1);
}

/* Leaf 7 sub-leaf 0: EBX AVX512F, DQ, IFMA, PF, ER, CD, BW, VL; ECX VBMI, VBMI2, VNNI, BITALG,
 * VPOPCNTDQ; EDX 4VNNIW, 4FMAPS, VP2INTERSECT, AMX-BF16, AVX512-FP16, AMX-TILE, AMX-INT8. */
static const uint32_t LEAF7_EBX = (1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) |
                                  (1u << 28) | (1u << 30) | (1u << 31);
static const uint32_t LEAF7_ECX = (1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14);
static const uint32_t LEAF7_EDX =
    (1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) | (1u << 25);
/* Leaf 7 sub-leaf 1: EAX AVX-VNNI, AVX512-BF16, AVX-IFMA; EDX AVX-VNNI-INT8, AVX-NE-CONVERT,
 * AVX-VNNI-INT16. */
static const uint32_t LEAF7_1_EAX = (1u << 4) | (1u << 5) | (1u << 23);
static const uint32_t LEAF7_1_EDX = (1u << 4) | (1u << 5) | (1u << 10);

static void on_segv(int sig, siginfo_t *info, void *context) {
    ucontext_t *uc = context;
    greg_t *r = uc->uc_mcontext.gregs;
    const uint8_t *ip = (const uint8_t *)r[REG_RIP];
    (void)info;
    if (ip[0] != 0x0f || ip[1] != 0xa2) {
        /* A real fault: let it kill the process as it would have. */
        signal(sig, SIG_DFL);
        return;
    }
    uint32_t leaf = (uint32_t)r[REG_RAX], sub = (uint32_t)r[REG_RCX];
    uint32_t a, b, c, d;
    set_cpuid_faulting(0);
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(leaf), "c"(sub));
    set_cpuid_faulting(1);
    if (leaf == 7 && sub == 0) {
        b &= ~LEAF7_EBX;
        c &= ~LEAF7_ECX;
        d &= ~LEAF7_EDX;
    } else if (leaf == 7 && sub == 1) {
        a &= ~LEAF7_1_EAX;
        d &= ~LEAF7_1_EDX;
    }
    r[REG_RAX] = a;
    r[REG_RBX] = b;
    r[REG_RCX] = c;
    r[REG_RDX] = d;
    r[REG_RIP] += 2;
}

__attribute__((constructor)) static void mask_cpuid(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_segv;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGSEGV, &action, NULL) != 0 ||
        syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) {
        fprintf(stderr, "avx2-only: this CPU or kernel has no CPUID faulting\n");
        exit(2);
    }
}
