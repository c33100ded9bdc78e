#!/bin/bash
# The gateway end to end (SPEC §5, docs/gateway.md): orchd with its gateway (two workers) and two
# agents running orch-testprog instances of routed services, applied through the API. The routes
# follow the registry without a restart: traffic reaches only healthy instances and is spread over
# them; a route that moves or gets a host takes effect at once; an instance killed under continuous
# traffic costs no client an error; no instance gives 503 and no route 404; a rate limit gives 429
# with Retry-After; an api-key route gives 401 until a key created through the API is presented, and
# again once the key is deleted; /metrics counts by route; SIGTERM stops orchd cleanly.
# wait_for conditions are single-quoted on purpose (evaluated at each poll); IT_* are lib.sh's
# shellcheck disable=SC2016,SC2034,SC2119
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

it_init
GW_PORT=$(it_free_port)
GW=http://127.0.0.1:$GW_PORT
IT_ORCHD_EXTRA=(--heartbeat-interval 300ms --gateway-listen "127.0.0.1:$GW_PORT" --gateway-workers 2)
it_orchd_start
it_agent_start 1
it_agent_start 2
it_wait_nodes 2
it_ok "orchd with its gateway on $GW and 2 agents up"

# web REPLICAS ROUTE: orch-testprog's HTTP server behind the gateway, with a health check.
web() {
	printf 'kind: service\nname: web\nreplicas: %s\ncommand: ["%s", http, "${PORT}"]\nports: [{name: http}]\n' \
		"$1" "$IT_TESTPROG"
	printf 'health: {type: http, path: /healthz, interval: 300ms, timeout: 200ms, grace: 0s}\n'
	printf 'restart: {backoff: 100ms}\nstop: {timeout: 2s}\nroute: %s\n' "$2"
}

# gw PATH [CURL-ARGS...]: the status of a GET through the gateway; the body goes to $IT_TMP/gw-body,
# the head to $IT_TMP/gw-head.
gw() {
	local path=$1
	shift
	curl -s -o "$IT_TMP/gw-body" -D "$IT_TMP/gw-head" -w '%{http_code}' --max-time 10 "$@" "$GW$path"
}
# gw_header NAME: a field of the last answer
gw_header() { grep -i "^$1:" "$IT_TMP/gw-head" | head -1 | cut -d' ' -f2- | tr -d '\r'; }
# endpoints SERVICE: how many healthy endpoints the registry lists
endpoints() { api GET "/v1/registry/$1" | jpy 'len(j["endpoints"])'; }

# --- routing and balancing ------------------------------------------------------------------------
apply "$(web 2 '{path: /app, strip_prefix: true}')"
wait_for '[ "$(endpoints web)" = 2 ]' 30 "2 healthy web endpoints" || it_fail "web has $(endpoints web) endpoints"
wait_for '[ "$(gw /app/)" = 200 ]' 5 "the gateway to route /app" || it_fail "/app/ answers $(gw /app/)"
declare -A seen=()
for _ in $(seq 40); do
	[ "$(gw /app/)" = 200 ] || it_fail "GET /app/ through the gateway: $(cat "$IT_TMP/gw-body")"
	seen[$(gw_header X-Instance)]=$((${seen[$(gw_header X-Instance)]:-0} + 1))
done
[ "${#seen[@]}" = 2 ] || it_fail "40 requests reached ${#seen[@]} instance(s): ${!seen[*]}"
for k in "${!seen[@]}"; do
	[ "${seen[$k]}" -ge 10 ] || it_fail "uneven balance: ${seen[*]} over ${!seen[*]}"
done
it_ok "40 requests spread over both instances (${seen[*]})"

[ "$(gw '/app/echo?x=1' -H 'X-Forwarded-For: 198.51.100.7' -H 'X-Request-Id: it-42')" = 200 ] || it_fail "echo"
grep -q '^GET /echo?x=1 HTTP/1.1$' "$IT_TMP/gw-body" || it_fail "the prefix was not stripped: $(head -1 "$IT_TMP/gw-body")"
grep -q '^X-Forwarded-For: 198.51.100.7, 127.0.0.1$' "$IT_TMP/gw-body" || it_fail "X-Forwarded-For: $(grep -i forwarded-for "$IT_TMP/gw-body")"
grep -q '^X-Forwarded-Proto: http$' "$IT_TMP/gw-body" || it_fail "no X-Forwarded-Proto"
grep -q '^X-Request-Id: it-42$' "$IT_TMP/gw-body" || it_fail "the instance did not get the X-Request-Id"
[ "$(gw_header X-Request-Id)" = it-42 ] || it_fail "the answer's X-Request-Id: $(gw_header X-Request-Id)"
[ "$(gw /elsewhere)" = 404 ] || it_fail "an unrouted path: $(cat "$IT_TMP/gw-body")"
grep -q '"error"' "$IT_TMP/gw-body" || it_fail "404 without a JSON error"
it_ok "prefix stripped, X-Forwarded-For/-Proto and X-Request-Id passed, 404 off the route"

# --- a route change applies without a restart --------------------------------------------------------
apply "$(web 2 '{path: /v2, host: app.example.com, strip_prefix: true}')"
wait_for '[ "$(gw /v2/echo -H "Host: APP.example.com:80")" = 200 ]' 5 "the route to move to app.example.com/v2" ||
	it_fail "/v2 with the host: $(gw /v2/echo -H 'Host: app.example.com') $(cat "$IT_TMP/gw-body")"
grep -q '^GET /echo HTTP/1.1$' "$IT_TMP/gw-body" || it_fail "the new prefix was not stripped"
[ "$(gw /v2/echo -H 'Host: other.example.com')" = 404 ] && grep -q "no route" "$IT_TMP/gw-body" ||
	it_fail "another host reached the route"
[ "$(gw /app/)" = 404 ] || it_fail "the old route still answers"
apply "$(web 2 '{}')"
wait_for '[ "$(gw /)" = 200 ]' 5 "the route to move to /" || it_fail "/ is not routed"
it_ok "route changes follow an apply at once (path, host)"

# --- an instance killed under load ---------------------------------------------------------------------
"$IT_PY" - "$GW_PORT" "$IT_TMP/load" <<'EOF' &
import http.client, sys, time
port, out = int(sys.argv[1]), sys.argv[2]
ok = bad = 0
errors = []
end = time.time() + 6
conn = None
while time.time() < end:
    try:
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/slow?ms=5")
        r = conn.getresponse()
        r.read()
        if r.status == 200:
            ok += 1
        else:
            bad += 1
            errors.append(r.status)
        if ok % 5 == 0:
            conn.close()
            conn = None
    except Exception as e:
        bad += 1
        errors.append(repr(e))
        conn = None
open(out, "w").write("%d %d %s\n" % (ok, bad, errors[:5]))
EOF
load_pid=$!
sleep 1.5
victim=$(instances web | jpy '[i for i in j if i["state"] == "running"][0]["pid"]')
kill -KILL "$victim"
it_log "killed web instance pid $victim under load"
wait "$load_pid"
read -r ok bad rest <"$IT_TMP/load"
[ "$bad" = 0 ] || it_fail "$bad of $((ok + bad)) requests failed while an instance died: $rest"
[ "$ok" -gt 100 ] || it_fail "only $ok requests in 6 s"
wait_for '[ "$(endpoints web)" = 2 ]' 30 "the killed instance to be back" || it_fail "web has $(endpoints web) endpoints"
it_ok "$ok requests, none failed, while an instance was killed and restarted"

# --- no instance: 503 ----------------------------------------------------------------------------------
scale web 0
wait_for '[ "$(gw /)" = 503 ]' 20 "503 without instances" || it_fail "with no instance: $(gw /)"
[ -n "$(gw_header Retry-After)" ] || it_fail "503 without Retry-After"
it_ok "no healthy instance: 503"

# --- API keys and rate limits --------------------------------------------------------------------------
apply "kind: service
name: vault
command: [\"$IT_TESTPROG\", http, \"\${PORT}\"]
ports: [{name: http}]
health: {type: http, path: /healthz, interval: 300ms, timeout: 200ms, grace: 0s}
route: {path: /vault, strip_prefix: true, auth: api-key}
"
wait_for '[ "$(endpoints vault)" = 1 ]' 30 "vault to be healthy" || it_fail "vault did not start"
wait_for '[ "$(gw /vault/)" = 401 ]' 5 "the vault route" || it_fail "vault without a key: $(gw /vault/)"
[ -n "$(gw_header WWW-Authenticate)" ] || it_fail "401 without WWW-Authenticate"
created=$(api POST /v1/apikeys '{"service": "vault", "name": "ci"}') || it_fail "creating a key: $created"
key=$(echo "$created" | jpy 'j["key"]')
id=$(echo "$created" | jpy 'j["id"]')
[ "$(api_code POST /v1/apikeys '{"service": "nosuch", "name": "x"}')" = 404 ] || it_fail "a key for an unknown service"
[ "$(api_code POST /v1/apikeys '{"service": "vault"}')" = 400 ] || it_fail "a key without a name"
api GET /v1/apikeys | jpy "len(j) == 1 and j[0]['id'] == '$id' and 'key' not in j[0] and j[0]['service'] == 'vault'" >/dev/null ||
	it_fail "GET /v1/apikeys: $(api GET /v1/apikeys)"
grep -rqF "${key#orch_}" "$IT_ORCHD_DATA" && it_fail "the key is stored in clear in $IT_ORCHD_DATA"
wait_for "[ \"\$(gw /vault/echo -H 'X-API-Key: $key')\" = 200 ]" 5 "the key to open vault" ||
	it_fail "vault with its key: $(gw /vault/echo -H "X-API-Key: $key")"
grep -qi '^x-api-key' "$IT_TMP/gw-body" && it_fail "the instance saw the API key"
[ "$(gw /vault/ -H "Authorization: Bearer $key")" = 200 ] || it_fail "vault with a bearer key"
[ "$(gw /vault/ -H 'X-API-Key: orch_0000')" = 401 ] || it_fail "vault with a wrong key"
[ "$(api_code DELETE "/v1/apikeys/$id")" = 200 ] || it_fail "deleting the key"
[ "$(api_code DELETE "/v1/apikeys/$id")" = 404 ] || it_fail "deleting the key twice"
wait_for "[ \"\$(gw /vault/ -H 'X-API-Key: $key')\" = 401 ]" 5 "the deleted key to be refused" || it_fail "a deleted key still opens vault"
it_ok "api-key route: 401 without, 200 with a key from the API (kept hashed), 401 once it is deleted"

apply "kind: service
name: limited
command: [\"$IT_TESTPROG\", http, \"\${PORT}\"]
ports: [{name: http}]
health: {type: http, path: /healthz, interval: 300ms, timeout: 200ms, grace: 0s}
route: {path: /limited, strip_prefix: true, rate_limit: 3/m}
"
wait_for '[ "$(endpoints limited)" = 1 ]' 30 "limited to be healthy" || it_fail "limited did not start"
codes=
for _ in 1 2 3 4 5 6; do codes="$codes $(gw /limited/)"; done
# three requests a minute pass (the first may meet the table a moment before the instance: 503)
case $codes in
" 200 200 200 429 429 429" | " 503 200 200 429 429 429") ;;
*) it_fail "rate limit 3/m: $codes" ;;
esac
[ "$(gw_header Retry-After)" -ge 1 ] || it_fail "429 without Retry-After"
it_ok "rate limit 3/m: $codes, with Retry-After"

# --- metrics and a clean stop ------------------------------------------------------------------------
api GET /metrics >"$IT_TMP/metrics"
grep -q '^orch_gateway_requests_total{route="web",class="2xx"} [1-9]' "$IT_TMP/metrics" || it_fail "no web 2xx in /metrics"
grep -q '^orch_gateway_requests_total{route="vault",class="4xx"} [1-9]' "$IT_TMP/metrics" || it_fail "no vault 4xx in /metrics"
grep -q '^orch_gateway_request_duration_seconds_count{route="web"}' "$IT_TMP/metrics" || it_fail "no latency histogram"
# the text format: one TYPE per family, before its samples, and a family's samples in one group
"$IT_PY" - "$IT_TMP/metrics" <<'PY' || it_fail "/metrics is not valid Prometheus text (the reason is above)"
import re, sys
typed, done, cur = {}, set(), None
for n, line in enumerate(open(sys.argv[1]), 1):
    line = line.rstrip("\n")
    if line.startswith("# TYPE "):
        name, kind = line.split()[2:4]
        assert name not in typed, "line %d: a second TYPE for %s" % (n, name)
        typed[name] = kind
        continue
    if not line or line.startswith("#"):
        continue
    m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$", line)
    assert m, "line %d: not a sample: %r" % (n, line)
    name = m.group(1)
    fam = name
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and typed.get(name[: -len(suffix)]) == "histogram":
            fam = name[: -len(suffix)]
    assert fam in typed, "line %d: %s before its TYPE" % (n, fam)
    if fam != cur:
        assert fam not in done, "line %d: the samples of %s are not one group" % (n, fam)
        if cur:
            done.add(cur)
        cur = fam
    float(m.group(3))
PY
it_ok "/metrics counts requests by route and class, in valid Prometheus text"
it_orchd_kill TERM
[ "$IT_ORCHD_STATUS" = 0 ] || it_fail "orchd exited with $IT_ORCHD_STATUS after SIGTERM"
curl -s -o /dev/null --max-time 2 "$GW/" && it_fail "the gateway still answers after orchd stopped"
it_ok "SIGTERM: orchd and its gateway stopped"
