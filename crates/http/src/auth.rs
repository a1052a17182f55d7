//! Authentication settings and static credentials (OAuth2 tokens: `oauth.rs`).
//!
//! Secrets live in [`SecretString`]s, go into header values marked sensitive,
//! and never appear in `Debug` output, logs or error messages: error details
//! that quote a vendor's answer are scrubbed of every secret the client knows.

use std::fmt;

use corral_core::redact::SecretSet;
use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};

use crate::error::HttpError;

/// How a connection authenticates.
#[derive(Clone, Default)]
pub enum Auth {
    #[default]
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(SecretString),
    /// A whole header: Okta `Authorization: SSWS <t>`, SentinelOne
    /// `Authorization: ApiToken <t>`, Tenable `X-ApiKeys: accessKey=..;secretKey=..`.
    Header { name: String, value: SecretString },
    /// HTTP Basic (Qualys, ServiceNow).
    Basic { user: String, password: SecretString },
    /// OAuth2 client credentials (CrowdStrike, Microsoft Graph, Jamf), or
    /// a token bought from another call ([`OAuth2Config::token_call`]).
    OAuth2ClientCredentials(OAuth2Config),
    /// Every attempt signed by the adapter's signer (AWS Signature Version 4):
    /// see [`crate::RequestSigner`].
    Signed(std::sync::Arc<dyn crate::RequestSigner>),
}

impl Auth {
    /// Okta API token: `Authorization: SSWS <token>`.
    pub fn okta_ssws(token: &SecretString) -> Self {
        Auth::Header { name: "Authorization".into(), value: format!("SSWS {}", token.expose_secret()).into() }
    }
    /// SentinelOne API token: `Authorization: ApiToken <token>`.
    pub fn sentinelone(token: &SecretString) -> Self {
        Auth::Header { name: "Authorization".into(), value: format!("ApiToken {}", token.expose_secret()).into() }
    }
    /// Tenable keys: `X-ApiKeys: accessKey=<a>;secretKey=<s>`.
    pub fn tenable(access_key: &SecretString, secret_key: &SecretString) -> Self {
        Auth::Header {
            name: "X-ApiKeys".into(),
            value: format!("accessKey={};secretKey={}", access_key.expose_secret(), secret_key.expose_secret()).into(),
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            Auth::None => "None",
            Auth::Bearer(_) => "Bearer",
            Auth::Header { .. } => "Header",
            Auth::Basic { .. } => "Basic",
            Auth::OAuth2ClientCredentials(_) => "OAuth2ClientCredentials",
            Auth::Signed(_) => "Signed",
        }
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None | Auth::Bearer(_) | Auth::Signed(_) => write!(f, "{}", self.kind()),
            Auth::Header { name, .. } => f.debug_struct("Header").field("name", name).field("value", &"***").finish(),
            Auth::Basic { user, .. } => f.debug_struct("Basic").field("user", user).field("password", &"***").finish(),
            Auth::OAuth2ClientCredentials(c) => c.fmt(f),
        }
    }
}

/// OAuth2 client-credentials grant settings.
#[derive(Clone)]
pub struct OAuth2Config {
    /// Absolute (`https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token`)
    /// or a path under the base URL (`/oauth2/token`).
    pub token_url: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub scope: Option<String>,
    /// Extra form fields (`member_cid` for CrowdStrike child tenants, `audience`, ...).
    pub extra_params: Vec<(String, String)>,
    /// Send the client credentials as HTTP Basic instead of form fields.
    pub basic_client_auth: bool,
    /// The token endpoint's own rate limit (CrowdStrike: 300 per minute per
    /// IP), applied to every token request of the client, retries included.
    pub token_quota: Option<governor::Quota>,
    /// Not the client-credentials grant but a token bought from another
    /// call (Jamf Pro's `POST /api/v1/auth/token` with HTTP Basic): see
    /// [`TokenCall`]. The cache, the refresh ahead of expiry and after a
    /// 401, and the scrubbing are the same.
    pub token_call: Option<Box<TokenCall>>,
}

/// A token from another call: `POST token_url` with `client_id` and
/// `client_secret` as HTTP Basic and no body; the answer is JSON with the
/// token at `token_field` and its expiry at `expires_field` (an RFC 3339
/// instant, epoch seconds or milliseconds, or a lifetime in seconds when
/// below 10,000,000; [`TokenCall::default_lifetime`] when absent). Data
/// requests carry `header: prefix + token`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenCall {
    /// Object keys leading to the token (`["token"]`).
    pub token_field: Vec<String>,
    /// Object keys leading to the expiry (`["expires"]`).
    pub expires_field: Vec<String>,
    /// The header carrying the token (`Authorization`).
    pub header: String,
    /// What goes before the token (`Bearer `).
    pub prefix: String,
    /// The lifetime assumed when the answer has no expiry.
    pub default_lifetime: std::time::Duration,
}

impl Default for TokenCall {
    /// Jamf Pro's: `{"token", "expires"}`, sent as `Authorization: Bearer`, 20 minutes.
    fn default() -> Self {
        TokenCall {
            token_field: vec!["token".into()],
            expires_field: vec!["expires".into()],
            header: "Authorization".into(),
            prefix: "Bearer ".into(),
            default_lifetime: std::time::Duration::from_secs(20 * 60),
        }
    }
}

impl OAuth2Config {
    pub fn new(token_url: impl Into<String>, client_id: impl Into<String>, client_secret: SecretString) -> Self {
        OAuth2Config {
            token_url: token_url.into(),
            client_id: client_id.into(),
            client_secret,
            scope: None,
            extra_params: Vec::new(),
            basic_client_auth: false,
            token_quota: None,
            token_call: None,
        }
    }
    /// A token from another call (see [`TokenCall`]) at `token_url`, bought
    /// with `user` and `password` as HTTP Basic.
    pub fn token_call(
        token_url: impl Into<String>,
        user: impl Into<String>,
        password: SecretString,
        call: TokenCall,
    ) -> Self {
        OAuth2Config {
            basic_client_auth: true,
            token_call: Some(Box::new(call)),
            ..OAuth2Config::new(token_url, user, password)
        }
    }
    /// Pace token requests at `quota` (see [`OAuth2Config::token_quota`]).
    pub fn token_quota(mut self, quota: governor::Quota) -> Self {
        self.token_quota = Some(quota);
        self
    }
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_params.push((name.into(), value.into()));
        self
    }
}

impl fmt::Debug for OAuth2Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuth2ClientCredentials")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"***")
            .field("scope", &self.scope)
            .field("token_call", &self.token_call)
            .finish_non_exhaustive()
    }
}

/// A header value marked sensitive (hidden from `HeaderMap`'s Debug).
pub(crate) fn sensitive(value: &str) -> Result<HeaderValue, HttpError> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| HttpError::Config("a credential contains characters not allowed in an HTTP header".into()))?;
    v.set_sensitive(true);
    Ok(v)
}

/// Static credentials turned into one header, ready to attach.
pub(crate) fn static_header(auth: &Auth) -> Result<Option<(HeaderName, HeaderValue)>, HttpError> {
    Ok(match auth {
        Auth::None | Auth::OAuth2ClientCredentials(_) | Auth::Signed(_) => None,
        Auth::Bearer(t) => Some((AUTHORIZATION, sensitive(&format!("Bearer {}", t.expose_secret()))?)),
        Auth::Header { name, value } => {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| HttpError::Config(format!("invalid auth header name `{name}`")))?;
            Some((name, sensitive(value.expose_secret())?))
        }
        Auth::Basic { user, password } => {
            let raw = format!("{user}:{}", password.expose_secret());
            Some((AUTHORIZATION, sensitive(&format!("Basic {}", base64(raw.as_bytes())))?))
        }
    })
}

/// Base64 (RFC 4648, standard alphabet, padded): the one corral-core's scrubber knows.
pub(crate) use corral_core::redact::base64;

/// Secrets shorter than this cannot be cut out of a text without mangling
/// it (a 2-character secret occurs in ordinary words): a text containing one
/// is withheld whole instead.
const SHORT_SECRET: usize = 4;
/// What a text containing a short secret becomes.
pub(crate) const WITHHELD: &str = "[withheld: the text may quote a credential]";

/// `text` without `secret` (see [`scrub_all`]).
#[cfg(test)]
pub(crate) fn scrub(text: &str, secret: &str) -> String {
    scrub_all(text, &[secret])
}

/// `text` with every occurrence of each secret replaced by `***`, in every
/// form corral-core's [`SecretSet`] knows: as written, percent/form-encoded,
/// JSON-escaped, HTML-escaped, inside any base64 stream (Basic credentials),
/// and cut off at the end of a truncated text (see `corral_core::redact`).
/// Longest first (a composite value before its parts). Empty secrets are
/// ignored; a text still containing a secret shorter than 4 characters, in
/// any of those forms, is [`WITHHELD`] whole.
pub(crate) fn scrub_all<S: AsRef<str>>(text: &str, secrets: &[S]) -> String {
    let (short, long): (Vec<&str>, Vec<&str>) =
        secrets.iter().map(AsRef::as_ref).filter(|s| !s.is_empty()).partition(|s| s.len() < SHORT_SECRET);
    let out = SecretSet::new(&long).scrub(text, "***").unwrap_or_else(|| text.to_string());
    if !short.is_empty() && SecretSet::new(&short).is_found_in(&out) {
        return WITHHELD.to_string();
    }
    out
}

/// The secret parts of a whole-header credential: `SSWS <t>` and
/// `ApiToken <t>` give `t`, `accessKey=<a>;secretKey=<s>` gives `a` and `s`.
fn header_parts(value: &str) -> Vec<&str> {
    value
        .split([';', ','])
        .map(str::trim)
        .map(|seg| match (seg.split_once('='), seg.split_once(' ')) {
            (Some((_, v)), _) => v.trim(),
            (None, Some((_, t))) => t.trim(),
            (None, None) => seg,
        })
        .filter(|p| !p.is_empty())
        .collect()
}

impl Auth {
    /// The values in which this credential could show up in a vendor's
    /// answer or a transport error: the values, their parts, and the base64
    /// form of Basic credentials. [`scrub_all`] looks for each in every
    /// encoded form too.
    pub(crate) fn secret_forms(&self) -> Vec<String> {
        match self {
            Auth::None | Auth::OAuth2ClientCredentials(_) => Vec::new(),
            Auth::Signed(s) => s.secret_forms(),
            Auth::Bearer(t) => vec![t.expose_secret().to_string()],
            Auth::Header { value, .. } => {
                let v = value.expose_secret();
                std::iter::once(v).chain(header_parts(v)).map(str::to_string).collect()
            }
            Auth::Basic { user, password } => {
                let raw = format!("{user}:{}", password.expose_secret());
                vec![password.expose_secret().to_string(), base64(raw.as_bytes()), raw]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("user:pass", "dXNlcjpwYXNz"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    fn scrubbed(auth: &Auth, text: &str) -> String {
        scrub_all(text, &auth.secret_forms())
    }

    #[test]
    fn every_form_of_a_credential_is_scrubbed() {
        let s = |v: &str| SecretString::from(v.to_string());
        // Long secrets are cut out; the rest of the text stays.
        let bearer = Auth::Bearer(s("tok-123456"));
        assert_eq!(scrubbed(&bearer, "bad token tok-123456 here"), "bad token *** here");
        // Okta's SSWS value and its token alone.
        let ssws = Auth::okta_ssws(&s("00abcdef"));
        assert_eq!(scrubbed(&ssws, "got SSWS 00abcdef; token 00abcdef"), "got ***; token ***");
        // Tenable: both keys, however short; a short one withholds the whole text.
        let tenable = Auth::tenable(&s("access-key-long"), &s("sk"));
        assert_eq!(scrubbed(&tenable, "key access-key-long refused"), "key *** refused");
        assert_eq!(scrubbed(&tenable, "X-ApiKeys: accessKey=access-key-long;secretKey=sk"), "X-ApiKeys: ***");
        assert_eq!(scrubbed(&tenable, "secretKey=sk rejected"), WITHHELD);
        // Basic: the password, and the base64 form the header carried.
        let basic = Auth::Basic { user: "user".into(), password: s("pass-word") };
        let shown = scrubbed(&basic, "Authorization: Basic dXNlcjpwYXNzLXdvcmQ= (user:pass-word) pass-word");
        assert_eq!(shown, "Authorization: Basic *** (***) ***");
        // Short secrets (under 4 characters) are never skipped.
        let short = Auth::Bearer(s("abc"));
        assert_eq!(scrubbed(&short, "the token abc is invalid"), WITHHELD);
        assert_eq!(scrubbed(&short, "invalid token"), "invalid token");
        let tiny_basic = Auth::Basic { user: "u".into(), password: s("pw") };
        assert_eq!(scrubbed(&tiny_basic, "Basic dTpwdw=="), "Basic ***");
        assert_eq!(scrubbed(&tiny_basic, "password pw rejected"), WITHHELD);
        assert_eq!(scrub("x", ""), "x");
    }

    #[test]
    fn encoded_forms_of_a_credential_are_scrubbed() {
        let secret = "~+/=& \"\\\u{fc}-s3cr3t";
        let s = SecretString::from(secret.to_string());
        let oauth_basic = Auth::Basic { user: "client-id".into(), password: s.clone() };
        let form = corral_core::redact::form_urlencoded(secret);
        let json = serde_json::to_string(secret).expect("json");
        let texts = [
            format!("grant_type=client_credentials&client_id=client-id&client_secret={form}"),
            format!("{{\"error\":\"bad\",\"echo\":{json}}}"),
            format!("{{\"echo\":{}}}", serde_json::to_string(&format!("client_secret={form}")).expect("json")),
            secret.replace('\\', "\\\\").replace('\u{fc}', "\\u00FC").replace('"', "\\\"").replace('/', "\\/"),
            format!("Authorization: Basic {}", base64(format!("other-id:{secret}").as_bytes())),
            form.to_lowercase().replace("%7e", "~"),
        ];
        for text in texts {
            let out = scrubbed(&oauth_basic, &text);
            assert!(out.contains("***"), "{text} -> {out}");
            assert!(!out.contains("s3cr3t") && !out.contains("%7E") && !out.contains("\\u00"), "{text} -> {out}");
        }
        // A short secret is withheld in its encoded forms too.
        let short = Auth::Bearer(SecretString::from("a&b".to_string()));
        assert_eq!(scrubbed(&short, "echo a%26b"), WITHHELD);
        assert_eq!(scrubbed(&short, "echo a&amp;b"), WITHHELD);
    }

    #[test]
    fn debug_never_shows_secrets() {
        let s = SecretString::from("hunter2-secret");
        let all = [
            Auth::Bearer(s.clone()),
            Auth::okta_ssws(&s),
            Auth::tenable(&s, &s),
            Auth::Basic { user: "u".into(), password: s.clone() },
            Auth::OAuth2ClientCredentials(OAuth2Config::new("/oauth2/token", "cid", s.clone()).scope("x")),
        ];
        for a in all {
            let d = format!("{a:?} {a:#?}");
            assert!(!d.contains("hunter2"), "{d}");
        }
        let (_, v) = static_header(&Auth::Bearer(s)).ok().flatten().expect("header");
        assert!(!format!("{v:?}").contains("hunter2"));
    }
}
