//! Walking a truncated listing: one answer at a time, each framed into pages
//! of whole hosts off the runtime, continued through the WARNING URL.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use corral_core::{Checkpoint, FetchContext, FetchError, RawPage};
use corral_http::{Answer, HttpClient, NextLinks, Url, redact_url};
use serde_json::json;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::config::Settings;
use crate::frame::{CODE_TRUNCATED, Framed, frame};

/// How many times, in all, an answer that ended before its document did is
/// asked for (`corral_http::until_whole`: with the client's backoff between).
pub const CUT_ANSWER_ATTEMPTS: u32 = 3;

/// Which listing a stream walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `/api/2.0/fo/asset/host/` (`HOST_LIST_OUTPUT`): every host.
    Hosts,
    /// `/api/2.0/fo/asset/host/vm/detection/` (`HOST_LIST_VM_DETECTION_OUTPUT`).
    Detections,
}

impl Api {
    pub fn path(self) -> &'static str {
        match self {
            Api::Hosts => crate::HOST_PATH,
            Api::Detections => crate::DETECTION_PATH,
        }
    }
    pub fn root(self) -> &'static str {
        match self {
            Api::Hosts => "HOST_LIST_OUTPUT",
            Api::Detections => "HOST_LIST_VM_DETECTION_OUTPUT",
        }
    }
    /// The first request's parameters.
    pub fn params(self, s: &Settings) -> Vec<(&'static str, String)> {
        let mut p = vec![("action", "list".to_string()), ("truncation_limit", s.truncation_limit.to_string())];
        match self {
            Api::Hosts => {
                p.push(("details", "All".into()));
                p.push(("show_asset_id", "1".into()));
            }
            Api::Detections => {
                p.push(("show_asset_id", "1".into()));
                p.push(("show_results", if s.show_results { "1" } else { "0" }.into()));
                // Every status: without it Qualys leaves Fixed detections out, and a fix
                // would look like a detection that went away.
                p.push(("status", "New,Active,Re-Opened,Fixed".into()));
            }
        }
        p
    }
}

/// The subscription's concurrency limit, shared by both streams: a permit
/// per API call in flight. Until an answer has said what the limit is
/// (`X-Concurrency-Limit-Limit`), one call at a time, so the vendor never has
/// to refuse one (409, code 1960) for us to learn it; then the lower of the
/// configured `concurrency` and the announced limit, followed whenever a
/// later answer announces another (permits handed back while over a lowered
/// limit are retired).
#[derive(Debug)]
pub struct Gate {
    sem: Semaphore,
    configured: usize,
    capacity: AtomicUsize,
    debt: AtomicUsize,
    learn: std::sync::Mutex<()>,
}

pub struct GatePermit<'a> {
    gate: &'a Gate,
    permit: Option<SemaphorePermit<'a>>,
}

impl Drop for GatePermit<'_> {
    fn drop(&mut self) {
        let Some(p) = self.permit.take() else { return };
        let owed = self.gate.debt.fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1)).is_ok();
        if owed {
            p.forget();
        }
    }
}

impl Gate {
    pub fn new(configured: usize) -> Self {
        Gate {
            sem: Semaphore::new(1),
            configured: configured.max(1),
            capacity: AtomicUsize::new(1),
            debt: 0.into(),
            learn: std::sync::Mutex::new(()),
        }
    }

    pub async fn acquire(&self) -> GatePermit<'_> {
        // Never closed.
        GatePermit { gate: self, permit: self.sem.acquire().await.ok() }
    }

    /// Calls allowed at once now.
    pub fn capacity(&self) -> usize {
        self.capacity.load(Ordering::Acquire)
    }

    /// Follow the limit an answer announced (at most the configured
    /// concurrency, never below 1).
    pub fn learn(&self, announced: usize) {
        let target = announced.clamp(1, self.configured);
        let _one_at_a_time = self.learn.lock().unwrap_or_else(|e| e.into_inner());
        let before = self.capacity.swap(target, Ordering::AcqRel);
        if target > before {
            // Grow: first cancel permits still owed to an earlier shrink.
            let mut more = target - before;
            while more > 0 && self.debt.fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1)).is_ok()
            {
                more -= 1;
            }
            self.sem.add_permits(more);
        } else if target < before {
            let cut = before - target;
            let forgotten = self.sem.forget_permits(cut);
            self.debt.fetch_add(cut - forgotten, Ordering::AcqRel);
        }
        if target != before {
            tracing::debug!(from = before, to = target, announced, "following Qualys's concurrency limit");
        }
    }
}

/// The `id_min` of a continuation URL, for the checkpoint.
fn id_min_of(url: &str) -> Option<u64> {
    let u = Url::parse(url).ok()?;
    u.query_pairs().find(|(k, _)| k == "id_min").and_then(|(_, v)| v.parse().ok())
}

fn first_url(client: &HttpClient, api: Api, s: &Settings, id_min: Option<u64>) -> Result<String, FetchError> {
    let mut url = client.url(api.path()).map_err(FetchError::from)?;
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in api.params(s) {
            q.append_pair(k, &v);
        }
        if let Some(id) = id_min {
            q.append_pair("id_min", &id.to_string());
        }
    }
    Ok(url.to_string())
}

/// Where a stream resumes: the `id_min` its last run stopped at.
pub fn resume_from(c: Option<&Checkpoint>) -> Option<u64> {
    c?.0.get("id_min")?.as_u64()
}

/// Fetch one stream: every answer of the listing, pages of whole hosts.
pub async fn listing(
    client: &HttpClient,
    settings: &Settings,
    gate: &Arc<Gate>,
    ctx: &FetchContext,
    api: Api,
) -> Result<(), FetchError> {
    let resume = resume_from(ctx.checkpoint.as_ref());
    if ctx.checkpoint.is_some() && resume.is_none() {
        ctx.fetching_from_start();
    }
    let per_page = settings.hosts_per_page.min(ctx.max_page_records.max(1));
    let mut links = NextLinks::new(client.base_url(), "the WARNING URL");
    let mut next = Some(first_url(client, api, settings, resume)?);
    let (mut answer, mut hosts_before) = (0u64, 0usize);
    while let Some(url) = next.take() {
        answer += 1;
        let (resp_url, framed) = answer_of(client, gate, &url, api, per_page, ctx).await?;
        let tail = &framed.tail;
        let endpoint = redact_url(&resp_url);
        match tail.warning_code.as_deref() {
            Some(CODE_TRUNCATED) => {
                let link = tail.warning_url.as_deref();
                if link.is_none() {
                    return Err(FetchError::Protocol {
                        endpoint,
                        detail: "truncated answer (WARNING 1980) without a URL to continue from".into(),
                    });
                }
                next = links.next(&resp_url, link)?;
            }
            Some(code) => tracing::warn!(
                connection = %ctx.connection, stream = %ctx.stream.name, %endpoint, code,
                text = tail.warning_text.as_deref().unwrap_or(""), "Qualys answered with a warning"
            ),
            None => {}
        }
        let checkpoint = next.as_deref().and_then(id_min_of).map(|id| Checkpoint(json!({"id_min": id})));
        let pages = framed.pages.len();
        let from = match resume {
            Some(id) if answer == 1 => format!(" (from id_min {id})"),
            _ => String::new(),
        };
        for (i, (body, hosts)) in framed.pages.into_iter().enumerate() {
            let locator = format!(
                "{} answer {answer}{from}, hosts {}-{}",
                ctx.stream.name,
                hosts_before + 1,
                hosts_before + hosts
            );
            hosts_before += hosts;
            let mut page = RawPage::new(&ctx.stream.name, body, locator);
            if i + 1 == pages
                && let Some(c) = &checkpoint
            {
                page = page.with_checkpoint(c.clone());
            }
            ctx.sink.send(page).await?;
        }
        if pages == 0
            && let Some(c) = checkpoint
        {
            // An answer without hosts that still continues: keep the position anyway.
            ctx.sink
                .send(RawPage::new(&ctx.stream.name, bytes::Bytes::new(), "empty answer").with_checkpoint(c))
                .await?;
        }
    }
    Ok(())
}

/// One answer, framed: asked for again when it ended before its document did.
async fn answer_of(
    client: &HttpClient,
    gate: &Arc<Gate>,
    url: &str,
    api: Api,
    per_page: usize,
    ctx: &FetchContext,
) -> Result<(Url, Framed), FetchError> {
    corral_http::until_whole(client, ctx, CUT_ANSWER_ATTEMPTS, || async {
        let resp = {
            let _slot = gate.acquire().await;
            client.get(url).send_bytes().await?
        };
        if let Some(n) = resp.header("x-concurrency-limit-limit").and_then(|v| v.trim().parse::<usize>().ok())
            && n > 0
        {
            gate.learn(n);
        }
        let body = resp.body.clone();
        let framed = corral_http::off_runtime(move || frame(&body, api.root(), per_page))
            .await
            .ok_or_else(|| FetchError::Other(format!("framing the answer of {} failed", resp.endpoint())))?;
        // The answer's own copy goes now: only the pages' slices keep it alive.
        let resp_url = resp.url.clone();
        let endpoint = resp.endpoint();
        drop(resp);
        if framed.tail.complete {
            return Ok(Answer::Whole((resp_url, framed)));
        }
        let detail = format!(
            "the answer ended before its </{}> ({} host(s) read): cut short, or not a {} document",
            api.root(),
            framed.hosts,
            api.root()
        );
        Ok(Answer::Cut { endpoint, detail })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_starts_at_one_and_follows_the_announced_limit_up_to_the_configured() {
        let g = Gate::new(4);
        assert_eq!((g.capacity(), g.sem.available_permits()), (1, 1));
        g.learn(8);
        assert_eq!((g.capacity(), g.sem.available_permits()), (4, 4));
        g.learn(2);
        assert_eq!((g.capacity(), g.sem.available_permits()), (2, 2));
        g.learn(0);
        assert_eq!(g.capacity(), 1);
    }

    #[tokio::test]
    async fn permits_held_while_the_limit_drops_are_retired_on_release() {
        let g = Gate::new(3);
        g.learn(3);
        let a = g.acquire().await;
        let b = g.acquire().await;
        g.learn(1);
        assert_eq!(g.sem.available_permits(), 0);
        drop(a);
        assert_eq!(g.sem.available_permits(), 0, "retired");
        drop(b);
        assert_eq!(g.sem.available_permits(), 1);
        // Up again while nothing is owed.
        g.learn(2);
        assert_eq!(g.sem.available_permits(), 2);
    }

    #[test]
    fn id_min_and_checkpoints() {
        assert_eq!(id_min_of("https://q/api/2.0/fo/asset/host/?action=list&id_min=1000017"), Some(1_000_017));
        assert_eq!(id_min_of("https://q/x?action=list"), None);
        assert_eq!(resume_from(Some(&Checkpoint(json!({"id_min": 5})))), Some(5));
        assert_eq!(resume_from(Some(&Checkpoint(json!({"since": 5})))), None);
    }
}
