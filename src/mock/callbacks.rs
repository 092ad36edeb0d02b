//! The mock's webhook side (SPEC "Mock gateway"): what Lipachat posts to a business's webhook
//! URL after a send — status callbacks — and when a customer writes — inbound messages.
//!
//! Each accepted send gets a fixed [`plan`] of callbacks, decided when the send is accepted and
//! posted from a task of its own, so the send's answer never waits for them. The plan is pure
//! and deterministic, so a user's test can count on it: DELIVERED then READ; FAILED for a `to`
//! ending in `0000` (131026) or `0047` (131047); a `messageId` ending in `d` gets its first
//! callback twice, one ending in `e` gets READ before DELIVERED (docs/mock-gateway.md lists
//! the rules). One task posts a send's callbacks in plan order, each no earlier than its
//! planned time: a slow or retried callback delays the later ones rather than reorder them.
//!
//! A callback answered with anything but 2xx, or not answered, is retried after 100, 200 and
//! 400 ms, then dropped with a warning that names the `messageId` and the last status, never
//! the URL (it may carry the relay's webhook token) or the message's text. Every post is
//! recorded, in order, for `GET /mock/callbacks`, bounded like `/mock/sends`.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokio::time::Instant;
use url::Url;

use crate::config::ConfigError;
use crate::config::vars::MOCK_CALLBACK_URL;

/// Callbacks remembered for `GET /mock/callbacks`.
pub(crate) const MAX_RECORDED_CALLBACKS: usize = 100_000;
/// The first callback of a send, after the send was accepted.
pub(crate) const FIRST_AFTER: Duration = Duration::from_millis(100);
/// The second callback of a send (READ, or DELIVERED when READ came first).
pub(crate) const SECOND_AFTER: Duration = Duration::from_millis(200);
/// How long after the first callback its duplicate follows.
pub(crate) const DUPLICATE_GAP: Duration = Duration::from_millis(50);
/// The waits before the second, third and fourth attempt of one callback.
pub(crate) const BACKOFF: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_millis(400),
];
/// One attempt's limit: a receiver that takes longer counts as not answering.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// The relay's webhook path, before its token (SPEC "Webhooks in").
pub(crate) const RELAY_WEBHOOK_PATH: &str = "/webhooks/lipachat/";

/// `MOCK_CALLBACK_URL`'s value: an `http://` or `https://` URL with a host. Never quoted back:
/// the relay's own webhook URL carries its token.
pub(crate) fn parse_callback_url(text: &str) -> Result<Url, ConfigError> {
    Url::parse(text.trim())
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https"))
        .filter(|url| url.host_str().is_some_and(|host| !host.is_empty()))
        .ok_or_else(|| ConfigError::InvalidSecret {
            var: MOCK_CALLBACK_URL.name,
            reason: "must be an http:// or https:// URL with a host".to_owned(),
        })
}

/// The relay's own webhook URL on `listen` (`RELAY_WEBHOOK_LISTEN`), via loopback when it
/// listens on every address: where `serve --mock-upstream` points its mock.
pub(crate) fn relay_webhook_url(listen: SocketAddr, token: &str) -> Result<Url, url::ParseError> {
    let host = if listen.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port())
    } else {
        listen
    };
    Url::parse(&format!("http://{host}{RELAY_WEBHOOK_PATH}{token}"))
}

/// A send the mock accepted, as its callbacks describe it.
pub(crate) struct Accepted<'a> {
    pub(crate) message_id: &'a str,
    pub(crate) wa_id: &'a str,
    pub(crate) to: &'a str,
}

/// One callback of a plan: its body, and when to post it after the send was accepted.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Planned {
    pub(crate) after: Duration,
    pub(crate) body: Value,
}

/// The callbacks Lipachat would post for `send`, accepted at `accepted_at`, in posting order.
/// Each body's `timestamp` is its planned time; a duplicate is the same body again.
pub(crate) fn plan(send: &Accepted<'_>, accepted_at: SystemTime) -> Vec<Planned> {
    let status = |status: &str, after: Duration| Planned {
        after,
        body: json!({
            "messageId": send.message_id,
            "waId": send.wa_id,
            "status": status,
            "timestamp": humantime::format_rfc3339_millis(accepted_at + after).to_string(),
        }),
    };
    let mut planned = match failure(send.to) {
        Some(error) => {
            let mut failed = status("FAILED", FIRST_AFTER);
            failed.body["error"] = error;
            vec![failed]
        }
        None if quirk(send.message_id) == Some(Quirk::ReadFirst) => vec![
            status("READ", FIRST_AFTER),
            status("DELIVERED", SECOND_AFTER),
        ],
        None => vec![
            status("DELIVERED", FIRST_AFTER),
            status("READ", SECOND_AFTER),
        ],
    };
    if quirk(send.message_id) == Some(Quirk::Duplicate)
        && let Some(first) = planned.first()
    {
        let again = Planned {
            after: first.after + DUPLICATE_GAP,
            body: first.body.clone(),
        };
        planned.insert(1, again);
    }
    planned
}

/// The provider's quirks, chosen by the `messageId`'s last character (any case).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Quirk {
    /// `…d`: the first callback is posted twice.
    Duplicate,
    /// `…e`: READ is posted before DELIVERED.
    ReadFirst,
}

fn quirk(message_id: &str) -> Option<Quirk> {
    match message_id.chars().last().map(|c| c.to_ascii_lowercase()) {
        Some('d') => Some(Quirk::Duplicate),
        Some('e') => Some(Quirk::ReadFirst),
        _ => None,
    }
}

/// The failure a `to` number stands for: `…0000` undeliverable, `…0047` outside the 24-hour
/// window. The codes, titles and messages are WhatsApp's.
fn failure(to: &str) -> Option<Value> {
    let (code, title, message) = if to.ends_with("0000") {
        (
            131_026,
            "Message undeliverable",
            "Unable to deliver the message: the recipient is not on WhatsApp or cannot \
             receive messages from this business.",
        )
    } else if to.ends_with("0047") {
        (
            131_047,
            "Re-engagement message",
            "Message failed to send because more than 24 hours have passed since the \
             customer last replied to this number.",
        )
    } else {
        return None;
    };
    Some(json!({"code": code, "title": title, "message": message}))
}

/// How a recorded callback stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Its first attempt is under way, or it waits to retry.
    Pending,
    /// A 2xx answered it.
    Delivered,
    /// Every attempt failed.
    Dropped,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Dropped => "dropped",
        }
    }
}

/// One callback as posted.
struct Posted {
    /// Its place in the log, so a retry can find its entry.
    sequence: u64,
    body: Value,
    attempts: usize,
    /// The last answer's status; `None` while none came (unreachable, timed out).
    http_status: Option<u16>,
    outcome: Outcome,
}

/// The callbacks posted so far, the most recent [`MAX_RECORDED_CALLBACKS`].
#[derive(Default)]
struct Log {
    posted: VecDeque<Posted>,
    next_sequence: u64,
}

/// Where the mock posts its callbacks, and what it has posted.
#[derive(Clone)]
pub(crate) struct Callbacks {
    target: Option<Target>,
    log: Arc<Mutex<Log>>,
}

#[derive(Clone)]
struct Target {
    url: Url,
    client: reqwest::Client,
}

impl Callbacks {
    /// No callbacks.
    pub(crate) fn disabled() -> Self {
        Self {
            target: None,
            log: Arc::default(),
        }
    }

    /// Callbacks to `url`; none when it is `None`.
    pub(crate) fn new(url: Option<Url>) -> std::io::Result<Self> {
        let target = match url {
            None => None,
            Some(url) => {
                let client = reqwest::Client::builder()
                    .timeout(ATTEMPT_TIMEOUT)
                    // A redirect is an answer that is not 2xx, as for Lipachat: retried.
                    .redirect(reqwest::redirect::Policy::none())
                    // The receiver is the user's own service, usually on loopback or in the
                    // same compose network: a corporate proxy must not stand in between.
                    .no_proxy()
                    .user_agent(concat!("lipachat-relay-mock/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(std::io::Error::other)?;
                Some(Target { url, client })
            }
        };
        Ok(Self {
            target,
            log: Arc::default(),
        })
    }

    /// Posts `send`'s status callbacks, from a task of its own.
    pub(crate) fn after_send(&self, send: &Accepted<'_>) {
        let Some(target) = self.target.clone() else {
            return;
        };
        let planned = plan(send, SystemTime::now());
        let started = Instant::now();
        let log = Arc::clone(&self.log);
        tokio::spawn(async move {
            for callback in planned {
                tokio::time::sleep_until(started + callback.after).await;
                post(&target, &log, callback.body).await;
            }
        });
    }

    /// Posts one callback (an inbound message), from a task of its own; `false` when no
    /// callback URL is set.
    pub(crate) fn post_now(&self, body: Value) -> bool {
        let Some(target) = self.target.clone() else {
            return false;
        };
        let log = Arc::clone(&self.log);
        tokio::spawn(async move { post(&target, &log, body).await });
        true
    }

    /// `GET /mock/callbacks`: every callback recorded, in the order of its first attempt.
    pub(crate) fn listing(&self) -> Value {
        let list: Vec<Value> = self
            .log
            .lock()
            .map(|log| {
                log.posted
                    .iter()
                    .map(|posted| {
                        json!({"body": posted.body, "attempts": posted.attempts,
                               "httpStatus": posted.http_status,
                               "outcome": posted.outcome.as_str()})
                    })
                    .collect()
            })
            .unwrap_or_default();
        json!({"count": list.len(), "callbacks": list})
    }
}

impl Log {
    fn record(&mut self, body: Value) -> u64 {
        if self.posted.len() == MAX_RECORDED_CALLBACKS {
            self.posted.pop_front();
        }
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.posted.push_back(Posted {
            sequence,
            body,
            attempts: 0,
            http_status: None,
            outcome: Outcome::Pending,
        });
        sequence
    }

    /// Notes an attempt's answer; an entry already pushed out of the log is not noted.
    fn note(&mut self, sequence: u64, http_status: Option<u16>, outcome: Outcome) {
        // Recent entries sit at the back.
        if let Some(posted) = self
            .posted
            .iter_mut()
            .rev()
            .find(|posted| posted.sequence == sequence)
        {
            posted.attempts += 1;
            posted.http_status = http_status;
            posted.outcome = outcome;
        }
    }
}

/// Posts `body` until a 2xx answers it or the attempts run out.
async fn post(target: &Target, log: &Mutex<Log>, body: Value) {
    let text = body.to_string();
    let sequence = log.lock().map(|mut log| log.record(body.clone())).ok();
    // After each attempt, the wait before the next one; none after the last.
    let waits = BACKOFF.iter().copied().map(Some).chain([None]);
    for (attempt, wait) in (1_usize..).zip(waits) {
        let answer = attempt_once(target, &text).await;
        let delivered = matches!(answer, Ok(status) if (200..300).contains(&status));
        let outcome = match (delivered, wait) {
            (true, _) => Outcome::Delivered,
            (false, Some(_)) => Outcome::Pending,
            (false, None) => Outcome::Dropped,
        };
        if let (Some(sequence), Ok(mut log)) = (sequence, log.lock()) {
            log.note(sequence, answer.as_ref().ok().copied(), outcome);
        }
        match (outcome, wait) {
            (Outcome::Pending, Some(wait)) => tokio::time::sleep(wait).await,
            (Outcome::Dropped, _) => {
                let field = |name| body.get(name).and_then(Value::as_str).unwrap_or_default();
                tracing::warn!(
                    message_id = field("messageId"),
                    kind = body.get("status").map_or("inbound", |_| field("status")),
                    attempts = attempt,
                    last = %answer.map_or_else(|error| error, |status| status.to_string()),
                    "mock callback dropped: no 2xx answer"
                );
                return;
            }
            _ => return,
        }
    }
}

/// One POST: the answer's status, or why none came (without the URL: it may carry a token).
async fn attempt_once(target: &Target, text: &str) -> Result<u16, String> {
    target
        .client
        .post(target.url.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(text.to_owned())
        .send()
        .await
        .map(|response| response.status().as_u16())
        .map_err(|error| error.without_url().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send<'a>(message_id: &'a str, to: &'a str) -> Accepted<'a> {
        Accepted {
            message_id,
            wa_id: "wamid.X",
            to,
        }
    }

    fn statuses(planned: &[Planned]) -> Vec<(&str, u128)> {
        planned
            .iter()
            .map(|p| (p.body["status"].as_str().unwrap(), p.after.as_millis()))
            .collect()
    }

    #[test]
    fn an_ordinary_send_is_delivered_then_read() {
        let planned = plan(&send("m-1", "254712345678"), SystemTime::UNIX_EPOCH);
        assert_eq!(statuses(&planned), [("DELIVERED", 100), ("READ", 200)]);
        assert_eq!(
            planned[0].body,
            json!({"messageId": "m-1", "waId": "wamid.X", "status": "DELIVERED",
                   "timestamp": "1970-01-01T00:00:00.100Z"})
        );
        assert_eq!(planned[1].body["timestamp"], "1970-01-01T00:00:00.200Z");
    }

    #[test]
    fn a_to_ending_in_0000_or_0047_fails_with_its_code_only() {
        for (to, code, title) in [
            ("254712340000", 131_026, "Message undeliverable"),
            ("254712340047", 131_047, "Re-engagement message"),
        ] {
            let planned = plan(&send("m-1", to), SystemTime::UNIX_EPOCH);
            assert_eq!(statuses(&planned), [("FAILED", 100)], "{to}");
            let error = &planned[0].body["error"];
            assert_eq!(error["code"], code);
            assert_eq!(error["title"], title);
            assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
    }

    #[test]
    fn a_message_id_ending_in_d_gets_its_first_callback_twice() {
        for id in ["m-d", "m-D"] {
            let planned = plan(&send(id, "254712345678"), SystemTime::UNIX_EPOCH);
            assert_eq!(
                statuses(&planned),
                [("DELIVERED", 100), ("DELIVERED", 150), ("READ", 200)]
            );
            assert_eq!(planned[0].body, planned[1].body, "the same body again");
        }
        let failed = plan(&send("m-d", "254712340000"), SystemTime::UNIX_EPOCH);
        assert_eq!(statuses(&failed), [("FAILED", 100), ("FAILED", 150)]);
    }

    #[test]
    fn a_message_id_ending_in_e_is_read_before_delivered() {
        for id in ["m-e", "m-E"] {
            let planned = plan(&send(id, "254712345678"), SystemTime::UNIX_EPOCH);
            assert_eq!(statuses(&planned), [("READ", 100), ("DELIVERED", 200)]);
        }
        let failed = plan(&send("m-e", "254712340047"), SystemTime::UNIX_EPOCH);
        assert_eq!(statuses(&failed), [("FAILED", 100)]);
    }

    #[test]
    fn a_callback_url_must_be_http_with_a_host_and_is_never_quoted() {
        assert!(parse_callback_url("http://127.0.0.1:8081/hook").is_ok());
        assert!(parse_callback_url(" https://example.com/x ").is_ok());
        for bad in [
            "ftp://x/secret-token",
            "secret-token",
            "mailto:secret-token@x",
            "http://",
            "",
        ] {
            let error = parse_callback_url(bad).unwrap_err().to_string();
            assert!(error.starts_with("MOCK_CALLBACK_URL: must be"), "{error}");
            assert!(!error.contains("secret-token"), "{error}");
        }
    }

    #[test]
    fn the_relays_webhook_url_goes_through_loopback_when_it_listens_on_all() {
        let token = "t".repeat(32);
        for (listen, origin) in [
            ("0.0.0.0:8081", "http://127.0.0.1:8081"),
            ("[::]:8081", "http://127.0.0.1:8081"),
            ("127.0.0.2:9000", "http://127.0.0.2:9000"),
            ("[::1]:9000", "http://[::1]:9000"),
        ] {
            let url = relay_webhook_url(listen.parse().unwrap(), &token).unwrap();
            assert_eq!(
                url.as_str(),
                format!("{origin}/webhooks/lipachat/{token}"),
                "{listen}"
            );
        }
    }

    #[test]
    fn the_log_keeps_the_most_recent_and_notes_attempts_by_sequence() {
        let mut log = Log::default();
        let first = log.record(json!(1));
        let second = log.record(json!(2));
        log.note(second, Some(503), Outcome::Pending);
        log.note(second, Some(200), Outcome::Delivered);
        log.note(first, None, Outcome::Dropped);
        let entry = |i: usize| &log.posted[i];
        assert_eq!((entry(1).attempts, entry(1).http_status), (2, Some(200)));
        assert_eq!(entry(1).outcome, Outcome::Delivered);
        assert_eq!((entry(0).attempts, entry(0).outcome), (1, Outcome::Dropped));
    }
}
