/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "banned.h"

/*
 * The workload of bench/spawn.sh: it records the moment it was exec'd, then sleeps until killed.
 *
 *   stamp FILE [NAME]
 *
 * appends "NAME PID NSEC\n" to FILE, NSEC being CLOCK_MONOTONIC read as main()'s first statement
 * (one clock for every process of the host, so the bench compares it with the moment it sent a
 * SIGKILL). NAME defaults to $ORCH_INSTANCE. The line is one O_APPEND write of under a page, so
 * a thousand instances starting at once never interleave their records. Linked statically (see
 * bench/local.mk): no dynamic loader runs between the exec and the clock read, and a thousand of
 * them cost little memory.
 */

int main(int argc, char **argv)
{
        struct timespec ts;
        const char *name;
        char line[256];
        int fd, len;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        name = argc > 2 ? argv[2] : getenv("ORCH_INSTANCE");
        if (argc < 2 || !name || !*name || strchr(name, ' ')) {
                fprintf(stderr, "usage: stamp FILE [NAME]  (NAME defaults to $ORCH_INSTANCE)\n");
                return 2;
        }
        len = snprintf(line, sizeof line, "%s %d %lld\n", name, (int)getpid(),
                       (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
        if (len <= 0 || (size_t)len >= sizeof line) {
                fprintf(stderr, "stamp: name too long\n");
                return 2;
        }
        fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0 || write(fd, line, (size_t)len) != len) {
                perror(argv[1]);
                return 1;
        }
        close(fd);
        for (;;)
                pause();
}
