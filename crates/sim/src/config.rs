//! Simulator configuration.

use std::time::Duration;

/// Which vendor API a simulator serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Vendor {
    CrowdStrike,
    Okta,
    MsGraph,
    /// A generic API described by a [`crate::kit::KitSpec`] (start it with
    /// [`crate::kit::start`]).
    Kit,
    /// Tenable Vulnerability Management: asset and vulnerability export jobs.
    Tenable,
    /// Qualys VMDR: host list detection, host list and KnowledgeBase (XML).
    Qualys,
    /// AWS: EC2 DescribeInstances per region and STS AssumeRole (SigV4, XML).
    Aws,
}

impl Vendor {
    pub fn name(self) -> &'static str {
        match self {
            Vendor::CrowdStrike => "crowdstrike",
            Vendor::Okta => "okta",
            Vendor::MsGraph => "msgraph",
            Vendor::Kit => "kit",
            Vendor::Tenable => "tenable",
            Vendor::Qualys => "qualys",
            Vendor::Aws => "aws",
        }
    }
}

impl std::str::FromStr for Vendor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "crowdstrike" | "falcon" | "cs" => Ok(Vendor::CrowdStrike),
            "okta" => Ok(Vendor::Okta),
            "msgraph" | "graph" | "intune" | "entra" => Ok(Vendor::MsGraph),
            "tenable" | "tenable-vm" | "tio" => Ok(Vendor::Tenable),
            "qualys" | "vmdr" => Ok(Vendor::Qualys),
            "aws" | "ec2" => Ok(Vendor::Aws),
            other => Err(format!("unknown vendor {other:?} (crowdstrike, okta, msgraph, tenable, qualys, aws)")),
        }
    }
}

/// Latency added to every request before it is answered.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Latency {
    #[default]
    None,
    Fixed(Duration),
    /// Uniformly distributed in `min..=max`, drawn from the seeded generator.
    Uniform {
        min: Duration,
        max: Duration,
    },
}

/// At most `requests` per `per` (sliding window for CrowdStrike and Graph, fixed
/// windows for Okta, like the real APIs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub requests: u32,
    pub per: Duration,
}

impl RateLimit {
    pub fn per_second(requests: u32) -> Self {
        RateLimit { requests, per: Duration::from_secs(1) }
    }
    pub fn per_minute(requests: u32) -> Self {
        RateLimit { requests, per: Duration::from_secs(60) }
    }
}

impl std::str::FromStr for RateLimit {
    type Err = String;
    /// `100/s`, `6000/min`, `2000/20s`, `5/500ms`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (n, per) = s.split_once('/').ok_or_else(|| format!("rate limit {s:?}: expected N/PERIOD, e.g. 100/s"))?;
        let requests: u32 = n.trim().parse().map_err(|_| format!("rate limit {s:?}: bad count"))?;
        let per = per.trim();
        let split = per.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(per.len());
        let (num, unit) = per.split_at(split);
        let num: f64 =
            if num.is_empty() { 1.0 } else { num.parse().map_err(|_| format!("rate limit {s:?}: bad period"))? };
        let secs = match unit {
            "ms" => num / 1000.0,
            "s" | "sec" | "" => num,
            "m" | "min" => num * 60.0,
            "h" => num * 3600.0,
            _ => return Err(format!("rate limit {s:?}: unit must be ms, s, min or h")),
        };
        if requests == 0 || secs <= 0.0 {
            return Err(format!("rate limit {s:?}: must be positive"));
        }
        Ok(RateLimit { requests, per: Duration::from_secs_f64(secs) })
    }
}

/// How a truncated answer is cut.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Truncation {
    /// A complete, valid HTTP 200 whose body is cut JSON (a broken proxy or
    /// cache): only a JSON decoder notices.
    #[default]
    Json,
    /// What a dropped connection looks like: `Content-Length` announces the
    /// whole body, part of it is sent, then the connection closes. An HTTP
    /// client sees an incomplete body.
    Connection,
}

impl std::str::FromStr for Truncation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(Truncation::Json),
            "connection" | "conn" => Ok(Truncation::Connection),
            other => Err(format!("unknown truncation {other:?} (json, connection)")),
        }
    }
}

/// Faults injected into responses. All random draws come from a generator seeded with
/// `SimConfig::seed`, so a sequential client sees the same faults on every run.
#[derive(Clone, Debug, PartialEq)]
pub struct Faults {
    /// Probability that a request is answered 500/502/503 (502 with an HTML body).
    pub error_5xx_rate: f64,
    /// Probability that a response is delayed by `slow`.
    pub slow_rate: f64,
    pub slow: Duration,
    /// Probability that a request hangs for `hang` (or until shutdown) before answering.
    pub hang_rate: f64,
    pub hang: Duration,
    /// Probability that a 200 body is cut in the middle (see `truncation`).
    pub truncate_rate: f64,
    /// How truncated answers are cut (default: valid HTTP, invalid JSON).
    pub truncation: Truncation,
    /// Data requests (1-based, in arrival order, counting only faultable ones)
    /// whose 200 answer is truncated, whatever `truncate_rate` says.
    pub truncate_requests: Vec<u64>,
    /// Data requests (1-based, as above) that hang for `hang`.
    pub hang_requests: Vec<u64>,
    /// Probability that a 200 body is replaced by malformed JSON.
    pub malformed_rate: f64,
    /// Tokens stop working this long after they were issued (401 afterwards).
    pub token_ttl: Option<Duration>,
    /// When true, `expires_in` still announces the vendor's nominal lifetime while the
    /// token dies after `token_ttl` (a server-side revocation: the client only learns
    /// from a 401). When false, `expires_in` announces `token_ttl`.
    pub token_ttl_hidden: bool,
    /// Page indices that always answer malformed JSON (see README for what a page index
    /// is on each endpoint).
    pub malformed_pages: Vec<usize>,
    /// Serve each entry of `malformed_pages` malformed only once (a retry then succeeds).
    pub malformed_pages_once: bool,
    /// Apply 5xx/slow/hang to token endpoints too (default: data endpoints only).
    pub include_auth: bool,
    /// Okta: the API token is revoked after this many authorized requests; every
    /// later request gets 401 `E0000011`, as after an admin revoked it.
    pub token_revoked_after: Option<u64>,
    /// Refused credentials are quoted back in the 401's body (`invalid client
    /// secret 'xyz'`), as some vendors and proxies do: a client must not
    /// pass the body on unscrubbed.
    pub echo_credentials: bool,
    /// Tenable: an export chunk expires this long after it became available
    /// (404 afterwards; the vendor keeps them 24 hours). Counted as `chunk_expired`.
    pub chunk_ttl: Option<Duration>,
    /// Tenable: `(export number, chunk id)` pairs (exports numbered from 1 in
    /// creation order, assets and vulns together) whose chunk is already
    /// expired when fetched (404, `chunk_expired`).
    pub expired_chunks: Vec<(u64, u64)>,
    /// Tenable: these exports (numbered as above) end CANCELLED halfway
    /// (counted as `export_cancelled`); their remaining chunks are listed in
    /// `chunks_cancelled` and answer 404.
    pub cancel_exports: Vec<u64>,
    /// Tenable: these exports end in ERROR halfway (`export_error`); their
    /// remaining chunks are listed in `chunks_failed` and answer 404.
    pub error_exports: Vec<u64>,
    /// AWS: the first N `DescribeInstances` calls are answered 503
    /// `RequestLimitExceeded` whatever the token buckets hold.
    pub aws_throttles: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            error_5xx_rate: 0.0,
            slow_rate: 0.0,
            slow: Duration::from_secs(2),
            hang_rate: 0.0,
            hang: Duration::from_secs(3600),
            truncate_rate: 0.0,
            truncation: Truncation::Json,
            truncate_requests: Vec::new(),
            hang_requests: Vec::new(),
            malformed_rate: 0.0,
            token_ttl: None,
            token_ttl_hidden: false,
            malformed_pages: Vec::new(),
            malformed_pages_once: false,
            include_auth: false,
            token_revoked_after: None,
            echo_credentials: false,
            chunk_ttl: None,
            expired_chunks: Vec::new(),
            cancel_exports: Vec::new(),
            error_exports: Vec::new(),
            aws_throttles: 0,
        }
    }
}

/// Credentials the simulator accepts.
#[derive(Clone, Debug, PartialEq)]
pub struct Credentials {
    /// OAuth client id (CrowdStrike, Graph).
    pub client_id: String,
    /// OAuth client secret (CrowdStrike, Graph).
    pub client_secret: String,
    /// Static API token (Okta `SSWS <token>`).
    pub token: String,
    /// Graph tenant accepted in `/{tenant}/oauth2/v2.0/token`.
    pub tenant: String,
}

impl Default for Credentials {
    fn default() -> Self {
        Credentials {
            client_id: "corral-sim-client".into(),
            client_secret: "corral-sim-secret".into(),
            token: "corral-sim-token".into(),
            tenant: "corral-sim-tenant".into(),
        }
    }
}

/// The token endpoint's own rate limit.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum TokenRateLimit {
    /// What the vendor documents: CrowdStrike 300 per minute (per IP, sliding);
    /// none for Graph (not documented) and Okta (no token endpoint).
    #[default]
    Vendor,
    Off,
    Limit(RateLimit),
}

impl TokenRateLimit {
    /// The limit in force for `vendor`.
    pub fn for_vendor(self, vendor: Vendor) -> Option<RateLimit> {
        match (self, vendor) {
            (TokenRateLimit::Limit(l), _) => Some(l),
            (TokenRateLimit::Vendor, Vendor::CrowdStrike) => Some(RateLimit::per_minute(300)),
            _ => None,
        }
    }
}

impl std::str::FromStr for TokenRateLimit {
    type Err = String;
    /// `vendor`, `off`, or a rate such as `300/min`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "vendor" | "default" => Ok(TokenRateLimit::Vendor),
            "off" | "none" => Ok(TokenRateLimit::Off),
            other => other.parse().map(TokenRateLimit::Limit),
        }
    }
}

/// Vendor-specific behaviour switches where the real API is not pinned down.
#[derive(Clone, Debug, PartialEq)]
pub struct Behavior {
    /// Okta: send `rel="self"` and `rel="next"` in ONE comma-joined Link header
    /// (default: two separate header lines, like the real API).
    pub okta_joined_link: bool,
    /// CrowdStrike: a scroll `offset` token expires this long after it was issued.
    pub scroll_ttl: Duration,
    /// Answer 429 when more than this many requests are in flight (Okta has ~75).
    pub max_concurrent: Option<usize>,
    /// Rate limit of the token endpoints (CrowdStrike's 300/min by default).
    pub token_rate_limit: TokenRateLimit,
    /// Graph: put `@odata.nextLink` after `value` (real Graph does on some
    /// endpoints) instead of before it.
    pub graph_next_link_after_value: bool,
    /// Tenable and Qualys: mean findings (detections) per asset (host); each
    /// carries between 0 and twice this many. Default 4, at most 127.
    pub findings_per_asset: u32,
    /// Tenable: status polls until an export is FINISHED (the first poll says
    /// QUEUED; chunks become available over the polls between). Default 3.
    pub export_polls: u32,
    /// Tenable: exports of one kind (assets, vulns) running at once before a
    /// new one is refused with 409. Default 2 (the vendor's documented limit
    /// for asset exports; taken for vulnerability exports too).
    pub max_running_exports: usize,
    /// Tenable: a finding's `output` is padded to about this many bytes. Default 200.
    pub finding_output_bytes: usize,
    /// Qualys: API calls allowed to run at once (`X-Concurrency-Limit-Limit`);
    /// one more is a 409 (code 1960). Default 2.
    pub qualys_concurrency: usize,
    /// AWS: regions not enabled for the accounts: `DescribeInstances` there
    /// answers 401 `AuthFailure`, as EC2 does.
    pub aws_disabled_regions: Vec<String>,
}

impl Default for Behavior {
    fn default() -> Self {
        Behavior {
            okta_joined_link: false,
            scroll_ttl: Duration::from_secs(120),
            max_concurrent: None,
            token_rate_limit: TokenRateLimit::Vendor,
            graph_next_link_after_value: false,
            findings_per_asset: 4,
            export_polls: 3,
            max_running_exports: 2,
            finding_output_bytes: 200,
            qualys_concurrency: 2,
            aws_disabled_regions: Vec::new(),
        }
    }
}

/// Everything a simulator instance needs.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    pub seed: u64,
    /// Number of records served by each listing.
    pub size: usize,
    pub latency: Latency,
    pub rate_limit: Option<RateLimit>,
    pub faults: Faults,
    pub credentials: Credentials,
    /// Changes some records (see `data` module docs); run N+1 with `generation + 1`.
    pub generation: u64,
    pub behavior: Behavior,
    /// Worker threads of the simulator's own tokio runtime (a dedicated OS thread), so
    /// that serving never adds lag to the caller's runtime. 0 = spawn on the caller's
    /// runtime instead. Default 1.
    pub threads: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            size: 1000,
            latency: Latency::None,
            rate_limit: None,
            faults: Faults::default(),
            credentials: Credentials::default(),
            generation: 0,
            behavior: Behavior::default(),
            threads: 1,
        }
    }
}

impl SimConfig {
    pub fn new(seed: u64, size: usize) -> Self {
        SimConfig { seed, size, ..SimConfig::default() }
    }
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    pub fn size(mut self, size: usize) -> Self {
        self.size = size;
        self
    }
    pub fn generation(mut self, generation: u64) -> Self {
        self.generation = generation;
        self
    }
    pub fn latency(mut self, latency: Latency) -> Self {
        self.latency = latency;
        self
    }
    pub fn latency_ms(self, ms: u64) -> Self {
        self.latency(Latency::Fixed(Duration::from_millis(ms)))
    }
    pub fn rate_limit(mut self, requests: u32, per: Duration) -> Self {
        self.rate_limit = Some(RateLimit { requests, per });
        self
    }
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }
    pub fn error_rate(mut self, rate: f64) -> Self {
        self.faults.error_5xx_rate = rate;
        self
    }
    pub fn malformed_pages(mut self, pages: impl IntoIterator<Item = usize>) -> Self {
        self.faults.malformed_pages = pages.into_iter().collect();
        self
    }
    pub fn token_ttl(mut self, ttl: Duration) -> Self {
        self.faults.token_ttl = Some(ttl);
        self
    }
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }
    pub fn behavior(mut self, behavior: Behavior) -> Self {
        self.behavior = behavior;
        self
    }
}
