/* check.h - minimal assertions for the C unit tests.
 * CHECK(cond) records a failure and goes on; main returns check_done(). */
#ifndef ML_TESTS_CHECK_H
#define ML_TESTS_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu.h"

static int check_failures_ = 0;
static int check_count_ = 0;

#define CHECK(cond)                                                            \
    do {                                                                       \
        check_count_++;                                                        \
        if (!(cond)) {                                                         \
            check_failures_++;                                                 \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                      \
    } while (0)

#define CHECK_MSG(cond, ...)                                                   \
    do {                                                                       \
        check_count_++;                                                        \
        if (!(cond)) {                                                         \
            check_failures_++;                                                 \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                      \
            fputc('\n', stderr);                                               \
        }                                                                      \
    } while (0)

/* Path of a file under ../shared (or $ML_SHARED). */
static inline const char *check_shared(const char *rel, char *buf, size_t n) {
    const char *root = getenv("ML_SHARED");
    snprintf(buf, n, "%s/%s", root ? root : "../shared", rel);
    return buf;
}

/* 1 when the tests should run instruction-set path `isa`: the machine runs
 * it, and ML_TEST_ISAS (names separated by spaces; scripts/test-aarch64.sh
 * uses it to split the paths between the emulated CPUs) is unset or lists it. */
static inline int check_isa(int isa) {
    if (!ml_isa_supported((ml_isa)isa)) return 0;
    const char *want = getenv("ML_TEST_ISAS"), *name = ml_isa_name((ml_isa)isa);
    if (!want || !*want) return 1;
    size_t n = strlen(name);
    for (const char *p = want; (p = strstr(p, name)) != NULL; p += n)
        if ((p == want || p[-1] == ' ') && (p[n] == '\0' || p[n] == ' ')) return 1;
    return 0;
}

static inline int check_done(const char *name) {
    printf("%s: %d checks, %d failed\n", name, check_count_, check_failures_);
    return check_failures_ ? 1 : 0;
}

#endif
