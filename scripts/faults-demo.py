#!/usr/bin/env python3
"""Runs the hostile-gateway and hostile-client cases against a relay binary and prints what
happened, one line each, so two builds can be compared:

    python3 scripts/faults-demo.py target/release/lipachat-relay
    python3 scripts/faults-demo.py target/bench-before/target/release/lipachat-relay

Everything runs on 127.0.0.1 against a fake gateway in this file, in about 30 seconds. The
tests in tests/api/faults.rs assert the same cases; this script shows them as a user sees them.
"""

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BINARY = sys.argv[1] if len(sys.argv) > 1 else "target/release/lipachat-relay"
KEY = "se-cret-key-1234"
BODY = {"messageId": "f-1", "mediaType": "IMAGE", "mediaUrl": "https://cdn.example.com/a.png",
        "from": "254110090747", "to": "254712345678"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    """Answers every POST after `hold` seconds with `status` and `headers`; counts concurrency."""

    def __init__(self, status=200, headers=(), hold=0.0):
        self.lock = threading.Lock()
        self.now = self.peak = self.calls = 0
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                with gateway.lock:
                    gateway.calls += 1
                    gateway.now += 1
                    gateway.peak = max(gateway.peak, gateway.now)
                time.sleep(hold)
                with gateway.lock:
                    gateway.now -= 1
                data = json.dumps({"timestamp": "2026-11-28T00:00:00Z", "data": None, "status": "error",
                                   "message": "unavailable", "errors": None} if status != 200 else
                                  {"timestamp": "2026-11-28T00:00:00Z", "data": {"messageId": "x", "waId": "w",
                                   "status": "SENT", "statusDesc": "Message sent"}, "status": "success",
                                   "message": "", "errors": None}).encode()
                try:
                    self.send_response(status)
                    for name, value in headers:
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


class Relay:
    def __init__(self, gateway_url, env=None, nofile=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full = {**os.environ, "LIPACHAT_API_KEY": KEY, "LIPACHAT_BASE_URL": gateway_url,
                "RELAY_LISTEN": f"127.0.0.1:{self.port}", "RUST_LOG": "warn",
                "RELAY_SENDER_RATE": "0", "RELAY_PAIR_INTERVAL_MS": "0", **(env or {})}
        limit = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))) if nofile else None
        self.proc = subprocess.Popen([BINARY, "serve"], env=full, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, preexec_fn=limit)
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        for _ in range(200):
            if get(self.url + "/healthz", 0.5)[0] == 200:
                return
            time.sleep(0.02)
        raise SystemExit("the relay did not start")

    def alive(self):
        return self.proc.poll() is None

    def exit_text(self):
        code = self.proc.poll()
        if code is None:
            return "alive"
        return f"died ({signal.Signals(-code).name})" if code < 0 else f"exited {code}"

    def stop(self):
        if self.alive():
            self.proc.terminate()
            self.proc.wait()


def get(url, timeout=2.0):
    return post(url, None, timeout, method="GET")


def post(url, body, timeout=10.0, method="POST"):
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return None, type(e).__name__


def report(item, text):
    print(f"{item:<34} {text}", flush=True)


def retry_after():
    for value in ("18446744073709551615", "9223372036854775807"):
        gateway = Gateway(status=503, headers=[("Retry-After", value)])
        relay = Relay(gateway.url)
        status, _ = post(relay.url + "/media", BODY)
        time.sleep(0.2)
        report(f"1. Retry-After: {value[:6]}…", f"caller got {status}; relay {relay.exit_text()}; gateway calls {gateway.calls}")
        relay.stop()


def callers_that_leave():
    gateway = Gateway(hold=2.0)
    relay = Relay(gateway.url, {"RELAY_MAX_IN_FLIGHT": "8"})
    statuses = {}
    lock = threading.Lock()

    def caller(n):
        status, _ = post(relay.url + "/media", {**BODY, "messageId": f"w-{n}"}, timeout=0.1)
        with lock:
            statuses[status] = statuses.get(status, 0) + 1

    gauge = 0
    for wave in range(10):
        threads = [threading.Thread(target=caller, args=(wave * 20 + i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        metrics = get(relay.url + "/metrics")[1]
        gauge = max(gauge, next((int(float(l.split()[-1])) for l in metrics.splitlines()
                                 if l.startswith("lipachat_relay_in_flight ")), 0))
    deadline = time.monotonic() + 10
    while gateway.now and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    counted = sum(int(float(l.split()[-1])) for l in get(relay.url + "/metrics")[1].splitlines()
                  if l.startswith("lipachat_relay_requests_total") and 'outcome="sent"' in l)
    statuses = {("timed out" if k is None else k): v for k, v in statuses.items()}
    report("2. callers that give up (max 8)", f"callers saw {statuses}; gateway peak concurrency {gateway.peak}, "
           f"calls {gateway.calls}; in_flight gauge max {gauge}; counted sent {counted}")
    relay.stop()


def trickle(port, stop):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /media HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n")
    answer = b""
    s.settimeout(1.0)
    while not stop.is_set():
        try:
            s.sendall(b" ")
        except OSError:
            break
        try:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
            if b"\r\n\r\n" in answer:
                break
        except socket.timeout:
            pass
    s.close()
    return answer.split(b"\r\n", 1)[0].decode(errors="replace")


def slow_bodies():
    gateway = Gateway()
    relay = Relay(gateway.url, {"RELAY_MAX_IN_FLIGHT": "8", "RELAY_BODY_TIMEOUT_MS": "3000"})
    stop = threading.Event()
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(trickle(relay.port, stop))) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    status, _ = post(relay.url + "/media", {**BODY, "messageId": "normal-1"})
    healthz = get(relay.url + "/healthz")[0]
    deadline = time.monotonic() + 5
    while len(answers) < 8 and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join()
    got = sorted(set(answers)) or ["no answer within 5 s"]
    report("3a. 8 bodies at 1 byte/s (max 8)", f"a normal send meanwhile got {status}, /healthz {healthz}; "
           f"the trickling uploads got {got}")
    relay.stop()


def idle_connections():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    gateway = Gateway()
    relay = Relay(gateway.url, nofile=1024)
    sockets = []
    for _ in range(1100):
        try:
            sockets.append(socket.create_connection(("127.0.0.1", relay.port), timeout=1))
        except OSError:
            break
    time.sleep(0.5)
    status, _ = get(relay.url + "/healthz", 2.0)
    report("3b. 1100 idle conns, ulimit -n 1024", f"/healthz answered {status}; relay {relay.exit_text()}")
    for s in sockets:
        s.close()
    relay.stop()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def environment():
    def run(env):
        full = {k: v for k, v in os.environ.items()}
        full.update({"RELAY_LISTEN": f"127.0.0.1:{free_port()}", "LIPACHAT_API_KEY": KEY})
        full = {k.encode(): v.encode() for k, v in full.items()}
        full.update(env)
        proc = subprocess.Popen([BINARY, "serve"], env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(timeout=1.5)
        except subprocess.TimeoutExpired:
            proc.terminate()
            out, err = proc.communicate()
            return "started and served (then stopped)", out + err
        code = proc.returncode
        exit_text = f"died ({signal.Signals(-code).name})" if code < 0 else f"exit {code}"
        return exit_text, out + err

    exit_text, text = run({b"X": b"\xff"})
    report("4a. unrelated X=$'\\xff'", f"{exit_text}; first line: {text.decode(errors='replace').splitlines()[0][:90]!r}")
    exit_text, text = run({b"LIPACHAT_API_KEY": b"se\xffcret"})
    report("4b. LIPACHAT_API_KEY=$'se\\xffcret'", f"{exit_text}; key in output: {b'cret' in text}; "
           f"first line: {text.decode(errors='replace').splitlines()[0][:90]!r}")
    exit_text, text = run({b"LIPACHAT_BASE_URL": b"http://user:pw-5678@127.0.0.1:9"})
    report("5. LIPACHAT_BASE_URL with user:pw@", f"{exit_text}; password in output: {b'pw-5678' in text}; "
           f"first line: {text.decode(errors='replace').splitlines()[0][:90]!r}")


def small_items():
    gateway = Gateway()
    relay = Relay(gateway.url)
    status, body = post(relay.url + "/media", {**BODY, "mediaUrl": "https://10.0.0.1/a.png"})
    errors = json.loads(body).get("errors") if status == 400 else body
    report("6a. mediaUrl with an IP address", f"{status} {errors}")
    def invalid():
        return sum(int(float(l.split()[-1])) for l in get(relay.url + "/metrics")[1].splitlines()
                   if l.startswith("lipachat_relay_requests_total") and 'outcome="invalid"' in l)

    before = invalid()
    status, _ = post(relay.url + "/media", None, method="GET")
    report("6b. GET /media", f"{status}; counted as an invalid send: {invalid() - before}")
    relay.stop()


def main():
    print(f"binary: {BINARY}")
    retry_after()
    callers_that_leave()
    slow_bodies()
    idle_connections()
    environment()
    small_items()


if __name__ == "__main__":
    main()
