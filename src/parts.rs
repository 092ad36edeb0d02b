//! The forward path's steps one at a time, for bench/parts.rs (`cargo bench --bench parts`):
//! validation, the fingerprint, the dedup window (moka) with 100,000 answers remembered, a
//! whole dedup round (begin → complete) for a new `messageId`, the check that a gateway answer
//! is JSON, and the copy of a remembered answer. The steps reach into private rooms, so they
//! are written here, beside them; the bench only times what it is handed and prints the
//! table. Not part of the API (re-exported from `lib.rs`'s hidden `internals`).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use crate::dedup::memory::MemoryWindow;
use crate::dedup::{Begin, Dedup, Remembered};
use crate::fingerprint::Fingerprint;
use crate::metrics::Metrics;
use crate::outcome::GatewayReply;
use crate::sends::SendKind;

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

/// Runs every step that `selected` picks by its name, each through `measure(n, step)` (which
/// calls `step` with each call's number and answers ns per call), and returns the rows in
/// order. With the moka steps selected, it also prints the slowest inserts' percentiles to
/// stderr.
pub fn measure_parts(
    n: u64,
    selected: impl Fn(&str) -> bool,
    mut measure: impl FnMut(u64, &mut dyn FnMut(u64)) -> f64,
) -> Vec<(&'static str, f64)> {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("parts: cannot start a runtime: {error}");
            return Vec::new();
        }
    };
    let bodies: Vec<Vec<u8>> = (0..1024).map(body).collect();
    let rules = SendKind::Media.rules();
    let mut rows: Vec<(&'static str, f64)> = Vec::new();
    let mut step = |name: &'static str, run: &mut dyn FnMut(u64)| {
        if selected(name) {
            rows.push((name, measure(n, run)));
        }
    };

    step(
        "validate a media request (parse, check, normalise, fingerprint)",
        &mut |i| {
            let checked = crate::validate::validate(rules, &bodies[(i % 1024) as usize], None);
            black_box(checked.is_ok());
        },
    );
    step("fingerprint of the forwarded body (xxh3-128)", &mut |i| {
        black_box(Fingerprint::of("media", &bodies[(i % 1024) as usize]));
    });
    step(
        "is the gateway's answer JSON (serde_json, 236 bytes)",
        &mut |_| {
            black_box(serde_json::from_slice::<serde::de::IgnoredAny>(ENVELOPE).is_ok());
        },
    );
    let answer = reply();
    let fingerprint = Fingerprint::of("media", b"x");
    step(
        "copy of the answer to remember (Remembered::of)",
        &mut |_| {
            black_box(Remembered::of(fingerprint, &answer));
        },
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
        slowest_inserts(&window, &ids[(5 * n) as usize..], &remembered);
    }
    step(
        "moka window: insert a new id (100k full, evicting)",
        &mut |i| window.insert(Arc::clone(&ids[i as usize]), remembered.clone()),
    );
    let roomy = MemoryWindow::new(100_000_000, Duration::from_secs(86_400));
    let roomy_ids: Vec<Arc<str>> = (0..(if fill > 0 { 5 * n } else { 0 }))
        .map(|i| Arc::from(format!("r-{i}").as_str()))
        .collect();
    step(
        "moka window: insert a new id (room to spare, no eviction)",
        &mut |i| roomy.insert(Arc::clone(&roomy_ids[i as usize]), remembered.clone()),
    );
    drop(roomy);
    step("moka window: look up an id it does not hold", &mut |i| {
        black_box(window.get(&format!("absent-{}", i % 1024)));
    });
    let held: Vec<String> = (0..1024).map(|i| format!("m-{}", 5 * n - 1 - i)).collect();
    step("moka window: look up an id it holds (a replay)", &mut |i| {
        black_box(window.get(&held[(i % 1024) as usize]));
    });

    // A whole dedup round for a new messageId: begin (table + moka), complete (moka insert).
    let dedup = Dedup::in_memory(
        MemoryWindow::new(100_000, Duration::from_secs(86_400)),
        Arc::new(Metrics::new()),
    );
    let outcome = Ok(reply());
    let round_ids: Vec<String> = (0..(if selected("dedup") { 5 * n } else { 0 }))
        .map(|i| format!("d-{i}"))
        .collect();
    step(
        "dedup round for a new id: begin, complete, remember (moka insert)",
        &mut |i| {
            runtime.block_on(async {
                if let Begin::Lead(lead) = dedup.begin(&round_ids[i as usize], fingerprint) {
                    lead.complete(&outcome).await;
                }
            });
        },
    );
    rows
}

/// The slowest inserts into the full window, timed one by one: moka does its housekeeping
/// (and its hash table's clean-up) inline, on the inserting thread.
fn slowest_inserts(window: &MemoryWindow, ids: &[Arc<str>], remembered: &Remembered) {
    let mut times: Vec<u128> = ids
        .iter()
        .map(|id| {
            let started = Instant::now();
            window.insert(Arc::clone(id), remembered.clone());
            started.elapsed().as_nanos()
        })
        .collect();
    times.sort_unstable();
    let at = |q: f64| times[((times.len() as f64 - 1.0) * q) as usize];
    eprintln!(
        "moka insert (100k full): p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns over {} inserts",
        at(0.5),
        at(0.99),
        at(0.999),
        times.last().copied().unwrap_or(0),
        times.len()
    );
}
