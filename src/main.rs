//! The `lipachat-relay` binary: parses the command line and dispatches (SPEC "Binary and
//! commands"). `healthcheck` runs before any configuration is read, so the probe works in an
//! image without the secret. Bad configuration prints one line and exits 2; the commands that
//! run a server live in the library (`commands`), which keeps its modules private.
#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use lipachat_relay::variables::{self as vars, LISTEN, MOCK_LISTEN};

/// jemalloc instead of glibc's malloc: on the forward path glibc spent ~17 % of the CPU in
/// `_int_malloc` and `malloc_consolidate` once the dedup window churned; jemalloc cut the CPU per
/// request by about a quarter, keeps idle RSS at ~8 MB and the 100k window smaller.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Sends WhatsApp messages through the Lipachat gateway on behalf of local services, which
/// never hold the gateway's secret. Configuration comes from the environment (`serve --help`
/// lists it).
#[derive(Parser)]
#[command(name = "lipachat-relay", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay (the default).
    Serve {
        /// Run against an in-process mock gateway: no key or network needed.
        #[arg(long)]
        mock_upstream: bool,
    },
    /// Run only the mock gateway (for integration tests and the compose demo).
    MockGateway {
        /// Listen address.
        #[arg(long, env = MOCK_LISTEN.name, default_value = MOCK_LISTEN.default)]
        listen: SocketAddr,
    },
    /// Receive the relay's events: verify each one's Standard Webhooks signature with
    /// RELAY_EVENTS_SECRET (or RELAY_EVENTS_SECRET_FILE), answer 204 and print it to stdout as
    /// one JSON line; answer 401 to the rest.
    EventsReceive {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
        /// Answer 503 to the first N deliveries of each webhook-id, to watch the retries.
        #[arg(long, value_name = "N", default_value_t = 0)]
        fail_first: u32,
    },
    /// Probe a running relay's /healthz: exit 0 if it answers 200 within 2 s, 1 otherwise.
    Healthcheck {
        /// URL to probe [default: /healthz on RELAY_LISTEN's port, on 127.0.0.1].
        #[arg(long)]
        url: Option<String>,
    },
}

fn main() -> ExitCode {
    let started = Instant::now();
    let cli = parse_cli();
    let command = cli.command.unwrap_or(Command::Serve {
        mock_upstream: false,
    });
    if let Command::Healthcheck { url } = command {
        return healthcheck(url);
    }
    let runtime = match runtime_builder().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return fail(1, &format!("cannot start the runtime: {error}")),
    };
    let ran = runtime.block_on(async {
        match command {
            Command::MockGateway { listen } => lipachat_relay::run_mock_gateway(listen).await,
            Command::Serve { mock_upstream } => {
                lipachat_relay::run_relay(mock_upstream, started).await
            }
            Command::EventsReceive { listen, fail_first } => {
                lipachat_relay::run_events_receive(listen, fail_first).await
            }
            Command::Healthcheck { .. } => Ok(()),
        }
    });
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => fail(failure.code, &failure.message),
    }
}

/// The command line, with every configuration variable listed under `serve --help`.
fn parse_cli() -> Cli {
    let command = Cli::command().mut_subcommand("serve", |serve| serve.after_help(vars::help()));
    let matches = command.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("lipachat-relay: {message}");
    ExitCode::from(code)
}

/// The probe's default: `/healthz` on RELAY_LISTEN's port, via loopback if it listens on all.
fn default_health_url() -> String {
    let parse = |text: &str| text.parse::<SocketAddr>().ok();
    let listen = std::env::var(LISTEN.name)
        .ok()
        .and_then(|text| parse(&text))
        .or_else(|| LISTEN.default.and_then(parse))
        // The table's default is an address (a unit test of `vars` parses it).
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let host = if listen.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], listen.port()))
    } else {
        listen
    };
    format!("http://{host}/healthz")
}

/// One thread when the process may use one CPU (a sidecar's usual quota; std reads the
/// cgroup's CPU limit and the affinity mask), a worker per CPU otherwise. With one CPU the
/// single-threaded scheduler costs ~10 % less CPU per forwarded request than a one-worker
/// pool plus the main thread (measured with bench/run.sh's setup: 28 vs 31 µs).
fn runtime_builder() -> tokio::runtime::Builder {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
}

fn healthcheck(url: Option<String>) -> ExitCode {
    let url = url.unwrap_or_else(default_health_url);
    let probe = async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| e.to_string())?;
        let response = client.get(&url).send().await.map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("{url} answered {}", response.status()))
        }
    };
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|runtime| runtime.block_on(probe));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(1, &format!("unhealthy: {error}")),
    }
}
