#!/bin/sh
# The orch CLI end to end against a real orchd from the build tree (free ports, a temporary data
# dir): apply and its output lines, --dry-run, all-or-nothing on a broken manifest, tokens and
# unreachable servers, get/describe tables and -o json keys (SPEC §3), scale, delete, events,
# rollout, drain/uncordon, help and bad usage. Without agents instances stay pending with a
# reason; when orch-agent is built and we are root, one agent joins so that instances really run
# and `orch logs` shows their output (that part is skipped with a message otherwise).
set -eu

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
top_builddir=${top_builddir:-$top_srcdir}
orch=$top_builddir/cli/orch
orchd=$top_builddir/orchd/orchd
agent=$top_builddir/agent/orch-agent
[ -x "$orch" ] || { echo "SKIP: $orch is not built"; exit 77; }
[ -x "$orchd" ] || { echo "SKIP: $orchd is not built"; exit 77; }
command -v python3 >/dev/null || { echo "SKIP: python3 is needed to check JSON and pick free ports"; exit 77; }
orch=$(cd "$(dirname "$orch")" && pwd)/orch

tmp=$(mktemp -d)
# instances run as nobody in work dirs under the agent's data dir in here
chmod 0755 "$tmp"
orchd_pid=
agent_pid=
cgroup_parent=orch-test-cli-$$
failures=0

cleanup() {
	# set -e applies in the trap too: how the daemons exit must not decide the test's status
	if [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null; then wait "$agent_pid" 2>/dev/null || true; fi
	if [ -n "$orchd_pid" ] && kill "$orchd_pid" 2>/dev/null; then wait "$orchd_pid" 2>/dev/null || true; fi
	# the agent removes its cgroups when it stops its instances; anything left goes here
	for d in /sys/fs/cgroup/"$cgroup_parent" /sys/fs/cgroup/*/"$cgroup_parent"; do
		if [ -d "$d" ]; then find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
	done
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
	echo "FAIL: $*"
	failures=$((failures + 1))
}

# run EXPECTED-STATUS ARGS...: orch with stdout and stderr captured in $tmp/out and $tmp/err.
run() {
	want=$1
	shift
	status=0
	"$orch" "$@" >"$tmp/out" 2>"$tmp/err" || status=$?
	if [ "$status" != "$want" ]; then
		fail "orch $* exited $status, expected $want"
		sed 's/^/  | /' "$tmp/out" "$tmp/err"
	fi
}

# runenv EXPECTED-STATUS ENV-ARGS... COMMAND ARGS...: the same through env(1), for variables.
runenv() {
	want=$1
	shift
	status=0
	env "$@" >"$tmp/out" 2>"$tmp/err" || status=$?
	if [ "$status" != "$want" ]; then
		fail "env $* exited $status, expected $want"
		sed 's/^/  | /' "$tmp/out" "$tmp/err"
	fi
}

expect_line() { # FILE REGEX
	grep -Eq -- "$2" "$1" || { fail "no line matching '$2' in $(basename "$1"):"; sed 's/^/  | /' "$1"; }
}

expect_no_line() { # FILE REGEX
	! grep -Eq -- "$2" "$1" || { fail "a line matches '$2' in $(basename "$1"):"; sed 's/^/  | /' "$1"; }
}

# json_check FILE PYTHON-EXPRESSION: the expression, with `j` the parsed file, must be true.
json_check() {
	python3 - "$1" "$2" <<'PY' || { fail "JSON check failed: $2"; sed 's/^/  | /' "$1"; }
import json, sys
j = json.load(open(sys.argv[1]))
ok = eval("(" + sys.argv[2] + ")")
if not ok:
    sys.exit(1)
PY
}

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# orchd on free ports (another process may take a port between the probe and the bind: retry).
mkdir "$tmp/orchd"
gateway_opt=
"$orchd" --help 2>/dev/null | grep -q -- --gateway-listen && gateway_opt=yes
for attempt in 1 2 3 4 5; do
	api_port=$(free_port)
	agent_port=$(free_port)
	set -- --api-listen "127.0.0.1:$api_port" --agent-listen "127.0.0.1:$agent_port" \
		--data-dir "$tmp/orchd" --store-no-fsync --heartbeat-interval 200ms
	[ -n "$gateway_opt" ] && set -- "$@" --gateway-listen "127.0.0.1:$(free_port)"
	"$orchd" "$@" >"$tmp/orchd.log" 2>&1 &
	orchd_pid=$!
	i=0
	while [ $i -lt 100 ] && kill -0 "$orchd_pid" 2>/dev/null && ! grep -q 'serving the API' "$tmp/orchd.log"; do
		sleep 0.05
		i=$((i + 1))
	done
	grep -q 'serving the API' "$tmp/orchd.log" && break
	kill "$orchd_pid" 2>/dev/null && wait "$orchd_pid" 2>/dev/null
	orchd_pid=
	grep -q 'in use' "$tmp/orchd.log" || break
done
if [ -z "$orchd_pid" ]; then
	echo "FAIL: orchd did not start:"
	sed 's/^/  | /' "$tmp/orchd.log"
	exit 1
fi
ORCH_ADDR=http://127.0.0.1:$api_port
ORCH_TOKEN_FILE=$tmp/orchd/admin.token
export ORCH_ADDR ORCH_TOKEN_FILE
unset ORCH_TOKEN NO_COLOR || true

cd "$tmp"
cat >web.yaml <<'YAML'
kind: service
name: web
replicas: 2
command: ["/bin/sh", "-c", "exec sleep 1000"]
ports:
  - name: http
route:
  path: /web
YAML
cat >more.yaml <<'YAML'
kind: service
name: api
command: 'i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 0.2; done'
resources: {cpu: 100m, memory: 16Mi}
---
kind: service
name: worker
replicas: 3
command: [/bin/sleep, "1000"]
YAML
cat >broken.yaml <<'YAML'
kind: service
name: broken
replicas: 1
comand: [/bin/true]
YAML

# --- tokens and servers --------------------------------------------------------------------------
runenv 1 ORCH_TOKEN=not-the-token "$orch" get services
expect_line "$tmp/err" '^orch: missing or invalid API token'
[ "$(wc -l <"$tmp/err")" -eq 1 ] || fail "the 401 error is not one line"
# no token at all (or, where /var/lib/orch/admin.token is readable, another orchd's): the same 401
runenv 1 -u ORCH_TOKEN -u ORCH_TOKEN_FILE "$orch" get services
expect_line "$tmp/err" '^orch: missing or invalid API token'
runenv 1 ORCH_TOKEN_FILE="$tmp/no-such-token" "$orch" get services
expect_line "$tmp/err" "^orch: cannot read the token file $tmp/no-such-token \\(ORCH_TOKEN_FILE\\): No such file or directory\$"
runenv 0 ORCH_TOKEN="$(cat "$ORCH_TOKEN_FILE")" ORCH_TOKEN_FILE= "$orch" get services
dead_port=$(free_port)
runenv 1 ORCH_ADDR="http://127.0.0.1:$dead_port" "$orch" get services
expect_line "$tmp/err" "^orch: cannot reach orchd at http://127.0.0.1:$dead_port: Connection refused\$"
run 1 --addr "http://127.0.0.1:$dead_port" get services
expect_line "$tmp/err" "^orch: cannot reach orchd at http://127.0.0.1:$dead_port: Connection refused\$"
run 2 get services --addr "ftp://x"
expect_line "$tmp/err" "not an address like http://HOST:PORT"

# --- apply ---------------------------------------------------------------------------------------
run 0 apply -f web.yaml -f more.yaml --dry-run
expect_line "$tmp/out" '^web created$'
expect_line "$tmp/out" '^api created$'
expect_line "$tmp/out" '^worker created$'
expect_line "$tmp/out" '^  would leave 3 instances pending: no nodes are registered$'
expect_line "$tmp/out" '^dry run: nothing was changed$'
run 0 get services -o json
json_check "$tmp/out" 'j == []'

run 0 apply -f web.yaml -f more.yaml
[ "$(cat "$tmp/out")" = "$(printf 'web created\napi created\nworker created')" ] || {
	fail "apply output"
	sed 's/^/  | /' "$tmp/out"
}
run 0 apply -f "$tmp"/web.yaml -f - <more.yaml
[ "$(cat "$tmp/out")" = "$(printf 'web unchanged\napi unchanged\nworker unchanged')" ] || {
	fail "re-apply output"
	sed 's/^/  | /' "$tmp/out"
}

# --dry-run shows the change and the placements, and changes nothing
sed 's/replicas: 3/replicas: 5/' more.yaml >more5.yaml
run 0 apply -f more5.yaml --dry-run
expect_line "$tmp/out" '^api unchanged$'
expect_line "$tmp/out" '^worker updated$'
expect_line "$tmp/out" '^  changed: replicas$'
expect_line "$tmp/out" '^  would leave 2 instances pending: no nodes are registered$'
run 0 get service worker -o json
json_check "$tmp/out" 'j["replicas"] == 3'

# a broken manifest: positions, exit 1, and nothing applied (not even the valid file)
cp more5.yaml ok.yaml
run 1 apply -f ok.yaml -f broken.yaml
expect_line "$tmp/err" "^broken.yaml:4:1: error: unknown key 'comand' \\(did you mean 'command'\\?\\)\$"
run 0 get service worker -o json
json_check "$tmp/out" 'j["replicas"] == 3'
run 1 get service broken
expect_line "$tmp/err" "^orch: service 'broken' not found\$"

# --prune: services that the manifests do not name go
run 0 apply -f more.yaml --prune --dry-run
expect_line "$tmp/out" '^web deleted$'
run 0 get service web

# --- get ------------------------------------------------------------------------------------------
run 0 get services
expect_line "$tmp/out" '^NAME +REPLICAS +READY +REVISION +ROUTE +AGE$'
expect_line "$tmp/out" '^web +2 +0 +[0-9a-f]{16} +/web +[0-9]+s$'
expect_line "$tmp/out" '^worker +3 +0 +[0-9a-f]{16} +- +'
run 0 get svc -o wide
expect_line "$tmp/out" '^NAME +REPLICAS +READY +REVISION +ROUTE +AGE +ROLLOUT +INSTANCES +UPDATED$'
run 0 get service -o name
[ "$(cat "$tmp/out")" = "$(printf 'api\nweb\nworker')" ] || fail "get services -o name: $(cat "$tmp/out")"
run 0 get services -o json
json_check "$tmp/out" 'isinstance(j, list) and len(j) == 3 and all(
    isinstance(s["name"], str) and isinstance(s["replicas"], int) and isinstance(s["ready"], int)
    and isinstance(s["revision"], str) and (s["route"] is None or isinstance(s["route"], dict)) for s in j)'
run 0 get services web -o json
json_check "$tmp/out" 'isinstance(j, dict) and j["name"] == "web" and j["route"]["path"] == "/web"'

run 0 get instances
expect_line "$tmp/out" '^ID +SERVICE +NODE +STATE +HEALTH +RESTARTS +ADDRESS +AGE$'
expect_line "$tmp/out" '^web-[0-9a-f]{8} +web +- +pending +unknown +0 +- +[0-9]+s$'
run 0 get inst --service worker -o wide
expect_line "$tmp/out" '^ID +SERVICE +NODE +STATE +HEALTH +RESTARTS +ADDRESS +AGE +REVISION +PID +PORTS +CGROUP +REASON$'
expect_line "$tmp/out" 'no nodes are registered$'
[ "$(grep -c '^worker-' "$tmp/out")" -eq 3 ] || fail "--service worker: expected 3 instances"
run 0 get instances -o json
inst_keys='["id","service","revision","node","state","pid","address","ports","health","restarts","started_at","cgroup"]'
json_check "$tmp/out" "isinstance(j, list) and len(j) == 6 and all(set($inst_keys) <= set(i) for i in j)
    and all(i['state'] in ('pending','starting','running','stopping','exited','failed','lost') for i in j)
    and all(i['health'] in ('passing','failing','unknown') for i in j)
    and all(isinstance(i['ports'], dict) and isinstance(i['restarts'], int) for i in j)"
first_instance=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["id"])' "$tmp/out")
run 0 get instance "$first_instance" -o json
json_check "$tmp/out" "isinstance(j, dict) and j['id'] == '$first_instance'"
run 1 get instance nope-00000000
expect_line "$tmp/err" "^orch: instance 'nope-00000000' not found\$"
run 0 get nodes
expect_line "$tmp/err" '^No nodes found\.$'
run 0 get nodes -o json
json_check "$tmp/out" 'j == []'

# --- describe -------------------------------------------------------------------------------------
run 0 describe service web
expect_line "$tmp/out" '^Name: +web$'
expect_line "$tmp/out" '^Replicas: +2 desired, 0 ready \(2 pending\)$'
expect_line "$tmp/out" '^Route: +/web -> port http$'
expect_line "$tmp/out" '^  command: +/bin/sh -c '"'"'exec sleep 1000'"'"'$'
expect_line "$tmp/out" '^Rollout:$'
expect_line "$tmp/out" '^Instances \(2\):$'
expect_line "$tmp/out" '^Events:$'
expect_line "$tmp/out" 'service\.applied +service web created'
run 0 describe instance "$first_instance"
expect_line "$tmp/out" "^ID: +$first_instance\$"
expect_line "$tmp/out" '^State: +pending$'
expect_line "$tmp/out" '^Reason: +no nodes are registered$'
run 1 describe node nope
expect_line "$tmp/err" "^orch: node 'nope' not found\$"
run 2 describe thing x
expect_line "$tmp/err" '^usage: orch describe service\|instance\|node NAME$'

# --- scale ----------------------------------------------------------------------------------------
run 0 scale worker 4
expect_line "$tmp/out" '^worker scaled to 4 replicas$'
run 0 get service worker -o json
json_check "$tmp/out" 'j["replicas"] == 4'
run 2 scale worker -1
run 2 scale worker many
expect_line "$tmp/err" '^usage: orch scale SERVICE REPLICAS$'
run 2 scale worker
run 1 scale nope 1
expect_line "$tmp/err" "^orch: service 'nope' not found\$"

# --- rollout --------------------------------------------------------------------------------------
run 0 rollout status web
expect_line "$tmp/out" '^web has no rollout in progress: revision [0-9a-f]{16}'
run 0 rollout status web --no-wait --timeout 5s
run 1 rollout status nope
expect_line "$tmp/err" "^orch: service 'nope' not found\$"
run 1 rollout undo web
expect_line "$tmp/err" "^orch: service 'web' has no previous revision\$"
run 2 rollout restart web
run 2 rollout status web --timeout soon

# --- events ---------------------------------------------------------------------------------------
run 0 events
expect_line "$tmp/out" '^[0-9T:.-]+Z +service\.applied +service web created'
expect_line "$tmp/out" 'service\.scaled +service worker scaled from 3 to 4 replicas'
run 0 events -o json
python3 - "$tmp/out" <<'PY' || fail "events -o json: not NDJSON with rising indexes"
import json, sys
last = 0
for line in open(sys.argv[1]):
    e = json.loads(line)
    assert e["index"] > last and e["type"] and e["message"] and e["time"]
    last = e["index"]
assert last > 0
PY
run 0 events --since 1000000
[ -s "$tmp/out" ] && fail "events --since a future index printed something"
run 0 events --service worker
expect_no_line "$tmp/out" 'service web '
status=0
timeout --preserve-status -s INT 2 "$orch" events -f -o json >"$tmp/out" 2>"$tmp/err" || status=$?
[ "$status" = 0 ] || fail "events -f ended by SIGINT exited $status"
expect_line "$tmp/out" '"type":"service.applied"'

# --- apikey ---------------------------------------------------------------------------------------
run 0 apikey create web ci
key=$(cat "$tmp/out")
printf '%s\n' "$key" | grep -Eqx '[A-Za-z0-9_-]{20,}' || fail "apikey create printed '$key', not a key alone"
expect_line "$tmp/err" 'created for service web'
run 0 apikey create web deploy -o json
json_check "$tmp/out" 'j["service"] == "web" and j["name"] == "deploy" and len(j["key"]) >= 20 and j["id"]'
run 0 apikey list
expect_line "$tmp/out" '^ID +SERVICE +NAME +AGE$'
expect_line "$tmp/out" ' web +ci '
expect_line "$tmp/out" ' web +deploy '
grep -qF -- "$key" "$tmp/out" && fail "apikey list shows a key"
run 0 apikey list --service web -o json
json_check "$tmp/out" 'len(j) == 2 and all("key" not in k for k in j) and {k["name"] for k in j} == {"ci", "deploy"}'
run 0 apikey list --service nope
[ -s "$tmp/out" ] && fail "apikey list --service nope printed: $(cat "$tmp/out")"
run 0 apikey list -o name
ids=$(cat "$tmp/out")
[ "$(echo "$ids" | grep -c .)" = 2 ] || fail "apikey list -o name: $ids"
run 1 apikey create nope ci
expect_line "$tmp/err" "^orch: service 'nope' not found\$"
# shellcheck disable=SC2086
run 0 apikey delete $ids
[ "$(grep -c ' deleted$' "$tmp/out")" = 2 ] || fail "apikey delete output: $(cat "$tmp/out")"
run 1 apikey delete "$(echo "$ids" | head -n 1)"
expect_line "$tmp/err" 'not found'
run 0 apikey list -o json
json_check "$tmp/out" 'j == []'
run 2 apikey
run 2 apikey create web
run 2 apikey list extra
run 2 apikey delete
run 2 apikey delete x -o json

# --- delete ---------------------------------------------------------------------------------------
run 0 delete worker
[ "$(cat "$tmp/out")" = "worker deleted" ] || fail "delete output: $(cat "$tmp/out")"
run 1 delete nope web
expect_line "$tmp/err" "^orch: service 'nope' not found\$"
expect_line "$tmp/out" '^web deleted$'
run 0 delete nope --ignore-not-found
# worker went above (a service without placed instances goes at once)
# -f PATH...: web.yaml after more.yaml is a path too (web went above)
run 0 delete -f more.yaml web.yaml --ignore-not-found
[ "$(cat "$tmp/out")" = "api deleted" ] || fail "delete -f output: $(cat "$tmp/out")"
run 2 delete
# with -f every argument is a path: 'web' is no file, so nothing is deleted
run 0 apply -f more.yaml
run 1 delete web -f more.yaml
expect_line "$tmp/err" "^web: error: cannot read"
run 0 get services api
run 0 delete -f more.yaml

# --- usage and help -------------------------------------------------------------------------------
run 2
run 2 frob
expect_line "$tmp/err" "^orch: unknown verb 'frob'"
run 2 get
expect_line "$tmp/err" '^usage: orch get '
run 2 get services --bogus
expect_line "$tmp/err" "^orch get: unknown option '--bogus'\$"
run 2 get services -o yaml
run 2 get nodes --service x
run 2 apply
expect_line "$tmp/err" '^usage: orch apply -f PATH'
run 2 logs
run 2 logs web --tail x
run 2 events --since x
run 2 drain
run 2 uncordon a b
for verb in validate apply get describe scale delete logs events rollout drain uncordon apikey version; do
	run 0 help "$verb"
	expect_line "$tmp/out" "^usage: orch $verb"
	run 0 "$verb" --help
	expect_line "$tmp/out" "^usage: orch $verb"
done
run 0 --help
expect_line "$tmp/out" 'ORCH_TOKEN_FILE'
expect_line "$tmp/out" '/var/lib/orch/admin.token'

# --- with an agent: instances run, logs show their output -----------------------------------------
agent_part() {
	if [ ! -x "$agent" ]; then
		echo "SKIP (agent part): $agent is not built"
		return 0
	fi
	if [ "$(id -u)" != 0 ]; then
		echo "SKIP (agent part): not root"
		return 0
	fi
	mkdir "$tmp/agent"
	"$agent" --allow-root --server "127.0.0.1:$agent_port" --name cli-node --address 127.0.0.1 \
		--label zone=test --data-dir "$tmp/agent" --port-range 41000-41099 \
		--cgroup-parent "$cgroup_parent" --join-token-file "$tmp/orchd/join.token" \
		>"$tmp/agent.log" 2>&1 &
	agent_pid=$!
	i=0
	while [ $i -lt 100 ]; do
		"$orch" get nodes -o name 2>/dev/null | grep -qx cli-node && break
		kill -0 "$agent_pid" 2>/dev/null || break
		sleep 0.1
		i=$((i + 1))
	done
	if ! "$orch" get nodes -o name 2>/dev/null | grep -qx cli-node; then
		echo "SKIP (agent part): the agent did not register:"
		sed 's/^/  | /' "$tmp/agent.log"
		return 0
	fi
	run 0 get nodes
	expect_line "$tmp/out" '^NAME +STATE +ADDRESS +INSTANCES +CPU +MEMORY +LABELS +LAST-SEEN$'
	expect_line "$tmp/out" '^cli-node +ready +127\.0\.0\.1 +0 +'
	run 0 get nodes -o json
	json_check "$tmp/out" 'len(j) == 1 and set(["name","address","state","labels","capacity","allocated","instances","last_seen"]) <= set(j[0])
	    and j[0]["state"] == "ready" and j[0]["labels"] == {"zone": "test"}
	    and set(j[0]["capacity"]) >= {"cpu", "memory"} and set(j[0]["allocated"]) >= {"cpu", "memory"}
	    and isinstance(j[0]["instances"], int)'

	run 0 apply -f more.yaml
	i=0
	while [ $i -lt 100 ] && ! "$orch" get instances --service api 2>/dev/null | grep -q ' running '; do
		sleep 0.1
		i=$((i + 1))
	done
	run 0 get instances --service api -o json
	json_check "$tmp/out" 'len(j) == 1 and j[0]["state"] == "running" and j[0]["node"] == "cli-node"
	    and isinstance(j[0]["pid"], int) and isinstance(j[0]["cgroup"], str) and j[0]["started_at"]'
	sleep 1
	run 0 logs api --tail 2
	expect_line "$tmp/out" '^tick [0-9]+$'
	[ "$(wc -l <"$tmp/out")" -eq 2 ] || fail "logs --tail 2 printed $(wc -l <"$tmp/out") lines"
	status=0
	timeout --preserve-status -s INT 2 "$orch" logs api -f --tail 1 >"$tmp/out" 2>"$tmp/err" || status=$?
	[ "$status" = 0 ] || fail "logs -f ended by SIGINT exited $status"
	[ "$(grep -c '^tick ' "$tmp/out")" -ge 3 ] || fail "logs -f did not follow: $(cat "$tmp/out")"
	run 0 describe node cli-node
	expect_line "$tmp/out" '^State: +ready$'
	expect_line "$tmp/out" '^Labels: +zone=test$'
	expect_line "$tmp/out" 'api-[0-9a-f]{8} +api +running'

	run 0 drain cli-node
	expect_line "$tmp/out" '^cli-node draining$'
	run 0 get nodes
	expect_line "$tmp/out" '^cli-node +draining '
	run 0 get nodes cli-node -o json
	json_check "$tmp/out" 'j["state"] == "draining"'
	run 0 uncordon cli-node
	expect_line "$tmp/out" '^cli-node uncordoned$'
	run 0 get nodes
	expect_line "$tmp/out" '^cli-node +ready '
	run 0 delete -f more.yaml
}
agent_part

# The daemons stop here (a sanitizer build reports leaks at exit): any report is a failure.
if [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null; then wait "$agent_pid" 2>/dev/null || true; fi
if [ -n "$orchd_pid" ] && kill "$orchd_pid" 2>/dev/null; then wait "$orchd_pid" 2>/dev/null || true; fi
agent_pid=
orchd_pid=
for log in "$tmp"/*.log; do
	if grep -q -E 'ERROR: (Address|Leak|Thread)Sanitizer|runtime error: ' "$log" 2>/dev/null; then
		fail "sanitizer report in $(basename "$log"):"
		grep -A 30 -E 'ERROR: (Address|Leak|Thread)Sanitizer|runtime error: ' "$log" | head -n 60 | sed 's/^/  | /'
	fi
done

if [ "$failures" -gt 0 ]; then
	echo "$failures failures"
	exit 1
fi
echo "cli: all checks passed"
