#!/usr/bin/env python3
"""Shows, with the real binary and a real redis-server, what sharing the window in Redis does.

    cargo build --release && python3 scripts/redis-demo.py [path/to/lipachat-relay]

Everything runs on 127.0.0.1 and ends within about two minutes:

1. kill -9: a relay sends 20 messages to completion and has 20 more in flight at a slow fake
   gateway when it is killed with SIGKILL. It is restarted, and the callers resend all 40
   until each gets a 200. Run once with the window in memory, once with RELAY_REDIS_URL. The
   table says how many times the gateway saw each group.
2. Two replicas sharing one Redis: the same messageId to both at once, a send through A
   replayed through B, another payload through B (422), a gateway 400 through A not remembered.
3. One sender budget for both replicas: RELAY_SENDER_RATE=10, 40 sends split over A and B at
   once; the gateway's arrival times per 0.5 s.
4. Sizing: Redis used_memory per remembered send, over 10,000 sends.

The fake gateway (a few lines below) is the only fake: it answers like Lipachat, records every
request it receives, holds a messageId that starts with "slow-" for SLOW_SECS the first time it
sees it, and answers 400
to messageIds that start with "bad-". Needs redis-server on PATH (apt-get install redis-server).
"""

import concurrent.futures
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SLOW_SECS = 3.0
DEADLINE_MS = 3000  # a short deadline, so the lease (deadline + 2 s) lapses within the demo
KEY = "demo-key-not-a-secret"
ROOT = Path(__file__).resolve().parent.parent
BINARY = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target/release/lipachat-relay"
T0 = time.monotonic()


def say(text):
    print(f"[{time.monotonic() - T0:6.2f}s] {text}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    """A Lipachat-like gateway on 127.0.0.1 that records what it receives."""

    def __init__(self):
        self.lock = threading.Lock()
        self.received = []  # (monotonic time, messageId)
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                message_id = body.get("messageId", "")
                with gateway.lock:
                    gateway.received.append((time.monotonic(), message_id))
                if self.headers.get("apiKey") != KEY:
                    return self.answer(401, {"data": None, "status": "success", "message": "Invalid credentials", "errors": None})
                if message_id.startswith("slow-") and gateway.counts()[message_id] == 1:
                    time.sleep(SLOW_SECS)
                if message_id.startswith("bad-"):
                    return self.answer(400, {"status": 400, "error": "Bad Request", "path": self.path})
                self.answer(200, {"data": {"messageId": message_id, "waId": "wamid." + message_id, "status": "SENT",
                                           "statusDesc": "Message sent"}, "status": "success", "message": "", "errors": None})

            def answer(self, status, body):
                data = json.dumps({"timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ"), **body}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the relay was killed while this was held

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def counts(self):
        with self.lock:
            return Counter(message_id for _, message_id in self.received)

    def times(self, prefix):
        with self.lock:
            return [t for t, message_id in self.received if message_id.startswith(prefix)]


class Redis:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="relay-demo-redis-")
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        self.url = f"redis://127.0.0.1:{self.port}"

    def used_memory(self):
        with socket.create_connection(("127.0.0.1", self.port)) as s:
            s.sendall(b"INFO memory\r\n")
            data = b""
            while b"used_memory:" not in data or not data.endswith(b"\r\n"):
                data += s.recv(65536)
        line = next(l for l in data.decode().splitlines() if l.startswith("used_memory:"))
        return int(line.split(":")[1])

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Relay:
    def __init__(self, gateway, port=None, **env):
        self.port = port or free_port()
        self.env = {**os.environ, "LIPACHAT_API_KEY": KEY, "LIPACHAT_BASE_URL": gateway.url,
                    "RELAY_LISTEN": f"127.0.0.1:{self.port}", "RELAY_DEADLINE_MS": str(DEADLINE_MS),
                    "RELAY_ATTEMPT_TIMEOUT_MS": str(DEADLINE_MS), "RELAY_MAX_ATTEMPTS": "1", "RUST_LOG": "warn",
                    "RELAY_SENDER_RATE": "0", "RELAY_PAIR_INTERVAL_MS": "0", **env}
        self.url = f"http://127.0.0.1:{self.port}"
        self.start()

    def start(self):
        self.proc = subprocess.Popen([str(BINARY), "serve"], env=self.env, stdout=subprocess.DEVNULL)
        for _ in range(200):
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.02)
        raise SystemExit("the relay did not start")

    def kill_9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()


def media(message_id, caption="demo"):
    return {"messageId": message_id, "mediaType": "IMAGE", "mediaUrl": "https://cdn.example.com/a.png",
            "caption": caption, "from": "254110090747", "to": "254712345678"}


def post(url, body, timeout=30):
    request = urllib.request.Request(url + "/media", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()
    except OSError as e:
        return None, {}, str(e)


def resend_until_200(url, body, limit=30):
    """A caller's retry loop: POST until 200; returns (statuses seen, the 200's headers)."""
    seen = []
    end = time.monotonic() + limit
    while time.monotonic() < end:
        status, headers, _ = post(url, body)
        seen.append(status)
        if status == 200:
            return seen, headers
        time.sleep(0.2)
    return seen, {}


def kill_9_experiment(redis_url):
    mode = "Redis" if redis_url else "memory"
    say(f"--- kill -9, window in {mode}")
    gateway = Gateway()
    env = {"RELAY_REDIS_URL": redis_url, "RELAY_REDIS_PREFIX": f"demo-{int(time.time() * 1000)}"} if redis_url else {}
    relay = Relay(gateway, **env)
    done = [f"done-{i}" for i in range(20)]
    slow = [f"slow-{i}" for i in range(20)]
    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        statuses = Counter(s for s, _, _ in pool.map(lambda i: post(relay.url, media(i)), done))
        say(f"20 sends completed before the kill: {dict(statuses)}")
        lost = [pool.submit(post, relay.url, media(i)) for i in slow]
        while sum(gateway.counts()[i] for i in slow) < 20:
            time.sleep(0.01)
        say("20 sends in flight (the gateway holds them); kill -9")
        relay.kill_9()
        say(f"their callers saw: {dict(Counter('connection lost' if f.result()[0] is None else f.result()[0] for f in lost))}")
        relay.start()
        say("restarted; every caller resends its messageId until it gets a 200")
        results = dict(zip(done + slow, pool.map(lambda i: resend_until_200(relay.url, media(i)), done + slow)))
    relay.stop()
    counts = gateway.counts()
    gateway.server.shutdown()
    row = {}
    for name, ids in (("completed before the kill", done), ("in flight at the kill", slow)):
        sent = Counter(counts[i] for i in ids)
        replayed = sum(1 for i in ids if results[i][1].get("idempotent-replayed") == "true")
        waits = sum(len(results[i][0]) - 1 for i in ids)
        row[name] = (dict(sorted(sent.items())), replayed, waits)
        say(f"{name}: gateway calls per messageId {{calls: messageIds}} = {row[name][0]}; "
            f"resends answered as replays: {replayed}/20; 504s before the 200: {waits}")
    return row


def replicas(redis_url):
    say("--- two replicas, one Redis")
    gateway = Gateway()
    env = {"RELAY_REDIS_URL": redis_url, "RELAY_REDIS_PREFIX": f"demo-{int(time.time() * 1000)}",
           "RELAY_DEADLINE_MS": "10000", "RELAY_ATTEMPT_TIMEOUT_MS": "10000"}
    a, b = Relay(gateway, **env), Relay(gateway, **env)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        both = list(pool.map(lambda r: post(r.url, media("slow-both")), (a, b)))
    say(f"same messageId to A and B at once: statuses {[s for s, _, _ in both]}, "
        f"replayed {[h.get('idempotent-replayed', '-') for _, h, _ in both]}, "
        f"same body: {both[0][2] == both[1][2]}; gateway calls: {gateway.counts()['slow-both']}")
    status_a, _, body_a = post(a.url, media("via-a"))
    status_b, headers_b, body_b = post(b.url, media("via-a"))
    say(f"sent via A: {status_a}; again via B: {status_b}, idempotent-replayed: "
        f"{headers_b.get('idempotent-replayed')}, byte for byte: {body_a == body_b}; gateway calls: {gateway.counts()['via-a']}")
    status, _, body = post(b.url, media("via-a", caption="another payload"))
    say(f"same messageId, another payload, via B: {status} {json.loads(body)['errors']}")
    first, _, _ = post(a.url, media("bad-1"))
    second, _, _ = post(b.url, media("bad-1"))
    say(f"gateway 400 via A: {first}; the same via B: {second} (not remembered: gateway calls {gateway.counts()['bad-1']})")
    a.stop()
    b.stop()
    gateway.server.shutdown()


def shared_rate(redis_url):
    say("--- one sender budget for two replicas: RELAY_SENDER_RATE=10, 40 sends over A and B at once")
    gateway = Gateway()
    env = {"RELAY_REDIS_URL": redis_url, "RELAY_REDIS_PREFIX": f"demo-{int(time.time() * 1000)}",
           "RELAY_SENDER_RATE": "10", "RELAY_RATE_MAX_WAIT_MS": "5000", "RELAY_DEADLINE_MS": "10000",
           "RELAY_ATTEMPT_TIMEOUT_MS": "10000"}
    a, b = Relay(gateway, **env), Relay(gateway, **env)
    ids = [f"rate-{i}" for i in range(40)]
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        statuses = Counter(s for s, _, _ in pool.map(lambda n: post((a, b)[n % 2].url, media(ids[n])), range(40)))
    times = sorted(t - start for t in gateway.times("rate-"))
    buckets = Counter(int(t / 0.5) for t in times)
    say(f"answers: {dict(statuses)}; the gateway received {len(times)} sends over {times[-1]:.2f} s")
    say("arrivals per 0.5 s: " + ", ".join(f"{k * 0.5:.1f}s: {buckets[k]}" for k in range(max(buckets) + 1)))
    a.stop()
    b.stop()
    gateway.server.shutdown()


def sizing(redis):
    say("--- Redis memory per remembered send")
    gateway = Gateway()
    relay = Relay(gateway, RELAY_REDIS_URL=redis.url, RELAY_REDIS_PREFIX="lipachat-relay")
    before = redis.used_memory()
    n = 10_000
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        statuses = Counter(s for s, _, _ in pool.map(
            lambda i: post(relay.url, media(f"size-{i:08d}-a1b2c3d4-e5f6")), range(n)))
    after = redis.used_memory()
    say(f"{n} sends ({dict(statuses)}), messageIds of 27 characters, answers of "
        f"{len(post(relay.url, media('size-00000000-a1b2c3d4-e5f6'))[2])} bytes: used_memory "
        f"{before} -> {after} bytes, {(after - before) / n:.0f} bytes per remembered send")
    relay.stop()
    gateway.server.shutdown()


def main():
    if not BINARY.exists():
        raise SystemExit(f"{BINARY} is missing: cargo build --release")
    if not shutil.which("redis-server"):
        raise SystemExit("redis-server is missing: apt-get install redis-server")
    redis = Redis()
    try:
        memory = kill_9_experiment(None)
        shared = kill_9_experiment(redis.url)
        print("\n| window | group | gateway calls per messageId {calls: messageIds} | resends answered as replays |")
        print("| --- | --- | --- | ---: |")
        for mode, row in (("memory", memory), ("Redis", shared)):
            for name, (sent, replayed, _) in row.items():
                print(f"| {mode} | {name} | {sent} | {replayed}/20 |")
        print()
        replicas(redis.url)
        shared_rate(redis.url)
        sizing(redis)
    finally:
        redis.stop()


if __name__ == "__main__":
    main()
