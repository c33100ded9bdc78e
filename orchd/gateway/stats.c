/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <inttypes.h>

#include "stats.h"
#include "banned.h"

const double gw_latency_bounds[GW_LATENCY_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                      0.1,    0.25,  0.5,    1,     2.5,  5,     10};

static const char *const class_names[_GW_CLASS_MAX] = {"none", "1xx", "2xx", "3xx", "4xx", "5xx"};

int gw_stats_new(const char *route, unsigned n_workers, struct gw_stats **ret)
{
        struct gw_stats *s;

        if (n_workers == 0)
                return -EINVAL;
        s = aligned_alloc(64, sizeof *s + n_workers * sizeof s->w[0]);
        if (!s)
                return -ENOMEM;
        memset(s, 0, sizeof *s + n_workers * sizeof s->w[0]);
        s->route = strdup(route);
        if (!s->route) {
                free(s);
                return -ENOMEM;
        }
        atomic_init(&s->refs, 1);
        s->n_workers = n_workers;
        *ret = s;
        return 0;
}

struct gw_stats *gw_stats_ref(struct gw_stats *s)
{
        if (s)
                atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
        return s;
}

void gw_stats_unref(struct gw_stats *s)
{
        if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
                return;
        free(s->route);
        free(s);
}

/* gw_latency_bounds in microseconds, for the request path */
static const uint64_t bounds_usec[GW_LATENCY_BUCKETS] = {500,     1000,    2500,    5000,    10000,
                                                         25000,   50000,   100000,  250000,  500000,
                                                         1000000, 2500000, 5000000, 10000000};

void gw_stats_request(struct gw_counters *c, int status, uint64_t usec)
{
        size_t b = 0;

        gw_count(&c->requests[status >= 100 && status < 600 ? status / 100 : GW_CLASS_NONE], 1);
        while (b < GW_LATENCY_BUCKETS && usec > bounds_usec[b])
                b++;
        gw_count(&c->latency[b], 1);
        gw_count(&c->latency_sum_usec, usec);
}

static uint64_t sum(const struct gw_stats *s, size_t offset)
{
        uint64_t v = 0;

        for (unsigned i = 0; i < s->n_workers; i++)
                v += atomic_load_explicit((_Atomic uint64_t *)((char *)&s->w[i] + offset),
                                          memory_order_relaxed);
        return v;
}

#define SUM(s, field) sum(s, offsetof(struct gw_counters, field))

/* The Prometheus text format wants the samples of one metric family together, after its HELP and
 * TYPE: each family is written for every route before the next family starts. */
void gw_stats_render(struct gw_stats *const *all, size_t n, struct orch_buf *out)
{
        orch_buf_puts(out, "# HELP orch_gateway_requests_total Gateway requests by route and status class "
                           "(class none: no answer was sent).\n"
                           "# TYPE orch_gateway_requests_total counter\n");
        for (size_t i = 0; i < n; i++)
                for (size_t c = 0; c < _GW_CLASS_MAX; c++)
                        orch_buf_printf(out,
                                        "orch_gateway_requests_total{route=\"%s\",class=\"%s\"} %" PRIu64 "\n",
                                        all[i]->route, class_names[c], SUM(all[i], requests[c]));

        orch_buf_puts(out, "# HELP orch_gateway_request_duration_seconds Time from a request's head to the "
                           "end of its answer.\n"
                           "# TYPE orch_gateway_request_duration_seconds histogram\n");
        for (size_t i = 0; i < n; i++) {
                const struct gw_stats *s = all[i];
                uint64_t cum = 0;

                for (size_t b = 0; b < GW_LATENCY_BUCKETS; b++) {
                        cum += SUM(s, latency[b]);
                        orch_buf_printf(out,
                                        "orch_gateway_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} "
                                        "%" PRIu64 "\n",
                                        s->route, gw_latency_bounds[b], cum);
                }
                cum += SUM(s, latency[GW_LATENCY_BUCKETS]);
                orch_buf_printf(out,
                                "orch_gateway_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %" PRIu64
                                "\n"
                                "orch_gateway_request_duration_seconds_sum{route=\"%s\"} %.6f\n"
                                "orch_gateway_request_duration_seconds_count{route=\"%s\"} %" PRIu64 "\n",
                                s->route, cum, s->route, (double)SUM(s, latency_sum_usec) / 1e6, s->route, cum);
        }

        static const struct {
                const char *name, *help;
                size_t offset;
        } counters[] = {
                {"orch_gateway_upstream_errors_total",
                 "Failed attempts to reach an instance (connect failures, resets, malformed answers, timeouts).",
                 offsetof(struct gw_counters, upstream_errors)},
                {"orch_gateway_ejections_total", "Endpoints taken out of balancing by passive health checks.",
                 offsetof(struct gw_counters, ejections)},
                {"orch_gateway_retries_total", "Requests sent again to another endpoint.",
                 offsetof(struct gw_counters, retries)},
        };
        for (size_t k = 0; k < ELEMENTSOF(counters); k++) {
                orch_buf_printf(out, "# HELP %s %s\n# TYPE %s counter\n", counters[k].name, counters[k].help,
                                counters[k].name);
                for (size_t i = 0; i < n; i++)
                        orch_buf_printf(out, "%s{route=\"%s\"} %" PRIu64 "\n", counters[k].name, all[i]->route,
                                        sum(all[i], counters[k].offset));
        }
}
