//! The `lipachat-relay` binary: parses the command line and dispatches (SPEC "Binary and
//! commands"). `healthcheck` runs before any configuration is read, so the probe works in an
//! image without the secret. Bad configuration prints one line and exits 2.
#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use lipachat_relay::variables::{
    self as vars, LISTEN, MAX_CONNECTIONS, MOCK_CALLBACK_URL, MOCK_LISTEN, WEBHOOK_LISTEN,
};
use lipachat_relay::{ApiKey, Config, KeyRequirement};
use lipachat_relay::{AppState, mock, serve_all};
use lipachat_relay::{FdLimit, ServerOptions};
use tokio::net::TcpListener;

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
    runtime.block_on(async {
        match command {
            Command::MockGateway { listen } => run_mock_gateway(listen).await,
            Command::Serve { mock_upstream } => run_relay(mock_upstream).await,
            Command::EventsReceive { listen, fail_first } => {
                run_events_receive(listen, fail_first).await
            }
            Command::Healthcheck { .. } => ExitCode::SUCCESS,
        }
    })
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

async fn run_relay(mock_upstream: bool) -> ExitCode {
    let started = Instant::now();
    // Before anything opens a file: client connections are capped below this limit.
    let fds = lipachat_relay::raise_fd_limit();
    let keys = if mock_upstream {
        KeyRequirement::Optional
    } else {
        KeyRequirement::Required
    };
    let mut config = match Config::from_env(keys) {
        Ok(config) => config,
        Err(error) => return fail(2, &error.to_string()),
    };
    if let Err(error) = lipachat_relay::init_logs(config.log_format) {
        return fail(2, &error.to_string());
    }
    if mock_upstream {
        match start_mock_upstream(&config).await {
            Ok((base_url, key)) => {
                config.base_url = base_url;
                config.api_key = Some(key);
            }
            Err(error) => return fail(1, &format!("cannot start the mock gateway: {error}")),
        }
    }
    let listener = match TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            return fail(
                1,
                &format!(
                    "{}: cannot listen on {}: {error}",
                    LISTEN.name, config.listen
                ),
            );
        }
    };
    let webhooks = match &config.webhooks {
        Some(hooks) => match TcpListener::bind(hooks.listen).await {
            Ok(listener) => Some(listener),
            Err(error) => {
                return fail(
                    1,
                    &format!(
                        "{}: cannot listen on {}: {error}",
                        WEBHOOK_LISTEN.name, hooks.listen
                    ),
                );
            }
        },
        None => None,
    };
    log_start(&config, mock_upstream, &fds);
    let state = match AppState::new(config) {
        Ok(state) => state,
        Err(error) => return fail(1, &error.to_string()),
    };
    tracing::info!(
        listen = %listener.local_addr().map_or_else(|_| String::new(), |a| a.to_string()),
        startup_ms = started.elapsed().as_secs_f64() * 1000.0,
        "ready"
    );
    match serve_all(listener, webhooks, state, lipachat_relay::signal()).await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(error) => fail(1, &format!("server error: {error}")),
    }
}

/// The start-up line: the effective settings, as an operator reads them (no secret).
fn log_start(config: &Config, mock_upstream: bool, fds: &std::io::Result<FdLimit>) {
    let redis = config.redis.urls.as_ref().map(|urls| urls.redacted());
    let fd_limit = fds
        .as_ref()
        .map_or_else(|_| lipachat_relay::fd_limit(), |fds| Some(fds.now));
    let raised_from = fds
        .as_ref()
        .ok()
        .filter(|fds| fds.before < fds.now)
        .map(|fds| fds.before);
    let connections = ServerOptions::new(config, fd_limit);
    tracing::info!(
        gateway = %config.base_url,
        mock_upstream,
        listen = %config.listen,
        default_from = config.default_from.as_ref().map(|n| n.masked()),
        dedup_ttl_secs = config.dedup_ttl.as_secs(),
        dedup_capacity = config.dedup_capacity,
        max_attempts = config.max_attempts,
        attempt_timeout_ms = ms(config.attempt_timeout),
        deadline_ms = ms(config.deadline),
        max_in_flight = config.max_in_flight,
        redis = redis.as_deref().unwrap_or("none (this process's memory only)"),
        redis_cluster = config.redis.cluster,
        redis_failure = config.redis.failure.as_str(),
        sender_rate = config.limits.sender_rate,
        pair_interval_ms = ms(config.limits.pair_interval),
        pair_burst = config.limits.pair_burst,
        rate_max_wait_ms = ms(config.limits.max_wait),
        header_timeout_ms = ms(connections.header_timeout),
        body_timeout_ms = ms(config.connections.body_timeout),
        idle_timeout_secs = connections.idle_timeout.as_secs(),
        max_connections = connections.max_connections,
        fd_limit,
        fd_limit_raised_from = raised_from,
        webhook_listen = config.webhooks.as_ref().map(|hooks| hooks.listen.to_string()),
        status_ttl_secs = config.status.ttl.as_secs(),
        events_url = config.events.as_ref().map(|events| redacted_url(&events.url)),
        events_max_age_secs = config.events.as_ref().map(|events| events.max_age.as_secs()),
        "starting"
    );
    if let Err(error) = fds {
        tracing::warn!(%error, fd_limit, "cannot raise the file-descriptor limit");
    }
    if connections.max_connections < config.connections.max_connections {
        tracing::warn!(
            configured = config.connections.max_connections,
            max_connections = connections.max_connections,
            fd_limit,
            "{} capped below the file-descriptor limit, leaving room for gateway connections \
             and files",
            MAX_CONNECTIONS.name
        );
    }
}

/// Scheme, host, port and path: a receiver's URL may carry credentials or a token in its
/// query.
fn redacted_url(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{}://{host}:{port}{}", url.scheme(), url.path()),
        None => format!("{}://{host}{}", url.scheme(), url.path()),
    }
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Starts the in-process mock on a free loopback port with a random key; it posts its
/// callbacks to the relay's own webhook listener when that is on.
async fn start_mock_upstream(config: &Config) -> std::io::Result<(url::Url, ApiKey)> {
    let key = ApiKey::new(format!("mock-{:032x}", fastrand::u128(..)));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let callback_url = match &config.webhooks {
        Some(webhooks) => Some(
            mock::relay_webhook_url(webhooks.listen, webhooks.token.expose())
                .map_err(std::io::Error::other)?,
        ),
        None => None,
    };
    let callbacks = callback_url.is_some();
    let router = mock::Options::new(mock::Accept::Key(key.clone()))
        .callback_url(callback_url)
        .router()?;
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "mock gateway stopped");
        }
    });
    let base = url::Url::parse(&format!("http://{address}/")).map_err(std::io::Error::other)?;
    tracing::info!(%address, callbacks, "mock gateway started (in process)");
    Ok((base, key))
}

async fn run_mock_gateway(listen: SocketAddr) -> ExitCode {
    // The mock reads the same variables as the relay, leniently: only the key and log format.
    let config = Config::from_env(KeyRequirement::Optional);
    let (accept, format) = match config {
        Ok(config) => (
            config
                .api_key
                .map_or(mock::Accept::AnyKey, mock::Accept::Key),
            config.log_format,
        ),
        Err(error) => return fail(2, &error.to_string()),
    };
    // Unset or empty: no callbacks. Not UTF-8: `Config::from_env` has refused it already.
    let callback_url = match std::env::var(MOCK_CALLBACK_URL.name) {
        Ok(text) if !text.trim().is_empty() => match mock::parse_callback_url(&text) {
            Ok(url) => Some(url),
            Err(error) => return fail(2, &error.to_string()),
        },
        _ => None,
    };
    if let Err(error) = lipachat_relay::init_logs(format) {
        return fail(2, &error.to_string());
    }
    let listener = match TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(error) => return fail(1, &format!("cannot listen on {listen}: {error}")),
    };
    let any = matches!(accept, mock::Accept::AnyKey);
    // The URL's origin only: its path may carry the relay's webhook token.
    let callbacks = callback_url
        .as_ref()
        .map(|url| url.origin().ascii_serialization());
    let router = match mock::Options::new(accept)
        .callback_url(callback_url)
        .router()
    {
        Ok(router) => router,
        Err(error) => return fail(1, &format!("cannot start the mock gateway: {error}")),
    };
    tracing::info!(%listen, accepts_any_key = any, callbacks, "mock gateway ready");
    match axum::serve(listener, router)
        .with_graceful_shutdown(lipachat_relay::signal())
        .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(1, &format!("server error: {error}")),
    }
}

async fn run_events_receive(listen: SocketAddr, fail_first: u32) -> ExitCode {
    // Only the secret is read: the receiver runs beside the relay, not as one.
    let secret = match lipachat_relay::events_secret_from_env() {
        Ok(secret) => secret,
        Err(error) => return fail(2, &error.to_string()),
    };
    let listener = match TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(error) => return fail(1, &format!("cannot listen on {listen}: {error}")),
    };
    match lipachat_relay::receive_events(listener, secret, fail_first, lipachat_relay::signal())
        .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(1, &format!("server error: {error}")),
    }
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
