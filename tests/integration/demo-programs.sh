#!/bin/bash
# Smoke test of the demo programs, without orchd or an agent: orch-demo api, web and worker, and
# orch-testprog http. The servers listen on port 0 and report the port they got, so the test
# needs no free-port guessing; it checks their endpoints with curl and raw requests (malformed
# ones included), then stops them with SIGTERM and expects exit status 0.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
set -euo pipefail

top_builddir=${top_builddir:-$(cd "$(dirname "$0")/../.." && pwd)}
demo=$top_builddir/examples/orch-demo
testprog=$top_builddir/tests/fixtures/orch-testprog

command -v curl >/dev/null || { echo "SKIP: curl is not installed (scripts/deps installs it)"; exit 77; }
for p in "$demo" "$testprog"; do
	[ -x "$p" ] || { echo "SKIP: $p is not built (make check builds it)"; exit 77; }
done

tmp=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do
		kill -KILL "$p" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

# start NAME COMMAND...: runs COMMAND in the background (output in $tmp/NAME.out) and waits until it
# reports its port; sets NAME_pid and NAME_port.
start() {
	local name=$1 pid port=
	shift
	"$@" >"$tmp/$name.out" 2>&1 &
	pid=$!
	pids+=("$pid")
	for _ in $(seq 100); do
		port=$(sed -n 's/.*port=\([0-9][0-9]*\).*/\1/p' "$tmp/$name.out" | head -n1)
		[ -n "$port" ] && break
		kill -0 "$pid" 2>/dev/null || fail "$name exited: $(cat "$tmp/$name.out")"
		sleep 0.1
	done
	[ -n "$port" ] || fail "$name did not report a port: $(cat "$tmp/$name.out")"
	printf -v "${name}_pid" %s "$pid"
	printf -v "${name}_port" %s "$port"
}

# stop NAME: SIGTERM, and the exit status must be 0.
stop() {
	local pid_var=${1}_pid status=0
	kill -TERM "${!pid_var}"
	wait "${!pid_var}" || status=$?
	[ "$status" = 0 ] || fail "$1 exited with status $status after SIGTERM: $(tail -n 5 "$tmp/$1.out")"
	echo "ok - $1 stopped cleanly"
}

# expect STATUS PATTERN CURL-ARGS...: the answer has that status and (unless PATTERN is empty)
# PATTERN in its head or body.
expect() {
	local want=$1 pattern=$2 got
	shift 2
	got=$(curl -sS --max-time 10 -o "$tmp/body" -D "$tmp/head" -w '%{http_code}' "$@") || fail "curl $*"
	[ "$got" = "$want" ] || fail "$*: status $got, expected $want: $(cat "$tmp/body")"
	if [ -n "$pattern" ] && ! grep -q -e "$pattern" "$tmp/head" "$tmp/body"; then
		fail "$*: no '$pattern' in the answer: $(cat "$tmp/head" "$tmp/body")"
	fi
	echo "ok - $want $*"
}

# raw PORT DATA [SECONDS]: sends DATA (printf %b escapes) on a new connection; prints what comes back
# until the server closes (the last request must ask for that) or SECONDS (default 5) pass.
raw() {
	local answer
	exec 3<>"/dev/tcp/127.0.0.1/$1"
	printf '%b' "$2" >&3
	answer=$(timeout "${3:-5}" cat <&3 || true)
	exec 3>&-
	printf '%s\n' "$answer" | tr -d '\r'
}

# expect_status PORT REQUEST CODE: the first line of the answer to REQUEST is an HTTP/1.1 CODE
# status line. The answer is matched in the shell: "| head -n1 | grep -q" under pipefail fails
# when head exits before the writer is done (SIGPIPE), which bash's line-buffered printf makes
# likely for a multi-line answer.
expect_status() {
	local answer
	answer=$(raw "$1" "$2")
	[[ ${answer%%$'\n'*} == "HTTP/1.1 $3"* ]] || fail "port $1, '${2:0:80}': expected $3, got: $answer"
}

alive() {
	local pid_var=${1}_pid
	kill -0 "${!pid_var}" 2>/dev/null || fail "$1 died: $(tail -n 20 "$tmp/$1.out")"
}

# ---- orch-demo api
ORCH_INSTANCE=api-test-1 ORCH_SERVICE=api start api "$demo" api --port 0 --bind 127.0.0.1
a=http://127.0.0.1:$api_port
expect 200 '^ok' "$a/healthz"
expect 200 '"apples"' "$a/items"
expect 200 '"instance":"api-test-1"' "$a/"
expect 201 '"name":"tea"' -X POST -H 'Content-Type: application/json' -d '{"name":"tea"}' "$a/items"
expect 200 '"tea"' "$a/items"
expect 200 '"name":"bread"' "$a/items/2"
expect 204 '' -X DELETE "$a/items/2"
expect 404 '"error"' "$a/items/2"
expect 400 '"error"' -X POST -H 'Content-Type: application/json' -d '{"name":""}' "$a/items"
expect 400 '"error"' -X POST -H 'Content-Type: application/json' -d '{"name":"x","extra":1}' "$a/items"
expect 400 '"error"' -X POST -H 'Content-Type: application/json' -d 'not json' "$a/items"
expect 405 '^Allow: GET, HEAD, POST' -X PUT "$a/items"
expect 404 '' "$a/nope"

# ---- orch-demo web, fetching from the API
WEB_PORT=0 ORCH_INSTANCE=web-test-1 ORCH_NODE=node-a DEMO_API_URL=$a/ start web "$demo" web \
	--port env:WEB_PORT --bind 127.0.0.1
w=http://127.0.0.1:$web_port
expect 200 '^ok' "$w/healthz"
expect 200 'web-test-1' "$w/"
grep -q 'node-a' "$tmp/body" || fail "the page does not show the node"
grep -q 'api-test-1' "$tmp/body" || fail "the page does not show the API instance"
grep -q '<li>tea</li>' "$tmp/body" || fail "the page does not list the API's items"
expect 404 '' "$w/missing"
expect 405 '' -X POST -d x "$w/"

# An API that does not answer makes a page that says so, not an error.
start web_down "$demo" web --port 0 --bind 127.0.0.1 --api http://127.0.0.1:1
expect 200 'did not answer' "http://127.0.0.1:$web_down_port/"
stop web_down

# ---- orch-demo worker
"$demo" worker --interval 100ms --jobs 3 --api "$a" >"$tmp/worker.out" 2>&1 || fail "worker: $(cat "$tmp/worker.out")"
[ "$(grep -c 'items=[0-9]* api_instance=api-test-1' "$tmp/worker.out")" = 3 ] ||
	fail "worker: expected 3 jobs: $(cat "$tmp/worker.out")"
echo "ok - worker ran 3 jobs against the API"
"$demo" worker --interval 10ms --jobs 2 >"$tmp/worker2.out" 2>&1 || fail "worker: $(cat "$tmp/worker2.out")"
grep -q 'job=2 primes=' "$tmp/worker2.out" || fail "worker without API: $(cat "$tmp/worker2.out")"
echo "ok - worker computes without an API"

# ---- flags
for args in "" "web" "web --port 70000" "api --port 1 --api http://x" "worker --interval 5x" \
	"worker --port 1" "web --port 1 --api ftp://x" "api --bogus" "dance" "web --port env:NO_SUCH_VAR"; do
	status=0
	# shellcheck disable=SC2086
	env -u PORT "$demo" $args >/dev/null 2>&1 || status=$?
	[ "$status" = 2 ] || fail "orch-demo $args: exit status $status, expected 2"
done
echo "ok - orch-demo rejects bad flags with status 2"

# ---- orch-testprog http
health=$tmp/unhealthy
start tp "$testprog" http 0 --bind 127.0.0.1 --health-file "$health" --id tp-1
t=http://127.0.0.1:$tp_port
expect 200 '^X-Instance: tp-1' "$t/healthz"
touch "$health"
expect 503 '^X-Instance: tp-1' "$t/healthz"
rm "$health"
expect 200 '' "$t/healthz"
expect 418 '' "$t/status/418"
expect 400 '' "$t/status/99"
expect 200 '^X-Forwarded-For: 192.0.2.7' -H 'X-Forwarded-For: 192.0.2.7' -d 'the body' "$t/echo?q=1"
grep -q '^POST /echo?q=1 HTTP/1.1' "$tmp/body" || fail "echo: no request line: $(cat "$tmp/body")"
grep -q '^the body$' "$tmp/body" || fail "echo: no body: $(cat "$tmp/body")"
expect 200 '^chunked request body$' -H 'Transfer-Encoding: chunked' --data-binary 'chunked request body' "$t/echo"
expect 200 '^chunk 4/4' "$t/chunked?n=4&ms=20"
grep -qi '^Transfer-Encoding: chunked' "$tmp/head" || fail "/chunked is not chunked: $(cat "$tmp/head")"
start_ms=$(date +%s%3N)
expect 200 '' "$t/slow?ms=300"
[ $(($(date +%s%3N) - start_ms)) -ge 300 ] || fail "/slow answered too early"
expect 200 '' "$t/bytes?n=1000000"
[ "$(wc -c <"$tmp/body")" = 1000000 ] || fail "/bytes: wrong length"
head -c 2000000 /dev/zero >"$tmp/big"
expect 413 '' --data-binary "@$tmp/big" "$t/echo"
expect 404 '' "$t/nope"

# Pipelining: three requests in one write, answers in order even though the first is slow.
answer=$(raw "$tp_port" 'GET /slow?ms=200 HTTP/1.1\r\nHost: x\r\n\r\nGET /status/201 HTTP/1.1\r\nHost: x\r\n\r\nGET /status/202 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
[ "$(printf '%s\n' "$answer" | sed -n 's/^HTTP\/1.1 \([0-9]*\).*/\1/p' | tr '\n' ' ')" = "200 201 202 " ] ||
	fail "pipelined answers out of order: $answer"
echo "ok - pipelined answers in order"

# Upgrade: 101, then the bytes come back as sent (also those sent right after the request).
answer=$(raw "$tp_port" 'GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nping-pong' 1)
[[ $answer == "HTTP/1.1 101"* ]] || fail "no 101: $answer"
[[ $answer == *ping-pong* ]] || fail "upgraded connection did not echo: $answer"
echo "ok - upgrade and raw echo"

# Malformed requests: a 400 (or 414/431/413) and the servers stay up.
for port in "$tp_port" "$api_port" "$web_port"; do
	for bad in 'garbage\r\n\r\n' 'GET / HTTP/1.1\r\n\r\n' 'GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n' \
		'GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n' \
		'GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n' \
		'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n' \
		'\x01\x02\x03\r\n\r\n' 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n' 'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n'; do
		expect_status "$port" "$bad" 400
	done
	long=$(printf 'a%.0s' $(seq 9000))
	expect_status "$port" "GET /$long HTTP/1.1\r\nHost: x\r\n\r\n" 414
	headers=$(for i in $(seq 100); do printf 'X-H%d: %0400d\\r\\n' "$i" 0; done)
	expect_status "$port" "GET / HTTP/1.1\r\nHost: x\r\n$headers\r\n" 431
	expect_status "$port" 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n' 413
	# A client that sends half a request and disconnects.
	exec 3<>"/dev/tcp/127.0.0.1/$port"
	printf 'GET / HTTP/1.1\r\nHost: x\r\nX-Half: ' >&3
	exec 3>&-
done
alive tp
alive api
alive web
echo "ok - malformed requests get 4xx answers and the servers stay up"

stop tp
stop web
stop api
echo "PASS"
