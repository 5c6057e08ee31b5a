/* The checks the C11 test programs (sdk_c_e2e.c, sdk_c_lifecycle.c, sdk_c_attachments.c)
 * share: FAIL ends the program with where and why, CHECK a condition, MUST a libkcnet call
 * that must succeed (and, having succeeded, leave its error cleared), step() numbers what
 * the program is doing on standard output. Single-threaded use of step(). */
#ifndef KCNET_TESTS_SDK_C_C_CHECK_H_
#define KCNET_TESTS_SDK_C_C_CHECK_H_

#include <stdio.h>
#include <stdlib.h>

#include "kcnet_c.h"

#define FAIL(...)                                             \
  do {                                                        \
    fprintf(stderr, "FAILED at %s:%d: ", __FILE__, __LINE__); \
    fprintf(stderr, __VA_ARGS__);                             \
    fprintf(stderr, "\n");                                    \
    exit(1);                                                  \
  } while (0)

#define CHECK(cond)                               \
  do {                                            \
    if (!(cond)) FAIL("check failed: %s", #cond); \
  } while (0)

/* A call that must succeed; the call sees `error` (a kcnet_error*) in its scope. */
#define MUST(call)                                                                         \
  do {                                                                                     \
    kcnet_error must_error_;                                                               \
    kcnet_error* error = &must_error_;                                                     \
    if (!(call)) {                                                                         \
      FAIL("%s -> %s: %s", #call, kcnet_code_name(must_error_.code), must_error_.message); \
    }                                                                                      \
    CHECK(must_error_.code == 0 && must_error_.message[0] == '\0');                        \
  } while (0)

static int g_step = 0;

static inline void step(const char* what) {
  printf("[%2d] %s\n", ++g_step, what);
  fflush(stdout);
}

#endif /* KCNET_TESTS_SDK_C_C_CHECK_H_ */
