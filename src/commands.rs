//! The binary's commands that run a server (SPEC "Binary and commands"): `serve` (the relay,
//! optionally with an in-process mock gateway), `mock-gateway` and `events-receive`. main.rs
//! parses the command line and maps a [`Failure`] to its exit code; everything the commands
//! need from the rest of the crate stays private to it.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::net::TcpListener;
use url::Url;

use crate::app::serve_all;
use crate::clock::millis as ms;
use crate::config::secret::origin_of;
use crate::config::vars::{LISTEN, MAX_CONNECTIONS, MOCK_CALLBACK_URL, WEBHOOK_LISTEN};
use crate::config::{ApiKey, Config, KeyRequirement};
use crate::server::fd::{FdLimit, fd_limit, raise_fd_limit};
use crate::shutdown::signal;
use crate::state::AppState;
use crate::{mock, server, telemetry};

/// Why a command stopped: the process's exit code and one line for stderr.
#[derive(Debug)]
pub struct Failure {
    /// 2 for bad configuration or input (nothing was started), 1 for anything else.
    pub code: u8,
    /// What went wrong, naming the variable or address where there is one.
    pub message: String,
}

impl Failure {
    fn config(message: impl ToString) -> Self {
        Self {
            code: 2,
            message: message.to_string(),
        }
    }

    fn run(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }
}

/// Binds `address`, naming `what` (a variable, or nothing) when it cannot.
async fn bind(address: SocketAddr, what: Option<&str>) -> Result<TcpListener, Failure> {
    TcpListener::bind(address).await.map_err(|error| {
        let prefix = what.map(|name| format!("{name}: ")).unwrap_or_default();
        Failure::run(format!("{prefix}cannot listen on {address}: {error}"))
    })
}

/// `serve`: reads the configuration from the environment, starts logging and the listeners,
/// and serves until SIGTERM or SIGINT has drained it. `started` is when the process began,
/// for the `ready` line's start-up time.
pub async fn run_relay(mock_upstream: bool, started: Instant) -> Result<(), Failure> {
    // Before anything opens a file: client connections are capped below this limit.
    let fds = raise_fd_limit();
    let keys = if mock_upstream {
        KeyRequirement::Optional
    } else {
        KeyRequirement::Required
    };
    let mut config = Config::from_env(keys).map_err(Failure::config)?;
    telemetry::init(config.log_format).map_err(Failure::config)?;
    if mock_upstream {
        let (base_url, key) = start_mock_upstream(&config)
            .await
            .map_err(|error| Failure::run(format!("cannot start the mock gateway: {error}")))?;
        config.base_url = base_url;
        config.api_key = Some(key);
    }
    let listener = bind(config.listen, Some(LISTEN.name)).await?;
    let webhooks = match &config.webhooks {
        Some(hooks) => Some(bind(hooks.listen, Some(WEBHOOK_LISTEN.name)).await?),
        None => None,
    };
    log_start(&config, mock_upstream, &fds);
    let state = AppState::new(config).map_err(|error| Failure::run(error.to_string()))?;
    tracing::info!(
        listen = %listener.local_addr().map_or_else(|_| String::new(), |a| a.to_string()),
        startup_ms = started.elapsed().as_secs_f64() * 1000.0,
        "ready"
    );
    serve_all(listener, webhooks, state, signal())
        .await
        .map_err(|error| Failure::run(format!("server error: {error}")))?;
    tracing::info!("stopped");
    Ok(())
}

/// The start-up line: the effective settings, as an operator reads them (no secret).
fn log_start(config: &Config, mock_upstream: bool, fds: &std::io::Result<FdLimit>) {
    let redis = config.redis.urls.as_ref().map(|urls| urls.redacted());
    let fd_limit = fds
        .as_ref()
        .map_or_else(|_| fd_limit(), |fds| Some(fds.now));
    let raised_from = fds
        .as_ref()
        .ok()
        .filter(|fds| fds.before < fds.now)
        .map(|fds| fds.before);
    let connections = server::Options::new(config, fd_limit);
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
fn redacted_url(url: &Url) -> String {
    format!("{}{}", origin_of(url), url.path())
}

/// Starts the in-process mock on a free loopback port with a random key; it posts its
/// callbacks to the relay's own webhook listener when that is on.
async fn start_mock_upstream(config: &Config) -> std::io::Result<(Url, ApiKey)> {
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
    let router = mock::with_callbacks(mock::Accept::Key(key.clone()), callback_url)?;
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "mock gateway stopped");
        }
    });
    let base = Url::parse(&format!("http://{address}/")).map_err(std::io::Error::other)?;
    tracing::info!(%address, callbacks, "mock gateway started (in process)");
    Ok((base, key))
}

/// `mock-gateway`: the mock alone on `listen`, until SIGTERM or SIGINT. It reads the same
/// variables as the relay, leniently: only the key, the log format and
/// `MOCK_CALLBACK_URL`.
pub async fn run_mock_gateway(listen: SocketAddr) -> Result<(), Failure> {
    let config = Config::from_env(KeyRequirement::Optional).map_err(Failure::config)?;
    let accept = config
        .api_key
        .map_or(mock::Accept::AnyKey, mock::Accept::Key);
    // Unset or empty: no callbacks. Not UTF-8: `Config::from_env` has refused it already.
    let callback_url = match std::env::var(MOCK_CALLBACK_URL.name) {
        Ok(text) if !text.trim().is_empty() => {
            Some(mock::parse_callback_url(&text).map_err(Failure::config)?)
        }
        _ => None,
    };
    telemetry::init(config.log_format).map_err(Failure::config)?;
    let listener = bind(listen, None).await?;
    let any = matches!(accept, mock::Accept::AnyKey);
    // The URL's origin only: its path may carry the relay's webhook token.
    let callbacks = callback_url
        .as_ref()
        .map(|url| url.origin().ascii_serialization());
    let router = mock::with_callbacks(accept, callback_url)
        .map_err(|error| Failure::run(format!("cannot start the mock gateway: {error}")))?;
    tracing::info!(%listen, accepts_any_key = any, callbacks, "mock gateway ready");
    axum::serve(listener, router)
        .with_graceful_shutdown(signal())
        .await
        .map_err(|error| Failure::run(format!("server error: {error}")))
}

/// `events-receive`: verifies the relay's events with `RELAY_EVENTS_SECRET` (or its file)
/// and prints each valid one to stdout, until SIGTERM or SIGINT. Only the secret is read:
/// the receiver runs beside the relay, not as one.
pub async fn run_events_receive(listen: SocketAddr, fail_first: u32) -> Result<(), Failure> {
    let secret = crate::config::events_secret_from_env().map_err(Failure::config)?;
    let listener = bind(listen, None).await?;
    crate::events::receive::receive_events(listener, secret, fail_first, signal())
        .await
        .map_err(|error| Failure::run(format!("server error: {error}")))
}
