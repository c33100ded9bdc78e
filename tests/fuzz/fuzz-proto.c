/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>

#include <jansson.h>

#include "proto.h"
#include "util.h"
#include "banned.h"

/*
 * libFuzzer target for lib/proto.c: the line reader and the decoder, checked against jansson and
 * against themselves.
 *
 * The first byte seeds the read sizes and the reader's frame limit. The rest is fed to a reader in
 * reads of those sizes, every frame is decoded, and the whole input is also decoded as one frame.
 * Oracles, any failure aborts:
 *   - the reader returns exactly the lines of the input, in order, until the first one longer than
 *     the limit, and then -EMSGSIZE for good, however the input is split;
 *   - a frame the decoder accepts is JSON that jansson accepts too (except numbers in ignored fields
 *     beyond jansson's range, which the decoder does not look at), and every field of the message
 *     has the value jansson reads there;
 *   - a decoded message encodes (the encoder accepts everything the decoder does), and that frame
 *     decodes and encodes to the same bytes again;
 *   - a rejected frame comes with an error message.
 */

#define check(cond)                                                                                          \
        do {                                                                                                 \
                if (!(cond)) {                                                                               \
                        fprintf(stderr, "fuzz-proto: check failed at line %d: %s\n", __LINE__, #cond);       \
                        abort();                                                                             \
                }                                                                                            \
        } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Every field we wrote appears in the original with the same value (a field the decoder ignored or
 * that was at its default is not written). */
static bool written_subset(const json_t *ours, const json_t *theirs)
{
        const char *key;
        json_t *v;
        size_t i;

        if (json_is_object(ours)) {
                if (!json_is_object(theirs))
                        return false;
                json_object_foreach ((json_t *)ours, key, v)
                        if (!written_subset(v, json_object_get(theirs, key)))
                                return false;
                return true;
        }
        if (json_is_array(ours)) {
                if (!json_is_array(theirs) || json_array_size(ours) != json_array_size(theirs))
                        return false;
                json_array_foreach ((json_t *)ours, i, v)
                        if (!written_subset(v, json_array_get(theirs, i)))
                                return false;
                return true;
        }
        return json_equal(ours, theirs);
}

static void check_frame(const char *frame, size_t len)
{
        struct orch_proto_msg *m = NULL, *again = NULL;
        struct orch_proto_error e = {{0}};
        struct orch_buf out = {0}, out2 = {0};
        json_error_t je;
        json_t *theirs, *ours;
        int r;

        r = orch_proto_decode(frame, len, &m, &e);
        if (r < 0) {
                check(r == -EINVAL || r == -EMSGSIZE || r == -ENOMEM);
                check(m == NULL);
                check(e.message[0] != '\0');
                return;
        }
        check(m && (unsigned)m->type < _ORCH_PROTO_TYPE_MAX);

        theirs = json_loadb(frame, len, 0, &je);
        if (!theirs) {
                /* Numbers of ignored fields are only checked for syntax. */
                check(strstr(je.text, "too big") || strstr(je.text, "overflow"));
                orch_proto_msg_free(m);
                return;
        }
        check(json_is_object(theirs));

        r = orch_proto_encode(&out, m, &e);
        if (r < 0)
                fprintf(stderr, "fuzz-proto: re-encoding failed: %s\n", e.message);
        check(r == 0);
        check(out.len > 0 && out.data[out.len - 1] == '\n');
        check(memchr(out.data, '\n', out.len) == out.data + out.len - 1);

        ours = json_loadb(out.data, out.len - 1, JSON_REJECT_DUPLICATES, &je);
        check(ours);
        if (!written_subset(ours, theirs)) {
                fprintf(stderr, "fuzz-proto: values differ\n  ours:   %s  theirs: %.*s\n", out.data, (int)len, frame);
                abort();
        }

        r = orch_proto_decode(out.data, out.len - 1, &again, &e);
        check(r == 0);
        r = orch_proto_encode(&out2, again, &e);
        check(r == 0);
        check(out2.len == out.len && memcmp(out.data, out2.data, out.len) == 0);

        json_decref(ours);
        json_decref(theirs);
        orch_buf_release(&out);
        orch_buf_release(&out2);
        orch_proto_msg_free(again);
        orch_proto_msg_free(m);
}

/* Feeds the input in reads of pseudo-random sizes and checks the frames against the lines. */
static void check_reader(const char *in, size_t len, uint8_t seed)
{
        struct orch_proto_reader r;
        size_t max = seed & 0x80 ? 64 + (seed & 0x3f) : ORCH_PROTO_MAX_FRAME;
        size_t line = 0, off = 0;
        uint32_t rnd = seed * 2654435761u + 1;
        bool over = false;
        int k;

        orch_proto_reader_init(&r, max);
        while (off < len) {
                size_t n, room;
                char *space;
                rnd = rnd * 1103515245u + 12345u;
                n = MIN(len - off, (size_t)1 + (rnd >> 16) % 300);
                if (rnd & 1) {
                        k = orch_proto_reader_feed(&r, in + off, n);
                } else {
                        k = orch_proto_reader_space(&r, n, &space, &room);
                        if (k == 0) {
                                check(room >= n);
                                memcpy(space, in + off, n);
                                k = orch_proto_reader_commit(&r, n);
                        }
                }
                check(k == 0 || k == -EMSGSIZE);
                off += n;

                for (;;) {
                        char *frame;
                        size_t flen;
                        const char *nl;
                        k = orch_proto_reader_next(&r, &frame, &flen);
                        if (k <= 0)
                                break;
                        /* The reference: the next line of the input, complete and within the limit. */
                        check(!over);
                        nl = memchr(in + line, '\n', len - line);
                        check(nl && (size_t)(nl - in) < off);
                        check(flen == (size_t)(nl - (in + line)) && flen <= max);
                        check(memcmp(frame, in + line, flen) == 0 && frame[flen] == '\0');
                        line = (size_t)(nl - in) + 1;
                        if (flen <= 4096)
                                check_frame(frame, flen);
                }
                if (k == -EMSGSIZE) {
                        /* The next line is, or will be, longer than the limit. */
                        const char *nl = memchr(in + line, '\n', len - line);
                        size_t l = nl ? (size_t)(nl - (in + line)) : len - line;
                        check(l > max);
                        over = true;
                } else
                        check(k == 0 && !over);
        }
        if (!over) {
                /* Every complete line came out; the rest is a partial frame within the limit. */
                check(memchr(in + line, '\n', len - line) == NULL);
                check(len - line <= max);
        }
        orch_proto_reader_release(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (size < 1)
                return 0;
        check_reader((const char *)data + 1, size - 1, data[0]);
        check_frame((const char *)data + 1, size - 1);
        return 0;
}
