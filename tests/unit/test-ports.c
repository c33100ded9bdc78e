/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "ports.h"
#include "testing.h"
#include "util.h"
#include "banned.h"

/* Below the kernel's ephemeral range (32768-60999 by default), so outgoing connections of other
 * programs do not wander into it, and away from orch's default range that other tests use. */
#define TEST_BASE 31000

START_TEST(test_parse_range)
{
        static const struct {
                const char *in;
                uint16_t lo, hi;
        } ok[] = {
                {"20000-29999", 20000, 29999},
                {"1-65535", 1, 65535},
                {"8080-8080", 8080, 8080},
        };
        static const struct {
                const char *in;
                const char *reason;
        } bad[] = {
                {"", "expected FIRST-LAST"},
                {"20000", "expected FIRST-LAST"},
                {"-5", "expected FIRST-LAST"},
                {"5-", "expected FIRST-LAST"},
                {"0-10", "\"0\" is not a port number"},
                {"10-65536", "\"65536\" is not a port number"},
                {"30000-20000", "first port 30000 is above last port 20000"},
                {"a-b", "\"a\" is not a port number"},
                {"1 -2", "\"1 \" is not a port number"},
                {"+1-2", "\"+1\" is not a port number"},
                {"1-2-3", "\"2-3\" is not a port number"},
                {"123456789-2", "expected FIRST-LAST"},
        };
        char reason[128];

        for (size_t i = 0; i < ELEMENTSOF(ok); i++) {
                uint16_t lo = 0, hi = 0;
                ck_assert_int_eq(orch_ports_parse_range(ok[i].in, &lo, &hi, reason, sizeof reason), 0);
                ck_assert_uint_eq(lo, ok[i].lo);
                ck_assert_uint_eq(hi, ok[i].hi);
        }
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                uint16_t lo = 7, hi = 7;
                reason[0] = '\0';
                ck_assert_int_eq(orch_ports_parse_range(bad[i].in, &lo, &hi, reason, sizeof reason),
                                 -EINVAL);
                ck_assert_msg(strstr(reason, bad[i].reason), "\"%s\": reason \"%s\" lacks \"%s\"", bad[i].in,
                              reason, bad[i].reason);
                ck_assert_msg(strstr(reason, bad[i].in), "\"%s\": reason \"%s\" does not quote it",
                              bad[i].in, reason);
                ck_assert_uint_eq(lo, 7);
                ck_assert_uint_eq(hi, 7);
        }
        /* The reason is optional. */
        {
                uint16_t lo, hi;
                ck_assert_int_eq(orch_ports_parse_range("x", &lo, &hi, NULL, 0), -EINVAL);
        }
}
END_TEST

START_TEST(test_new_invalid)
{
        struct orch_ports *p = NULL;

        ck_assert_int_eq(orch_ports_new(0, 10, &p), -EINVAL);
        ck_assert_int_eq(orch_ports_new(11, 10, &p), -EINVAL);
        ck_assert_ptr_null(p);
        ck_assert_int_eq(orch_ports_new(65535, 65535, &p), 0);
        ck_assert_uint_eq(orch_ports_n_live(p), 0);
        orch_ports_free(p);
}
END_TEST

START_TEST(test_unique_under_churn)
{
        _cleanup_(orch_ports_freep) struct orch_ports *p = NULL;
        const uint16_t lo = TEST_BASE, hi = TEST_BASE + 199;
        bool live[200] = {0};
        uint16_t held[200];
        size_t n_held = 0;
        uint32_t seed = 12345;

        ck_assert_int_eq(orch_ports_new(lo, hi, &p), 0);
        for (int step = 0; step < 3000; step++) {
                seed = seed * 1103515245u + 12345u;
                /* Mostly allocate while below 150 live ports, mostly release above. */
                bool alloc = n_held < 20 || (n_held < 150 && (seed >> 16) % 3 != 0);

                if (alloc) {
                        uint16_t port;
                        char reason[128];
                        int r = orch_ports_allocate(p, &port, reason, sizeof reason);
                        if (r == -EADDRNOTAVAIL)
                                continue; /* other processes hold ports: fine, as long as it is said */
                        ck_assert_msg(r == 0, "allocate: %s", reason);
                        ck_assert_uint_ge(port, lo);
                        ck_assert_uint_le(port, hi);
                        ck_assert_msg(!live[port - lo], "port %u handed out twice", port);
                        live[port - lo] = true;
                        held[n_held++] = port;
                } else {
                        size_t k = (seed >> 8) % n_held;
                        uint16_t port = held[k];
                        ck_assert_int_eq(orch_ports_release(p, port), 0);
                        live[port - lo] = false;
                        held[k] = held[--n_held];
                }
                ck_assert_uint_eq(orch_ports_n_live(p), n_held);
        }
        for (size_t i = 0; i < 200; i++)
                ck_assert(orch_ports_is_live(p, (uint16_t)(lo + i)) == live[i]);
}
END_TEST

START_TEST(test_released_not_reused_at_once)
{
        _cleanup_(orch_ports_freep) struct orch_ports *p = NULL;
        uint16_t a, b, c;

        ck_assert_int_eq(orch_ports_new(TEST_BASE + 300, TEST_BASE + 339, &p), 0);
        ck_assert_int_eq(orch_ports_allocate(p, &a, NULL, 0), 0);
        ck_assert_int_eq(orch_ports_allocate(p, &b, NULL, 0), 0);
        ck_assert_uint_gt(b, a);
        ck_assert_int_eq(orch_ports_release(p, a), 0);
        ck_assert_int_eq(orch_ports_allocate(p, &c, NULL, 0), 0);
        ck_assert_uint_ne(c, a);
        ck_assert_uint_gt(c, b);
}
END_TEST

START_TEST(test_exhaustion)
{
        _cleanup_(orch_ports_freep) struct orch_ports *p = NULL;
        const uint16_t lo = TEST_BASE + 400, hi = TEST_BASE + 415;
        uint16_t got[16], port;
        char reason[160], want[64];
        size_t n = 0;
        int r;

        ck_assert_int_eq(orch_ports_new(lo, hi, &p), 0);
        while ((r = orch_ports_allocate(p, &port, reason, sizeof reason)) == 0) {
                ck_assert_uint_lt(n, 16);
                for (size_t i = 0; i < n; i++)
                        ck_assert_uint_ne(got[i], port);
                got[n++] = port;
        }
        ck_assert_int_eq(r, -EADDRNOTAVAIL);
        ck_assert_uint_ge(n, 1);
        ck_assert_int_ge(
                orch_snprintf(want, sizeof want, "no free port in %u-%u: %zu held by instances", lo, hi, n),
                0);
        ck_assert_msg(strstr(reason, want), "reason \"%s\"", reason);
        /* Still exhausted on a second try, and a release makes room again. */
        ck_assert_int_eq(orch_ports_allocate(p, &port, NULL, 0), -EADDRNOTAVAIL);
        ck_assert_int_eq(orch_ports_release(p, got[0]), 0);
        ck_assert_int_eq(orch_ports_allocate(p, &port, NULL, 0), 0);
        ck_assert_uint_eq(port, got[0]);
}
END_TEST

static int bind_tcp(int family, const char *addr, uint16_t port, bool do_listen)
{
        union {
                struct sockaddr sa;
                struct sockaddr_in in;
                struct sockaddr_in6 in6;
        } a = {0};
        socklen_t len;
        int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);

        if (fd < 0)
                return -errno;
        if (family == AF_INET6) {
                int one = 1;
                (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
                a.in6.sin6_family = AF_INET6;
                a.in6.sin6_port = htons(port);
                inet_pton(AF_INET6, addr, &a.in6.sin6_addr);
                len = sizeof a.in6;
        } else {
                a.in.sin_family = AF_INET;
                a.in.sin_port = htons(port);
                inet_pton(AF_INET, addr, &a.in.sin_addr);
                len = sizeof a.in;
        }
        if (bind(fd, &a.sa, len) < 0 || (do_listen && listen(fd, 1) < 0)) {
                int r = -errno;
                close(fd);
                return r;
        }
        return fd;
}

START_TEST(test_bound_port_skipped)
{
        _cleanup_(orch_ports_freep) struct orch_ports *p = NULL;
        const uint16_t lo = TEST_BASE + 500, hi = TEST_BASE + 507;
        _cleanup_(closep) int l4 = -1, b4 = -1, l6 = -1;
        uint16_t port;

        ck_assert_int_eq(orch_ports_new(lo, hi, &p), 0);
        /* A listener on loopback only, a bound but idle socket on the wildcard, and (where the host
         * has IPv6) an IPv6-only listener: each makes its port unusable for an instance. */
        l4 = bind_tcp(AF_INET, "127.0.0.1", lo, true);
        ck_assert_int_ge(l4, 0);
        b4 = bind_tcp(AF_INET, "0.0.0.0", lo + 1, false);
        ck_assert_int_ge(b4, 0);
        l6 = bind_tcp(AF_INET6, "::1", lo + 2, true);

        ck_assert_int_eq(orch_ports_allocate(p, &port, NULL, 0), 0);
        ck_assert_uint_ge(port, l6 >= 0 ? lo + 3 : lo + 2);
        ck_assert_uint_le(port, hi);
        /* Skipped, not taken: they stay available once their holders let go. */
        ck_assert(!orch_ports_is_live(p, lo));
        ck_assert(!orch_ports_is_live(p, lo + 1));
        ck_assert_uint_eq(orch_ports_n_live(p), 1);

        /* With every other port live, the bound ones make the range exhausted. */
        for (uint16_t q = (uint16_t)(lo + 2); q <= hi; q++)
                if (q != port && !(q == lo + 2 && l6 >= 0))
                        ck_assert_int_eq(orch_ports_reserve(p, q), 0);
        {
                char reason[160];
                ck_assert_int_eq(orch_ports_allocate(p, &port, reason, sizeof reason), -EADDRNOTAVAIL);
                ck_assert_msg(strstr(reason, l6 >= 0 ? "3 in use by other processes"
                                                     : "2 in use by other processes"),
                              "reason \"%s\"", reason);
        }
        close(l4);
        l4 = -1;
        ck_assert_int_eq(orch_ports_allocate(p, &port, NULL, 0), 0);
        ck_assert_uint_eq(port, lo);
}
END_TEST

START_TEST(test_reserve_specific)
{
        _cleanup_(orch_ports_freep) struct orch_ports *p = NULL;
        const uint16_t lo = TEST_BASE + 600, hi = TEST_BASE + 603;
        _cleanup_(closep) int fd = -1;
        uint16_t port, lo_r, hi_r;

        ck_assert_int_eq(orch_ports_new(lo, hi, &p), 0);
        orch_ports_get_range(p, &lo_r, &hi_r);
        ck_assert_uint_eq(lo_r, lo);
        ck_assert_uint_eq(hi_r, hi);

        /* A re-adopted instance listens on its port: reserving it does not check binding. */
        fd = bind_tcp(AF_INET, "0.0.0.0", lo + 1, true);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(orch_ports_reserve(p, lo + 1), 0);
        ck_assert_int_eq(orch_ports_reserve(p, lo + 1), -EADDRINUSE);
        ck_assert(orch_ports_is_live(p, lo + 1));
        ck_assert_int_eq(orch_ports_reserve(p, lo - 1), -ERANGE);
        ck_assert_int_eq(orch_ports_reserve(p, hi + 1), -ERANGE);
        ck_assert_int_eq(orch_ports_release(p, hi + 1), -ERANGE);
        ck_assert_int_eq(orch_ports_release(p, lo), -ENOENT);

        /* Never handed out while reserved, even once its listener is gone. */
        close(fd);
        fd = -1;
        for (int i = 0; i < 3; i++) {
                int r = orch_ports_allocate(p, &port, NULL, 0);
                if (r == -EADDRNOTAVAIL)
                        break;
                ck_assert_int_eq(r, 0);
                ck_assert_uint_ne(port, lo + 1);
        }
        ck_assert_int_eq(orch_ports_allocate(p, &port, NULL, 0), -EADDRNOTAVAIL);
        ck_assert_int_eq(orch_ports_release(p, lo + 1), 0);
        ck_assert_int_eq(orch_ports_release(p, lo + 1), -ENOENT);
        ck_assert_int_eq(orch_ports_allocate(p, &port, NULL, 0), 0);
        ck_assert_uint_eq(port, lo + 1);
}
END_TEST

START_TEST(test_skips_live_runs_across_words)
{
        _cleanup_(orch_ports_freep) struct orch_ports *p = NULL;
        /* 300 ports: five bitmap words, the last one partly padding. */
        const uint16_t lo = TEST_BASE + 1000, hi = TEST_BASE + 1299;
        static const unsigned holes[] = {63, 64, 200, 299};
        uint16_t port;

        ck_assert_int_eq(orch_ports_new(lo, hi, &p), 0);
        for (unsigned i = 0; i < 300; i++) {
                bool hole = false;
                for (size_t k = 0; k < ELEMENTSOF(holes); k++)
                        hole = hole || holes[k] == i;
                if (!hole)
                        ck_assert_int_eq(orch_ports_reserve(p, (uint16_t)(lo + i)), 0);
        }
        for (size_t k = 0; k < ELEMENTSOF(holes); k++) {
                ck_assert_int_eq(orch_ports_allocate(p, &port, NULL, 0), 0);
                ck_assert_uint_eq(port, lo + holes[k]);
        }
        ck_assert_int_eq(orch_ports_allocate(p, &port, NULL, 0), -EADDRNOTAVAIL);
        ck_assert_uint_eq(orch_ports_n_live(p), 300);

        /* The cursor wrapped: a port freed below it is found from the start of the range. */
        ck_assert_int_eq(orch_ports_release(p, lo + 5), 0);
        ck_assert_int_eq(orch_ports_allocate(p, &port, NULL, 0), 0);
        ck_assert_uint_eq(port, lo + 5);
}
END_TEST

START_TEST(test_thousand_instances)
{
        _cleanup_(orch_ports_freep) struct orch_ports *p = NULL;
        uint64_t t0;
        size_t n = 0;

        /* A range as large as the default one (not the default itself, which agents under test
         * use), as on a node with a thousand instances of one port each. */
        ck_assert_int_eq(orch_ports_new(10000, 19999, &p), 0);
        t0 = orch_now_msec();
        for (int i = 0; i < 1000; i++) {
                uint16_t port;
                char reason[160];
                int r = orch_ports_allocate(p, &port, reason, sizeof reason);
                ck_assert_msg(r == 0, "allocation %d: %s", i, reason);
                n++;
        }
        ck_assert_uint_eq(orch_ports_n_live(p), n);
        /* Generous: this is thousands of bind() calls, well under a second on any machine. */
        ck_assert_uint_lt(orch_now_msec() - t0, 3000);
}
END_TEST

static Suite *ports_suite(void)
{
        Suite *s = suite_create("ports");
        TCase *tc = tcase_create("core");

        tcase_add_test(tc, test_parse_range);
        tcase_add_test(tc, test_new_invalid);
        tcase_add_test(tc, test_unique_under_churn);
        tcase_add_test(tc, test_released_not_reused_at_once);
        tcase_add_test(tc, test_exhaustion);
        tcase_add_test(tc, test_bound_port_skipped);
        tcase_add_test(tc, test_reserve_specific);
        tcase_add_test(tc, test_skips_live_runs_across_words);
        tcase_add_test(tc, test_thousand_instances);
        suite_add_tcase(s, tc);
        return s;
}

ORCH_TEST_MAIN(ports_suite)
