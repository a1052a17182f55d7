//! Listing a stream: every scope (account × region), `DescribeInstances`
//! answers one page each, `NextToken` followed to the end.

use std::sync::Arc;

use corral_core::{FetchContext, FetchError, RawPage};
use corral_http::{Answer, HttpClient};
use memchr::memmem;
use tokio::sync::Semaphore;

use crate::config::{AccountAccess, Settings};

/// How many times, in all, an answer that ended before its document did is
/// asked for (`corral_http::until_whole`: with the client's backoff between).
pub const CUT_ANSWER_ATTEMPTS: u32 = 3;
pub const EC2_VERSION: &str = "2016-11-15";

/// One account in one region: its own client (its own limiter, as EC2's
/// token bucket is per account and region).
#[derive(Debug)]
pub struct Scope {
    pub account: AccountAccess,
    /// Which account of the config (index into `Settings::accounts`).
    pub account_index: usize,
    pub region: String,
    pub client: HttpClient,
}

impl Scope {
    pub fn label(&self) -> String {
        format!("{} in {}", self.account.label(), self.region)
    }
}

/// What fetch reads of an answer (off the runtime): whether it is whole,
/// its `nextToken`, how many instances it holds.
#[derive(Debug, PartialEq, Eq)]
pub struct Scan {
    pub complete: bool,
    pub next_token: Option<String>,
    pub instances: usize,
}

/// A byte scan of an answer. The top-level `nextToken` follows
/// `</reservationSet>`; element text cannot hold a `<` (XML escapes it), so
/// the markers are found only as elements.
pub fn scan(body: &[u8]) -> Scan {
    let end = body.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(0, |i| i + 1);
    let complete = body[..end].ends_with(b"</DescribeInstancesResponse>");
    let after_set = memmem::rfind(body, b"</reservationSet>").map_or(0, |i| i);
    let next_token = memmem::rfind(body, b"<nextToken>").filter(|at| *at >= after_set).and_then(|at| {
        let from = at + b"<nextToken>".len();
        let len = memmem::find(&body[from..], b"</nextToken>")?;
        let raw = std::str::from_utf8(&body[from..from + len]).ok()?;
        let t = raw.replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"");
        Some(t.trim().to_string()).filter(|t| !t.is_empty())
    });
    Scan { complete, next_token, instances: memmem::find_iter(body, b"<instanceId>").count() }
}

/// Fetch one stream across every scope. Scopes of an account are read
/// after its first region answered (so refused credentials are refused
/// once, not once per region); `concurrency` scopes at once. A scope that
/// fails is named in [`FetchContext::incomplete`] and the others go on;
/// when every scope failed, the stream fails with the first error.
pub async fn stream<'a>(scopes: &'a [Scope], settings: &Settings, ctx: &'a FetchContext) -> Result<(), FetchError> {
    let per_page = settings.page_size.min(ctx.max_page_records).max(5);
    let gate = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let mut by_account: Vec<Vec<&Scope>> = vec![Vec::new(); settings.accounts.len()];
    for s in scopes {
        if let Some(v) = by_account.get_mut(s.account_index) {
            v.push(s);
        }
    }
    let one = |scope: &'a Scope| one_scope(gate.clone(), scope, per_page, ctx);
    let accounts = by_account.iter().filter(|v| !v.is_empty()).map(|regions| async {
        let mut failures: Vec<(String, FetchError)> = Vec::new();
        let (first, rest) = match regions.split_first() {
            Some(x) => x,
            None => return Ok(failures),
        };
        match one(first).await {
            Ok(()) => {}
            Err(FetchError::Closed) => return Err(FetchError::Closed),
            Err(e @ FetchError::Auth { .. }) => {
                for r in rest {
                    failures.push((
                        r.label(),
                        FetchError::Other(
                            "not tried: the account's credentials were refused in its first region".into(),
                        ),
                    ));
                }
                failures.insert(0, (first.label(), e));
                return Ok(failures);
            }
            Err(e) => failures.push((first.label(), e)),
        }
        let results = futures::future::join_all(rest.iter().map(|s| async move { (s.label(), one(s).await) })).await;
        for (label, r) in results {
            match r {
                Ok(()) => {}
                Err(FetchError::Closed) => return Err(FetchError::Closed),
                Err(e) => failures.push((label, e)),
            }
        }
        Ok(failures)
    });
    let mut failures = Vec::new();
    for r in futures::future::join_all(accounts).await {
        failures.extend(r?);
    }
    if failures.is_empty() {
        return Ok(());
    }
    if failures.len() == scopes.len() {
        let n = failures.len();
        let mut it = failures.into_iter();
        let Some((label, first)) = it.next() else { return Ok(()) };
        tracing::warn!(connection = %ctx.connection, stream = %ctx.stream.name, scopes = n, "every account and region failed");
        return Err(match first {
            FetchError::Auth { endpoint, detail } => {
                FetchError::Auth { endpoint, detail: format!("{label}: {detail}") }
            }
            FetchError::Http { endpoint, detail } => {
                FetchError::Http { endpoint, detail: format!("{label}: {detail}") }
            }
            FetchError::Protocol { endpoint, detail } => {
                FetchError::Protocol { endpoint, detail: format!("{label}: {detail}") }
            }
            other => FetchError::Other(format!("{label}: {other}")),
        });
    }
    for (label, e) in &failures {
        tracing::warn!(connection = %ctx.connection, stream = %ctx.stream.name, scope = %label, error = %e, "account/region failed; the others are kept");
        ctx.incomplete(format!("{label}: {e}"));
    }
    Ok(())
}

async fn one_scope(gate: Arc<Semaphore>, scope: &Scope, per_page: usize, ctx: &FetchContext) -> Result<(), FetchError> {
    let _slot = gate.acquire().await;
    listing(scope, per_page, ctx).await
}

/// Every answer of one scope, each sent as one page.
async fn listing(scope: &Scope, per_page: usize, ctx: &FetchContext) -> Result<(), FetchError> {
    let client = scope.client.with_metrics(ctx.requests.clone()).with_stream(&ctx.stream.name);
    let mut token: Option<String> = None;
    let mut page_no = 0u64;
    loop {
        page_no += 1;
        let (body, scanned, endpoint) = answer(&client, token.as_deref(), per_page, ctx, scope).await?;
        let locator = format!("{} region {} {} page {page_no}", ctx.stream.name, scope.region, scope.account.label());
        let page = RawPage::new(&ctx.stream.name, body, locator).with_record_hint(scanned.instances);
        ctx.sink.send(page).await?;
        match scanned.next_token {
            None => return Ok(()),
            Some(t) if token.as_deref() == Some(t.as_str()) => {
                return Err(FetchError::Protocol { endpoint, detail: "the same nextToken twice in a row".into() });
            }
            Some(t) => token = Some(t),
        }
    }
}

/// One answer, asked for again when it ended before its document did.
async fn answer(
    client: &HttpClient,
    token: Option<&str>,
    per_page: usize,
    ctx: &FetchContext,
    scope: &Scope,
) -> Result<(bytes::Bytes, Scan, String), FetchError> {
    let max = per_page.to_string();
    corral_http::until_whole(client, ctx, CUT_ANSWER_ATTEMPTS, || async {
        let mut params = vec![("Action", "DescribeInstances"), ("Version", EC2_VERSION), ("MaxResults", max.as_str())];
        if let Some(t) = token {
            params.push(("NextToken", t));
        }
        let resp = client.get("").query(&params).send_bytes().await?;
        let endpoint = resp.endpoint();
        let body = resp.body.clone();
        drop(resp);
        let scanned = {
            let body = body.clone();
            corral_http::off_runtime(move || scan(&body))
                .await
                .ok_or_else(|| FetchError::Other(format!("scanning the answer of {endpoint} failed")))?
        };
        Ok(if scanned.complete {
            Answer::Whole((body, scanned, endpoint))
        } else {
            let detail = format!("the answer ended before its </DescribeInstancesResponse> ({})", scope.label());
            Answer::Cut { endpoint, detail }
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scan_finds_the_top_level_token_and_a_cut_answer() {
        let whole =
            b"<DescribeInstancesResponse><reservationSet><item><instancesSet><item><instanceId>i-1</instanceId>\
<tagSet><item><key>nextToken</key><value>x</value></item></tagSet></item></instancesSet></item></reservationSet>\
<nextToken>a/b+c=</nextToken></DescribeInstancesResponse>\n";
        assert_eq!(scan(whole), Scan { complete: true, next_token: Some("a/b+c=".into()), instances: 1 });
        let last = b"<DescribeInstancesResponse><reservationSet/></DescribeInstancesResponse>";
        assert_eq!(scan(last), Scan { complete: true, next_token: None, instances: 0 });
        let cut = &whole[..60];
        assert!(!scan(cut).complete);
    }
}
