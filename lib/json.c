/* SPDX-License-Identifier: MIT */
#include "config.h"

#include "json.h"
#include "banned.h"

char *orch_json_dumps_canonical(const json_t *j)
{
        return json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
}

char *orch_json_dumps_compact(const json_t *j)
{
        return json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
}

static const json_t *get(const json_t *obj, const char *key)
{
        const json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
        return json_is_null(v) ? NULL : v;
}

int orch_json_get_string(const json_t *obj, const char *key, const char **ret)
{
        const json_t *v = get(obj, key);
        if (!v)
                return -ENOENT;
        if (!json_is_string(v))
                return -EINVAL;
        *ret = json_string_value(v);
        return 0;
}

int orch_json_get_i64(const json_t *obj, const char *key, int64_t *ret)
{
        const json_t *v = get(obj, key);
        if (!v)
                return -ENOENT;
        if (!json_is_integer(v))
                return -EINVAL;
        *ret = (int64_t)json_integer_value(v);
        return 0;
}

int orch_json_get_u64(const json_t *obj, const char *key, uint64_t *ret)
{
        int64_t v;
        int r = orch_json_get_i64(obj, key, &v);
        if (r < 0)
                return r;
        if (v < 0)
                return -EINVAL;
        *ret = (uint64_t)v;
        return 0;
}

int orch_json_get_u32(const json_t *obj, const char *key, uint32_t *ret)
{
        uint64_t v;
        int r = orch_json_get_u64(obj, key, &v);
        if (r < 0)
                return r;
        if (v > UINT32_MAX)
                return -EINVAL;
        *ret = (uint32_t)v;
        return 0;
}

int orch_json_get_bool(const json_t *obj, const char *key, bool *ret)
{
        const json_t *v = get(obj, key);
        if (!v)
                return -ENOENT;
        if (!json_is_boolean(v))
                return -EINVAL;
        *ret = json_is_true(v);
        return 0;
}

int orch_json_get_object(const json_t *obj, const char *key, json_t **ret)
{
        const json_t *v = get(obj, key);
        if (!v)
                return -ENOENT;
        if (!json_is_object(v))
                return -EINVAL;
        *ret = (json_t *)v;
        return 0;
}

int orch_json_get_array(const json_t *obj, const char *key, json_t **ret)
{
        const json_t *v = get(obj, key);
        if (!v)
                return -ENOENT;
        if (!json_is_array(v))
                return -EINVAL;
        *ret = (json_t *)v;
        return 0;
}

int orch_json_set_string(json_t *obj, const char *key, const char *value)
{
        return json_object_set_new(obj, key, json_string(value)) < 0 ? -ENOMEM : 0;
}

int orch_json_set_u64(json_t *obj, const char *key, uint64_t value)
{
        return json_object_set_new(obj, key, json_integer((json_int_t)value)) < 0 ? -ENOMEM : 0;
}
