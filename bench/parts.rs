//! What each step of the relay's forward path costs on its own, in nanoseconds per call, on
//! one thread: validation, the fingerprint, the dedup window (moka) with 100,000 answers
//! remembered, a whole dedup round (begin → complete) for a new `messageId`, the check that a
//! gateway answer is JSON, and the copy of a remembered answer. bench/run.sh runs it and
//! BENCHMARKS.md reports it next to the floor and the relay, so the relay's own cost per
//! request can be read step by step. `cargo bench --bench parts` runs it alone.
//!
//! The steps themselves live in the crate (`src/parts.rs`), beside the private rooms they
//! reach into; this file times them and prints the table.
//!
//! Each figure is the median of 5 runs of `PARTS_ITERATIONS` (default 200,000) calls.
//! `PARTS_ONLY=validate` (a word of the step's name) runs only the matching steps, e.g. under
//! `valgrind --tool=callgrind`, whose instruction counts do not move with the machine's load.

use std::time::Instant;

use lipachat_relay::internals::measure_parts;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Whether a step is selected by `PARTS_ONLY`.
fn selected(name: &str) -> bool {
    std::env::var("PARTS_ONLY").map_or(true, |only| name.contains(&only))
}

/// Median ns per call of `step` over 5 runs of `n` calls; `step` gets the call's number.
fn measure(n: u64, step: &mut dyn FnMut(u64)) -> f64 {
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
    let rows = measure_parts(n, selected, measure);
    println!("| step | ns per call |");
    println!("| --- | ---: |");
    for (what, ns) in rows {
        println!("| {what} | {ns:.0} |");
    }
}
