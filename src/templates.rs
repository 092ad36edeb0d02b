//! The template listing's cache (SPEC "Every Lipachat send", `GET /templates`): the gateway's
//! "Listing Message Templates" answer per business number, kept in moka for five minutes.
//!
//! Only a 2xx JSON answer is cached; anything else (a gateway 4xx/5xx, a non-JSON answer, an
//! unreachable or slow gateway) is handed to the caller and forgotten, so the next request
//! asks again. Concurrent misses for one number are coalesced by moka's
//! `or_try_insert_with`: one gateway call, every caller gets its answer (or its error). The
//! cache is bounded by the bytes of the answers it holds, not by a count, since one account's
//! listing can be large.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use moka::future::Cache;
use utoipa::ToSchema;

use crate::outcome::{GatewayReply, UpstreamError};
use crate::phone::PhoneNumber;

/// `GET /templates?from=<number>`: the relay's path.
pub(crate) const PATH: &str = "/templates";
/// Its alias, the gateway's own path (`GET {base}/api/v1/template/{number}`).
pub(crate) const ALIAS_PATH: &str = "/api/v1/template/{number}";

/// How long a listing is kept (SPEC: five minutes).
pub(crate) const LISTING_TTL: Duration = Duration::from_secs(300);
/// The most bytes of listings held at once.
pub(crate) const LISTING_CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// A cached 2xx answer of the gateway.
#[derive(Debug)]
pub(crate) struct Listing {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub body: Bytes,
    /// When the gateway answered; the cache's TTL counts from about then.
    pub fetched_at: Instant,
}

impl Listing {
    /// Whole seconds it stays cached after `now`, rounded up (a listing just fetched says
    /// 300, not 299): the `cache-control: max-age` of an answer. The cache's own clock starts
    /// a moment after `fetched_at`, so the entry outlives what this says.
    pub(crate) fn max_age(&self, now: Instant) -> u64 {
        let left = LISTING_TTL.saturating_sub(now.saturating_duration_since(self.fetched_at));
        left.as_secs() + u64::from(left.subsec_nanos() > 0)
    }
}

/// Why a listing was not cached: handed to the caller (and every coalesced caller), then
/// forgotten.
#[derive(Debug)]
pub(crate) enum NotCached {
    /// The gateway answered, but not 2xx JSON.
    Answer(GatewayReply),
    /// No answer: unreachable, timed out.
    Upstream(UpstreamError),
}

/// A listing and whether this call fetched it (false: from the cache, or coalesced onto
/// another caller's fetch).
pub(crate) type Found = (Arc<Listing>, bool);

/// The listings, by business number.
#[derive(Clone)]
pub(crate) struct ListingCache(Cache<PhoneNumber, Arc<Listing>>);

impl Default for ListingCache {
    fn default() -> Self {
        Self::new(LISTING_TTL, LISTING_CACHE_BYTES)
    }
}

impl ListingCache {
    /// A cache keeping each listing for `ttl`, holding at most `bytes` of them.
    pub(crate) fn new(ttl: Duration, bytes: u64) -> Self {
        Self(
            Cache::builder()
                .time_to_live(ttl)
                .max_capacity(bytes)
                .weigher(|_, listing: &Arc<Listing>| {
                    u32::try_from(listing.body.len()).unwrap_or(u32::MAX)
                })
                .build(),
        )
    }

    /// The cached listing of `number`, without fetching.
    pub(crate) async fn cached(&self, number: &PhoneNumber) -> Option<Arc<Listing>> {
        self.0.get(number).await
    }

    /// The cached listing of `number`, or the one `fetch` brings (cached when it is a 2xx
    /// JSON answer). Concurrent calls for one number share one fetch.
    pub(crate) async fn get_or_fetch<F>(
        &self,
        number: PhoneNumber,
        fetch: F,
    ) -> Result<Found, Arc<NotCached>>
    where
        F: Future<Output = Result<GatewayReply, UpstreamError>>,
    {
        let entry = self
            .0
            .entry(number)
            .or_try_insert_with(async {
                let reply = fetch.await.map_err(NotCached::Upstream)?;
                if !reply.is_success() {
                    return Err(NotCached::Answer(reply));
                }
                Ok(Arc::new(Listing {
                    status: reply.status,
                    content_type: reply.content_type,
                    body: reply.body,
                    fetched_at: Instant::now(),
                }))
            })
            .await?;
        let fresh = entry.is_fresh();
        Ok((entry.into_value(), fresh))
    }
}

// The OpenAPI schemas of the listing, as the page shows it. The relay passes the gateway's
// answer on byte for byte and never parses it, so every field is optional here: the schemas
// describe, they do not promise.
/// The gateway's template listing ("Listing Message Templates"), relayed byte for byte.
#[derive(ToSchema)]
#[allow(
    dead_code,
    reason = "describes the answer for the OpenAPI document only"
)]
pub(crate) struct TemplateListing {
    timestamp: Option<String>,
    data: Option<TemplateListingData>,
    #[schema(example = "success")]
    status: Option<String>,
    message: Option<String>,
    #[schema(value_type = Option<Vec<Object>>)]
    errors: Option<Vec<serde_json::Value>>,
}

/// The listing's `data`: Meta's template objects under `data`.
#[derive(ToSchema)]
#[allow(
    dead_code,
    reason = "describes the answer for the OpenAPI document only"
)]
pub(crate) struct TemplateListingData {
    data: Option<Vec<ListedTemplate>>,
}

/// One template of the business number, as Meta describes it.
#[derive(ToSchema)]
#[allow(
    dead_code,
    reason = "describes the answer for the OpenAPI document only"
)]
pub(crate) struct ListedTemplate {
    /// The name a template send uses (`template.name`).
    #[schema(example = "offer_830")]
    name: Option<String>,
    /// HEADER, BODY, FOOTER and BUTTONS parts; a BODY's `{{1}}`, `{{2}}` are its placeholders.
    #[schema(value_type = Option<Vec<Object>>)]
    components: Option<Vec<serde_json::Value>>,
    /// The language a template send uses (`template.languageCode`).
    #[schema(example = "en")]
    language: Option<String>,
    /// APPROVED templates can be sent.
    #[schema(example = "APPROVED")]
    status: Option<String>,
    #[schema(example = "MARKETING")]
    category: Option<String>,
    id: Option<String>,
    #[serde(rename = "createdAt")]
    created_at: Option<String>,
    rejected_reason: Option<String>,
    #[schema(value_type = Option<Object>)]
    quality_score: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn number() -> PhoneNumber {
        PhoneNumber::parse("254110090747").unwrap()
    }

    fn reply(status: u16, body: &'static str) -> GatewayReply {
        GatewayReply {
            status: StatusCode::from_u16(status).unwrap(),
            content_type: Some(HeaderValue::from_static("application/json")),
            body: Bytes::from_static(body.as_bytes()),
            is_json: serde_json::from_str::<serde_json::Value>(body).is_ok(),
            retry_after: None,
        }
    }

    /// A fetch that counts its calls and answers `answer`.
    async fn counted(
        calls: &AtomicUsize,
        answer: Result<GatewayReply, UpstreamError>,
    ) -> Result<GatewayReply, UpstreamError> {
        calls.fetch_add(1, Ordering::SeqCst);
        answer
    }

    #[tokio::test]
    async fn a_listing_is_fetched_once_then_served_from_the_cache() {
        let cache = ListingCache::default();
        let calls = AtomicUsize::new(0);
        let (first, fresh) = cache
            .get_or_fetch(number(), counted(&calls, Ok(reply(200, r#"{"data":{}}"#))))
            .await
            .unwrap();
        assert!(fresh);
        assert_eq!(first.body, r#"{"data":{}}"#);
        let (again, fresh) = cache
            .get_or_fetch(number(), counted(&calls, Ok(reply(200, "{}"))))
            .await
            .unwrap();
        assert!(!fresh);
        assert_eq!(again.body, r#"{"data":{}}"#);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(cache.cached(&number()).await.is_some());
    }

    #[tokio::test]
    async fn gateway_errors_and_failures_are_not_cached() {
        let cache = ListingCache::default();
        let calls = AtomicUsize::new(0);
        let answers = [
            Ok(reply(401, r#"{"message":"Invalid credentials"}"#)),
            Ok(reply(503, r#"{"status":503}"#)),
            Ok(reply(200, "<html>")),
            Err(UpstreamError::AttemptTimeout),
        ];
        for answer in answers {
            let result = cache.get_or_fetch(number(), counted(&calls, answer)).await;
            assert!(result.is_err());
            assert!(cache.cached(&number()).await.is_none());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        let (_, fresh) = cache
            .get_or_fetch(number(), counted(&calls, Ok(reply(200, "{}"))))
            .await
            .unwrap();
        assert!(fresh, "the first success is fetched and cached");
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_fetch() {
        let cache = ListingCache::default();
        let calls = AtomicUsize::new(0);
        let fetches = (0..8).map(|_| {
            cache.get_or_fetch(number(), async {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(reply(200, "{}"))
            })
        });
        let results = futures::future::join_all(fetches).await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn numbers_are_cached_apart() {
        let cache = ListingCache::default();
        let calls = AtomicUsize::new(0);
        let other = PhoneNumber::parse("254700000001").unwrap();
        for key in [number(), other.clone(), number(), other] {
            cache
                .get_or_fetch(key, counted(&calls, Ok(reply(200, "{}"))))
                .await
                .unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn the_alias_is_the_gateways_own_path() {
        assert_eq!(
            ALIAS_PATH,
            format!("{}/{{number}}", crate::upstream::GATEWAY_TEMPLATES_PATH)
        );
    }

    #[test]
    fn max_age_is_the_seconds_left_rounded_up() {
        let fetched_at = Instant::now();
        let listing = Listing {
            status: StatusCode::OK,
            content_type: None,
            body: Bytes::new(),
            fetched_at,
        };
        assert_eq!(listing.max_age(fetched_at), 300);
        assert_eq!(listing.max_age(fetched_at + Duration::from_millis(1)), 300);
        assert_eq!(listing.max_age(fetched_at + Duration::from_secs(120)), 180);
        assert_eq!(
            listing.max_age(fetched_at + Duration::from_millis(120_500)),
            180
        );
        assert_eq!(listing.max_age(fetched_at + Duration::from_secs(300)), 0);
        assert_eq!(listing.max_age(fetched_at + Duration::from_secs(301)), 0);
    }

    #[tokio::test]
    async fn a_listing_expires_after_its_time_to_live() {
        let cache = ListingCache::new(Duration::from_millis(50), LISTING_CACHE_BYTES);
        let calls = AtomicUsize::new(0);
        for _ in 0..2 {
            cache
                .get_or_fetch(number(), counted(&calls, Ok(reply(200, "{}"))))
                .await
                .unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(80)).await;
        let (_, fresh) = cache
            .get_or_fetch(number(), counted(&calls, Ok(reply(200, "{}"))))
            .await
            .unwrap();
        assert!(fresh);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
