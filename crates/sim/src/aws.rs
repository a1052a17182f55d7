//! AWS: EC2 `DescribeInstances` per region and STS `AssumeRole`, with real
//! Signature Version 4 checks. Data: [`crate::data::aws`].
//!
//! Endpoints (one server for every region, the region in the path, as a
//! client's per-region endpoint template points at it):
//! - `GET|POST /{region}/` with `Action=DescribeInstances&Version=2016-11-15`
//!   (query string or form body), `MaxResults` (5..=1000; absent: every
//!   instance in one answer), `NextToken` (an opaque token from the previous
//!   answer, bound to its account and region). Answer: XML
//!   `DescribeInstancesResponse/{requestId, reservationSet/item{reservationId,
//!   ownerId, instancesSet/item{...}}, nextToken}`; `nextToken` only when
//!   instances remain. Regions: [`REGIONS`]; another is 404. A region in
//!   `Behavior::aws_disabled_regions` answers 401 `AuthFailure`, as EC2 does
//!   in a region not enabled for the account.
//! - `POST /sts/` (or `GET`) `Action=AssumeRole&Version=2011-06-15&RoleArn=
//!   arn:aws:iam::{account}:role/CorralReadOnly&RoleSessionName=..&DurationSeconds=
//!   900..=3600` → `AssumeRoleResponse/AssumeRoleResult/Credentials{AccessKeyId,
//!   SecretAccessKey, SessionToken, Expiration}`. Only the simulator's accounts
//!   ([`accounts`]) and [`ROLE_NAME`]; another role is 403 `AccessDenied`.
//!   Sessions last `DurationSeconds`, or `Faults::token_ttl` (announced as
//!   such, or, with `token_ttl_hidden`, announced as the requested duration
//!   while dying early). Each one counts in `tokens_issued`.
//!
//! **Signatures** are verified for real: `Authorization: AWS4-HMAC-SHA256
//! Credential=KEY/DATE/REGION/SERVICE/aws4_request, SignedHeaders=..,
//! Signature=..` is recomputed with the key's secret over the canonical
//! request (method, path, sorted query, the signed headers as received,
//! `host` and `x-amz-date` required, the body's SHA-256). The long-term key
//! is `credentials.client_id` / `credentials.client_secret` (account
//! `accounts(seed)[0]`); session keys are those STS issued, and need their
//! `X-Amz-Security-Token`. Refusals, in AWS's XML: no or unreadable
//! signature, unknown key: 401 `AuthFailure`; wrong signature, or a scope
//! naming another date, region or service: 403 `SignatureDoesNotMatch`;
//! `X-Amz-Date` more than 15 minutes off (EC2; 5 for STS): 400
//! `RequestExpired` (STS: 403 `SignatureDoesNotMatch`, "Signature
//! expired"); a session past its end: 400 `RequestExpired` (STS: 403
//! `ExpiredToken`), counted as the fault `token_expired`. With
//! `Faults::echo_credentials` a refusal quotes the request's
//! `Authorization` header and session token back.
//!
//! **Throttling**: a token bucket per (account, region): `SimConfig::rate_limit`
//! requests of capacity refilled at that rate (default, EC2's documented
//! figures for non-mutating actions: 100, refilled 20 per second). An empty
//! bucket answers 503 `RequestLimitExceeded` (no `Retry-After`, as AWS
//! sends none); `Faults::aws_throttles` forces the first N `DescribeInstances`
//! calls to that answer whatever the bucket holds. Each counts in
//! `rate_limited` and as the fault `request_limit_exceeded`. `spend(n)`
//! (another client of the accounts) takes `n` from every bucket, those not
//! yet used included.
//!
//! Faults: the shared 5xx (XML `InternalError` / `Unavailable`), hang, slow
//! and truncation faults apply to `DescribeInstances`; `malformed_pages`
//! (page `p` = the answer starting at `p × MaxResults`) breaks the first
//! instance of that answer (a mismatched end tag). Endpoint labels:
//! `aws.ec2`, `aws.sts`, `aws.other`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use axum::routing::any;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::data::aws::{AwsData, REGIONS, ROLE_NAME, accounts, escape};
use crate::data::{h3, iso_millis};
use crate::server::{Kind, Sim};
use crate::util::{get as qget, parse_form, parse_query};

pub const EC2_VERSION: &str = "2016-11-15";
pub const STS_VERSION: &str = "2011-06-15";
/// The region a global STS endpoint is signed for.
pub const STS_REGION: &str = "us-east-1";

/// The simulator's AWS state: sessions, buckets, forced throttles.
#[derive(Default)]
pub(crate) struct AwsState {
    sessions: Mutex<HashMap<String, Session>>,
    buckets: Mutex<HashMap<(String, String), Bucket>>,
    /// What another client spent, and when: buckets made later start from it.
    spent: Mutex<Option<(Instant, u32)>>,
    forced: AtomicU64,
    seq: AtomicU64,
}

struct Session {
    secret: String,
    token: String,
    account: String,
    dies: Instant,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// (capacity, tokens per second).
fn bucket_shape(sim: &Sim) -> (f64, f64) {
    match sim.config.rate_limit {
        Some(l) => (f64::from(l.requests), f64::from(l.requests) / l.per.as_secs_f64().max(0.001)),
        None => (100.0, 20.0),
    }
}

impl AwsState {
    /// Take one token of (account, region)'s bucket.
    fn take(&self, sim: &Sim, account: &str, region: &str) -> bool {
        let (cap, rate) = bucket_shape(sim);
        let now = Instant::now();
        let spent = *self.spent.lock().unwrap_or_else(|e| e.into_inner());
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let b = buckets.entry((account.to_string(), region.to_string())).or_insert_with(|| match spent {
            Some((at, n)) => Bucket { tokens: (cap - f64::from(n)).max(0.0), at },
            None => Bucket { tokens: cap, at: now },
        });
        b.tokens = (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate).min(cap);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    pub(crate) fn spend(&self, sim: &Sim, n: u32) -> u32 {
        let (cap, _) = bucket_shape(sim);
        let now = Instant::now();
        *self.spent.lock().unwrap_or_else(|e| e.into_inner()) = Some((now, n));
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        for b in buckets.values_mut() {
            b.tokens = (b.tokens - f64::from(n)).max(0.0);
        }
        n.min(cap as u32)
    }
}

pub(crate) fn router() -> Router<Arc<Sim>> {
    Router::new()
        .route("/sts", any(sts))
        .route("/sts/", any(sts))
        .route("/{region}", any(ec2))
        .route("/{region}/", any(ec2))
        .fallback(not_found)
}

pub(crate) fn classify(_method: &Method, path: &str) -> (&'static str, Kind) {
    let p = path.trim_matches('/');
    if p == "sts" {
        ("aws.sts", Kind::Auth)
    } else if !p.is_empty() && !p.contains('/') && !p.starts_with("_sim") {
        ("aws.ec2", Kind::Data)
    } else {
        ("aws.other", Kind::Other)
    }
}

fn request_id(sim: &Sim) -> String {
    let n = sim.aws.seq.fetch_add(1, Ordering::Relaxed);
    let h = h3(sim.config.seed, 0xA3F0, n);
    let h2 = h3(sim.config.seed, 0xA3F1, n);
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        h as u32,
        (h >> 32) as u16,
        (h >> 48) & 0xfff,
        h2 & 0xfff,
        (h2 >> 16) & 0xffff_ffff_ffff
    )
}

fn xml(status: StatusCode, body: String) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml;charset=UTF-8"));
    resp
}

/// EC2's error document.
fn ec2_error(sim: &Sim, status: StatusCode, code: &str, message: &str) -> Response {
    xml(
        status,
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{}</Message></Error></Errors><RequestID>{}</RequestID></Response>",
            escape(message),
            request_id(sim)
        ),
    )
}

/// STS's error document.
fn sts_error(sim: &Sim, status: StatusCode, code: &str, message: &str) -> Response {
    xml(
        status,
        format!(
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/{STS_VERSION}/\">\n  <Error>\n    <Type>Sender</Type>\n    <Code>{code}</Code>\n    <Message>{}</Message>\n  </Error>\n  <RequestId>{}</RequestId>\n</ErrorResponse>\n",
            escape(message),
            request_id(sim)
        ),
    )
}

pub(crate) fn server_error(sim: &Sim, status: StatusCode) -> Response {
    if status == StatusCode::SERVICE_UNAVAILABLE {
        ec2_error(sim, status, "Unavailable", "The server is overloaded and can't handle the request.")
    } else {
        ec2_error(sim, status, "InternalError", "An internal error has occurred.")
    }
}

/// A throttled call: 503 `RequestLimitExceeded`.
pub(crate) fn throttled(sim: &Sim) -> Response {
    sim.counters.fault("request_limit_exceeded");
    sim.counters.rate_limited_answer();
    ec2_error(sim, StatusCode::SERVICE_UNAVAILABLE, "RequestLimitExceeded", "Request limit exceeded.")
}

async fn not_found(State(sim): State<Arc<Sim>>) -> Response {
    ec2_error(&sim, StatusCode::NOT_FOUND, "UnknownEndpoint", "No such endpoint.")
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    match <HmacSha256 as KeyInit>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        // HMAC takes keys of any length.
        Err(_) => Vec::new(),
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// AWS's URI encoding: everything but unreserved characters as `%XX` (uppercase).
fn aws_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'~') || (keep_slash && c == b'/') {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// A request's parsed `Authorization` header.
struct Auth<'a> {
    key: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed: Vec<&'a str>,
    signature: &'a str,
}

fn parse_auth(value: &str) -> Option<Auth<'_>> {
    let rest = value.trim().strip_prefix("AWS4-HMAC-SHA256 ")?;
    let (mut cred, mut signed, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        match k {
            "Credential" => cred = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => sig = Some(v),
            _ => return None,
        }
    }
    let mut c = cred?.split('/');
    let (key, date, region, service, term) = (c.next()?, c.next()?, c.next()?, c.next()?, c.next()?);
    if term != "aws4_request" || c.next().is_some() {
        return None;
    }
    Some(Auth { key, date, region, service, signed: signed?.split(';').collect(), signature: sig? })
}

/// Parse `YYYYMMDDTHHMMSSZ` into epoch seconds.
fn amz_date(v: &str) -> Option<i64> {
    let t = chrono::NaiveDateTime::parse_from_str(v, "%Y%m%dT%H%M%SZ").ok()?;
    Some(t.and_utc().timestamp())
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Who signed a verified request.
struct Caller {
    account: String,
}

/// A refusal: status, code, message.
type Refusal = (StatusCode, &'static str, String);

/// A request as received, for [`verify`].
#[derive(Clone, Copy)]
struct Received<'a> {
    method: &'a Method,
    path: &'a str,
    query: Option<&'a str>,
    headers: &'a HeaderMap,
    body: &'a [u8],
}

/// Verify a request's signature for `service` in `region`.
fn verify(sim: &Sim, req: &Received<'_>, service: &str, region: &str) -> Result<Caller, Refusal> {
    let Received { method, path, query, headers, body } = *req;
    let sts = service == "sts";
    let auth_failure = |m: &str| (StatusCode::UNAUTHORIZED, "AuthFailure", m.to_string());
    let mismatch = |m: String| (StatusCode::FORBIDDEN, "SignatureDoesNotMatch", m);
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return Err(if sts {
            (StatusCode::FORBIDDEN, "MissingAuthenticationToken", "Request is missing Authentication Token".into())
        } else {
            auth_failure("AWS was not able to validate the provided access credentials")
        });
    };
    let Some(a) = parse_auth(value) else {
        return Err(auth_failure("AWS was not able to validate the provided access credentials"));
    };
    // The key: the long-term one, or a session STS issued.
    let c = &sim.config.credentials;
    let token = headers.get("x-amz-security-token").and_then(|v| v.to_str().ok());
    // An unknown temporary key, or a session token that is not its own.
    let invalid_token = || {
        if sts {
            (
                StatusCode::FORBIDDEN,
                "InvalidClientTokenId",
                "The security token included in the request is invalid.".into(),
            )
        } else {
            auth_failure("AWS was not able to validate the provided access credentials")
        }
    };
    let (secret, account) = if a.key == c.client_id {
        (c.client_secret.clone(), accounts(sim.config.seed)[0].clone())
    } else {
        let sessions = sim.aws.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let Some(s) = sessions.get(a.key) else {
            return Err(invalid_token());
        };
        if token != Some(s.token.as_str()) {
            return Err(invalid_token());
        }
        if Instant::now() >= s.dies {
            sim.counters.fault("token_expired");
            return Err(if sts {
                (StatusCode::FORBIDDEN, "ExpiredToken", "The security token included in the request is expired".into())
            } else {
                (StatusCode::BAD_REQUEST, "RequestExpired", "Request has expired.".into())
            });
        }
        (s.secret.clone(), s.account.clone())
    };
    let Some(amz) = headers.get("x-amz-date").and_then(|v| v.to_str().ok()) else {
        return Err(mismatch("The request must contain a signed X-Amz-Date header.".into()));
    };
    let Some(at) = amz_date(amz) else {
        return Err(mismatch(format!("X-Amz-Date {amz:?} is not in the ISO 8601 basic format.")));
    };
    if !a.signed.contains(&"host") || !a.signed.contains(&"x-amz-date") {
        return Err(mismatch("host and x-amz-date must be signed headers.".into()));
    }
    if a.date != amz.get(..8).unwrap_or("") || a.region != region || a.service != service {
        return Err(mismatch(format!(
            "Credential should be scoped to a valid region, service and date: {}/{}/{} expected",
            amz.get(..8).unwrap_or(""),
            region,
            service
        )));
    }
    let skew = if sts { 5 * 60 } else { 15 * 60 };
    if (now_secs() - at).abs() > skew {
        return Err(if sts {
            mismatch(format!("Signature expired: {amz} is now earlier or later than allowed."))
        } else {
            (StatusCode::BAD_REQUEST, "RequestExpired", "Request has expired.".into())
        });
    }
    // The canonical request.
    let canonical_uri =
        path.split('/').map(|s| aws_encode(&crate::util::percent_decode(s), false)).collect::<Vec<_>>().join("/");
    let mut pairs: Vec<(String, String)> =
        parse_query(query).into_iter().map(|(k, v)| (aws_encode(&k, false), aws_encode(&v, false))).collect();
    pairs.sort();
    let canonical_query = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    let mut canonical_headers = String::new();
    for name in &a.signed {
        let values: Vec<String> = headers
            .get_all(*name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        if values.is_empty() {
            return Err(mismatch(format!("signed header {name} is not in the request")));
        }
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let canonical = format!(
        "{method}\n{canonical_uri}\n{canonical_query}\n{canonical_headers}\n{}\n{}",
        a.signed.join(";"),
        sha256_hex(body)
    );
    let scope = format!("{}/{}/{}/aws4_request", a.date, a.region, a.service);
    let to_sign = format!("AWS4-HMAC-SHA256\n{amz}\n{scope}\n{}", sha256_hex(canonical.as_bytes()));
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), a.date.as_bytes());
    for part in [a.region, a.service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let expected = hex::encode(hmac(&key, to_sign.as_bytes()));
    if expected != a.signature {
        sim.counters.fault("signature_mismatch");
        return Err(mismatch(
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method."
                .into(),
        ));
    }
    Ok(Caller { account })
}

/// A refusal as the service writes it (echoing credentials when the fault says so).
fn refuse(sim: &Sim, sts: bool, headers: &HeaderMap, (status, code, mut message): Refusal) -> Response {
    if sim.config.faults.echo_credentials {
        let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        message = format!("{message} (Authorization: {}; token: {})", h("authorization"), h("x-amz-security-token"));
    }
    if sts { sts_error(sim, status, code, &message) } else { ec2_error(sim, status, code, &message) }
}

fn params(query: Option<&str>, method: &Method, body: &[u8]) -> Vec<(String, String)> {
    let mut pairs = parse_query(query);
    if *method == Method::POST {
        pairs.extend(parse_form(body));
    }
    pairs
}

async fn ec2(
    State(sim): State<Arc<Sim>>,
    Path(region): Path<String>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    if !REGIONS.contains(&region.as_str()) {
        return ec2_error(
            &sim,
            StatusCode::NOT_FOUND,
            "UnknownEndpoint",
            &format!("No EC2 endpoint for region {region}."),
        );
    }
    let received = Received { method: &method, path: uri.path(), query: q.as_deref(), headers: &headers, body: &body };
    let caller = match verify(&sim, &received, "ec2", &region) {
        Ok(c) => c,
        Err(r) => return refuse(&sim, false, &headers, r),
    };
    if sim.config.behavior.aws_disabled_regions.contains(&region) {
        return ec2_error(
            &sim,
            StatusCode::UNAUTHORIZED,
            "AuthFailure",
            "AWS was not able to validate the provided access credentials",
        );
    }
    let p = params(q.as_deref(), &method, &body);
    match qget(&p, "Action") {
        None => {
            return ec2_error(
                &sim,
                StatusCode::BAD_REQUEST,
                "MissingAction",
                "The request must contain the parameter Action",
            );
        }
        Some("DescribeInstances") => {}
        Some(other) => {
            return ec2_error(
                &sim,
                StatusCode::BAD_REQUEST,
                "InvalidAction",
                &format!("The action {other} is not valid for this web service."),
            );
        }
    }
    match qget(&p, "Version") {
        None => {
            return ec2_error(
                &sim,
                StatusCode::BAD_REQUEST,
                "MissingParameter",
                "The request must contain the parameter Version",
            );
        }
        Some(EC2_VERSION) => {}
        Some(v) => {
            return ec2_error(
                &sim,
                StatusCode::BAD_REQUEST,
                "InvalidParameterValue",
                &format!("Unsupported API version {v}"),
            );
        }
    }
    // Throttling, per account and region.
    let forced = sim.config.faults.aws_throttles;
    if forced > 0 && sim.aws.forced.fetch_add(1, Ordering::Relaxed) < forced {
        return throttled(&sim);
    }
    if !sim.aws.take(&sim, &caller.account, &region) {
        return throttled(&sim);
    }
    let max = match qget(&p, "MaxResults") {
        None => None,
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) if (5..=1000).contains(&n) => Some(n),
            _ => {
                return ec2_error(
                    &sim,
                    StatusCode::BAD_REQUEST,
                    "InvalidParameterValue",
                    &format!(
                        "Value ( {v} ) for parameter maxResults is invalid. Expecting a value between 5 and 1000."
                    ),
                );
            }
        },
    };
    let data = AwsData::new(sim.config.seed, sim.config.size, sim.generation(), &caller.account, &region);
    let start = match qget(&p, "NextToken").filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => match decode_token(&sim, t, &caller.account, &region) {
            Some(i) if i <= data.count() => i,
            _ => {
                return ec2_error(
                    &sim,
                    StatusCode::BAD_REQUEST,
                    "InvalidParameterValue",
                    "The specified nextToken is not valid.",
                );
            }
        },
    };
    let end = max.map_or(data.count(), |m| (start + m).min(data.count()));
    let broken = max
        .and_then(|m| usize::try_from(start / m).ok())
        .filter(|page| start < end && sim.serve_malformed_page("aws.ec2", *page))
        .map(|_| start);
    let next = (end < data.count()).then(|| encode_token(&sim, &caller.account, &region, end));
    crate::server::blocking(sim.clone(), move |sim| {
        let mut out = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DescribeInstancesResponse xmlns=\"http://ec2.amazonaws.com/doc/{EC2_VERSION}/\">\n    <requestId>{}</requestId>\n    <reservationSet>\n",
            request_id(sim)
        );
        data.render_reservations(&mut out, start, end, broken);
        out.push_str("    </reservationSet>\n");
        if let Some(t) = next {
            out.push_str(&format!("    <nextToken>{t}</nextToken>\n"));
        }
        out.push_str("</DescribeInstancesResponse>\n");
        xml(StatusCode::OK, out)
    })
    .await
}

fn token_check(sim: &Sim, account: &str, region: &str, index: u64) -> u64 {
    let mut h = h3(sim.config.seed, 0xA3E0, index);
    for b in account.bytes().chain(region.bytes()) {
        h = h3(h, 0xA3E1, u64::from(b));
    }
    h
}

fn encode_token(sim: &Sim, account: &str, region: &str, index: u64) -> String {
    let raw = format!("{index}.{:016x}", token_check(sim, account, region, index));
    crate::util::b64_encode(raw.as_bytes())
}

fn decode_token(sim: &Sim, token: &str, account: &str, region: &str) -> Option<u64> {
    let raw = String::from_utf8(crate::kit::std_b64_decode(token).or_else(|| url_b64_decode(token))?).ok()?;
    let (i, check) = raw.split_once('.')?;
    let index: u64 = i.parse().ok()?;
    (u64::from_str_radix(check, 16).ok()? == token_check(sim, account, region, index)).then_some(index)
}

fn url_b64_decode(s: &str) -> Option<Vec<u8>> {
    let std: String = s
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    let padded = format!("{std}{}", "=".repeat((4 - std.len() % 4) % 4));
    crate::kit::std_b64_decode(&padded)
}

async fn sts(
    State(sim): State<Arc<Sim>>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let received = Received { method: &method, path: uri.path(), query: q.as_deref(), headers: &headers, body: &body };
    if let Err(r) = verify(&sim, &received, "sts", STS_REGION) {
        return refuse(&sim, true, &headers, r);
    }
    let p = params(q.as_deref(), &method, &body);
    let bad = |m: &str| sts_error(&sim, StatusCode::BAD_REQUEST, "ValidationError", m);
    if qget(&p, "Action") != Some("AssumeRole") {
        return sts_error(&sim, StatusCode::BAD_REQUEST, "InvalidAction", "Could not find operation for this request");
    }
    if qget(&p, "Version") != Some(STS_VERSION) {
        return bad("The request must contain the parameter Version 2011-06-15");
    }
    let Some(role) = qget(&p, "RoleArn") else {
        return bad(
            "1 validation error detected: Value null at 'roleArn' failed to satisfy constraint: Member must not be null",
        );
    };
    let Some(name) = qget(&p, "RoleSessionName") else {
        return bad(
            "1 validation error detected: Value null at 'roleSessionName' failed to satisfy constraint: Member must not be null",
        );
    };
    if !(2..=64).contains(&name.len()) || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b)) {
        return bad(
            "1 validation error detected: Value at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*",
        );
    }
    let duration = match qget(&p, "DurationSeconds").map(|d| d.trim().parse::<u64>()) {
        None => 3600,
        Some(Ok(d)) if (900..=3600).contains(&d) => d,
        Some(_) => {
            return bad(
                "The requested DurationSeconds exceeds the MaxSessionDuration set for this role, or is below 900.",
            );
        }
    };
    let accts = accounts(sim.config.seed);
    let account = role
        .strip_prefix("arn:aws:iam::")
        .and_then(|r| r.split_once(":role/"))
        .filter(|(a, n)| accts.iter().any(|x| x == a) && *n == ROLE_NAME)
        .map(|(a, _)| a.to_string());
    let Some(account) = account else {
        return sts_error(
            &sim,
            StatusCode::FORBIDDEN,
            "AccessDenied",
            &format!(
                "User: arn:aws:iam::{}:user/corral is not authorized to perform: sts:AssumeRole on resource: {role}",
                accts[0]
            ),
        );
    };
    let n = sim.aws.seq.fetch_add(1, Ordering::Relaxed);
    let seed = sim.config.seed;
    let key = format!("ASIA{:016X}", h3(seed, 0xA3D0, n));
    let secret = format!("{:016x}{:016x}{:08x}", h3(seed, 0xA3D1, n), h3(seed, 0xA3D2, n), h3(seed, 0xA3D3, n) as u32);
    let token = format!(
        "IQoJb3JpZ2luX2VjE{}",
        crate::util::b64_encode(
            format!("{:016x}{:016x}{:016x}", h3(seed, 0xA3D4, n), h3(seed, 0xA3D5, n), h3(seed, 0xA3D6, n)).as_bytes()
        )
    );
    let nominal = Duration::from_secs(duration);
    let f = &sim.config.faults;
    let ttl = f.token_ttl.unwrap_or(nominal);
    let announced = if f.token_ttl_hidden { nominal } else { ttl };
    sim.aws.sessions.lock().unwrap_or_else(|e| e.into_inner()).insert(
        key.clone(),
        Session { secret: secret.clone(), token: token.clone(), account: account.clone(), dies: Instant::now() + ttl },
    );
    sim.counters.token_issued();
    let ends = SystemTime::now() + announced;
    let d = ends.duration_since(UNIX_EPOCH).unwrap_or_default();
    let expiration = iso_millis(d.as_secs() as i64, u64::from(d.subsec_millis()));
    xml(
        StatusCode::OK,
        format!(
            "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/{STS_VERSION}/\">\n  <AssumeRoleResult>\n    <AssumedRoleUser>\n      <AssumedRoleId>AROA{:016X}:{}</AssumedRoleId>\n      <Arn>arn:aws:sts::{account}:assumed-role/{ROLE_NAME}/{}</Arn>\n    </AssumedRoleUser>\n    <Credentials>\n      <AccessKeyId>{key}</AccessKeyId>\n      <SecretAccessKey>{secret}</SecretAccessKey>\n      <SessionToken>{token}</SessionToken>\n      <Expiration>{expiration}</Expiration>\n    </Credentials>\n  </AssumeRoleResult>\n  <ResponseMetadata>\n    <RequestId>{}</RequestId>\n  </ResponseMetadata>\n</AssumeRoleResponse>\n",
            h3(seed, 0xA3D7, 0),
            escape(name),
            escape(name),
            request_id(&sim)
        ),
    )
}
