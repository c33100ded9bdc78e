/* SPDX-License-Identifier: MIT */
#include "config.h"

/*
 * Throughput of the agent protocol codec (lib/proto.c) on the scheduler's hot path: start batches
 * of 100 instances and their acks (with one result per instance, and the short form without), each
 * encoded, framed by the line reader and decoded; then the whole round for 1,000,000 instances as
 * orchd and an agent would do it, and jansson parsing the same frames as the peer figure. One line
 * per measurement:
 *
 *   proto-bench [--quick]      --quick: 100,000 instances instead of 1,000,000
 */

#include <inttypes.h>

#include <jansson.h>

#include "proto.h"
#include "util.h"
#include "banned.h"

#define BATCH 100

/* Every instance of the run, made before the clock starts: only the codec is measured. */
static char (*all_ids)[32];
static struct orch_proto_start_item *all_items;
static struct orch_proto_ack_result *all_results;
static char services[100][16];

static void make_instances(uint64_t n)
{
        all_ids = calloc(n, sizeof *all_ids);
        all_items = calloc(n, sizeof *all_items);
        all_results = calloc(n, sizeof *all_results);
        if (!all_ids || !all_items || !all_results) {
                fprintf(stderr, "out of memory\n");
                exit(EXIT_FAILURE);
        }
        for (size_t i = 0; i < 100; i++)
                (void)orch_snprintf(services[i], sizeof services[i], "svc-%02zu", i);
        for (uint64_t i = 0; i < n; i++) {
                /* orchd's ids: <service>-<8 hex>, spread over 100 services; multiplying by an odd
                 * constant permutes 32-bit values, so they are unique */
                uint32_t h = (uint32_t)i * 2654435761U;
                (void)orch_snprintf(all_ids[i], sizeof all_ids[i], "svc-%02u-%08" PRIx32,
                                    (unsigned)(i % 100), h);
                all_items[i] = (struct orch_proto_start_item){.instance = all_ids[i],
                                                              .service = services[i % 100],
                                                              .revision = "3f2a9c1d0b7e4a55",
                                                              .generation = i + 1};
                all_results[i] = (struct orch_proto_ack_result){.instance = all_ids[i], .ok = true};
        }
}

static double seconds_since(uint64_t start_usec)
{
        return (double)(orch_now_usec() - start_usec) / 1e6;
}

static void report(const char *what, uint64_t frames, uint64_t items, uint64_t bytes, double secs)
{
        printf("%-34s %9.0f frames/s %11.0f instances/s %8.1f MB/s %7.3f s\n", what, (double)frames / secs,
               (double)items / secs, (double)bytes / secs / 1e6, secs);
}

static int die(const char *what, int r, const struct orch_proto_error *e)
{
        fprintf(stderr, "%s: %s (%s)\n", what, strerror(-r), e ? e->message : "");
        exit(EXIT_FAILURE);
}

/* Encodes `frames` messages made by `make` into one buffer, as a connection's write queue. */
static void encode_all(const char *what, uint64_t frames, struct orch_buf *out,
                       void (*make)(uint64_t k, struct orch_proto_msg *m))
{
        struct orch_proto_error e;
        uint64_t t = orch_now_usec();

        for (uint64_t k = 0; k < frames; k++) {
                struct orch_proto_msg m;
                int r;
                make(k, &m);
                r = orch_proto_encode(out, &m, &e);
                if (r < 0)
                        die("encode", r, &e);
        }
        report(what, frames, frames * BATCH, out->len, seconds_since(t));
}

/* Feeds the stream to the reader in 64 KiB reads and decodes every frame. */
static void decode_all(const char *what, const struct orch_buf *in, uint64_t frames, bool expect_items)
{
        struct orch_proto_reader reader;
        struct orch_proto_error e;
        uint64_t t = orch_now_usec(), seen = 0, items = 0;

        orch_proto_reader_init(&reader, 0);
        for (size_t off = 0; off < in->len; off += 65536) {
                char *frame;
                size_t len;
                int r = orch_proto_reader_feed(&reader, in->data + off, MIN((size_t)65536, in->len - off));
                if (r < 0)
                        die("feed", r, NULL);
                while ((r = orch_proto_reader_next(&reader, &frame, &len)) > 0) {
                        struct orch_proto_msg *m;
                        r = orch_proto_decode(frame, len, &m, &e);
                        if (r < 0)
                                die("decode", r, &e);
                        items += m->type == ORCH_PROTO_START ? m->start.n_instances : m->ack.n_results;
                        seen++;
                        orch_proto_msg_free(m);
                }
                if (r < 0)
                        die("next", r, NULL);
        }
        orch_proto_reader_release(&reader);
        if (seen != frames || (expect_items && items != frames * BATCH)) {
                fprintf(stderr, "%s: decoded %" PRIu64 " frames with %" PRIu64 " items\n", what, seen,
                        items);
                exit(EXIT_FAILURE);
        }
        report(what, frames, frames * BATCH, in->len, seconds_since(t));
}

/* The peer figure: jansson parsing the same lines into trees, with no validation at all. */
static void jansson_all(const char *what, const struct orch_buf *in, uint64_t frames)
{
        uint64_t t = orch_now_usec(), seen = 0;

        for (const char *p = in->data, *end = in->data + in->len; p < end;) {
                const char *nl = memchr(p, '\n', (size_t)(end - p));
                json_error_t je;
                json_t *j = json_loadb(p, (size_t)(nl - p), JSON_REJECT_DUPLICATES, &je);
                if (!j) {
                        fprintf(stderr, "jansson: %s\n", je.text);
                        exit(EXIT_FAILURE);
                }
                json_decref(j);
                seen++;
                p = nl + 1;
        }
        report(what, seen, frames * BATCH, in->len, seconds_since(t));
}

static void make_start(uint64_t k, struct orch_proto_msg *m)
{
        *m = (struct orch_proto_msg){
                .type = ORCH_PROTO_START,
                .start = {.id = k + 1, .instances = all_items + k * BATCH, .n_instances = BATCH}};
}

static void make_ack(uint64_t k, struct orch_proto_msg *m)
{
        *m = (struct orch_proto_msg){
                .type = ORCH_PROTO_ACK,
                .ack = {.id = k + 1, .ok = true, .results = all_results + k * BATCH, .n_results = BATCH}};
}

static void make_short_ack(uint64_t k, struct orch_proto_msg *m)
{
        *m = (struct orch_proto_msg){.type = ORCH_PROTO_ACK, .ack = {.id = k + 1, .ok = true}};
}

int main(int argc, char **argv)
{
        bool quick = argc > 1 && streq(argv[1], "--quick");
        uint64_t instances = quick ? 100000 : 1000000, frames = instances / BATCH, t;
        struct orch_buf starts = {0}, acks = {0}, short_acks = {0};
        double total;

        make_instances(instances);
        printf("proto-bench: %" PRIu64 " instances in start batches of %d\n", instances, BATCH);
        encode_all("encode start", frames, &starts, make_start);
        decode_all("read+decode start", &starts, frames, true);
        jansson_all("jansson parse start (peer)", &starts, frames);
        encode_all("encode ack (100 results)", frames, &acks, make_ack);
        decode_all("read+decode ack (100 results)", &acks, frames, true);
        jansson_all("jansson parse ack (peer)", &acks, frames);
        encode_all("encode ack (no results)", frames, &short_acks, make_short_ack);
        decode_all("read+decode ack (no results)", &short_acks, frames, false);
        printf("frame sizes: start %.0f bytes, ack %.0f bytes, short ack %.0f bytes\n",
               (double)starts.len / (double)frames, (double)acks.len / (double)frames,
               (double)short_acks.len / (double)frames);

        /* The whole round as both ends do it: orchd encodes starts, the agent reads and decodes
         * them and encodes an ack per batch, orchd reads and decodes the acks. */
        orch_buf_reset(&starts);
        orch_buf_reset(&acks);
        t = orch_now_usec();
        encode_all("round: orchd encodes starts", frames, &starts, make_start);
        decode_all("round: agent decodes starts", &starts, frames, true);
        encode_all("round: agent encodes acks", frames, &acks, make_ack);
        decode_all("round: orchd decodes acks", &acks, frames, true);
        total = seconds_since(t);
        printf("round trip of %" PRIu64 " instances: %.3f s of CPU in the codec (%.0f instances/s)\n",
               instances, total, (double)instances / total);

        orch_buf_release(&starts);
        orch_buf_release(&acks);
        orch_buf_release(&short_acks);
        free(all_ids);
        free(all_items);
        free(all_results);
        return 0;
}
