#!/bin/bash
# The API gateway against nginx and haproxy (docs/gateway.md, "Performance").
#
# One nginx with one worker is the backend. In front of it, each with the same number of workers
# ($WORKERS, default 1) and a keep-alive pool to the backend, and each adding X-Forwarded-For,
# X-Forwarded-Proto and X-Request-Id: orch's gateway (bench/gateway-harness: orchd's gateway code with
# an in-memory registry that lists the backend as a routed service's instance), nginx, haproxy. The
# backend and the proxies share CPU $PROXY_CPU (0), wrk runs on CPU $CLIENT_CPU (1), as in
# TESTING.md. Runs swing by ±30 % on a shared machine, so the targets are measured in the same run,
# in interleaved rounds, and medians are compared:
#
#   throughput  wrk -c$CONNS (50) for $DURATION s (10), $ROUNDS rounds (5): req/s, p50, p99, and the CPU
#               each proxy spends per request (user + system, from /proc);
#   latency     the same with one connection: what each proxy adds to the backend's p50;
#   idle        $IDLE (10000) kept-alive idle connections: the gateway's memory per connection, and
#               that it still serves meanwhile.
#
# Usage: bench/gateway.sh (from the build directory, or with top_builddir set). Needs wrk, nginx,
# haproxy, python3 and taskset (scripts/deps --bench). Load on the machine is printed with the table.
set -euo pipefail

top_builddir=${top_builddir:-$(pwd)}
HARNESS=${HARNESS:-$top_builddir/bench/gateway-harness}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
CONNS=${CONNS:-50}
WORKERS=${WORKERS:-1}
IDLE=${IDLE:-10000}
PROXY_CPU=${PROXY_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3

for p in wrk nginx haproxy taskset "$PY"; do
	command -v "$p" >/dev/null || { echo "bench/gateway.sh: $p is not installed (scripts/deps --bench)" >&2; exit 1; }
done
[ -x "$HARNESS" ] || { echo "bench/gateway.sh: $HARNESS is not built (make bench/gateway-harness)" >&2; exit 1; }

TMP=$(mktemp -d /tmp/orch-bench-gw.XXXXXX)
declare -a PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
BACKEND=$(free_port)
ORCH=$(free_port)
NGINX=$(free_port)
HAPROXY=$(free_port)

cat >"$TMP/backend.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/backend.pid;
error_log stderr warn;
events { worker_connections 30000; }
http {
  access_log off;
  keepalive_requests 1000000000;
  keepalive_timeout 600s;
  server {
    listen 127.0.0.1:$BACKEND backlog=4096;
    location / { default_type text/plain; return 200 "hello from the backend\n"; }
  }
}
EOF
cat >"$TMP/nginx.conf" <<EOF
worker_processes $WORKERS;
daemon off;
pid $TMP/nginx.pid;
error_log stderr warn;
events { worker_connections 30000; }
http {
  access_log off;
  keepalive_requests 1000000000;
  keepalive_timeout 600s;
  upstream backend {
    server 127.0.0.1:$BACKEND;
    keepalive 256;
    keepalive_requests 1000000000;
    keepalive_timeout 600s;
  }
  server {
    listen 127.0.0.1:$NGINX backlog=4096;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Request-Id \$request_id;
      add_header X-Request-Id \$request_id;
    }
  }
}
EOF
cat >"$TMP/haproxy.cfg" <<EOF
global
  nbthread $WORKERS
  maxconn 9000
defaults
  mode http
  timeout connect 5s
  timeout client 600s
  timeout server 600s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:$HAPROXY
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  unique-id-format %[uuid()]
  unique-id-header X-Request-Id
  http-response set-header X-Request-Id %[unique-id]
  default_backend be
backend be
  server s1 127.0.0.1:$BACKEND
EOF

# not through a shell function: $! must be the program itself (taskset execs it)
taskset -c "$PROXY_CPU" nginx -c "$TMP/backend.conf" -e stderr >"$TMP/backend.log" 2>&1 &
PIDS+=($!)
taskset -c "$PROXY_CPU" "$HARNESS" --listen "127.0.0.1:$ORCH" --workers "$WORKERS" \
	--backend "127.0.0.1:$BACKEND" >"$TMP/orch.log" 2>&1 &
ORCH_PID=$!
PIDS+=($!)
taskset -c "$PROXY_CPU" nginx -c "$TMP/nginx.conf" -e stderr >"$TMP/nginx.log" 2>&1 &
PIDS+=($!)
taskset -c "$PROXY_CPU" haproxy -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 &
HAPROXY_PID=$!
PIDS+=($!)

up() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/")" = 200 ]; }
for port in $BACKEND $ORCH $NGINX $HAPROXY; do
	for _ in $(seq 100); do up "$port" && break; sleep 0.05; done
	up "$port" || { echo "bench/gateway.sh: nothing answers on port $port" >&2; cat "$TMP"/*.log >&2; exit 1; }
done
BACKEND_PID=$(cat "$TMP/backend.pid")
NGINX_MASTER=$(cat "$TMP/nginx.pid")

# The processes whose CPU a target costs (the proxy's workers; none for the backend alone).
proxy_pids() {
	case $1 in
	direct) echo ;;
	orch) echo "$ORCH_PID" ;;
	nginx) pgrep -P "$NGINX_MASTER" | tr '\n' ' ' ;;
	haproxy) echo "$HAPROXY_PID" ;;
	esac
}
port_of() {
	case $1 in direct) echo "$BACKEND" ;; orch) echo "$ORCH" ;; nginx) echo "$NGINX" ;; haproxy) echo "$HAPROXY" ;; esac
}
# CPU clock ticks (user + system) of the processes given, and of the backend's worker.
ticks() {
	local p t=0
	for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
	echo "$t"
}
BACKEND_WORKER=$(pgrep -P "$BACKEND_PID" | head -1)

# run TARGET CONNS SECONDS: one wrk run; appends "TARGET CONNS rps p50_us p99_us proxy_ticks backend_ticks requests"
run() {
	local target=$1 conns=$2 secs=$3 out a b ba bb
	# shellcheck disable=SC2046
	a=$(ticks $(proxy_pids "$target"))
	ba=$(ticks "$BACKEND_WORKER")
	out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$conns" -d"${secs}s" --latency "http://127.0.0.1:$(port_of "$target")/" 2>&1)
	# shellcheck disable=SC2046
	b=$(ticks $(proxy_pids "$target"))
	bb=$(ticks "$BACKEND_WORKER")
	echo "$out" | "$PY" -c '
import re, sys
text = sys.stdin.read()
def us(v):
    n, unit = re.match(r"([\d.]+)(\w+)", v).groups()
    return float(n) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]
rps = re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)
p50 = us(re.search(r"\s50%\s+(\S+)", text).group(1))
p99 = us(re.search(r"\s99%\s+(\S+)", text).group(1))
req = re.search(r"(\d+) requests in", text).group(1)
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
bad = re.search(r"Socket errors: (.*)", text)
print(sys.argv[1], sys.argv[2], rps, p50, p99, sys.argv[3], sys.argv[4], req,
      errors.group(1) if errors else 0, "1" if bad else "0")
' "$target" "$conns" "$((b - a))" "$((bb - ba))" >>"$TMP/results"
}

TARGETS="direct orch nginx haproxy"
echo "bench/gateway.sh: $ROUNDS interleaved rounds of ${DURATION}s, $CONNS connections, $WORKERS worker(s); proxies and backend on CPU $PROXY_CPU, wrk on CPU $CLIENT_CPU" >&2
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for t in $TARGETS; do run "$t" "$CONNS" 1 >/dev/null; done
: >"$TMP/results"
for r in $(seq "$ROUNDS"); do
	for t in $TARGETS; do run "$t" "$CONNS" "$DURATION"; done
	for t in $TARGETS; do run "$t" 1 "$((DURATION / 2 > 0 ? DURATION / 2 : 1))"; done
	echo "round $r of $ROUNDS done (load $(cut -d' ' -f1 /proc/loadavg))" >&2
done

# --- idle connections ---------------------------------------------------------------------------
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
idle_hold() {
	# idle_hold PORT N SECONDS: N connections, one request each, then held idle; prints how many were
	# still open at the end
	"$PY" - "$1" "$2" "$3" <<'EOF'
import resource, socket, sys, time
port, n, secs = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
socks = []
req = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
# in batches, as clients come and go: what stays is the cost of an idle connection, not of a burst
for start in range(0, n, 200):
    batch = [socket.create_connection(("127.0.0.1", port)) for i in range(start, min(n, start + 200))]
    for s in batch:
        s.sendall(req)
    for s in batch:
        got = b""
        while b"hello from the backend\n" not in got:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    socks += batch
print("ready", flush=True)
time.sleep(secs)
alive = 0
for s in socks:
    s.setblocking(False)
    try:
        alive += 1 if s.recv(1) else 0
    except BlockingIOError:
        alive += 1
print(alive, flush=True)
EOF
}
IDLE_SECS=$((DURATION > 5 ? DURATION : 5))
rss0=$(rss_kib "$ORCH_PID")
coproc IDLEC { idle_hold "$ORCH" "$IDLE" "$IDLE_SECS"; }
read -r line <&"${IDLEC[0]}"
[ "$line" = ready ] || { echo "bench/gateway.sh: the idle client failed" >&2; exit 1; }
rss1=$(rss_kib "$ORCH_PID")
conns=$(ls "/proc/$ORCH_PID/fd" | wc -l)
served=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$ORCH/" 2>&1 | awk '/Requests\/sec/ {print $2}')
read -r alive <&"${IDLEC[0]}"
wait "$IDLEC_PID" 2>/dev/null || true
echo "idle $IDLE $alive $rss0 $rss1 $conns $served" >>"$TMP/results"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# --- the table ------------------------------------------------------------------------------------
"$PY" - "$TMP/results" "$(getconf CLK_TCK)" "$(cut -d' ' -f1-3 /proc/loadavg)" "$WORKERS" "$CONNS" "$ROUNDS" "$DURATION" \
	"$PROXY_CPU" <<'EOF'
import statistics as st, sys
path, tck, load, workers, conns, rounds, duration = sys.argv[1], int(sys.argv[2]), sys.argv[3], *sys.argv[4:8]
runs, idle = {}, None
for line in open(path):
    f = line.split()
    if f[0] == "idle":
        idle = f[1:]
        continue
    t, c, rps, p50, p99, pt, bt, req, non2xx, sockerr = f
    runs.setdefault((t, int(c)), []).append(dict(rps=float(rps), p50=float(p50), p99=float(p99),
        cpu=int(pt) / tck * 1e6 / int(req), bcpu=int(bt) / tck * 1e6 / int(req), bad=int(non2xx) + int(sockerr)))
med = lambda t, c, k: st.median(r[k] for r in runs[(t, c)])
many = int(conns)
names = {"direct": "backend alone", "orch": "orch gateway", "nginx": "nginx", "haproxy": "haproxy"}
print(f"gateway benchmark: medians of {rounds} interleaved rounds of {duration}s; {workers} worker(s) per proxy; "
      f"load average at the end {load}")
print()
print(f"{'target':<15} {'req/s':>9} {'p50 µs':>8} {'p99 µs':>8} {'proxy CPU µs/req':>17} {'backend CPU':>12} "
      f"{'1-conn p50 µs':>14} {'added µs':>9} {'errors':>7}")
base1 = med("direct", 1, "p50")
for t in ["direct", "orch", "nginx", "haproxy"]:
    cpu = "-" if t == "direct" else f"{med(t, many, 'cpu'):.1f}"
    added = "-" if t == "direct" else f"{med(t, 1, 'p50') - base1:.0f}"
    bad = sum(r["bad"] for r in runs[(t, many)] + runs[(t, 1)])
    print(f"{names[t]:<15} {med(t, many, 'rps'):>9.0f} {med(t, many, 'p50'):>8.0f} {med(t, many, 'p99'):>8.0f} "
          f"{cpu:>17} {med(t, many, 'bcpu'):>12.1f} {med(t, 1, 'p50'):>14.0f} {added:>9} {bad:>7}")
best = max(med("nginx", many, "rps"), med("haproxy", many, "rps"))
ratio = med("orch", many, "rps") / best
print()
print(f"throughput: orch / best of nginx and haproxy = {ratio:.2f} (target >= 1.2)")
# On a machine shared with other work wrk's figures follow the CPU share the proxies get; the CPU a
# request costs does not: with CPU 0 saturated, req/s is 1 / (proxy + backend CPU per request).
bound = lambda t: 1e6 / (med(t, many, "cpu") + med(t, many, "bcpu"))
print(f"CPU-bound throughput (1 / CPU per request on CPU {sys.argv[8] if len(sys.argv) > 8 else 0}): orch {bound('orch'):.0f}, "
      f"nginx {bound('nginx'):.0f}, haproxy {bound('haproxy'):.0f} req/s; orch / best = "
      f"{bound('orch') / max(bound('nginx'), bound('haproxy')):.2f}")
print(f"p99: orch {med('orch', many, 'p99'):.0f} µs, nginx {med('nginx', many, 'p99'):.0f} µs (target: orch <= nginx)")
print(f"added latency at one connection: orch {med('orch', 1, 'p50') - base1:.0f} µs, nginx "
      f"{med('nginx', 1, 'p50') - base1:.0f} µs, haproxy {med('haproxy', 1, 'p50') - base1:.0f} µs (target: orch <= 10 µs)")
if idle:
    n, alive, rss0, rss1, fds, served = idle
    per = (int(rss1) - int(rss0)) * 1024 / int(n)
    print(f"idle connections: {alive} of {n} held; gateway RSS {int(rss0) / 1024:.1f} -> {int(rss1) / 1024:.1f} MiB "
          f"({per:.0f} bytes per connection), {fds} fds; meanwhile it served {served} req/s")
EOF
