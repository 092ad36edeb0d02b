//! Configuration from the environment (SPEC "Configuration").
//!
//! envy collects the raw strings; every typed parse and range check is ours, keyed by the full
//! variable name, so a bad value stops start-up with one line such as
//! `RELAY_MAX_ATTEMPTS: must be between 1 and 10, got "0"`. The environment is read with
//! `vars_os`: a variable of ours that is not UTF-8 is an error naming it (never its value),
//! anything else is ignored. `Config::from_env()` is `Config::from_vars(std::env::vars_os())`,
//! and tests call `from_vars` with a literal list.
//!
//! Secrets never reach an error or `Debug`: the API key is an [`ApiKey`], the Redis URLs (which
//! may carry a password) are [`RedisUrls`], and errors about either never quote the value.

use std::ffi::OsStr;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::phone::PhoneNumber;

pub const ENV_API_KEY: &str = "LIPACHAT_API_KEY";
pub const ENV_API_KEY_FILE: &str = "LIPACHAT_API_KEY_FILE";
pub const ENV_BASE_URL: &str = "LIPACHAT_BASE_URL";
pub const ENV_DEFAULT_FROM: &str = "LIPACHAT_DEFAULT_FROM";
pub const ENV_LISTEN: &str = "RELAY_LISTEN";
pub const ENV_DEDUP_TTL_SECS: &str = "RELAY_DEDUP_TTL_SECS";
pub const ENV_DEDUP_CAPACITY: &str = "RELAY_DEDUP_CAPACITY";
pub const ENV_MAX_ATTEMPTS: &str = "RELAY_MAX_ATTEMPTS";
pub const ENV_ATTEMPT_TIMEOUT_MS: &str = "RELAY_ATTEMPT_TIMEOUT_MS";
pub const ENV_DEADLINE_MS: &str = "RELAY_DEADLINE_MS";
pub const ENV_MAX_IN_FLIGHT: &str = "RELAY_MAX_IN_FLIGHT";
pub const ENV_MAX_BODY_BYTES: &str = "RELAY_MAX_BODY_BYTES";
pub const ENV_SHUTDOWN_GRACE_SECS: &str = "RELAY_SHUTDOWN_GRACE_SECS";
pub const ENV_LOG_FORMAT: &str = "RELAY_LOG_FORMAT";
pub const ENV_REDIS_URL: &str = "RELAY_REDIS_URL";
pub const ENV_REDIS_URL_FILE: &str = "RELAY_REDIS_URL_FILE";
pub const ENV_REDIS_CLUSTER: &str = "RELAY_REDIS_CLUSTER";
pub const ENV_REDIS_PREFIX: &str = "RELAY_REDIS_PREFIX";
pub const ENV_REDIS_TIMEOUT_MS: &str = "RELAY_REDIS_TIMEOUT_MS";
pub const ENV_REDIS_FAILURE: &str = "RELAY_REDIS_FAILURE";
pub const ENV_SENDER_RATE: &str = "RELAY_SENDER_RATE";
pub const ENV_PAIR_INTERVAL_MS: &str = "RELAY_PAIR_INTERVAL_MS";
pub const ENV_PAIR_BURST: &str = "RELAY_PAIR_BURST";
pub const ENV_RATE_MAX_WAIT_MS: &str = "RELAY_RATE_MAX_WAIT_MS";
pub const ENV_HEADER_TIMEOUT_MS: &str = "RELAY_HEADER_TIMEOUT_MS";
pub const ENV_BODY_TIMEOUT_MS: &str = "RELAY_BODY_TIMEOUT_MS";
pub const ENV_IDLE_TIMEOUT_SECS: &str = "RELAY_IDLE_TIMEOUT_SECS";
pub const ENV_MAX_CONNECTIONS: &str = "RELAY_MAX_CONNECTIONS";

/// Every variable the relay reads. Only these must be UTF-8.
pub const VARIABLES: [&str; 30] = [
    ENV_API_KEY,
    ENV_API_KEY_FILE,
    ENV_BASE_URL,
    ENV_DEFAULT_FROM,
    ENV_LISTEN,
    ENV_DEDUP_TTL_SECS,
    ENV_DEDUP_CAPACITY,
    ENV_MAX_ATTEMPTS,
    ENV_ATTEMPT_TIMEOUT_MS,
    ENV_DEADLINE_MS,
    ENV_MAX_IN_FLIGHT,
    ENV_MAX_BODY_BYTES,
    ENV_SHUTDOWN_GRACE_SECS,
    ENV_LOG_FORMAT,
    ENV_REDIS_URL,
    ENV_REDIS_URL_FILE,
    ENV_REDIS_CLUSTER,
    ENV_REDIS_PREFIX,
    ENV_REDIS_TIMEOUT_MS,
    ENV_REDIS_FAILURE,
    ENV_SENDER_RATE,
    ENV_PAIR_INTERVAL_MS,
    ENV_PAIR_BURST,
    ENV_RATE_MAX_WAIT_MS,
    ENV_HEADER_TIMEOUT_MS,
    ENV_BODY_TIMEOUT_MS,
    ENV_IDLE_TIMEOUT_SECS,
    ENV_MAX_CONNECTIONS,
    "RUST_LOG",
    "MOCK_LISTEN",
];

pub const DEFAULT_BASE_URL: &str = "https://gateway.lipachat.com";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_REDIS_PREFIX: &str = "lipachat-relay";

/// The gateway secret. Its `Debug` is redacted, it has no `Display` and no `Serialize`; the
/// only way out is [`ApiKey::expose`], called where the upstream header is built.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Box<str>);

impl ApiKey {
    /// Wraps a secret; empty keys are rejected by the caller.
    pub fn new(key: impl Into<Box<str>>) -> Self {
        Self(key.into())
    }

    /// The secret itself. Call sites: the upstream `apiKey` header and the mock's check.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Whether `serve` needs a key: `--mock-upstream` brings its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRequirement {
    Required,
    Optional,
}

/// Log output format (`RELAY_LOG_FORMAT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// What to do when the shared store cannot be reached (`RELAY_REDIS_FAILURE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureMode {
    /// Go on with this process's memory only.
    Open,
    /// Refuse new sends with 503 and `Retry-After`.
    Closed,
}

impl FailureMode {
    /// The variable's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }
}

/// The Redis URL(s): one for a standalone server, the seed nodes for a Cluster. They may
/// carry a password, so `Debug` and [`RedisUrls::redacted`] show only scheme, host and port.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrls(Vec<Url>);

impl RedisUrls {
    /// The URLs, for the client. Call sites: the shared store's connection set-up only.
    pub fn expose(&self) -> &[Url] {
        &self.0
    }

    /// `redis://host:port` for each URL, comma-separated: safe to log.
    pub fn redacted(&self) -> String {
        self.0
            .iter()
            .map(|url| {
                let host = url.host_str().unwrap_or_default();
                match url.port() {
                    Some(port) => format!("{}://{host}:{port}", url.scheme()),
                    None => format!("{}://{host}", url.scheme()),
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl fmt::Debug for RedisUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrls({})", self.redacted())
    }
}

/// The shared store (SPEC "Shared deduplication"). Without URLs, everything stays in memory.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    pub urls: Option<RedisUrls>,
    pub cluster: bool,
    /// Prefix of every key, so several relays can share one Redis.
    pub prefix: Box<str>,
    /// Bound of one round trip.
    pub timeout: Duration,
    pub failure: FailureMode,
}

/// WhatsApp's rate limits, as the relay keeps them (SPEC "Rate limits that match WhatsApp's").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Sends per second per `from`; 0 = no limit.
    pub sender_rate: u32,
    /// Mean spacing of sends from one `from` to one `to`; zero = no limit.
    pub pair_interval: Duration,
    /// Sends to one pair that may go at once before the spacing applies.
    pub pair_burst: u32,
    /// Longest wait for a slot before a 429; zero = never wait.
    pub max_wait: Duration,
}

/// Client connections (SPEC "Connections and slow clients").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// Time for a client to send its whole request head.
    pub header_timeout: Duration,
    /// Time for a client to send its whole body, from the head (408 after it).
    pub body_timeout: Duration,
    /// A keep-alive connection idle this long is closed.
    pub idle_timeout: Duration,
    /// Open client connections at most.
    pub max_connections: usize,
}

/// The typed configuration: parsed once, nothing downstream parses again.
#[derive(Clone, Debug)]
pub struct Config {
    pub api_key: Option<ApiKey>,
    /// `LIPACHAT_BASE_URL`: the gateway origin, to which each send type appends its path.
    pub base_url: Url,
    pub default_from: Option<PhoneNumber>,
    pub listen: SocketAddr,
    pub dedup_ttl: Duration,
    pub dedup_capacity: u64,
    pub max_attempts: u32,
    pub attempt_timeout: Duration,
    pub deadline: Duration,
    pub max_in_flight: usize,
    pub max_body_bytes: usize,
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
    pub redis: RedisConfig,
    pub limits: RateLimitConfig,
    pub connections: ConnectionConfig,
}

/// A configuration error: always names the variable, never quotes a secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{0}: is required (or set {ENV_API_KEY_FILE})")]
    Missing(&'static str),
    #[error("{0}: must not be empty")]
    Empty(&'static str),
    #[error("{file}: cannot be used together with {inline}; set only one")]
    BothSources {
        file: &'static str,
        inline: &'static str,
    },
    #[error("{var}: cannot read {path}: {reason}")]
    File {
        var: &'static str,
        path: String,
        reason: String,
    },
    #[error("{var}: {reason}, got {value:?}")]
    Invalid {
        var: &'static str,
        reason: String,
        value: String,
    },
    /// A value that may hold a secret: the reason only.
    #[error("{var}: {reason}")]
    InvalidSecret { var: &'static str, reason: String },
    #[error("{0}: is not valid UTF-8")]
    NotUtf8(&'static str),
    #[error("the environment could not be read: {0}")]
    Environment(String),
}

/// The raw strings, as envy collects them (it lowercases variable names to match the
/// fields). Every field is optional text; `Config::from_vars` does the typing so that errors
/// name the variable.
#[derive(Deserialize, Default)]
struct RawVars {
    lipachat_api_key: Option<String>,
    lipachat_api_key_file: Option<String>,
    lipachat_base_url: Option<String>,
    lipachat_default_from: Option<String>,
    relay_listen: Option<String>,
    relay_dedup_ttl_secs: Option<String>,
    relay_dedup_capacity: Option<String>,
    relay_max_attempts: Option<String>,
    relay_attempt_timeout_ms: Option<String>,
    relay_deadline_ms: Option<String>,
    relay_max_in_flight: Option<String>,
    relay_max_body_bytes: Option<String>,
    relay_shutdown_grace_secs: Option<String>,
    relay_log_format: Option<String>,
    relay_redis_url: Option<String>,
    relay_redis_url_file: Option<String>,
    relay_redis_cluster: Option<String>,
    relay_redis_prefix: Option<String>,
    relay_redis_timeout_ms: Option<String>,
    relay_redis_failure: Option<String>,
    relay_sender_rate: Option<String>,
    relay_pair_interval_ms: Option<String>,
    relay_pair_burst: Option<String>,
    relay_rate_max_wait_ms: Option<String>,
    relay_header_timeout_ms: Option<String>,
    relay_body_timeout_ms: Option<String>,
    relay_idle_timeout_secs: Option<String>,
    relay_max_connections: Option<String>,
}

impl fmt::Debug for RawVars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the raw key or Redis URL: this struct holds them before they are typed.
        f.write_str("RawVars { .. }")
    }
}

/// Keeps the relay's own variables, as strings; a non-UTF-8 one is an error naming it.
fn own_variables<I, K, V>(vars: I) -> Result<Vec<(String, String)>, ConfigError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let mut own = Vec::new();
    for (name, value) in vars {
        // A name that is not UTF-8 cannot be one of ours.
        let Some(var) = name
            .as_ref()
            .to_str()
            .and_then(|name| VARIABLES.iter().find(|v| **v == name))
        else {
            continue;
        };
        let value = value.as_ref().to_str().ok_or(ConfigError::NotUtf8(var))?;
        own.push(((*var).to_owned(), value.to_owned()));
    }
    Ok(own)
}

impl Config {
    /// Reads the process environment.
    pub fn from_env(keys: KeyRequirement) -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars_os(), keys)
    }

    /// Parses a list of `(name, value)` pairs; unrelated variables are ignored.
    pub fn from_vars<I, K, V>(vars: I, keys: KeyRequirement) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let raw: RawVars = envy::from_iter(own_variables(vars)?)
            .map_err(|e| ConfigError::Environment(e.to_string()))?;

        let api_key = api_key(
            raw.lipachat_api_key.as_deref(),
            raw.lipachat_api_key_file.as_deref(),
        )?;
        if api_key.is_none() && keys == KeyRequirement::Required {
            return Err(ConfigError::Missing(ENV_API_KEY));
        }
        let default_from = match raw.lipachat_default_from.as_deref() {
            None => None,
            Some(v) => Some(
                PhoneNumber::parse(v).map_err(|reason| ConfigError::Invalid {
                    var: ENV_DEFAULT_FROM,
                    reason: reason.to_owned(),
                    value: v.to_owned(),
                })?,
            ),
        };
        let listen_text = raw.relay_listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen = listen_text
            .parse::<SocketAddr>()
            .map_err(|_| ConfigError::Invalid {
                var: ENV_LISTEN,
                reason: "must be an address such as 127.0.0.1:8080".to_owned(),
                value: listen_text.to_owned(),
            })?;
        let max_attempts = number(ENV_MAX_ATTEMPTS, raw.relay_max_attempts.as_deref(), 3, 10)?;
        Ok(Self {
            api_key,
            base_url: base_url(raw.lipachat_base_url.as_deref())?,
            default_from,
            listen,
            dedup_ttl: secs(
                ENV_DEDUP_TTL_SECS,
                raw.relay_dedup_ttl_secs.as_deref(),
                86_400,
            )?,
            dedup_capacity: number(
                ENV_DEDUP_CAPACITY,
                raw.relay_dedup_capacity.as_deref(),
                100_000,
                u64::from(u32::MAX),
            )?,
            max_attempts: u32::try_from(max_attempts).unwrap_or(10),
            attempt_timeout: millis(
                ENV_ATTEMPT_TIMEOUT_MS,
                raw.relay_attempt_timeout_ms.as_deref(),
                10_000,
            )?,
            deadline: millis(ENV_DEADLINE_MS, raw.relay_deadline_ms.as_deref(), 30_000)?,
            max_in_flight: size(ENV_MAX_IN_FLIGHT, raw.relay_max_in_flight.as_deref(), 1024)?,
            max_body_bytes: size(
                ENV_MAX_BODY_BYTES,
                raw.relay_max_body_bytes.as_deref(),
                65_536,
            )?,
            shutdown_grace: secs(
                ENV_SHUTDOWN_GRACE_SECS,
                raw.relay_shutdown_grace_secs.as_deref(),
                25,
            )?,
            log_format: log_format(raw.relay_log_format.as_deref())?,
            redis: redis(&raw)?,
            limits: limits(&raw)?,
            connections: connections(&raw)?,
        })
    }
}

fn api_key(inline: Option<&str>, file: Option<&str>) -> Result<Option<ApiKey>, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(ConfigError::BothSources {
            file: ENV_API_KEY_FILE,
            inline: ENV_API_KEY,
        }),
        (Some(key), None) if key.trim().is_empty() => Err(ConfigError::Empty(ENV_API_KEY)),
        (Some(key), None) => Ok(Some(ApiKey::new(key))),
        (None, Some(path)) => {
            read_secret_file(ENV_API_KEY_FILE, path).map(|k| Some(ApiKey::new(k)))
        }
        (None, None) => Ok(None),
    }
}

/// A secret mounted as a file: trailing newlines trimmed, nothing else.
fn read_secret_file(var: &'static str, path: &str) -> Result<String, ConfigError> {
    if path.is_empty() {
        return Err(ConfigError::Empty(var));
    }
    let text = std::fs::read_to_string(PathBuf::from(path)).map_err(|e| ConfigError::File {
        var,
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.trim().is_empty() {
        return Err(ConfigError::File {
            var,
            path: path.to_owned(),
            reason: "the file is empty".to_owned(),
        });
    }
    Ok(secret.to_owned())
}

fn base_url(value: Option<&str>) -> Result<Url, ConfigError> {
    let text = value.unwrap_or(DEFAULT_BASE_URL);
    // Parse first: a URL with credentials must never be quoted back.
    let url = Url::parse(text).map_err(|e| ConfigError::InvalidSecret {
        var: ENV_BASE_URL,
        reason: format!("not a URL ({e})"),
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::InvalidSecret {
            var: ENV_BASE_URL,
            reason: "must not carry credentials (user:password@); the relay authenticates \
                     with LIPACHAT_API_KEY"
                .to_owned(),
        });
    }
    let invalid = |reason: &str| ConfigError::Invalid {
        var: ENV_BASE_URL,
        reason: reason.to_owned(),
        value: text.to_owned(),
    };
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("must start with http:// or https://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("must have a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("must not have a query or fragment"));
    }
    Ok(url)
}

/// `{base}/{path}`, keeping any path prefix of the base URL.
pub fn join_path(base: &Url, path: &str) -> Result<Url, url::ParseError> {
    let mut text = base.as_str().trim_end_matches('/').to_owned();
    text.push('/');
    text.push_str(path.trim_start_matches('/'));
    Url::parse(&text)
}

fn redis(raw: &RawVars) -> Result<RedisConfig, ConfigError> {
    let text = match (
        raw.relay_redis_url.as_deref(),
        raw.relay_redis_url_file.as_deref(),
    ) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::BothSources {
                file: ENV_REDIS_URL_FILE,
                inline: ENV_REDIS_URL,
            });
        }
        (Some(text), None) => Some((ENV_REDIS_URL, text.to_owned())),
        (None, Some(path)) => Some((
            ENV_REDIS_URL_FILE,
            read_secret_file(ENV_REDIS_URL_FILE, path)?,
        )),
        (None, None) => None,
    };
    let cluster = boolean(ENV_REDIS_CLUSTER, raw.relay_redis_cluster.as_deref())?;
    let urls = match text {
        Some((var, text)) => Some(redis_urls(var, &text, cluster)?),
        None => None,
    };
    let prefix = raw
        .relay_redis_prefix
        .as_deref()
        .unwrap_or(DEFAULT_REDIS_PREFIX);
    if prefix.is_empty() {
        return Err(ConfigError::Empty(ENV_REDIS_PREFIX));
    }
    if prefix.contains(['{', '}']) || prefix.chars().any(char::is_control) {
        return Err(ConfigError::Invalid {
            var: ENV_REDIS_PREFIX,
            reason: "must not contain { } (Cluster hash tags) or control characters".to_owned(),
            value: prefix.to_owned(),
        });
    }
    let failure = match raw.relay_redis_failure.as_deref().map(str::trim) {
        None => FailureMode::Open,
        Some(v) if v.eq_ignore_ascii_case("open") => FailureMode::Open,
        Some(v) if v.eq_ignore_ascii_case("closed") => FailureMode::Closed,
        Some(v) => {
            return Err(ConfigError::Invalid {
                var: ENV_REDIS_FAILURE,
                reason: "must be open or closed".to_owned(),
                value: v.to_owned(),
            });
        }
    };
    Ok(RedisConfig {
        urls,
        cluster,
        prefix: prefix.into(),
        timeout: millis(
            ENV_REDIS_TIMEOUT_MS,
            raw.relay_redis_timeout_ms.as_deref(),
            250,
        )?,
        failure,
    })
}

/// One URL, or a comma-separated list of Cluster seed nodes. Errors never quote the text:
/// it may carry a password.
fn redis_urls(var: &'static str, text: &str, cluster: bool) -> Result<RedisUrls, ConfigError> {
    let invalid = |reason: String| ConfigError::InvalidSecret { var, reason };
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    if parts.len() > 1 && !cluster {
        return Err(invalid(format!(
            "lists several URLs; set {ENV_REDIS_CLUSTER}=true for Redis Cluster seed nodes"
        )));
    }
    let mut urls = Vec::with_capacity(parts.len());
    for (index, part) in parts.into_iter().enumerate() {
        let which = if urls.is_empty() && index == 0 {
            String::from("the URL")
        } else {
            format!("URL {}", index + 1)
        };
        if part.is_empty() {
            return Err(invalid(format!("{which} is empty")));
        }
        let url = Url::parse(part).map_err(|e| {
            invalid(format!(
                "{which} is not a URL ({e}); the value is not shown"
            ))
        })?;
        if !matches!(url.scheme(), "redis" | "rediss") {
            return Err(invalid(format!(
                "{which} must start with redis:// or rediss://"
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid(format!("{which} must have a host")));
        }
        urls.push(url);
    }
    Ok(RedisUrls(urls))
}

fn limits(raw: &RawVars) -> Result<RateLimitConfig, ConfigError> {
    let sender_rate = number_or_zero(
        ENV_SENDER_RATE,
        raw.relay_sender_rate.as_deref(),
        80,
        u64::from(u32::MAX),
    )?;
    let pair_burst = number(
        ENV_PAIR_BURST,
        raw.relay_pair_burst.as_deref(),
        45,
        u64::from(u32::MAX),
    )?;
    Ok(RateLimitConfig {
        sender_rate: u32::try_from(sender_rate).unwrap_or(u32::MAX),
        pair_interval: Duration::from_millis(number_or_zero(
            ENV_PAIR_INTERVAL_MS,
            raw.relay_pair_interval_ms.as_deref(),
            6_000,
            MAX_SECS * 1000,
        )?),
        pair_burst: u32::try_from(pair_burst).unwrap_or(u32::MAX),
        max_wait: Duration::from_millis(number_or_zero(
            ENV_RATE_MAX_WAIT_MS,
            raw.relay_rate_max_wait_ms.as_deref(),
            5_000,
            MAX_SECS * 1000,
        )?),
    })
}

fn connections(raw: &RawVars) -> Result<ConnectionConfig, ConfigError> {
    Ok(ConnectionConfig {
        header_timeout: millis(
            ENV_HEADER_TIMEOUT_MS,
            raw.relay_header_timeout_ms.as_deref(),
            5_000,
        )?,
        body_timeout: millis(
            ENV_BODY_TIMEOUT_MS,
            raw.relay_body_timeout_ms.as_deref(),
            10_000,
        )?,
        idle_timeout: secs(
            ENV_IDLE_TIMEOUT_SECS,
            raw.relay_idle_timeout_secs.as_deref(),
            75,
        )?,
        max_connections: size(
            ENV_MAX_CONNECTIONS,
            raw.relay_max_connections.as_deref(),
            4096,
        )?,
    })
}

fn boolean(var: &'static str, value: Option<&str>) -> Result<bool, ConfigError> {
    match value.map(str::trim) {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => Ok(false),
        Some(v) => Err(ConfigError::Invalid {
            var,
            reason: "must be true or false".to_owned(),
            value: v.to_owned(),
        }),
    }
}

/// A whole number from `min` to `max`.
fn ranged(
    var: &'static str,
    value: Option<&str>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let Some(text) = value else {
        return Ok(default);
    };
    let out_of_range = || ConfigError::Invalid {
        var,
        reason: format!("must be between {min} and {max}"),
        value: text.to_owned(),
    };
    let trimmed = text.trim();
    let parsed: u64 = trimmed.parse().map_err(|_| {
        // A number too large for u64 is still a number: say "range", not "not a number".
        if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
            out_of_range()
        } else {
            ConfigError::Invalid {
                var,
                reason: "must be a whole number".to_owned(),
                value: text.to_owned(),
            }
        }
    })?;
    if parsed < min || parsed > max {
        return Err(out_of_range());
    }
    Ok(parsed)
}

fn number(
    var: &'static str,
    value: Option<&str>,
    default: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    ranged(var, value, default, 1, max)
}

/// For the variables the SPEC documents with `0` (= off, or never wait).
fn number_or_zero(
    var: &'static str,
    value: Option<&str>,
    default: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    ranged(var, value, default, 0, max)
}

/// Limits chosen so that every duration fits in `Instant` arithmetic (about 30 years).
const MAX_SECS: u64 = 1_000_000_000;

fn secs(var: &'static str, value: Option<&str>, default: u64) -> Result<Duration, ConfigError> {
    number(var, value, default, MAX_SECS).map(Duration::from_secs)
}

fn millis(var: &'static str, value: Option<&str>, default: u64) -> Result<Duration, ConfigError> {
    number(var, value, default, MAX_SECS * 1000).map(Duration::from_millis)
}

fn size(var: &'static str, value: Option<&str>, default: u64) -> Result<usize, ConfigError> {
    let max = u64::from(u32::MAX);
    number(var, value, default, max).map(|n| usize::try_from(n).unwrap_or(usize::MAX))
}

fn log_format(value: Option<&str>) -> Result<LogFormat, ConfigError> {
    match value.map(str::trim) {
        None => Ok(LogFormat::Json),
        Some(v) if v.eq_ignore_ascii_case("json") => Ok(LogFormat::Json),
        Some(v) if v.eq_ignore_ascii_case("text") => Ok(LogFormat::Text),
        Some(v) => Err(ConfigError::Invalid {
            var: ENV_LOG_FORMAT,
            reason: "must be json or text".to_owned(),
            value: v.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    fn parse(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(vars.iter().copied(), KeyRequirement::Required)
    }

    #[test]
    fn defaults_follow_the_spec() {
        let config = parse(&[(ENV_API_KEY, "k")]).unwrap();
        assert_eq!(config.base_url.as_str(), "https://gateway.lipachat.com/");
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.dedup_ttl, Duration::from_secs(86_400));
        assert_eq!(config.dedup_capacity, 100_000);
        assert_eq!(config.max_attempts, 3);
        assert_eq!(config.attempt_timeout, Duration::from_millis(10_000));
        assert_eq!(config.deadline, Duration::from_millis(30_000));
        assert_eq!(config.max_in_flight, 1024);
        assert_eq!(config.max_body_bytes, 65_536);
        assert_eq!(config.shutdown_grace, Duration::from_secs(25));
        assert_eq!(config.log_format, LogFormat::Json);
        assert!(config.default_from.is_none());
        assert!(config.redis.urls.is_none());
        assert!(!config.redis.cluster);
        assert_eq!(&*config.redis.prefix, "lipachat-relay");
        assert_eq!(config.redis.timeout, Duration::from_millis(250));
        assert_eq!(config.redis.failure, FailureMode::Open);
        assert_eq!(
            config.limits,
            RateLimitConfig {
                sender_rate: 80,
                pair_interval: Duration::from_millis(6_000),
                pair_burst: 45,
                max_wait: Duration::from_millis(5_000),
            }
        );
        assert_eq!(
            config.connections,
            ConnectionConfig {
                header_timeout: Duration::from_millis(5_000),
                body_timeout: Duration::from_millis(10_000),
                idle_timeout: Duration::from_secs(75),
                max_connections: 4096,
            }
        );
    }

    #[test]
    fn base_url_path_prefix_is_kept() {
        let config = parse(&[
            (ENV_API_KEY, "k"),
            (ENV_BASE_URL, "http://127.0.0.1:9/prefix/"),
        ])
        .unwrap();
        assert_eq!(
            join_path(&config.base_url, "api/v1/whatsapp/media")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:9/prefix/api/v1/whatsapp/media"
        );
    }

    #[test]
    fn missing_key_names_the_variable() {
        let err = parse(&[]).unwrap_err();
        assert!(err.to_string().starts_with("LIPACHAT_API_KEY:"), "{err}");
    }

    #[test]
    fn key_is_optional_for_the_mock_upstream() {
        let config = Config::from_vars(Vec::<(&str, &str)>::new(), KeyRequirement::Optional);
        assert!(config.unwrap().api_key.is_none());
    }

    #[test]
    fn empty_key_is_rejected() {
        let err = parse(&[(ENV_API_KEY, "  ")]).unwrap_err();
        assert_eq!(err, ConfigError::Empty(ENV_API_KEY));
    }

    #[test]
    fn both_key_sources_are_rejected() {
        let err = parse(&[(ENV_API_KEY, "k"), (ENV_API_KEY_FILE, "/x")]).unwrap_err();
        assert!(
            err.to_string().starts_with("LIPACHAT_API_KEY_FILE:"),
            "{err}"
        );
    }

    #[test]
    fn key_file_trailing_newline_is_trimmed() {
        let path = std::env::temp_dir().join(format!("relay-key-{}", std::process::id()));
        std::fs::write(&path, "s3cret\n").unwrap();
        let config = parse(&[(ENV_API_KEY_FILE, path.to_str().unwrap())]).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(config.api_key.unwrap().expose(), "s3cret");
    }

    #[test]
    fn unreadable_key_file_names_the_variable() {
        let err = parse(&[(ENV_API_KEY_FILE, "/nonexistent/key")]).unwrap_err();
        assert!(
            err.to_string().starts_with("LIPACHAT_API_KEY_FILE:"),
            "{err}"
        );
    }

    #[test]
    fn out_of_range_attempts_are_rejected() {
        for bad in ["0", "11", "99999999999999999999999"] {
            let err = parse(&[(ENV_API_KEY, "k"), (ENV_MAX_ATTEMPTS, bad)]).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("RELAY_MAX_ATTEMPTS: must be between 1 and 10, got {bad:?}")
            );
        }
    }

    #[test]
    fn non_numbers_are_rejected() {
        let err = parse(&[(ENV_API_KEY, "k"), (ENV_DEADLINE_MS, "soon")]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("RELAY_DEADLINE_MS: must be a whole number")
        );
    }

    #[test]
    fn zero_is_rejected_where_the_spec_does_not_allow_it() {
        for var in [
            ENV_DEDUP_TTL_SECS,
            ENV_DEDUP_CAPACITY,
            ENV_ATTEMPT_TIMEOUT_MS,
            ENV_DEADLINE_MS,
            ENV_MAX_IN_FLIGHT,
            ENV_MAX_BODY_BYTES,
            ENV_SHUTDOWN_GRACE_SECS,
            ENV_REDIS_TIMEOUT_MS,
            ENV_PAIR_BURST,
            ENV_HEADER_TIMEOUT_MS,
            ENV_BODY_TIMEOUT_MS,
            ENV_IDLE_TIMEOUT_SECS,
            ENV_MAX_CONNECTIONS,
        ] {
            let err = parse(&[(ENV_API_KEY, "k"), (var, "0")]).unwrap_err();
            assert!(err.to_string().starts_with(var), "{err}");
        }
    }

    #[test]
    fn zero_switches_off_the_rate_limits_and_the_wait() {
        let config = parse(&[
            (ENV_API_KEY, "k"),
            (ENV_SENDER_RATE, "0"),
            (ENV_PAIR_INTERVAL_MS, "0"),
            (ENV_RATE_MAX_WAIT_MS, "0"),
        ])
        .unwrap();
        assert_eq!(config.limits.sender_rate, 0);
        assert_eq!(config.limits.pair_interval, Duration::ZERO);
        assert_eq!(config.limits.max_wait, Duration::ZERO);
    }

    #[test]
    fn malformed_url_and_address_are_rejected() {
        let err = parse(&[(ENV_API_KEY, "k"), (ENV_BASE_URL, "ftp://x")]).unwrap_err();
        assert!(err.to_string().starts_with("LIPACHAT_BASE_URL:"));
        let err = parse(&[(ENV_API_KEY, "k"), (ENV_LISTEN, "localhost")]).unwrap_err();
        assert!(err.to_string().starts_with("RELAY_LISTEN:"));
    }

    #[test]
    fn a_base_url_with_credentials_is_rejected_without_quoting_it() {
        for url in [
            "http://user:pw-secret@gw.example",
            "https://pw-secret@gw.example",
        ] {
            let err = parse(&[(ENV_API_KEY, "k"), (ENV_BASE_URL, url)]).unwrap_err();
            let text = err.to_string();
            assert!(text.starts_with("LIPACHAT_BASE_URL:"), "{text}");
            assert!(text.contains("credentials"), "{text}");
            assert!(!text.contains("pw-secret"), "{text}");
        }
    }

    #[test]
    fn unknown_log_format_is_rejected() {
        let err = parse(&[(ENV_API_KEY, "k"), (ENV_LOG_FORMAT, "xml")]).unwrap_err();
        assert!(err.to_string().starts_with("RELAY_LOG_FORMAT:"));
    }

    #[test]
    fn bad_default_from_is_rejected() {
        let err = parse(&[(ENV_API_KEY, "k"), (ENV_DEFAULT_FROM, "12")]).unwrap_err();
        assert!(err.to_string().starts_with("LIPACHAT_DEFAULT_FROM:"));
    }

    #[test]
    fn debug_output_never_contains_the_key_or_the_redis_password() {
        let config = parse(&[
            (ENV_API_KEY, "very-secret-key-123"),
            (ENV_REDIS_URL, "redis://:redis-pw-456@127.0.0.1:6379/0"),
        ])
        .unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("very-secret-key-123"));
        assert!(printed.contains("ApiKey(<redacted>)"));
        assert!(!printed.contains("redis-pw-456"), "{printed}");
        assert!(printed.contains("redis://127.0.0.1:6379"), "{printed}");
    }

    #[test]
    fn a_non_utf8_variable_of_ours_is_named_and_not_quoted() {
        let vars = vec![
            (
                OsString::from(ENV_API_KEY),
                OsString::from_vec(b"se\xffcret".to_vec()),
            ),
            (OsString::from("X"), OsString::from_vec(vec![0xff])),
        ];
        let err = Config::from_vars(vars, KeyRequirement::Required).unwrap_err();
        assert_eq!(err, ConfigError::NotUtf8(ENV_API_KEY));
        assert_eq!(err.to_string(), "LIPACHAT_API_KEY: is not valid UTF-8");
    }

    #[test]
    fn a_non_utf8_variable_of_someone_else_is_ignored() {
        let vars = vec![
            (OsString::from(ENV_API_KEY), OsString::from("k")),
            (OsString::from("X"), OsString::from_vec(vec![0xff])),
            (OsString::from_vec(vec![0xfe]), OsString::from("y")),
        ];
        assert!(Config::from_vars(vars, KeyRequirement::Required).is_ok());
    }

    #[test]
    fn redis_urls_are_checked_without_quoting_them() {
        let cases = [
            ("http://:pw-789@h:1", "redis:// or rediss://"),
            ("redis://:pw-789@h:1,redis://h:2", "RELAY_REDIS_CLUSTER"),
            ("not a url pw-789", "not a URL"),
        ];
        for (url, reason) in cases {
            let err = parse(&[(ENV_API_KEY, "k"), (ENV_REDIS_URL, url)]).unwrap_err();
            let text = err.to_string();
            assert!(text.starts_with("RELAY_REDIS_URL:"), "{text}");
            assert!(text.contains(reason), "{text}");
            assert!(!text.contains("pw-789"), "{text}");
        }
    }

    #[test]
    fn cluster_seed_nodes_are_a_comma_separated_list() {
        let config = parse(&[
            (ENV_API_KEY, "k"),
            (
                ENV_REDIS_URL,
                "redis://a:7000, redis://b:7001,rediss://c:7002",
            ),
            (ENV_REDIS_CLUSTER, "true"),
        ])
        .unwrap();
        let urls = config.redis.urls.unwrap();
        assert_eq!(urls.expose().len(), 3);
        assert_eq!(
            urls.redacted(),
            "redis://a:7000,redis://b:7001,rediss://c:7002"
        );
    }

    #[test]
    fn the_redis_url_may_come_from_a_file_but_not_from_both() {
        let path = std::env::temp_dir().join(format!("relay-redis-{}", std::process::id()));
        std::fs::write(&path, "redis://:pw@127.0.0.1:6379\n").unwrap();
        let file = path.to_str().unwrap();
        let config = parse(&[(ENV_API_KEY, "k"), (ENV_REDIS_URL_FILE, file)]).unwrap();
        assert_eq!(
            config.redis.urls.unwrap().expose()[0].password(),
            Some("pw")
        );
        let err = parse(&[
            (ENV_API_KEY, "k"),
            (ENV_REDIS_URL_FILE, file),
            (ENV_REDIS_URL, "redis://h"),
        ])
        .unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(
            err.to_string().starts_with("RELAY_REDIS_URL_FILE:"),
            "{err}"
        );
    }

    #[test]
    fn redis_failure_mode_and_prefix_are_checked() {
        let err = parse(&[(ENV_API_KEY, "k"), (ENV_REDIS_FAILURE, "maybe")]).unwrap_err();
        assert!(err.to_string().starts_with("RELAY_REDIS_FAILURE:"));
        let err = parse(&[(ENV_API_KEY, "k"), (ENV_REDIS_PREFIX, "")]).unwrap_err();
        assert!(err.to_string().starts_with("RELAY_REDIS_PREFIX:"));
        let err = parse(&[(ENV_API_KEY, "k"), (ENV_REDIS_PREFIX, "a{b}")]).unwrap_err();
        assert!(err.to_string().starts_with("RELAY_REDIS_PREFIX:"));
        let config = parse(&[(ENV_API_KEY, "k"), (ENV_REDIS_FAILURE, "closed")]).unwrap();
        assert_eq!(config.redis.failure, FailureMode::Closed);
    }
}
