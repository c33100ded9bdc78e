#!/bin/bash
# A real orch-agent against a scripted orchd (docs/protocol.md): an instance that changes after the
# agent's hello reported it and before orchd's welcome must be reported again after the welcome.
# Agents send no event before the welcome, so without that resend orchd would keep the state of
# the hello (here "running" for an instance that has exited) until the instance's next change,
# which may never come. The scripted orchd starts one instance (sleep 1.5 s, exit 3, restart
# never), drops the connection, and holds back its welcome to the reconnected agent until the
# instance has exited. Then a fencing stop before a welcome, of an instance that dies at once: its
# ack must come although the stop completed before the welcome (orchd forgets a fenced copy only on
# that ack; chaos-agent-kill-default.sh once kept such copies as lost for good).
# shellcheck disable=SC2034,SC2119
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

it_init
mkdir -p "$IT_ORCHD_DATA"
(umask 077 && echo "it-join-token-$IT_ID" >"$IT_ORCHD_DATA/join.token")

"$IT_PY" - "$IT_AGENT_ADDR" >"$IT_TMP/fake-orchd.log" 2>&1 <<'EOF' &
import json, os, socket, sys, time

host, port = sys.argv[1].rsplit(":", 1)
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((host, int(port)))
srv.listen(1)
srv.settimeout(20)

def say(*a):
    print("[%6.2fs]" % (time.monotonic() - t0), *a, flush=True)

class Conn:
    def __init__(self):
        self.s, _ = srv.accept()
        self.s.settimeout(0.2)
        self.buf = b""
    def send(self, m):
        self.s.sendall(json.dumps(m).encode() + b"\n")
    def recv(self, deadline):
        """The next frame; heartbeats are answered and skipped. None at the deadline."""
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                m = json.loads(line)
                if m["type"] == "heartbeat":
                    self.send({"type": "heartbeat", "seq": m["seq"]})
                    continue
                return m
            if time.monotonic() > deadline:
                return None
            try:
                d = self.s.recv(65536)
            except socket.timeout:
                continue
            if not d:
                sys.exit("the agent closed the connection")
            self.buf += d
    def until(self, what, pred, seconds):
        deadline = time.monotonic() + seconds
        while True:
            m = self.recv(deadline)
            if m is None:
                sys.exit("FAIL: no %s within %g s" % (what, seconds))
            if pred(m):
                return m
    def welcome(self):
        self.send({"type": "welcome", "node": "node1", "heartbeat_ms": 1000, "ttl_ms": 3000,
                   "server_time": int(time.time() * 1000)})

def report_of(m, inst):
    return m["type"] == "event" and m.get("instance") == inst

t0 = time.monotonic()
c = Conn()
hello = c.until("hello", lambda m: m["type"] == "hello", 10)
say("hello from", hello["node"], "with", len(hello.get("instances") or []), "instances")
c.welcome()
rev = "0123456789abcdef"
c.send({"type": "spec", "id": 1, "service": "flap", "revision": rev,
        "spec": {"kind": "service", "name": "flap", "command": ["/bin/sh", "-c", "sleep 1.5; exit 3"],
                 "restart": {"policy": "never"}}})
c.until("spec ack", lambda m: m["type"] == "ack" and m["id"] == 1 and m["ok"], 5)
c.send({"type": "start", "id": 2,
        "instances": [{"instance": "flap-0", "service": "flap", "revision": rev, "generation": 1}]})
c.until("start ack", lambda m: m["type"] == "ack" and m["id"] == 2, 5)
started = time.monotonic()
c.until("running event", lambda m: report_of(m, "flap-0") and m["state"] == "running", 5)
say("flap-0 running; dropping the connection")
c.s.close()

c = Conn()
hello = c.until("second hello", lambda m: m["type"] == "hello", 10)
states = {i["instance"]: i["state"] for i in hello.get("instances") or []}
say("second hello:", states)
if states.get("flap-0") != "running":
    sys.exit("FAIL: the second hello reports flap-0 as %r, expected running" % states.get("flap-0"))
# hold the welcome until the instance has exited (1.5 s after its start, 1 s of margin)
time.sleep(max(0, started + 2.5 - time.monotonic()))
c.welcome()
ev = c.until("event for flap-0 after the welcome", lambda m: report_of(m, "flap-0"), 5)
say("after the welcome: flap-0", ev["state"], "exit", ev.get("exit"))
if ev["state"] not in ("exited", "failed") or (ev.get("exit") or {}).get("code") != 3:
    sys.exit("FAIL: flap-0 reported as %s (exit %s), expected its exit with status 3" % (ev["state"], ev.get("exit")))

# A fencing stop before the welcome whose instance dies at once: its ack must come even though the
# stop completes before the welcome (orchd forgets a fenced copy only on that ack).
c.send({"type": "spec", "id": 3, "service": "calm", "revision": rev,
        "spec": {"kind": "service", "name": "calm", "command": ["/bin/sleep", "60"]}})
c.until("spec ack", lambda m: m["type"] == "ack" and m["id"] == 3 and m["ok"], 5)
c.send({"type": "start", "id": 4,
        "instances": [{"instance": "calm-0", "service": "calm", "revision": rev, "generation": 1}]})
c.until("calm-0 running", lambda m: report_of(m, "calm-0") and m["state"] == "running", 5)
say("calm-0 running; dropping the connection")
c.s.close()
c = Conn()
hello = c.until("third hello", lambda m: m["type"] == "hello", 10)
calm_pid = {i["instance"]: i.get("pid") for i in hello.get("instances") or []}.get("calm-0")
if not calm_pid:
    sys.exit("FAIL: the third hello has no pid for calm-0: %r" % hello.get("instances"))
c.send({"type": "stop", "id": 5, "instances": [{"instance": "calm-0", "generation": 1}], "reason": "fenced"})
ack = c.until("the ack of the stop, before any welcome", lambda m: m["type"] == "ack" and m["id"] == 5, 5)
say("stop acked before the welcome:", ack)
if not ack.get("ok"):
    sys.exit("FAIL: the stop was refused: %r" % ack)
try:
    os.kill(calm_pid, 0)
    sys.exit("FAIL: the stop was acked while calm-0 (pid %d) still ran" % calm_pid)
except ProcessLookupError:
    pass
c.welcome()
print("PASS", flush=True)
EOF
fake=$!
it_agent_start 1 --log-level debug
status=0
wait "$fake" || status=$?
sed 's/^/  fake orchd: /' "$IT_TMP/fake-orchd.log"
[ "$status" = 0 ] || it_fail "the scripted orchd failed (status $status)"
it_ok "a change between the hello and the welcome is reported after the welcome; a stop done before it is acked"
it_agent_kill 1
