//! What each step of the relay's forward path costs on its own, in nanoseconds per call, on
//! one thread: validation, the fingerprint, the dedup window (moka) with 100,000 answers
//! remembered, a whole dedup round (begin → complete) for a new `messageId`, the check that a
//! gateway answer is JSON, and the copy of a remembered answer. bench/run.sh runs it and
//! BENCHMARKS.md reports it next to the floor and the relay, so the relay's own cost per
//! request can be read step by step. `cargo bench --bench parts` runs it alone.
//!
//! Each figure is the median of 5 runs of `PARTS_ITERATIONS` (default 200,000) calls.
//! `PARTS_ONLY=validate` (a word of the step's name) runs only the matching steps, e.g. under
//! `valgrind --tool=callgrind`, whose instruction counts do not move with the machine's load.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use lipachat_relay::SendKind;
use lipachat_relay::internals::Fingerprint;
use lipachat_relay::internals::GatewayReply;
use lipachat_relay::internals::MemoryWindow;
use lipachat_relay::internals::Metrics;
use lipachat_relay::internals::validate;
use lipachat_relay::internals::{Begin, Dedup, Remembered};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The forward request of bench/forward.lua, with its messageId.
fn body(id: u64) -> Vec<u8> {
    format!(
        r#"{{"messageId":"fw1764201234-123456789-t1-{id}","mediaType":"IMAGE","mediaUrl":"https://cdn.example.com/img/1.png","caption":"hello","from":"254110090747","to":"254712345678"}}"#
    )
    .into_bytes()
}

/// The gateway's 236-byte answer of bench/bench.py.
const ENVELOPE: &[u8] = br#"{"timestamp":"2026-11-25T08:00:00.000Z","data":{"messageId":"bench-0001","waId":"wamid.HBgMMjU0NzEyMzQ1Njc4FQIAERgSNUQ4RjM2QjNFQjY2Q0Q3NkE0AA==","status":"SENT","statusDesc":"Message sent"},"status":"success","message":"","errors":null}"#;

fn reply() -> GatewayReply {
    GatewayReply {
        status: StatusCode::OK,
        content_type: Some(HeaderValue::from_static("application/json")),
        body: Bytes::from_static(ENVELOPE),
        is_json: true,
        retry_after: None,
    }
}

/// Whether a step is selected by `PARTS_ONLY`.
fn selected(name: &str) -> bool {
    std::env::var("PARTS_ONLY").map_or(true, |only| name.contains(&only))
}

/// Median ns per call of `step` over 5 runs of `n` calls; `step` gets the call's number.
fn measure(n: u64, mut step: impl FnMut(u64)) -> f64 {
    let mut runs: Vec<f64> = (0..5)
        .map(|run| {
            let started = Instant::now();
            for i in 0..n {
                step(run * n + i);
            }
            started.elapsed().as_nanos() as f64 / n as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[2]
}

fn main() {
    let n: u64 = std::env::var("PARTS_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("parts: cannot start a runtime: {error}");
            return;
        }
    };
    let bodies: Vec<Vec<u8>> = (0..1024).map(body).collect();
    let kind = SendKind::Media;
    let mut rows: Vec<(&str, f64)> = Vec::new();
    // Runs a step when selected.
    macro_rules! step {
        ($name:expr, $measure:expr) => {
            if selected($name) {
                rows.push(($name, $measure));
            }
        };
    }

    step!(
        "validate a media request (parse, check, normalise, fingerprint)",
        measure(n, |i| {
            let _ = black_box(validate(kind, &bodies[(i % 1024) as usize]));
        })
    );
    step!(
        "fingerprint of the forwarded body (xxh3-128)",
        measure(n, |i| {
            black_box(Fingerprint::of("media", &bodies[(i % 1024) as usize]));
        })
    );
    step!(
        "is the gateway's answer JSON (serde_json, 236 bytes)",
        measure(n, |_| {
            black_box(serde_json::from_slice::<serde::de::IgnoredAny>(ENVELOPE).is_ok());
        })
    );
    let answer = reply();
    let fingerprint = Fingerprint::of("media", b"x");
    step!(
        "copy of the answer to remember (Remembered::of)",
        measure(n, |_| {
            black_box(Remembered::of(fingerprint, &answer));
        })
    );

    // The moka window full at 100,000, as in the benchmark's steady state.
    let window = MemoryWindow::new(100_000, Duration::from_secs(86_400));
    let remembered = Remembered::of(fingerprint, &answer);
    let fill = if selected("moka") { 100_000u64 } else { 0 };
    for i in 0..fill {
        window.insert(Arc::from(format!("fill-{i}").as_str()), remembered.clone());
    }
    window.entries();
    let ids: Vec<Arc<str>> = (0..(if fill > 0 { 6 * n } else { 0 }))
        .map(|i| Arc::from(format!("m-{i}").as_str()))
        .collect();
    if selected("moka") {
        // The slowest inserts: moka does its housekeeping (and its hash table's clean-up)
        // inline, on the inserting thread.
        let mut times: Vec<u128> = (0..n)
            .map(|i| {
                let started = Instant::now();
                window.insert(Arc::clone(&ids[(5 * n + i) as usize]), remembered.clone());
                started.elapsed().as_nanos()
            })
            .collect();
        times.sort_unstable();
        let at = |q: f64| times[((times.len() as f64 - 1.0) * q) as usize];
        eprintln!(
            "moka insert (100k full): p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns over {n} inserts",
            at(0.5),
            at(0.99),
            at(0.999),
            times.last().copied().unwrap_or(0)
        );
    }
    step!(
        "moka window: insert a new id (100k full, evicting)",
        measure(n, |i| window
            .insert(Arc::clone(&ids[i as usize]), remembered.clone()))
    );
    let roomy = MemoryWindow::new(100_000_000, Duration::from_secs(86_400));
    let roomy_ids: Vec<Arc<str>> = (0..(if fill > 0 { 5 * n } else { 0 }))
        .map(|i| Arc::from(format!("r-{i}").as_str()))
        .collect();
    step!(
        "moka window: insert a new id (room to spare, no eviction)",
        measure(n, |i| roomy
            .insert(Arc::clone(&roomy_ids[i as usize]), remembered.clone()))
    );
    drop(roomy);
    step!(
        "moka window: look up an id it does not hold",
        measure(n, |i| {
            black_box(window.get(&format!("absent-{}", i % 1024)));
        })
    );
    let held: Vec<String> = (0..1024).map(|i| format!("m-{}", 5 * n - 1 - i)).collect();
    step!(
        "moka window: look up an id it holds (a replay)",
        measure(n, |i| {
            black_box(window.get(&held[(i % 1024) as usize]));
        })
    );

    // A whole dedup round for a new messageId: begin (table + moka), complete (moka insert).
    let dedup = Dedup::in_memory(
        MemoryWindow::new(100_000, Duration::from_secs(86_400)),
        Arc::new(Metrics::new()),
    );
    let outcome = Ok(reply());
    let round_ids: Vec<String> = (0..(if selected("dedup") { 5 * n } else { 0 }))
        .map(|i| format!("d-{i}"))
        .collect();
    step!(
        "dedup round for a new id: begin, complete, remember (moka insert)",
        measure(n, |i| {
            runtime.block_on(async {
                if let Begin::Lead(lead) = dedup.begin(&round_ids[i as usize], fingerprint) {
                    lead.complete(&outcome).await;
                }
            });
        })
    );

    println!("| step | ns per call |");
    println!("| --- | ---: |");
    for (what, ns) in rows {
        println!("| {what} | {ns:.0} |");
    }
}
