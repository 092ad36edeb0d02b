//! The configuration of what happens after SENT (SPEC "After SENT"): the webhook listener,
//! status records and events out. Each is off until its address or URL is set; its secret is
//! then required.

use std::net::SocketAddr;
use std::time::Duration;

use url::Url;

use super::vars::{
    EVENTS_MAX_AGE_SECS, EVENTS_MAX_PENDING, EVENTS_SECRET, EVENTS_SECRET_FILE, EVENTS_URL,
    QUEUE_MAX_AGE_SECS, STATUS_CAPACITY, STATUS_TTL_SECS, WEBHOOK_LISTEN, WEBHOOK_TOKEN,
    WEBHOOK_TOKEN_FILE,
};
use super::{ConfigError, RawVars, invalid, number, secret, secs, size};
use super::{SigningSecret, WebhookToken};

/// The webhook listener (SPEC "After SENT"): where it listens and the URL's secret segment.
#[derive(Clone, Debug)]
pub(crate) struct WebhookConfig {
    /// `RELAY_WEBHOOK_LISTEN`.
    pub listen: SocketAddr,
    /// `RELAY_WEBHOOK_TOKEN[_FILE]`.
    pub token: WebhookToken,
}

/// Status records (SPEC "Status of a message").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StatusConfig {
    /// `RELAY_STATUS_TTL_SECS`.
    pub ttl: Duration,
    /// `RELAY_STATUS_CAPACITY` (memory only).
    pub capacity: u64,
    /// `RELAY_QUEUE_MAX_AGE_SECS`: how long a queued send is tried before it is FAILED.
    pub queue_max_age: Duration,
}

pub(super) fn status(raw: &RawVars) -> Result<StatusConfig, ConfigError> {
    Ok(StatusConfig {
        ttl: secs(raw, &STATUS_TTL_SECS)?,
        capacity: number(raw, &STATUS_CAPACITY)?,
        queue_max_age: secs(raw, &QUEUE_MAX_AGE_SECS)?,
    })
}

/// Events out (SPEC "Events out").
#[derive(Clone, Debug)]
pub(crate) struct EventsConfig {
    /// `RELAY_EVENTS_URL`.
    pub url: Url,
    /// `RELAY_EVENTS_SECRET[_FILE]`.
    pub secret: SigningSecret,
    /// `RELAY_EVENTS_MAX_AGE_SECS`.
    pub max_age: Duration,
    /// `RELAY_EVENTS_MAX_PENDING` (memory only).
    pub max_pending: usize,
}

pub(super) fn webhooks(raw: &RawVars) -> Result<Option<WebhookConfig>, ConfigError> {
    let token = secret::webhook_token(raw.get(&WEBHOOK_TOKEN), raw.get(&WEBHOOK_TOKEN_FILE))?;
    let Some(text) = raw.get(&WEBHOOK_LISTEN) else {
        return Ok(None);
    };
    let listen = text.trim().parse::<SocketAddr>().map_err(|_| {
        invalid(
            &WEBHOOK_LISTEN,
            "must be an address such as 0.0.0.0:8081",
            text,
        )
    })?;
    let token = token.ok_or(ConfigError::Required {
        var: WEBHOOK_TOKEN.name,
        with: WEBHOOK_LISTEN.name,
    })?;
    Ok(Some(WebhookConfig { listen, token }))
}

pub(super) fn events(raw: &RawVars) -> Result<Option<EventsConfig>, ConfigError> {
    let secret = secret::signing_secret(raw.get(&EVENTS_SECRET), raw.get(&EVENTS_SECRET_FILE))?;
    let Some(text) = raw.get(&EVENTS_URL) else {
        return Ok(None);
    };
    let url = Url::parse(text.trim())
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https") && url.host_str().is_some())
        .ok_or_else(|| invalid(&EVENTS_URL, "must be an http:// or https:// URL", text))?;
    let secret = secret.ok_or(ConfigError::Required {
        var: EVENTS_SECRET.name,
        with: EVENTS_URL.name,
    })?;
    Ok(Some(EventsConfig {
        url,
        secret,
        max_age: secs(raw, &EVENTS_MAX_AGE_SECS)?,
        max_pending: size(raw, &EVENTS_MAX_PENDING)?,
    }))
}
