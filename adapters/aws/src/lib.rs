//! corral adapter `aws`: AWS EC2 instances across the regions and accounts
//! of a connection, from the EC2 Query API (`DescribeInstances`, XML).
//!
//! ```toml
//! [[connection]]
//! name = "aws-prod"
//! adapter = "aws"
//! [connection.config]
//! access_key_id = "AKIAIOSFODNN7EXAMPLE"
//! secret_access_key = "${AWS_SECRET_ACCESS_KEY}"
//! regions = ["us-east-1", "eu-west-1"]
//! accounts = [{}, { role_arn = "arn:aws:iam::444455556666:role/CorralReadOnly" }]
//! ```
//!
//! # What AWS's API does (and what this adapter relies on)
//!
//! - **Endpoints**: EC2 answers per region at `https://ec2.{region}.amazonaws.com`
//!   (the `endpoint` template; tests point it at a simulator). STS, for
//!   assumed roles, at `https://sts.amazonaws.com` (signed as `us-east-1`) or
//!   a regional STS endpoint.
//! - **Signing**: every request carries an AWS Signature Version 4 over its
//!   method, path, sorted query, signed headers (`host`, `x-amz-date`, and
//!   with temporary keys `x-amz-security-token`) and body hash, with a key
//!   derived from the secret key, the date, the region and the service
//!   (`ec2` or `sts`). A signature whose time is too far from AWS's clock is
//!   refused, so a retry must be signed again.
//! - **Listing**: `Action=DescribeInstances&Version=2016-11-15` with
//!   `MaxResults` (5 to 1000 instances per answer) and the previous answer's
//!   `NextToken`; the XML answer holds `reservationSet/item` (with the
//!   account in `ownerId`) each holding `instancesSet/item`: `instanceId`,
//!   `instanceType`, `instanceState/name`, `privateDnsName`,
//!   `privateIpAddress`, `ipAddress` (public), `vpcId`, `subnetId`,
//!   `platform` (only `windows`; absent for Linux), `launchTime` (the last
//!   start, not the creation), `networkInterfaceSet/item{macAddress,
//!   privateIpAddressesSet}` and `tagSet/item{key,value}`. A top-level
//!   `nextToken` after the reservations says more remain; none means the
//!   last answer. Terminated instances stay listed for a while.
//! - **Throttling**: each account has a token bucket per region for API
//!   calls; an empty bucket answers HTTP **503** with the error code
//!   `RequestLimitExceeded` (no `Retry-After`). For non-mutating calls such
//!   as `DescribeInstances` AWS documents a bucket of 100 refilled at 20 per
//!   second.
//! - **Assumed roles**: `AssumeRole` (`RoleArn`, `RoleSessionName`,
//!   `DurationSeconds` from 900, `ExternalId` when the role's trust policy
//!   asks for one) returns temporary keys (`AccessKeyId`, `SecretAccessKey`,
//!   `SessionToken`) and their `Expiration`; sessions last an hour by
//!   default. A session used after it ended is refused (`RequestExpired`
//!   from EC2, `ExpiredToken` from STS).
//! - **Refusals**: unknown keys and regions not enabled for the account are
//!   401 `AuthFailure`; a wrong signature 403 `SignatureDoesNotMatch`; errors
//!   come as `<Response><Errors><Error><Code>..</Code><Message>..`.
//!
//! # Why `aws-sigv4` and not the AWS SDK
//!
//! The SDK brings its own HTTP client, retry policy and pagination. Every
//! corral adapter sends through corral-http so that the connection's rate
//! limiter (here one per account and region, like EC2's buckets), the
//! counted retries and `Retry-After`/backoff handling, the secret scrubbing
//! of error bodies, the slow-request warnings and the page stream into the
//! engine are corral's, and the same for every vendor. So this adapter uses
//! only `aws-sigv4` (with `aws-credential-types` for the keys) to compute
//! signatures; corral-http calls the adapter's signer ([`creds::Signer`]) on
//! every attempt, just before it is sent, and STS's `AssumeRole` goes
//! through corral-http too.
//!
//! # Streams
//!
//! - `instances`: `cloud_resource` records keyed by the instance's ARN
//!   `arn:aws:ec2:{region}:{account}:instance/{id}`.
//! - `devices`: the same instances as devices, keyed by the same ARN:
//!   hostname and domain from the private DNS name, the network interfaces'
//!   MACs, private and public IPs, and the instance id as the device's
//!   `cloud_instance_id`. Those are the correlation keys EDR and scanner
//!   devices carry too (CrowdStrike's `instance_id`, Tenable's
//!   `aws_ec2_instance_id`, MACs, hostnames), so corral correlates an EC2
//!   instance with the agent running on it; the `instances` record shares the
//!   instance id key as well.
//!
//! Each stream reads every scope (account × region) itself: two listings
//! per scope per run, both within the scope's pace.
//!
//! # Scopes, failures, stale handling
//!
//! Each (account, region) has its own HTTP client and limiter
//! (`requests_per_second`, 10 by default, under EC2's refill of 20), so one
//! busy region never slows another and no bucket is emptied by corral. A
//! 503 `RequestLimitExceeded` that happens anyway (other clients share the
//! account's buckets) is recognised by corral-http through a body rule
//! ([`corral_http::SlowDownRule`]), counted as rate limited and backed off,
//! then retried. A stream reads up to `concurrency` scopes at once; an
//! account's other regions are read once its first region answered, so
//! refused credentials are refused once per account, not once per region.
//! A scope that fails (after retries) does not stop the others: what they
//! return is stored, the failure is named in the run's errors (status
//! partial) through [`corral_core::FetchContext::incomplete`], and the
//! stream is not stale-handled in that run, so nothing of the failed scope
//! goes stale. (The engine's stale handling is per stream; the healthy
//! scopes are stale-handled again by the next complete run.) When every
//! scope fails, the stream fails.
//!
//! No checkpoints: a `NextToken` belongs to one scope and is not meant to
//! outlive the listing; an interrupted run reads again from the start.
//!
//! # Memory and the runtime
//!
//! An answer (at most `page_size` instances, a few MB at 1000) is one page:
//! fetch reads it whole, then on the blocking pool a byte scan checks that
//! the document is complete (an answer cut short is asked for again, three
//! times at most) and reads the top-level `nextToken`. Decoding is quick-xml's
//! streaming reader on the normalize pool ([`normalize`]).
//!
//! # Secrets
//!
//! The secret key, session tokens, external ids and the sessions' secret
//! keys live in `SecretString`s; signing headers are sent marked sensitive;
//! the signer hands every secret it holds to corral-http, which scrubs them
//! from error details. Signatures never appear in errors or logs.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use corral_core::{
    Adapter, AdapterFactory, AdapterInfo, AdapterNotes, AssetKind, AttrType, CheckOutcome, ConfigError, FetchContext,
    FetchError, NormalizedPage, RawPage, StreamInfo,
};
use corral_http::{Auth, HttpClient, HttpConfig, RateConfig, RetryConfig, SlowDownRule, Timeouts};

pub mod config;
pub mod creds;
pub mod fetch;
pub mod normalize;

pub use config::{AccountAccess, Settings};

pub const INSTANCES: &str = "instances";
pub const DEVICES: &str = "devices";

/// Builds `aws` adapters.
#[derive(Debug, Clone, Copy, Default)]
pub struct AwsFactory;

/// Registers this adapter: what the `corral` binary's build script calls.
pub fn register(registry: &mut corral_core::Registry) {
    registry.register(AwsFactory);
}

pub fn instances_stream() -> StreamInfo {
    StreamInfo::new(
        INSTANCES,
        AssetKind::CloudResource,
        "arn:aws:ec2:REGION:ACCOUNT:instance/ID",
        "EC2 instances of every configured account and region (DescribeInstances)",
    )
    .fills("provider", "`aws`")
    .fills("account", "the reservation's `ownerId`")
    .fills("region", "the region listed")
    .fills("resource_type", "`ec2:instance`")
    .fills("resource_id", "`instanceId`")
    .fills("arn", "`arn:aws:ec2:{region}:{ownerId}:instance/{instanceId}`")
    .fills("name", "the `Name` tag")
    .fills("state", "`instanceState/name`")
    .fills("tags", "`tagSet/item{key,value}`")
    .fills("public_ips", "`ipAddress`")
    .fills("private_ips", "`privateIpAddress` and every interface's `privateIpAddressesSet`")
    .attribute("instance_type", AttrType::String, "`instanceType`, e.g. m5.large.")
    .attribute("vpc_id", AttrType::String, "`vpcId`.")
    .attribute("subnet_id", AttrType::String, "`subnetId`.")
    .attribute("availability_zone", AttrType::String, "`placement/availabilityZone`.")
    .attribute("platform", AttrType::String, "`platform`: `windows`, absent for Linux.")
    .attribute("private_dns_name", AttrType::String, "`privateDnsName`.")
    .attribute(
        "mac_addresses",
        AttrType::StringList,
        "MACs of the network interfaces (`networkInterfaceSet/item/macAddress`).",
    )
    .attribute("launch_time", AttrType::Timestamp, "`launchTime`: when the instance last started.")
}

pub fn devices_stream() -> StreamInfo {
    StreamInfo::new(
        DEVICES,
        AssetKind::Device,
        "arn:aws:ec2:REGION:ACCOUNT:instance/ID",
        "The same EC2 instances as devices, for correlation with EDR and scanner devices",
    )
    .fills("hostname", "`privateDnsName`'s host label (`ip-10-0-0-5`)")
    .fills("domain", "`privateDnsName`'s domain (`eu-west-1.compute.internal`)")
    .fills("ip_addresses", "`privateIpAddress`, the interfaces' private IPs, `ipAddress`")
    .fills("mac_addresses", "`networkInterfaceSet/item/macAddress`")
    .fills("os.family", "`platform` (`windows`; unknown otherwise)")
    .fills("cloud_instance_id", "`instanceId`")
    .fills("tags", "`tagSet` as `key=value`")
    .attribute(
        "state",
        AttrType::String,
        "`instanceState/name`: pending, running, stopping, stopped, shutting-down, terminated.",
    )
    .attribute("instance_type", AttrType::String, "`instanceType`.")
    .attribute("region", AttrType::String, "The region the instance is in.")
    .attribute("account", AttrType::String, "The account that owns it (`ownerId`).")
}

impl AdapterFactory for AwsFactory {
    fn info(&self) -> AdapterInfo {
        AdapterInfo {
            name: "aws".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "AWS EC2: instances of several accounts and regions as cloud resources and devices \
                          (DescribeInstances, SigV4, XML)"
                .into(),
            streams: vec![instances_stream(), devices_stream()],
            config: config::fields(),
            notes: AdapterNotes {
                auth: "AWS Signature Version 4 with an access key (and session token, if temporary); each account \
                       in `accounts` with a `role_arn` is reached by STS AssumeRole with that key, one-hour \
                       sessions renewed before they end (and once more if AWS refuses one as expired). `check` \
                       lists at most five instances in the first account's first region."
                    .into(),
                permissions: vec![
                    "The access key's identity: `ec2:DescribeInstances` in its own account (if listed), and \
                     `sts:AssumeRole` on each role_arn."
                        .into(),
                    "Each role: `ec2:DescribeInstances` (the managed policy AmazonEC2ReadOnlyAccess covers it), \
                     and a trust policy that lets the key's identity assume it (with the ExternalId, if set)."
                        .into(),
                    "Regions must be enabled for the accounts (opt-in regions answer AuthFailure otherwise).".into(),
                ],
                rate_limits: "EC2 throttles per account and region (a token bucket; for describe calls 100, \
                              refilled 20 per second). corral paces each account/region at `requests_per_second` \
                              (10), reads `concurrency` of them at once, and backs off and retries a 503 \
                              RequestLimitExceeded (counted as rate limited in the run summary)."
                    .into(),
            },
        }
    }

    fn build(&self, connection: &str, config: serde_json::Value) -> Result<Arc<dyn Adapter>, ConfigError> {
        Ok(Arc::new(Aws::from_config(connection, config)?))
    }
}

/// A configured `aws` connection.
#[derive(Debug)]
pub struct Aws {
    connection: String,
    settings: Settings,
    info: AdapterInfo,
    scopes: Vec<fetch::Scope>,
    sources: Vec<Arc<creds::Source>>,
}

impl Aws {
    /// Parse and validate `config` and build the HTTP clients. Sends nothing.
    pub fn from_config(connection: &str, config: serde_json::Value) -> Result<Self, ConfigError> {
        Self::new(connection, config::parse(config)?)
    }

    pub fn new(connection: &str, settings: Settings) -> Result<Self, ConfigError> {
        let base = creds::Keys {
            access_key_id: settings.access_key_id.clone(),
            secret: settings.secret_access_key.clone(),
            token: settings.session_token.clone(),
        };
        let mut sources = Vec::new();
        for a in &settings.accounts {
            let source = match a {
                AccountAccess::Own => creds::Source::Static(base.clone()),
                AccountAccess::Role { arn, external_id, .. } => creds::Source::role(
                    connection,
                    base.clone(),
                    arn.clone(),
                    external_id.clone(),
                    settings.role_session_name.clone(),
                    settings.role_session,
                    &settings.sts_endpoint,
                    &settings.sts_region,
                    settings.timeout,
                )
                .map_err(|e| ConfigError::field("sts_endpoint", e.to_string()))?,
            };
            sources.push(Arc::new(source));
        }
        let mut scopes = Vec::new();
        for (i, a) in settings.accounts.iter().enumerate() {
            for region in &settings.regions {
                let signer = Arc::new(creds::Signer::new(sources[i].clone(), region, "ec2"));
                let rate = RateConfig::per_second(settings.requests_per_second).with_max_in_flight(2);
                let http = HttpClient::new(
                    HttpConfig::new(settings.endpoint_of(region))
                        .with_connection(connection)
                        .with_auth(Auth::Signed(signer))
                        .with_rate(rate)
                        .with_slow_down(SlowDownRule::body_contains(503, "<Code>RequestLimitExceeded</Code>"))
                        .with_timeouts(Timeouts { total: settings.timeout, ..Timeouts::default() }),
                    Arc::default(),
                )
                .map_err(|e| ConfigError::field("endpoint", e.to_string()))?;
                scopes.push(fetch::Scope {
                    account: a.clone(),
                    account_index: i,
                    region: region.clone(),
                    client: http,
                });
            }
        }
        Ok(Aws { connection: connection.into(), settings, info: AwsFactory.info(), scopes, sources })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Sessions STS issued to this connection so far (all accounts).
    pub fn sessions_issued(&self) -> u64 {
        self.sources.iter().map(|s| s.sessions_issued()).sum()
    }
}

#[async_trait]
impl Adapter for Aws {
    fn info(&self) -> &AdapterInfo {
        &self.info
    }

    async fn check(&self) -> CheckOutcome {
        self.check_within(corral_http::CHECK_TIMEOUT).await
    }

    /// At most five instances of the first scope.
    async fn check_within(&self, limit: Duration) -> CheckOutcome {
        let Some(scope) = self.scopes.first() else {
            return CheckOutcome::Failed {
                endpoint: String::new(),
                status: None,
                detail: "no account and region configured".into(),
            };
        };
        let params = [("Action", "DescribeInstances"), ("Version", fetch::EC2_VERSION), ("MaxResults", "5")];
        match scope.client.get("").query(&params).retry(RetryConfig::within(limit)).send_bytes().await {
            Ok(r) => CheckOutcome::Ok {
                detail: format!("{}: {} answered HTTP {}", scope.label(), r.endpoint(), r.status.as_u16()),
            },
            Err(e) => {
                tracing::debug!(connection = %self.connection, error = %e, "aws check failed");
                e.to_check_outcome()
            }
        }
    }

    async fn fetch(&self, ctx: FetchContext) -> Result<(), FetchError> {
        match ctx.stream.name.as_str() {
            INSTANCES | DEVICES => fetch::stream(&self.scopes, &self.settings, &ctx).await,
            other => Err(FetchError::UnknownStream(other.to_string())),
        }
    }

    fn normalize(&self, page: &RawPage) -> NormalizedPage {
        normalize::page(page)
    }

    /// Each scope's client holds a connection per stream (two in flight),
    /// and one more while a finished request's connection returns to its
    /// pool (see [`Adapter::max_open_files`]); STS one per role. The full
    /// sync of the testkit once held 8 with 7 declared (three scopes).
    fn max_open_files(&self) -> usize {
        let roles = self.settings.accounts.iter().filter(|a| matches!(a, AccountAccess::Role { .. })).count();
        3 * self.scopes.len() + roles
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn info_declares_two_streams_without_problems() {
        let info = AwsFactory.info();
        assert_eq!(info.name, "aws");
        assert!(info.problems().is_empty(), "{:?}", info.problems());
        let kinds: Vec<(String, AssetKind)> = info.streams.iter().map(|s| (s.name.clone(), s.kind)).collect();
        assert_eq!(
            kinds,
            [(INSTANCES.to_string(), AssetKind::CloudResource), (DEVICES.to_string(), AssetKind::Device)]
        );
        let secrets: Vec<&str> = info.config.iter().filter(|f| f.secret).map(|f| f.name.as_str()).collect();
        assert_eq!(secrets, ["secret_access_key", "session_token"]);
    }

    #[test]
    fn build_sends_nothing_and_debug_hides_the_secrets() {
        let cfg = json!({
            "access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": "wJalr-hunter2", "session_token": "tok-hunter2",
            "regions": ["us-east-1", "eu-west-1"],
            "accounts": [{}, {"role_arn": "arn:aws:iam::444455556666:role/R", "external_id": "ext-hunter2"}],
        });
        let a = Aws::from_config("aws", cfg).expect("builds");
        assert!(!format!("{a:?}").contains("hunter2"));
        assert_eq!(a.scopes.len(), 4);
        assert_eq!(a.max_open_files(), 13);
    }
}
