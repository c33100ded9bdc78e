/* SPDX-License-Identifier: MIT */
#pragma once

/* Socket addresses as users write them in flags and configuration. */

#include <sys/socket.h>

/* "HOST:PORT" with a literal IPv4 address or a host name (resolved now, its first address: this
 * blocks, so it is for start-up), or "[IPV6]:PORT". Port 0 is allowed (the kernel picks one).
 * -EINVAL for anything else; *ret_len (optional) gets the address's length. */
int orch_parse_listen(const char *s, struct sockaddr_storage *ret, socklen_t *ret_len);
/* "HOST:PORT" or "[HOST]:PORT" split, without looking the host up: HOST (without brackets, at most
 * host_size - 1 bytes) and a port from 0 to 65535. Colons only inside brackets, no white space or
 * control bytes. -EINVAL for anything else. */
int orch_split_host_port(const char *s, char *host, size_t host_size, uint16_t *ret_port);
