//! [`NextLinks`]: following a chain of "next page" links (`Link: rel="next"`,
//! Graph's `@odata.nextLink`) the one safe way.

use std::collections::VecDeque;

use reqwest::Url;

use crate::client::Response;
use crate::error::{HttpError, redact_url};

/// Pages of a walk remembered to detect a link leading back (a loop).
const REMEMBERED: usize = 64;

/// Follows one walk's next links: each link as the vendor sent it (resolved
/// against the page's URL only when relative; never rebuilt), only on the
/// origin the client's credentials belong to, and never back to a page this
/// walk already fetched (among the last 64: memory stays bounded however long
/// the walk).
///
/// ```no_run
/// # async fn demo(client: corral_http::HttpClient) -> Result<(), corral_http::HttpError> {
/// let mut links = corral_http::NextLinks::new(client.base_url(), "the Link rel=\"next\" URL");
/// let mut next = Some("/api/v1/users?limit=200".to_string());
/// while let Some(url) = next {
///     let resp = client.get(&url).send_bytes().await?;
///     next = links.from_link_header(&resp)?;
///     // ... resp.body to the sink ...
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct NextLinks {
    base: Url,
    what: &'static str,
    seen: VecDeque<Url>,
}

impl std::fmt::Debug for NextLinks {
    /// URLs redacted: a vendor's link may carry a secret-looking query value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NextLinks")
            .field("origin", &self.base.origin().ascii_serialization())
            .field("what", &self.what)
            .field("pages_remembered", &self.seen.len())
            .field("last", &self.seen.back().map(redact_url))
            .finish()
    }
}

impl NextLinks {
    /// `base`: the client's base URL (its origin is where links may lead);
    /// `what` names the link in errors (`"@odata.nextLink"`).
    pub fn new(base: &Url, what: &'static str) -> Self {
        NextLinks { base: base.clone(), what, seen: VecDeque::new() }
    }

    /// The URL to request after the page fetched from `current`, given the
    /// link that page carried (`None` or blank: it was the last page).
    pub fn next(&mut self, current: &Url, link: Option<&str>) -> Result<Option<String>, HttpError> {
        self.remember(current);
        let Some(link) = link.map(str::trim).filter(|l| !l.is_empty()) else { return Ok(None) };
        let protocol = |detail: String| HttpError::Protocol { endpoint: redact_url(current), detail };
        let (text, url) = match Url::parse(link) {
            Ok(u) => (link.to_string(), u),
            Err(_) => match current.join(link) {
                Ok(u) => (u.to_string(), u),
                Err(e) => return Err(protocol(format!("{} is not a URL ({e})", self.what))),
            },
        };
        if !matches!(url.scheme(), "http" | "https") || url.origin() != self.base.origin() {
            return Err(protocol(format!(
                "{} {} leaves {}, where the credentials belong; not following it",
                self.what,
                redact_url(&url),
                self.base.origin().ascii_serialization()
            )));
        }
        if self.seen.contains(&url) {
            return Err(protocol(format!(
                "{} {} leads back to a page this walk already fetched: paging would never end (a loop)",
                self.what,
                redact_url(&url)
            )));
        }
        Ok(Some(text))
    }

    /// [`NextLinks::next`] with the `Link: <...>; rel="next"` target of `resp`'s headers.
    pub fn from_link_header(&mut self, resp: &Response) -> Result<Option<String>, HttpError> {
        let link = crate::paginate::next_link(&resp.headers);
        self.next(&resp.url, link.as_deref())
    }

    /// [`NextLinks::next`] with a field of `resp`'s JSON body (`&["@odata.nextLink"]`),
    /// scanned off the runtime.
    pub async fn from_body_field(&mut self, resp: &Response, path: &[&str]) -> Result<Option<String>, HttpError> {
        let link = crate::paginate::extract_json_string_offloaded(resp.body.clone(), path).await;
        self.next(&resp.url, link.as_deref())
    }

    fn remember(&mut self, url: &Url) {
        if !self.seen.contains(url) {
            if self.seen.len() >= REMEMBERED {
                self.seen.pop_front();
            }
            self.seen.push_back(url.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn links_are_taken_as_given_resolved_only_when_relative() {
        let mut l = NextLinks::new(&url("https://graph.microsoft.com"), "@odata.nextLink");
        let cur = url("https://graph.microsoft.com/v1.0/users?$top=999");
        let link = "https://graph.microsoft.com/v1.0/users?$top=999&$skiptoken=RFNwdAIAAQAAAD8%3d";
        assert_eq!(l.next(&cur, Some(link)).ok().flatten().as_deref(), Some(link), "never rebuilt");
        assert_eq!(l.next(&cur, Some("  ")).ok().flatten(), None);
        assert_eq!(l.next(&cur, None).ok().flatten(), None);
        assert_eq!(
            l.next(&cur, Some("/v1.0/users?$skiptoken=x")).ok().flatten().as_deref(),
            Some("https://graph.microsoft.com/v1.0/users?$skiptoken=x")
        );
        let mut okta = NextLinks::new(&url("https://acme.okta.com/"), "the Link rel=\"next\" URL");
        let page = url("https://acme.okta.com/api/v1/users?limit=2");
        assert_eq!(
            okta.next(&page, Some("users?after=u2&limit=2")).ok().flatten().as_deref(),
            Some("https://acme.okta.com/api/v1/users?after=u2&limit=2")
        );
    }

    #[test]
    fn links_off_the_origin_are_refused() {
        let mut l = NextLinks::new(&url("https://acme.okta.com"), "the Link rel=\"next\" URL");
        let cur = url("https://acme.okta.com/api/v1/users");
        for bad in [
            "https://evil.example/api/v1/users?after=x",
            "http://acme.okta.com/api/v1/users?after=x",
            "https://acme.okta.com:8443/api/v1/users",
            "ftp://acme.okta.com/x",
        ] {
            let e = l.next(&cur, Some(bad)).expect_err(bad);
            assert!(
                matches!(&e, HttpError::Protocol { endpoint, .. } if endpoint == "https://acme.okta.com/api/v1/users")
            );
            assert!(e.to_string().contains("leaves https://acme.okta.com"), "{e}");
        }
        let e = l.next(&cur, Some("https://[::1")).expect_err("not a URL");
        assert!(e.to_string().contains("not a URL"), "{e}");
    }

    #[test]
    fn loops_are_detected_not_just_self_links() {
        let mut l = NextLinks::new(&url("https://h"), "@odata.nextLink");
        let (a, b, c) = (url("https://h/p?page=a"), url("https://h/p?page=b"), url("https://h/p?page=c"));
        let e = l.next(&a, Some(a.as_str())).expect_err("self link");
        assert!(e.to_string().contains("never end"), "{e}");
        let mut l = NextLinks::new(&url("https://h"), "@odata.nextLink");
        assert!(l.next(&a, Some(b.as_str())).is_ok());
        assert!(l.next(&b, Some(c.as_str())).is_ok());
        let e = l.next(&c, Some(a.as_str())).expect_err("a -> b -> c -> a");
        assert!(e.to_string().contains("loop"), "{e}");
        // Bounded memory: a page fetched long ago is forgotten.
        let mut l = NextLinks::new(&url("https://h"), "@odata.nextLink");
        for i in 0..(REMEMBERED + 1) {
            let cur = url(&format!("https://h/p?page={i}"));
            let next = format!("https://h/p?page={}", i + 1);
            assert!(l.next(&cur, Some(&next)).is_ok());
        }
        assert!(l.seen.len() <= REMEMBERED);
        let mut l = NextLinks::new(&url("https://h"), "@odata.nextLink");
        let secret = url("https://h/p?access_token=hunter2&page=1");
        assert!(l.next(&secret, None).is_ok());
        assert!(!format!("{l:?}").contains("hunter2"), "{l:?}");
    }
}
