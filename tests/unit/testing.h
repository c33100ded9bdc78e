/* SPDX-License-Identifier: MIT */
#pragma once

/* Shared glue for the check unit tests: each test-<module>.c defines its suite and uses ORCH_TEST_MAIN. */

#include <check.h>
#include <stdio.h>
#include <stdlib.h>

/* srcdir-relative fixture paths: automake exports srcdir to the test environment. */
static inline const char *orch_test_srcdir(void)
{
        const char *s = getenv("srcdir");
        return s && *s ? s : ".";
}

/*
 * Removes the cgroups named <prefix>* under every hierarchy (/sys/fs/cgroup/<controller>/ and the
 * cgroup2 ones), killing what is inside first. Tests that make cgroups call it from the runner
 * process after the run, so a failed test (whose own teardown never ran) leaks nothing.
 */
static inline void orch_test_cgroup_cleanup(const char *prefix)
{
        char cmd[1024];

        snprintf(cmd, sizeof cmd,
                 "for round in 1 2 3 4 5; do found=; "
                 "for d in /sys/fs/cgroup/%s* /sys/fs/cgroup/*/%s*; do [ -d \"$d\" ] || continue; found=1; "
                 "find \"$d\" -depth -type d | while read -r c; do "
                 "[ -w \"$c/cgroup.kill\" ] && echo 1 > \"$c/cgroup.kill\" 2>/dev/null; "
                 "for p in $(cat \"$c/cgroup.procs\" 2>/dev/null); do kill -9 $p 2>/dev/null; done; "
                 "rmdir \"$c\" 2>/dev/null; done; done; [ -z \"$found\" ] && break; sleep 0.2; done",
                 prefix, prefix);
        if (system(cmd) != 0)
                fprintf(stderr, "cgroup cleanup of %s* did not finish\n", prefix);
}

/* As ORCH_TEST_MAIN, and runs cleanup() in the runner after all tests, failed ones included. */
#define ORCH_TEST_MAIN_CLEANUP(suite_fn, cleanup)                                                            \
        int main(void)                                                                                       \
        {                                                                                                    \
                SRunner *sr = srunner_create(suite_fn());                                                    \
                int failed;                                                                                  \
                srunner_run_all(sr, CK_NORMAL);                                                              \
                failed = srunner_ntests_failed(sr);                                                          \
                srunner_free(sr);                                                                            \
                cleanup();                                                                                   \
                return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;                                            \
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
