/* SPDX-License-Identifier: MIT */
#pragma once

/* Shared glue for the check unit tests: each test-<module>.c defines its suite and uses ORCH_TEST_MAIN. */

#include <check.h>
#include <stdlib.h>

/* srcdir-relative fixture paths: automake exports srcdir to the test environment. */
static inline const char *orch_test_srcdir(void)
{
        const char *s = getenv("srcdir");
        return s && *s ? s : ".";
}

#define ORCH_TEST_MAIN(suite_fn)                                                                             \
        int main(void)                                                                                       \
        {                                                                                                    \
                SRunner *sr = srunner_create(suite_fn());                                                    \
                int failed;                                                                                  \
                srunner_run_all(sr, CK_NORMAL);                                                              \
                failed = srunner_ntests_failed(sr);                                                          \
                srunner_free(sr);                                                                            \
                return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;                                            \
        }
