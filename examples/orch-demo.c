/* SPDX-License-Identifier: MIT */
#include "config.h"

/*
 * orch-demo: the small microservice that the example manifests (manifests/) run.
 *
 *   orch-demo web    --port N [--api URL]   an HTML page: which instance served it, and the items
 *                                           it fetched (server-side) from the API
 *   orch-demo api    --port N               a JSON API: GET|POST /items, GET|DELETE /items/ID,
 *                                           GET / (which instance answered)
 *   orch-demo worker [--interval 5s] [--api URL]
 *                                           a job every interval, one line per job on stdout
 *
 * It reads what orch gives every instance from the environment: PORT (the default for --port),
 * ORCH_SERVICE, ORCH_INSTANCE and ORCH_NODE; and DEMO_API_URL, the default for --api (not an
 * ORCH_ name: those are reserved for orch, a manifest's env cannot set them).
 *
 * With several replicas each API instance keeps its own list (nothing is shared), so the page and
 * the worker show which replica answered each request.
 *
 * Requests (except /healthz, which the agent polls) and jobs are logged to stdout, the rest to
 * stderr. SIGTERM and SIGINT stop it cleanly with exit status 0; bad flags exit with status 2.
 */

#include <getopt.h>
#include <inttypes.h>
#include <signal.h>

#include <jansson.h>
#include <uv.h>

#include "demo-http.h"
#include "json.h"
#include "log.h"
#include "units.h"
#include "util.h"
#include "banned.h"

#define MAX_ITEMS      100 /* the API's list is bounded like every other input */
#define MAX_ITEM_NAME  100 /* bytes */
#define API_TIMEOUT_MS 3000
#define EXIT_USAGE     2

enum role {
        ROLE_WEB,
        ROLE_API,
        ROLE_WORKER,
};

struct item {
        uint64_t id;
        char *name;
        uint64_t created_ms; /* wall clock */
};

static struct {
        uv_loop_t *loop;
        enum role role;
        const char *service, *instance, *node;
        char hostname[256];
        uint64_t started_ms; /* monotonic */
        uint64_t requests;

        struct demo_http_server *server;
        uv_signal_t sigterm, sigint;

        char *api_url; /* the API base URL (web, worker): requests go to API_URL/items */

        struct item items[MAX_ITEMS]; /* api */
        size_t n_items;
        uint64_t next_id;

        uv_timer_t tick; /* worker */
        bool tick_open;
        uint64_t interval_ms, max_jobs, jobs;
        struct demo_http_client *job_client;
        uint64_t job_started_ms;
} demo;

static _printf_(1, 2) void out(const char *fmt, ...)
{
        char ts[64];
        va_list ap;

        if (orch_format_time(orch_realtime_msec(), ts, sizeof(ts)) < 0)
                ts[0] = '\0';
        printf("ts=%s instance=%s ", ts, demo.instance);
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        putchar('\n');
}

static void on_handle_closed(uv_handle_t *h)
{
}

static void stop(void)
{
        demo_http_server_close(TAKE_PTR(demo.server));
        demo_http_client_cancel(TAKE_PTR(demo.job_client));
        if (demo.tick_open) {
                demo.tick_open = false;
                uv_close((uv_handle_t *)&demo.tick, on_handle_closed);
        }
        if (!uv_is_closing((uv_handle_t *)&demo.sigterm)) {
                uv_close((uv_handle_t *)&demo.sigterm, on_handle_closed);
                uv_close((uv_handle_t *)&demo.sigint, on_handle_closed);
        }
}

static void on_signal(uv_signal_t *s, int signum)
{
        log_info("stopping on SIG%s", sigabbrev_np(signum));
        stop();
}

/* ---- shared answers ---- */

static void respond_json_with(struct demo_http_request *req, int status, const char *extra_headers,
                              json_t *j)
{
        _cleanup_(freep) char *text = j ? orch_json_dumps_compact(j) : NULL;
        struct orch_buf b = {0};

        if (text)
                orch_buf_printf(&b, "%s\n", text);
        if (!text || b.oom)
                demo_http_respond(req, 500, "text/plain", NULL, "out of memory\n", 14);
        else
                demo_http_respond(req, status, "application/json", extra_headers, b.data, b.len);
        orch_buf_release(&b);
}

static void respond_json(struct demo_http_request *req, int status, json_t *j)
{
        respond_json_with(req, status, NULL, j);
}

static void respond_error(struct demo_http_request *req, int status, const char *message)
{
        _cleanup_json_ json_t *j = json_pack("{s:s}", "error", message);

        respond_json(req, status, j);
}

static void respond_text(struct demo_http_request *req, int status, const char *text)
{
        demo_http_respond(req, status, "text/plain; charset=utf-8", NULL, text, strlen(text));
}

static void respond_not_allowed(struct demo_http_request *req, const char *allow)
{
        _cleanup_(freep) char *header = orch_strdup_printf("Allow: %s\r\n", allow);
        _cleanup_json_ json_t *j = json_pack("{s:s}", "error", "method not allowed");

        respond_json_with(req, 405, header, header ? j : NULL);
}

static bool is_get(const struct demo_http_request *req)
{
        return streq(req->method, "GET") || streq(req->method, "HEAD");
}

static void log_request(const struct demo_http_request *req, int status)
{
        if (!streq(req->path, "/healthz"))
                out("method=%s path=%s status=%d peer=%s", req->method, req->path, status, req->peer);
}

/* ---- api ---- */

static json_t *item_to_json(const struct item *it)
{
        char created[64];

        if (orch_format_time(it->created_ms, created, sizeof(created)) < 0)
                created[0] = '\0';
        return json_pack("{s:I, s:s, s:s}", "id", (json_int_t)it->id, "name", it->name, "created_at",
                         created);
}

static int item_add(const char *name, struct item **ret)
{
        struct item *it;
        char *copy;

        if (demo.n_items >= MAX_ITEMS)
                return -ENOSPC;
        copy = strdup(name);
        if (!copy)
                return -ENOMEM;
        it = &demo.items[demo.n_items++];
        *it = (struct item){.id = ++demo.next_id, .name = copy, .created_ms = orch_realtime_msec()};
        if (ret)
                *ret = it;
        return 0;
}

static struct item *item_find(const char *id_text)
{
        uint64_t id;

        if (orch_parse_u64(id_text, &id) < 0)
                return NULL;
        for (size_t i = 0; i < demo.n_items; i++)
                if (demo.items[i].id == id)
                        return &demo.items[i];
        return NULL;
}

static void item_remove(struct item *it)
{
        size_t i = (size_t)(it - demo.items);

        free(it->name);
        memmove(&demo.items[i], &demo.items[i + 1], (demo.n_items - i - 1) * sizeof(*it));
        demo.n_items--;
}

/* Checks a POST /items body: a JSON object {"name": "..."} and nothing else. */
static int parse_new_item(const struct demo_http_request *req, const char **ret_name, json_t **ret_json,
                          const char **ret_error)
{
        const char *ctype = demo_http_request_header(req, "Content-Type");
        json_t *j;
        const char *name, *key;
        json_t *value;

        if (ctype && strncasecmp(ctype, "application/json", 16) != 0) {
                *ret_error = "the body must be application/json";
                return -EINVAL;
        }
        j = json_loadb(req->body.data ? req->body.data : "", req->body.len, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_object(j)) {
                json_decref(j);
                *ret_error = "the body must be a JSON object such as {\"name\": \"tea\"}";
                return -EINVAL;
        }
        json_object_foreach (j, key, value) {
                if (!streq(key, "name")) {
                        json_decref(j);
                        *ret_error = "unknown key: only \"name\" is allowed";
                        return -EINVAL;
                }
        }
        if (orch_json_get_string(j, "name", &name) < 0 || !*name || strlen(name) > MAX_ITEM_NAME) {
                json_decref(j);
                *ret_error = "\"name\" must be a string of 1 to 100 bytes";
                return -EINVAL;
        }
        for (const char *p = name; *p; p++)
                if ((unsigned char)*p < ' ' || *p == 0x7f) {
                        json_decref(j);
                        *ret_error = "\"name\" must not contain control characters";
                        return -EINVAL;
                }
        *ret_name = name;
        *ret_json = j;
        return 0;
}

static void api_items(struct demo_http_request *req)
{
        if (is_get(req)) {
                _cleanup_json_ json_t *list = json_array(), *j = NULL;

                for (size_t i = 0; list && i < demo.n_items; i++)
                        json_array_append_new(list, item_to_json(&demo.items[i]));
                j = json_pack("{s:s, s:O}", "instance", demo.instance, "items", list);
                respond_json(req, 200, j);
                log_request(req, 200);
        } else if (streq(req->method, "POST")) {
                _cleanup_json_ json_t *body = NULL;
                const char *name, *error;
                struct item *it;
                int r;

                if (parse_new_item(req, &name, &body, &error) < 0) {
                        respond_error(req, 400, error);
                        log_request(req, 400);
                        return;
                }
                r = item_add(name, &it);
                if (r < 0) {
                        respond_error(req, r == -ENOSPC ? 409 : 500,
                                      r == -ENOSPC ? "the list is full (100 items)" : "out of memory");
                        log_request(req, r == -ENOSPC ? 409 : 500);
                        return;
                }
                _cleanup_json_ json_t *j = item_to_json(it);
                respond_json(req, 201, j);
                log_request(req, 201);
        } else {
                respond_not_allowed(req, "GET, HEAD, POST");
                log_request(req, 405);
        }
}

static void api_item(struct demo_http_request *req, const char *id)
{
        struct item *it = item_find(id);

        if (!it) {
                respond_error(req, 404, "no such item");
                log_request(req, 404);
        } else if (is_get(req)) {
                _cleanup_json_ json_t *j = item_to_json(it);
                respond_json(req, 200, j);
                log_request(req, 200);
        } else if (streq(req->method, "DELETE")) {
                item_remove(it);
                demo_http_respond(req, 204, NULL, NULL, NULL, 0);
                log_request(req, 204);
        } else {
                respond_not_allowed(req, "GET, HEAD, DELETE");
                log_request(req, 405);
        }
}

static void api_handle(struct demo_http_request *req, void *userdata)
{
        const char *id;

        demo.requests++;
        if (streq(req->path, "/healthz")) {
                respond_text(req, 200, "ok\n");
        } else if (streq(req->path, "/")) {
                _cleanup_json_ json_t *j = NULL;

                if (!is_get(req)) {
                        respond_not_allowed(req, "GET, HEAD");
                        log_request(req, 405);
                        return;
                }
                j = json_pack("{s:s, s:s, s:s, s:s, s:i, s:I, s:I, s:I}", "role", "api", "service",
                              demo.service, "instance", demo.instance, "node", demo.node, "pid",
                              (int)getpid(), "uptime_ms", (json_int_t)(orch_now_msec() - demo.started_ms),
                              "requests", (json_int_t)demo.requests, "items", (json_int_t)demo.n_items);
                respond_json(req, 200, j);
                log_request(req, 200);
        } else if (streq(req->path, "/items")) {
                api_items(req);
        } else if ((id = startswith(req->path, "/items/"))) {
                api_item(req, id);
        } else {
                respond_error(req, 404, "not found: try /items");
                log_request(req, 404);
        }
}

/* ---- web ---- */

static void html_escape(struct orch_buf *b, const char *s)
{
        for (; *s; s++)
                switch (*s) {
                case '<':
                        orch_buf_puts(b, "&lt;");
                        break;
                case '>':
                        orch_buf_puts(b, "&gt;");
                        break;
                case '&':
                        orch_buf_puts(b, "&amp;");
                        break;
                case '"':
                        orch_buf_puts(b, "&quot;");
                        break;
                case '\'':
                        orch_buf_puts(b, "&#39;");
                        break;
                default:
                        orch_buf_putc(b, *s);
                }
}

/* The API section of the page, from GET API_URL/items (r, status and body as the client gives them). */
static void render_api(struct orch_buf *b, int r, int status, const char *body, size_t len)
{
        _cleanup_json_ json_t *j = NULL;
        const char *api_instance = NULL;
        json_t *items = NULL, *it;
        size_t i;

        orch_buf_puts(b, "<h2>Items from the API</h2>\n<p class=\"meta\">");
        html_escape(b, demo.api_url);
        orch_buf_puts(b, "/items</p>\n");
        if (r < 0) {
                orch_buf_puts(b, "<p class=\"error\">The API did not answer: ");
                html_escape(b, uv_strerror(r));
                orch_buf_puts(b, ".</p>\n");
                return;
        }
        if (status == 200)
                j = json_loadb(body, len, 0, NULL);
        if (!j || orch_json_get_string(j, "instance", &api_instance) < 0 ||
            orch_json_get_array(j, "items", &items) < 0) {
                orch_buf_printf(b,
                                "<p class=\"error\">The API answered %d %s with an unexpected body.</p>\n",
                                status, demo_http_status_reason(status));
                return;
        }
        orch_buf_puts(b, "<p>Served by API instance <b>");
        html_escape(b, api_instance);
        orch_buf_puts(b, "</b>.</p>\n<ul>\n");
        json_array_foreach (items, i, it) {
                const char *name;

                if (orch_json_get_string(it, "name", &name) < 0)
                        continue;
                orch_buf_puts(b, "<li>");
                html_escape(b, name);
                orch_buf_puts(b, "</li>\n");
        }
        if (json_array_size(items) == 0)
                orch_buf_puts(b, "<li><i>(empty)</i></li>\n");
        orch_buf_puts(b, "</ul>\n");
}

static void respond_page(struct demo_http_request *req, int r, int status, const char *body, size_t len)
{
        struct orch_buf b = {0};

        orch_buf_puts(&b, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>orch demo</title>\n"
                          "<style>body{font-family:sans-serif;max-width:40em;margin:2em auto}"
                          ".meta{color:#666}.error{color:#b00}</style></head><body>\n"
                          "<h1>orch demo</h1>\n<p>This page was rendered by instance <b>");
        html_escape(&b, demo.instance);
        orch_buf_puts(&b, "</b> of service <b>");
        html_escape(&b, demo.service);
        orch_buf_puts(&b, "</b> on node <b>");
        html_escape(&b, demo.node);
        orch_buf_printf(&b, "</b> (pid %d, host ", (int)getpid());
        html_escape(&b, demo.hostname);
        orch_buf_puts(&b, ").</p>\n");
        if (demo.api_url)
                render_api(&b, r, status, body, len);
        else
                orch_buf_puts(&b, "<p class=\"meta\">No API configured (--api URL or DEMO_API_URL).</p>\n");
        orch_buf_puts(&b, "<p class=\"meta\">Reload: the gateway spreads requests over the healthy "
                          "instances.</p>\n</body></html>\n");
        if (b.oom)
                respond_text(req, 500, "out of memory\n");
        else
                demo_http_respond(req, 200, "text/html; charset=utf-8", NULL, b.data, b.len);
        log_request(req, b.oom ? 500 : 200);
        orch_buf_release(&b);
}

/* A page waiting for the API. */
struct page {
        struct demo_http_request *req;
        struct demo_http_client *client;
};

static void page_on_api(int r, int status, const char *body, size_t len, void *userdata)
{
        struct page *p = userdata;

        respond_page(p->req, r, status, body, len);
        free(p);
}

static void page_abort(struct demo_http_request *req)
{
        struct page *p = req->userdata;

        demo_http_client_cancel(p->client);
        free(p);
}

static void web_handle(struct demo_http_request *req, void *userdata)
{
        _cleanup_(freep) char *url = NULL;
        struct page *p;
        int r;

        demo.requests++;
        if (streq(req->path, "/healthz")) {
                respond_text(req, 200, "ok\n");
                return;
        }
        if (!streq(req->path, "/")) {
                respond_text(req, 404, "not found\n");
                log_request(req, 404);
                return;
        }
        if (!is_get(req)) {
                respond_not_allowed(req, "GET, HEAD");
                log_request(req, 405);
                return;
        }
        if (!demo.api_url) {
                respond_page(req, 0, 0, NULL, 0);
                return;
        }
        url = orch_strdup_printf("%s/items", demo.api_url);
        p = calloc(1, sizeof(*p));
        if (!url || !p) {
                free(p);
                respond_text(req, 500, "out of memory\n");
                return;
        }
        p->req = req;
        r = demo_http_client_request(demo.loop, "GET", url, NULL, NULL, 0, API_TIMEOUT_MS, page_on_api, p,
                                     &p->client);
        if (r < 0) {
                free(p);
                respond_page(req, r, 0, NULL, 0);
                return;
        }
        req->userdata = p;
        req->on_abort = page_abort;
}

/* ---- worker ---- */

static bool is_prime(uint64_t n)
{
        if (n < 2)
                return false;
        for (uint64_t d = 2; d * d <= n; d++)
                if (n % d == 0)
                        return false;
        return true;
}

static void job_done(void)
{
        if (demo.max_jobs > 0 && demo.jobs >= demo.max_jobs) {
                log_info("done after %" PRIu64 " jobs", demo.jobs);
                stop();
        }
}

static void job_on_api(int r, int status, const char *body, size_t len, void *userdata)
{
        uint64_t ms = orch_now_msec() - demo.job_started_ms;
        _cleanup_json_ json_t *j = NULL;
        const char *api_instance;
        json_t *items;

        demo.job_client = NULL;
        if (r < 0) {
                out("job=%" PRIu64 " error=\"%s\" ms=%" PRIu64, demo.jobs, uv_strerror(r), ms);
        } else {
                j = status == 200 ? json_loadb(body, len, 0, NULL) : NULL;
                if (j && orch_json_get_string(j, "instance", &api_instance) == 0 &&
                    orch_json_get_array(j, "items", &items) == 0)
                        out("job=%" PRIu64 " items=%zu api_instance=%s ms=%" PRIu64, demo.jobs,
                            json_array_size(items), api_instance, ms);
                else
                        out("job=%" PRIu64 " error=\"unexpected answer\" status=%d ms=%" PRIu64, demo.jobs,
                            status, ms);
        }
        job_done();
}

static void on_tick(uv_timer_t *t)
{
        _cleanup_(freep) char *url = NULL;
        int r;

        if (demo.job_client) {
                out("job=%" PRIu64 " still running: skipping a beat", demo.jobs);
                return;
        }
        demo.jobs++;
        demo.job_started_ms = orch_now_msec();
        if (!demo.api_url) {
                /* Without an API, the unit of work is a computation: the primes of one window. */
                uint64_t from = (demo.jobs - 1) * 20000, n = 0;

                for (uint64_t i = from; i < from + 20000; i++)
                        n += is_prime(i);
                out("job=%" PRIu64 " primes=%" PRIu64 " range=%" PRIu64 "-%" PRIu64 " ms=%" PRIu64,
                    demo.jobs, n, from, from + 19999, orch_now_msec() - demo.job_started_ms);
                job_done();
                return;
        }
        url = orch_strdup_printf("%s/items", demo.api_url);
        r = url ? demo_http_client_request(demo.loop, "GET", url, NULL, NULL, 0, API_TIMEOUT_MS, job_on_api,
                                           NULL, &demo.job_client)
                : -ENOMEM;
        if (r < 0) {
                out("job=%" PRIu64 " error=\"%s\"", demo.jobs, uv_strerror(r));
                job_done();
        }
}

/* ---- command line ---- */

static void usage(FILE *f)
{
        fputs("Usage: orch-demo web [--port N] [--bind ADDR] [--api URL]\n"
              "       orch-demo api [--port N] [--bind ADDR]\n"
              "       orch-demo worker [--interval DURATION] [--api URL] [--jobs N]\n"
              "\n"
              "The demo microservice of orch (see manifests/).\n"
              "  web      an HTML page showing the instance that served it and the API's items\n"
              "  api      a JSON API: GET|POST /items, GET|DELETE /items/ID, GET /, /healthz\n"
              "  worker   a unit of work every interval (default 5s), one line per job on stdout:\n"
              "           GET API/items when an API is set, a computation otherwise\n"
              "\n"
              "  --port N        port to listen on (default: $PORT); also env:NAME\n"
              "  --bind ADDR     address to listen on (default 0.0.0.0)\n"
              "  --api URL       the API's base URL, e.g. http://127.0.0.1:8080/api\n"
              "                  (default: $DEMO_API_URL)\n"
              "  --interval D    worker period: 500ms, 5s, 1m ... (default 5s)\n"
              "  --jobs N        worker: exit after N jobs (default: until stopped)\n",
              f);
}

static _noreturn_ _printf_(1, 2) void usage_error(const char *fmt, ...)
{
        va_list ap;

        fputs("orch-demo: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputs("\nTry 'orch-demo --help'.\n", stderr);
        exit(EXIT_USAGE);
}

static void set_api_url(const char *url)
{
        struct demo_http_url parsed;
        size_t l = strlen(url);

        /* "http://host/api/" and "http://host/api" mean the same base. */
        while (l > 0 && url[l - 1] == '/')
                l--;
        demo.api_url = strndup(url, l);
        if (!demo.api_url) {
                log_error("out of memory");
                exit(EXIT_FAILURE);
        }
        if (demo_http_url_parse(demo.api_url, &parsed) < 0 || strchr(demo.api_url, '?'))
                usage_error("invalid API URL '%s': expected http://HOST[:PORT][/PATH]", url);
}

static const char *env_or(const char *name, const char *fallback)
{
        const char *v = getenv(name);

        return v && *v ? v : fallback;
}

int main(int argc, char **argv)
{
        static const struct option options[] = {
                {"port", required_argument, NULL, 'p'}, {"bind", required_argument, NULL, 'b'},
                {"api", required_argument, NULL, 'a'},  {"interval", required_argument, NULL, 'i'},
                {"jobs", required_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'},
                {"version", no_argument, NULL, 'V'},    {},
        };
        const char *role, *port_arg = NULL, *bind = NULL, *api = NULL, *interval = NULL, *jobs = NULL;
        uint16_t port = 0;
        int opt, r;

        setvbuf(stdout, NULL, _IOLBF, 0);
        orch_log_open_auto();
        orch_log_set_program("orch-demo");

        if (argc < 2)
                usage_error("missing role: web, api or worker");
        role = argv[1];
        if (streq(role, "--help") || streq(role, "-h")) {
                usage(stdout);
                return EXIT_SUCCESS;
        }
        if (streq(role, "--version")) {
                puts("orch-demo " ORCH_VERSION);
                return EXIT_SUCCESS;
        }
        if (streq(role, "web"))
                demo.role = ROLE_WEB;
        else if (streq(role, "api"))
                demo.role = ROLE_API;
        else if (streq(role, "worker"))
                demo.role = ROLE_WORKER;
        else
                usage_error("unknown role '%s': expected web, api or worker", role);

        /* Options after the role: getopt sees argv[1..], named "orch-demo ROLE" in its messages. */
        argv[1] = orch_strdup_printf("orch-demo %s", role);
        if (!argv[1]) {
                log_error("out of memory");
                return EXIT_FAILURE;
        }
        while ((opt = getopt_long(argc - 1, argv + 1, "h", options, NULL)) != -1) {
                switch (opt) {
                case 'p':
                        port_arg = optarg;
                        break;
                case 'b':
                        bind = optarg;
                        break;
                case 'a':
                        api = optarg;
                        break;
                case 'i':
                        interval = optarg;
                        break;
                case 'j':
                        jobs = optarg;
                        break;
                case 'h':
                        usage(stdout);
                        return EXIT_SUCCESS;
                case 'V':
                        puts("orch-demo " ORCH_VERSION);
                        return EXIT_SUCCESS;
                default:
                        fputs("Try 'orch-demo --help'.\n", stderr);
                        return EXIT_USAGE;
                }
        }
        if (optind + 1 < argc)
                usage_error("unexpected argument '%s'", argv[optind + 1]);

        if (demo.role == ROLE_WORKER ? (port_arg || bind) : (interval || jobs))
                usage_error("%s does not apply to role %s",
                            port_arg   ? "--port"
                            : bind     ? "--bind"
                            : interval ? "--interval"
                                       : "--jobs",
                            role);
        if (demo.role == ROLE_API && api)
                usage_error("--api does not apply to role api");
        if (demo.role != ROLE_WORKER) {
                if (!port_arg && !getenv("PORT"))
                        usage_error("missing --port (and no PORT in the environment)");
                r = demo_parse_port(port_arg ? port_arg : "env:PORT", &port);
                if (r < 0)
                        usage_error("invalid port '%s': %s", port_arg ? port_arg : getenv("PORT"),
                                    strerror(-r));
        }
        if (demo.role != ROLE_API) {
                api = api ? api : getenv("DEMO_API_URL");
                if (api && *api)
                        set_api_url(api);
        }
        demo.interval_ms = 5000;
        if (interval && (orch_parse_duration(interval, &demo.interval_ms) < 0 || demo.interval_ms < 10 ||
                         demo.interval_ms > 24 * 3600 * 1000ULL))
                usage_error("invalid --interval '%s': a duration from 10ms to 24h, such as 500ms or 5s",
                            interval);
        if (jobs && (orch_parse_u64(jobs, &demo.max_jobs) < 0 || demo.max_jobs == 0))
                usage_error("invalid --jobs '%s': a positive number", jobs);

        if (gethostname(demo.hostname, sizeof(demo.hostname) - 1) < 0)
                orch_strlcpy(demo.hostname, "unknown", sizeof(demo.hostname));
        demo.service = env_or("ORCH_SERVICE", role);
        demo.node = env_or("ORCH_NODE", demo.hostname);
        demo.instance = env_or("ORCH_INSTANCE", NULL);
        if (!demo.instance) {
                static char fallback[64];

                (void)orch_snprintf(fallback, sizeof(fallback), "%s-%d", role, (int)getpid());
                demo.instance = fallback;
        }
        demo.started_ms = orch_now_msec();
        demo.loop = uv_default_loop();
        /* A client that goes away while we write must not kill us. */
        signal(SIGPIPE, SIG_IGN);
        uv_signal_init(demo.loop, &demo.sigterm);
        uv_signal_init(demo.loop, &demo.sigint);
        uv_signal_start(&demo.sigterm, on_signal, SIGTERM);
        uv_signal_start(&demo.sigint, on_signal, SIGINT);

        if (demo.role == ROLE_WORKER) {
                uv_timer_init(demo.loop, &demo.tick);
                demo.tick_open = true;
                uv_timer_start(&demo.tick, on_tick, demo.interval_ms, demo.interval_ms);
                log_info("worker started: a job every %" PRIu64 "ms, %s%s", demo.interval_ms,
                         demo.api_url ? "calling " : "computing primes", strempty(demo.api_url));
        } else {
                struct demo_http_server_config config = {
                        .bind = bind,
                        .port = port,
                        .name = "orch-demo",
                        .handler = demo.role == ROLE_WEB ? web_handle : api_handle,
                };
                char port_text[8];

                if (demo.role == ROLE_API) {
                        /* Something to show before anyone has posted. */
                        item_add("apples", NULL);
                        item_add("bread", NULL);
                        item_add("coffee", NULL);
                }
                r = demo_http_server_start(demo.loop, &config, &demo.server);
                if (r < 0) {
                        log_error("cannot listen on %s:%u: %s", bind ? bind : "0.0.0.0", port,
                                  uv_strerror(r));
                        return EXIT_FAILURE;
                }
                (void)orch_snprintf(port_text, sizeof(port_text), "%d", demo_http_server_port(demo.server));
                orch_log_fields(ORCH_LOG_INFO, NULL, "listening", "role", role, "instance", demo.instance,
                                "port", port_text, "api", demo.api_url, NULL);
        }

        uv_run(demo.loop, UV_RUN_DEFAULT);
        free(argv[1]);
        for (size_t i = 0; i < demo.n_items; i++)
                free(demo.items[i].name);
        free(demo.api_url);
        r = uv_loop_close(demo.loop);
        if (r < 0)
                log_warn("event loop not empty at exit: %s", uv_strerror(r));
        return EXIT_SUCCESS;
}
