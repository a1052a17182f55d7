//! Request signing ([`Auth::Signed`](crate::Auth::Signed)): for vendors whose
//! every request carries a signature over its method, URL, headers and body
//! (AWS Signature Version 4), computed by the adapter's [`RequestSigner`].
//!
//! The client calls the signer on **every attempt**, after the limiter let
//! the attempt through and just before it is sent: a retry or a long wait in
//! the limiter never sends a signature made minutes earlier (AWS refuses
//! one whose time is more than five minutes off). Only requests to the base
//! URL's origin are signed. When the vendor refuses a signed request (400,
//! 401, 403), the signer is asked once whether fresh credentials may help
//! ([`RequestSigner::refused`]: an assumed role's session that ended early);
//! if it says so, the request is tried once more, otherwise it fails as a
//! refusal. Every secret the signer holds is scrubbed from error details
//! ([`RequestSigner::secret_forms`]).

use std::sync::Arc;

use async_trait::async_trait;
use corral_core::metrics::RequestMetrics;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};

use crate::error::HttpError;

/// One attempt of a request, to be signed.
#[derive(Debug)]
pub struct ToSign<'a> {
    pub method: &'a Method,
    pub url: &'a Url,
    /// The request's own headers (not the client's defaults such as
    /// `User-Agent`, which are sent unsigned).
    pub headers: &'a HeaderMap,
    /// The exact body bytes sent (empty for none; a form is sent encoded as signed).
    pub body: &'a [u8],
    /// This run's counters: calls the signer makes for credentials (an STS
    /// `AssumeRole`) are counted with the requests they serve.
    pub metrics: &'a Arc<RequestMetrics>,
}

/// What a signer adds to one attempt.
#[derive(Clone)]
pub struct Signature {
    /// Headers to add (`Authorization`, `X-Amz-Date`, `X-Amz-Security-Token`):
    /// sent marked sensitive, never logged.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Which credentials signed it (passed back to [`RequestSigner::refused`]).
    pub generation: u64,
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Signature").field("headers", &names).field("generation", &self.generation).finish()
    }
}

/// Signs requests for [`Auth::Signed`](crate::Auth::Signed).
#[async_trait]
pub trait RequestSigner: Send + Sync {
    /// The headers that sign this attempt. An error (credentials that cannot
    /// be had: an STS refusal) fails the request as it is.
    async fn sign(&self, request: ToSign<'_>) -> Result<Signature, HttpError>;

    /// The vendor refused an attempt signed with credentials of `generation`
    /// (`status` 400, 401 or 403; `body` its error answer, at most 64 KiB).
    /// Renew what can be renewed and return whether one more attempt may
    /// succeed. Called at most once per request. The default: no.
    async fn refused(
        &self,
        generation: u64,
        status: u16,
        body: &[u8],
        metrics: &Arc<RequestMetrics>,
    ) -> Result<bool, HttpError> {
        let _ = (generation, status, body, metrics);
        Ok(false)
    }

    /// Every secret the signer holds now, as written (secret keys, session
    /// tokens): scrubbed, in all their encoded forms, from error details.
    fn secret_forms(&self) -> Vec<String>;
}

/// A rule that recognises a "slow down" answer by its body, for vendors that
/// throttle with a status that otherwise means a server error (AWS: 503 with
/// the error code `RequestLimitExceeded`). Called only for answers that are
/// not successes, with at most the 64 KiB of an error body the client reads;
/// when it says yes the answer is handled like a 429 (counted as rate
/// limited, the client's pace slowed, waited out as the headers ask or with
/// backoff).
#[derive(Clone)]
pub struct SlowDownRule(pub Arc<SlowDownFn>);

/// The test of a [`SlowDownRule`]: status, headers, error body.
pub type SlowDownFn = dyn Fn(u16, &HeaderMap, &[u8]) -> bool + Send + Sync;

impl SlowDownRule {
    pub fn new(f: impl Fn(u16, &HeaderMap, &[u8]) -> bool + Send + Sync + 'static) -> Self {
        SlowDownRule(Arc::new(f))
    }

    /// Answers with `status` whose body holds `marker` (a byte search).
    pub fn body_contains(status: u16, marker: &'static str) -> Self {
        SlowDownRule::new(move |s, _, body| {
            s == status && body.windows(marker.len().max(1)).any(|w| w == marker.as_bytes())
        })
    }

    pub(crate) fn matches(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> bool {
        (self.0)(status, headers, body)
    }
}

impl std::fmt::Debug for SlowDownRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlowDownRule")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_in_the_body_of_that_status_only() {
        let rule = SlowDownRule::body_contains(503, "<Code>RequestLimitExceeded</Code>");
        let h = HeaderMap::new();
        let body = b"<Response><Errors><Error><Code>RequestLimitExceeded</Code></Error></Errors></Response>";
        assert!(rule.matches(503, &h, body));
        assert!(!rule.matches(500, &h, body));
        assert!(!rule.matches(503, &h, b"<Code>Unavailable</Code>"));
    }
}
