//! The AWS simulator is no kinder than AWS: signatures are recomputed (a
//! wrong secret, an old date, a scope for another region are refused with
//! AWS's XML errors), `MaxResults` outside 5..=1000 and foreign `NextToken`s
//! are refused, STS refuses roles outside the simulator's accounts.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use corral_http::{
    Auth, HeaderName, HeaderValue, HttpClient, HttpConfig, HttpError, RequestSigner, Response, RetryConfig, Signature,
    ToSign,
};
use corral_sim::{SimConfig, SimHandle};

/// Signs with the given secret, for `region`, at now minus `age`.
struct TestSigner {
    key: String,
    secret: String,
    region: String,
    service: &'static str,
    age: Duration,
}

#[async_trait]
impl RequestSigner for TestSigner {
    async fn sign(&self, req: ToSign<'_>) -> Result<Signature, HttpError> {
        let creds = aws_credential_types::Credentials::new(&self.key, &self.secret, None, None, "test");
        let identity = creds.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(self.service)
            .time(SystemTime::now() - self.age)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| HttpError::Config(e.to_string()))?
            .into();
        let headers: Vec<(&str, &str)> =
            req.headers.iter().filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?))).collect();
        let signable = SignableRequest::new(
            req.method.as_str(),
            req.url.as_str(),
            headers.into_iter(),
            SignableBody::Bytes(req.body),
        )
        .map_err(|e| HttpError::Config(e.to_string()))?;
        let (instructions, _) = sign(signable, &params).map_err(|e| HttpError::Config(e.to_string()))?.into_parts();
        let headers = instructions
            .into_parts()
            .0
            .into_iter()
            .filter_map(|h| Some((HeaderName::from_static(h.name()), HeaderValue::from_str(h.value()).ok()?)))
            .collect();
        Ok(Signature { headers, generation: 0 })
    }
    fn secret_forms(&self) -> Vec<String> {
        vec![self.secret.clone()]
    }
}

fn client(sim: &SimHandle, path: &str, secret: &str, region: &str, service: &'static str, age: Duration) -> HttpClient {
    let signer = TestSigner {
        key: sim.config.credentials.client_id.clone(),
        secret: secret.into(),
        region: region.into(),
        service,
        age,
    };
    HttpClient::new(
        HttpConfig::new(format!("{}/{path}", sim.base_url)).with_auth(Auth::Signed(Arc::new(signer))),
        Arc::default(),
    )
    .expect("client")
}

/// One call, every refusal returned as an answer.
async fn call(c: &HttpClient, params: &[(&str, &str)]) -> Response {
    let mut rb = c.get("").query(params).retry(RetryConfig::none());
    for s in [400, 401, 403, 404] {
        rb = rb.allow_status(s);
    }
    rb.send_bytes().await.expect("an answer")
}

fn code(r: &Response) -> (u16, String) {
    let body = String::from_utf8_lossy(&r.body);
    let code = body.split("<Code>").nth(1).and_then(|s| s.split("</Code>").next()).unwrap_or("").to_string();
    (r.status.as_u16(), code)
}

const LIST: [(&str, &str); 2] = [("Action", "DescribeInstances"), ("Version", "2016-11-15")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_are_checked_like_aws_does() {
    let sim = common::start(SimConfig::new(83, 20)).await;
    let secret = sim.config.credentials.client_secret.clone();
    let good = client(&sim, "eu-west-1", &secret, "eu-west-1", "ec2", Duration::ZERO);
    assert_eq!(call(&good, &LIST).await.status.as_u16(), 200);
    let wrong = client(&sim, "eu-west-1", "not-the-secret", "eu-west-1", "ec2", Duration::ZERO);
    assert_eq!(code(&call(&wrong, &LIST).await), (403, "SignatureDoesNotMatch".into()));
    let old = client(&sim, "eu-west-1", &secret, "eu-west-1", "ec2", Duration::from_secs(20 * 60));
    assert_eq!(code(&call(&old, &LIST).await), (400, "RequestExpired".into()));
    let other_region = client(&sim, "eu-west-1", &secret, "us-east-1", "ec2", Duration::ZERO);
    assert_eq!(code(&call(&other_region, &LIST).await), (403, "SignatureDoesNotMatch".into()));
    let c = sim.counters.snapshot();
    assert_eq!((c.status(200), c.status(403), c.status(400)), (1, 2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_results_and_next_tokens_are_validated() {
    let sim = common::start(SimConfig::new(83, 20)).await;
    let secret = sim.config.credentials.client_secret.clone();
    let c = client(&sim, "eu-west-1", &secret, "eu-west-1", "ec2", Duration::ZERO);
    for bad in ["4", "1001", "x"] {
        let r = call(&c, &[LIST[0], LIST[1], ("MaxResults", bad)]).await;
        assert_eq!(code(&r), (400, "InvalidParameterValue".into()), "MaxResults={bad}");
    }
    for ok in ["5", "1000"] {
        assert_eq!(call(&c, &[LIST[0], LIST[1], ("MaxResults", ok)]).await.status.as_u16(), 200, "MaxResults={ok}");
    }
    // A token of eu-west-1 is refused in us-east-1; a made-up one anywhere.
    let r = call(&c, &[LIST[0], LIST[1], ("MaxResults", "5")]).await;
    let body = String::from_utf8_lossy(&r.body).to_string();
    let token = body.split("<nextToken>").nth(1).and_then(|s| s.split("</nextToken>").next()).expect("a token");
    let us = client(&sim, "us-east-1", &secret, "us-east-1", "ec2", Duration::ZERO);
    let r = call(&us, &[LIST[0], LIST[1], ("MaxResults", "5"), ("NextToken", token)]).await;
    assert_eq!(code(&r), (400, "InvalidParameterValue".into()));
    let r = call(&c, &[LIST[0], LIST[1], ("MaxResults", "5"), ("NextToken", "bm9wZQ")]).await;
    assert_eq!(code(&r), (400, "InvalidParameterValue".into()));
    let r = call(&c, &[("Action", "DescribeInstances")]).await;
    assert_eq!(code(&r), (400, "MissingParameter".into()));
    let r = call(&client(&sim, "moon-1", &secret, "moon-1", "ec2", Duration::ZERO), &LIST).await;
    assert_eq!(r.status.as_u16(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_refuses_a_role_outside_its_accounts_and_bad_durations() {
    let sim = common::start(SimConfig::new(83, 20)).await;
    let secret = sim.config.credentials.client_secret.clone();
    let sts = client(&sim, "sts", &secret, "us-east-1", "sts", Duration::ZERO);
    let assume = |role: String, duration: &'static str| {
        let sts = sts.clone();
        async move {
            let form = [
                ("Action", "AssumeRole".to_string()),
                ("Version", "2011-06-15".into()),
                ("RoleArn", role),
                ("RoleSessionName", "t".repeat(8)),
                ("DurationSeconds", duration.into()),
            ];
            let mut rb = sts.post_form("", &form).retry(RetryConfig::none());
            for s in [400, 403] {
                rb = rb.allow_status(s);
            }
            code(&rb.send_bytes().await.expect("an answer"))
        }
    };
    let accounts = corral_sim::data::aws::accounts(83);
    let role = |a: &str| format!("arn:aws:iam::{a}:role/{}", corral_sim::data::aws::ROLE_NAME);
    assert_eq!(assume(role(&accounts[1]), "900").await.0, 200);
    assert_eq!(assume(role("999999999999"), "900").await, (403, "AccessDenied".into()));
    assert_eq!(assume(role(&accounts[1]), "899").await, (400, "ValidationError".into()));
    assert_eq!(sim.counters.snapshot().tokens_issued, 1);
}
