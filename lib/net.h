/* SPDX-License-Identifier: MIT */
#pragma once

/* Socket addresses as users write them in flags and configuration. */

#include <sys/socket.h>

/* "HOST:PORT" with a literal IPv4 address or a host name (resolved now, its first address: this
 * blocks, so it is for start-up), or "[IPV6]:PORT". Port 0 is allowed (the kernel picks one).
 * -EINVAL for anything else; *ret_len (optional) gets the address's length. */
int orch_parse_listen(const char *s, struct sockaddr_storage *ret, socklen_t *ret_len);
