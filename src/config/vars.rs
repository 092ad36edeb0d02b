//! Every variable the relay reads, written once (SPEC "Configuration"): its name, its default,
//! the values it takes and a line of help. The parser ([`super::Config::from_vars`]), `--help`
//! and the tests read this table; the docs' configuration table and `.env.example` are checked
//! against it ([`VARS`]).
//!
//! A default is written as text, exactly as the docs show it, and goes through the same parser
//! as a value from the environment: a default outside its own range fails the unit tests, not
//! a deployment.

use super::{ConfigError, invalid};

/// Longest time any variable may hold, in seconds: every duration then fits in `Instant`
/// arithmetic (about 30 years).
pub(crate) const MAX_SECS: u64 = 1_000_000_000;
/// The same in milliseconds.
pub(crate) const MAX_MILLIS: u64 = MAX_SECS * 1000;
/// Counts and sizes stay within 32 bits.
pub(crate) const MAX_COUNT: u64 = u32::MAX as u64;
/// Most gateway attempts per request, the first included.
pub(crate) const MOST_ATTEMPTS: u64 = 10;

/// What values a variable takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Values {
    /// Text with a check of its own (a URL, an address, a phone number, a key prefix).
    Text,
    /// A secret, or the path of a file holding one: never quoted back.
    Secret,
    /// A whole number from `min` to `max`.
    Number { min: u64, max: u64 },
    /// `true` or `false` (`1` or `0`).
    Flag,
    /// One of these words, in any case.
    Choice(&'static [&'static str]),
}

/// One configuration variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Var {
    /// The environment variable's name.
    pub name: &'static str,
    /// The value used when it is unset, as the docs write it; `None`: unset means "none".
    pub default: Option<&'static str>,
    /// What values it takes.
    pub(crate) values: Values,
    /// One line for `--help`.
    pub help: &'static str,
}

impl Var {
    /// The allowed range, for `--help` and error messages: `1 to 10`, `json or text`.
    pub(crate) fn range(&self) -> Option<String> {
        match self.values {
            Values::Number { min, max } => Some(format!("{min} to {max}")),
            Values::Flag => Some("true or false".to_owned()),
            Values::Choice(words) => Some(words.join(" or ")),
            Values::Text | Values::Secret => None,
        }
    }
}

impl Var {
    /// `true` or `false` (`1`, `0`): the value, or the default.
    pub(super) fn flag(&self, value: Option<&str>) -> Result<bool, ConfigError> {
        match value.or(self.default).map(str::trim) {
            None => Ok(false),
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => Ok(false),
            Some(v) => Err(invalid(self, "must be true or false", v)),
        }
    }

    /// One of the variable's words (as the table spells it), in any case.
    pub(super) fn choice(&self, value: Option<&str>) -> Result<&'static str, ConfigError> {
        let Values::Choice(words) = self.values else {
            return Err(ConfigError::Missing(self.name));
        };
        let text = value.or(self.default).unwrap_or_default().trim();
        words
            .iter()
            .find(|word| word.eq_ignore_ascii_case(text))
            .copied()
            .ok_or_else(|| invalid(self, format!("must be {}", words.join(" or ")), text))
    }

    /// A whole number within the variable's range: the value, or the default.
    pub(super) fn number(&self, value: Option<&str>) -> Result<u64, ConfigError> {
        let (Values::Number { min, max }, Some(text)) = (self.values, value.or(self.default))
        else {
            return Err(ConfigError::Missing(self.name));
        };
        let out_of_range = || invalid(self, format!("must be between {min} and {max}"), text);
        let trimmed = text.trim();
        let parsed: u64 = trimmed.parse().map_err(|_| {
            // A number too large for u64 is still a number: say "range", not "not a number".
            if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
                out_of_range()
            } else {
                invalid(self, "must be a whole number", text)
            }
        })?;
        if parsed < min || parsed > max {
            return Err(out_of_range());
        }
        Ok(parsed)
    }
}

const fn number(min: u64, max: u64) -> Values {
    Values::Number { min, max }
}

pub(crate) const API_KEY: Var = Var {
    name: "LIPACHAT_API_KEY",
    default: None,
    values: Values::Secret,
    help: "the gateway secret; required unless LIPACHAT_API_KEY_FILE is set or --mock-upstream \
           is used",
};
pub(crate) const API_KEY_FILE: Var = Var {
    name: "LIPACHAT_API_KEY_FILE",
    default: None,
    values: Values::Secret,
    help: "file holding the secret (a trailing newline is trimmed); setting both is an error",
};
pub(crate) const BASE_URL: Var = Var {
    name: "LIPACHAT_BASE_URL",
    default: Some("https://gateway.lipachat.com"),
    values: Values::Text,
    help: "gateway origin, http or https; a path prefix is kept; no credentials",
};
pub(crate) const DEFAULT_FROM: Var = Var {
    name: "LIPACHAT_DEFAULT_FROM",
    default: None,
    values: Values::Text,
    help: "sender number used when a request has no from",
};
/// `RELAY_LISTEN`: the send API's address.
pub const LISTEN: Var = Var {
    name: "RELAY_LISTEN",
    default: Some("127.0.0.1:8080"),
    values: Values::Text,
    help: "listen address",
};
pub(crate) const DEDUP_TTL_SECS: Var = Var {
    name: "RELAY_DEDUP_TTL_SECS",
    default: Some("86400"),
    values: number(1, MAX_SECS),
    help: "how long a successful send is remembered, in seconds",
};
pub(crate) const DEDUP_CAPACITY: Var = Var {
    name: "RELAY_DEDUP_CAPACITY",
    default: Some("100000"),
    values: number(1, MAX_COUNT),
    help: "most answers remembered in this process (the memory bound)",
};
pub(crate) const MAX_ATTEMPTS: Var = Var {
    name: "RELAY_MAX_ATTEMPTS",
    default: Some("3"),
    values: number(1, MOST_ATTEMPTS),
    help: "gateway attempts per request, the first included",
};
pub(crate) const ATTEMPT_TIMEOUT_MS: Var = Var {
    name: "RELAY_ATTEMPT_TIMEOUT_MS",
    default: Some("10000"),
    values: number(1, MAX_MILLIS),
    help: "timeout of one gateway attempt, in milliseconds",
};
pub(crate) const DEADLINE_MS: Var = Var {
    name: "RELAY_DEADLINE_MS",
    default: Some("30000"),
    values: number(1, MAX_MILLIS),
    help: "whole-request budget (rate wait, attempts, back-off), in milliseconds",
};
pub(crate) const MAX_IN_FLIGHT: Var = Var {
    name: "RELAY_MAX_IN_FLIGHT",
    default: Some("1024"),
    values: number(1, MAX_COUNT),
    help: "send requests in flight before load shedding (503)",
};
pub(crate) const MAX_BODY_BYTES: Var = Var {
    name: "RELAY_MAX_BODY_BYTES",
    default: Some("65536"),
    values: number(1, MAX_COUNT),
    help: "request body limit in bytes (413)",
};
pub(crate) const SHUTDOWN_GRACE_SECS: Var = Var {
    name: "RELAY_SHUTDOWN_GRACE_SECS",
    default: Some("25"),
    values: number(1, MAX_SECS),
    help: "drain time for sends under way on SIGTERM/SIGINT, in seconds",
};
pub(crate) const LOG_FORMAT: Var = Var {
    name: "RELAY_LOG_FORMAT",
    default: Some("json"),
    values: Values::Choice(&["json", "text"]),
    help: "log line format",
};
pub(crate) const RUST_LOG: Var = Var {
    name: "RUST_LOG",
    default: Some("info"),
    values: Values::Text,
    help: "log filter (tracing EnvFilter syntax)",
};
pub(crate) const REDIS_URL: Var = Var {
    name: "RELAY_REDIS_URL",
    default: None,
    values: Values::Secret,
    help: "shared store for dedup and rate limits, redis:// or rediss://; unset: this \
           process's memory only",
};
pub(crate) const REDIS_URL_FILE: Var = Var {
    name: "RELAY_REDIS_URL_FILE",
    default: None,
    values: Values::Secret,
    help: "the same URL read from a file; setting both is an error",
};
pub(crate) const REDIS_CLUSTER: Var = Var {
    name: "RELAY_REDIS_CLUSTER",
    default: Some("false"),
    values: Values::Flag,
    help: "true: RELAY_REDIS_URL is a comma-separated list of Cluster seed nodes",
};
pub(crate) const REDIS_PREFIX: Var = Var {
    name: "RELAY_REDIS_PREFIX",
    default: Some("lipachat-relay"),
    values: Values::Text,
    help: "prefix of every Redis key (no { } or control characters)",
};
pub(crate) const REDIS_TIMEOUT_MS: Var = Var {
    name: "RELAY_REDIS_TIMEOUT_MS",
    default: Some("250"),
    values: number(1, MAX_MILLIS),
    help: "timeout of one Redis round trip, in milliseconds",
};
pub(crate) const REDIS_FAILURE: Var = Var {
    name: "RELAY_REDIS_FAILURE",
    default: Some("open"),
    values: Values::Choice(&["open", "closed"]),
    help: "Redis unreachable: open = this process's memory, closed = 503",
};
pub(crate) const SENDER_RATE: Var = Var {
    name: "RELAY_SENDER_RATE",
    default: Some("80"),
    values: number(0, MAX_COUNT),
    help: "sends per second per from number; 0 = no sender limit",
};
pub(crate) const PAIR_INTERVAL_MS: Var = Var {
    name: "RELAY_PAIR_INTERVAL_MS",
    default: Some("6000"),
    values: number(0, MAX_MILLIS),
    help: "mean spacing of sends from one from to one to, in milliseconds; 0 = no pair limit",
};
pub(crate) const PAIR_BURST: Var = Var {
    name: "RELAY_PAIR_BURST",
    default: Some("45"),
    values: number(1, MAX_COUNT),
    help: "sends to one pair that may go at once before the spacing applies",
};
pub(crate) const RATE_MAX_WAIT_MS: Var = Var {
    name: "RELAY_RATE_MAX_WAIT_MS",
    default: Some("5000"),
    values: number(0, MAX_MILLIS),
    help: "longest wait for a rate slot before a 429, in milliseconds; 0 = never wait",
};
pub(crate) const HEADER_TIMEOUT_MS: Var = Var {
    name: "RELAY_HEADER_TIMEOUT_MS",
    default: Some("5000"),
    values: number(1, MAX_MILLIS),
    help: "time for a client to send its whole request head, in milliseconds",
};
pub(crate) const BODY_TIMEOUT_MS: Var = Var {
    name: "RELAY_BODY_TIMEOUT_MS",
    default: Some("10000"),
    values: number(1, MAX_MILLIS),
    help: "time for a client to send its whole body after the head, in milliseconds (408)",
};
pub(crate) const IDLE_TIMEOUT_SECS: Var = Var {
    name: "RELAY_IDLE_TIMEOUT_SECS",
    default: Some("75"),
    values: number(1, MAX_SECS),
    help: "how long a keep-alive connection may sit idle between requests, in seconds",
};
/// `RELAY_MAX_CONNECTIONS`: open client connections, at most.
pub(crate) const MAX_CONNECTIONS: Var = Var {
    name: "RELAY_MAX_CONNECTIONS",
    default: Some("4096"),
    values: number(1, MAX_COUNT),
    help: "open client connections, capped below the file-descriptor limit",
};
/// `RELAY_WEBHOOK_LISTEN`: the webhook listener's address.
pub(crate) const WEBHOOK_LISTEN: Var = Var {
    name: "RELAY_WEBHOOK_LISTEN",
    default: None,
    values: Values::Text,
    help: "address of the second listener, for Lipachat's webhooks; unset = none",
};
pub(crate) const WEBHOOK_TOKEN: Var = Var {
    name: "RELAY_WEBHOOK_TOKEN",
    default: None,
    values: Values::Secret,
    help: "required with RELAY_WEBHOOK_LISTEN: 32 to 128 of A-Z a-z 0-9 - _, the webhook \
           URL's last segment",
};
pub(crate) const WEBHOOK_TOKEN_FILE: Var = Var {
    name: "RELAY_WEBHOOK_TOKEN_FILE",
    default: None,
    values: Values::Secret,
    help: "file holding the webhook token; setting both is an error",
};
pub(crate) const STATUS_TTL_SECS: Var = Var {
    name: "RELAY_STATUS_TTL_SECS",
    default: Some("604800"),
    values: number(1, MAX_SECS),
    help: "how long a message's status record is kept, in seconds",
};
pub(crate) const STATUS_CAPACITY: Var = Var {
    name: "RELAY_STATUS_CAPACITY",
    default: Some("100000"),
    values: number(1, MAX_COUNT),
    help: "status records held in this process's memory (without Redis), at most",
};
pub(crate) const EVENTS_URL: Var = Var {
    name: "RELAY_EVENTS_URL",
    default: None,
    values: Values::Text,
    help: "http(s) URL of the caller's event receiver; unset = no events out",
};
pub(crate) const EVENTS_SECRET: Var = Var {
    name: "RELAY_EVENTS_SECRET",
    default: None,
    values: Values::Secret,
    help: "required with RELAY_EVENTS_URL: whsec_ and the base64 of 24 to 64 random bytes",
};
pub(crate) const EVENTS_SECRET_FILE: Var = Var {
    name: "RELAY_EVENTS_SECRET_FILE",
    default: None,
    values: Values::Secret,
    help: "file holding the events secret; setting both is an error",
};
pub(crate) const EVENTS_MAX_AGE_SECS: Var = Var {
    name: "RELAY_EVENTS_MAX_AGE_SECS",
    default: Some("86400"),
    values: number(1, MAX_SECS),
    help: "how long an undelivered event is retried before it is dead, in seconds",
};
pub(crate) const EVENTS_MAX_PENDING: Var = Var {
    name: "RELAY_EVENTS_MAX_PENDING",
    default: Some("100000"),
    values: number(1, MAX_COUNT),
    help: "events waiting in this process's memory (without Redis); full = webhooks get 503",
};
pub(crate) const QUEUE_MAX_AGE_SECS: Var = Var {
    name: "RELAY_QUEUE_MAX_AGE_SECS",
    default: Some("86400"),
    values: number(1, MAX_SECS),
    help: "how long a queued send (Prefer: respond-async) is retried before it is FAILED, in \
           seconds",
};
/// `MOCK_LISTEN`: the mock gateway's address.
pub const MOCK_LISTEN: Var = Var {
    name: "MOCK_LISTEN",
    default: Some("127.0.0.1:8090"),
    values: Values::Text,
    help: "listen address of the mock-gateway command (the relay does not read it)",
};
/// `MOCK_CALLBACK_URL`: where the mock gateway posts its webhook callbacks.
pub const MOCK_CALLBACK_URL: Var = Var {
    name: "MOCK_CALLBACK_URL",
    default: None,
    // A URL like the relay's own webhook URL carries a token in its path: never quoted back.
    values: Values::Secret,
    help: "http(s) URL the mock-gateway command posts status and inbound callbacks to; unset = \
           none (the relay does not read it)",
};

/// Every variable, in the order the docs list them.
pub const VARS: [Var; 42] = [
    API_KEY,
    API_KEY_FILE,
    BASE_URL,
    DEFAULT_FROM,
    LISTEN,
    DEDUP_TTL_SECS,
    DEDUP_CAPACITY,
    MAX_ATTEMPTS,
    ATTEMPT_TIMEOUT_MS,
    DEADLINE_MS,
    MAX_IN_FLIGHT,
    MAX_BODY_BYTES,
    SHUTDOWN_GRACE_SECS,
    LOG_FORMAT,
    RUST_LOG,
    REDIS_URL,
    REDIS_URL_FILE,
    REDIS_CLUSTER,
    REDIS_PREFIX,
    REDIS_TIMEOUT_MS,
    REDIS_FAILURE,
    SENDER_RATE,
    PAIR_INTERVAL_MS,
    PAIR_BURST,
    RATE_MAX_WAIT_MS,
    HEADER_TIMEOUT_MS,
    BODY_TIMEOUT_MS,
    IDLE_TIMEOUT_SECS,
    MAX_CONNECTIONS,
    WEBHOOK_LISTEN,
    WEBHOOK_TOKEN,
    WEBHOOK_TOKEN_FILE,
    STATUS_TTL_SECS,
    STATUS_CAPACITY,
    EVENTS_URL,
    EVENTS_SECRET,
    EVENTS_SECRET_FILE,
    EVENTS_MAX_AGE_SECS,
    EVENTS_MAX_PENDING,
    QUEUE_MAX_AGE_SECS,
    MOCK_LISTEN,
    MOCK_CALLBACK_URL,
];

/// The names of [`VARS`]: only these must be UTF-8.
pub const VARIABLES: [&str; VARS.len()] = {
    let mut names = [""; VARS.len()];
    let mut i = 0;
    while i < VARS.len() {
        names[i] = VARS[i].name;
        i += 1;
    }
    names
};

/// The variables and their defaults, one a line, for `serve --help`.
pub fn help() -> String {
    let width = VARIABLES.iter().map(|name| name.len()).max().unwrap_or(0);
    let mut text = String::from("Configuration (environment variables):\n");
    for var in &VARS {
        let mut notes = Vec::new();
        if let Some(range) = var.range() {
            notes.push(range);
        }
        if let Some(default) = var.default {
            notes.push(format!("default {default}"));
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!(" [{}]", notes.join("; "))
        };
        text.push_str(&format!("  {:width$}  {}{notes}\n", var.name, var.help));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_listed_once() {
        let mut names = VARIABLES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), VARS.len());
    }

    #[test]
    fn every_numeric_default_is_in_its_range() {
        for var in &VARS {
            if let Values::Number { min, max } = var.values {
                let default: u64 = var.default.unwrap().parse().unwrap();
                assert!((min..=max).contains(&default), "{}", var.name);
            }
        }
    }

    #[test]
    fn help_names_every_variable_with_its_range_and_default() {
        let text = help();
        for var in &VARS {
            assert!(text.contains(var.name), "{}", var.name);
        }
        assert!(text.contains("[1 to 10; default 3]"), "{text}");
        assert!(text.contains("[json or text; default json]"), "{text}");
    }
}
