//! Scrubbing resolved secrets out of text the engine keeps or prints.
//!
//! Adapters hold secrets in `secrecy` types and never format them, but an
//! error from a vendor, a library or a misconfigured URL can still echo one
//! (a token in a query string, a password in a connection string). The
//! binary registers every secret value it resolved; the engine scrubs them
//! from each run summary before it is saved or returned and from every
//! rejected record before it is kept.

use std::sync::{Arc, RwLock};

use crate::store::StoredReject;
use crate::summary::RunSummary;

/// What a scrubbed secret becomes.
pub const REDACTED: &str = "[redacted]";

/// Remembers secret values and scrubs them from text. Cheap to clone; clones share the list.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Arc<RwLock<Vec<String>>>,
}

impl Redactor {
    /// Values shorter than this are not registered: they would scrub innocent
    /// text (`-`, `on`, `123`) and are no real secret.
    pub const MIN_LEN: usize = 4;

    pub fn new() -> Self {
        Self::default()
    }

    /// Remember one secret value (and its form after trimming whitespace).
    pub fn add(&self, secret: &str) {
        let Ok(mut list) = self.secrets.write() else { return };
        for value in [secret, secret.trim()] {
            if value.len() >= Self::MIN_LEN && !list.iter().any(|s| s == value) {
                list.push(value.to_string());
            }
        }
        // Longest first, so a secret that contains another is scrubbed whole.
        list.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.read().map(|l| l.is_empty()).unwrap_or(true)
    }

    /// `text` with every registered secret replaced by `[redacted]`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        self.redact_in_place(&mut out);
        out
    }

    /// Scrub `text` in place; allocates only when a secret is found.
    pub fn redact_in_place(&self, text: &mut String) {
        let Ok(secrets) = self.secrets.read() else { return };
        for s in secrets.iter() {
            if text.contains(s.as_str()) {
                *text = text.replace(s.as_str(), REDACTED);
            }
        }
    }

    /// Scrub every free-text field of a run summary: errors, stream errors,
    /// page errors and reject samples.
    pub fn redact_summary(&self, summary: &mut RunSummary) {
        if self.is_empty() {
            return;
        }
        for e in &mut summary.errors {
            self.redact_in_place(e);
        }
        for st in summary.streams.values_mut() {
            if let Some(e) = &mut st.fetch_error {
                self.redact_in_place(e);
            }
            for e in &mut st.page_errors {
                self.redact_in_place(e);
            }
        }
        for group in summary.rejects.values_mut() {
            for r in &mut group.samples {
                self.redact_reject(r);
            }
        }
    }

    /// Scrub a rejected record's locator, detail and raw input.
    pub fn redact_reject(&self, r: &mut crate::adapter::Reject) {
        self.redact_in_place(&mut r.record);
        self.redact_in_place(&mut r.detail);
        if let Some(raw) = &mut r.raw {
            self.redact_in_place(raw);
        }
    }

    pub fn redact_stored_reject(&self, r: &mut StoredReject) {
        self.redact_reject(&mut r.reject);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::Reject;
    use crate::summary::{RejectGroup, StreamSummary};

    #[test]
    fn secrets_are_scrubbed_longest_first_and_short_values_ignored() {
        let r = Redactor::new();
        r.add("abc");
        r.add("hunter2");
        r.add("hunter2-extended");
        r.add("  spaced-secret\n");
        assert_eq!(r.redact("x abc hunter2-extended hunter2 spaced-secret"), "x abc [redacted] [redacted] [redacted]");
    }

    #[test]
    fn every_text_field_of_a_summary_is_scrubbed() {
        let r = Redactor::new();
        r.add("s3cr3t-token");
        let mut s = RunSummary::new("c", "a");
        s.errors.push("GET https://x/?token=s3cr3t-token failed".into());
        s.streams.insert(
            "hosts".into(),
            StreamSummary {
                fetch_error: Some("401 for s3cr3t-token".into()),
                page_errors: vec!["page 1: s3cr3t-token".into()],
                ..Default::default()
            },
        );
        let reject = Reject::new("id s3cr3t-token", "bad", "detail s3cr3t-token").with_raw(b"{\"k\":\"s3cr3t-token\"}");
        s.rejects.insert("bad".into(), RejectGroup { count: 1, samples: vec![reject] });
        r.redact_summary(&mut s);
        let text = serde_json::to_string(&s).expect("json");
        assert!(!text.contains("s3cr3t-token"), "{text}");
        assert_eq!(text.matches(REDACTED).count(), 6, "{text}");
    }
}
