/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Intrusive circular doubly linked lists (as the kernel's list_head): the link lives inside the
 * object, so an object can sit on several lists (an instance on its service's and its node's)
 * without allocations, and unlinks in O(1).
 */

#include "macro.h"

struct orch_list {
        struct orch_list *next, *prev;
};

#define ORCH_LIST_INIT(name) {&(name), &(name)}

static inline void orch_list_init(struct orch_list *l)
{
        l->next = l->prev = l;
}

static inline bool orch_list_empty(const struct orch_list *l)
{
        return l->next == l;
}

/* A link that is not on any list (initialised, or removed with orch_list_remove). */
static inline bool orch_list_linked(const struct orch_list *l)
{
        return l->next && l->next != l;
}

static inline void orch_list_insert_after(struct orch_list *pos, struct orch_list *n)
{
        n->prev = pos;
        n->next = pos->next;
        pos->next->prev = n;
        pos->next = n;
}

/* Appends at the tail. */
static inline void orch_list_append(struct orch_list *head, struct orch_list *n)
{
        orch_list_insert_after(head->prev, n);
}

static inline void orch_list_remove(struct orch_list *n)
{
        n->prev->next = n->next;
        n->next->prev = n->prev;
        orch_list_init(n);
}

#define orch_list_entry(ptr, type, member) container_of(ptr, type, member)

/* Iterates; the body may remove the current entry. */
#define orch_list_foreach_safe(pos, tmp, head)                                                               \
        for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head); (pos) = (tmp), (tmp) = (pos)->next)

#define orch_list_foreach(pos, head) for ((pos) = (head)->next; (pos) != (head); (pos) = (pos)->next)
