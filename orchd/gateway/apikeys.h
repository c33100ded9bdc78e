/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * API keys of gateway routes (`route.auth: api-key`). A key belongs to one
 * service and is shown once, when it is created; the store keeps only its
 * SHA-256 digest, in the `meta` collection under "apikey/<id>" (a JSON value:
 * id, service, name, sha256, created_at), so no schema change was needed and
 * a copy of the database reveals no usable key. The keys are 256 random bits,
 * so an unsalted fast hash is enough: there is nothing to guess.
 *
 * Everything here but orch_apikey_digest() and orch_apikey_match() runs on
 * orchd's main loop. Whoever serves keys (the gateway) watches the store for
 * changes made through these functions and republishes its key set.
 */

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define ORCH_APIKEY_DIGEST_LEN 32
#define ORCH_APIKEY_PREFIX     "apikey/"
/* A key name: 1 to 128 bytes of UTF-8 without control characters. */
#define ORCH_APIKEY_NAME_MAX 128

struct orch_store;

struct orch_apikey {
        char *id;
        char *service;
        char *name;
        uint64_t created_at; /* realtime ms */
        uint8_t digest[ORCH_APIKEY_DIGEST_LEN];
};

/* Creates a key for `service` and persists its digest. *ret: {"id", "service", "name", "key",
 * "created_at"}, the only place the key ever appears. -EINVAL for a bad service or key name (with
 * *ret_error set to a sentence), store errors as -errno. */
int orch_apikeys_create(struct orch_store *s, const char *service, const char *name, json_t **ret,
                        const char **ret_error);
/* Every key without its secret: [{"id", "service", "name", "created_at"}], by service, name and id. */
int orch_apikeys_list(struct orch_store *s, json_t **ret);
/* -ENOENT when there is no such key. */
int orch_apikeys_delete(struct orch_store *s, const char *id);

/* The stored keys (records that do not parse are skipped with a warning). */
int orch_apikeys_load(struct orch_store *s, struct orch_apikey **ret, size_t *ret_n);
void orch_apikeys_free(struct orch_apikey *keys, size_t n);

/* Called on the main loop after every successful create or delete on that store. */
typedef void (*orch_apikeys_changed_fn)(void *userdata);
int orch_apikeys_watch(struct orch_store *s, orch_apikeys_changed_fn fn, void *userdata);
void orch_apikeys_unwatch(struct orch_store *s, orch_apikeys_changed_fn fn, void *userdata);

/* SHA-256 of a presented key; thread-safe. */
int orch_apikey_digest(const char *key, size_t len, uint8_t ret[ORCH_APIKEY_DIGEST_LEN]);
/* Whether digest is one of keys; every comparison takes the same time whatever the bytes. */
bool orch_apikey_match(const uint8_t (*keys)[ORCH_APIKEY_DIGEST_LEN], size_t n,
                       const uint8_t digest[ORCH_APIKEY_DIGEST_LEN]);
