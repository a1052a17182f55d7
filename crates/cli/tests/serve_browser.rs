//! The web page of `corral serve` in a real browser: headless Chromium
//! (Debian's `chromium`, driven through `chromedriver` over WebDriver)
//! against a `corral serve` syncing simulated Okta and CrowdStrike tenants.
//!
//! - the inventory on the page equals the store's counts (and stale);
//! - a sync started with the page's button appears as a run;
//! - a failed run (wrong credentials) shows as failed;
//! - a screenshot of each view goes to `target/ui/`.
//!
//! `scripts/test.sh` installs Chromium when /usr/bin/chromium is missing.
//! Without a browser this test fails in CI (`CI` set); elsewhere it skips,
//! loudly, and leaves a marker that scripts/test.sh lists at the end.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corral_sim::{Credentials, SimConfig, Vendor};
use fantoccini::{Client, ClientBuilder, Locator};

const TOKEN: &str = "browser-test-token-0123456789";

fn browser() -> Option<(PathBuf, PathBuf)> {
    let chromium = std::env::var_os("CORRAL_CHROMIUM").map(PathBuf::from).unwrap_or_else(|| "/usr/bin/chromium".into());
    let driver =
        std::env::var_os("CORRAL_CHROMEDRIVER").map(PathBuf::from).unwrap_or_else(|| "/usr/bin/chromedriver".into());
    (chromium.exists() && driver.exists()).then_some((chromium, driver))
}

/// No browser: fail in CI, skip loudly elsewhere (with a marker for scripts/test.sh).
fn skip_or_fail(test: &str) {
    let why = "no /usr/bin/chromium and /usr/bin/chromedriver (Debian: apt-get install chromium chromium-driver; \
               scripts/test.sh installs them)";
    if corral_store::nx::in_ci() {
        panic!("{test}: {why}; in CI the browser tests never skip");
    }
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!("!!! SKIPPING {test}: {why}");
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    let dir = corral_store::nx::skip_dir();
    let _ = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(dir.join(test), format!("{test}: {why}\n")));
}

/// Killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

fn corral(dir: &Path) -> Command {
    let c = Credentials::default();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_corral"));
    cmd.current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("CORRAL_CONFIG")
        .env("SIM_TOKEN", c.token)
        .env("SIM_SECRET", c.client_secret)
        .env("WRONG_TOKEN", "not-the-token")
        .env("CORRAL_API_TOKEN", TOKEN);
    cmd
}

fn screenshots_dir() -> PathBuf {
    // target/tmp -> target/ui
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../ui");
    std::fs::create_dir_all(&dir).expect("target/ui");
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(screenshots_dir().join(format!("{name}.png")), png).expect("write screenshot");
}

/// Wait until `css` matches an element whose `attr` satisfies `ok`.
async fn wait_attr(c: &Client, css: &str, attr: &str, ok: impl Fn(&str) -> bool) -> fantoccini::elements::Element {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && let Ok(Some(v)) = e.attr(attr).await
            && ok(&v)
        {
            return e;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {css}[{attr}]");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Open a view and wait until it rendered after we asked.
async fn open(c: &Client, base: &str, hash: &str) {
    let asked = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    c.goto(&format!("{base}{hash}")).await.expect("goto");
    wait_attr(c, "body", "data-loaded", |v| v.parse::<u128>().is_ok_and(|t| t >= asked)).await;
}

fn text_num(s: &str) -> u64 {
    s.chars().filter(char::is_ascii_digit).collect::<String>().parse().unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_store_starts_syncs_and_shows_failures() {
    let test = "serve_browser::the_page_shows_the_store_starts_syncs_and_shows_failures";
    let Some((chromium, chromedriver)) = browser() else {
        skip_or_fail(test);
        return;
    };
    let okta = corral_sim::start(Vendor::Okta, SimConfig::new(7, 400).latency_ms(5)).await.expect("okta sim");
    // CrowdStrike with one malformed page (the last of 20 details batches):
    // a partial run with a kept reject, long enough for a chart of a few points.
    let cs = corral_sim::start(Vendor::CrowdStrike, SimConfig::new(8, 2000).latency_ms(40).malformed_pages([19]))
        .await
        .expect("crowdstrike sim");
    let dir = tempfile::tempdir().expect("tempdir");
    let creds = Credentials::default();
    std::fs::write(
        dir.path().join("corral.toml"),
        format!(
            "[serve]\ntoken = \"${{CORRAL_API_TOKEN}}\"\nschedule = {{ every = \"6h\" }}\n\n\
             [[connection]]\nname = \"okta-eu\"\nadapter = \"okta\"\n\
             [connection.config]\nbase_url = \"{okta}\"\ntoken = \"${{SIM_TOKEN}}\"\npage_size = 100\n\n\
             [[connection]]\nname = \"okta-expired\"\nadapter = \"okta\"\n\
             [connection.config]\nbase_url = \"{okta}\"\ntoken = \"${{WRONG_TOKEN}}\"\n\n\
             [[connection]]\nname = \"falcon-us\"\nadapter = \"crowdstrike\"\nschedule = {{ manual = true }}\n\
             [connection.config]\nbase_url = \"{cs}\"\nclient_id = \"{id}\"\nclient_secret = \"${{SIM_SECRET}}\"\n\
             ids_page_size = 500\ndetails_batch = 100\n",
            okta = okta.base_url,
            cs = cs.base_url,
            id = creds.client_id
        ),
    )
    .expect("config");

    let mut serve = corral(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("corral serve");
    let mut stderr = serve.stderr.take().expect("stderr");
    let log = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut line = String::new();
    BufReader::new(serve.stdout.take().expect("stdout")).read_line(&mut line).expect("listening line");
    let serve = Proc(serve);
    let addr = line.split("http://").nth(1).and_then(|r| r.split_whitespace().next()).expect("address").to_string();

    // Two runs before the browser comes: one succeeds, one fails.
    let client = reqwest_like::Client::new(&addr, TOKEN);
    for name in ["okta-eu", "okta-expired"] {
        assert_eq!(client.post(&format!("/api/connections/{name}/sync")), 202, "sync {name}");
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let runs = client.get("/api/runs");
        if runs["runs"].as_array().is_some_and(|r| r.len() == 2) {
            break;
        }
        assert!(Instant::now() < deadline, "the first runs never finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let driver_port = free_port();
    let driver = Proc(
        Command::new(&chromedriver)
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver"),
    );
    let profile = tempfile::tempdir().expect("profile dir");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,860",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    // Both of rustls' crypto providers are in the build: name one.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    let c = loop {
        match ClientBuilder::rustls()
            .expect("tls")
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{driver_port}"))
            .await
        {
            Ok(c) => break c,
            Err(e) => {
                assert!(Instant::now() < deadline, "could not start a Chromium session: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    // The browser opens the page with the token as Basic credentials' password.
    let base = format!("http://corral:{TOKEN}@{addr}/");

    // Connections: sync falcon-us with the page's button.
    open(&c, &base, "#/connections").await;
    let button = c.find(Locator::Css("button.sync[data-connection=\"falcon-us\"]")).await.expect("sync button");
    button.click().await.expect("click");
    wait_attr(&c, "tr[data-connection=\"falcon-us\"] .last-run .badge", "data-status", |s| !s.is_empty()).await;
    shot(&c, "connections").await;

    // Runs: the page's sync is a run; the failed run shows as failed.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        open(&c, &base, "#/runs").await;
        if c.find(Locator::Css("#runs tr[data-connection=\"falcon-us\"]")).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the sync started from the page never appeared as a run");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let falcon = c.find(Locator::Css("#runs tr[data-connection=\"falcon-us\"]")).await.expect("falcon run");
    assert_eq!(falcon.attr("data-status").await.expect("attr").as_deref(), Some("partial"), "one malformed page");
    let failed = c.find(Locator::Css("#runs tr[data-connection=\"okta-expired\"]")).await.expect("failed run");
    assert_eq!(failed.attr("data-status").await.expect("attr").as_deref(), Some("failed"));
    let badge = failed.find(Locator::Css(".status .badge")).await.expect("badge").text().await.expect("text");
    assert_eq!(badge, "failed");
    let ok = c.find(Locator::Css("#runs tr[data-connection=\"okta-eu\"]")).await.expect("okta run");
    assert_eq!(ok.attr("data-status").await.expect("attr").as_deref(), Some("success"));
    shot(&c, "runs").await;

    // A run: its facts, the chart, its rejects.
    let sync_id = falcon.attr("data-sync-id").await.expect("attr").expect("sync id");
    falcon.click().await.expect("open the run");
    wait_attr(&c, "#run-detail", "data-sync-id", |v| v == sync_id).await;
    c.find(Locator::Css("#chart-throughput polyline")).await.expect("throughput chart");
    c.find(Locator::Css("#chart-lag polyline")).await.expect("lag chart");
    let rejects = c.find_all(Locator::Css("#rejects tbody tr")).await.expect("rejects");
    assert!(!rejects.is_empty(), "the malformed page is a kept reject");
    shot(&c, "run").await;
    // Inventory (every run finished): the page's counts are the store's.
    open(&c, &base, "#/inventory").await;
    let out = corral(dir.path()).args(["assets", "--json", "--include-stale"]).output().expect("corral assets");
    let store: serde_json::Value = serde_json::from_slice(&out.stdout).expect("counts");
    let store = store.as_array().expect("counts");
    assert!(!store.is_empty());
    let rows = c.find_all(Locator::Css("#inventory tbody tr")).await.expect("rows");
    assert_eq!(rows.len(), store.len(), "one row per connection and kind");
    let mut total = 0;
    for s in store {
        let (conn, kind) = (s["connection"].as_str().expect("c"), s["kind"].as_str().expect("k"));
        let row = c
            .find(Locator::Css(&format!("#inventory tr[data-connection=\"{conn}\"][data-kind=\"{kind}\"]")))
            .await
            .expect("the store's row is on the page");
        let cell = |class: &'static str| {
            let row = row.clone();
            async move {
                text_num(
                    &row.find(Locator::Css(&format!("td.{class}"))).await.expect("cell").text().await.expect("text"),
                )
            }
        };
        assert_eq!(cell("count").await, s["count"].as_u64().expect("count"), "{conn} {kind}");
        assert_eq!(cell("stale").await, s["stale"].as_u64().expect("stale"), "{conn} {kind}");
        total += s["count"].as_u64().expect("count");
    }
    let shown = c.find(Locator::Css("#inventory-total")).await.expect("total").text().await.expect("text");
    assert_eq!(text_num(&shown), total);
    shot(&c, "inventory").await;

    let _ = c.close().await;
    drop(driver);

    // Nothing secret reached the log.
    let pid = serve.0.id();
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    drop(serve);
    let log = log.join().expect("log");
    for secret in [TOKEN, &creds.token, &creds.client_secret] {
        assert!(!log.contains(secret), "a secret in the log");
    }
    okta.shutdown().await;
    cs.shutdown().await;
}

/// A blocking HTTP/1.1 client over a plain socket, enough for a few API calls.
mod reqwest_like {
    use std::io::{Read, Write};

    pub struct Client {
        addr: String,
        token: String,
    }

    impl Client {
        pub fn new(addr: &str, token: &str) -> Client {
            Client { addr: addr.to_string(), token: token.to_string() }
        }

        fn call(&self, method: &str, path: &str) -> (u16, serde_json::Value) {
            let mut s = std::net::TcpStream::connect(&self.addr).expect("connect");
            write!(
                s,
                "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.addr, self.token
            )
            .expect("send");
            let mut raw = Vec::new();
            s.read_to_end(&mut raw).expect("read");
            let text = String::from_utf8_lossy(&raw);
            let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("status");
            let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
            (status, serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
        }

        pub fn get(&self, path: &str) -> serde_json::Value {
            self.call("GET", path).1
        }

        pub fn post(&self, path: &str) -> u16 {
            self.call("POST", path).0
        }
    }
}
