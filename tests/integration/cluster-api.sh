#!/bin/bash
# Bad input at both of orchd's doors (SPEC §4, docs/protocol.md "Framing"), with three agents
# running instances: a bad manifest through the API gets 400 with its positions and changes
# nothing; a request without the token (or with a wrong one) gets 401; on the agent port, garbage,
# a frame over 16 MiB, a hello with a wrong join token and a frame before the hello each close only
# their own connection: the other agents' nodes stay ready and connected, their instances keep
# running with the same pids and no restart, and orchd keeps placing.
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

apply "kind: service
name: web
replicas: 3
command: [\"$IT_TESTPROG\", http, \"\${PORT}\"]
ports: [{name: http}]
health: {type: http, port: http, path: /healthz, interval: 300ms, timeout: 200ms, grace: 0s}
"
wait_for '[ "$(running_count web)" = 3 ]' 30 "3 web instances" || it_fail "web did not start"
snapshot() {
	instances | jpy '"\n".join("%s %s %s %s %s" % (i["id"], i["node"], i["pid"], i["restarts"], i["state"]) for i in j)'
}
services() { api GET /v1/services | jpy '" ".join("%s:%s:%s" % (s["name"], s["replicas"], s["revision"]) for s in j)'; }
before=$(snapshot)
services_before=$(services)
it_ok "3 web instances running"

# --- a bad manifest: 400, positions, nothing applied ----------------------------------------------
# a valid new service and an update of web in the same request as an error: none of it happens
bad="kind: service
name: newsvc
command: [\"$IT_TESTPROG\", sleep]
---
kind: service
name: web
replicas: 5
command: [\"$IT_TESTPROG\", http, \"\${PORT}\"]
ports: [{name: http}]
helth: {type: http, port: http, path: /healthz}
"
code=$(api_code POST /v1/apply "$bad")
[ "$code" = 400 ] || it_fail "a manifest with an unknown key got $code: $(cat "$IT_TMP/last-body")"
jpy 'any(e["line"] == 10 and e["column"] == 1 and "helth" in e["message"] for e in j["errors"])' <"$IT_TMP/last-body" ||
	it_fail "the 400 does not point at line 10, column 1 (helth): $(cat "$IT_TMP/last-body")"
jpy '"did you mean" in j["error"] and "health" in j["error"]' <"$IT_TMP/last-body" ||
	it_fail "no 'did you mean' for helth: $(cat "$IT_TMP/last-body")"
it_log "400: $(jpy 'j["error"]' <"$IT_TMP/last-body")"
code=$(api_code POST /v1/apply "kind: service
name: web
replicas: many
command: [\"$IT_TESTPROG\", sleep]
")
[ "$code" = 400 ] || it_fail "replicas: many got $code"
jpy 'j["errors"][0]["line"] == 3' <"$IT_TMP/last-body" || it_fail "replicas: many: $(cat "$IT_TMP/last-body")"
code=$(api_code POST /v1/apply '{"kind": "service", "name": 42}')
[ "$code" = 400 ] || it_fail "a JSON manifest with a number for the name got $code"
code=$(api_code POST /v1/apply '')
[ "$code" = 400 ] || it_fail "an empty apply got $code"
code=$(api_code POST /v1/services/web/scale '{"replicas": -1}')
[ "$code" = 400 ] || it_fail "scale to -1 got $code"
code=$(api_code POST /v1/services/nosuch/scale '{"replicas": 1}')
[ "$code" = 404 ] || it_fail "scale of an unknown service got $code"
[ "$(services)" = "$services_before" ] || it_fail "a refused request changed the services: $(services)"
[ "$(snapshot)" = "$before" ] || it_fail "a refused request changed the instances"
it_ok "bad manifests get 400 with positions; nothing changed"

# --- the token ------------------------------------------------------------------------------------
for path in /v1/services /v1/instances /v1/nodes /metrics; do
	code=$(it_hub curl -s -o /dev/null -w '%{http_code}' "$IT_URL$path")
	[ "$code" = 401 ] || it_fail "GET $path without a token got $code"
	code=$(it_hub curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer x$IT_TOKEN" "$IT_URL$path")
	[ "$code" = 401 ] || it_fail "GET $path with a wrong token got $code"
done
code=$(it_hub curl -s -o "$IT_TMP/last-body" -w '%{http_code}' -X POST --data-binary "$bad" "$IT_URL/v1/apply")
[ "$code" = 401 ] || it_fail "apply without a token got $code"
code=$(it_hub curl -s -o /dev/null -w '%{http_code}' -X DELETE "$IT_URL/v1/services/web")
[ "$code" = 401 ] || it_fail "DELETE without a token got $code"
code=$(it_hub curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $(cat "$IT_ORCHD_DATA/join.token")" "$IT_URL/v1/services")
[ "$code" = 401 ] || it_fail "the join token opened the API ($code)"
code=$(it_hub curl -s -o /dev/null -w '%{http_code}' "$IT_URL/healthz")
[ "$code" = 200 ] || it_fail "/healthz without a token got $code"
[ "$(services)" = "$services_before" ] || it_fail "an unauthenticated request changed the services"
# the scheme is case-insensitive (RFC 9110 §11.1)
code=$(it_hub curl -s -o /dev/null -w '%{http_code}' -H "Authorization: bearer $IT_TOKEN" "$IT_URL/v1/services")
[ "$code" = 200 ] || it_fail "'bearer' (lower case) with the right token got $code"
it_ok "no token, a wrong token or the join token: 401; /healthz is open; 'bearer' works too"

# --- hostile frames on the agent port ---------------------------------------------------------------
host=${IT_AGENT_ADDR%:*}
port=${IT_AGENT_ADDR##*:}
# hostile MODE: one connection to the agent port; prints what orchd answered before closing it.
hostile() {
	"$IT_PY" - "$host" "$port" "$1" "$(cat "$IT_ORCHD_DATA/join.token")" <<'PY'
import json, socket, sys
host, port, mode, token = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.create_connection((host, port), timeout=20)
hello = {"type": "hello", "proto": 1, "node": "intruder", "token": "wrong-" + token,
         "address": "127.0.0.1", "capacity": {"cpu_millis": 1000, "memory": 1 << 30},
         "drivers": ["exec"], "version": "0.1.0", "instances": []}
try:
    if mode == "garbage":
        s.sendall(b"garbage\n")
    elif mode == "binary":
        s.sendall(bytes(range(256)) * 16 + b"\n")
    elif mode == "oversized":
        chunk = b"x" * (1 << 20)
        for _ in range(17):
            s.sendall(chunk)
    elif mode == "badtoken":
        s.sendall(json.dumps(hello).encode() + b"\n")
    elif mode == "nohello":
        s.sendall(b'{"type": "heartbeat", "seq": 1}\n')
    elif mode == "nodename":
        hello["token"] = token
        hello["node"] = "-bad-"
        s.sendall(json.dumps(hello).encode() + b"\n")
except (BrokenPipeError, ConnectionResetError):
    pass
data = b""
try:
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
except (ConnectionResetError, socket.timeout):
    pass
print(data.decode(errors="replace").strip()[:300])
PY
}
for mode in garbage binary oversized badtoken nohello nodename; do
	answer=$(hostile "$mode") || it_fail "the $mode connection failed: $answer"
	echo "$answer" | grep -q '"type":"error"' || it_fail "orchd's answer to $mode is not an error frame: $answer"
	it_log "$mode: $answer"
done
# printf on /dev/tcp, as an operator would
printf 'garbage\n' >"/dev/tcp/$host/$port" || it_fail "cannot write to the agent port"
nodes_ok() {
	api GET /v1/nodes | jpy 'sorted(n["name"] for n in j if n["state"] == "ready" and n["connected"]) == ["node1", "node2", "node3"] and len(j) == 3'
}
nodes_ok || it_fail "nodes after the hostile frames: $(api GET /v1/nodes)"
# the agents' connections were not disturbed: still connected after a few heartbeats, no reconnect
sleep 1
nodes_ok || it_fail "nodes a second after the hostile frames: $(api GET /v1/nodes)"
for k in 1 2 3; do
	[ "$(grep -c 'registered with orchd' "$IT_TMP/agent-$k.log")" = 1 ] ||
		it_fail "agent $k reconnected: $(grep 'orchd' "$IT_TMP/agent-$k.log" | tail -n 3)"
done
[ "$(snapshot)" = "$before" ] || it_fail "instances changed: $(diff <(echo "$before") <(snapshot))"
kill -0 "$IT_ORCHD_PID" || it_fail "orchd died"
scale web 4
wait_for '[ "$(running_count web)" = 4 ] && [ "$(testprog_procs)" = 4 ]' 20 "4 web instances" ||
	it_fail "orchd no longer places: $(running_count web) running"
it_ok "garbage, binary, oversized, bad token, no hello, bad node name: each refused alone; agents untouched"

# An agent with a malformed --server exits 2 with the reason before it makes anything.
for bad in nonsense 127.0.0.1:99999 'bad host:7071' :7071 ::1 '[::1:7071' '[]:7071'; do
	status=0
	timeout 10 "$IT_AGENT_BIN" --server "$bad" --name bad-node --data-dir "$IT_TMP/agent-bad" \
		--cgroup-parent "/orch-it-$IT_ID-9" --join-token-file "$IT_ORCHD_DATA/join.token" \
		>"$IT_TMP/agent-bad.out" 2>&1 || status=$?
	[ "$status" = 2 ] || it_fail "orch-agent --server '$bad' exited $status: $(cat "$IT_TMP/agent-bad.out")"
	grep -q "expected HOST:PORT" "$IT_TMP/agent-bad.out" || it_fail "no reason for --server '$bad': $(cat "$IT_TMP/agent-bad.out")"
	for d in /sys/fs/cgroup/orch-it-"$IT_ID"-9 /sys/fs/cgroup/*/orch-it-"$IT_ID"-9; do
		[ ! -e "$d" ] || it_fail "orch-agent --server '$bad' left $d"
	done
	[ ! -e "$IT_TMP/agent-bad" ] || it_fail "orch-agent --server '$bad' made its data dir"
done
it_ok "an agent with a malformed --server (7 kinds) exits 2 and leaves nothing"

# orchd with a malformed listen address: exit 2 with the reason, and no data dir made.
for flag in --api-listen --agent-listen --gateway-listen --dns-listen; do
	status=0
	timeout 10 "$IT_ORCHD_BIN" --data-dir "$IT_TMP/orchd-bad" "$flag" 127.0.0.1:99999 >"$IT_TMP/orchd-bad.out" 2>&1 || status=$?
	[ "$status" = 2 ] || it_fail "orchd $flag 127.0.0.1:99999 exited $status: $(cat "$IT_TMP/orchd-bad.out")"
	grep -q -- "'$flag': expected HOST:PORT" "$IT_TMP/orchd-bad.out" || it_fail "no reason for $flag: $(cat "$IT_TMP/orchd-bad.out")"
	[ ! -e "$IT_TMP/orchd-bad" ] || it_fail "orchd with a bad $flag made its data dir"
done
it_ok "orchd with a malformed listen address exits 2 and makes nothing"
