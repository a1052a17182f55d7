//! Scrubbing resolved secrets out of text the engine keeps or prints.
//!
//! Adapters hold secrets in `secrecy` types and never format them, but an
//! error from a vendor, a library or a misconfigured URL can still echo one
//! (a token in a query string, a password in a connection string, a token
//! request quoted back in an error body). The binary registers every secret
//! value it resolved; the engine scrubs them from each run summary before it
//! is saved or returned and from every rejected record before it is kept.
//!
//! # Which forms are scrubbed
//!
//! A secret seldom comes back exactly as configured: a vendor that echoes a
//! token request quotes it form-encoded (`s3cr3t-ZZ%7ETOP`), a JSON error body
//! or a JSON log line escapes it (`\"`, `\\`, `\u00fc`), an HTTP Basic header
//! carries it in base64. [`SecretSet`], used by the [`Redactor`] and by the
//! HTTP toolkit's own scrubber alike, catches all of these:
//!
//! - [`secret_forms`] lists, for each secret, the literal forms to look for:
//!   the value; its JSON-escaped form as serde_json writes it and its
//!   `application/x-www-form-urlencoded` form as an HTTP form body carries it
//!   (so one more layer of escaping over those is caught too: a JSON error
//!   quoting a form body, a JSON log line quoting a JSON error); and its
//!   base64 at each of the three byte alignments, in the standard and the
//!   URL-safe alphabets, keeping only the characters the secret alone
//!   determines: those appear in *any* base64 stream that contains the
//!   secret, `Basic base64(id:secret)` among them, whatever comes before it.
//!   A fragment shorter than [`MIN_BASE64_FRAGMENT`] characters is left out:
//!   it could occur in innocent text.
//! - Each form is looked for in the text as written and in the text with its
//!   escapes decoded: percent-encoding (`%7e` or `%7E`, whichever characters
//!   the encoder chose to escape, a space as `%20` or as `+`), JSON and Rust
//!   string escapes (`\"`, `\\`, `\/`, `\n`, `\u00fc` or `\u00FC`, surrogate
//!   pairs, `\u{fc}`) and HTML character references (`&amp;`, `&quot;`,
//!   `&#39;`, `&#x27;`). The text is decoded, never the secret encoded, so
//!   only text that spells a secret in some encoding is scrubbed.
//! - A text cut off inside a secret (a truncated error body or reject) still
//!   ends with the secret's start: a text that ends with at least
//!   [`MIN_TAIL`] bytes of the start of a form (before a trailing `…` or
//!   `...`) has them scrubbed too.
//!
//! Not caught: a secret split by line wrapping (MIME base64 at 76 columns),
//! text in another character set than UTF-8, encodings nested more than one
//! level beyond the forms above, and secrets shorter than [`Redactor::MIN_LEN`].

mod forms;
mod scan;

use std::sync::{Arc, RwLock};

pub use forms::{MIN_BASE64_FRAGMENT, base64, form_urlencoded, secret_forms};
pub use scan::{MIN_TAIL, SecretSet};

use crate::store::StoredReject;
use crate::summary::RunSummary;

/// What a scrubbed secret becomes.
pub const REDACTED: &str = "[redacted]";

/// Remembers secret values and scrubs them from text. Cheap to clone; clones
/// share the list. `Debug` shows how many secrets it holds, never one.
#[derive(Clone, Default)]
pub struct Redactor {
    inner: Arc<RwLock<Registered>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secrets = self.inner.read().map(|r| r.secrets.len()).unwrap_or(0);
        f.debug_struct("Redactor").field("secrets", &secrets).finish()
    }
}

#[derive(Default)]
struct Registered {
    secrets: Vec<String>,
    /// Compiled from `secrets` when first needed after a change (a config
    /// with hundreds of secrets registers them one by one).
    set: Option<Arc<SecretSet>>,
}

impl Redactor {
    /// Values shorter than this (in bytes) are not registered: they would
    /// scrub innocent text (`-`, `on`, `123`) and are no real secret.
    pub const MIN_LEN: usize = 4;

    pub fn new() -> Self {
        Self::default()
    }

    /// Remember one secret value (and its form after trimming whitespace),
    /// in every form [`secret_forms`] lists.
    pub fn add(&self, secret: &str) {
        let Ok(mut reg) = self.inner.write() else { return };
        let before = reg.secrets.len();
        for value in [secret, secret.trim()] {
            if value.len() >= Self::MIN_LEN && !reg.secrets.iter().any(|s| s == value) {
                reg.secrets.push(value.to_string());
            }
        }
        if reg.secrets.len() != before {
            reg.set = None;
        }
    }

    /// The compiled secrets, compiling them if they changed since last time.
    fn set(&self) -> Option<Arc<SecretSet>> {
        if let Some(set) = self.inner.read().ok()?.set.as_ref() {
            return Some(Arc::clone(set));
        }
        let mut reg = self.inner.write().ok()?;
        let reg = &mut *reg;
        let set = reg.set.get_or_insert_with(|| Arc::new(SecretSet::new(&reg.secrets)));
        Some(Arc::clone(set))
    }

    pub fn is_empty(&self) -> bool {
        self.inner.read().map(|r| r.secrets.is_empty()).unwrap_or(true)
    }

    /// `text` with every registered secret, in any of its forms, replaced by `[redacted]`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        self.redact_in_place(&mut out);
        out
    }

    /// Scrub `text` in place; allocates only when a secret is found.
    pub fn redact_in_place(&self, text: &mut String) {
        let Some(set) = self.set() else { return };
        if let Some(scrubbed) = set.scrub(text, REDACTED) {
            *text = scrubbed;
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
            if let Some(e) = &mut st.incomplete {
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
        if let Some(key) = &mut r.key {
            self.redact_in_place(key);
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

    /// Every way the tests below write a secret into a text.
    fn encodings(secret: &str, id: &str) -> Vec<(&'static str, String)> {
        let json = serde_json::to_string(secret).expect("json");
        let json = json[1..json.len() - 1].to_string();
        let ascii_json: String = secret
            .chars()
            .map(|c| match c {
                '"' => "\\\"".to_string(),
                '\\' => "\\\\".to_string(),
                '/' => "\\/".to_string(),
                c if c.is_ascii() && !c.is_control() => c.to_string(),
                c => c.encode_utf16(&mut [0; 2]).iter().map(|u| format!("\\u{u:04X}")).collect(),
            })
            .collect();
        let pct = |plus: bool, lower: bool, keep: &str| -> String {
            secret
                .bytes()
                .map(|b| match b {
                    b' ' if plus => "+".to_string(),
                    b if b.is_ascii_alphanumeric() || keep.as_bytes().contains(&b) => char::from(b).to_string(),
                    b if lower => format!("%{b:02x}"),
                    b => format!("%{b:02X}"),
                })
                .collect()
        };
        let form = form_urlencoded(secret);
        let html: String = secret
            .chars()
            .map(|c| match c {
                '&' => "&amp;".to_string(),
                '"' => "&quot;".to_string(),
                '\'' => "&#39;".to_string(),
                '<' => "&lt;".to_string(),
                c if !c.is_ascii() => format!("&#x{:x};", u32::from(c)),
                c => c.to_string(),
            })
            .collect();
        let basic_std = base64(format!("{id}:{secret}").as_bytes());
        let basic_url = basic_std.replace('+', "-").replace('/', "_");
        vec![
            ("raw", secret.to_string()),
            ("serde_json", json.clone()),
            ("ASCII-only JSON (\\u00FC, \\/)", ascii_json),
            ("JSON inside JSON", serde_json::to_string(&json).expect("json")),
            ("form encoding (what reqwest sends)", form.clone()),
            ("form encoding, lower-case hex", pct(true, true, "*-._")),
            ("RFC 3986 with %20", pct(false, false, "-._~")),
            ("encodeURIComponent", pct(false, false, "-._~!'()*")),
            ("Python quote (keeps /)", pct(false, false, "-._~/")),
            ("form body quoted in a JSON error", serde_json::to_string(&format!("client_secret={form}")).expect("j")),
            ("form body encoded twice", form_urlencoded(&form)),
            ("HTML", html),
            ("Basic header", format!("Authorization: Basic {basic_std}")),
            ("Basic, URL-safe base64", basic_url),
            ("base64 in a JSON log line", serde_json::to_string(&format!("Basic {basic_std}")).expect("json")),
        ]
    }

    #[test]
    fn every_encoding_of_a_secret_is_scrubbed() {
        let secrets = [
            "s3cr3t-ZZ~TOP",
            "p+a/s=s&w o\"r\\d-ü",
            "~+/=& \"\\ü-mixed-0123456789",
            "dGVzdA==/already+base64",
            "tab\tand\nnewline-secret",
            "emoji-🦀-secret",
        ];
        for secret in secrets {
            let r = Redactor::new();
            r.add(secret);
            for id in ["cid", "client-id-1", "ab"] {
                for (how, encoded) in encodings(secret, id) {
                    let text = format!("vendor said: {encoded} (end)");
                    let out = r.redact(&text);
                    assert!(out.contains(REDACTED), "{how} of {secret:?} not scrubbed: {out}");
                    assert!(out.starts_with("vendor said: ") && out.ends_with(" (end)"), "{how}: {out}");
                    // Nothing long enough to mean anything survives.
                    for (_, other) in encodings(secret, id).iter().filter(|(h, _)| !h.starts_with("Basic")) {
                        assert!(!out.contains(other.as_str()), "{how} of {secret:?} left {other:?} in {out}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_echoed_token_request_of_the_issue_is_scrubbed() {
        let r = Redactor::new();
        r.add("s3cr3t-ZZ~TOP");
        let body = r#"{"error":"invalid_client","request":"grant_type=client_credentials&client_id=x&client_secret=s3cr3t-ZZ%7ETOP"}"#;
        assert_eq!(
            r.redact(body),
            r#"{"error":"invalid_client","request":"grant_type=client_credentials&client_id=x&client_secret=[redacted]"}"#
        );
        r.add("m\u{fc}nchen\"quote\\slash");
        let echoed = r#"{"got":"m\u00fcnchen\"quote\\slash"}"#;
        assert_eq!(r.redact(echoed), r#"{"got":"[redacted]"}"#);
    }

    #[test]
    fn base64_fragments_cover_every_alignment() {
        let secret = "Zx9-secret-value";
        let r = Redactor::new();
        r.add(secret);
        for prefix in ["", "a", "ab", "abc", "client-id:", "client-id-2:", "x:"] {
            let stream = base64(format!("{prefix}{secret}").as_bytes());
            let out = r.redact(&format!("Basic {stream}"));
            assert!(out.contains(REDACTED), "prefix {prefix:?}: {out}");
            // What is left of the stream carries fewer than three of the secret's bytes.
            let left = out.replace("Basic ", "").replace(REDACTED, "");
            assert!(left.len() <= 4 + prefix.len().div_ceil(3) * 4, "prefix {prefix:?}: {out}");
        }
    }

    #[test]
    fn innocent_text_is_left_alone() {
        let r = Redactor::new();
        r.add("abcd");
        r.add("tok-12345678");
        for text in [
            "ab cd, a+b, a%62 cd, abc%6 is cut",
            "YWJj ZGVm",
            "100% done & 50%+ left \\ \\u00 \\uZZZZ &bogus; &#xZZ; %zz",
            "tok-1234567 tok_12345678",
            "a text ending in tok-1",
        ] {
            assert_eq!(r.redact(text), text);
        }
        // Short base64 fragments are not registered.
        let short = Redactor::new();
        short.add("abcde");
        assert_eq!(short.redact("YWJjZGU"), "YWJjZGU");
        // Both hex cases decode; a secret spelled with escapes is still the secret.
        assert_eq!(r.redact("a%62%63d"), REDACTED);
        assert_eq!(r.redact("\\u0061bcd"), REDACTED);
    }

    #[test]
    fn a_secret_cut_off_at_the_end_of_a_truncated_text_is_scrubbed() {
        let r = Redactor::new();
        r.add("tok-8f3k2j9d7s");
        assert_eq!(r.redact("echo: token=tok-8f3k2…"), "echo: token=[redacted]…");
        assert_eq!(r.redact("echo: token=tok-8f3k2"), "echo: token=[redacted]");
        assert_eq!(r.redact("echo: token=tok-8f%33k..."), "echo: token=[redacted]...");
        // Fewer than MIN_TAIL bytes of it: left alone.
        assert_eq!(r.redact("echo: token=tok-8"), "echo: token=tok-8");
    }

    #[test]
    fn secret_set_reports_what_it_finds() {
        let set = SecretSet::new(&["pw-secret", ""]);
        assert!(set.is_found_in("x pw%2Dsecret y"));
        assert!(!set.is_found_in("nothing here"));
        assert_eq!(set.scrub("a pw-secret b", "***").as_deref(), Some("a *** b"));
        assert!(SecretSet::new::<&str>(&[]).is_empty());
        assert_eq!(secret_forms(""), Vec::<String>::new());
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(form_urlencoded("a b~ü*"), "a+b%7E%C3%BC*");
        // Debug shows counts, never a secret.
        let r = Redactor::new();
        r.add("pw-secret");
        assert_eq!(r.redact("pw-secret"), REDACTED);
        let shown = format!("{r:?} {set:?}");
        assert!(!shown.contains("pw-secret") && shown.contains("secrets: 1"), "{shown}");
    }
}
