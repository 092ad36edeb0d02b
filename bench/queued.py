#!/usr/bin/env python3
"""The cost of a queued send (`Prefer: respond-async`), measured, not estimated.

Starts a local redis-server, `lipachat-relay mock-gateway` and one relay (release build) with
RELAY_REDIS_URL, then sends N queued sends (each a new messageId) from M client threads, waits
until the mock gateway has accepted every one, and prints, per queued send: the relay's CPU
(user + sys ticks of its process, from the first 202 to the last gateway acceptance: the 202,
the worker's take, the send and the record), redis-server's CPU, and the Redis commands
(`INFO stats` `total_commands_processed`, less the polls of an idle relay over the same time,
measured first). Not part of the test suite.

    python3 bench/queued.py [N=2000] [M=8]
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELAY = ROOT / "target" / "release" / "lipachat-relay"
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ticks(pid):
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def redis_commands(port):
    out = subprocess.run(["redis-cli", "-p", str(port), "INFO", "stats"], capture_output=True,
                         text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith("total_commands_processed:"):
            return int(line.split(":")[1])
    raise RuntimeError("no total_commands_processed")


def wait_http(url, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


def gateway_count(port):
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/mock/sends", timeout=5).read()
    data = json.loads(body)
    return data["count"] if isinstance(data, dict) and "count" in data else len(data.get("messageIds", data))


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    m = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    if not RELAY.exists() or not shutil.which("redis-server"):
        sys.exit("needs target/release/lipachat-relay (cargo build --release) and redis-server")
    tmp = Path(tempfile.mkdtemp(prefix="queued-bench-"))
    redis_port, gateway_port, relay_port = free_port(), free_port(), free_port()
    procs = []
    try:
        redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--save", "",
                                  "--appendonly", "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL)
        procs.append(redis)
        key = "queued-bench-key"
        env = {"PATH": os.environ["PATH"], "LIPACHAT_API_KEY": key, "RELAY_LOG_FORMAT": "json",
               "RUST_LOG": "warn"}
        gateway = subprocess.Popen([RELAY, "mock-gateway", "--listen", f"127.0.0.1:{gateway_port}"],
                                   env=env, stdout=subprocess.DEVNULL)
        procs.append(gateway)
        wait_http(f"http://127.0.0.1:{gateway_port}/mock/sends")
        relay_env = dict(env, LIPACHAT_BASE_URL=f"http://127.0.0.1:{gateway_port}",
                         RELAY_LISTEN=f"127.0.0.1:{relay_port}",
                         RELAY_REDIS_URL=f"redis://127.0.0.1:{redis_port}",
                         RELAY_SENDER_RATE="0", RELAY_PAIR_INTERVAL_MS="0")
        relay = subprocess.Popen([RELAY, "serve"], env=relay_env, stdout=subprocess.DEVNULL)
        procs.append(relay)
        wait_http(f"http://127.0.0.1:{relay_port}/healthz")
        time.sleep(1)
        # The idle relay's own Redis traffic (the queue's polls and depth reads) per second.
        c0, t0 = redis_commands(redis_port), time.time()
        time.sleep(5)
        idle_per_s = (redis_commands(redis_port) - c0 - 1) / (time.time() - t0)

        before = gateway_count(gateway_port)
        prefix = f"q{int(time.time())}"
        relay_t0, redis_t0, c0, start = ticks(relay.pid), ticks(redis.pid), redis_commands(redis_port), time.time()

        def client(k):
            for i in range(k, n, m):
                body = json.dumps({"messageId": f"{prefix}-{i}", "message": "hello",
                                   "from": "254110090747", "to": "254712345678"}).encode()
                req = urllib.request.Request(f"http://127.0.0.1:{relay_port}/message/text", data=body,
                                             headers={"content-type": "application/json",
                                                      "prefer": "respond-async"})
                with urllib.request.urlopen(req, timeout=10) as answer:
                    assert answer.status == 202, answer.status

        threads = [threading.Thread(target=client, args=(k,)) for k in range(m)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        answered = time.time()
        while gateway_count(gateway_port) - before < n:
            if time.time() - answered > 120:
                raise RuntimeError("the queued sends did not all reach the gateway in 120 s")
            time.sleep(0.02)
        end = time.time()
        relay_cpu = (ticks(relay.pid) - relay_t0) / TICK
        redis_cpu = (ticks(redis.pid) - redis_t0) / TICK
        commands = redis_commands(redis_port) - c0 - 1 - idle_per_s * (end - start)
        print(f"{n} queued sends from {m} clients: 202s in {answered - start:.2f} s, all sent after "
              f"{end - start:.2f} s")
        print(f"relay CPU {relay_cpu / n * 1e6:.1f} µs per queued send (202 + take + send + record)")
        print(f"redis-server CPU {redis_cpu / n * 1e6:.1f} µs per queued send")
        print(f"Redis commands {commands / n:.1f} per queued send "
              f"(idle polling {idle_per_s:.1f} commands/s subtracted)")
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
