#!/bin/bash
# Rolling updates under watch (docs/control-plane.md, "Rollouts"): a 4-replica HTTP service with a
# health check and update {max_surge: 1, max_unavailable: 1} on three agents. A poller reads the
# registry's endpoints (healthy instances only) every 100 ms and requests /healthz from each of
# them directly: through a good update and two broken ones, at every sample at least
# replicas - max_unavailable = 3 instances answer. A new revision whose command exits, and one whose
# health check never passes, each fail the rollout by themselves (GET /v1/services/web/rollout
# shows failed, a rollout event says so) and the service is back on the previous revision, 4
# instances of it healthy.
# wait_for conditions are single-quoted on purpose (evaluated at each poll); IT_* are lib.sh's
# shellcheck disable=SC2016,SC2034,SC2119
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

it_init
IT_ORCHD_EXTRA=(--heartbeat-interval 300ms)
it_orchd_start
for k in 1 2 3; do it_agent_start "$k"; done
it_wait_nodes 3

# web VERSION [COMMAND-YAML]: the manifest; VERSION changes the revision.
web() {
	local cmd="[\"$IT_TESTPROG\", http, \"\${PORT}\"]"
	cat <<EOF
kind: service
name: web
replicas: 4
command: ${2:-$cmd}
env: {VERSION: "$1"}
ports: [{name: http}]
health: {type: http, port: http, path: /healthz, interval: 200ms, timeout: 200ms, grace: 0s, unhealthy_threshold: 2}
restart: {policy: always, backoff: 100ms}
stop: {timeout: 2s}
update: {max_surge: 1, max_unavailable: 1, min_healthy: 1s, progress_deadline: 6s}
EOF
}
healthy() { instances web | jpy 'len([i for i in j if i["state"] == "running" and i["health"] == "passing"])'; }
revision() { api GET /v1/services/web | jpy 'j["revision"]'; }
rollout() { api GET /v1/services/web/rollout | jpy 'j["state"]'; }
# settled REV: 4 live instances, all of REV, running and passing; the rollout is not progressing.
settled() {
	instances web | jpy "
live = [i for i in j if i['desired'] == 'run' and i['state'] not in ('lost', 'exited', 'failed')]
len(live) == 4 and all(i['revision'] == '$1' and i['state'] == 'running' and i['health'] == 'passing' for i in live)" &&
		[ "$(rollout)" != progressing ]
}

apply "$(web 1)"
wait_for '[ "$(healthy)" = 4 ]' 30 "4 healthy instances of web" || it_fail "web did not come up"
rev1=$(revision)
it_ok "web revision $rev1: 4 healthy instances"

# --- the poller -----------------------------------------------------------------------------------
# One line per sample: "MS OK ENDPOINTS", OK being how many of the registry's endpoints answered 200.
"$IT_PY" - "$IT_URL" "$IT_TOKEN" "$IT_TMP/samples" "$IT_TMP/stop-poller" <<'PY' &
import http.client, json, os, sys, time
url, token, out, stop = sys.argv[1:5]
host, port = url.split("//")[1].split(":")
t0 = time.monotonic()
with open(out, "w", buffering=1) as f:
    while not os.path.exists(stop):
        start = time.monotonic()
        try:
            c = http.client.HTTPConnection(host, int(port), timeout=2)
            c.request("GET", "/v1/registry/web", headers={"Authorization": "Bearer " + token})
            eps = json.loads(c.getresponse().read())["endpoints"]
            c.close()
        except Exception as e:
            f.write("%d -1 -1 registry: %s\n" % ((start - t0) * 1000, e))
            time.sleep(0.1)
            continue
        ok = 0
        for e in eps:
            try:
                c = http.client.HTTPConnection(e["address"], e["port"], timeout=1)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    ok += 1
                c.close()
            except Exception:
                pass
        f.write("%d %d %d\n" % ((start - t0) * 1000, ok, len(eps)))
        time.sleep(max(0, 0.1 - (time.monotonic() - start)))
PY
poller=$!
it_on_exit "touch $IT_TMP/stop-poller; kill $poller"
wait_for '[ "$(wc -l <"$IT_TMP/samples")" -ge 3 ]' 10 "the poller's first samples" || it_fail "the poller does not sample"

# min_ok: the fewest answering instances over the samples so far, and the sample.
min_ok() { sort -k2,2n "$IT_TMP/samples" | head -n 1; }
check_floor() {
	local m
	m=$(min_ok)
	[ "$(echo "$m" | awk '{print $2}')" -ge 3 ] ||
		it_fail "$1: only $(echo "$m" | awk '{print $2}') instances answered at ${m%% *} ms (of $(echo "$m" | awk '{print $3}') endpoints): $(awk '$2 < 3' "$IT_TMP/samples" | head -n 5 | tr '\n' ';')"
}

# --- a good update --------------------------------------------------------------------------------
apply "$(web 2)"
rev2=$(revision)
[ "$rev2" != "$rev1" ] || it_fail "changing env did not change the revision"
wait_for "settled $rev2" 60 "the rollout to $rev2" ||
	it_fail "rollout to $rev2: $(api GET /v1/services/web/rollout); instances: $(instances web | jpy '[(i["revision"], i["state"], i["health"]) for i in j]')"
[ "$(rollout)" = complete ] || it_fail "the rollout is $(rollout), not complete"
check_floor "rolling to $rev2"
it_ok "rolled to $rev2 with at least $(min_ok | awk '{print $2}') of 4 answering at every sample ($(wc -l <"$IT_TMP/samples") samples)"

# failed_seen BAD: the rollout record says the rollout to BAD failed: its state is failed, or (once
# the automatic revert has started a rollout back) its last_failure names BAD.
failed_seen() {
	api GET /v1/services/web/rollout | jpy "j['state'] == 'failed' or (j.get('last_failure') or {}).get('revision') == '$1'"
}

# broken NAME MANIFEST: applies a broken revision and waits for the rollout to fail and revert.
broken() {
	local what=$1 bad
	apply "$2"
	bad=$(revision)
	[ "$bad" != "$rev2" ] || it_fail "$what: the broken manifest did not change the revision"
	wait_for "failed_seen $bad" 40 "the rollout to $bad to fail" ||
		it_fail "$what: the rollout to $bad did not fail: $(api GET /v1/services/web/rollout)"
	it_log "$what: $(api GET /v1/services/web/rollout)"
	wait_for "settled $rev2" 60 "the service to be back on $rev2" ||
		it_fail "$what: not back on $rev2: $(api GET /v1/services/web/rollout); $(instances web | jpy '[(i["revision"], i["state"], i["health"]) for i in j]')"
	[ "$(revision)" = "$rev2" ] || it_fail "$what: the service's revision is $(revision), not $rev2"
	failed_seen "$bad" || it_fail "$what: after the revert the rollout record forgot the failure: $(api GET /v1/services/web/rollout)"
	api GET '/v1/events?since=0' | grep '"type":"rollout"' | grep "$bad" | grep -q failed ||
		it_fail "$what: no rollout event says the rollout to $bad failed"
	check_floor "$what"
	it_ok "$what: rollout to $bad failed by itself, service back on $rev2, never fewer than 3 answering"
}

broken "a command that exits" "$(web 3 "[\"$IT_TESTPROG\", exit, \"1\", --after, \"50\"]")"
touch "$IT_TMP/sick"
broken "a failing health check" "$(web 4 "[\"$IT_TESTPROG\", http, \"\${PORT}\", --health-file, \"$IT_TMP/sick\"]")"

touch "$IT_TMP/stop-poller"
wait "$poller" 2>/dev/null || true
errors=$(awk '$2 == -1' "$IT_TMP/samples" | wc -l)
[ "$errors" = 0 ] || it_fail "the registry did not answer $errors times: $(awk '$2 == -1' "$IT_TMP/samples" | head -n 3)"
it_ok "$(wc -l <"$IT_TMP/samples") samples over the three rollouts, the fewest answering: $(min_ok | awk '{print $2}')"
