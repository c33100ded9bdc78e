/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>

#include "macro.h"
#include "net.h"
#include "util.h"
#include "banned.h"

/* A host name (localhost, the machine's own name), resolved once, at start: its first IPv4
 * address, else its first IPv6 one (glibc lists ::1 first for localhost on a dual-stack host, and
 * what connects to "localhost:7070" by default is 127.0.0.1). */
static int resolve_listen(const char *host, uint16_t port, struct sockaddr_storage *ret, socklen_t *ret_len)
{
        static const int families[] = {AF_INET, AF_INET6};
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICHOST};
        struct addrinfo *res = NULL;

        const char *last = strrchr(host, '.');
        bool numeric_tld;

        /* letters, digits, '-' and '.' only */
        for (const char *p = host; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                      *p == '-' || *p == '.'))
                        return -EINVAL;
        if (*host == '-')
                return -EINVAL;
        /* no top-level domain is all digits: "256.1.1.1" and "1.2.3.4.5" are mistyped addresses, not
         * names to ask a resolver about */
        last = last ? last + 1 : host;
        numeric_tld = *last != '\0';
        for (const char *p = last; *p; p++)
                if (*p < '0' || *p > '9')
                        numeric_tld = false;
        if (numeric_tld)
                return -EINVAL;
        /* a number inet_pton() refused ("1.2.3", "0x7f.1") is a malformed address, not a name, though
         * getaddrinfo() would read it the inet_aton way */
        if (getaddrinfo(host, NULL, &hints, &res) == 0) {
                freeaddrinfo(res);
                return -EINVAL;
        }
        hints.ai_flags = AI_PASSIVE;
        for (size_t i = 0; i < ELEMENTSOF(families); i++) {
                hints.ai_family = families[i];
                res = NULL;
                if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
                        continue;
                if (res->ai_addrlen > sizeof *ret) {
                        freeaddrinfo(res);
                        return -EINVAL;
                }
                memset(ret, 0, sizeof *ret);
                memcpy(ret, res->ai_addr, res->ai_addrlen);
                if (families[i] == AF_INET)
                        ((struct sockaddr_in *)ret)->sin_port = htons(port);
                else
                        ((struct sockaddr_in6 *)ret)->sin6_port = htons(port);
                if (ret_len)
                        *ret_len = res->ai_addrlen;
                freeaddrinfo(res);
                return 0;
        }
        return -EINVAL;
}

int orch_split_host_port(const char *s, char *host, size_t host_size, uint16_t *ret_port)
{
        const char *colon = s ? strrchr(s, ':') : NULL, *h = s, *end = colon;
        uint32_t port;

        if (!colon || orch_parse_u32(colon + 1, &port) < 0 || port > 65535)
                return -EINVAL;
        /* [IPv6]:PORT: brackets around the whole host, colons only inside them */
        if (*h == '[') {
                if (end - h < 3 || end[-1] != ']')
                        return -EINVAL;
                h++;
                end--;
        }
        if (h == end || (size_t)(end - h) >= host_size)
                return -EINVAL;
        for (const char *p = h; p < end; p++)
                if ((unsigned char)*p <= ' ' || *p == 0x7f || *p == '[' || *p == ']' || (*p == ':' && *s != '['))
                        return -EINVAL;
        memcpy(host, h, (size_t)(end - h));
        host[end - h] = '\0';
        *ret_port = (uint16_t)port;
        return 0;
}

int orch_parse_listen(const char *s, struct sockaddr_storage *ret, socklen_t *ret_len)
{
        char host[256];
        uint16_t port;

        if (orch_split_host_port(s, host, sizeof host, &port) < 0)
                return -EINVAL;
        memset(ret, 0, sizeof *ret);
        if (*s == '[') {
                struct sockaddr_in6 *a = (struct sockaddr_in6 *)ret;
                a->sin6_family = AF_INET6;
                a->sin6_port = htons(port);
                if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1)
                        return -EINVAL;
                if (ret_len)
                        *ret_len = sizeof *a;
        } else {
                struct sockaddr_in *a = (struct sockaddr_in *)ret;
                a->sin_family = AF_INET;
                a->sin_port = htons(port);
                if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
                        return resolve_listen(host, port, ret, ret_len);
                if (ret_len)
                        *ret_len = sizeof *a;
        }
        return 0;
}
