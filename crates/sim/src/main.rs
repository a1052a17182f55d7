//! `corral-sim`: run a vendor API simulator from the command line.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use corral_sim::data::crowdstrike::CsData;
use corral_sim::data::msgraph::GraphData;
use corral_sim::data::okta::OktaData;
use corral_sim::data::qualys::QualysData;
use corral_sim::data::tenable::{TenableData, VulnFilter};
use corral_sim::{Behavior, Credentials, Faults, Latency, RateLimit, SimConfig, TokenRateLimit, Truncation, Vendor};

#[derive(Parser)]
#[command(name = "corral-sim", version, about = "Simulated vendor APIs for corral tests and benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve one vendor API until Ctrl-C.
    Serve(Box<Serve>),
    /// Print a dataset as JSON lines (what a full sync should fetch).
    Dump(Dump),
}

#[derive(Args)]
struct DataArgs {
    /// crowdstrike | okta | msgraph
    #[arg(long)]
    vendor: Vendor,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Records per listing.
    #[arg(long, default_value_t = 1000)]
    size: usize,
    /// Dataset generation (some records change between generations).
    #[arg(long, default_value_t = 0)]
    generation: u64,
}

#[derive(Args)]
struct Dump {
    #[command(flatten)]
    data: DataArgs,
    /// msgraph only: dump users instead of managed devices.
    #[arg(long)]
    users: bool,
}

#[derive(Args)]
struct Serve {
    #[command(flatten)]
    data: DataArgs,
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// 0 picks a free port.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Fixed latency per request; with --latency-max-ms, the minimum of a uniform range.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    #[arg(long)]
    latency_max_ms: Option<u64>,
    /// e.g. 100/s, 6000/min, 2000/20s (none by default).
    #[arg(long)]
    rate_limit: Option<RateLimit>,
    /// Probability of a 500/502/503 answer.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    #[arg(long, default_value_t = 0.0)]
    slow_rate: f64,
    #[arg(long, default_value_t = 2000)]
    slow_ms: u64,
    #[arg(long, default_value_t = 0.0)]
    hang_rate: f64,
    #[arg(long, default_value_t = 3_600_000)]
    hang_ms: u64,
    #[arg(long, default_value_t = 0.0)]
    truncate_rate: f64,
    /// How truncated answers are cut: json (a complete 200 with cut JSON) or
    /// connection (Content-Length of the whole body, connection closed mid-body).
    #[arg(long, default_value = "json")]
    truncate_mode: Truncation,
    /// Data requests (1-based, in arrival order) to truncate, e.g. 2,5.
    #[arg(long, value_delimiter = ',')]
    truncate_requests: Vec<u64>,
    /// Data requests (1-based, in arrival order) that hang for --hang-ms.
    #[arg(long, value_delimiter = ',')]
    hang_requests: Vec<u64>,
    #[arg(long, default_value_t = 0.0)]
    malformed_rate: f64,
    /// Page indices that answer malformed JSON, e.g. 3,7.
    #[arg(long, value_delimiter = ',')]
    malformed_pages: Vec<usize>,
    /// Serve each --malformed-pages entry malformed only once.
    #[arg(long)]
    malformed_once: bool,
    /// Tokens stop working after this many seconds.
    #[arg(long)]
    token_ttl_s: Option<f64>,
    /// Announce the vendor's nominal expires_in even when --token-ttl-s is shorter.
    #[arg(long)]
    token_ttl_hidden: bool,
    /// Apply 5xx/slow/hang faults to token endpoints too.
    #[arg(long)]
    faults_on_auth: bool,
    /// Okta: the API token is revoked after this many authorized requests.
    #[arg(long)]
    token_revoked_after: Option<u64>,
    /// Token endpoint rate limit: vendor (CrowdStrike 300/min, others none), off, or e.g. 10/s.
    #[arg(long, default_value = "vendor")]
    token_rate_limit: TokenRateLimit,
    /// Graph: put @odata.nextLink after value instead of before it.
    #[arg(long)]
    graph_next_link_after_value: bool,
    /// Okta: send rel="self" and rel="next" in one comma-joined Link header.
    #[arg(long)]
    okta_joined_link: bool,
    /// CrowdStrike: scroll offsets expire after this many seconds.
    #[arg(long, default_value_t = 120)]
    scroll_ttl_s: u64,
    /// 429 when more requests than this are in flight.
    #[arg(long)]
    max_concurrent: Option<usize>,
    #[arg(long, env = "CORRAL_SIM_CLIENT_ID", default_value = "corral-sim-client")]
    client_id: String,
    #[arg(long, env = "CORRAL_SIM_CLIENT_SECRET", default_value = "corral-sim-secret")]
    client_secret: String,
    #[arg(long, env = "CORRAL_SIM_TOKEN", default_value = "corral-sim-token")]
    token: String,
    #[arg(long, default_value = "corral-sim-tenant")]
    tenant: String,
    /// Worker threads serving requests.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

impl Serve {
    fn config(&self) -> SimConfig {
        let ms = Duration::from_millis;
        let latency = match (self.latency_ms, self.latency_max_ms) {
            (min, Some(max)) => Latency::Uniform { min: ms(min), max: ms(max) },
            (0, None) => Latency::None,
            (fixed, None) => Latency::Fixed(ms(fixed)),
        };
        SimConfig {
            seed: self.data.seed,
            size: self.data.size,
            generation: self.data.generation,
            latency,
            rate_limit: self.rate_limit,
            faults: Faults {
                error_5xx_rate: self.error_rate,
                slow_rate: self.slow_rate,
                slow: ms(self.slow_ms),
                hang_rate: self.hang_rate,
                hang: ms(self.hang_ms),
                truncate_rate: self.truncate_rate,
                truncation: self.truncate_mode,
                truncate_requests: self.truncate_requests.clone(),
                hang_requests: self.hang_requests.clone(),
                malformed_rate: self.malformed_rate,
                token_ttl: self.token_ttl_s.map(Duration::from_secs_f64),
                token_ttl_hidden: self.token_ttl_hidden,
                malformed_pages: self.malformed_pages.clone(),
                malformed_pages_once: self.malformed_once,
                include_auth: self.faults_on_auth,
                token_revoked_after: self.token_revoked_after,
                echo_credentials: false,
                ..Faults::default()
            },
            credentials: Credentials {
                client_id: self.client_id.clone(),
                client_secret: self.client_secret.clone(),
                token: self.token.clone(),
                tenant: self.tenant.clone(),
            },
            behavior: Behavior {
                okta_joined_link: self.okta_joined_link,
                scroll_ttl: Duration::from_secs(self.scroll_ttl_s),
                max_concurrent: self.max_concurrent,
                token_rate_limit: self.token_rate_limit,
                graph_next_link_after_value: self.graph_next_link_after_value,
                ..Behavior::default()
            },
            threads: self.threads.max(1),
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Dump(d) => dump(&d),
        Command::Serve(s) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("building the tokio runtime")?;
            rt.block_on(serve(*s))
        }
    }
}

/// Write the dataset one record at a time: nothing is held but the record
/// being written, so a million hosts cost no memory.
fn dump(d: &Dump) -> Result<()> {
    let a = &d.data;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    fn line(out: &mut impl Write, r: &impl serde::Serialize) -> Result<()> {
        serde_json::to_writer(&mut *out, r)?;
        out.write_all(b"\n")?;
        Ok(())
    }
    let n = a.size as u64;
    match a.vendor {
        Vendor::CrowdStrike => {
            let data = CsData::new(a.seed, a.size, a.generation);
            for i in 0..n {
                line(&mut out, &data.host(i))?;
            }
        }
        Vendor::Okta => {
            let data = OktaData::new(a.seed, a.size, a.generation);
            for i in 0..n {
                line(&mut out, &data.user(i))?;
            }
        }
        Vendor::MsGraph => {
            let data = GraphData::new(a.seed, a.size, a.generation);
            for i in 0..n {
                let r = if d.users { data.user(i) } else { data.device(i) };
                line(&mut out, &r)?;
            }
        }
        Vendor::Kit => anyhow::bail!("a kit simulator is started from Rust (corral_sim::kit::start), not from here"),
        Vendor::Qualys => {
            // The hosts, each with its detections.
            let data = QualysData::new(a.seed, a.size, a.generation, Behavior::default().findings_per_asset);
            for i in 0..n {
                let h = data.host(i);
                let detections: Vec<_> = data
                    .detections(i)
                    .iter()
                    .map(|d| serde_json::json!({"qid": d.qid.0, "status": d.status, "severity": d.qid.2}))
                    .collect();
                line(
                    &mut out,
                    &serde_json::json!({"id": h.id, "ip": h.ip, "dns": h.dns, "os": h.os, "detections": detections}),
                )?;
            }
        }
        Vendor::Aws => {
            // The first account's instances, region by region.
            let account = corral_sim::data::aws::accounts(a.seed)[0].clone();
            for region in corral_sim::data::aws::REGIONS {
                let data = corral_sim::data::aws::AwsData::new(a.seed, a.size, a.generation, &account, region);
                for i in 0..data.count().min(n) {
                    let x = data.instance(i);
                    line(
                        &mut out,
                        &serde_json::json!({"region": region, "account": account, "instance_id": x.id,
                            "state": x.state.1, "private_ip": x.private_ip, "public_ip": x.public_ip}),
                    )?;
                }
            }
        }
        Vendor::Tenable => {
            // Assets, then the default vulnerability export's findings.
            let data = TenableData::new(a.seed, a.size, a.generation, Behavior::default().findings_per_asset);
            for i in 0..n {
                line(&mut out, &data.asset(i))?;
            }
            for f in data.findings_in(0..n, &VulnFilter::default()) {
                line(&mut out, &data.finding(&f, 0))?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

async fn serve(s: Serve) -> Result<()> {
    let config = s.config();
    let vendor = s.data.vendor;
    let sim = corral_sim::start_on(vendor, config.clone(), SocketAddr::new(s.host, s.port))
        .await
        .with_context(|| format!("binding {}:{}", s.host, s.port))?;
    let c = &config.credentials;
    let base = &sim.base_url;
    println!("corral-sim {} serving at {base}", vendor.name());
    println!("  seed={} size={} generation={}", config.seed, config.size, config.generation);
    match vendor {
        Vendor::CrowdStrike => {
            println!(
                "  token:   POST {base}/oauth2/token  client_id={} client_secret={}",
                c.client_id, c.client_secret
            );
            println!("  ids:     GET  {base}/devices/queries/devices-scroll/v1?limit=10000");
            println!("  details: POST {base}/devices/entities/devices/v2  {{\"ids\":[...]}}");
        }
        Vendor::Okta => {
            println!("  auth:    Authorization: SSWS {}", c.token);
            println!("  users:   GET  {base}/api/v1/users?limit=200");
        }
        Vendor::MsGraph => {
            println!(
                "  token:   POST {base}/{}/oauth2/v2.0/token  grant_type=client_credentials client_id={} client_secret={} scope=https://graph.microsoft.com/.default",
                c.tenant, c.client_id, c.client_secret
            );
            println!("  devices: GET  {base}/v1.0/deviceManagement/managedDevices");
            println!("  users:   GET  {base}/v1.0/users");
        }
        Vendor::Kit => {}
        Vendor::Qualys => {
            println!("  auth:    Basic {}:{} and X-Requested-With: anything", c.client_id, c.client_secret);
            println!("  detections: GET {base}/api/2.0/fo/asset/host/vm/detection/?action=list&truncation_limit=1000");
            println!("  hosts:   GET  {base}/api/2.0/fo/asset/host/?action=list&truncation_limit=1000");
        }
        Vendor::Aws => {
            let accounts = corral_sim::data::aws::accounts(config.seed);
            println!(
                "  auth:    SigV4, access key {} secret {} (account {})",
                c.client_id, c.client_secret, accounts[0]
            );
            println!("  ec2:     GET  {base}/{{region}}/?Action=DescribeInstances&Version=2016-11-15&MaxResults=1000");
            println!(
                "  sts:     POST {base}/sts/  Action=AssumeRole&Version=2011-06-15&RoleArn=arn:aws:iam::{}:role/{}",
                accounts[1],
                corral_sim::data::aws::ROLE_NAME
            );
        }
        Vendor::Tenable => {
            println!("  auth:    X-ApiKeys: accessKey={};secretKey={}", c.client_id, c.client_secret);
            println!("  assets:  POST {base}/assets/export  {{\"chunk_size\": 1000}}");
            println!("  vulns:   POST {base}/vulns/export  {{\"num_assets\": 500}}");
        }
    }
    println!(
        "  admin:   POST {base}/_sim/generation (next dataset generation), POST {base}/_sim/revoke, GET {base}/_sim/counters"
    );
    std::io::stdout().flush()?;
    let counters = sim.counters.clone();
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    sim.shutdown().await;
    eprintln!("{}", serde_json::to_string_pretty(&counters.snapshot())?);
    Ok(())
}
