//! The configuration that may hold a secret (SPEC "Configuration"): the API key, the Redis
//! URLs (which may carry a password) and the files either may be read from.
//!
//! A secret never reaches an error or `Debug`: the key is an [`ApiKey`], the URLs are
//! [`RedisUrls`], and errors about either name the variable and the reason, never the value.

use std::fmt;
use std::path::PathBuf;

use url::Url;

use super::{ConfigError, FailureMode, RawVars, RedisConfig, choice, flag, invalid, millis};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::vars::{
    API_KEY, API_KEY_FILE, EVENTS_SECRET, EVENTS_SECRET_FILE, REDIS_CLUSTER, REDIS_FAILURE,
    REDIS_PREFIX, REDIS_TIMEOUT_MS, REDIS_URL, REDIS_URL_FILE, Var, WEBHOOK_TOKEN,
    WEBHOOK_TOKEN_FILE,
};

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
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// The Redis URL(s): one for a standalone server, the seed nodes for a Cluster. They may
/// carry a password, so `Debug` and [`RedisUrls::redacted`] show only scheme, host and port.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct RedisUrls(Vec<Url>);

impl RedisUrls {
    /// The URLs, for the client. Call sites: the shared store's connection set-up only.
    pub(crate) fn expose(&self) -> &[Url] {
        &self.0
    }

    /// `redis://host:port` for each URL, comma-separated: safe to log.
    pub(crate) fn redacted(&self) -> String {
        self.0.iter().map(origin_of).collect::<Vec<_>>().join(",")
    }
}

/// `scheme://host[:port]` of `url`: nothing of its credentials, path or query, so safe to log.
/// (`Url::origin` would answer `null` for `redis://`.)
pub(crate) fn origin_of(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

impl fmt::Debug for RedisUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrls({})", self.redacted())
    }
}

/// The key, inline or from its file; `None` when neither is set.
pub(super) fn api_key(
    inline: Option<&str>,
    file: Option<&str>,
) -> Result<Option<ApiKey>, ConfigError> {
    match secret_text(&API_KEY, inline, &API_KEY_FILE, file)? {
        Some((_, key)) if key.trim().is_empty() => Err(ConfigError::Empty(API_KEY.name)),
        Some((_, key)) => Ok(Some(ApiKey::new(key))),
        None => Ok(None),
    }
}

/// The webhook URL's secret last segment: 32 to 128 of `A-Z a-z 0-9 - _`. Compared in
/// constant time; `Debug` redacted; no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct WebhookToken(Box<str>);

/// Shortest webhook token.
pub(crate) const TOKEN_MIN: usize = 32;
/// Longest webhook token.
pub(crate) const TOKEN_MAX: usize = 128;

impl WebhookToken {
    /// Checks a token's form; the reason never quotes it.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let len = text.len();
        if !(TOKEN_MIN..=TOKEN_MAX).contains(&len) {
            return Err(format!(
                "must be {TOKEN_MIN} to {TOKEN_MAX} characters, got {len}"
            ));
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("may hold only A-Z a-z 0-9 - _".to_owned());
        }
        Ok(Self(text.into()))
    }

    /// Whether `candidate` is this token, in time that does not depend on where they differ.
    pub(crate) fn matches(&self, candidate: &str) -> bool {
        use subtle::ConstantTimeEq as _;
        let ours = self.0.as_bytes();
        let theirs = candidate.as_bytes();
        // Lengths are not secret (the form is documented); the bytes are.
        ours.len() == theirs.len() && bool::from(ours.ct_eq(theirs))
    }

    /// The token itself: only to build the mock's callback URL.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for WebhookToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookToken(<redacted>)")
    }
}

/// The events signing secret (Standard Webhooks): `whsec_` and the base64 of 24 to 64 bytes.
/// Holds the decoded key; `Debug` redacted; no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SigningSecret(Box<[u8]>);

/// Fewest bytes in a signing key.
pub(crate) const SECRET_MIN_BYTES: usize = 24;
/// Most bytes in a signing key.
pub(crate) const SECRET_MAX_BYTES: usize = 64;

impl SigningSecret {
    /// Reads `whsec_<base64>`; the reason never quotes it.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let encoded = text
            .trim()
            .strip_prefix("whsec_")
            .ok_or_else(|| "must start with whsec_".to_owned())?;
        let key = BASE64
            .decode(encoded)
            .map_err(|_| "must be whsec_ followed by standard base64".to_owned())?;
        if !(SECRET_MIN_BYTES..=SECRET_MAX_BYTES).contains(&key.len()) {
            return Err(format!(
                "must encode {SECRET_MIN_BYTES} to {SECRET_MAX_BYTES} bytes, got {}",
                key.len()
            ));
        }
        Ok(Self(key.into()))
    }

    /// The decoded key: only for the HMAC.
    pub(crate) fn key(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

/// The webhook token, inline or from its file; `None` when neither is set.
pub(super) fn webhook_token(
    inline: Option<&str>,
    file: Option<&str>,
) -> Result<Option<WebhookToken>, ConfigError> {
    let source = secret_text(&WEBHOOK_TOKEN, inline, &WEBHOOK_TOKEN_FILE, file)?;
    parsed(source, |text| WebhookToken::parse(text.trim()))
}

/// The signing secret, inline or from its file; `None` when neither is set.
pub(super) fn signing_secret(
    inline: Option<&str>,
    file: Option<&str>,
) -> Result<Option<SigningSecret>, ConfigError> {
    let source = secret_text(&EVENTS_SECRET, inline, &EVENTS_SECRET_FILE, file)?;
    parsed(source, SigningSecret::parse)
}

/// A secret's text read by `parse`; a refusal names the variable it came from, never the
/// text.
fn parsed<T>(
    source: Option<(&'static Var, String)>,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, ConfigError> {
    let Some((var, text)) = source else {
        return Ok(None);
    };
    parse(&text)
        .map(Some)
        .map_err(|reason| ConfigError::InvalidSecret {
            var: var.name,
            reason,
        })
}

/// The signing secret alone, from `RELAY_EVENTS_SECRET` or `RELAY_EVENTS_SECRET_FILE`:
/// `events-receive` needs nothing else, so nothing else is read or checked.
pub(crate) fn events_secret_from_env() -> Result<SigningSecret, ConfigError> {
    events_secret_from_vars(std::env::vars_os())
}

/// [`events_secret_from_env`] over a literal list of `(name, value)` pairs.
pub(crate) fn events_secret_from_vars<I, K, V>(vars: I) -> Result<SigningSecret, ConfigError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<std::ffi::OsStr>,
    V: AsRef<std::ffi::OsStr>,
{
    let own = super::own_variables(vars)?;
    let get = |var: &Var| {
        own.iter()
            .find(|(name, _)| name == var.name)
            .map(|(_, value)| value.as_str())
    };
    signing_secret(get(&EVENTS_SECRET), get(&EVENTS_SECRET_FILE))?.ok_or(
        ConfigError::MissingSecret {
            var: EVENTS_SECRET.name,
            file: EVENTS_SECRET_FILE.name,
        },
    )
}

/// A secret set inline or as a file, not both: the variable it came from and its text.
pub(super) fn secret_text(
    inline_var: &'static Var,
    inline: Option<&str>,
    file_var: &'static Var,
    file: Option<&str>,
) -> Result<Option<(&'static Var, String)>, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(ConfigError::BothSources {
            file: file_var.name,
            inline: inline_var.name,
        }),
        (Some(text), None) => Ok(Some((inline_var, text.to_owned()))),
        (None, Some(path)) => Ok(Some((file_var, read_secret_file(file_var.name, path)?))),
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

/// One URL, or a comma-separated list of Cluster seed nodes. Errors never quote the text:
/// it may carry a password.
pub(super) fn redis_urls(
    var: &'static str,
    text: &str,
    cluster: bool,
) -> Result<RedisUrls, ConfigError> {
    let invalid = |reason: String| ConfigError::InvalidSecret { var, reason };
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    if parts.len() > 1 && !cluster {
        return Err(invalid(format!(
            "lists several URLs; set {}=true for Redis Cluster seed nodes",
            REDIS_CLUSTER.name
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

/// The shared store's settings (`RELAY_REDIS_*`).
pub(super) fn redis(raw: &RawVars) -> Result<RedisConfig, ConfigError> {
    let text = secret_text(
        &REDIS_URL,
        raw.get(&REDIS_URL),
        &REDIS_URL_FILE,
        raw.get(&REDIS_URL_FILE),
    )?;
    let cluster = flag(raw, &REDIS_CLUSTER)?;
    let urls = match text {
        Some((var, text)) => Some(redis_urls(var.name, &text, cluster)?),
        None => None,
    };
    let prefix = raw.or_default(&REDIS_PREFIX).unwrap_or_default();
    if prefix.is_empty() {
        return Err(ConfigError::Empty(REDIS_PREFIX.name));
    }
    if prefix.contains(['{', '}']) || prefix.chars().any(char::is_control) {
        return Err(invalid(
            &REDIS_PREFIX,
            "must not contain { } (Cluster hash tags) or control characters",
            prefix,
        ));
    }
    let failure = match choice(raw, &REDIS_FAILURE)? {
        "closed" => FailureMode::Closed,
        _ => FailureMode::Open,
    };
    Ok(RedisConfig {
        urls,
        cluster,
        prefix: prefix.into(),
        timeout: millis(raw, &REDIS_TIMEOUT_MS)?,
        failure,
    })
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::super::vars::{REDIS_URL, REDIS_URL_FILE};
    use super::*;

    #[test]
    fn empty_key_is_rejected() {
        let err = parse(&[(API_KEY.name, "  ")]).unwrap_err();
        assert_eq!(err, ConfigError::Empty(API_KEY.name));
    }

    #[test]
    fn both_key_sources_are_rejected() {
        let err = parse(&[(API_KEY.name, "k"), (API_KEY_FILE.name, "/x")]).unwrap_err();
        assert!(
            err.to_string().starts_with("LIPACHAT_API_KEY_FILE:"),
            "{err}"
        );
    }

    #[test]
    fn key_file_trailing_newline_is_trimmed() {
        let path = std::env::temp_dir().join(format!("relay-key-{}", std::process::id()));
        std::fs::write(&path, "s3cret\n").unwrap();
        let config = parse(&[(API_KEY_FILE.name, path.to_str().unwrap())]).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(config.api_key.unwrap().expose(), "s3cret");
    }

    #[test]
    fn unreadable_key_file_names_the_variable() {
        let err = parse(&[(API_KEY_FILE.name, "/nonexistent/key")]).unwrap_err();
        assert!(
            err.to_string().starts_with("LIPACHAT_API_KEY_FILE:"),
            "{err}"
        );
    }

    #[test]
    fn debug_output_never_contains_the_key_or_the_redis_password() {
        let config = parse(&[
            (API_KEY.name, "very-secret-key-123"),
            (REDIS_URL.name, "redis://:redis-pw-456@127.0.0.1:6379/0"),
        ])
        .unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("very-secret-key-123"));
        assert!(printed.contains("ApiKey(<redacted>)"));
        assert!(!printed.contains("redis-pw-456"), "{printed}");
        assert!(printed.contains("redis://127.0.0.1:6379"), "{printed}");
    }

    #[test]
    fn redis_urls_are_checked_without_quoting_them() {
        let cases = [
            ("http://:pw-789@h:1", "redis:// or rediss://"),
            ("redis://:pw-789@h:1,redis://h:2", "RELAY_REDIS_CLUSTER"),
            ("not a url pw-789", "not a URL"),
        ];
        for (url, reason) in cases {
            let err = parse(&[(API_KEY.name, "k"), (REDIS_URL.name, url)]).unwrap_err();
            let text = err.to_string();
            assert!(text.starts_with("RELAY_REDIS_URL:"), "{text}");
            assert!(text.contains(reason), "{text}");
            assert!(!text.contains("pw-789"), "{text}");
        }
    }

    #[test]
    fn cluster_seed_nodes_are_a_comma_separated_list() {
        let config = parse(&[
            (API_KEY.name, "k"),
            (
                REDIS_URL.name,
                "redis://a:7000, redis://b:7001,rediss://c:7002",
            ),
            (REDIS_CLUSTER.name, "true"),
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
        let config = parse(&[(API_KEY.name, "k"), (REDIS_URL_FILE.name, file)]).unwrap();
        assert_eq!(
            config.redis.urls.unwrap().expose()[0].password(),
            Some("pw")
        );
        let err = parse(&[
            (API_KEY.name, "k"),
            (REDIS_URL_FILE.name, file),
            (REDIS_URL.name, "redis://h"),
        ])
        .unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(
            err.to_string().starts_with("RELAY_REDIS_URL_FILE:"),
            "{err}"
        );
    }

    const EVENTS_SECRET_TEXT: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn the_events_secret_alone_is_read_inline_or_from_a_file() {
        let inline = events_secret_from_vars([("RELAY_EVENTS_SECRET", EVENTS_SECRET_TEXT)]);
        assert_eq!(
            inline.unwrap(),
            SigningSecret::parse(EVENTS_SECRET_TEXT).unwrap()
        );
        let path = std::env::temp_dir().join(format!("events-secret-{:x}", fastrand::u64(..)));
        std::fs::write(&path, format!("{EVENTS_SECRET_TEXT}\n")).unwrap();
        let from_file =
            events_secret_from_vars([("RELAY_EVENTS_SECRET_FILE", path.to_str().unwrap())]);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            from_file.unwrap(),
            SigningSecret::parse(EVENTS_SECRET_TEXT).unwrap()
        );
    }

    #[test]
    fn a_missing_events_secret_names_both_variables() {
        let error = events_secret_from_vars([("LIPACHAT_API_KEY", "k")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "RELAY_EVENTS_SECRET: is required (or set RELAY_EVENTS_SECRET_FILE)"
        );
    }

    #[test]
    fn a_bad_events_secret_names_the_variable_and_not_the_value() {
        for (var, value) in [
            ("RELAY_EVENTS_SECRET", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            ("RELAY_EVENTS_SECRET", "whsec_c2hvcnQ="),
            ("RELAY_EVENTS_SECRET_FILE", "/nonexistent/secret"),
        ] {
            let error = events_secret_from_vars([(var, value)])
                .unwrap_err()
                .to_string();
            assert!(error.starts_with(var), "{error}");
            assert!(
                !error.contains("MfKQ9r8GKYqrTwjUPD8") && !error.contains("c2hvcnQ"),
                "{error}"
            );
        }
        let both = events_secret_from_vars([
            ("RELAY_EVENTS_SECRET", EVENTS_SECRET_TEXT),
            ("RELAY_EVENTS_SECRET_FILE", "/x"),
        ]);
        assert!(
            both.unwrap_err()
                .to_string()
                .starts_with("RELAY_EVENTS_SECRET_FILE")
        );
    }
}
