//! Credentials and SigV4 signing: the access key as configured, or sessions
//! of an assumed role bought from STS (`AssumeRole`) and renewed before they
//! end. Signing itself is `aws-sigv4`'s; every request, STS's included, is
//! sent by corral-http, which calls [`Signer`] on each attempt.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use corral_core::metrics::RequestMetrics;
use corral_http::{
    Auth, HeaderValue, HttpClient, HttpConfig, HttpError, RateConfig, RequestSigner, Signature, Timeouts, ToSign,
};
use quick_xml::Reader;
use quick_xml::events::Event;
use secrecy::{ExposeSecret, SecretString};

/// A set of keys.
#[derive(Clone)]
pub struct Keys {
    pub access_key_id: String,
    pub secret: SecretString,
    pub token: Option<SecretString>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").field("access_key_id", &self.access_key_id).finish_non_exhaustive()
    }
}

impl Keys {
    fn secret_forms(&self) -> Vec<String> {
        let mut out = vec![self.secret.expose_secret().to_string()];
        out.extend(self.token.as_ref().map(|t| t.expose_secret().to_string()));
        out
    }
}

/// A session of an assumed role.
struct Session {
    keys: Keys,
    /// When it should be replaced: before `expires`, by a quarter of its
    /// life, at most five minutes.
    renew_at: SystemTime,
    generation: u64,
}

/// An assumed role: STS is asked for a session when there is none or the
/// one held is near its end (one caller asks, the others wait for it).
pub struct Role {
    pub arn: String,
    external_id: Option<SecretString>,
    session_name: String,
    duration: Duration,
    sts: HttpClient,
    current: tokio::sync::Mutex<Option<Arc<Session>>>,
    generations: AtomicU64,
    /// The secrets of the sessions held (for scrubbing), the newest last.
    held: std::sync::Mutex<Vec<String>>,
}

impl std::fmt::Debug for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Role").field("arn", &self.arn).finish_non_exhaustive()
    }
}

/// Where a scope's keys come from.
#[derive(Debug)]
pub enum Source {
    Static(Keys),
    Role(Role),
}

/// Error codes that say a session ended early: worth one new session.
const EXPIRED_CODES: [&str; 2] = ["<Code>RequestExpired</Code>", "<Code>ExpiredToken</Code>"];

impl Source {
    /// The role behind `arn`, assumed with `base`.
    #[allow(clippy::too_many_arguments)]
    pub fn role(
        connection: &str,
        base: Keys,
        arn: String,
        external_id: Option<SecretString>,
        session_name: String,
        duration: Duration,
        sts_endpoint: &str,
        sts_region: &str,
        timeout: Duration,
    ) -> Result<Source, HttpError> {
        let signer = Arc::new(Signer::new(Arc::new(Source::Static(base)), sts_region, "sts"));
        let sts = HttpClient::new(
            HttpConfig::new(sts_endpoint)
                .with_connection(connection)
                .with_auth(Auth::Signed(signer))
                .with_rate(RateConfig::unlimited().with_max_in_flight(1))
                .with_timeouts(Timeouts { total: timeout, ..Timeouts::default() }),
            Arc::default(),
        )?;
        Ok(Source::Role(Role {
            arn,
            external_id,
            session_name,
            duration,
            sts,
            current: tokio::sync::Mutex::new(None),
            generations: AtomicU64::new(0),
            held: std::sync::Mutex::new(Vec::new()),
        }))
    }

    /// Keys to sign with now, and their generation (0 for static keys).
    async fn keys(&self, metrics: &Arc<RequestMetrics>) -> Result<(Keys, u64), HttpError> {
        match self {
            Source::Static(k) => Ok((k.clone(), 0)),
            Source::Role(r) => {
                let s = r.session(metrics, None).await?;
                Ok((s.keys.clone(), s.generation))
            }
        }
    }

    fn secret_forms(&self) -> Vec<String> {
        match self {
            Source::Static(k) => k.secret_forms(),
            Source::Role(r) => {
                let mut out = r.held.lock().unwrap_or_else(|e| e.into_inner()).clone();
                out.extend(r.external_id.as_ref().map(|e| e.expose_secret().to_string()));
                out
            }
        }
    }

    /// Sessions STS issued so far (0 for static keys).
    pub fn sessions_issued(&self) -> u64 {
        match self {
            Source::Static(_) => 0,
            Source::Role(r) => r.generations.load(Ordering::Acquire),
        }
    }
}

impl Role {
    /// The session to use: the one held while it is not due for renewal
    /// (and is not `refused`, a generation the vendor refused), else a new one.
    async fn session(&self, metrics: &Arc<RequestMetrics>, refused: Option<u64>) -> Result<Arc<Session>, HttpError> {
        let mut current = self.current.lock().await;
        if let Some(s) = current.as_ref()
            && SystemTime::now() < s.renew_at
            && refused != Some(s.generation)
        {
            return Ok(s.clone());
        }
        let session = Arc::new(self.assume(metrics).await?);
        *current = Some(session.clone());
        Ok(session)
    }

    async fn assume(&self, metrics: &Arc<RequestMetrics>) -> Result<Session, HttpError> {
        let duration = self.duration.as_secs().to_string();
        let mut form = vec![
            ("Action", "AssumeRole"),
            ("Version", "2011-06-15"),
            ("RoleArn", self.arn.as_str()),
            ("RoleSessionName", self.session_name.as_str()),
            ("DurationSeconds", duration.as_str()),
        ];
        if let Some(e) = &self.external_id {
            form.push(("ExternalId", e.expose_secret()));
        }
        let asked = SystemTime::now();
        let resp = self.sts.with_metrics(metrics.clone()).post_form("", &form).send_bytes().await?;
        let endpoint = resp.endpoint();
        let body = resp.body.clone();
        let parsed = corral_http::off_runtime(move || parse_assume_role(&body)).await;
        let Some(Ok(c)) = parsed else {
            let detail = match parsed {
                Some(Err(e)) => e,
                _ => "the answer could not be read".into(),
            };
            return Err(HttpError::Protocol { endpoint, detail: format!("AssumeRole answer: {detail}") });
        };
        let expires = c.expiration;
        let life = expires.duration_since(asked).unwrap_or_default();
        let margin = (life / 4).min(Duration::from_secs(300));
        let generation = self.generations.fetch_add(1, Ordering::AcqRel) + 1;
        {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            held.push(c.keys.secret.expose_secret().to_string());
            held.extend(c.keys.token.as_ref().map(|t| t.expose_secret().to_string()));
            // The last two sessions are enough: older ones are no longer sent.
            let keep = held.len().saturating_sub(4);
            held.drain(..keep);
        }
        tracing::debug!(role = %self.arn, generation, life_s = life.as_secs(), "assumed role session");
        Ok(Session { keys: c.keys, renew_at: expires.checked_sub(margin).unwrap_or(expires), generation })
    }
}

struct Assumed {
    keys: Keys,
    expiration: SystemTime,
}

/// Read `AssumeRoleResult/Credentials` (on the blocking pool).
fn parse_assume_role(body: &[u8]) -> Result<Assumed, String> {
    let mut reader = Reader::from_reader(body);
    let mut path: Vec<String> = Vec::new();
    let (mut key, mut secret, mut token, mut expiration) = (None, None, None, None);
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => path.push(e.name().as_ref().to_string()),
            Ok(Event::End(_)) => {
                path.pop();
            }
            Ok(Event::Text(t)) => {
                if path.len() >= 2 && path[path.len() - 2] == "Credentials" {
                    let v = t.trim().to_string();
                    match path.last().map(String::as_str) {
                        Some("AccessKeyId") => key = Some(v),
                        Some("SecretAccessKey") => secret = Some(v),
                        Some("SessionToken") => token = Some(v),
                        Some("Expiration") => expiration = Some(v),
                        _ => {}
                    }
                }
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("malformed XML at byte {}: {e}", reader.error_position())),
        }
    }
    let (Some(key), Some(secret), Some(token), Some(exp)) = (key, secret, token, expiration) else {
        return Err(
            "no AssumeRoleResult/Credentials with AccessKeyId, SecretAccessKey, SessionToken and Expiration".into()
        );
    };
    let at = corral_core::fields::timestamp(&exp).ok_or("Expiration is not a timestamp")?;
    let expiration = SystemTime::UNIX_EPOCH
        + Duration::from_millis(u64::try_from(at.timestamp_millis()).map_err(|_| "Expiration before 1970")?);
    Ok(Assumed {
        keys: Keys { access_key_id: key, secret: SecretString::from(secret), token: Some(SecretString::from(token)) },
        expiration,
    })
}

/// SigV4 for one service in one region, with the keys of a [`Source`].
/// `Debug` shows neither keys nor signatures.
pub struct Signer {
    pub source: Arc<Source>,
    pub region: String,
    pub service: &'static str,
    /// The last signatures made, scrubbed from error details like secrets
    /// (a vendor or proxy may quote a request's headers back).
    pub recent: std::sync::Mutex<std::collections::VecDeque<String>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("region", &self.region).field("service", &self.service).finish_non_exhaustive()
    }
}

impl Signer {
    pub fn new(source: Arc<Source>, region: &str, service: &'static str) -> Self {
        Signer { source, region: region.to_string(), service, recent: Default::default() }
    }
}

/// Signatures kept for scrubbing.
const RECENT_SIGNATURES: usize = 32;

fn sign_error(e: impl std::fmt::Display) -> HttpError {
    HttpError::Config(format!("cannot sign the request: {e}"))
}

#[async_trait]
impl RequestSigner for Signer {
    async fn sign(&self, req: ToSign<'_>) -> Result<Signature, HttpError> {
        let (keys, generation) = self.source.keys(req.metrics).await?;
        let creds = aws_credential_types::Credentials::new(
            keys.access_key_id.clone(),
            keys.secret.expose_secret().to_string(),
            keys.token.as_ref().map(|t| t.expose_secret().to_string()),
            None,
            "corral",
        );
        let identity = creds.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(self.service)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(sign_error)?
            .into();
        let headers: Vec<(&str, &str)> =
            req.headers.iter().filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?))).collect();
        let signable = SignableRequest::new(
            req.method.as_str(),
            req.url.as_str(),
            headers.into_iter(),
            SignableBody::Bytes(req.body),
        )
        .map_err(sign_error)?;
        let (instructions, signature) = sign(signable, &params).map_err(sign_error)?.into_parts();
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() >= RECENT_SIGNATURES {
                recent.pop_front();
            }
            recent.push_back(signature);
        }
        let (headers, _) = instructions.into_parts();
        let mut out = Vec::with_capacity(headers.len());
        for h in headers {
            let name = corral_http::HeaderName::from_static(h.name());
            let mut value =
                HeaderValue::from_str(h.value()).map_err(|_| sign_error("a signing header is not ASCII"))?;
            value.set_sensitive(true);
            out.push((name, value));
        }
        Ok(Signature { headers: out, generation })
    }

    async fn refused(
        &self,
        generation: u64,
        status: u16,
        body: &[u8],
        metrics: &Arc<RequestMetrics>,
    ) -> Result<bool, HttpError> {
        let Source::Role(role) = self.source.as_ref() else { return Ok(false) };
        let expired = EXPIRED_CODES.iter().any(|c| memchr::memmem::find(body, c.as_bytes()).is_some());
        if !expired {
            return Ok(false);
        }
        tracing::info!(role = %role.arn, status, "the assumed role's session was refused as expired; renewing it");
        role.session(metrics, Some(generation)).await?;
        Ok(true)
    }

    fn secret_forms(&self) -> Vec<String> {
        let mut out = self.source.secret_forms();
        out.extend(self.recent.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assume_role_answer_is_read_and_its_secrets_hidden() {
        let body = b"<AssumeRoleResponse><AssumeRoleResult><AssumedRoleUser><Arn>x</Arn></AssumedRoleUser>\
<Credentials><AccessKeyId>ASIAEXAMPLE</AccessKeyId><SecretAccessKey>s3cret-hunter2</SecretAccessKey>\
<SessionToken>tok-hunter2</SessionToken><Expiration>2030-01-01T00:00:00.000Z</Expiration></Credentials>\
</AssumeRoleResult></AssumeRoleResponse>";
        let a = parse_assume_role(body).map_err(|e| e.to_string()).expect("reads");
        assert_eq!(a.keys.access_key_id, "ASIAEXAMPLE");
        assert_eq!(a.keys.secret.expose_secret(), "s3cret-hunter2");
        assert!(!format!("{:?}", a.keys).contains("hunter2"));
        assert!(a.expiration > SystemTime::now());
        assert!(parse_assume_role(b"<ErrorResponse/>").is_err());
    }
}
