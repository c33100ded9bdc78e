/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "apikeys.h"
#include "json.h"
#include "log.h"
#include "manifest.h"
#include "store.h"
#include "util.h"
#include "banned.h"

#define ID_BYTES   8  /* 16 hex characters */
#define KEY_BYTES  32 /* 256 bits, 64 hex characters after the prefix */
#define KEY_PREFIX "orch_"

struct watcher {
        struct orch_store *store;
        orch_apikeys_changed_fn fn;
        void *userdata;
};

/* The watchers of every store in the process. There is one store in orchd; the list keeps the module
 * free of any assumption about who serves keys. Main loop only. */
static struct watcher *watchers;
static size_t n_watchers;

int orch_apikeys_watch(struct orch_store *s, orch_apikeys_changed_fn fn, void *userdata)
{
        struct watcher *w = reallocarray(watchers, n_watchers + 1, sizeof *w);

        if (!w)
                return -ENOMEM;
        watchers = w;
        watchers[n_watchers++] = (struct watcher){s, fn, userdata};
        return 0;
}

void orch_apikeys_unwatch(struct orch_store *s, orch_apikeys_changed_fn fn, void *userdata)
{
        for (size_t i = 0; i < n_watchers; i++)
                if (watchers[i].store == s && watchers[i].fn == fn && watchers[i].userdata == userdata) {
                        memmove(&watchers[i], &watchers[i + 1], (n_watchers - i - 1) * sizeof *watchers);
                        if (--n_watchers == 0) {
                                free(watchers);
                                watchers = NULL;
                        }
                        return;
                }
}

static void notify(struct orch_store *s)
{
        for (size_t i = 0; i < n_watchers; i++)
                if (watchers[i].store == s)
                        watchers[i].fn(watchers[i].userdata);
}

int orch_apikey_digest(const char *key, size_t len, uint8_t ret[ORCH_APIKEY_DIGEST_LEN])
{
        unsigned n = 0;

        if (EVP_Digest(key, len, ret, &n, EVP_sha256(), NULL) != 1 || n != ORCH_APIKEY_DIGEST_LEN)
                return -EIO;
        return 0;
}

bool orch_apikey_match(const uint8_t (*keys)[ORCH_APIKEY_DIGEST_LEN], size_t n,
                       const uint8_t digest[ORCH_APIKEY_DIGEST_LEN])
{
        bool found = false;

        /* every key is compared, so the time says nothing about which one matched */
        for (size_t i = 0; i < n; i++)
                found |= CRYPTO_memcmp(keys[i], digest, ORCH_APIKEY_DIGEST_LEN) == 0;
        return found;
}

static void to_hex(const uint8_t *d, size_t n, char *out)
{
        static const char hex[] = "0123456789abcdef";

        for (size_t i = 0; i < n; i++) {
                out[2 * i] = hex[d[i] >> 4];
                out[2 * i + 1] = hex[d[i] & 15];
        }
        out[2 * n] = '\0';
}

static int from_hex(const char *s, uint8_t *out, size_t n)
{
        if (strlen(s) != 2 * n)
                return -EINVAL;
        for (size_t i = 0; i < 2 * n; i++) {
                char c = s[i];
                int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
                if (v < 0)
                        return -EINVAL;
                out[i / 2] = (uint8_t)(i % 2 ? (out[i / 2] | v) : v << 4);
        }
        return 0;
}

static bool name_valid(const char *name)
{
        size_t len = strlen(name);

        if (len == 0 || len > ORCH_APIKEY_NAME_MAX || orch_utf8_invalid_offset(name, len) >= 0)
                return false;
        for (const unsigned char *p = (const unsigned char *)name; *p; p++)
                if (*p < 0x20 || *p == 0x7f)
                        return false;
        return true;
}

static json_t *time_json(uint64_t ms)
{
        char buf[40];

        if (orch_format_time(ms, buf, sizeof buf) < 0)
                return json_null();
        return json_string(buf);
}

int orch_apikeys_create(struct orch_store *s, const char *service, const char *name, json_t **ret,
                        const char **ret_error)
{
        uint8_t raw[KEY_BYTES], digest[ORCH_APIKEY_DIGEST_LEN];
        char id[2 * ID_BYTES + 1], key[sizeof KEY_PREFIX + 2 * KEY_BYTES],
                hex[2 * ORCH_APIKEY_DIGEST_LEN + 1];
        char skey[sizeof ORCH_APIKEY_PREFIX + sizeof id];
        _cleanup_json_ json_t *rec = NULL;
        json_t *out;
        uint64_t now = orch_realtime_msec();
        int r;

        if (!service || !orch_service_name_valid(service)) {
                *ret_error = "service: expected a service name";
                return -EINVAL;
        }
        if (!name || !name_valid(name)) {
                *ret_error = "name: expected 1 to 128 characters of UTF-8 without control characters";
                return -EINVAL;
        }
        r = orch_random_hex(id, ID_BYTES);
        if (r >= 0)
                r = orch_random_bytes(raw, sizeof raw);
        if (r < 0)
                return r;
        memcpy(key, KEY_PREFIX, strlen(KEY_PREFIX));
        to_hex(raw, sizeof raw, key + strlen(KEY_PREFIX));
        explicit_bzero(raw, sizeof raw);
        r = orch_apikey_digest(key, strlen(key), digest);
        if (r < 0)
                return r;
        to_hex(digest, sizeof digest, hex);
        rec = json_pack("{s:s, s:s, s:s, s:s, s:I}", "id", id, "service", service, "name", name, "sha256",
                        hex, "created_at", (json_int_t)now);
        if (!rec)
                return -ENOMEM;
        orch_snprintf(skey, sizeof skey, ORCH_APIKEY_PREFIX "%s", id);
        {
                _cleanup_(freep) char *text = orch_json_dumps_canonical(rec);
                if (!text)
                        return -ENOMEM;
                r = orch_store_put_one(s, ORCH_STORE_META, skey, text, strlen(text));
        }
        if (r < 0)
                return r;
        out = json_pack("{s:s, s:s, s:s, s:s, s:o}", "id", id, "service", service, "name", name, "key", key,
                        "created_at", time_json(now));
        explicit_bzero(key, sizeof key);
        notify(s);
        if (!out)
                return -ENOMEM;
        *ret = out;
        return 0;
}

/* One stored record into k; -EINVAL when it is not one of ours. */
static int parse_record(const char *skey, const char *value, size_t len, struct orch_apikey *k)
{
        _cleanup_json_ json_t *j = json_loadb(value, len, 0, NULL);
        const char *id, *service, *name, *hex;
        uint64_t created = 0;

        if (!j || orch_json_get_string(j, "id", &id) < 0 ||
            orch_json_get_string(j, "service", &service) < 0 || orch_json_get_string(j, "name", &name) < 0 ||
            orch_json_get_string(j, "sha256", &hex) < 0 || !streq(skey + strlen(ORCH_APIKEY_PREFIX), id))
                return -EINVAL;
        orch_json_get_u64(j, "created_at", &created);
        *k = (struct orch_apikey){.created_at = created};
        if (from_hex(hex, k->digest, sizeof k->digest) < 0)
                return -EINVAL;
        k->id = strdup(id);
        k->service = strdup(service);
        k->name = strdup(name);
        if (!k->id || !k->service || !k->name) {
                free(k->id);
                free(k->service);
                free(k->name);
                return -ENOMEM;
        }
        return 0;
}

struct load_ctx {
        struct orch_apikey *keys;
        size_t n, cap;
};

static int load_one(const char *key, const char *value, size_t len, void *userdata)
{
        struct load_ctx *c = userdata;
        int r;

        if (c->n == c->cap) {
                size_t cap = c->cap ? c->cap * 2 : 8;
                struct orch_apikey *k = reallocarray(c->keys, cap, sizeof *k);
                if (!k)
                        return -ENOMEM;
                c->keys = k;
                c->cap = cap;
        }
        r = parse_record(key, value, len, &c->keys[c->n]);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                log_warn("ignoring the malformed API key record meta/%s", key);
                return 0;
        }
        c->n++;
        return 0;
}

int orch_apikeys_load(struct orch_store *s, struct orch_apikey **ret, size_t *ret_n)
{
        struct load_ctx c = {0};
        int r = orch_store_load(s, ORCH_STORE_META, ORCH_APIKEY_PREFIX, load_one, &c);

        if (r < 0) {
                orch_apikeys_free(c.keys, c.n);
                return r;
        }
        *ret = c.keys;
        *ret_n = c.n;
        return 0;
}

void orch_apikeys_free(struct orch_apikey *keys, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                free(keys[i].id);
                free(keys[i].service);
                free(keys[i].name);
        }
        free(keys);
}

static int key_cmp(const void *a, const void *b)
{
        const struct orch_apikey *x = a, *y = b;
        int r = strcmp(x->service, y->service);

        if (r == 0)
                r = strcmp(x->name, y->name);
        return r ? r : strcmp(x->id, y->id);
}

int orch_apikeys_list(struct orch_store *s, json_t **ret)
{
        struct orch_apikey *keys = NULL;
        size_t n = 0;
        json_t *arr;
        int r = orch_apikeys_load(s, &keys, &n);

        if (r < 0)
                return r;
        if (n > 0)
                qsort(keys, n, sizeof *keys, key_cmp);
        arr = json_array();
        for (size_t i = 0; arr && i < n; i++)
                if (json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:o}", "id", keys[i].id, "service",
                                                         keys[i].service, "name", keys[i].name, "created_at",
                                                         time_json(keys[i].created_at))) < 0) {
                        json_decref(arr);
                        arr = NULL;
                }
        orch_apikeys_free(keys, n);
        if (!arr)
                return -ENOMEM;
        *ret = arr;
        return 0;
}

int orch_apikeys_delete(struct orch_store *s, const char *id)
{
        _cleanup_(orch_store_tx_rollbackp) struct orch_store_tx *tx = NULL;
        char skey[ORCH_STORE_KEY_MAX];
        int r;

        if (!id || !*id || orch_snprintf(skey, sizeof skey, ORCH_APIKEY_PREFIX "%s", id) < 0)
                return -ENOENT;
        r = orch_store_begin(s, &tx);
        if (r < 0)
                return r;
        r = orch_store_delete(tx, ORCH_STORE_META, skey);
        if (r < 0)
                return r;
        r = orch_store_commit(TAKE_PTR(tx));
        if (r < 0)
                return r;
        notify(s);
        return 0;
}
