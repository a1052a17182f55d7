//! corral-http: the vendor HTTP toolkit every adapter uses.
//!
//! One [`HttpClient`] per connection (persistent, pooled, rustls, gzip) with:
//! - **auth** ([`Auth`]): bearer, whole-header (Okta `SSWS`, SentinelOne
//!   `ApiToken`, Tenable `X-ApiKeys`), Basic, and OAuth2 client credentials
//!   with a shared single-flight token cache refreshed before expiry and once
//!   on a 401, and requests signed on every attempt by an adapter's
//!   [`RequestSigner`] (AWS SigV4);
//! - **rate limiting** ([`RateConfig`]): a governor quota, a cap on requests
//!   in flight, and pacing learned from `X-RateLimit-*` / `X-Rate-Limit-*`
//!   headers so the client slows down before the vendor answers 429;
//! - **retries** ([`RetryConfig`]): transient failures backed off with full
//!   jitter, 429 (and Qualys' 409) waited out as the vendor asks
//!   ([`parse_retry_after`]), 400/401/403/404 never retried;
//! - **raw bodies**: [`Response::body`] is the whole body as [`bytes::Bytes`],
//!   read with a size guard; decoding happens in the adapter's `normalize`;
//! - **metrics**: every answer, transport error, retry and limiter wait is
//!   counted in the connection's [`corral_core::metrics::RequestMetrics`];
//! - **pagination** ([`NextLinks`] to follow next links safely, [`next_link`], [`OffsetPager`], [`PagePager`],
//!   [`extract_json_string_offloaded`]) and multi-step drivers ([`in_batches`],
//!   [`run_export`]);
//! - **offloading** ([`off_runtime`]): every decode or scan of a body in a
//!   fetch path runs on the blocking pool, whatever its size.
//!
//! ```no_run
//! use std::sync::Arc;
//! use corral_http::{Auth, HttpClient, HttpConfig, NextLinks, OAuth2Config, RateConfig};
//! # async fn demo(ctx: corral_core::FetchContext, secret: secrecy::SecretString) -> Result<(), corral_core::FetchError> {
//! // At build time (config validated, nothing sent):
//! let client = HttpClient::new(
//!     HttpConfig::new("https://graph.microsoft.com")
//!         .with_auth(Auth::OAuth2ClientCredentials(
//!             OAuth2Config::new("https://login.microsoftonline.com/TENANT/oauth2/v2.0/token", "client-id", secret)
//!                 .scope("https://graph.microsoft.com/.default"),
//!         ))
//!         .with_rate(RateConfig::every(2000, std::time::Duration::from_secs(20)).with_max_in_flight(8)),
//!     Arc::default(),
//! )?;
//! // In fetch: same pool, limiter and token, this run's counters.
//! let client = client.with_metrics(ctx.requests.clone());
//! let mut links = NextLinks::new(client.base_url(), "@odata.nextLink");
//! let mut next = Some("/v1.0/users?$top=999".to_string());
//! while let Some(url) = next {
//!     let resp = client.get(&url).send_bytes().await?;
//!     // Scanned off the runtime (Graph pages are megabytes); same origin, no loops.
//!     next = links.from_body_field(&resp, &["@odata.nextLink"]).await?;
//!     let locator = resp.endpoint();
//!     ctx.sink.send(corral_core::RawPage::new("users", resp.body, locator)).await?;
//! }
//! # Ok(()) }
//! ```

mod auth;
mod batch;
pub mod cassette;
mod client;
mod config;
mod cursor;
mod error;
mod follow;
mod oauth;
mod offload;
mod paginate;
mod ratelimit;
pub mod record;
mod retry;
mod send;
mod sign;
mod sliding;
mod whole;

pub use auth::{Auth, OAuth2Config, TokenCall};
pub use batch::{ChunkBody, ExportJob, ExportOptions, ExportReport, ExportState, ExportStatus, in_batches, run_export};
pub use client::{CHECK_TIMEOUT, HttpClient, RequestBuilder, Response};
pub use config::{HttpConfig, RateConfig, RetryConfig, Timeouts};
pub use cursor::{BodyCursor, CursorPage, UNREADABLE_PAGE_ATTEMPTS};
pub use error::{HttpError, TransportKind, check_outcome, redact_url};
pub use follow::NextLinks;
pub use offload::{off_runtime, offloaded_on_this_thread};
pub use paginate::{
    Link, OffsetPager, PagePager, extract_json_string, extract_json_string_offloaded, link_with_rel, next_link,
    parse_link_header, total_count,
};
pub use ratelimit::VendorRate;
pub use retry::{Class, MAX_PLAUSIBLE_WAIT, MAX_WAIT, backoff, classify, parse_retry_after, wait_from_headers};
pub use sign::{RequestSigner, Signature, SlowDownRule, ToSign};
pub use whole::{Answer, until_whole};

/// Re-exports adapters need without naming reqwest, governor or secrecy versions.
pub use governor::Quota;
pub use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
pub use reqwest::{Method, StatusCode, Url};
pub use secrecy::{ExposeSecret, SecretString};
