/* A tiny assertion header for unit tests: each check prints both values and
 * the location when it fails, and counts failures. */
#ifndef PGTALLY_TASK_H
#define PGTALLY_TASK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int task_failures;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            task_failures++;                                                                       \
        }                                                                                          \
    } while (0)

#define CHECK_INT(a, b)                                                                            \
    do {                                                                                           \
        long long va_ = (long long)(a), vb_ = (long long)(b);                                      \
        if (va_ != vb_) {                                                                          \
            fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, #a, #b,  \
                    va_, vb_);                                                                     \
            task_failures++;                                                                       \
        }                                                                                          \
    } while (0)

#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *sa_ = (a), *sb_ = (b);                                                         \
        if (!sa_ || !sb_ || strcmp(sa_, sb_) != 0) {                                               \
            fprintf(stderr, "%s:%d: %s == %s failed: \"%s\" != \"%s\"\n", __FILE__, __LINE__, #a,  \
                    #b, sa_ ? sa_ : "(null)", sb_ ? sb_ : "(null)");                               \
            task_failures++;                                                                       \
        }                                                                                          \
    } while (0)

#define TASK_DONE()                                                                                \
    do {                                                                                           \
        if (task_failures)                                                                         \
            fprintf(stderr, "%d check(s) failed\n", task_failures);                                \
        return task_failures ? 1 : 0;                                                              \
    } while (0)

#endif
