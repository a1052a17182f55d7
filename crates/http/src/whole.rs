//! Asking again for an answer that ended before its document did.
//!
//! A proxy or a vendor's load balancer sometimes closes an answer early with
//! a clean end of body (no transport error, status 200): the XML or JSON
//! simply stops. The client cannot see that; the adapter's reader can (a
//! missing closing tag). [`until_whole`] is the loop around one request and
//! that check: a cut answer is logged, counted as a retry, and asked for
//! again after the client's backoff, at most so many times, and then the
//! stream fails with a protocol error naming the endpoint.

use std::future::Future;

use corral_core::{FetchContext, FetchError};

use crate::HttpClient;

/// What one answer was found to be.
#[derive(Debug)]
pub enum Answer<T> {
    /// The whole document, read.
    Whole(T),
    /// It ended before its document did: where it came from (redacted) and
    /// what was missing, for the error if every attempt is cut.
    Cut { endpoint: String, detail: String },
}

/// Run `ask` (one request and the check of its answer) until it gives a
/// whole answer, at most `attempts` times (at least once). Between two
/// attempts: a warning naming the connection, stream and endpoint, a retry
/// in the connection's request metrics, and the client's backoff. After the
/// last cut answer, `FetchError::Protocol` with `detail` and the number of
/// attempts. Errors from `ask` itself (transport, status) return at once:
/// the client has already retried what it retries.
pub async fn until_whole<T, F, Fut>(
    client: &HttpClient,
    ctx: &FetchContext,
    attempts: u32,
    mut ask: F,
) -> Result<T, FetchError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Answer<T>, FetchError>>,
{
    let mut attempt = 1;
    loop {
        let (endpoint, detail) = match ask().await? {
            Answer::Whole(t) => return Ok(t),
            Answer::Cut { endpoint, detail } => (endpoint, detail),
        };
        if attempt >= attempts.max(1) {
            return Err(FetchError::Protocol { endpoint, detail: format!("{detail} ({attempt} attempts)") });
        }
        let wait = crate::retry::backoff(&client.shared.retry, attempt);
        tracing::warn!(connection = %ctx.connection, stream = %ctx.stream.name, %endpoint, attempt,
            wait_ms = wait.as_millis() as u64, "the answer ended before its document did; asking again");
        ctx.requests.record_retry(wait);
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use corral_core::{AssetKind, PageSink, StreamInfo};

    use super::*;
    use crate::{HttpConfig, RetryConfig};

    fn setup() -> (HttpClient, FetchContext) {
        let retry = RetryConfig { base_delay: Duration::from_millis(1), ..RetryConfig::default() };
        let ctx = FetchContext::for_test(
            "conn",
            StreamInfo::new("hosts", AssetKind::Device, "id", "hosts"),
            PageSink::channel(1).0,
        );
        let client = HttpClient::new(HttpConfig::new("http://127.0.0.1:9").with_retry(retry), ctx.requests.clone())
            .expect("client");
        (client, ctx)
    }

    fn cut<T>() -> Result<Answer<T>, FetchError> {
        Ok(Answer::Cut { endpoint: "GET /x".into(), detail: "no closing tag".into() })
    }

    #[tokio::test]
    async fn a_cut_answer_is_asked_for_again_until_whole() {
        let (client, ctx) = setup();
        let asked = AtomicU32::new(0);
        let got = until_whole(&client, &ctx, 3, || async {
            if asked.fetch_add(1, Ordering::Relaxed) < 2 { cut() } else { Ok(Answer::Whole(7)) }
        })
        .await;
        assert_eq!(got.ok(), Some(7));
        assert_eq!(asked.load(Ordering::Relaxed), 3);
        assert_eq!(ctx.requests.snapshot().retries, 2, "each cut answer counted as a retry");
    }

    #[tokio::test]
    async fn cut_every_time_fails_the_stream_naming_the_endpoint() {
        let (client, ctx) = setup();
        let asked = AtomicU32::new(0);
        let got: Result<(), _> = until_whole(&client, &ctx, 3, || async {
            asked.fetch_add(1, Ordering::Relaxed);
            cut()
        })
        .await;
        assert_eq!(asked.load(Ordering::Relaxed), 3, "asked exactly `attempts` times");
        match got {
            Err(FetchError::Protocol { endpoint, detail }) => {
                assert_eq!((endpoint.as_str(), detail.as_str()), ("GET /x", "no closing tag (3 attempts)"));
            }
            other => panic!("expected a protocol error, got {other:?}"),
        }
        // An error of the request itself is not asked again.
        let asked = AtomicU32::new(0);
        let got: Result<(), _> = until_whole(&client, &ctx, 3, || async {
            asked.fetch_add(1, Ordering::Relaxed);
            Err(FetchError::Other("refused".into()))
        })
        .await;
        assert!(matches!(got, Err(FetchError::Other(_))));
        assert_eq!(asked.load(Ordering::Relaxed), 1);
    }
}
