#!/bin/bash
# orchd killed with SIGKILL in the middle of applies (docs/control-plane.md, "Failure cases"),
# with three agents: an apply of 100 instances, a delete of them, an apply again and an apply of
# 100 more, each raced by a SIGKILL of orchd a few milliseconds after the request (the agents start
# 100 instances within about 100 ms, so the kills land before, during and after the starts). After
# each restart the counts are exact: every service runs exactly its replicas, each instance once,
# and the nodes' cgroups hold exactly the processes orchd placed there, no orphan and no duplicate;
# a request orchd never answered may or may not have committed, one it answered has. Last, orchd
# is killed between committing an apply and sending its starts (the agents are stopped, then
# killed): after the restart the 100 placements that no agent reports are started.
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

service() {
	printf 'kind: service\nname: %s\nreplicas: %s\ncommand: ["%s", sleep]\nstop: {timeout: 2s}\n' "$1" "$2" "$IT_TESTPROG"
}

# exact: every service has exactly its replicas running, no other live record, and the instance
# cgroups on the nodes hold exactly those instances, one process each; no test process elsewhere.
exact() {
	local want view nodes
	want=$(api GET /v1/services | jpy '",".join("%s:%s" % (s["name"], s["replicas"]) for s in j)') || want=
	view=$(instances | jpy "
want = dict(w.split(':') for w in '$want'.split(',') if w)
live = [i for i in j if i['desired'] == 'run' and i['state'] not in ('lost', 'exited', 'failed')]
ok = len(j) == len(live) and all(len([i for i in live if i['service'] == s and i['state'] == 'running']) == int(n) for s, n in want.items()) and len(live) == sum(int(n) for n in want.values())
'\\n'.join(sorted('%s %s %s' % (i['node'], i['id'], i['pid']) for i in live)) if ok else None") || return 1
	nodes=$(for k in 1 2 3; do node_procs "$k" | awk -v n="node$k" '{print n, $1, $2, $3}'; done | sed 's/ *$//' | sort)
	[ "$view" = "$nodes" ] && [ "$(testprog_procs)" = "$(echo "$view" | grep -c .)" ]
}
report() {
	echo "services: $(api GET /v1/services | jpy '[(s["name"], s["replicas"]) for s in j]')"
	echo "instances: $(instances | jpy 'collections.Counter("%s/%s/%s" % (i["service"], i["state"], i["desired"]) for i in j)')"
	echo "processes: $(testprog_procs); per node: $(node_count 1) $(node_count 2) $(node_count 3)"
}

# crash WHAT DELAY-MS REQUEST...: sends the API request in the background, kills orchd with
# SIGKILL DELAY-MS later, restarts it and waits for exact counts. Sets $answered.
crash() {
	local what=$1 delay=$2 req_pid
	shift 2
	api "$@" >"$IT_TMP/request.out" 2>&1 &
	req_pid=$!
	sleep "$(awk -v d="$delay" 'BEGIN {print d / 1000}')"
	it_orchd_kill KILL
	answered="not answered"
	wait "$req_pid" && answered=answered
	it_log "$what: orchd killed ${delay} ms after the request ($answered), $(testprog_procs) processes on the nodes"
	it_orchd_start
	it_wait_nodes 3
	wait_for exact 30 "exact counts after the crash" || it_fail "after the restart: $(report)"
}

# committed REQUEST-ANSWERED SERVICE N: the service runs N instances, or (only if orchd never
# answered) the request did not commit.
check() {
	local n
	n=$(running_count "$2")
	if [ "$n" = "$3" ]; then
		it_ok "$2: $n instances exactly, each on one node once ($(node_count 1 "$2") $(node_count 2 "$2") $(node_count 3 "$2")), no orphan"
	elif [ "$1" = "not answered" ] && [ "$n" = "$4" ]; then
		it_ok "$2: the request had not committed; $n instances exactly, no orphan"
	else
		it_fail "$2 runs $n instances: $(report)"
	fi
}

# The window between the apply and the last of 100 starts is short (the agents start them in a few
# hundred milliseconds), so the kills come at several moments of it.
crash "apply of 100" 20 POST /v1/apply "$(service bulk 100)"
check "$answered" bulk 100 0
crash "delete of 100" 10 DELETE /v1/services/bulk
check "$answered" bulk 0 100
api DELETE /v1/services/bulk >/dev/null 2>&1 || true
wait_for '[ "$(testprog_procs)" = 0 ] && exact' 30 "bulk to be gone" || it_fail "bulk is not gone: $(report)"
crash "apply of 100 again" 40 POST /v1/apply "$(service bulk 100)"
check "$answered" bulk 100 0
crash "apply of 100 more" 5 POST /v1/apply "$(service bulk2 100)"
check "$answered" bulk2 100 0

api DELETE /v1/services/bulk2 >/dev/null 2>&1 || true
wait_for '[ "$(testprog_procs)" = 100 ] && exact' 30 "bulk2 to be gone" || it_fail "bulk2 is not gone: $(report)"

# --- SIGKILL between the commit and the starts -----------------------------------------------------
# The agents are stopped (SIGSTOP) so that no start reaches them, orchd commits the apply and is
# killed, the agents are killed too (bulk's instances stay and are re-adopted): when everything
# comes back, orchd holds 100 placements of early that no agent reports, and must start them (docs/control-plane.md: "orchd killed between placement
# commit and command send").
for k in 1 2 3; do kill -STOP "${IT_AGENT_PID[$k]}"; done
apply "$(service early 100)"
it_orchd_kill KILL
# SIGKILL ends a stopped process without letting it run: no buffered start is read
for k in 1 2 3; do it_agent_kill "$k" KILL; done
n_early=$(($(node_count 1 early) + $(node_count 2 early) + $(node_count 3 early)))
[ "$n_early" = 0 ] || it_fail "$n_early instances of early started although the agents were stopped"
it_orchd_start
for k in 1 2 3; do it_agent_start "$k"; done
it_wait_nodes 3
wait_for exact 30 "exact counts after the crash" || it_fail "after the restart: $(report)"
check answered early 100 0
api DELETE /v1/services/early >/dev/null
wait_for '[ "$(testprog_procs)" = 100 ] && exact' 30 "early to be gone" || it_fail "early is not gone: $(report)"

# and a second look a moment later: nothing is started twice late
sleep 1
exact || it_fail "a second later: $(report)"
it_ok "counts exact a second later: $(testprog_procs) processes"
