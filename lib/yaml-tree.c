/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <inttypes.h>
#include <stdarg.h>

#include <yaml.h>

#include "util.h"
#include "yaml-tree.h"
#include "banned.h"

#define YAML_TAG_PREFIX "tag:yaml.org,2002:"

struct frame {
        struct orch_ynode *node;
        char *anchor; /* registered when the collection ends: an alias inside it cannot refer to it */
        size_t cap;
};

struct anchor {
        char *name;
        struct orch_ynode *node;
};

struct builder {
        struct orch_ytree *tree;
        const char *name;
        struct orch_diags *diags;
        struct frame stack[ORCH_YTREE_MAX_DEPTH];
        size_t depth;
        struct anchor anchors[ORCH_YTREE_MAX_ANCHORS];
        size_t n_anchors;
        struct orch_ydoc doc;
};

static uint64_t add_sat(uint64_t a, uint64_t b)
{
        return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

void orch_ytree_offset_position(const char *buf, size_t len, size_t offset, unsigned *ret_line,
                                unsigned *ret_column)
{
        unsigned line = 1, column = 1;

        for (size_t i = 0; i < offset && i < len; i++) {
                unsigned char c = (unsigned char)buf[i];
                if (c == '\n' || (c == '\r' && (i + 1 >= len || buf[i + 1] != '\n'))) {
                        line++;
                        column = 1;
                } else if ((c & 0xc0) != 0x80) /* count characters, not continuation bytes */
                        column++;
        }
        *ret_line = line;
        *ret_column = column;
}

const char *orch_ynode_describe(const struct orch_ynode *n)
{
        static const char *const kinds[_ORCH_YSCALAR_KIND_MAX] = {
                [ORCH_YSCALAR_STRING] = "a string", [ORCH_YSCALAR_NULL] = "null",
                [ORCH_YSCALAR_BOOL] = "a boolean",  [ORCH_YSCALAR_INT] = "an integer",
                [ORCH_YSCALAR_FLOAT] = "a number",
        };

        if (n->type == ORCH_YNODE_SEQUENCE)
                return "a list";
        if (n->type == ORCH_YNODE_MAPPING)
                return "a mapping";
        return kinds[n->kind];
}

struct orch_ytree *orch_ytree_free(struct orch_ytree *t)
{
        if (!t)
                return NULL;
        for (size_t i = 0; i < t->n_nodes; i++) {
                free(t->nodes[i]->value);
                free(t->nodes[i]->items);
                free(t->nodes[i]);
        }
        free(t->nodes);
        free(t->docs);
        free(t);
        return NULL;
}

/* Every node is created here, counted against the expansion budget once. */
static int node_new(struct orch_ytree *t, enum orch_ynode_type type, unsigned line, unsigned column,
                    struct orch_ynode **ret)
{
        struct orch_ynode *n;

        if (t->expanded >= ORCH_YTREE_MAX_NODES)
                return -E2BIG;
        if (t->n_nodes == t->cap_nodes) {
                size_t cap = t->cap_nodes ? t->cap_nodes * 2 : 64;
                struct orch_ynode **nn = realloc(t->nodes, cap * sizeof *nn);
                if (!nn)
                        return -ENOMEM;
                t->nodes = nn;
                t->cap_nodes = cap;
        }
        n = calloc(1, sizeof *n);
        if (!n)
                return -ENOMEM;
        n->type = type;
        n->line = line;
        n->column = column;
        n->expanded = 1;
        t->nodes[t->n_nodes++] = n;
        t->expanded++;
        *ret = n;
        return 0;
}

static int items_push(struct orch_ynode *parent, size_t *cap, struct orch_ynode *child)
{
        if (parent->n_items == *cap) {
                size_t c = *cap ? *cap * 2 : 4;
                struct orch_ynode **n = realloc(parent->items, c * sizeof *n);
                if (!n)
                        return -ENOMEM;
                parent->items = n;
                *cap = c;
        }
        parent->items[parent->n_items++] = child;
        return 0;
}

static int append_doc(struct orch_ytree *t, const struct orch_ydoc *d)
{
        struct orch_ydoc *n = realloc(t->docs, (t->n_docs + 1) * sizeof *n);

        if (!n)
                return -ENOMEM;
        t->docs = n;
        t->docs[t->n_docs++] = *d;
        return 0;
}

static bool all_of(const char *s, const char *set)
{
        if (!*s)
                return false;
        for (; *s; s++)
                if (!strchr(set, *s))
                        return false;
        return true;
}

static bool is_int(const char *s)
{
        const char *hex = startswith(s, "0x"), *oct = startswith(s, "0o");

        if (hex)
                return all_of(hex, "0123456789abcdefABCDEF");
        if (oct)
                return all_of(oct, "01234567");
        if (*s == '-' || *s == '+')
                s++;
        return all_of(s, "0123456789");
}

/* [-+]? ( \.[0-9]+ | [0-9]+ ( \.[0-9]* )? ) ( [eE] [-+]? [0-9]+ )? or the infinities and NaN. */
static bool is_float(const char *s)
{
        static const char *const special[] = {".inf",  ".Inf",  ".INF",  "-.inf", "-.Inf", "-.INF",
                                              "+.inf", "+.Inf", "+.INF", ".nan",  ".NaN",  ".NAN"};
        bool digits = false;

        for (size_t i = 0; i < ELEMENTSOF(special); i++)
                if (streq(s, special[i]))
                        return true;
        if (*s == '-' || *s == '+')
                s++;
        while (*s >= '0' && *s <= '9') {
                s++;
                digits = true;
        }
        if (*s == '.') {
                s++;
                while (*s >= '0' && *s <= '9') {
                        s++;
                        digits = true;
                }
        }
        if (!digits)
                return false;
        if (*s == 'e' || *s == 'E') {
                s++;
                if (*s == '-' || *s == '+')
                        s++;
                return all_of(s, "0123456789");
        }
        return *s == '\0';
}

/* The YAML 1.2 core schema: "yes", "on" and "0777"-as-octal are YAML 1.1 surprises we avoid. */
static enum orch_yscalar_kind resolve_plain(const char *s)
{
        static const char *const nulls[] = {"", "~", "null", "Null", "NULL"};
        static const char *const bools[] = {"true", "True", "TRUE", "false", "False", "FALSE"};

        for (size_t i = 0; i < ELEMENTSOF(nulls); i++)
                if (streq(s, nulls[i]))
                        return ORCH_YSCALAR_NULL;
        for (size_t i = 0; i < ELEMENTSOF(bools); i++)
                if (streq(s, bools[i]))
                        return ORCH_YSCALAR_BOOL;
        if (is_int(s))
                return ORCH_YSCALAR_INT;
        if (is_float(s))
                return ORCH_YSCALAR_FLOAT;
        return ORCH_YSCALAR_STRING;
}

/* -EOPNOTSUPP for a tag we do not know, -EINVAL for a value its standard tag does not fit. */
static int resolve_scalar(const char *tag, bool plain, const char *s, enum orch_yscalar_kind *ret)
{
        static const struct {
                const char *tag;
                enum orch_yscalar_kind kind;
        } tags[] = {
                {"str", ORCH_YSCALAR_STRING}, {"null", ORCH_YSCALAR_NULL},   {"bool", ORCH_YSCALAR_BOOL},
                {"int", ORCH_YSCALAR_INT},    {"float", ORCH_YSCALAR_FLOAT},
        };
        const char *short_tag;
        enum orch_yscalar_kind k;

        if (!tag) {
                *ret = plain ? resolve_plain(s) : ORCH_YSCALAR_STRING;
                return 0;
        }
        if (streq(tag, "!")) {
                *ret = ORCH_YSCALAR_STRING;
                return 0;
        }
        short_tag = startswith(tag, YAML_TAG_PREFIX);
        if (!short_tag)
                return -EOPNOTSUPP;
        for (size_t i = 0; i < ELEMENTSOF(tags); i++) {
                if (!streq(short_tag, tags[i].tag))
                        continue;
                if (tags[i].kind == ORCH_YSCALAR_STRING) {
                        *ret = ORCH_YSCALAR_STRING;
                        return 0;
                }
                k = resolve_plain(s);
                if (k == tags[i].kind || (tags[i].kind == ORCH_YSCALAR_FLOAT && k == ORCH_YSCALAR_INT)) {
                        *ret = tags[i].kind;
                        return 0;
                }
                return -EINVAL;
        }
        return -EOPNOTSUPP;
}

static bool collection_tag_ok(const char *tag, const char *expected)
{
        const char *short_tag;

        if (!tag || streq(tag, "!"))
                return true;
        short_tag = startswith(tag, YAML_TAG_PREFIX);
        return short_tag && streq(short_tag, expected);
}

const char *orch_ytree_shorten(const char *s, char buf[static ORCH_YTREE_SHORT])
{
        size_t n = strlen(s);

        orch_strlcpy(buf, s, n < ORCH_YTREE_SHORT ? ORCH_YTREE_SHORT : ORCH_YTREE_SHORT - 7);
        /* one message, one line: control characters (a newline in a key) become '?' */
        for (char *p = buf; *p; p++)
                if ((unsigned char)*p < 0x20 || *p == 0x7f)
                        *p = '?';
        if (n < ORCH_YTREE_SHORT)
                return buf;
        /* do not end in the middle of a UTF-8 sequence */
        for (size_t l = strlen(buf); l > 0 && ((unsigned char)buf[l - 1] & 0x80); l--) {
                bool lead = ((unsigned char)buf[l - 1] & 0xc0) == 0xc0;
                buf[l - 1] = '\0';
                if (lead)
                        break;
        }
        memcpy(buf + strlen(buf), "...", 4);
        return buf;
}

_printf_(4, 5) static int bad(struct builder *b, const yaml_mark_t *m, int r, const char *fmt, ...)
{
        struct orch_buf msg = {0};
        va_list ap;

        va_start(ap, fmt);
        orch_buf_vprintf(&msg, fmt, ap);
        va_end(ap);
        orch_diags_add(b->diags, b->name, (unsigned)m->line + 1, (unsigned)m->column + 1, "%s",
                       msg.oom ? "out of memory" : strempty(msg.data));
        orch_buf_release(&msg);
        return r;
}

static int too_many(struct builder *b, const yaml_mark_t *m)
{
        return bad(b, m, -EINVAL, "the input has too many nodes (the limit is %u)", ORCH_YTREE_MAX_NODES);
}

static int register_anchor(struct builder *b, const yaml_mark_t *m, char *name, struct orch_ynode *node)
{
        /* A later anchor of the same name replaces the earlier one (YAML 1.2 §3.2.2.2). */
        for (size_t i = b->n_anchors; i > 0; i--)
                if (streq(b->anchors[i - 1].name, name)) {
                        free(b->anchors[i - 1].name);
                        b->anchors[i - 1] = (struct anchor){name, node};
                        return 0;
                }
        if (b->n_anchors == ORCH_YTREE_MAX_ANCHORS) {
                free(name);
                return bad(b, m, -EINVAL, "too many anchors in one document (the limit is %u)",
                           ORCH_YTREE_MAX_ANCHORS);
        }
        b->anchors[b->n_anchors++] = (struct anchor){name, node};
        return 0;
}

static void clear_anchors(struct builder *b)
{
        for (size_t i = 0; i < b->n_anchors; i++)
                free(b->anchors[i].name);
        b->n_anchors = 0;
}

/* Attaches a finished node (new or aliased) to the open collection, or makes it the root. */
static int attach(struct builder *b, const yaml_mark_t *m, struct orch_ynode *n)
{
        struct frame *f;

        if (b->depth == 0) {
                b->doc.root = n;
                return 0;
        }
        f = &b->stack[b->depth - 1];
        if (f->node->type == ORCH_YNODE_MAPPING && f->node->n_items % 2 == 0 && n->type != ORCH_YNODE_SCALAR)
                return bad(b, m, -EINVAL, "a mapping key must be a plain value, not %s",
                           orch_ynode_describe(n));
        return items_push(f->node, &f->cap, n);
}

static int on_scalar(struct builder *b, const yaml_event_t *e)
{
        const char *tag = (const char *)e->data.scalar.tag;
        const char *value = (const char *)e->data.scalar.value;
        bool plain = e->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        struct orch_ynode *n;
        enum orch_yscalar_kind kind;
        char s[ORCH_YTREE_SHORT];
        int r;

        /* A double-quoted "\0" escape is the only way a NUL gets past the input check. */
        if (strlen(value) != e->data.scalar.length)
                return bad(b, &e->start_mark, -EINVAL, "a NUL character (\\0) is not allowed in a value");
        r = resolve_scalar(tag, plain, value, &kind);
        if (r == -EOPNOTSUPP)
                return bad(b, &e->start_mark, -EINVAL, "unsupported tag '%s'", orch_ytree_shorten(tag, s));
        if (r < 0)
                return bad(b, &e->start_mark, -EINVAL, "'%s' is not a valid value for the tag '%s'",
                           orch_ytree_shorten(value, s), tag);
        r = node_new(b->tree, ORCH_YNODE_SCALAR, (unsigned)e->start_mark.line + 1,
                     (unsigned)e->start_mark.column + 1, &n);
        if (r < 0)
                return r == -E2BIG ? too_many(b, &e->start_mark) : r;
        n->kind = kind;
        n->value = strdup(value);
        if (!n->value)
                return -ENOMEM;
        if (e->data.scalar.anchor) {
                char *a = strdup((const char *)e->data.scalar.anchor);
                if (!a)
                        return -ENOMEM;
                r = register_anchor(b, &e->start_mark, a, n);
                if (r < 0)
                        return r;
        }
        return attach(b, &e->start_mark, n);
}

static int on_collection_start(struct builder *b, const yaml_event_t *e, enum orch_ynode_type type)
{
        bool mapping = type == ORCH_YNODE_MAPPING;
        const yaml_char_t *tag = mapping ? e->data.mapping_start.tag : e->data.sequence_start.tag;
        const yaml_char_t *anchor = mapping ? e->data.mapping_start.anchor : e->data.sequence_start.anchor;
        struct orch_ynode *n;
        char s[ORCH_YTREE_SHORT];
        char *a = NULL;
        int r;

        if (!collection_tag_ok((const char *)tag, mapping ? "map" : "seq"))
                return bad(b, &e->start_mark, -EINVAL, "unsupported tag '%s'",
                           orch_ytree_shorten((const char *)tag, s));
        if (b->depth == ORCH_YTREE_MAX_DEPTH)
                return bad(b, &e->start_mark, -EINVAL, "nested too deeply (the limit is %u levels)",
                           ORCH_YTREE_MAX_DEPTH);
        r = node_new(b->tree, type, (unsigned)e->start_mark.line + 1, (unsigned)e->start_mark.column + 1,
                     &n);
        if (r < 0)
                return r == -E2BIG ? too_many(b, &e->start_mark) : r;
        if (anchor && !(a = strdup((const char *)anchor)))
                return -ENOMEM;
        b->stack[b->depth++] = (struct frame){.node = n, .anchor = a};
        return 0;
}

static int on_collection_end(struct builder *b, const yaml_event_t *e)
{
        struct frame f = b->stack[--b->depth];
        yaml_mark_t start = {.line = f.node->line - 1, .column = f.node->column - 1};
        int r;

        for (size_t i = 0; i < f.node->n_items; i++)
                f.node->expanded = add_sat(f.node->expanded, f.node->items[i]->expanded);
        if (f.anchor) {
                r = register_anchor(b, &start, f.anchor, f.node);
                if (r < 0)
                        return r;
        }
        return attach(b, &start, f.node);
}

static int on_alias(struct builder *b, const yaml_event_t *e)
{
        const char *name = (const char *)e->data.alias.anchor;
        struct orch_ynode *target = NULL;
        char s[ORCH_YTREE_SHORT];

        for (size_t i = b->n_anchors; i > 0 && !target; i--)
                if (streq(b->anchors[i - 1].name, name))
                        target = b->anchors[i - 1].node;
        if (!target)
                return bad(b, &e->start_mark, -EINVAL, "unknown anchor '%s'", orch_ytree_shorten(name, s));
        /* The alias is not copied, but walking the tree costs as much as the copy would:
         * count it, so nested aliases ("billion laughs") stop here, early and cheaply. */
        if (target->expanded > ORCH_YTREE_MAX_NODES - MIN(b->tree->expanded, (uint64_t)ORCH_YTREE_MAX_NODES))
                return bad(b, &e->start_mark, -EINVAL,
                           "alias '%s' expands the document beyond %u nodes (is it a \"billion laughs\"?)",
                           orch_ytree_shorten(name, s), ORCH_YTREE_MAX_NODES);
        b->tree->expanded += target->expanded;
        return attach(b, &e->start_mark, target);
}

static int on_event(struct builder *b, const yaml_event_t *e)
{
        switch (e->type) {
        case YAML_DOCUMENT_START_EVENT:
                clear_anchors(b);
                b->doc = (struct orch_ydoc){
                        .line = (unsigned)e->start_mark.line + 1,
                        .column = (unsigned)e->start_mark.column + 1,
                };
                return 0;
        case YAML_DOCUMENT_END_EVENT:
                return append_doc(b->tree, &b->doc);
        case YAML_SCALAR_EVENT:
                return on_scalar(b, e);
        case YAML_SEQUENCE_START_EVENT:
                return on_collection_start(b, e, ORCH_YNODE_SEQUENCE);
        case YAML_MAPPING_START_EVENT:
                return on_collection_start(b, e, ORCH_YNODE_MAPPING);
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
                return on_collection_end(b, e);
        case YAML_ALIAS_EVENT:
                return on_alias(b, e);
        default:
                return 0;
        }
}

static int syntax_error(struct builder *b, const yaml_parser_t *p, const char *buf, size_t len)
{
        unsigned line, column;

        if (p->error == YAML_MEMORY_ERROR)
                return -ENOMEM;
        if (p->error == YAML_READER_ERROR) {
                orch_ytree_offset_position(buf, len, p->problem_offset, &line, &column);
                orch_diags_add(b->diags, b->name, line, column, "%s", strna(p->problem));
                return -EINVAL;
        }
        if (p->context)
                orch_diags_add(b->diags, b->name, (unsigned)p->problem_mark.line + 1,
                               (unsigned)p->problem_mark.column + 1, "syntax error: %s (%s at %u:%u)",
                               strna(p->problem), p->context, (unsigned)p->context_mark.line + 1,
                               (unsigned)p->context_mark.column + 1);
        else
                orch_diags_add(b->diags, b->name, (unsigned)p->problem_mark.line + 1,
                               (unsigned)p->problem_mark.column + 1, "syntax error: %s", strna(p->problem));
        return -EINVAL;
}

static void builder_release(struct builder *b)
{
        clear_anchors(b);
        while (b->depth > 0)
                free(b->stack[--b->depth].anchor);
}

int orch_ytree_parse(const char *name, const char *buf, size_t len, struct orch_ytree **ret,
                     struct orch_diags *diags)
{
        _cleanup_(orch_ytree_freep) struct orch_ytree *t = calloc(1, sizeof *t);
        struct builder b = {.tree = t, .name = name, .diags = diags};
        ssize_t bad_at;
        yaml_parser_t parser;
        bool done = false;
        int r = 0;

        if (!t)
                return -ENOMEM;
        /* The encoding is set below (UTF-16 input would otherwise be converted by guess), and that
         * turns off libyaml's own byte-order-mark handling: a Windows editor's BOM is skipped here. */
        if (len >= 3 && memcmp(buf, "\xef\xbb\xbf", 3) == 0) {
                buf += 3;
                len -= 3;
        }
        /* libyaml would stop at a NUL or bad UTF-8 too, but with a message about "control
         * characters" or "octets": say plainly what is wrong, where. */
        bad_at = orch_utf8_invalid_offset(buf, len);
        if (bad_at >= 0) {
                unsigned line, column;
                orch_ytree_offset_position(buf, len, (size_t)bad_at, &line, &column);
                if (buf[bad_at] == '\0')
                        orch_diags_add(diags, name, line, column, "NUL byte in the input");
                else
                        orch_diags_add(diags, name, line, column, "invalid UTF-8 (byte 0x%02x)",
                                       (unsigned char)buf[bad_at]);
                return -EINVAL;
        }
        if (!yaml_parser_initialize(&parser))
                return -ENOMEM;
        yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
        yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING);
        while (!done && r >= 0) {
                yaml_event_t e;

                if (!yaml_parser_parse(&parser, &e)) {
                        r = syntax_error(&b, &parser, buf, len);
                        break;
                }
                done = e.type == YAML_STREAM_END_EVENT;
                r = on_event(&b, &e);
                yaml_event_delete(&e);
        }
        yaml_parser_delete(&parser);
        builder_release(&b);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(t);
        return 0;
}

struct json_builder {
        struct orch_ytree *tree;
        const char *name;
        struct orch_diags *diags;
};

/* The shortest decimal that reads back as the same double: "0.5", not "0.50000000000000000". */
static int format_real(double d, char *buf, size_t size)
{
        for (int prec = 1; prec <= 17; prec++) {
                if (orch_snprintf(buf, size, "%.*g", prec, d) < 0)
                        return -ENOBUFS;
                if (strtod(buf, NULL) == d)
                        return 0;
        }
        return 0;
}

static int json_bad(struct json_builder *b, const char *path, const char *what)
{
        orch_diags_add(b->diags, b->name, 0, 0, "%s%s%s", path, *path ? ": " : "", what);
        return -EINVAL;
}

static int json_node(struct json_builder *b, const json_t *j, const char *path, unsigned depth,
                     struct orch_ynode **ret)
{
        struct orch_ynode *n;
        char text[64];
        int r;

        if (depth >= ORCH_YTREE_MAX_DEPTH)
                return json_bad(b, path, "nested too deeply");
        r = node_new(b->tree,
                     json_is_object(j)  ? ORCH_YNODE_MAPPING
                     : json_is_array(j) ? ORCH_YNODE_SEQUENCE
                                        : ORCH_YNODE_SCALAR,
                     0, 0, &n);
        if (r == -E2BIG)
                return json_bad(b, path, "too many nodes");
        if (r < 0)
                return r;

        switch (json_typeof(j)) {
        case JSON_OBJECT: {
                const char *key;
                size_t key_len, cap = 0;
                json_t *v;

                json_object_keylen_foreach((json_t *)j, key, key_len, v)
                {
                        _cleanup_(freep) char *sub = NULL;
                        struct orch_ynode *k, *child;
                        char s[ORCH_YTREE_SHORT];

                        if (strlen(key) != key_len)
                                return json_bad(b, path, "a key holds a NUL character");
                        sub = orch_strdup_printf("%s%s%s", path, *path ? "." : "",
                                                 orch_ytree_shorten(key, s));
                        if (!sub)
                                return -ENOMEM;
                        r = node_new(b->tree, ORCH_YNODE_SCALAR, 0, 0, &k);
                        if (r == -E2BIG)
                                return json_bad(b, path, "too many nodes");
                        if (r < 0)
                                return r;
                        k->value = strdup(key);
                        if (!k->value)
                                return -ENOMEM;
                        r = json_node(b, v, sub, depth + 1, &child);
                        if (r < 0)
                                return r;
                        if (items_push(n, &cap, k) < 0 || items_push(n, &cap, child) < 0)
                                return -ENOMEM;
                        n->expanded = add_sat(n->expanded, 1 + child->expanded);
                }
                break;
        }
        case JSON_ARRAY: {
                size_t i, cap = 0;
                json_t *v;

                json_array_foreach (j, i, v) {
                        _cleanup_(freep) char *sub = orch_strdup_printf("%s[%zu]", path, i);
                        struct orch_ynode *child;

                        if (!sub)
                                return -ENOMEM;
                        r = json_node(b, v, sub, depth + 1, &child);
                        if (r < 0)
                                return r;
                        if (items_push(n, &cap, child) < 0)
                                return -ENOMEM;
                        n->expanded = add_sat(n->expanded, child->expanded);
                }
                break;
        }
        case JSON_STRING:
                if (strlen(json_string_value(j)) != json_string_length(j))
                        return json_bad(b, path, "a NUL character (\\u0000) is not allowed in a value");
                n->kind = ORCH_YSCALAR_STRING;
                n->value = strdup(json_string_value(j));
                break;
        case JSON_INTEGER:
                n->kind = ORCH_YSCALAR_INT;
                n->value = orch_strdup_printf("%" JSON_INTEGER_FORMAT, json_integer_value(j));
                break;
        case JSON_REAL:
                n->kind = ORCH_YSCALAR_FLOAT;
                if (format_real(json_real_value(j), text, sizeof text) < 0)
                        return -ENOBUFS;
                n->value = strdup(text);
                break;
        case JSON_TRUE:
        case JSON_FALSE:
                n->kind = ORCH_YSCALAR_BOOL;
                n->value = strdup(json_is_true(j) ? "true" : "false");
                break;
        case JSON_NULL:
                n->kind = ORCH_YSCALAR_NULL;
                n->value = strdup("null");
                break;
        }
        if (n->type == ORCH_YNODE_SCALAR && !n->value)
                return -ENOMEM;
        *ret = n;
        return 0;
}

int orch_ytree_from_json(const char *name, const json_t *j, struct orch_ytree **ret,
                         struct orch_diags *diags)
{
        _cleanup_(orch_ytree_freep) struct orch_ytree *t = calloc(1, sizeof *t);
        struct json_builder b = {.tree = t, .name = name, .diags = diags};
        struct orch_ydoc doc = {0};
        int r;

        if (!t)
                return -ENOMEM;
        if (!j)
                return -EINVAL;
        r = json_node(&b, j, "", 0, &doc.root);
        if (r < 0)
                return r;
        r = append_doc(t, &doc);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(t);
        return 0;
}
