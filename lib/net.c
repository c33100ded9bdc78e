/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include "macro.h"
#include "net.h"
#include "util.h"
#include "banned.h"

int orch_parse_listen(const char *s, struct sockaddr_storage *ret, socklen_t *ret_len)
{
        char host[INET6_ADDRSTRLEN + 1];
        const char *colon, *h = s;
        bool v6;
        size_t hlen;
        uint32_t port;

        if (!s)
                return -EINVAL;
        v6 = *s == '[';
        if (v6) {
                const char *end = strchr(s, ']');
                if (!end || end[1] != ':')
                        return -EINVAL;
                h = s + 1;
                hlen = (size_t)(end - h);
                colon = end + 1;
        } else {
                colon = strrchr(s, ':');
                if (!colon)
                        return -EINVAL;
                hlen = (size_t)(colon - s);
        }
        if (hlen == 0 || hlen >= sizeof host)
                return -EINVAL;
        memcpy(host, h, hlen);
        host[hlen] = '\0';
        if (orch_parse_u32(colon + 1, &port) < 0 || port > 65535)
                return -EINVAL;
        memset(ret, 0, sizeof *ret);
        if (v6) {
                struct sockaddr_in6 *a = (struct sockaddr_in6 *)ret;
                a->sin6_family = AF_INET6;
                a->sin6_port = htons((uint16_t)port);
                if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1)
                        return -EINVAL;
                if (ret_len)
                        *ret_len = sizeof *a;
        } else {
                struct sockaddr_in *a = (struct sockaddr_in *)ret;
                a->sin_family = AF_INET;
                a->sin_port = htons((uint16_t)port);
                if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
                        return -EINVAL;
                if (ret_len)
                        *ret_len = sizeof *a;
        }
        return 0;
}
