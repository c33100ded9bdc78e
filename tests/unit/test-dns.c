/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <uv.h>

#include "dns.h"
#include "state.h"
#include "store.h"
#include "testing.h"
#include "util.h"
#include "banned.h"

/* The DNS interface against a real cluster model: one service with two healthy instances on two
 * nodes, one unhealthy, and a service without endpoints. */

struct fix {
        char dir[64];
        struct orch_store *store;
        struct orch_state *st;
        char id[3][80];
};

static struct orch_service *parse(const char *yaml)
{
        struct orch_manifest m = {0};
        struct orch_diags d = {0};
        struct orch_service *s;

        ck_assert_int_ge(orch_manifest_parse_buffer(&m, "t.yaml", yaml, strlen(yaml), &d), 0);
        s = m.services[0];
        free(m.services);
        orch_diags_release(&d);
        return s;
}

static struct orch_node *node(struct fix *f, const char *name, const char *address)
{
        struct orch_node *n;

        ck_assert_int_ge(orch_state_upsert_node(f->st, name, &n), 0);
        n->address = strdup(address);
        n->cpu_millis = 4000;
        n->memory = 8ULL << 30;
        orch_state_set_node_state(f->st, n, ORCH_NODE_READY);
        return n;
}

static struct orch_inst *running(struct fix *f, struct orch_svc *svc, struct orch_node *n, uint16_t port,
                                 bool healthy)
{
        struct orch_inst *inst;

        ck_assert_int_eq(orch_state_new_instance(f->st, svc, &inst), 0);
        orch_state_place_instance(f->st, inst, n);
        inst->state = ORCH_INSTANCE_RUNNING;
        inst->health = healthy ? ORCH_HEALTH_PASSING : ORCH_HEALTH_FAILING;
        inst->ports = calloc(1, sizeof *inst->ports);
        inst->ports[0] = (struct orch_inst_port){strdup("http"), port};
        inst->n_ports = 1;
        return inst;
}

static void setup(struct fix *f)
{
        const char *change;
        struct orch_svc *web;
        struct orch_node *n1, *n2;

        memset(f, 0, sizeof *f);
        orch_strlcpy(f->dir, "/tmp/orch-test-dns-XXXXXX", sizeof f->dir);
        ck_assert_ptr_nonnull(mkdtemp(f->dir));
        ck_assert_int_eq(orch_store_open(f->dir, NULL, &f->store, NULL), 0);
        ck_assert_int_eq(orch_state_new(f->store, &f->st), 0);
        ck_assert_int_ge(orch_state_apply_service(f->st,
                                                  parse("kind: service\nname: web\nreplicas: 3\n"
                                                        "command: [/bin/true]\nports: [{name: http}]\n"
                                                        "health: {type: tcp}\n"),
                                                  &change),
                         0);
        ck_assert_int_ge(orch_state_apply_service(f->st,
                                                  parse("kind: service\nname: idle\nreplicas: 0\n"
                                                        "command: [/bin/true]\n"),
                                                  &change),
                         0);
        web = orch_state_service(f->st, "web");
        n1 = node(f, "n1", "192.0.2.1");
        n2 = node(f, "n2", "2001:db8::2");
        orch_strlcpy(f->id[0], running(f, web, n1, 20001, true)->id, sizeof f->id[0]);
        orch_strlcpy(f->id[1], running(f, web, n2, 20002, true)->id, sizeof f->id[1]);
        orch_strlcpy(f->id[2], running(f, web, n1, 20003, false)->id, sizeof f->id[2]);
}

static void teardown(struct fix *f)
{
        char cmd[128];

        orch_state_free(f->st);
        orch_store_close(f->store);
        orch_snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
        ck_assert_int_eq(system(cmd), 0);
}

/* A standard query for `name` (dotted, without the final dot) of `type`. */
static size_t query(uint8_t *buf, const char *name, uint16_t type, bool edns)
{
        size_t n = 12;
        const char *p = name;

        memset(buf, 0, 12);
        buf[0] = 0x12;
        buf[1] = 0x34;
        buf[2] = 0x01; /* RD */
        buf[5] = 1;
        while (*p) {
                const char *dot = strchr(p, '.');
                size_t l = dot ? (size_t)(dot - p) : strlen(p);
                buf[n++] = (uint8_t)l;
                memcpy(buf + n, p, l);
                n += l;
                p += l + (dot ? 1 : 0);
        }
        buf[n++] = 0;
        buf[n++] = (uint8_t)(type >> 8);
        buf[n++] = (uint8_t)type;
        buf[n++] = 0;
        buf[n++] = 1;
        if (edns) {
                buf[11] = 1;
                buf[n++] = 0;
                buf[n++] = 0;
                buf[n++] = 41;
                buf[n++] = 0x10; /* 4096 */
                buf[n++] = 0x00;
                memset(buf + n, 0, 6);
                n += 6;
        }
        return n;
}

static int rcode(const uint8_t *r)
{
        return r[3] & 0x0f;
}

static int ancount(const uint8_t *r)
{
        return r[6] << 8 | r[7];
}

START_TEST(test_a_records_of_healthy_endpoints)
{
        struct fix f;
        uint8_t q[512], r[2048];
        ssize_t n;

        setup(&f);
        n = orch_dns_answer(f.st, q, query(q, "WEB.orch", 1, false), r, sizeof r);
        ck_assert_int_gt(n, 12);
        ck_assert(r[0] == 0x12 && r[1] == 0x34);
        ck_assert(r[2] & 0x80); /* a response */
        ck_assert(r[2] & 0x04); /* authoritative */
        ck_assert_int_eq(rcode(r), 0);
        ck_assert_int_eq(ancount(r), 1); /* the IPv4 endpoint; the unhealthy one is not there */
        {
                const uint8_t want[4] = {192, 0, 2, 1};
                ck_assert_ptr_nonnull(memmem(r, (size_t)n, want, 4));
        }
        n = orch_dns_answer(f.st, q, query(q, "web.orch", 28, false), r, sizeof r);
        ck_assert_int_eq(rcode(r), 0);
        ck_assert_int_eq(ancount(r), 1); /* the IPv6 endpoint */
        teardown(&f);
}
END_TEST

START_TEST(test_srv_with_targets)
{
        struct fix f;
        uint8_t q[512], r[2048];
        ssize_t n;
        const uint8_t port1[2] = {20001 >> 8, 20001 & 0xff}, port2[2] = {20002 >> 8, 20002 & 0xff};

        setup(&f);
        n = orch_dns_answer(f.st, q, query(q, "web.orch", 33, true), r, sizeof r);
        ck_assert_int_eq(rcode(r), 0);
        ck_assert_int_eq(ancount(r), 2);
        ck_assert_ptr_nonnull(memmem(r, (size_t)n, port1, 2));
        ck_assert_ptr_nonnull(memmem(r, (size_t)n, port2, 2));
        /* targets are <instance>.web.orch., uncompressed */
        ck_assert_ptr_nonnull(memmem(r, (size_t)n, f.id[0], strlen(f.id[0])));
        ck_assert_ptr_null(memmem(r, (size_t)n, f.id[2], strlen(f.id[2])));
        ck_assert_int_ge(r[10] << 8 | r[11], 2); /* additional: the targets' addresses (+ OPT) */
        /* an instance's own name */
        {
                char name[128];
                orch_snprintf(name, sizeof name, "%s.web.orch", f.id[0]);
                orch_dns_answer(f.st, q, query(q, name, 1, false), r, sizeof r);
                ck_assert_int_eq(rcode(r), 0);
                ck_assert_int_eq(ancount(r), 1);
                orch_snprintf(name, sizeof name, "%s.web.orch", f.id[2]); /* unhealthy: no address */
                orch_dns_answer(f.st, q, query(q, name, 1, false), r, sizeof r);
                ck_assert_int_eq(rcode(r), 0);
                ck_assert_int_eq(ancount(r), 0);
        }
        teardown(&f);
}
END_TEST

START_TEST(test_errors)
{
        struct fix f;
        uint8_t q[512], r[2048];
        size_t len;

        setup(&f);
        orch_dns_answer(f.st, q, query(q, "nosuch.orch", 1, false), r, sizeof r);
        ck_assert_int_eq(rcode(r), 3); /* NXDOMAIN */
        orch_dns_answer(f.st, q, query(q, "idle.orch", 1, false), r, sizeof r);
        ck_assert_int_eq(rcode(r), 0); /* exists, no endpoints */
        ck_assert_int_eq(ancount(r), 0);
        orch_dns_answer(f.st, q, query(q, "example.com", 1, false), r, sizeof r);
        ck_assert_int_eq(rcode(r), 5); /* REFUSED */
        orch_dns_answer(f.st, q, query(q, "a.b.web.orch", 1, false), r, sizeof r);
        ck_assert_int_eq(rcode(r), 3);
        /* malformed: two questions, a pointer in the question, a truncated packet */
        len = query(q, "web.orch", 1, false);
        q[5] = 2;
        orch_dns_answer(f.st, q, len, r, sizeof r);
        ck_assert_int_eq(rcode(r), 1);
        len = query(q, "web.orch", 1, false);
        q[12] = 0xc0;
        orch_dns_answer(f.st, q, len, r, sizeof r);
        ck_assert_int_eq(rcode(r), 1);
        len = query(q, "web.orch", 1, false);
        orch_dns_answer(f.st, q, len - 3, r, sizeof r);
        ck_assert_int_eq(rcode(r), 1);
        /* not a query: no answer at all */
        len = query(q, "web.orch", 1, false);
        q[2] |= 0x80;
        ck_assert_int_eq(orch_dns_answer(f.st, q, len, r, sizeof r), -1);
        ck_assert_int_eq(orch_dns_answer(f.st, q, 5, r, sizeof r), -1);
        /* an opcode other than QUERY */
        len = query(q, "web.orch", 1, false);
        q[2] = (uint8_t)(2 << 3);
        orch_dns_answer(f.st, q, len, r, sizeof r);
        ck_assert_int_eq(rcode(r), 4);
        teardown(&f);
}
END_TEST

START_TEST(test_hostile_bytes_never_crash)
{
        struct fix f;
        uint8_t q[600], r[2048];

        setup(&f);
        /* every length of every prefix of random packets: answers stay inside the buffer */
        for (int round = 0; round < 2000; round++) {
                size_t len = (size_t)(round % 600);
                orch_random_bytes(q, len);
                if (len > 2)
                        q[2] &= 0x7f;
                ck_assert_int_le(orch_dns_answer(f.st, q, len, r, sizeof r), (ssize_t)sizeof r);
        }
        teardown(&f);
}
END_TEST

static void timeout_cb(uv_timer_t *t)
{
        uv_stop(t->loop);
}

START_TEST(test_udp_roundtrip)
{
        struct fix f;
        uv_loop_t loop;
        uv_timer_t timer;
        struct orch_dns *dns;
        struct sockaddr_in sa = {.sin_family = AF_INET};
        uint8_t q[512], r[2048];
        size_t len;
        int s;
        ssize_t n = -1;

        setup(&f);
        ck_assert_int_eq(uv_loop_init(&loop), 0);
        ck_assert_int_eq(orch_dns_new(&loop, f.st, "127.0.0.1:0", &dns), 0);
        sa.sin_port = htons((uint16_t)orch_dns_port(dns));
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        s = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        ck_assert_int_ge(s, 0);
        len = query(q, "web.orch", 33, false);
        ck_assert_int_eq(sendto(s, q, len, 0, (struct sockaddr *)&sa, sizeof sa), (ssize_t)len);
        uv_timer_init(&loop, &timer);
        for (int i = 0; i < 100 && n < 0; i++) {
                uv_timer_start(&timer, timeout_cb, 10, 0);
                uv_run(&loop, UV_RUN_DEFAULT);
                n = recv(s, r, sizeof r, 0);
        }
        ck_assert_int_gt(n, 12);
        ck_assert_int_eq(ancount(r), 2);
        close(s);
        orch_dns_free(dns);
        uv_close((uv_handle_t *)&timer, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        ck_assert_int_eq(uv_loop_close(&loop), 0);
        teardown(&f);
}
END_TEST

static Suite *dns_suite(void)
{
        Suite *s = suite_create("dns");
        TCase *tc = tcase_create("core");

        tcase_add_test(tc, test_a_records_of_healthy_endpoints);
        tcase_add_test(tc, test_srv_with_targets);
        tcase_add_test(tc, test_errors);
        tcase_add_test(tc, test_hostile_bytes_never_crash);
        tcase_add_test(tc, test_udp_roundtrip);
        suite_add_tcase(s, tc);
        return s;
}

ORCH_TEST_MAIN(dns_suite)
