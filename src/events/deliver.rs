//! One delivery attempt of an event, and the wait before the next (SPEC "Events out").
//!
//! An attempt POSTs the event's body to `RELAY_EVENTS_URL`, signed as Standard Webhooks says
//! ([`super::sign`]) with the attempt's own `webhook-timestamp`. A 2xx delivers it; 410 is the
//! receiver saying "stop", so the event is dead; anything else — another status, a 3xx (not
//! followed: the specification asks senders to have the URL updated instead), a timeout, a
//! refused or dropped connection — fails, and the worker tries again after [`backoff`]: from
//! about 1 s, doubling, at most an hour apart, never sooner than a `Retry-After` asks.
//!
//! The decision a reader must know: a failure's reason is one of a few fixed phrases
//! (`status 503`, `timeout`, `connection refused`…), never the receiver's body and never
//! reqwest's message, which quotes the URL — and a receiver's URL may carry a token.

use std::error::Error as _;
use std::io::ErrorKind;
use std::time::{Duration, SystemTime};

use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, StatusCode};
use url::Url;

use super::Event;
use super::sign::sign;
use crate::clock::now_secs;
use crate::config::{EventsConfig, SigningSecret};
use crate::headers::{HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE, HEADER_WEBHOOK_TIMESTAMP};
use crate::upstream::retry::parse_retry_after;

/// One attempt, from the request to the answer's status line.
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Setting up a connection (TCP and TLS) within an attempt.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The wait after the first failure; it doubles with each further one.
pub(crate) const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two attempts, `Retry-After` included (SPEC: an hour).
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(60 * 60);
/// Jitter takes up to this share off a wait (and never adds to it), so events that failed
/// together spread out, the first retry still comes after about a second, and no wait passes
/// [`BACKOFF_MAX`].
const BACKOFF_JITTER: f64 = 0.25;

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// The receiver answered 2xx: the event is delivered.
    Delivered,
    /// The receiver answered 410 Gone: it wants no more, the event is dead.
    Gone,
    /// Anything else: try again after [`backoff`].
    Failed {
        /// The receiver's `Retry-After` (seconds or an HTTP date), if it sent one.
        retry_after: Option<Duration>,
        /// A short phrase, safe to log: `status 503`, `timeout`, `connection refused`…
        reason: String,
    },
}

/// The events client could not be built (TLS set-up); reported at start-up.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the events client: {0}")]
pub(crate) struct DelivererBuildError(String);

/// Makes delivery attempts to `RELAY_EVENTS_URL`: its own keep-alive client (rustls, a
/// `lipachat-relay/<version>` user agent, no redirects), the URL and the signing secret.
pub(crate) struct Deliverer {
    client: reqwest::Client,
    url: Url,
    secret: SigningSecret,
}

impl Deliverer {
    /// A deliverer for `config`'s URL and secret, [`ATTEMPT_TIMEOUT`] per attempt.
    pub(crate) fn new(config: &EventsConfig) -> Result<Self, DelivererBuildError> {
        Self::with_timeout(config, ATTEMPT_TIMEOUT)
    }

    fn with_timeout(config: &EventsConfig, timeout: Duration) -> Result<Self, DelivererBuildError> {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(timeout)
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("lipachat-relay/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| DelivererBuildError(e.to_string()))?;
        Ok(Self {
            client,
            url: config.url.clone(),
            secret: config.secret.clone(),
        })
    }

    /// POSTs `event` once, signed with this moment's timestamp, and says how it went.
    pub(crate) async fn attempt(&self, event: &Event) -> Attempt {
        let timestamp = now_secs();
        let signature = sign(&self.secret, &event.id, timestamp, &event.body);
        let sent = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(HEADER_WEBHOOK_ID, event.id.as_str())
            .header(HEADER_WEBHOOK_TIMESTAMP, timestamp)
            .header(HEADER_WEBHOOK_SIGNATURE, signature)
            .body(event.body.clone())
            .send()
            .await;
        match sent {
            // The answer's body is not read: nothing in it changes the outcome.
            Ok(response) => judge(
                response.status(),
                response.headers().get(RETRY_AFTER),
                SystemTime::now(),
            ),
            Err(error) => Attempt::Failed {
                retry_after: None,
                reason: describe(&error),
            },
        }
    }
}

/// The wait before the next attempt of an event that has failed `failures` times (1 after
/// the first failure): [`BACKOFF_FIRST`] doubling, minus up to a quarter of jitter, at least
/// the receiver's `Retry-After`, never more than [`BACKOFF_MAX`].
pub(crate) fn backoff(failures: u32, retry_after: Option<Duration>) -> Duration {
    backoff_with(failures, retry_after, fastrand::f64())
}

/// [`backoff`] with the jitter's random draw (`unit`, in [0, 1)) given.
fn backoff_with(failures: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
    // 2^12 s is past the hour: higher exponents only risk overflow.
    let exponent = failures.saturating_sub(1).min(12);
    let ceiling = BACKOFF_FIRST.saturating_mul(1 << exponent).min(BACKOFF_MAX);
    let jittered = ceiling.mul_f64(1.0 - BACKOFF_JITTER * unit.clamp(0.0, 1.0));
    jittered
        .max(retry_after.unwrap_or(Duration::ZERO))
        .min(BACKOFF_MAX)
}

/// The outcome an answer's status (and `Retry-After`) means.
fn judge(status: StatusCode, retry_after: Option<&HeaderValue>, now: SystemTime) -> Attempt {
    if status.is_success() {
        Attempt::Delivered
    } else if status == StatusCode::GONE {
        Attempt::Gone
    } else {
        Attempt::Failed {
            retry_after: retry_after.and_then(|value| parse_retry_after(value, now)),
            reason: format!("status {}", status.as_u16()),
        }
    }
}

/// A fixed phrase for a request that got no answer: the kind of failure, never reqwest's
/// text (it quotes the URL).
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timeout".to_owned();
    }
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            match io.kind() {
                ErrorKind::ConnectionRefused => return "connection refused".to_owned(),
                ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe => {
                    return "connection reset".to_owned();
                }
                ErrorKind::TimedOut => return "timeout".to_owned(),
                _ => {}
            }
        }
        if cause
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_incomplete_message)
        {
            return "connection closed before an answer".to_owned();
        }
        source = cause.source();
    }
    if error.is_connect() {
        "connect error".to_owned()
    } else {
        "request error".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::Router;
    use axum::http::{HeaderMap, HeaderName};
    use axum::response::IntoResponse;
    use bytes::Bytes;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    use super::*;
    use crate::events::EventType;
    use crate::events::sign::verify;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const BODY: &[u8] =
        br#"{"type":"message.status","timestamp":"2026-01-01T00:00:00Z","data":{}}"#;

    fn event() -> Event {
        Event {
            id: format!("msg_{:032x}", fastrand::u128(..)),
            kind: EventType::MessageStatus,
            created_ms: 0,
            body: Bytes::from_static(BODY),
        }
    }

    fn config(url: &str) -> EventsConfig {
        EventsConfig {
            url: Url::parse(url).unwrap(),
            secret: SigningSecret::parse(SECRET).unwrap(),
            max_age: Duration::from_secs(60),
            max_pending: 10,
        }
    }

    /// What the receiver saw of one request.
    struct Received {
        headers: HeaderMap,
        body: Bytes,
    }

    /// A receiver on 127.0.0.1 that answers every request with `status`, `headers` and a
    /// body, after `delay`, and reports each request it gets.
    async fn receiver(
        status: u16,
        headers: &[(&'static str, &'static str)],
        delay: Duration,
    ) -> (String, mpsc::UnboundedReceiver<Received>) {
        let (report, received) = mpsc::unbounded_channel();
        let status = StatusCode::from_u16(status).unwrap();
        let answer_headers: Vec<(HeaderName, HeaderValue)> = headers
            .iter()
            .map(|(name, value)| {
                (
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                )
            })
            .collect();
        let router = Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let report = report.clone();
            let answer_headers = answer_headers.clone();
            async move {
                report.send(Received { headers, body }).unwrap();
                tokio::time::sleep(delay).await;
                let mut response =
                    (status, "the receiver's own words, never to be logged").into_response();
                response.headers_mut().extend(answer_headers);
                response
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        (format!("http://{address}/events?token=t0ken"), received)
    }

    async fn attempt_against(status: u16, headers: &[(&'static str, &'static str)]) -> Attempt {
        let (url, mut received) = receiver(status, headers, Duration::ZERO).await;
        let deliverer = Deliverer::new(&config(&url)).unwrap();
        let attempt = deliverer.attempt(&event()).await;
        assert!(received.recv().await.is_some(), "the receiver got nothing");
        attempt
    }

    fn header<'a>(received: &'a Received, name: &str) -> &'a str {
        received
            .headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }

    #[tokio::test]
    async fn a_2xx_delivers_a_signed_post_of_the_exact_body() {
        let (url, mut received) = receiver(204, &[], Duration::ZERO).await;
        let deliverer = Deliverer::new(&config(&url)).unwrap();
        let event = event();
        assert_eq!(deliverer.attempt(&event).await, Attempt::Delivered);

        let request = received.recv().await.unwrap();
        assert_eq!(request.body, BODY);
        assert_eq!(header(&request, "content-type"), "application/json");
        assert_eq!(header(&request, "webhook-id"), event.id);
        assert!(header(&request, "user-agent").starts_with("lipachat-relay/"));
        let timestamp = header(&request, "webhook-timestamp");
        let sent_at: u64 = timestamp.parse().unwrap();
        assert!(now_secs().abs_diff(sent_at) <= 2, "timestamp {timestamp}");
        let secret = SigningSecret::parse(SECRET).unwrap();
        let signature = header(&request, "webhook-signature");
        assert_eq!(
            verify(
                &secret,
                &event.id,
                timestamp,
                signature,
                &request.body,
                now_secs()
            ),
            Ok(())
        );
    }

    #[tokio::test]
    async fn any_2xx_is_delivered() {
        for status in [200, 202, 299] {
            assert_eq!(attempt_against(status, &[]).await, Attempt::Delivered);
        }
    }

    #[tokio::test]
    async fn a_410_is_gone() {
        assert_eq!(attempt_against(410, &[]).await, Attempt::Gone);
    }

    #[tokio::test]
    async fn a_503_fails_with_its_retry_after_in_seconds() {
        let attempt = attempt_against(503, &[("retry-after", "7")]).await;
        assert_eq!(
            attempt,
            Attempt::Failed {
                retry_after: Some(Duration::from_secs(7)),
                reason: "status 503".into()
            }
        );
    }

    #[tokio::test]
    async fn a_retry_after_date_is_the_time_until_it() {
        // An HTTP date is whole seconds: a minute ahead leaves 58 to 60 seconds.
        let at = SystemTime::now() + Duration::from_secs(60);
        let date: &'static str = Box::leak(httpdate::fmt_http_date(at).into_boxed_str());
        let Attempt::Failed { retry_after, .. } =
            attempt_against(429, &[("retry-after", date)]).await
        else {
            panic!("a 429 must fail");
        };
        let retry_after = retry_after.expect("the date was not read");
        assert!(
            (Duration::from_secs(58)..=Duration::from_secs(60)).contains(&retry_after),
            "{retry_after:?}"
        );
    }

    #[tokio::test]
    async fn other_statuses_fail_without_the_receivers_body() {
        for status in [400, 404, 500] {
            assert_eq!(
                attempt_against(status, &[]).await,
                Attempt::Failed {
                    retry_after: None,
                    reason: format!("status {status}")
                }
            );
        }
    }

    #[tokio::test]
    async fn a_redirect_is_a_failure_and_not_followed() {
        let (target, mut followed) = receiver(200, &[], Duration::ZERO).await;
        let location: &'static str = Box::leak(target.into_boxed_str());
        let attempt = attempt_against(302, &[("location", location)]).await;
        assert_eq!(
            attempt,
            Attempt::Failed {
                retry_after: None,
                reason: "status 302".into()
            }
        );
        assert!(followed.try_recv().is_err(), "the redirect was followed");
    }

    #[tokio::test]
    async fn a_closed_port_is_connection_refused() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{port}/events?token=t0ken");
        let deliverer = Deliverer::new(&config(&url)).unwrap();
        let attempt = deliverer.attempt(&event()).await;
        assert_eq!(
            attempt,
            Attempt::Failed {
                retry_after: None,
                reason: "connection refused".into()
            }
        );
    }

    #[tokio::test]
    async fn a_slow_receiver_times_out() {
        let (url, _received) = receiver(200, &[], Duration::from_secs(5)).await;
        let deliverer = Deliverer::with_timeout(&config(&url), Duration::from_millis(200)).unwrap();
        let started = Instant::now();
        let attempt = deliverer.attempt(&event()).await;
        assert_eq!(
            attempt,
            Attempt::Failed {
                retry_after: None,
                reason: "timeout".into()
            }
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn the_first_wait_is_about_a_second() {
        assert_eq!(backoff_with(1, None, 0.0), Duration::from_secs(1));
        assert_eq!(backoff_with(1, None, 1.0), Duration::from_millis(750));
        // No failure counted yet reads as the first.
        assert_eq!(backoff_with(0, None, 0.0), Duration::from_secs(1));
    }

    #[test]
    fn the_wait_doubles_with_each_failure() {
        let waits: Vec<u64> = (1..=6)
            .map(|failures| backoff_with(failures, None, 0.0).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32]);
    }

    #[test]
    fn the_wait_never_passes_an_hour() {
        // 2^12 s is the first doubling past the hour: the 13th failure.
        for failures in [13, 14, 20, 64, u32::MAX] {
            for unit in [0.0, 0.5, 0.999] {
                let wait = backoff_with(failures, None, unit);
                assert!(wait <= BACKOFF_MAX, "{failures}: {wait:?}");
                assert!(wait >= BACKOFF_MAX.mul_f64(0.75), "{failures}: {wait:?}");
            }
        }
        assert_eq!(backoff_with(13, None, 0.0), BACKOFF_MAX);
    }

    #[test]
    fn jitter_spreads_the_waits_within_a_quarter() {
        let waits: Vec<Duration> = (0..200).map(|_| backoff(3, None)).collect();
        assert!(
            waits
                .iter()
                .all(|w| (Duration::from_secs(3)..=Duration::from_secs(4)).contains(w)),
            "{waits:?}"
        );
        let distinct: std::collections::BTreeSet<Duration> = waits.into_iter().collect();
        assert!(distinct.len() > 100, "little jitter: {}", distinct.len());
    }

    #[test]
    fn retry_after_is_waited_at_least() {
        let asked = Some(Duration::from_secs(120));
        assert_eq!(backoff_with(1, asked, 0.0), Duration::from_secs(120));
        // A shorter Retry-After than the back-off changes nothing.
        assert_eq!(
            backoff_with(10, Some(Duration::from_secs(1)), 0.0),
            Duration::from_secs(512)
        );
    }

    #[test]
    fn retry_after_is_still_capped_at_an_hour() {
        for asked in [
            Duration::from_secs(2 * 60 * 60),
            Duration::from_secs(u64::MAX),
            Duration::MAX,
        ] {
            assert_eq!(backoff_with(1, Some(asked), 0.5), BACKOFF_MAX);
        }
    }
}
