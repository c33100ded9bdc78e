/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include "ports.h"
#include "util.h"
#include "banned.h"

#define WORD_BITS 64u

struct orch_ports {
        uint16_t lo;
        size_t n;      /* ports in the range */
        size_t cursor; /* index of the next candidate */
        size_t n_live;
        bool ipv6; /* the host can bind [::]: check that family too */
        /* Bit i set: port lo + i is live. The bits past the end of the range in the last word are
         * set as well, so a scan skips them like live ports and wraps without a special case. */
        uint64_t bits[];
};

static bool bit_get(const struct orch_ports *p, size_t i)
{
        return (p->bits[i / WORD_BITS] >> (i % WORD_BITS)) & 1;
}

static void bit_set(struct orch_ports *p, size_t i)
{
        p->bits[i / WORD_BITS] |= UINT64_C(1) << (i % WORD_BITS);
}

static void bit_clear(struct orch_ports *p, size_t i)
{
        p->bits[i / WORD_BITS] &= ~(UINT64_C(1) << (i % WORD_BITS));
}

static void set_reason(char *reason, size_t size, const char *fmt, ...) _printf_(3, 4);
static void set_reason(char *reason, size_t size, const char *fmt, ...)
{
        va_list ap;

        if (!reason || size == 0)
                return;
        va_start(ap, fmt);
        /* A truncated reason is still worth showing. */
        (void)vsnprintf(reason, size, fmt, ap);
        va_end(ap);
}

static int parse_port(const char *s, uint16_t *ret)
{
        uint32_t v;

        if (orch_parse_u32(s, &v) < 0 || v < 1 || v > 65535)
                return -EINVAL;
        *ret = (uint16_t)v;
        return 0;
}

int orch_ports_parse_range(const char *s, uint16_t *ret_lo, uint16_t *ret_hi, char *reason,
                           size_t reason_size)
{
        char a[8], b[8];
        const char *dash;
        uint16_t lo, hi;
        size_t la;

        dash = strchr(s, '-');
        if (!dash) {
                set_reason(reason, reason_size, "port range \"%s\": expected FIRST-LAST, e.g. %s", s,
                           ORCH_PORTS_DEFAULT_RANGE);
                return -EINVAL;
        }
        la = (size_t)(dash - s);
        if (la == 0 || la >= sizeof a || strlen(dash + 1) == 0 || strlen(dash + 1) >= sizeof b) {
                set_reason(reason, reason_size, "port range \"%s\": expected FIRST-LAST, e.g. %s", s,
                           ORCH_PORTS_DEFAULT_RANGE);
                return -EINVAL;
        }
        memcpy(a, s, la);
        a[la] = '\0';
        orch_strlcpy(b, dash + 1, sizeof b);
        if (parse_port(a, &lo) < 0) {
                set_reason(reason, reason_size, "port range \"%s\": \"%s\" is not a port number (1-65535)",
                           s, a);
                return -EINVAL;
        }
        if (parse_port(b, &hi) < 0) {
                set_reason(reason, reason_size, "port range \"%s\": \"%s\" is not a port number (1-65535)",
                           s, b);
                return -EINVAL;
        }
        if (lo > hi) {
                set_reason(reason, reason_size, "port range \"%s\": first port %u is above last port %u", s,
                           (unsigned)lo, (unsigned)hi);
                return -EINVAL;
        }
        *ret_lo = lo;
        *ret_hi = hi;
        return 0;
}

/* Whether the host can bind an IPv6 wildcard socket at all (a kernel without IPv6, or
 * ipv6.disable=1, fails here); if not, only IPv4 matters for "free". */
static bool probe_ipv6(void)
{
        struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_ANY_INIT, .sin6_port = 0};
        _cleanup_(closep) int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);

        if (fd < 0)
                return false;
        return bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
}

int orch_ports_new(uint16_t lo, uint16_t hi, struct orch_ports **ret)
{
        struct orch_ports *p;
        size_t n, words;

        if (lo < 1 || lo > hi)
                return -EINVAL;
        n = (size_t)hi - lo + 1;
        words = (n + WORD_BITS - 1) / WORD_BITS;
        p = calloc(1, sizeof *p + words * sizeof(uint64_t));
        if (!p)
                return -ENOMEM;
        p->lo = lo;
        p->n = n;
        for (size_t i = n; i < words * WORD_BITS; i++)
                bit_set(p, i);
        p->ipv6 = probe_ipv6();
        *ret = p;
        return 0;
}

struct orch_ports *orch_ports_free(struct orch_ports *p)
{
        free(p);
        return NULL;
}

/* 1 when the port can be bound, 0 when something holds it, -errno when the check failed. */
static int bind_check(int family, uint16_t port)
{
        union {
                struct sockaddr sa;
                struct sockaddr_in in;
                struct sockaddr_in6 in6;
        } a = {0};
        socklen_t len;
        _cleanup_(closep) int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);

        if (fd < 0)
                return -errno;
        if (family == AF_INET6) {
                /* Only the IPv6 side: the IPv4 side was checked on its own socket. */
                int one = 1;
                if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0)
                        return -errno;
                a.in6.sin6_family = AF_INET6;
                a.in6.sin6_addr = in6addr_any;
                a.in6.sin6_port = htons(port);
                len = sizeof a.in6;
        } else {
                a.in.sin_family = AF_INET;
                a.in.sin_addr.s_addr = htonl(INADDR_ANY);
                a.in.sin_port = htons(port);
                len = sizeof a.in;
        }
        if (bind(fd, &a.sa, len) == 0)
                return 1;
        /* EACCES: a privileged port in a range given to an unprivileged agent; nobody could use it. */
        if (errno == EADDRINUSE || errno == EACCES)
                return 0;
        return -errno;
}

static int port_is_free(const struct orch_ports *p, uint16_t port)
{
        int r = bind_check(AF_INET, port);

        if (r <= 0 || !p->ipv6)
                return r;
        return bind_check(AF_INET6, port);
}

int orch_ports_allocate(struct orch_ports *p, uint16_t *ret_port, char *reason, size_t reason_size)
{
        size_t idx = p->cursor, seen = 0, busy = 0;

        while (seen < p->n) {
                uint64_t w = p->bits[idx / WORD_BITS] >> (idx % WORD_BITS);
                size_t skip;
                uint16_t port;
                int r;

                if (w & 1) {
                        /* Skip the run of live ports (the padding bits past the range included) in one
                         * step: ~w has a zero for each of them. When the run reaches the top of the
                         * word, the shift filled ~w with ones, which ends the count there; only a
                         * full word seen from bit 0 leaves ~w zero. */
                        uint64_t inv = ~w;
                        skip = inv ? (size_t)__builtin_ctzll(inv) : WORD_BITS;
                        seen += MIN(skip, p->n - idx);
                        idx += skip;
                        if (idx >= p->n)
                                idx = 0;
                        continue;
                }

                port = (uint16_t)(p->lo + idx);
                r = port_is_free(p, port);
                if (r < 0) {
                        set_reason(reason, reason_size, "checking whether port %u is free: %s",
                                   (unsigned)port, strerror(-r));
                        return r;
                }
                if (r > 0) {
                        bit_set(p, idx);
                        p->n_live++;
                        p->cursor = idx + 1 < p->n ? idx + 1 : 0;
                        *ret_port = port;
                        return 0;
                }
                busy++;
                seen++;
                idx = idx + 1 < p->n ? idx + 1 : 0;
        }

        set_reason(reason, reason_size,
                   "no free port in %u-%u: %zu held by instances, %zu in use by other processes",
                   (unsigned)p->lo, (unsigned)(p->lo + p->n - 1), p->n_live, busy);
        return -EADDRNOTAVAIL;
}

static int index_of(const struct orch_ports *p, uint16_t port, size_t *ret)
{
        if (port < p->lo || (size_t)(port - p->lo) >= p->n)
                return -ERANGE;
        *ret = (size_t)(port - p->lo);
        return 0;
}

int orch_ports_reserve(struct orch_ports *p, uint16_t port)
{
        size_t i;
        int r = index_of(p, port, &i);

        if (r < 0)
                return r;
        if (bit_get(p, i))
                return -EADDRINUSE;
        bit_set(p, i);
        p->n_live++;
        return 0;
}

int orch_ports_release(struct orch_ports *p, uint16_t port)
{
        size_t i;
        int r = index_of(p, port, &i);

        if (r < 0)
                return r;
        if (!bit_get(p, i))
                return -ENOENT;
        bit_clear(p, i);
        p->n_live--;
        return 0;
}

bool orch_ports_is_live(const struct orch_ports *p, uint16_t port)
{
        size_t i;

        return index_of(p, port, &i) == 0 && bit_get(p, i);
}

size_t orch_ports_n_live(const struct orch_ports *p)
{
        return p->n_live;
}

void orch_ports_get_range(const struct orch_ports *p, uint16_t *ret_lo, uint16_t *ret_hi)
{
        *ret_lo = p->lo;
        *ret_hi = (uint16_t)(p->lo + p->n - 1);
}
