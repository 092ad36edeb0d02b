//! Open-loop HTTP/1.1 load generator for bench/run.sh: requests leave at a fixed rate and each
//! latency is measured from the request's *intended* send time, so a stall is counted in full
//! (no coordinated omission). Unlike oha, every request can carry a fresh messageId, which is
//! what the relay's forward path needs.
//!
//! `cargo bench --bench openloop -- --port 8080 --path /media --rate 2000 --seconds 10
//!  --connections 16 [--unique [--pairs]]` prints one JSON line with p50/p99/p99.9 in
//! microseconds. `--pairs` also gives every request a new `to`, so each is a new (from, to)
//! pair for the relay's rate limiter.
//! Meant to run pinned to its own core: the dispatcher spins (yielding) instead of sleeping,
//! because tokio's timer has millisecond resolution.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc};

const BODY: &str = r#"{"messageId":"ID","mediaType":"IMAGE","mediaUrl":"https://cdn.example.com/img/1.png","caption":"hello","from":"254110090747","to":"254712345678"}"#;
const TO: &str = "254712345678";

struct Args {
    port: u16,
    path: String,
    rate: f64,
    seconds: f64,
    connections: usize,
    unique: bool,
    pairs: bool,
    /// Where the `to` numbers start, random per run, so runs practically never repeat a pair.
    to_base: u64,
}

fn args() -> Args {
    let mut args = Args {
        port: 8080,
        path: "/media".into(),
        rate: 2000.0,
        seconds: 10.0,
        connections: 16,
        unique: false,
        pairs: false,
        to_base: fastrand::u64(..100_000_000),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--port" => args.port = it.next().unwrap().parse().unwrap(),
            "--path" => args.path = it.next().unwrap(),
            "--rate" => args.rate = it.next().unwrap().parse().unwrap(),
            "--seconds" => args.seconds = it.next().unwrap().parse().unwrap(),
            "--connections" => args.connections = it.next().unwrap().parse().unwrap(),
            "--unique" => args.unique = true,
            "--pairs" => args.pairs = true,
            _ => {} // cargo bench passes --bench
        }
    }
    args
}

fn request(path: &str, message_id: &str, to: &str) -> Vec<u8> {
    let body = BODY.replace("ID", message_id).replace(TO, to);
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn worker(
    args: Arc<Args>,
    prefix: Arc<str>,
    queue: Arc<Mutex<mpsc::UnboundedReceiver<(u64, Instant)>>>,
) -> Vec<(Duration, bool)> {
    let stream = TcpStream::connect(("127.0.0.1", args.port)).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let fixed = request(&args.path, &format!("{prefix}-fixed"), TO);
    let mut results = Vec::new();
    let mut line = String::new();
    loop {
        let next = queue.lock().await.recv().await;
        let Some((index, intended)) = next else {
            return results;
        };
        let bytes = if args.unique {
            let to = if args.pairs {
                format!("2547{:08}", (args.to_base + index) % 100_000_000)
            } else {
                TO.to_string()
            };
            request(&args.path, &format!("{prefix}-{index}"), &to)
        } else {
            fixed.clone()
        };
        write.write_all(&bytes).await.unwrap();
        let mut status = 0;
        let mut length = 0usize;
        loop {
            line.clear();
            if read.read_line(&mut line).await.unwrap() == 0 {
                panic!("the server closed the connection");
            }
            if line == "\r\n" {
                break;
            }
            if line.starts_with("HTTP/1.1 ") {
                status = line[9..12].parse().unwrap_or(0);
            } else if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        read.read_exact(&mut body).await.unwrap();
        results.push((intended.elapsed(), (200..300).contains(&status)));
    }
}

fn main() {
    let args = Arc::new(args());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let prefix: Arc<str> = format!("ol{}x{}", std::process::id(), fastrand::u32(..)).into();
        let (sender, receiver) = mpsc::unbounded_channel();
        let receiver = Arc::new(Mutex::new(receiver));
        let workers: Vec<_> = (0..args.connections)
            .map(|_| tokio::spawn(worker(args.clone(), prefix.clone(), receiver.clone())))
            .collect();
        let total = (args.rate * args.seconds) as u64;
        let interval = Duration::from_secs_f64(1.0 / args.rate);
        let start = Instant::now() + Duration::from_millis(50);
        let mut index = 0;
        while index < total {
            let now = Instant::now();
            while index < total {
                let intended = start + interval.mul_f64(index as f64);
                if intended > now {
                    break;
                }
                sender.send((index, intended)).unwrap();
                index += 1;
            }
            tokio::task::yield_now().await;
        }
        drop(sender);
        let mut results = Vec::new();
        for worker in workers {
            results.extend(worker.await.unwrap());
        }
        let elapsed = start.elapsed().as_secs_f64();
        let mut latencies: Vec<u128> = results.iter().map(|r| r.0.as_micros()).collect();
        latencies.sort_unstable();
        let pct = |p: f64| latencies[((p * latencies.len() as f64) as usize).min(latencies.len() - 1)];
        println!(
            "{{\"sent\":{total},\"ok\":{},\"errors\":{},\"rate\":{:.0},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{}}}",
            results.iter().filter(|r| r.1).count(),
            results.iter().filter(|r| !r.1).count(),
            results.len() as f64 / elapsed,
            pct(0.50),
            pct(0.99),
            pct(0.999)
        );
    });
}
