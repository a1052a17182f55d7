//! [`BodyCursor`]: paging by a cursor the vendor writes into the page's JSON
//! body (Graph's `@odata.nextLink`, SentinelOne's `pagination.nextCursor`),
//! with the last-page check built in.
//!
//! A cursor in the body has a trap that a `Link` header does not: a page that
//! arrives cut short (a proxy, a dropped connection the server closed
//! cleanly) has no cursor either, and would end the walk silently, with
//! everything after it missing and the run reported clean. So a page without
//! a cursor is believed to be the last only when its body is one complete
//! JSON document; otherwise it is fetched again, a few times, and then handed
//! back as [`CursorPage::Unreadable`] for the adapter to pass on (the engine
//! counts it as a malformed page: the stream is not clean and its stale
//! handling is skipped) and to fail the stream. Scanning and checking bodies
//! happen off the async runtime.

use crate::client::{HttpClient, Response};
use crate::config::RetryConfig;
use crate::error::{HttpError, redact_url};
use crate::follow::NextLinks;
use reqwest::Url;

/// How many times a page without a cursor that is not well-formed JSON is
/// fetched before it is given up on.
pub const UNREADABLE_PAGE_ATTEMPTS: u32 = 3;

/// What the cursor in the body is.
#[derive(Debug, Clone)]
enum Style {
    /// The next page's URL (followed as sent, on the client's origin only).
    NextUrl,
    /// An opaque token sent back as this query parameter on the same request.
    Param(String),
}

/// One walk over a paged listing whose cursor is in the body. See the module docs.
///
/// ```no_run
/// # async fn demo(client: corral_http::HttpClient) -> Result<(), corral_http::HttpError> {
/// use corral_http::{BodyCursor, CursorPage};
/// // SentinelOne: {"data": [...], "pagination": {"nextCursor": "..."}} -> ?cursor=...
/// let mut pages = BodyCursor::param(client.base_url(), &["pagination", "nextCursor"], "cursor");
/// let mut url = Some("/web/api/v2.1/agents?limit=1000".to_string());
/// while let Some(u) = url.take() {
///     match pages.get(&client, &u).await? {
///         CursorPage::Page { resp, next } => {
///             // ... resp.body to the sink ...
///             url = next;
///         }
///         CursorPage::Unreadable { resp, attempts } => {
///             // ... pass resp.body on (counted as a malformed page), then fail the stream ...
///             let _ = (resp, attempts);
///         }
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct BodyCursor {
    path: Vec<String>,
    style: Style,
    links: NextLinks,
    attempts: u32,
    retry: RetryConfig,
}

/// One page of a [`BodyCursor`] walk.
#[derive(Debug)]
pub enum CursorPage {
    /// A page, and the URL of the next one; `None`: this was the last page
    /// (well-formed, and no cursor in it).
    Page { resp: Response, next: Option<String> },
    /// No cursor, and not well-formed JSON, however often it was fetched.
    Unreadable { resp: Response, attempts: u32 },
}

impl BodyCursor {
    /// The body holds the next page's whole URL at `path` (`&["@odata.nextLink"]`).
    /// It is followed as sent (resolved only when relative), only on the
    /// origin of `base` (the client's base URL), and never back to a page of
    /// this walk.
    pub fn next_url(base: &Url, path: &[&str]) -> Self {
        Self::new(base, path, Style::NextUrl, "the next-page link in the body")
    }

    /// The body holds an opaque token at `path` (`&["pagination", "nextCursor"]`)
    /// that the next request sends as query parameter `param` on the same
    /// URL (replacing the previous one). A token that leads back to a page
    /// of this walk is an error (paging would never end).
    pub fn param(base: &Url, path: &[&str], param: &str) -> Self {
        Self::new(base, path, Style::Param(param.to_string()), "the cursor in the body")
    }

    fn new(base: &Url, path: &[&str], style: Style, what: &'static str) -> Self {
        BodyCursor {
            path: path.iter().map(|s| s.to_string()).collect(),
            style,
            links: NextLinks::new(base, what),
            attempts: UNREADABLE_PAGE_ATTEMPTS,
            retry: RetryConfig::default(),
        }
    }

    /// How many times a page without a cursor that is not well-formed is fetched (at least 1).
    pub fn unreadable_attempts(mut self, n: u32) -> Self {
        self.attempts = n.max(1);
        self
    }

    /// The waits between those fetches (`backoff` of this config).
    pub fn with_retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    /// GET `url` (a path under the client's base URL, or an absolute URL on
    /// its origin) and find the next page. Transport errors, 5xx and 429 are
    /// retried by the client as usual; what this adds is the last-page check.
    pub async fn get(&mut self, client: &HttpClient, url: &str) -> Result<CursorPage, HttpError> {
        let mut attempt = 1;
        loop {
            let resp = client.get(url).send_bytes().await?;
            let path: Vec<&str> = self.path.iter().map(String::as_str).collect();
            let found = crate::paginate::extract_json_string_offloaded(resp.body.clone(), &path).await;
            let found = found.filter(|t| !t.trim().is_empty());
            if let Some(token) = found {
                let link = match &self.style {
                    Style::NextUrl => token,
                    Style::Param(name) => with_param(&resp.url, name, &token),
                };
                if let Some(next) = self.links.next(&resp.url, Some(&link))? {
                    return Ok(CursorPage::Page { resp, next: Some(next) });
                }
            }
            if well_formed(resp.body.clone()).await {
                self.links.next(&resp.url, None)?;
                return Ok(CursorPage::Page { resp, next: None });
            }
            if attempt >= self.attempts {
                return Ok(CursorPage::Unreadable { resp, attempts: attempt });
            }
            let wait = crate::retry::backoff(&self.retry, attempt);
            let endpoint = redact_url(&resp.url);
            let asker = client.asker(&endpoint);
            tracing::warn!(
                connection = %asker.connection, stream = %asker.stream, endpoint = %asker.endpoint, attempt,
                wait_ms = wait.as_millis() as u64,
                "page is not valid JSON and names no next page; fetching it again"
            );
            client.metrics().record_retry(wait);
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

/// `url` with query parameter `name` set to `value` (any previous value replaced).
fn with_param(url: &Url, name: &str, value: &str) -> String {
    let mut next = url.clone();
    let keep: Vec<(String, String)> =
        url.query_pairs().filter(|(k, _)| k != name).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    next.query_pairs_mut().clear().extend_pairs(keep).append_pair(name, value);
    next.to_string()
}

/// Whether `body` is one complete JSON document (checked without building
/// it, off the runtime whatever its size).
async fn well_formed(body: bytes::Bytes) -> bool {
    crate::off_runtime(move || serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok()).await.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[tokio::test]
    async fn well_formed_checks_whole_documents_also_off_the_runtime() {
        assert!(well_formed(Bytes::from_static(br#"{"value":[]}"#)).await);
        assert!(!well_formed(Bytes::from_static(b"<html></html>")).await);
        assert!(!well_formed(Bytes::from_static(b"{\"value\":[]}\n{\"meta\":")).await);
        let before = crate::offloaded_on_this_thread();
        assert!(well_formed(Bytes::from_static(b"[]")).await);
        assert_eq!(crate::offloaded_on_this_thread(), before + 1, "even two bytes are checked off the runtime");
        let big = format!("{{\"value\":[{}]}}", vec!["{\"id\":\"x\"}"; 40_000].join(","));
        assert!(well_formed(Bytes::from(big.clone())).await);
        assert!(!well_formed(Bytes::from(big[..big.len() - 1].to_string())).await);
    }

    #[test]
    fn the_token_replaces_the_previous_one_and_keeps_the_rest() {
        let u = Url::parse("https://h/web/api/v2.1/agents?limit=1000&cursor=old").expect("url");
        assert_eq!(with_param(&u, "cursor", "a b+c"), "https://h/web/api/v2.1/agents?limit=1000&cursor=a+b%2Bc");
    }
}
