//! Configuration from the environment (SPEC "Configuration").
//!
//! envy collects the raw strings; every typed parse and range check is ours, keyed by the full
//! variable name, so a bad value stops start-up with one line such as
//! `RELAY_MAX_ATTEMPTS: must be between 1 and 10, got "0"`. `Config::from_env()` is
//! `Config::from_vars(std::env::vars())`, and tests call `from_vars` with a literal list.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::validate::PhoneNumber;

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

pub const DEFAULT_BASE_URL: &str = "https://gateway.lipachat.com";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The path the relay appends to `LIPACHAT_BASE_URL`.
pub const GATEWAY_MEDIA_PATH: &str = "api/v1/whatsapp/media";

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

/// The typed configuration: parsed once, nothing downstream parses again.
#[derive(Clone, Debug)]
pub struct Config {
    pub api_key: Option<ApiKey>,
    /// `LIPACHAT_BASE_URL` as given (for the start-up line).
    pub base_url: Url,
    /// `{base}/api/v1/whatsapp/media`, the one URL the relay posts to.
    pub media_url: Url,
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
}

/// A configuration error: always names the variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{0}: is required (or set {ENV_API_KEY_FILE})")]
    Missing(&'static str),
    #[error("{0}: must not be empty")]
    Empty(&'static str),
    #[error("{ENV_API_KEY_FILE}: cannot be used together with {ENV_API_KEY}; set only one")]
    BothKeySources,
    #[error("{ENV_API_KEY_FILE}: cannot read {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error("{var}: {reason}, got {value:?}")]
    Invalid {
        var: &'static str,
        reason: String,
        value: String,
    },
    #[error("the environment could not be read: {0}")]
    Environment(String),
}

/// The raw strings, as envy collects them (it lowercases variable names to match the
/// fields). Every field is optional text; `Config::from_vars`
/// does the typing so that errors name the variable.
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
}

impl fmt::Debug for RawVars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the raw key: this struct holds it before it becomes an `ApiKey`.
        f.write_str("RawVars { .. }")
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env(keys: KeyRequirement) -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars(), keys)
    }

    /// Parses a list of `(name, value)` pairs; unrelated variables are ignored.
    pub fn from_vars<I, K, V>(vars: I, keys: KeyRequirement) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let pairs = vars
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()));
        let raw: RawVars =
            envy::from_iter(pairs).map_err(|e| ConfigError::Environment(e.to_string()))?;

        let api_key = api_key(
            raw.lipachat_api_key.as_deref(),
            raw.lipachat_api_key_file.as_deref(),
        )?;
        if api_key.is_none() && keys == KeyRequirement::Required {
            return Err(ConfigError::Missing(ENV_API_KEY));
        }
        let base_url = base_url(raw.lipachat_base_url.as_deref())?;
        let media_url = media_url(&base_url)?;
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
            base_url,
            media_url,
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
        })
    }
}

fn api_key(inline: Option<&str>, file: Option<&str>) -> Result<Option<ApiKey>, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(ConfigError::BothKeySources),
        (Some(key), None) if key.trim().is_empty() => Err(ConfigError::Empty(ENV_API_KEY)),
        (Some(key), None) => Ok(Some(ApiKey::new(key))),
        (None, Some(path)) => read_key_file(path).map(Some),
        (None, None) => Ok(None),
    }
}

fn read_key_file(path: &str) -> Result<ApiKey, ConfigError> {
    if path.is_empty() {
        return Err(ConfigError::Empty(ENV_API_KEY_FILE));
    }
    let text = std::fs::read_to_string(PathBuf::from(path)).map_err(|e| ConfigError::KeyFile {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    // Secrets mounted from files usually end with a newline; nothing else is trimmed.
    let key = text.trim_end_matches(['\n', '\r']);
    if key.trim().is_empty() {
        return Err(ConfigError::KeyFile {
            path: path.to_owned(),
            reason: "the file is empty".to_owned(),
        });
    }
    Ok(ApiKey::new(key))
}

fn base_url(value: Option<&str>) -> Result<Url, ConfigError> {
    let text = value.unwrap_or(DEFAULT_BASE_URL);
    let invalid = |reason: &str| ConfigError::Invalid {
        var: ENV_BASE_URL,
        reason: reason.to_owned(),
        value: text.to_owned(),
    };
    let url = Url::parse(text).map_err(|e| invalid(&format!("not a URL ({e})")))?;
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

/// Appends the gateway path, keeping any path prefix of the base URL.
fn media_url(base: &Url) -> Result<Url, ConfigError> {
    let mut text = base.as_str().trim_end_matches('/').to_owned();
    text.push('/');
    text.push_str(GATEWAY_MEDIA_PATH);
    Url::parse(&text).map_err(|e| ConfigError::Invalid {
        var: ENV_BASE_URL,
        reason: format!("cannot append the media path ({e})"),
        value: base.as_str().to_owned(),
    })
}

fn number(
    var: &'static str,
    value: Option<&str>,
    default: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let Some(text) = value else {
        return Ok(default);
    };
    let out_of_range = || ConfigError::Invalid {
        var,
        reason: format!("must be between 1 and {max}"),
        value: text.to_owned(),
    };
    let parsed: u64 = text.trim().parse().map_err(|_| {
        // A number too large for u64 is still a number: say "range", not "not a number".
        if !text.trim().is_empty() && text.trim().bytes().all(|b| b.is_ascii_digit()) {
            out_of_range()
        } else {
            ConfigError::Invalid {
                var,
                reason: "must be a whole number".to_owned(),
                value: text.to_owned(),
            }
        }
    })?;
    if parsed == 0 || parsed > max {
        return Err(out_of_range());
    }
    Ok(parsed)
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

    fn parse(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(vars.iter().copied(), KeyRequirement::Required)
    }

    #[test]
    fn defaults_follow_the_spec() {
        let config = parse(&[(ENV_API_KEY, "k")]).unwrap();
        assert_eq!(
            config.media_url.as_str(),
            "https://gateway.lipachat.com/api/v1/whatsapp/media"
        );
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
    }

    #[test]
    fn base_url_path_prefix_is_kept() {
        let config = parse(&[
            (ENV_API_KEY, "k"),
            (ENV_BASE_URL, "http://127.0.0.1:9/prefix/"),
        ])
        .unwrap();
        assert_eq!(
            config.media_url.as_str(),
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
        assert_eq!(err, ConfigError::BothKeySources);
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
    fn zero_is_rejected_everywhere() {
        for var in [
            ENV_DEDUP_TTL_SECS,
            ENV_DEDUP_CAPACITY,
            ENV_ATTEMPT_TIMEOUT_MS,
            ENV_DEADLINE_MS,
            ENV_MAX_IN_FLIGHT,
            ENV_MAX_BODY_BYTES,
            ENV_SHUTDOWN_GRACE_SECS,
        ] {
            let err = parse(&[(ENV_API_KEY, "k"), (var, "0")]).unwrap_err();
            assert!(err.to_string().starts_with(var), "{err}");
        }
    }

    #[test]
    fn malformed_url_and_address_are_rejected() {
        let err = parse(&[(ENV_API_KEY, "k"), (ENV_BASE_URL, "ftp://x")]).unwrap_err();
        assert!(err.to_string().starts_with("LIPACHAT_BASE_URL:"));
        let err = parse(&[(ENV_API_KEY, "k"), (ENV_LISTEN, "localhost")]).unwrap_err();
        assert!(err.to_string().starts_with("RELAY_LISTEN:"));
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
    fn debug_output_never_contains_the_key() {
        let config = parse(&[(ENV_API_KEY, "very-secret-key-123")]).unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("very-secret-key-123"));
        assert!(printed.contains("ApiKey(<redacted>)"));
    }
}
