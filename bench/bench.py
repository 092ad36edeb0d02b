#!/usr/bin/env python3
"""lipachat-relay benchmark driver, run by bench/run.sh (which installs the tools and builds).

Targets, all on 127.0.0.1, each behind the same fast fake gateway (nginx `return 200`):
  direct              load generator -> fake gateway (the limit)
  nginx               a header-injecting nginx reverse proxy (what an SRE would set up instead)
  floor               the bare axum + reqwest forwarder (bench/floor.rs): the relay's stack
                      with none of its work, the floor the relay is measured against
  relay               the relay's forward path, a new messageId per request
  relay-replay        the relay's replay path, one messageId again and again
  relay-limited       the forward path with the rate limits on but out of reach, every
                      request a new (from, to) pair: the limiter's cost
  relay-redis         the forward path with the dedup store in a local redis-server
  relay-redis-replay  the replay path with the dedup store in redis-server
Every relay but relay-limited runs with the rate limits off (the bench sends everything from
one `from` to one `to`). The relay-redis targets are skipped, with a message, when the relay
does not start or answer 2xx with RELAY_REDIS_URL set (or redis-server is missing).

Method (see PERFORMANCE.md in the project's shared notes): the load generator is pinned to
core 0, the fake gateway and the target to core 1, so a target's throughput is set by its CPU
cost per request. Throughput: wrk -t1 -c64 -d10s, BENCH_ROUNDS rounds interleaved across
targets, median and spread. CPU us/request: user+sys ticks of the target's processes during
the run / requests (for relay-redis also redis-server's, apart, and the Redis commands per
request from INFO stats). Latency: an open-loop generator at a fixed 2,000 req/s (bench/openloop.rs,
the same for every target; oha, when installed, as a cross-check on the fixed-body targets).
Memory: RSS with 0, 10k, 100k and 1M remembered messageIds. Start-up: exec to the first 200
on /healthz, median of 5.

Environment: BENCH_TARGETS (default: all of the above; the memory and start-up sections run
when a relay target is selected), BENCH_ROUNDS (3), BENCH_SECONDS (10),
BENCH_RATE (2000), BENCH_FILL ("10000 100000 1000000"), BENCH_OUT (BENCHMARKS.md at the top).
Everything started here is stopped by PID on exit, SIGINT, SIGTERM or SIGHUP.
"""

import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RELAY = ROOT / "target" / "release" / "lipachat-relay"
OPENLOOP = FLOOR = None  # the bench binaries' paths, from run.sh (argv 1 and 2)
ALL_TARGETS = ("direct", "nginx", "floor", "before", "relay", "before-replay", "relay-replay",
               "relay-limited", "relay-redis", "relay-redis-replay", "before-redis",
               "before-redis-replay", "relay-redis-lifecycle", "relay-redis-lifecycle-replay")
# Experiments: other builds of the relay, each measured on the forward path like `relay`, as
# the target `variant-LABEL` (BENCH_VARIANTS="LABEL=/path/to/lipachat-relay ...").
VARIANTS = dict(item.split("=", 1) for item in os.environ.get("BENCH_VARIANTS", "").split() if "=" in item)
ALL_TARGETS = ALL_TARGETS + tuple(f"variant-{label}" for label in VARIANTS)
# An older build of the relay (BENCH_BEFORE in run.sh), measured like `relay`.
BEFORE = Path(os.environ["BENCH_BEFORE_BIN"]) if os.environ.get("BENCH_BEFORE_BIN") else None
BEFORE_REV = os.environ.get("BENCH_BEFORE_REV", "")
REDIS_TARGETS = ("relay-redis", "relay-redis-replay", "before-redis", "before-redis-replay",
                 "relay-redis-lifecycle", "relay-redis-lifecycle-replay")
# The relay with the webhook listener and events on (Redis mode): status records and a SENT
# event per accepted send; events go to the fake gateway, which answers 200.
LIFECYCLE_TOKEN = "bench-webhook-token-0123456789abcdefgh"
LIFECYCLE_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
# Targets whose requests must each carry a new messageId: on the relay a fixed body is the
# replay path (and, on relay-limited, one pair over and over). The floor gets them too, so
# its requests are the relay's forward requests byte for byte.
FORWARD = ("floor", "before", "relay", "relay-limited", "relay-redis", "before-redis",
           "relay-redis-lifecycle",
           *(f"variant-{label}" for label in VARIANTS))
TARGETS = [t for t in os.environ.get("BENCH_TARGETS", " ".join(ALL_TARGETS)).split()]
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
RATE = int(os.environ.get("BENCH_RATE", "2000"))
FILL = [int(n) for n in os.environ.get("BENCH_FILL", "10000 100000 1000000").split()]
OUT = Path(os.environ.get("BENCH_OUT", ROOT / "BENCHMARKS.md"))
T0 = float(os.environ.get("BENCH_T0", time.time()))  # run.sh start: installs and builds included
MEASURE_T0 = time.time()
LOAD_CORE, SERVER_CORE = "0", "1"
TICK = os.sysconf("SC_CLK_TCK")
API_KEY = "bench-key-not-a-secret"
TMP = Path(tempfile.mkdtemp(prefix="lipachat-bench-"))
CHILDREN = []
COMMANDS = []  # one example of each command line, for BENCHMARKS.md
SKIPPED = {}  # target -> why it was not measured
NOTES = []  # caveats found during the run, for the report

# The relay's rate limits (RELAY_SENDER_RATE, 80/s per `from`; RELAY_PAIR_INTERVAL_MS and
# RELAY_PAIR_BURST, 45 per 6 s per (from, to) pair) are on by default, and the bench sends
# everything from one `from` to one `to`: every relay runs with both off (0), except
# relay-limited, which keeps the pair defaults and puts the sender limit out of reach. A relay
# without rate limits ignores these variables.
LIMITS_OFF = {"RELAY_SENDER_RATE": 0, "RELAY_PAIR_INTERVAL_MS": 0}
LIMITS_OUT_OF_REACH = {"RELAY_SENDER_RATE": 1_000_000}
REDIS_PREFIX = "bench:"

# A Lipachat-style success envelope (the documented 200 answer), served by the fake gateway.
ENVELOPE = ('{"timestamp":"2026-11-25T08:00:00.000Z","data":{"messageId":"bench-0001",'
            '"waId":"wamid.HBgMMjU0NzEyMzQ1Njc4FQIAERgSNUQ4RjM2QjNFQjY2Q0Q3NkE0AA==",'
            '"status":"SENT","statusDesc":"Message sent"},"status":"success","message":"",'
            '"errors":null}')

for name in TARGETS:
    if name not in ALL_TARGETS:
        sys.exit(f"bench: unknown target {name!r} in BENCH_TARGETS (known: {' '.join(ALL_TARGETS)})")
RELAY_WANTED = any(t.startswith("relay") for t in TARGETS)


def log(text):
    print(f"[{time.time() - T0:6.0f} s] {text}", flush=True)


def note(cmd):
    """Remembers a command line (with the temp dir and ports made generic) for the report."""
    text = " ".join(shlex.quote(str(c)) if not str(c) or " " in str(c) or '"' in str(c) else str(c) for c in cmd).replace(str(TMP), "$TMP").replace(str(ROOT) + "/", "")
    text = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", text)
    text = re.sub(r"--port \d+", "--port PORT", text)
    if text not in COMMANDS:
        COMMANDS.append(text)


# ---------------------------------------------------------------- processes

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args, env=None, core=SERVER_CORE, output=None):
    """Starts a server pinned to `core`; its stdout and stderr go to the file `output`, if given."""
    sink = open(output, "wb") if output else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(["taskset", "-c", core, *map(str, args)], env=env,
                                stdout=sink, stderr=sink, start_new_session=True)
    finally:
        if output:
            sink.close()
    CHILDREN.append(proc)
    return proc


def stop(proc):
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass


def stop_all():
    for proc in reversed(CHILDREN):
        stop(proc)
    shutil.rmtree(TMP, ignore_errors=True)


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def http_get(port, path, timeout=2.0):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return r.status, r.read().decode()


def wait_http(port, path="/healthz", timeout=10.0, proc=None):
    """Polls until GET path answers 200; returns the seconds it took (0.2 ms resolution)."""
    begin = time.perf_counter()
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    while time.perf_counter() - begin < timeout:
        if proc is not None and proc.poll() is not None:
            program = " ".join(Path(str(a)).name for a in proc.args[3:])  # after taskset -c N
            raise RuntimeError(f"{program} exited with {proc.returncode} before answering")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(request)
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return time.perf_counter() - begin
        except OSError:
            pass
        time.sleep(0.0002)
    raise RuntimeError(f"port {port} did not answer 200 on {path} within {timeout} s")


# ---------------------------------------------------------------- the servers

def nginx(conf_text, name):
    conf = TMP / f"{name}.conf"
    conf.write_text(conf_text.replace("@TMP@", str(TMP)).replace("@NAME@", name))
    cmd = ["nginx", "-c", conf, "-p", TMP]
    note(["taskset", "-c", SERVER_CORE, *cmd])
    return start(cmd)


def gateway_conf(port):
    return f"""
worker_processes 1; daemon off; pid @TMP@/@NAME@.pid; error_log @TMP@/@NAME@.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off; keepalive_requests 1000000;
  client_body_temp_path @TMP@/@NAME@-body;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = /api/v1/whatsapp/media {{
      default_type application/json;
      return 200 '{ENVELOPE}';
    }}
    location = /healthz {{ return 200 'ok'; }}
    location = /events {{ return 204; }}
  }}
}}"""


def proxy_conf(port, gateway_port):
    return f"""
worker_processes 1; daemon off; pid @TMP@/@NAME@.pid; error_log @TMP@/@NAME@.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off; keepalive_requests 1000000;
  client_body_temp_path @TMP@/@NAME@-body; proxy_temp_path @TMP@/@NAME@-proxy;
  upstream gateway {{ server 127.0.0.1:{gateway_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = /healthz {{ return 200 'ok'; }}
    location = /media {{
      proxy_pass http://gateway/api/v1/whatsapp/media;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header apiKey "{API_KEY}";
    }}
  }}
}}"""


def relay_env(port, gateway_port, **extra):
    env = {"PATH": os.environ["PATH"], "LIPACHAT_API_KEY": API_KEY,
           "LIPACHAT_BASE_URL": f"http://127.0.0.1:{gateway_port}",
           "RELAY_LISTEN": f"127.0.0.1:{port}", "RUST_LOG": "warn"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start_relay(port, gateway_port, limits=LIMITS_OFF, output=None, binary=None, **extra):
    binary = binary or RELAY
    env = relay_env(port, gateway_port, **limits, **extra)
    note([*(f"{k}={v}" for k, v in env.items() if k != "PATH"), "taskset", "-c", SERVER_CORE, binary, "serve"])
    return start([binary, "serve"], env=env, output=output)


def start_floor(port, gateway_port):
    env = {"PATH": os.environ["PATH"], "FLOOR_LISTEN": f"127.0.0.1:{port}",
           "FLOOR_UPSTREAM": f"http://127.0.0.1:{gateway_port}/api/v1/whatsapp/media",
           "FLOOR_API_KEY": API_KEY}
    note([*(f"{k}={v}" for k, v in env.items() if k != "PATH"), "taskset", "-c", SERVER_CORE, "floor"])
    return start([FLOOR], env=env)


def prime(port):
    """POSTs bench/body.json once, which opens the upstream connection and, on a relay, remembers
    the replay entry. Returns the HTTP status (0 when nothing came back)."""
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
                          f"http://127.0.0.1:{port}/media", "-H", "content-type: application/json",
                          "--data-binary", "@" + str(BENCH / "body.json")], capture_output=True, text=True)
    return int(out.stdout) if out.stdout.isdigit() else 0


def start_primed(proc, port, what):
    """Waits for a freshly started server and primes it; a non-2xx answer ends the run."""
    wait_http(port, proc=proc)
    status = prime(port)
    if not 200 <= status < 300:
        raise RuntimeError(f"{what}: the first POST /media answered {status or 'nothing'}")
    return proc


# ---------------------------------------------------------------- redis

def start_redis(port):
    cmd = ["redis-server", "--save", "", "--appendonly", "no", "--port", port, "--bind", "127.0.0.1"]
    note(["taskset", "-c", SERVER_CORE, *cmd])
    return start(cmd)


def redis_command(port, *words, timeout=2.0):
    """Sends one command (RESP) on a new connection and returns the reply as text; no redis-cli
    needed. An error reply raises RuntimeError."""
    request = f"*{len(words)}\r\n" + "".join(f"${len(str(w))}\r\n{w}\r\n" for w in words)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request.encode())
        reply = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                raise OSError(f"redis on port {port} closed the connection")
            reply += chunk
            head, found, rest = reply.partition(b"\r\n")
            if not found:
                continue
            if head.startswith(b"-"):
                raise RuntimeError(f"redis on port {port}: {head[1:].decode()}")
            if not head.startswith(b"$"):  # +PONG, :42
                return head[1:].decode()
            size = int(head[1:])
            if size < 0:
                return None
            if len(rest) >= size + 2:
                return rest[:size].decode()


def wait_redis(port, proc, timeout=10.0):
    begin = time.perf_counter()
    while time.perf_counter() - begin < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode} before answering")
        try:
            if redis_command(port, "PING", timeout=0.5) == "PONG":
                return
        except OSError:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"redis-server on port {port} did not answer PING within {timeout} s")


def redis_commands(port):
    """total_commands_processed from INFO stats. A command is counted once it has run, so the
    difference between two readings includes exactly one INFO: callers subtract it."""
    info = redis_command(port, "INFO", "stats")
    return int(re.search(r"^total_commands_processed:(\d+)", info, re.M).group(1))


def start_redis_relay(redis_port, port, gateway_port):
    """redis-server and a relay that keeps its dedup window there, primed; or (None, None), with
    the reason logged and kept for the report, when either does not work: Redis support is
    optional, so the relay-redis targets are skipped rather than ending the run."""
    def skip(reason):
        log(f"SKIPPING {' and '.join(REDIS_TARGETS)}: {reason}")
        for name in REDIS_TARGETS:
            SKIPPED[name] = reason
        return None, None

    if not shutil.which("redis-server"):
        return skip("redis-server is not installed (Debian: apt-get install redis-server)")
    redis = start_redis(redis_port)
    relay = None
    output = TMP / "relay-redis.log"  # what the relay says when it refuses the variables
    try:
        wait_redis(redis_port, redis)
        before = redis_commands(redis_port)
        relay = start_relay(port, gateway_port, output=output,
                            RELAY_REDIS_URL=f"redis://127.0.0.1:{redis_port}", RELAY_REDIS_PREFIX=REDIS_PREFIX)
        start_primed(relay, port, "the relay with RELAY_REDIS_URL set")
        used = redis_commands(redis_port) - before - 1
    except (RuntimeError, OSError) as error:
        for proc in (relay, redis):
            if proc:
                stop(proc)
        said = output.read_text(errors="replace").strip().splitlines()[-3:] if output.exists() else []
        return skip(f"{error}" + (f"; it said: {' / '.join(said)}" if said else "")
                    + " (does this relay support RELAY_REDIS_URL?)")
    if used <= 0:
        NOTES.append("The relay with `RELAY_REDIS_URL` set sent no command to redis-server for its "
                     "first request: this build does not use Redis, so the relay-redis rows measure "
                     "the relay alone.")
        log("WARNING: " + NOTES[-1].replace("`", ""))
    return redis, relay


# ---------------------------------------------------------------- /proc

def _stat(pid):
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2:].split()


def tree_pids(pid):
    """The process and its direct children (nginx master + worker; the relay is one process)."""
    pids = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat(entry.name)[1]) == pid:
                    pids.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                pass
    return pids


def tree_ticks(pid):
    """user+sys clock ticks of a process tree."""
    total = 0
    for p in tree_pids(pid):
        try:
            fields = _stat(p)
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total


def rss(pid):
    """(VmRSS, RssAnon) in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    value = lambda key: int(re.search(rf"{key}:\s+(\d+)", status).group(1)) * 1024
    return value("VmRSS"), value("RssAnon")


def tree_rss(pid):
    totals = [rss(p) for p in tree_pids(pid)]
    return sum(t[0] for t in totals), sum(t[1] for t in totals)


def machine_ticks():
    """(busy, steal) clock ticks of the whole machine, all cores. Busy counts irq and softirq
    too: the kernel charges a process's loopback traffic to its own time."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields[:3]) + fields[5] + fields[6], fields[7]


def own_ticks(servers):
    """Clock ticks used by this script, its finished children (the load generators) and the
    servers it runs."""
    t = os.times()
    mine = round((t.user + t.system + t.children_user + t.children_system) * TICK)
    return mine + sum(tree_ticks(p.pid) for p in servers)


def cpu_busy(seconds=1.0):
    """Share of all cores busy over `seconds` (from /proc/stat)."""
    def sample():
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields[:8]) - idle, sum(fields[:8])
    busy0, total0 = sample()
    time.sleep(seconds)
    busy1, total1 = sample()
    return (busy1 - busy0) / max(1, total1 - total0)


# ---------------------------------------------------------------- load generators

def wrk(port, script, seconds=SECONDS, connections=64):
    cmd = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
           "-s", BENCH / script, f"http://127.0.0.1:{port}"]
    note(cmd)
    out = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, check=True,
                         timeout=seconds + 60).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if non2xx or errors:
        raise RuntimeError(f"wrk saw failures on port {port} ({script}):\n{out}")
    return requests


def openloop(port, path, unique, pairs=False):
    cmd = ["taskset", "-c", LOAD_CORE, OPENLOOP, "--port", port, "--path", path, "--rate", RATE,
           "--seconds", SECONDS, "--connections", 16] + (["--unique"] if unique else []) \
        + (["--pairs"] if pairs else [])
    note([c if c is not OPENLOOP else "openloop" for c in cmd])
    out = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, check=True,
                         timeout=SECONDS + 60).stdout
    result = json.loads(out.strip().splitlines()[-1])
    if result["errors"] or result["ok"] != result["sent"]:
        raise RuntimeError(f"open-loop run on port {port}{path} had failures: {result}")
    return result


def oha(port, path):
    if not shutil.which("oha"):
        return None
    body = TMP / "oha-body.json"
    body.write_text('{"messageId":"oha-fixed","mediaType":"IMAGE","mediaUrl":"https://cdn.example.com/img/1.png",'
                    '"caption":"hello","from":"254110090747","to":"254712345678"}')
    cmd = ["taskset", "-c", LOAD_CORE, "oha", "--no-tui", "--output-format", "json",
           "-q", RATE, "-c", 16, "-z", f"{SECONDS}s", "--latency-correction",
           "-m", "POST", "-H", "content-type: application/json", "-D", body,
           f"http://127.0.0.1:{port}{path}"]
    note(cmd)
    out = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, timeout=SECONDS + 60)
    if out.returncode != 0:
        log(f"oha failed on port {port}: {out.stderr.strip()[:200]}")
        return None
    data = json.loads(out.stdout)
    codes = data.get("statusCodeDistribution", {})
    # A request still in flight when -z runs out is reported as "aborted due to deadline".
    errors = {k: v for k, v in (data.get("errorDistribution") or {}).items() if "deadline" not in k}
    if set(codes) - {"200"} or errors:
        raise RuntimeError(f"oha saw failures on port {port}{path}: {codes} {errors}")
    pct = data.get("latencyPercentiles", {})
    us = lambda k: round(pct[k] * 1e6) if pct.get(k) is not None else None
    return {"p50_us": us("p50"), "p99_us": us("p99"), "p999_us": us("p99.9")}


def metrics(port):
    return http_get(port, "/metrics")[1]


def dedup_entries(port):
    return int(re.search(r"^lipachat_relay_dedup_entries (\d+)", metrics(port), re.M).group(1))


def outcomes(port):
    """Requests by outcome, summed over send types."""
    totals = {}
    for m in re.finditer(r'^lipachat_relay_requests_total\{(?:type="[a-z]+",)?outcome="([a-z_]+)"\} (\S+)',
                         metrics(port), re.M):
        totals[m.group(1)] = totals.get(m.group(1), 0) + int(float(m.group(2)))
    return totals


def fill(port, count):
    """Sends unique messageIds as fast as it can until the relay holds `count` of them.

    wrk cannot stop after exactly N requests (a reconnect uses up an id), so fill.lua sends a
    little more than `count` unique ids, then only health probes, and wrk is stopped here once
    the relay's gauge says so (or the gauge has stood still for 3 s)."""
    env = dict(os.environ, FILL_COUNT=str(count + count // 100 + 256),
               FILL_PREFIX=f"fill{count}x{os.getpid()}x{int(time.time() * 1000)}")
    cmd = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", "-c64", "-d600s", "-s", BENCH / "fill.lua",
           f"http://127.0.0.1:{port}"]
    note(["FILL_COUNT=N", "FILL_PREFIX=...", *cmd])
    proc = subprocess.Popen(list(map(str, cmd)), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    CHILDREN.append(proc)
    begin = time.monotonic()
    last, still_since = -1, time.monotonic()
    try:
        while time.monotonic() - begin < 600:
            entries = dedup_entries(port)
            if entries >= count:
                break
            if entries != last:
                last, still_since = entries, time.monotonic()
            elif time.monotonic() - still_since > 3:
                log(f"fill {count:,}: the store stopped growing at {entries:,}")
                break
            if proc.poll() is not None:
                raise RuntimeError(f"wrk exited early while filling {count:,} messageIds")
            time.sleep(0.1)
    finally:
        stop(proc)
    took = time.monotonic() - begin
    return dedup_entries(port), took


def startup_ms(gateway_port, runs=5):
    times = []
    for _ in range(runs):
        port = free_port()
        begin = time.perf_counter()
        proc = start_relay(port, gateway_port)
        wait_http(port, timeout=5, proc=proc)
        times.append((time.perf_counter() - begin) * 1000)
        stop(proc)
    return statistics.median(times), times


# ---------------------------------------------------------------- the run

def main():
    global OPENLOOP, FLOOR
    OPENLOOP = Path(sys.argv[1])
    FLOOR = Path(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2] else None
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    if RELAY_WANTED and not RELAY.exists():
        sys.exit(f"bench: {RELAY} is missing (cargo build --release)")
    if "floor" in TARGETS and not (FLOOR and FLOOR.exists()):
        sys.exit("bench: the floor binary is missing (cargo bench --bench floor --no-run; run.sh passes it)")

    busy = cpu_busy()
    log(f"targets: {' '.join(TARGETS)}; machine {busy:.0%} busy before the start")
    if busy > 0.10:
        log("WARNING: something else is using the CPU; the numbers will be off")

    if any(t.startswith("before") for t in TARGETS) and not (BEFORE and BEFORE.exists()):
        sys.exit("bench: the before targets need BENCH_BEFORE (run.sh builds it)")
    gateway_port, proxy_port, floor_port, relay_port = free_port(), free_port(), free_port(), free_port()
    before_port = free_port()
    limited_port, redis_relay_port, redis_port = free_port(), free_port(), free_port()
    gateway = nginx(gateway_conf(gateway_port), "gateway")
    wait_http(gateway_port, proc=gateway)
    proxy = floor = relay = limited = redis = redis_relay = before = None
    if "nginx" in TARGETS:
        proxy = nginx(proxy_conf(proxy_port, gateway_port), "proxy")
        wait_http(proxy_port, proc=proxy)
    # Each started and sent one request: the replay entry is remembered and the upstream
    # connection open before "idle" memory is read.
    if "floor" in TARGETS:
        floor = start_primed(start_floor(floor_port, gateway_port), floor_port, "floor")
    if "before" in TARGETS or "before-replay" in TARGETS:
        before = start_primed(start_relay(before_port, gateway_port, binary=BEFORE), before_port,
                              "before")
    if "relay" in TARGETS or "relay-replay" in TARGETS:
        relay = start_primed(start_relay(relay_port, gateway_port), relay_port, "relay")
    variants = {}
    for label, binary in VARIANTS.items():
        if f"variant-{label}" in TARGETS:
            port = free_port()
            variants[label] = (port, start_primed(start_relay(port, gateway_port, binary=Path(binary)),
                                                  port, f"variant-{label}"))
    if "relay-limited" in TARGETS:
        limited = start_primed(start_relay(limited_port, gateway_port, limits=LIMITS_OUT_OF_REACH),
                               limited_port, "relay-limited")
    before_redis, before_redis_port = None, free_port()
    if any(t in TARGETS for t in REDIS_TARGETS):
        redis, redis_relay = start_redis_relay(redis_port, redis_relay_port, gateway_port)
        if not redis_relay:
            TARGETS[:] = [t for t in TARGETS if t not in REDIS_TARGETS]
        elif "before-redis" in TARGETS or "before-redis-replay" in TARGETS:
            # The older build on the same redis-server, under a prefix of its own.
            before_redis = start_primed(
                start_relay(before_redis_port, gateway_port, binary=BEFORE,
                            RELAY_REDIS_URL=f"redis://127.0.0.1:{redis_port}",
                            RELAY_REDIS_PREFIX=REDIS_PREFIX + "-before"),
                before_redis_port, "before-redis")
    lifecycle, lifecycle_port = None, free_port()
    if redis_relay and ("relay-redis-lifecycle" in TARGETS or "relay-redis-lifecycle-replay" in TARGETS):
        lifecycle = start_primed(
            start_relay(lifecycle_port, gateway_port,
                        RELAY_REDIS_URL=f"redis://127.0.0.1:{redis_port}",
                        RELAY_REDIS_PREFIX=REDIS_PREFIX + "-lifecycle",
                        RELAY_WEBHOOK_LISTEN=f"127.0.0.1:{free_port()}",
                        RELAY_WEBHOOK_TOKEN=LIFECYCLE_TOKEN,
                        RELAY_EVENTS_URL=f"http://127.0.0.1:{gateway_port}/events",
                        RELAY_EVENTS_SECRET=LIFECYCLE_SECRET),
            lifecycle_port, "relay-redis-lifecycle")
    processes = {"nginx": proxy, "floor": floor, "before": before, "relay": relay, "relay-limited": limited,
                 "relay-redis": redis_relay, "before-redis": before_redis, "redis-server": redis,
                 "relay-redis-lifecycle": lifecycle}
    processes.update({f"variant-{label}": proc for label, (_, proc) in variants.items()})
    processes = {name: proc for name, proc in processes.items() if proc}
    # RSS of a process tree: nginx is a master and a worker, the others one process each.
    idle = {name: tree_rss(proc.pid) for name, proc in processes.items()}

    table = {
        "direct": (gateway_port, "direct.lua", gateway),
        "nginx": (proxy_port, "replay.lua", proxy),
        "floor": (floor_port, "forward.lua", floor),
        "before": (before_port, "forward.lua", before),
        "before-replay": (before_port, "replay.lua", before),
        "relay": (relay_port, "forward.lua", relay),
        "relay-replay": (relay_port, "replay.lua", relay),
        "relay-limited": (limited_port, "forward-pairs.lua", limited),
        "relay-redis": (redis_relay_port, "forward.lua", redis_relay),
        "relay-redis-replay": (redis_relay_port, "replay.lua", redis_relay),
        "before-redis": (before_redis_port, "forward.lua", before_redis),
        "before-redis-replay": (before_redis_port, "replay.lua", before_redis),
        "relay-redis-lifecycle": (lifecycle_port, "forward.lua", lifecycle),
        "relay-redis-lifecycle-replay": (lifecycle_port, "replay.lua", lifecycle),
    }
    table.update({f"variant-{label}": (port, "forward.lua", proc) for label, (port, proc) in variants.items()})
    targets = {name: table[name] for name in ALL_TARGETS if name in TARGETS}

    # Warm-up, not counted: every pool and cache reaches its steady size.
    for name, (port, script, _) in targets.items():
        wrk(port, script, seconds=2)
    log("warm-up done")

    throughput = {name: [] for name in targets}
    cpu = {name: [] for name in targets}
    # relay-redis targets: redis-server's CPU µs/req and Redis commands per request.
    redis_cpu = {name: [] for name in targets if name in REDIS_TARGETS}
    commands = {name: [] for name in targets if name in REDIS_TARGETS}
    servers = [gateway, *processes.values()]
    foreign = steal = 0  # ticks others (processes, the hypervisor) took during the rounds
    for round_ in range(ROUNDS):
        for name, (port, script, proc) in targets.items():
            if name in REDIS_TARGETS:
                redis_before, commands_before = tree_ticks(redis.pid), redis_commands(redis_port)
            busy0, steal0 = machine_ticks()
            own0 = own_ticks(servers)
            before = tree_ticks(proc.pid)
            requests = wrk(port, script)
            used = tree_ticks(proc.pid) - before
            busy1, steal1 = machine_ticks()
            other = max(0, (busy1 - busy0) - (own_ticks(servers) - own0))
            foreign, steal = foreign + other, steal + steal1 - steal0
            if other > 0.03 * SECONDS * TICK or steal1 - steal0 > 0.03 * SECONDS * TICK:
                log(f"WARNING: other processes used {other / TICK:.1f} s and the hypervisor took "
                    f"{(steal1 - steal0) / TICK:.1f} s of CPU during this round")
            throughput[name].append(requests / SECONDS)
            cpu[name].append(used / TICK / requests * 1e6)
            extra = ""
            if name in REDIS_TARGETS:
                redis_cpu[name].append((tree_ticks(redis.pid) - redis_before) / TICK / requests * 1e6)
                commands[name].append((redis_commands(redis_port) - commands_before - 1) / requests)
                extra = f", redis-server {redis_cpu[name][-1]:.1f} µs/req, {commands[name][-1]:.2f} commands/req"
            log(f"round {round_ + 1} {name:18s} {requests / SECONDS:9.0f} req/s "
                f"{cpu[name][-1]:6.1f} µs CPU/req{extra}")

    fixed_path = {"direct": "/api/v1/whatsapp/media"}
    latency, oha_latency = {}, {}
    for name, (port, _, _) in targets.items():
        latency[name] = openloop(port, fixed_path.get(name, "/media"), unique=name in FORWARD,
                                 pairs=(name == "relay-limited"))
        log(f"open loop {name:18s} p50/p99/p99.9 {latency[name]['p50_us']}/{latency[name]['p99_us']}/"
            f"{latency[name]['p999_us']} µs at {latency[name]['rate']} req/s")
    for name, (port, _, _) in targets.items():
        # oha sends one fixed body: on the relay that is the replay path (and one pair).
        if name == "floor" or name not in FORWARD:
            oha_latency[name] = oha(port, fixed_path.get(name, "/media"))
            if oha_latency[name]:
                o = oha_latency[name]
                log(f"oha       {name:18s} p50/p99/p99.9 {o['p50_us']}/{o['p99_us']}/{o['p999_us']} µs")
    loaded = {name: tree_rss(proc.pid) for name, proc in processes.items()}
    relay_ports = {"relay": (relay_port, relay), "relay-limited": (limited_port, limited),
                   "relay-redis": (redis_relay_port, redis_relay)}
    relay_outcomes = {name: outcomes(port) for name, (port, proc) in relay_ports.items() if proc}
    for proc in processes.values():
        if proc is not proxy:
            stop(proc)

    memory, start = [], None
    if RELAY_WANTED:
        for count in [0, *FILL]:
            capacity = max(100_000, count)
            port = free_port()
            proc = start_relay(port, gateway_port, RELAY_DEDUP_CAPACITY=capacity)
            wait_http(port, proc=proc)
            entries, took = fill(port, count) if count else (dedup_entries(port), 0.0)
            time.sleep(0.5)
            memory.append((count, capacity, entries, *rss(proc.pid)))
            log(f"memory {count:>9,} asked, {entries:>9,} held (capacity {capacity:,}): "
                f"VmRSS {memory[-1][3] / 1e6:.1f} MB, RssAnon {memory[-1][4] / 1e6:.1f} MB"
                + (f", filled in {took:.0f} s" if count else ""))
            stop(proc)
        start = startup_ms(gateway_port)
        log(f"start-up {start[0]:.1f} ms (runs: {', '.join(f'{t:.1f}' for t in start[1])})")

    others = (foreign / TICK, steal / TICK, ROUNDS * len(targets) * SECONDS)
    report(throughput, cpu, {"cpu": redis_cpu, "commands": commands}, latency, oha_latency, idle,
           loaded, memory, start, relay_outcomes, busy, others)


# ---------------------------------------------------------------- the report

def report(throughput, cpu, redis_side, latency, oha_latency, idle, loaded, memory, start, relay_outcomes,
           busy, others):
    mb = lambda b: f"{b / 1e6:.1f} MB"
    spread = lambda values: (statistics.median(values), min(values), max(values))
    tp = {k: spread(v) for k, v in throughput.items()}
    cp = {k: spread(v) for k, v in cpu.items()}
    redis_cp = {k: spread(v) for k, v in redis_side["cpu"].items()}
    per_request = {k: spread(v) for k, v in redis_side["commands"].items()}
    ratio = lambda name, base: (f"{tp[name][0] / tp[base][0]:.2f}×" if base in tp else "—")
    ratio3 = lambda name, base: f"{tp[name][0] / tp[base][0]:.3f}×"
    cpu_ratio = lambda name, base: (f"{cp[name][0] / cp[base][0]:.2f}×" if base in cp else "—")
    lat = lambda d: f"{d['p50_us']} / {d['p99_us']} / {d['p999_us']}" if d else "—"
    added = lambda name: (f"{latency[name]['p50_us'] - latency['direct']['p50_us']:+d} / "
                          f"{latency[name]['p99_us'] - latency['direct']['p99_us']:+d}"
                          if "direct" in latency and name != "direct" else "—")
    lines = []
    add = lines.append
    add(f"| target | req/s, median of {ROUNDS} | spread | × nginx | × floor | × direct | CPU µs/req (spread) "
        f"| CPU × floor | p50 / p99 / p99.9 µs at {RATE:,} req/s | added p50 / p99 vs direct "
        f"| oha p50 / p99 / p99.9 µs |")
    add("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in tp:
        median, low, high = tp[name]
        add(f"| {name} | {median:,.0f} | {low:,.0f}–{high:,.0f} | {ratio(name, 'nginx')} | "
            f"{ratio(name, 'floor')} | {ratio(name, 'direct')} | "
            f"{cp[name][0]:.1f} ({cp[name][1]:.1f}–{cp[name][2]:.1f}) | {cpu_ratio(name, 'floor')} | "
            f"{lat(latency[name])} | {added(name)} | {lat(oha_latency.get(name))} |")
    main_table = "\n".join(lines)

    lines = []
    add = lines.append
    without_redis = {"relay-redis": "relay", "relay-redis-replay": "relay-replay",
                     "before-redis": "before", "before-redis-replay": "before-replay",
                     "relay-redis-lifecycle": "relay", "relay-redis-lifecycle-replay": "relay-replay"}
    if redis_cp:
        add(f"| target | req/s | relay CPU µs/req | redis-server CPU µs/req | relay + redis-server | Redis commands per request "
            f"| p99 µs at {RATE:,} req/s | p99 added by Redis |")
        add("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in redis_cp:
        base = without_redis[name]
        by_redis = (f"{latency[name]['p99_us'] - latency[base]['p99_us']:+d} (vs {base})"
                    if base in latency else "—")
        add(f"| {name} | {tp[name][0]:,.0f} | {cp[name][0]:.1f} | {redis_cp[name][0]:.1f} | "
            f"{cp[name][0] + redis_cp[name][0]:.1f} | {per_request[name][0]:.2f} "
            f"({per_request[name][1]:.2f}–{per_request[name][2]:.2f}) | {latency[name]['p99_us']} | {by_redis} |")
    redis_table = "\n".join(lines)

    lines = []
    add = lines.append
    add("| process | when | VmRSS | RssAnon | bytes per entry |")
    add("| --- | --- | ---: | ---: | ---: |")
    served = "idle (one request served)"
    rows = {"nginx": ("nginx proxy (master + worker)", "idle", ""),
            "floor": ("floor", served, ""),
            "relay": ("relay", served, " (100k window full)"),
            "relay-limited": ("relay-limited", served, " (100k window full, a new pair per request)"),
            "relay-redis": ("relay-redis", served, ""),
            "relay-redis-lifecycle": ("relay-redis-lifecycle", served, ""),
            "redis-server": ("redis-server (relay-redis's store)", served, "")}
    for key, (label, when, full) in rows.items():
        if key in idle:
            add(f"| {label} | {when} | {mb(idle[key][0])} | {mb(idle[key][1])} | |")
            add(f"| {label} | after the throughput and latency runs{full} | {mb(loaded[key][0])} | "
                f"{mb(loaded[key][1])} | |")
    base = memory[0][4] if memory else 0
    for count, capacity, entries, vmrss, anon in memory:
        per = f"{(anon - base) / entries:.0f}" if count and entries else ""
        add(f"| relay, fresh, `RELAY_DEDUP_CAPACITY={capacity}` | {entries:,} messageIds remembered | "
            f"{mb(vmrss)} | {mb(anon)} | {per} |")
    memory_table = "\n".join(lines)

    checks = []
    if "relay" in tp and "floor" in tp:
        relay_p99, floor_p99 = latency["relay"]["p99_us"], latency["floor"]["p99_us"]
        checks += [
            ("forward CPU µs/req ≤ 1.10× floor's", cp["relay"][0] <= 1.10 * cp["floor"][0],
             f"{cp['relay'][0]:.1f} vs {cp['floor'][0]:.1f} µs ({cp['relay'][0] / cp['floor'][0]:.3f}×)"),
            ("forward throughput ≥ 0.90× floor's", tp["relay"][0] >= 0.90 * tp["floor"][0],
             ratio3("relay", "floor")),
            (f"forward p99 at {RATE:,} req/s ≤ 1.2× floor's p99", relay_p99 <= 1.2 * floor_p99,
             f"{relay_p99} vs {floor_p99} µs ({relay_p99 / max(1, floor_p99):.2f}×)"),
        ]
    if "relay-replay" in tp and "nginx" in tp:
        checks.append(("replay throughput ≥ 2× nginx", tp["relay-replay"][0] >= 2 * tp["nginx"][0],
                       ratio3("relay-replay", "nginx")))
    if memory:
        idle_rss = memory[0][3]
        checks.append(("RSS ≤ 20 MB idle", idle_rss <= 20e6, f"{mb(idle_rss)} (fresh relay, VmRSS)"))
        at100k = [m for m in memory if m[0] == 100_000]
        if at100k:
            checks.append(("RSS ≤ 100 MB with 100k remembered", at100k[0][3] <= 100e6, f"{mb(at100k[0][3])} (VmRSS)"))
    if start:
        checks.append(("start-up ≤ 50 ms", start[0] <= 50, f"{start[0]:.1f} ms"))
    lines = ["| target | met? | measured |", "| --- | --- | --- |"]
    lines += [f"| {what} | {'yes' if ok else '**no**'} | {value} |" for what, ok, value in checks]
    check_table = "\n".join(lines) if checks else ""

    lines = []
    for before, after in (("before", "relay"), ("before-replay", "relay-replay")):
        if before in tp and after in tp:
            if not lines:
                lines = [f"| path | before ({BEFORE_REV[:7]}) req/s | after req/s | after ÷ before "
                         f"| before CPU µs/req | after CPU µs/req | after ÷ before |",
                         "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
            lines.append(f"| {after} | {tp[before][0]:,.0f} | {tp[after][0]:,.0f} | "
                         f"{tp[after][0] / tp[before][0]:.3f}× | {cp[before][0]:.1f} | {cp[after][0]:.1f} | "
                         f"{cp[after][0] / cp[before][0]:.3f}× |")
    before_table = "\n".join(lines)
    if before_table:
        check_table = (check_table + "\n\nBefore and after, in the same rounds (BENCH_BEFORE):\n\n"
                       + before_table)

    reasons = {}
    for name, reason in SKIPPED.items():
        reasons.setdefault(reason, []).append(name)
    notes = [f"Skipped {', '.join(names)}: {reason}." for reason, names in reasons.items()] + NOTES
    notes_text = "\n\n".join(notes)

    startup_line = (f"Start-up, exec to the first 200 on `GET /healthz` (median of {len(start[1])}): "
                    f"**{start[0]:.1f} ms** (runs: {', '.join(f'{t:.1f}' for t in start[1])})." if start else "")
    printed = "\n\n".join(t for t in (main_table, redis_table, memory_table, startup_line, check_table,
                                       notes_text) if t)
    print("\n" + printed + "\n", flush=True)

    cpu_model = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                      if l.startswith("model name")), "unknown")
    version = "not run"
    if RELAY_WANTED:
        version = subprocess.run([str(RELAY), "--version"], capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    nginx_version = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    wrk_version = wrk_version.split(" Copyright")[0].strip()
    oha_version = (subprocess.run(["oha", "--version"], capture_output=True, text=True).stdout.strip()
                   if shutil.which("oha") else "oha not installed")
    redis_version = (subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
                     .stdout.split(" sha=")[0].strip() if shutil.which("redis-server") else "")
    outcome_lines = []
    for name, counts in relay_outcomes.items():
        text = ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()) if v)
        if text:
            outcome_lines.append(f"{name}: {text}")
    outcome_text = ("Relay outcomes over the throughput and latency runs (from `/metrics`): "
                    + "; ".join(outcome_lines) + ".") if outcome_lines else ""
    ratio_text = ("Ratios are of median throughput and median CPU µs/req. **× floor** is what the relay's "
                  "own work costs\non top of the bare axum + reqwest forwarder (relay ÷ floor). Latency: "
                  "the same open-loop generator\nfor every target, so the columns compare; \"added\" is "
                  "the difference from **direct** in this run.")
    redis_text = ("With the dedup store in redis-server: the relay's CPU and redis-server's apart, Redis "
                  "commands per request\n(`total_commands_processed` from `INFO stats`), and the p99 "
                  "added by Redis (the same target\nwithout Redis, subtracted, in this run).\n\n"
                  + redis_table) if redis_table else ""
    results = "\n\n".join(t for t in (main_table, ratio_text, redis_text, memory_table, startup_line,
                                       check_table, outcome_text, notes_text) if t)
    runtime, measuring = time.time() - T0, time.time() - MEASURE_T0
    commands = "\n".join(f"    {c}" for c in COMMANDS)
    generated = f"""Written by `bash bench/run.sh` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {measuring / 60:.1f} minutes of
measuring ({runtime / 60:.1f} minutes with the build). Numbers move ±5–10 % from run to run: compare targets within one run.

- Machine: {os.cpu_count()} cores, {cpu_model}, Linux {platform.release()}; {busy:.0%} of the CPU busy just before the start;
  during the {others[2]} s of throughput rounds, other processes used {others[0]:.1f} s of CPU and the hypervisor took
  {others[1]:.1f} s (steal).
- Relay: {version}, commit {commit}, `cargo build --release --locked`. Floor: `bench/floor.rs`,
  `cargo bench --bench floor --no-run --locked`.
- Tools: {'; '.join(t for t in (nginx_version, wrk_version, oha_version, redis_version) if t)}.

## Results

{results}

## Method

- Everything on 127.0.0.1. The load generator is pinned to core 0, the fake gateway and the
  targets to core 1 (`taskset -c`), so a target's throughput is set by its CPU cost per request
  and the generator never limits it. The relay and the floor see one CPU and so run tokio's
  current-thread scheduler; nginx runs one worker process.
- Fake gateway: nginx, one worker, `return 200` with a {len(ENVELOPE)}-byte Lipachat `SENT` envelope,
  `Content-Type: application/json`, on `location = /api/v1/whatsapp/media`.
- **direct**: load generator → fake gateway. **nginx**: a header-injecting reverse proxy
  (`proxy_set_header apiKey`, upstream `keepalive 64`, `proxy_http_version 1.1`,
  `proxy_set_header Connection ""`, one worker, no access log).
  **floor**: `bench/floor.rs`, the bare axum + reqwest forwarder: one route, `POST /media` →
  `reqwest` POST with the `apiKey` header → the gateway's status, content type and body; no
  validation, dedup, rate limits, metrics, logs, retries or timeouts. The relay's reqwest
  dependency and features, allocator (jemalloc) and runtime choice, so the difference is the
  relay's own work. It gets the relay's forward requests (`bench/forward.lua`).
  **relay**: `lipachat-relay serve` with `RUST_LOG=warn` (no per-request log line, like nginx
  without its access log), the rate limits off (`{' '.join(f'{k}={v}' for k, v in LIMITS_OFF.items())}`: the bench
  sends everything from one `from` to one `to`) and default settings otherwise
  (`RELAY_DEDUP_CAPACITY=100000`), a new messageId per request (`bench/forward.lua`: the
  prefix holds the time, a random number and the wrk thread's number, so rounds, threads and
  runs never collide), so the dedup window fills during the warm-up and first round and evicts
  from then on.
  **relay-replay**: one fixed body (`bench/replay.lua`), the same messageId again and again;
  every answer after the first is a replay.
  **relay-limited**: a second relay with the rate limits on, the sender limit out of reach
  (`{' '.join(f'{k}={v}' for k, v in LIMITS_OUT_OF_REACH.items())}`) and the pair limit at its defaults; every request has a
  new messageId and a new `to` (`bench/forward-pairs.lua`, the open-loop generator's
  `--pairs`), so each is a new (from, to) pair key, the limiter's worst case: relay-limited −
  relay is the limiter's cost.
  **relay-redis** and **relay-redis-replay**: a third relay, limits off, with its dedup store
  in a local `redis-server --save "" --appendonly no` (pinned to core 1 with the others) via
  `RELAY_REDIS_URL=redis://127.0.0.1:PORT` and `RELAY_REDIS_PREFIX={REDIS_PREFIX}`; forward and replay
  as above. They are skipped, with the reason in the report, when redis-server is missing or
  the relay with `RELAY_REDIS_URL` set does not start or does not answer its first request 2xx.
  **relay-redis-lifecycle** and **relay-redis-lifecycle-replay**: a fourth relay on the same
  redis-server (prefix `{REDIS_PREFIX}-lifecycle`) with the webhook listener and events on
  (`RELAY_WEBHOOK_LISTEN`, `RELAY_EVENTS_URL` = the fake gateway's `/events`, which answers 204):
  every accepted send gets a status record, its `waId` index and a SENT event, delivered, signed,
  by the same process; relay-redis-lifecycle − relay-redis is what that costs.
- Throughput: `wrk -t1 -c64 -d{SECONDS}s`, after a 2 s warm-up per target, {ROUNDS} rounds interleaved
  ({', '.join(tp)}, then again); median and spread (min–max). A run with any non-2xx answer
  or socket error aborts the benchmark.
- CPU µs per request: user+sys ticks (`/proc/PID/stat`, {TICK} Hz) of the target's process tree
  during the round ÷ requests served. For **nginx**, the **floor** and the **relay** targets this
  is the proxy alone (the fake gateway's share is not included); for **direct** it is the fake
  gateway. For **relay-redis** targets redis-server's ticks are counted apart, and Redis commands
  per request = the change in `total_commands_processed` (`INFO stats`, over a plain socket)
  during the round, less the INFO itself, ÷ requests served.
- Latency: `bench/openloop.rs`, an open-loop generator: {RATE:,} req/s for {SECONDS} s over 16 connections,
  each latency measured from the request's intended send time, so a stall counts in full (no
  coordinated omission). It is used for every target because it is the one that can send a new
  messageId per request ({', '.join(FORWARD)}; oha sends one fixed body, which on the relay is
  the replay path). oha (`-q {RATE} -c 16 -z {SECONDS}s --latency-correction`) is run on the
  fixed-body targets and the floor as a cross-check. "p99 added by Redis" = relay-redis p99 −
  relay p99 (relay-redis-replay − relay-replay), same run.
- Order: warm-up, throughput rounds, then the latency runs ({', '.join(tp)},
  then oha), all against the same processes, so the relay's latency is measured with its
  100,000-entry window full and evicting, as in a long-running sidecar. The "after the runs"
  memory rows are read at the end of this phase, before the servers are stopped. Then the memory
  points and the start-up runs, each with a fresh relay (limits off).
- Memory: VmRSS and RssAnon from `/proc/PID/status`. For each point a fresh relay, filled with
  unique messageIds as fast as wrk sends them (`bench/fill.lua`) until the
  `lipachat_relay_dedup_entries` gauge reaches the count; `RELAY_DEDUP_CAPACITY` is the larger of
  100,000 and the count. Bytes per entry = (RssAnon − RssAnon of the empty relay) ÷ entries.
- Start-up: from just before exec (`taskset` → `lipachat-relay serve`) to the first 200 on
  `GET /healthz`, polled every 0.2 ms; median of 5.

Commands, as run (ports and the temp dir replaced by placeholders):

{commands}
"""
    OUT.write_text(splice(OUT.read_text() if OUT.exists() else "", generated))
    log(f"wrote {OUT}")


# BENCHMARKS.md also holds text written by hand (how to run the bench, a reading of the runs):
# the script rewrites only what lies between these two lines.
GENERATED_BEGIN = "<!-- written by bench/run.sh from here; text outside these two lines is kept -->"
GENERATED_END = "<!-- written by bench/run.sh up to here -->"


def splice(document, generated):
    """The document with its generated part replaced; a new document if it has no markers."""
    block = f"{GENERATED_BEGIN}\n\n{generated.strip()}\n\n{GENERATED_END}"
    if GENERATED_BEGIN in document and GENERATED_END in document:
        head, rest = document.split(GENERATED_BEGIN, 1)
        _, tail = rest.split(GENERATED_END, 1)
        return head + block + tail
    return f"# Benchmarks\n\n{block}\n"


if __name__ == "__main__":
    try:
        main()
    finally:
        stop_all()
