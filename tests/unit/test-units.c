/* SPDX-License-Identifier: MIT */
#include "config.h"

#include "testing.h"
#include "units.h"
#include "util.h"
#include "banned.h"

START_TEST(test_duration)
{
        static const struct {
                const char *in;
                uint64_t ms;
                const char *canonical;
        } ok[] = {
                {"0s", 0, "0s"},          {"100ms", 100, "100ms"}, {"2s", 2000, "2s"},
                {"1.5s", 1500, "1500ms"}, {"90s", 90000, "90s"},   {"120s", 120000, "2m"},
                {"1m30s", 90000, "90s"},  {"1h", 3600000, "1h"},   {"0.5h", 1800000, "30m"},
        };
        static const char *const bad[] = {"",         "5",   "s",   "-1s",         "1x",  "1.s",
                                          "1.0001ms", "1 s", "1sm", "9999999999h", "1e3s"};
        char buf[32];

        for (size_t i = 0; i < ELEMENTSOF(ok); i++) {
                uint64_t v = 1;
                ck_assert_msg(orch_parse_duration(ok[i].in, &v) == 0, "parse %s", ok[i].in);
                ck_assert_uint_eq(v, ok[i].ms);
                ck_assert_int_eq(orch_format_duration(v, buf, sizeof buf), 0);
                ck_assert_str_eq(buf, ok[i].canonical);
                ck_assert_int_eq(orch_parse_duration(buf, &v), 0);
                ck_assert_uint_eq(v, ok[i].ms);
        }
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                uint64_t v;
                ck_assert_msg(orch_parse_duration(bad[i], &v) < 0, "accepted %s", bad[i]);
        }
}
END_TEST

START_TEST(test_size)
{
        static const struct {
                const char *in;
                uint64_t bytes;
                const char *canonical;
        } ok[] = {
                {"0", 0, "0"},
                {"512", 512, "512"},
                {"1Ki", 1024, "1Ki"},
                {"128Mi", 128ULL << 20, "128Mi"},
                {"1.5Gi", 3ULL << 29, "1536Mi"},
                {"1G", 1000000000ULL, "1G"},
                {"2048", 2048, "2Ki"},
                {"1000K", 1000000, "1M"},
        };
        static const char *const bad[] = {"",    "Mi",  "-1",    "1.5",
                                          "12Q", "1mi", "0.1Ki", "99999999999999999999"};
        char buf[32];

        for (size_t i = 0; i < ELEMENTSOF(ok); i++) {
                uint64_t v = 1;
                ck_assert_msg(orch_parse_size(ok[i].in, &v) == 0, "parse %s", ok[i].in);
                ck_assert_uint_eq(v, ok[i].bytes);
                ck_assert_int_eq(orch_format_size(v, buf, sizeof buf), 0);
                ck_assert_str_eq(buf, ok[i].canonical);
        }
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                uint64_t v;
                ck_assert_msg(orch_parse_size(bad[i], &v) < 0, "accepted %s", bad[i]);
        }
}
END_TEST

START_TEST(test_cpu)
{
        uint32_t m;
        char buf[32];

        ck_assert_int_eq(orch_parse_cpu("0.5", &m), 0);
        ck_assert_uint_eq(m, 500);
        ck_assert_int_eq(orch_format_cpu(m, buf, sizeof buf), 0);
        ck_assert_str_eq(buf, "500m");
        ck_assert_int_eq(orch_parse_cpu("250m", &m), 0);
        ck_assert_uint_eq(m, 250);
        ck_assert_int_eq(orch_parse_cpu("2", &m), 0);
        ck_assert_uint_eq(m, 2000);
        ck_assert_int_eq(orch_format_cpu(m, buf, sizeof buf), 0);
        ck_assert_str_eq(buf, "2");
        ck_assert_int_lt(orch_parse_cpu("0", &m), 0);
        ck_assert_int_lt(orch_parse_cpu("0.0001", &m), 0);
        ck_assert_int_lt(orch_parse_cpu("1.5m", &m), 0);
        ck_assert_int_lt(orch_parse_cpu("-1", &m), 0);
        ck_assert_int_lt(orch_parse_cpu("two", &m), 0);
}
END_TEST

START_TEST(test_rate)
{
        uint32_t c;
        uint64_t p;
        char buf[32];

        ck_assert_int_eq(orch_parse_rate("100/s", &c, &p), 0);
        ck_assert_uint_eq(c, 100);
        ck_assert_uint_eq(p, 1000);
        ck_assert_int_eq(orch_format_rate(c, p, buf, sizeof buf), 0);
        ck_assert_str_eq(buf, "100/s");
        ck_assert_int_eq(orch_parse_rate("60/m", &c, &p), 0);
        ck_assert_uint_eq(p, 60000);
        ck_assert_int_lt(orch_parse_rate("0/s", &c, &p), 0);
        ck_assert_int_lt(orch_parse_rate("10/d", &c, &p), 0);
        ck_assert_int_lt(orch_parse_rate("10", &c, &p), 0);
        ck_assert_int_lt(orch_parse_rate("/s", &c, &p), 0);
}
END_TEST

START_TEST(test_strings)
{
        char small[4];
        uint64_t u;
        int64_t i;

        ck_assert_uint_eq(orch_strlcpy(small, "abcdef", sizeof small), 6);
        ck_assert_str_eq(small, "abc");
        ck_assert_int_eq(orch_snprintf(small, sizeof small, "%s", "abcd"), -ENOBUFS);
        ck_assert_int_eq(orch_parse_u64("18446744073709551615", &u), 0);
        ck_assert_int_eq(orch_parse_u64("18446744073709551616", &u), -ERANGE);
        ck_assert_int_eq(orch_parse_u64("12a", &u), -EINVAL);
        ck_assert_int_eq(orch_parse_i64("-9223372036854775808", &i), 0);
        ck_assert_int_eq(orch_parse_i64("9223372036854775808", &i), -ERANGE);
        ck_assert_uint_eq(orch_levenshtein("replicas", "replica", 3), 1);
        ck_assert_uint_eq(orch_levenshtein("kitten", "sitting", 3), 3);
        {
                const char *c[] = {"replicas", "resources", "restart"};
                ck_assert_str_eq(orch_suggest("replcas", c, 3), "replicas");
                ck_assert_ptr_null(orch_suggest("zzz", c, 3));
        }
        ck_assert_int_eq(orch_utf8_invalid_offset("h\xc3\xa9llo", 6), -1);
        ck_assert_int_eq(orch_utf8_invalid_offset("ab\xff", 3), 2);
        ck_assert_int_eq(orch_utf8_invalid_offset("a\0b", 3), 1);
        ck_assert_int_eq(orch_utf8_invalid_offset("\xc3", 1), 0);
        ck_assert_int_eq(orch_utf8_invalid_offset("\xed\xa0\x80", 3), 0); /* surrogate */
        ck_assert_int_eq(orch_utf8_invalid_offset("\xc0\xaf", 2), 0);     /* overlong */
        ck_assert(orch_secret_equal("s3cret", "s3cret"));
        ck_assert(!orch_secret_equal("s3cre", "s3cret"));
        ck_assert(!orch_secret_equal("s3cretx", "s3cret"));
        ck_assert(!orch_secret_equal("", "s3cret"));
}
END_TEST

START_TEST(test_buf)
{
        struct orch_buf b = {0};
        _cleanup_(freep) char *s = NULL;

        for (int k = 0; k < 1000; k++)
                ck_assert_int_eq(orch_buf_printf(&b, "%d,", k), 0);
        ck_assert(orch_endswith(b.data, "999,"));
        orch_buf_consume(&b, 4);
        ck_assert(b.data[0] == '2');
        s = orch_buf_steal(&b);
        ck_assert_ptr_nonnull(s);
        ck_assert_ptr_null(b.data);
}
END_TEST

START_TEST(test_format_time)
{
        char b[40], small[10];

        ck_assert_int_eq(orch_format_time(1764158062123ULL, b, sizeof b), 0);
        ck_assert_str_eq(b, "2025-11-26T11:54:22.123Z");
        /* the same second again, other milliseconds (the cached part must not leak the old ones) */
        ck_assert_int_eq(orch_format_time(1764158062005ULL, b, sizeof b), 0);
        ck_assert_str_eq(b, "2025-11-26T11:54:22.005Z");
        ck_assert_int_eq(orch_format_time(0, b, sizeof b), 0);
        ck_assert_str_eq(b, "1970-01-01T00:00:00.000Z");
        ck_assert_int_eq(orch_format_time(1, small, sizeof small), -ENOBUFS);
}
END_TEST

static Suite *units_suite(void)
{
        Suite *s = suite_create("units");
        TCase *tc = tcase_create("core");

        tcase_add_test(tc, test_duration);
        tcase_add_test(tc, test_size);
        tcase_add_test(tc, test_cpu);
        tcase_add_test(tc, test_rate);
        tcase_add_test(tc, test_strings);
        tcase_add_test(tc, test_buf);
        tcase_add_test(tc, test_format_time);
        suite_add_tcase(s, tc);
        return s;
}

ORCH_TEST_MAIN(units_suite)
