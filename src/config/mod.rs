//! Configuration from the environment (SPEC "Configuration").
//!
//! Its rooms: [`vars`] is the one table of variables (name, default, range, help); `secret`
//! reads the key and the Redis URLs, which never reach an error or `Debug`; this file turns the
//! table's raw text into the typed [`Config`].
//!
//! envy collects the raw strings of the table's variables; every typed parse and range check
//! is ours, keyed by the full variable name, so a bad value stops start-up with one line such
//! as `RELAY_MAX_ATTEMPTS: must be between 1 and 10, got "0"`. The environment is read with
//! `vars_os`: a variable of ours that is not UTF-8 is an error naming it (never its value),
//! anything else is ignored. `Config::from_env()` is `Config::from_vars(std::env::vars_os())`,
//! and tests call `from_vars` with a literal list.

pub(crate) mod error;
mod lifecycle;
pub(crate) mod secret;
pub(crate) mod vars;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::phone::PhoneNumber;
pub(crate) use error::ConfigError;
pub(crate) use lifecycle::{EventsConfig, StatusConfig, WebhookConfig};
pub(crate) use secret::RedisUrls;
pub(crate) use secret::{ApiKey, SigningSecret, WebhookToken, events_secret_from_env};
pub(crate) use vars::VARIABLES;
use vars::{
    API_KEY, API_KEY_FILE, ATTEMPT_TIMEOUT_MS, BASE_URL, BODY_TIMEOUT_MS, DEADLINE_MS,
    DEDUP_CAPACITY, DEDUP_TTL_SECS, DEFAULT_FROM, HEADER_TIMEOUT_MS, IDLE_TIMEOUT_SECS, LISTEN,
    LOG_FORMAT, MAX_ATTEMPTS, MAX_BODY_BYTES, MAX_CONNECTIONS, MAX_IN_FLIGHT, PAIR_BURST,
    PAIR_INTERVAL_MS, RATE_MAX_WAIT_MS, SENDER_RATE, SHUTDOWN_GRACE_SECS, Var,
};

/// Whether `serve` needs a key: `--mock-upstream` brings its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRequirement {
    /// A real gateway: `LIPACHAT_API_KEY` or `LIPACHAT_API_KEY_FILE` must be set.
    Required,
    /// The mock gateway: a key is used if set, and one is made up otherwise.
    Optional,
}

/// Log output format (`RELAY_LOG_FORMAT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// One JSON object per line (the default).
    Json,
    /// Human-readable lines.
    Text,
}

/// What to do when the shared store cannot be reached (`RELAY_REDIS_FAILURE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FailureMode {
    /// Go on with this process's memory only.
    Open,
    /// Refuse new sends with 503 and `Retry-After`.
    Closed,
}

impl FailureMode {
    /// The variable's value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }
}

/// The shared store (SPEC "Shared deduplication"). Without URLs, everything stays in memory.
#[derive(Clone, Debug)]
pub(crate) struct RedisConfig {
    pub(crate) urls: Option<RedisUrls>,
    pub(crate) cluster: bool,
    /// Prefix of every key, so several relays can share one Redis.
    pub(crate) prefix: Box<str>,
    /// Bound of one round trip.
    pub(crate) timeout: Duration,
    pub(crate) failure: FailureMode,
}

/// WhatsApp's rate limits, as the relay keeps them (SPEC "Rate limits that match WhatsApp's").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RateLimitConfig {
    /// Sends per second per `from`; 0 = no limit.
    pub(crate) sender_rate: u32,
    /// Mean spacing of sends from one `from` to one `to`; zero = no limit.
    pub(crate) pair_interval: Duration,
    /// Sends to one pair that may go at once before the spacing applies.
    pub(crate) pair_burst: u32,
    /// Longest wait for a slot before a 429; zero = never wait.
    pub(crate) max_wait: Duration,
}

/// Client connections (SPEC "Connections and slow clients").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConnectionConfig {
    /// Time for a client to send its whole request head.
    pub(crate) header_timeout: Duration,
    /// Time for a client to send its whole body, from the head (408 after it).
    pub(crate) body_timeout: Duration,
    /// A keep-alive connection idle this long is closed.
    pub(crate) idle_timeout: Duration,
    /// Open client connections at most.
    pub(crate) max_connections: usize,
}

/// The typed configuration: parsed once, nothing downstream parses again.
#[derive(Clone, Debug)]
pub struct Config {
    /// `LIPACHAT_API_KEY` or `LIPACHAT_API_KEY_FILE`; `None` only for the mock gateway.
    pub(crate) api_key: Option<ApiKey>,
    /// `LIPACHAT_BASE_URL`: the gateway origin, to which each send type appends its path.
    pub(crate) base_url: Url,
    /// `LIPACHAT_DEFAULT_FROM`: the sender of a request without `from`.
    pub(crate) default_from: Option<PhoneNumber>,
    /// `RELAY_LISTEN`.
    pub(crate) listen: SocketAddr,
    /// `RELAY_DEDUP_TTL_SECS`: how long a 2xx answer is remembered.
    pub(crate) dedup_ttl: Duration,
    /// `RELAY_DEDUP_CAPACITY`: answers remembered in this process, at most.
    pub(crate) dedup_capacity: u64,
    /// `RELAY_MAX_ATTEMPTS`: gateway attempts per send, the first included.
    pub(crate) max_attempts: u32,
    /// `RELAY_ATTEMPT_TIMEOUT_MS`: one gateway attempt.
    pub(crate) attempt_timeout: Duration,
    /// `RELAY_DEADLINE_MS`: a whole send, attempts and back-off included.
    pub(crate) deadline: Duration,
    /// `RELAY_MAX_IN_FLIGHT`: sends in flight before load shedding.
    pub(crate) max_in_flight: usize,
    /// `RELAY_MAX_BODY_BYTES`.
    pub(crate) max_body_bytes: usize,
    /// `RELAY_SHUTDOWN_GRACE_SECS`: how long sends under way may finish after SIGTERM.
    pub(crate) shutdown_grace: Duration,
    /// `RELAY_LOG_FORMAT`.
    pub(crate) log_format: LogFormat,
    /// The shared store (`RELAY_REDIS_*`).
    pub(crate) redis: RedisConfig,
    /// The rate limits (`RELAY_SENDER_RATE`, `RELAY_PAIR_*`, `RELAY_RATE_MAX_WAIT_MS`).
    pub(crate) limits: RateLimitConfig,
    /// Client connections (`RELAY_HEADER_TIMEOUT_MS` … `RELAY_MAX_CONNECTIONS`).
    pub(crate) connections: ConnectionConfig,
    /// The webhook listener, when `RELAY_WEBHOOK_LISTEN` is set.
    pub(crate) webhooks: Option<WebhookConfig>,
    /// Status records.
    pub(crate) status: StatusConfig,
    /// Events out, when `RELAY_EVENTS_URL` is set.
    pub(crate) events: Option<EventsConfig>,
}

/// The raw text of the relay's own variables, as envy collects them (it lowercases the
/// names); [`Config::from_vars`] does the typing so that errors name the variable.
#[derive(Deserialize, Default)]
#[serde(transparent)]
struct RawVars(HashMap<String, String>);

impl RawVars {
    fn get(&self, var: &Var) -> Option<&str> {
        self.0
            .get(&var.name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The value, or the table's default.
    fn or_default(&self, var: &Var) -> Option<&str> {
        self.get(var).or(var.default)
    }
}

impl fmt::Debug for RawVars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the raw key or Redis URL: this holds them before they are typed.
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
        let api_key = secret::api_key(raw.get(&API_KEY), raw.get(&API_KEY_FILE))?;
        if api_key.is_none() && keys == KeyRequirement::Required {
            return Err(ConfigError::Missing(API_KEY.name));
        }
        let default_from = match raw.get(&DEFAULT_FROM) {
            None => None,
            Some(v) => {
                Some(PhoneNumber::parse(v).map_err(|reason| invalid(&DEFAULT_FROM, reason, v))?)
            }
        };
        let listen_text = raw.or_default(&LISTEN).unwrap_or_default();
        let listen = listen_text.parse::<SocketAddr>().map_err(|_| {
            invalid(
                &LISTEN,
                "must be an address such as 127.0.0.1:8080",
                listen_text,
            )
        })?;
        Ok(Self {
            api_key,
            base_url: base_url(raw.or_default(&BASE_URL).unwrap_or_default())?,
            default_from,
            listen,
            dedup_ttl: secs(&raw, &DEDUP_TTL_SECS)?,
            dedup_capacity: number(&raw, &DEDUP_CAPACITY)?,
            max_attempts: count(&raw, &MAX_ATTEMPTS)?,
            attempt_timeout: millis(&raw, &ATTEMPT_TIMEOUT_MS)?,
            deadline: millis(&raw, &DEADLINE_MS)?,
            max_in_flight: size(&raw, &MAX_IN_FLIGHT)?,
            max_body_bytes: size(&raw, &MAX_BODY_BYTES)?,
            shutdown_grace: secs(&raw, &SHUTDOWN_GRACE_SECS)?,
            log_format: match choice(&raw, &LOG_FORMAT)? {
                "text" => LogFormat::Text,
                _ => LogFormat::Json,
            },
            redis: secret::redis(&raw)?,
            limits: RateLimitConfig {
                sender_rate: count(&raw, &SENDER_RATE)?,
                pair_interval: millis(&raw, &PAIR_INTERVAL_MS)?,
                pair_burst: count(&raw, &PAIR_BURST)?,
                max_wait: millis(&raw, &RATE_MAX_WAIT_MS)?,
            },
            connections: ConnectionConfig {
                header_timeout: millis(&raw, &HEADER_TIMEOUT_MS)?,
                body_timeout: millis(&raw, &BODY_TIMEOUT_MS)?,
                idle_timeout: secs(&raw, &IDLE_TIMEOUT_SECS)?,
                max_connections: size(&raw, &MAX_CONNECTIONS)?,
            },
            webhooks: lifecycle::webhooks(&raw)?,
            status: lifecycle::status(&raw)?,
            events: lifecycle::events(&raw)?,
        })
    }
}

fn invalid(var: &Var, reason: impl Into<String>, value: &str) -> ConfigError {
    ConfigError::Invalid {
        var: var.name,
        reason: reason.into(),
        value: value.to_owned(),
    }
}

fn base_url(text: &str) -> Result<Url, ConfigError> {
    // Parse first: a URL with credentials must never be quoted back.
    let url = Url::parse(text).map_err(|e| ConfigError::InvalidSecret {
        var: BASE_URL.name,
        reason: format!("not a URL ({e})"),
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::InvalidSecret {
            var: BASE_URL.name,
            reason: format!(
                "must not carry credentials (user:password@); the relay authenticates with {}",
                API_KEY.name
            ),
        });
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(
            &BASE_URL,
            "must start with http:// or https://",
            text,
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(&BASE_URL, "must have a host", text));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            &BASE_URL,
            "must not have a query or fragment",
            text,
        ));
    }
    Ok(url)
}

/// `{base}/{path}`, keeping any path prefix of the base URL.
pub(crate) fn join_path(base: &Url, path: &str) -> Result<Url, url::ParseError> {
    let mut text = base.as_str().trim_end_matches('/').to_owned();
    text.push('/');
    text.push_str(path.trim_start_matches('/'));
    Url::parse(&text)
}

fn flag(raw: &RawVars, var: &Var) -> Result<bool, ConfigError> {
    var.flag(raw.get(var))
}

fn choice(raw: &RawVars, var: &Var) -> Result<&'static str, ConfigError> {
    var.choice(raw.get(var))
}

fn number(raw: &RawVars, var: &Var) -> Result<u64, ConfigError> {
    var.number(raw.get(var))
}

fn secs(raw: &RawVars, var: &Var) -> Result<Duration, ConfigError> {
    number(raw, var).map(Duration::from_secs)
}

fn millis(raw: &RawVars, var: &Var) -> Result<Duration, ConfigError> {
    number(raw, var).map(Duration::from_millis)
}

/// A count the table keeps within 32 bits.
fn count(raw: &RawVars, var: &Var) -> Result<u32, ConfigError> {
    number(raw, var).map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

fn size(raw: &RawVars, var: &Var) -> Result<usize, ConfigError> {
    number(raw, var).map(|n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// The configuration of a literal list, the key required: what the config tests parse.
#[cfg(test)]
fn parse(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_vars(vars.iter().copied(), KeyRequirement::Required)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::vars::{REDIS_FAILURE, REDIS_PREFIX, REDIS_TIMEOUT_MS};
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    #[test]
    fn defaults_follow_the_spec() {
        let config = parse(&[(API_KEY.name, "k")]).unwrap();
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
            (API_KEY.name, "k"),
            (BASE_URL.name, "http://127.0.0.1:9/prefix/"),
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
    fn out_of_range_attempts_are_rejected() {
        for bad in ["0", "11", "99999999999999999999999"] {
            let err = parse(&[(API_KEY.name, "k"), (MAX_ATTEMPTS.name, bad)]).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("RELAY_MAX_ATTEMPTS: must be between 1 and 10, got {bad:?}")
            );
        }
    }

    #[test]
    fn non_numbers_are_rejected() {
        let err = parse(&[(API_KEY.name, "k"), (DEADLINE_MS.name, "soon")]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("RELAY_DEADLINE_MS: must be a whole number")
        );
    }

    #[test]
    fn zero_is_rejected_where_the_spec_does_not_allow_it() {
        for var in [
            DEDUP_TTL_SECS.name,
            DEDUP_CAPACITY.name,
            ATTEMPT_TIMEOUT_MS.name,
            DEADLINE_MS.name,
            MAX_IN_FLIGHT.name,
            MAX_BODY_BYTES.name,
            SHUTDOWN_GRACE_SECS.name,
            REDIS_TIMEOUT_MS.name,
            PAIR_BURST.name,
            HEADER_TIMEOUT_MS.name,
            BODY_TIMEOUT_MS.name,
            IDLE_TIMEOUT_SECS.name,
            MAX_CONNECTIONS.name,
        ] {
            let err = parse(&[(API_KEY.name, "k"), (var, "0")]).unwrap_err();
            assert!(err.to_string().starts_with(var), "{err}");
        }
    }

    #[test]
    fn zero_switches_off_the_rate_limits_and_the_wait() {
        let config = parse(&[
            (API_KEY.name, "k"),
            (SENDER_RATE.name, "0"),
            (PAIR_INTERVAL_MS.name, "0"),
            (RATE_MAX_WAIT_MS.name, "0"),
        ])
        .unwrap();
        assert_eq!(config.limits.sender_rate, 0);
        assert_eq!(config.limits.pair_interval, Duration::ZERO);
        assert_eq!(config.limits.max_wait, Duration::ZERO);
    }

    #[test]
    fn malformed_url_and_address_are_rejected() {
        let err = parse(&[(API_KEY.name, "k"), (BASE_URL.name, "ftp://x")]).unwrap_err();
        assert!(err.to_string().starts_with("LIPACHAT_BASE_URL:"));
        let err = parse(&[(API_KEY.name, "k"), (LISTEN.name, "localhost")]).unwrap_err();
        assert!(err.to_string().starts_with("RELAY_LISTEN:"));
    }

    #[test]
    fn a_base_url_with_credentials_is_rejected_without_quoting_it() {
        for url in [
            "http://user:pw-secret@gw.example",
            "https://pw-secret@gw.example",
        ] {
            let err = parse(&[(API_KEY.name, "k"), (BASE_URL.name, url)]).unwrap_err();
            let text = err.to_string();
            assert!(text.starts_with("LIPACHAT_BASE_URL:"), "{text}");
            assert!(text.contains("credentials"), "{text}");
            assert!(!text.contains("pw-secret"), "{text}");
        }
    }

    #[test]
    fn unknown_log_format_is_rejected() {
        let err = parse(&[(API_KEY.name, "k"), (LOG_FORMAT.name, "xml")]).unwrap_err();
        assert!(err.to_string().starts_with("RELAY_LOG_FORMAT:"));
    }

    #[test]
    fn bad_default_from_is_rejected() {
        let err = parse(&[(API_KEY.name, "k"), (DEFAULT_FROM.name, "12")]).unwrap_err();
        assert!(err.to_string().starts_with("LIPACHAT_DEFAULT_FROM:"));
    }

    #[test]
    fn a_non_utf8_variable_of_ours_is_named_and_not_quoted() {
        let vars = vec![
            (
                OsString::from(API_KEY.name),
                OsString::from_vec(b"se\xffcret".to_vec()),
            ),
            (OsString::from("X"), OsString::from_vec(vec![0xff])),
        ];
        let err = Config::from_vars(vars, KeyRequirement::Required).unwrap_err();
        assert_eq!(err, ConfigError::NotUtf8(API_KEY.name));
        assert_eq!(err.to_string(), "LIPACHAT_API_KEY: is not valid UTF-8");
    }

    #[test]
    fn a_non_utf8_variable_of_someone_else_is_ignored() {
        let vars = vec![
            (OsString::from(API_KEY.name), OsString::from("k")),
            (OsString::from("X"), OsString::from_vec(vec![0xff])),
            (OsString::from_vec(vec![0xfe]), OsString::from("y")),
        ];
        assert!(Config::from_vars(vars, KeyRequirement::Required).is_ok());
    }

    #[test]
    fn redis_failure_mode_and_prefix_are_checked() {
        let err = parse(&[(API_KEY.name, "k"), (REDIS_FAILURE.name, "maybe")]).unwrap_err();
        assert!(err.to_string().starts_with("RELAY_REDIS_FAILURE:"));
        let err = parse(&[(API_KEY.name, "k"), (REDIS_PREFIX.name, "")]).unwrap_err();
        assert!(err.to_string().starts_with("RELAY_REDIS_PREFIX:"));
        let err = parse(&[(API_KEY.name, "k"), (REDIS_PREFIX.name, "a{b}")]).unwrap_err();
        assert!(err.to_string().starts_with("RELAY_REDIS_PREFIX:"));
        let config = parse(&[(API_KEY.name, "k"), (REDIS_FAILURE.name, "closed")]).unwrap();
        assert_eq!(config.redis.failure, FailureMode::Closed);
    }
}
