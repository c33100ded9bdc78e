/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * A positioned node tree: what the manifest validator reads. YAML (through
 * libyaml's event parser) and JSON values (jansson) both become this tree, so
 * one validator checks files, API bodies and protocol frames alike.
 *
 * Plain YAML scalars are resolved with the YAML 1.2 core schema (null, true,
 * false, decimal integers, floats; "yes" and "no" stay strings), quoted and
 * block scalars are strings. Aliases are not copied: an alias points at the
 * node of its anchor, and the tree counts how many nodes the expansion would
 * have, so a "billion laughs" document is rejected after a bounded amount of
 * work and memory.
 */

#include <stdint.h>

#include <jansson.h>

#include "diag.h"
#include "macro.h"

/* Hostile-input bounds of one buffer (every document in it together). */
#define ORCH_YTREE_MAX_NODES   200000u /* nodes counted as if every alias were expanded */
#define ORCH_YTREE_MAX_DEPTH   64u     /* nesting of sequences and mappings */
#define ORCH_YTREE_MAX_ANCHORS 256u    /* per document */

enum orch_ynode_type {
        ORCH_YNODE_SCALAR,
        ORCH_YNODE_SEQUENCE,
        ORCH_YNODE_MAPPING,
        _ORCH_YNODE_TYPE_MAX,
};

enum orch_yscalar_kind {
        ORCH_YSCALAR_STRING,
        ORCH_YSCALAR_NULL,
        ORCH_YSCALAR_BOOL,
        ORCH_YSCALAR_INT,
        ORCH_YSCALAR_FLOAT,
        _ORCH_YSCALAR_KIND_MAX,
};

struct orch_ynode {
        enum orch_ynode_type type;
        enum orch_yscalar_kind kind; /* scalars only */
        unsigned line, column;       /* 1-based; 0 when the node did not come from text */
        char *value;                 /* scalars: the text, NUL-terminated and free of NUL bytes */
        /* Sequences: the items. Mappings: key/value pairs, items[2i] the key (always a scalar)
         * and items[2i+1] its value, in document order; duplicate keys are kept (the validator
         * reports them). Nodes are owned by the tree; an alias is a second pointer to a node. */
        struct orch_ynode **items;
        size_t n_items;
        uint64_t expanded; /* nodes in this subtree with aliases expanded (saturating) */
};

struct orch_ydoc {
        struct orch_ynode *root; /* NULL for an empty document */
        unsigned line, column;   /* where the document starts */
};

struct orch_ytree {
        struct orch_ydoc *docs;
        size_t n_docs;
        struct orch_ynode **nodes; /* every node, for freeing */
        size_t n_nodes, cap_nodes;
        uint64_t expanded; /* of the whole buffer */
};

/* Parses every document of a YAML (or JSON) buffer. On malformed or hostile input adds one
 * diagnostic naming the position (`name` is the file name) and returns -EINVAL; -ENOMEM on
 * allocation failure. The buffer may hold anything: NUL bytes and invalid UTF-8 are errors. */
int orch_ytree_parse(const char *name, const char *buf, size_t len, struct orch_ytree **ret,
                     struct orch_diags *diags);

/* Converts one JSON value into a tree of one document (positions 0). Strings with NUL bytes,
 * too deep or too large values are errors reported in `diags` (-EINVAL). */
int orch_ytree_from_json(const char *name, const json_t *j, struct orch_ytree **ret,
                         struct orch_diags *diags);

struct orch_ytree *orch_ytree_free(struct orch_ytree *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct orch_ytree *, orch_ytree_free)

/* The 1-based line and column (in characters) of byte `offset` of a UTF-8 buffer. */
void orch_ytree_offset_position(const char *buf, size_t len, size_t offset, unsigned *ret_line,
                                unsigned *ret_column);

/* A bounded copy of user text for messages (hostile input must not flood them): at most
 * ORCH_YTREE_SHORT - 1 bytes, cut on a character boundary and ending in "..." when cut. */
#define ORCH_YTREE_SHORT 48
const char *orch_ytree_shorten(const char *s, char buf[static ORCH_YTREE_SHORT]);

/* "a string", "an integer", "a list", ...: for "expected X, got Y" messages. */
const char *orch_ynode_describe(const struct orch_ynode *n);
