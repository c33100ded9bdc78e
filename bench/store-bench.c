/* SPDX-License-Identifier: MIT */
#include "config.h"

/*
 * Throughput of the state store as orchd uses it: instance records of about 300 bytes put in
 * batched transactions on a fresh data dir, for 100k and 1M records in batches of 1,000 and
 * 10,000; then the full load orchd does at start. Two key orders, because a B-tree's cost is the
 * number of distinct pages a transaction dirties:
 *
 *   placement  consecutive records belong to one service (100 services), as when the scheduler
 *              places a service's replicas: a batch lands in one region of the key space;
 *   spread     consecutive records cycle through the 100 services, as agents' state reports do:
 *              every batch dirties pages all over the table (the worst case).
 *
 *   store-bench [--quick] [--no-fsync] [DIR]
 *      --quick     100k records only
 *      --no-fsync  ORCH_STORE_DURABLE_PROCESS_CRASH (no fsync at commit) instead of the default
 *      DIR         where the data dirs go (default: a new one in /var/tmp, disk-backed where /tmp
 *                  may be tmpfs)
 */

#include <ftw.h>
#include <inttypes.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "store.h"
#include "util.h"
#include "banned.h"

#define SERVICES 100

enum pattern {
        PATTERN_PLACEMENT,
        PATTERN_SPREAD,
        _PATTERN_MAX,
};

static const char *const pattern_names[_PATTERN_MAX] = {
        [PATTERN_PLACEMENT] = "placement",
        [PATTERN_SPREAD] = "spread",
};

struct run {
        uint64_t records;
        uint64_t batch;
        enum pattern pattern;
        enum orch_store_durability durability;
};

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
        return remove(path);
}

static uint64_t rss_kib(void)
{
        _cleanup_(freep) char *status = NULL;
        const char *p;
        uint64_t kib = 0;

        if (orch_read_file("/proc/self/status", 1 << 16, &status, NULL) < 0)
                return 0;
        p = strstr(status, "VmRSS:");
        if (p && sscanf(p, "VmRSS: %" SCNu64, &kib) != 1)
                kib = 0;
        return kib;
}

static int count_cb(const char *key, const char *value, size_t len, void *userdata)
{
        uint64_t *bytes = userdata;

        *bytes += len;
        return 0;
}

/* Record i of a run, with an id as orchd makes them: "<service>-<8 hex>". Multiplying by an odd
 * constant permutes 32-bit values, so the ids are unique and random within their service, as real
 * random ids are. */
static size_t instance_record(const struct run *run, uint64_t i, char *id, size_t id_size, char *buf,
                              size_t size)
{
        uint32_t h = (uint32_t)i * 2654435761U;
        unsigned svc = run->pattern == PATTERN_PLACEMENT ? (unsigned)(i / (run->records / SERVICES))
                                                         : (unsigned)(i % SERVICES);
        int n;

        orch_snprintf(id, id_size, "svc-%02u-%08" PRIx32, svc, h);
        n = orch_snprintf(buf, size,
                          "{\"id\":\"%s\",\"service\":\"svc-%02u\",\"revision\":\"3f2a9c1d0b7e\",\"node\":"
                          "\"node-%04u\",\"generation\":%" PRIu64
                          ",\"desired\":\"run\",\"state\":\"pending\","
                          "\"health\":\"unknown\",\"pid\":0,\"ports\":{\"http\":%u},\"restarts\":0,"
                          "\"started_at\":0,\"cgroup\":\"\",\"reason\":\"\",\"exit\":null,"
                          "\"created_at\":1795688062000}",
                          id, svc, (unsigned)(i % 5000), i + 1, 20000 + (unsigned)(i % 10000));
        return n > 0 ? (size_t)n : 0;
}

static int run_one(const char *base, const struct run *run)
{
        _cleanup_(freep) char *dir = orch_strdup_printf("%s/run", base);
        _cleanup_(freep) char *db = orch_strdup_printf("%s/run/state.db", base);
        _cleanup_(freep) char *error = NULL;
        const struct orch_store_options opts = {.durability = run->durability};
        struct orch_store *s = NULL;
        uint64_t t0, t_put, t_load, bytes = 0, rss;
        struct stat sb;
        char id[64], value[512];
        int r, n;

        if (!dir || !db)
                return -ENOMEM;
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        r = orch_store_open(dir, &opts, &s, &error);
        if (r < 0) {
                fprintf(stderr, "store-bench: %s\n", strna(error));
                return r;
        }

        /* Start every run with nothing left for the kernel to write back from the previous one (a
         * deleted 300 MB database, say): the disk's backlog is not this run's cost. */
        sync();
        t0 = orch_now_usec();
        for (uint64_t i = 0; i < run->records;) {
                _cleanup_(orch_store_tx_rollbackp) struct orch_store_tx *tx = NULL;

                r = orch_store_begin(s, &tx);
                for (uint64_t end = MIN(i + run->batch, run->records); r >= 0 && i < end; i++) {
                        size_t len = instance_record(run, i, id, sizeof id, value, sizeof value);
                        r = orch_store_put(tx, ORCH_STORE_INSTANCES, id, value, len);
                }
                if (r >= 0)
                        r = orch_store_commit(tx);
                if (r < 0) {
                        fprintf(stderr, "store-bench: write failed: %s (%s)\n", strerror(-r),
                                orch_store_last_error(s));
                        orch_store_close(s);
                        return r;
                }
        }
        t_put = orch_now_usec() - t0;
        rss = rss_kib();

        t0 = orch_now_usec();
        n = orch_store_load(s, ORCH_STORE_INSTANCES, NULL, count_cb, &bytes);
        t_load = orch_now_usec() - t0;
        orch_store_close(s);
        if (n < 0 || (uint64_t)n != run->records) {
                fprintf(stderr, "store-bench: loaded %d of %" PRIu64 " records\n", n, run->records);
                return n < 0 ? n : -EIO;
        }
        if (stat(db, &sb) < 0)
                sb.st_size = 0;

        printf("%9" PRIu64 " %6" PRIu64 "  %-9s %-8s %8.2f %9.0f %9.1f %7.2f %7.0f %7.0f\n", run->records,
               run->batch, pattern_names[run->pattern],
               run->durability == ORCH_STORE_DURABLE_POWER_LOSS ? "fsync" : "no-fsync", (double)t_put / 1e6,
               (double)run->records * 1e6 / (double)t_put,
               (double)t_put / 1000.0 / (double)((run->records + run->batch - 1) / run->batch),
               (double)t_load / 1e6, (double)sb.st_size / (1 << 20), (double)rss / 1024);
        fflush(stdout);
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        return 0;
}

/* The latency floor of a commit: what one API call that changes one record pays (fsync or not). */
static int run_single_commits(const char *base, enum orch_store_durability durability, unsigned count)
{
        _cleanup_(freep) char *dir = orch_strdup_printf("%s/run", base);
        _cleanup_(freep) char *error = NULL;
        const struct orch_store_options opts = {.durability = durability};
        const struct run run = {.records = count, .pattern = PATTERN_SPREAD};
        struct orch_store *s = NULL;
        char id[64], value[512];
        uint64_t t0, t;
        int r = 0;

        if (!dir)
                return -ENOMEM;
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        r = orch_store_open(dir, &opts, &s, &error);
        if (r < 0) {
                fprintf(stderr, "store-bench: %s\n", strna(error));
                return r;
        }
        sync();
        t0 = orch_now_usec();
        for (unsigned i = 0; i < count && r >= 0; i++) {
                size_t len = instance_record(&run, i, id, sizeof id, value, sizeof value);
                r = orch_store_put_one(s, ORCH_STORE_INSTANCES, id, value, len);
        }
        t = orch_now_usec() - t0;
        if (r < 0)
                fprintf(stderr, "store-bench: write failed: %s (%s)\n", strerror(-r),
                        orch_store_last_error(s));
        else
                printf("# single-record transactions (%s): %.0f commits/s, %.2f ms each\n",
                       durability == ORCH_STORE_DURABLE_POWER_LOSS ? "fsync" : "no-fsync",
                       (double)count * 1e6 / (double)t, (double)t / 1000.0 / count);
        orch_store_close(s);
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        return r;
}

int main(int argc, char *argv[])
{
        static const uint64_t records[] = {100000, 1000000};
        static const uint64_t batches[] = {1000, 10000};
        enum orch_store_durability durability = ORCH_STORE_DURABLE_POWER_LOSS;
        char tmpl[] = "/var/tmp/orch-store-bench.XXXXXX";
        const char *base = NULL;
        bool quick = false, made = false;
        int status = EXIT_SUCCESS;

        for (int i = 1; i < argc; i++) {
                if (streq(argv[i], "--quick"))
                        quick = true;
                else if (streq(argv[i], "--no-fsync"))
                        durability = ORCH_STORE_DURABLE_PROCESS_CRASH;
                else if (streq(argv[i], "--help") || streq(argv[i], "-h")) {
                        printf("usage: %s [--quick] [--no-fsync] [DIR]\n"
                               "  --quick     100k records only\n"
                               "  --no-fsync  no fsync at commit (durable against process crashes only)\n"
                               "  DIR         where to create the data dirs (default: a new directory in "
                               "/var/tmp)\n",
                               argv[0]);
                        return EXIT_SUCCESS;
                } else if (argv[i][0] == '-') {
                        fprintf(stderr, "%s: unknown option '%s' (try --help)\n", argv[0], argv[i]);
                        return 2;
                } else if (!base)
                        base = argv[i];
                else {
                        fprintf(stderr, "%s: unexpected argument '%s'\n", argv[0], argv[i]);
                        return 2;
                }
        }
        if (!base) {
                base = mkdtemp(tmpl);
                if (!base) {
                        fprintf(stderr, "%s: cannot create a directory in /var/tmp: %s\n", argv[0],
                                strerror(errno));
                        return EXIT_FAILURE;
                }
                made = true;
        }

        printf("# orch state store: ~300-byte instance records in batched transactions (SQLite %s, WAL)\n",
               sqlite3_libversion());
        printf("#  records  batch  keys      commit      put s    puts/s  ms/batch  load s  db MiB RSS "
               "MiB\n");
        for (size_t r = 0; r < ELEMENTSOF(records) && status == EXIT_SUCCESS; r++) {
                if (quick && records[r] > 100000)
                        break;
                for (size_t p = 0; p < _PATTERN_MAX && status == EXIT_SUCCESS; p++)
                        for (size_t b = 0; b < ELEMENTSOF(batches) && status == EXIT_SUCCESS; b++) {
                                const struct run run = {records[r], batches[b], (enum pattern)p, durability};
                                if (run_one(base, &run) < 0)
                                        status = EXIT_FAILURE;
                        }
        }
        if (status == EXIT_SUCCESS && run_single_commits(base, durability, 1000) < 0)
                status = EXIT_FAILURE;
        if (made)
                nftw(base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        return status;
}
