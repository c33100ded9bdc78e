/* SPDX-License-Identifier: MIT */
#include "config.h"

#include "hashmap.h"
#include "list.h"
#include "testing.h"
#include "util.h"
#include "banned.h"

struct item {
        char key[32];
        int value;
        struct orch_hmap_node node;
        struct orch_list link;
};

START_TEST(test_insert_get_remove)
{
        enum { N = 20000 };
        struct orch_hmap m = {0};
        struct item *items = calloc(N, sizeof *items);
        struct orch_hmap_iter it;
        size_t seen = 0;

        ck_assert_ptr_nonnull(items);
        for (int i = 0; i < N; i++) {
                orch_snprintf(items[i].key, sizeof items[i].key, "web-%08x", (unsigned)i * 2654435761u);
                items[i].value = i;
                ck_assert_int_eq(orch_hmap_insert(&m, &items[i].node, items[i].key), 0);
        }
        ck_assert_uint_eq(m.n, N);
        ck_assert_int_eq(orch_hmap_insert(&m, &items[5].node, items[5].key), -EEXIST);
        for (int i = 0; i < N; i++) {
                struct item *x = orch_hmap_entry(orch_hmap_get(&m, items[i].key), struct item, node);
                ck_assert_ptr_eq(x, &items[i]);
        }
        ck_assert_ptr_null(orch_hmap_get(&m, "absent"));
        /* remove every other one while iterating */
        for (struct orch_hmap_node *n = orch_hmap_first(&m, &it); n; n = orch_hmap_next(&m, &it)) {
                struct item *x = container_of(n, struct item, node);
                seen++;
                if (x->value % 2)
                        orch_hmap_remove(&m, n);
        }
        ck_assert_uint_eq(seen, N);
        ck_assert_uint_eq(m.n, N / 2);
        for (int i = 0; i < N; i++)
                ck_assert((orch_hmap_get(&m, items[i].key) != NULL) == (i % 2 == 0));
        orch_hmap_release(&m);
        free(items);
}
END_TEST

START_TEST(test_empty_map)
{
        struct orch_hmap m = {0};
        struct orch_hmap_iter it;

        ck_assert_ptr_null(orch_hmap_get(&m, "x"));
        ck_assert_ptr_null(orch_hmap_first(&m, &it));
        orch_hmap_release(&m);
}
END_TEST

START_TEST(test_list)
{
        struct orch_list head = ORCH_LIST_INIT(head), *p, *t;
        struct item a = {.value = 1}, b = {.value = 2}, c = {.value = 3};
        int sum = 0, order = 0;

        ck_assert(orch_list_empty(&head));
        orch_list_append(&head, &a.link);
        orch_list_append(&head, &b.link);
        orch_list_append(&head, &c.link);
        orch_list_foreach(p, &head) order = order * 10 + orch_list_entry(p, struct item, link)->value;
        ck_assert_int_eq(order, 123);
        orch_list_foreach_safe(p, t, &head)
        {
                struct item *x = orch_list_entry(p, struct item, link);
                sum += x->value;
                if (x->value == 2)
                        orch_list_remove(p);
        }
        ck_assert_int_eq(sum, 6);
        ck_assert(!orch_list_linked(&b.link));
        ck_assert(head.next == &a.link && a.link.next == &c.link && c.link.next == &head);
}
END_TEST

static Suite *hashmap_suite(void)
{
        Suite *s = suite_create("hashmap");
        TCase *tc = tcase_create("core");

        tcase_add_test(tc, test_insert_get_remove);
        tcase_add_test(tc, test_empty_map);
        tcase_add_test(tc, test_list);
        suite_add_tcase(s, tc);
        return s;
}

ORCH_TEST_MAIN(hashmap_suite)
