/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include "dns.h"
#include "log.h"
#include "net.h"
#include "registry.h"
#include "util.h"
#include "banned.h"

#define DNS_HEADER       12
#define DNS_MAX_NAME     255
#define DNS_MAX_LABELS   127
#define DNS_UDP_PLAIN    512
#define DNS_UDP_EDNS_MAX 1232 /* the DNS flag day recommendation: no IP fragmentation */
#define DNS_TTL          1

enum {
        TYPE_A = 1,
        TYPE_SRV = 33,
        TYPE_AAAA = 28,
        TYPE_OPT = 41,
        TYPE_ANY = 255,
        CLASS_IN = 1,
        RCODE_OK = 0,
        RCODE_FORMERR = 1,
        RCODE_SERVFAIL = 2,
        RCODE_NXDOMAIN = 3,
        RCODE_NOTIMP = 4,
        RCODE_REFUSED = 5,
};

struct orch_dns {
        uv_udp_t udp;
        struct orch_state *st;
        uint8_t buf[65536];
};

/* --- the wire format ---------------------------------------------------------------------- */

struct question {
        char labels[DNS_MAX_LABELS][64]; /* lower case */
        size_t n_labels;
        size_t name_len; /* bytes of the name in the packet */
        size_t end;      /* offset after QTYPE and QCLASS */
        uint16_t type, cls;
        bool edns;
        uint16_t udp_size;
};

static uint16_t get16(const uint8_t *p)
{
        return (uint16_t)(p[0] << 8 | p[1]);
}

static void put16(uint8_t *p, uint16_t v)
{
        p[0] = (uint8_t)(v >> 8);
        p[1] = (uint8_t)v;
}

/* Reads an uncompressed name at *off; compression is not allowed in a question (there is
 * nothing before it to point at). */
static int read_name(const uint8_t *pkt, size_t len, size_t *off, struct question *q)
{
        size_t o = *off, total = 0;

        q->n_labels = 0;
        for (;;) {
                uint8_t l;
                if (o >= len)
                        return -EINVAL;
                l = pkt[o++];
                total += (size_t)l + 1;
                if (total > DNS_MAX_NAME)
                        return -EINVAL;
                if (l == 0)
                        break;
                if ((l & 0xc0) != 0 || o + l > len || q->n_labels >= DNS_MAX_LABELS)
                        return -EINVAL;
                for (size_t i = 0; i < l; i++) {
                        char c = (char)pkt[o + i];
                        q->labels[q->n_labels][i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
                }
                q->labels[q->n_labels][l] = '\0';
                q->n_labels++;
                o += l;
        }
        q->name_len = o - *off;
        *off = o;
        return 0;
}

/* Skips a resource record's name (root or a pointer for an OPT) and returns its type and class. */
static int read_opt(const uint8_t *pkt, size_t len, size_t off, struct question *q)
{
        uint16_t type, rdlen;

        if (off + 11 > len || pkt[off] != 0)
                return -EINVAL; /* an OPT's owner is the root */
        type = get16(pkt + off + 1);
        rdlen = get16(pkt + off + 9);
        if (type != TYPE_OPT || off + 11 + rdlen > len)
                return -EINVAL;
        q->edns = true;
        q->udp_size = get16(pkt + off + 3);
        return 0;
}

struct writer {
        uint8_t *out;
        size_t len, limit;
        bool truncated;
        uint16_t ancount, arcount;
};

static bool room(struct writer *w, size_t n)
{
        if (w->len + n > w->limit) {
                w->truncated = true;
                return false;
        }
        return true;
}

/* An address record, owner given as a pointer to an earlier name (`at`), or as `label` + pointer. */
static bool put_rr_header(struct writer *w, const char *label, size_t at, uint16_t type, uint16_t rdlen)
{
        size_t ll = label ? strlen(label) : 0;

        if (!room(w, (label ? 1 + ll : 0) + 2 + 10 + rdlen))
                return false;
        if (label) {
                w->out[w->len++] = (uint8_t)ll;
                memcpy(w->out + w->len, label, ll);
                w->len += ll;
        }
        put16(w->out + w->len, (uint16_t)(0xc000 | at));
        put16(w->out + w->len + 2, type);
        put16(w->out + w->len + 4, CLASS_IN);
        w->out[w->len + 6] = 0;
        w->out[w->len + 7] = 0;
        put16(w->out + w->len + 8, DNS_TTL);
        put16(w->out + w->len + 10, rdlen);
        w->len += 12;
        return true;
}

/* The address record of an endpoint of the wanted family; `owner` is where its name is. */
static bool put_address(struct writer *w, const char *label, size_t owner, const char *address,
                        uint16_t qtype)
{
        struct in_addr a4;
        struct in6_addr a6;

        if ((qtype == TYPE_A || qtype == TYPE_ANY) && inet_pton(AF_INET, address, &a4) == 1) {
                if (!put_rr_header(w, label, owner, TYPE_A, 4))
                        return false;
                memcpy(w->out + w->len, &a4, 4);
                w->len += 4;
                return true;
        }
        if ((qtype == TYPE_AAAA || qtype == TYPE_ANY) && inet_pton(AF_INET6, address, &a6) == 1) {
                if (!put_rr_header(w, label, owner, TYPE_AAAA, 16))
                        return false;
                memcpy(w->out + w->len, &a6, 16);
                w->len += 16;
                return true;
        }
        return true; /* nothing of that family: not an error */
}

/* --- answering ---------------------------------------------------------------------------- */

static ssize_t finish(struct writer *w, uint8_t rcode, const struct question *q)
{
        w->out[3] = (uint8_t)((w->out[3] & 0xf0) | rcode);
        if (w->truncated)
                w->out[2] |= 0x02; /* TC */
        put16(w->out + 6, w->ancount);
        put16(w->out + 8, 0);
        if (q && q->edns && room(w, 11)) {
                /* our own OPT: the size we accept, no options */
                w->out[w->len] = 0;
                put16(w->out + w->len + 1, TYPE_OPT);
                put16(w->out + w->len + 3, DNS_UDP_EDNS_MAX);
                memset(w->out + w->len + 5, 0, 6);
                w->len += 11;
                w->arcount++;
        }
        put16(w->out + 10, w->arcount);
        return (ssize_t)w->len;
}

ssize_t orch_dns_answer(struct orch_state *st, const uint8_t *pkt, size_t len, uint8_t *out, size_t size)
{
        struct writer w = {.out = out, .limit = MIN(size, (size_t)DNS_UDP_PLAIN)};
        struct question q;
        size_t off = DNS_HEADER;
        uint16_t qdcount, ancount, nscount, arcount;
        struct orch_svc *svc;
        const char *instance = NULL;

        if (len < DNS_HEADER || size < DNS_HEADER)
                return -1;
        if (pkt[2] & 0x80)
                return -1;   /* a response: never answer one (no loops between servers) */
        memcpy(out, pkt, 2); /* id */
        out[2] = (uint8_t)(0x80 | 0x04 | (pkt[2] & 0x01)); /* QR, AA, RD as asked */
        out[3] = 0;
        memset(out + 4, 0, 8);
        w.len = DNS_HEADER;
        if ((pkt[2] >> 3 & 0x0f) != 0)
                return finish(&w, RCODE_NOTIMP, NULL); /* only standard queries */
        qdcount = get16(pkt + 4);
        ancount = get16(pkt + 6);
        nscount = get16(pkt + 8);
        arcount = get16(pkt + 10);
        if (qdcount != 1 || ancount != 0 || nscount != 0 || arcount > 1 ||
            read_name(pkt, len, &off, &q) < 0 || off + 4 > len)
                return finish(&w, RCODE_FORMERR, NULL);
        q.type = get16(pkt + off);
        q.cls = get16(pkt + off + 2);
        q.end = off + 4;
        q.edns = false;
        if (arcount == 1 && read_opt(pkt, len, q.end, &q) < 0)
                return finish(&w, RCODE_FORMERR, NULL);
        if (q.edns)
                w.limit = MIN(size, (size_t)MAX(MIN(q.udp_size, (uint16_t)DNS_UDP_EDNS_MAX), DNS_UDP_PLAIN));
        /* the question, as asked */
        if (!room(&w, q.end - DNS_HEADER))
                return -1;
        memcpy(out + w.len, pkt + DNS_HEADER, q.end - DNS_HEADER);
        w.len = q.end;
        put16(out + 4, 1);
        if (q.cls != CLASS_IN)
                return finish(&w, RCODE_NOTIMP, &q);
        if (q.n_labels == 0 || !streq(q.labels[q.n_labels - 1], "orch"))
                return finish(&w, RCODE_REFUSED, &q);
        if (q.n_labels == 1)
                return finish(&w, RCODE_OK, &q); /* the zone itself: nothing but its name */
        if (q.n_labels > 3)
                return finish(&w, RCODE_NXDOMAIN, &q);
        svc = orch_state_service(st, q.labels[q.n_labels - 2]);
        if (!svc || svc->deleting)
                return finish(&w, RCODE_NXDOMAIN, &q);
        if (q.n_labels == 3) {
                struct orch_inst *inst = orch_state_instance(st, q.labels[0]);
                if (!inst || inst->svc != svc)
                        return finish(&w, RCODE_NXDOMAIN, &q);
                instance = inst->id;
        }

        {
                struct orch_list *p;
                size_t targets[256];
                const char *target_addr[256];
                size_t n_targets = 0;

                orch_list_foreach (p, &svc->instances) {
                        struct orch_inst *inst = orch_list_entry(p, struct orch_inst, svc_link);
                        const char *addr;
                        size_t before = w.len;

                        if (!orch_registry_is_endpoint(inst) || (instance && !streq(instance, inst->id)))
                                continue;
                        addr = inst->node->address ? inst->node->address : "";
                        if (q.type == TYPE_A || q.type == TYPE_AAAA || (q.type == TYPE_ANY && instance)) {
                                if (!put_address(&w, NULL, DNS_HEADER, addr, q.type))
                                        break;
                                if (w.len != before)
                                        w.ancount++;
                        } else if ((q.type == TYPE_SRV || q.type == TYPE_ANY) && !instance &&
                                   inst->n_ports > 0) {
                                /* target <instance>.<service>.orch., written out in full: RFC
                                 * 2782 forbids compressing an SRV target */
                                size_t il = strlen(inst->id), sl = strlen(svc->name);
                                size_t rdlen = 6 + 1 + il + 1 + sl + 1 + 4 + 1, t;
                                if (!put_rr_header(&w, NULL, DNS_HEADER, TYPE_SRV, (uint16_t)rdlen))
                                        break;
                                put16(out + w.len, 0);                       /* priority */
                                put16(out + w.len + 2, 1);                   /* weight */
                                put16(out + w.len + 4, inst->ports[0].port); /* port */
                                t = w.len + 6;
                                if (n_targets < ELEMENTSOF(targets)) {
                                        targets[n_targets] = t;
                                        target_addr[n_targets++] = addr;
                                }
                                out[t++] = (uint8_t)il;
                                memcpy(out + t, inst->id, il);
                                t += il;
                                out[t++] = (uint8_t)sl;
                                memcpy(out + t, svc->name, sl);
                                t += sl;
                                memcpy(out + t, "\004orch", 6); /* and the root label */
                                w.len += rdlen;
                                w.ancount++;
                        }
                }
                /* the targets' addresses, as additional records (they may be dropped when full) */
                for (size_t i = 0; i < n_targets && !w.truncated; i++) {
                        size_t before = w.len;
                        bool ok = put_address(&w, NULL, targets[i], target_addr[i], TYPE_ANY);
                        if (!ok) {
                                /* additional data is optional: a full answer is not truncated for it */
                                w.truncated = false;
                                w.len = before;
                                break;
                        }
                        if (w.len != before)
                                w.arcount++;
                }
        }
        return finish(&w, RCODE_OK, &q);
}

/* --- the server --------------------------------------------------------------------------- */

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
        struct orch_dns *dns = container_of(h, struct orch_dns, udp);

        *buf = uv_buf_init((char *)dns->buf, sizeof dns->buf / 2);
}

static void send_cb(uv_udp_send_t *req, int status)
{
        free(req);
}

static void recv_cb(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *addr,
                    unsigned flags)
{
        struct orch_dns *dns = container_of(h, struct orch_dns, udp);
        uv_udp_send_t *req;
        uint8_t *out = dns->buf + sizeof dns->buf / 2;
        ssize_t n;
        uv_buf_t b;

        if (nread <= 0 || !addr || (flags & UV_UDP_PARTIAL))
                return;
        n = orch_dns_answer(dns->st, (const uint8_t *)buf->base, (size_t)nread, out, sizeof dns->buf / 2);
        if (n <= 0)
                return;
        /* the answer is copied behind the request: the buffer is reused by the next datagram */
        req = malloc(sizeof *req + (size_t)n);
        if (!req)
                return;
        memcpy(req + 1, out, (size_t)n);
        b = uv_buf_init((char *)(req + 1), (unsigned)n);
        if (uv_udp_send(req, h, &b, 1, addr, send_cb) < 0)
                free(req);
}

int orch_dns_new(uv_loop_t *loop, struct orch_state *st, const char *listen, struct orch_dns **ret)
{
        struct orch_dns *dns;
        struct sockaddr_storage ss;
        int r;

        r = orch_parse_listen(listen, &ss, NULL);
        if (r < 0)
                return r;
        dns = calloc(1, sizeof *dns);
        if (!dns)
                return -ENOMEM;
        dns->st = st;
        r = uv_udp_init(loop, &dns->udp);
        if (r < 0) {
                free(dns);
                return r;
        }
        r = uv_udp_bind(&dns->udp, (struct sockaddr *)&ss, 0);
        if (r >= 0)
                r = uv_udp_recv_start(&dns->udp, alloc_cb, recv_cb);
        if (r < 0) {
                orch_dns_free(dns);
                return r;
        }
        *ret = dns;
        return 0;
}

int orch_dns_port(const struct orch_dns *dns)
{
        struct sockaddr_storage ss;
        int len = sizeof ss;

        if (uv_udp_getsockname(&dns->udp, (struct sockaddr *)&ss, &len) < 0)
                return -1;
        return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                              : ((struct sockaddr_in *)&ss)->sin_port);
}

static void closed_cb(uv_handle_t *h)
{
        free(container_of((uv_udp_t *)h, struct orch_dns, udp));
}

void orch_dns_free(struct orch_dns *dns)
{
        if (dns)
                uv_close((uv_handle_t *)&dns->udp, closed_cb);
}
