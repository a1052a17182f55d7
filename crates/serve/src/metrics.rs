//! `/metrics`: Prometheus text format (0.0.4), with the official client
//! (`prometheus-client`). Names carry the `corral_` prefix and base units
//! (seconds); counters end in `_total` (the client adds it).
//!
//! Per connection: runs by status, run duration, last run and last success
//! timestamps, records fetched, assets loaded, records rejected, stale
//! marked and deleted, requests by status, 429s, retries, limiter wait,
//! schedule ticks and ticks skipped because the previous run was still
//! going, records in flight. Assets by connection, kind and state (from the
//! store). Runtime lag as a histogram. Config reloads.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use corral_core::RunSummary;
use corral_core::store::AssetCount;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnLabels {
    pub connection: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    connection: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    connection: String,
    /// The HTTP status code, or `transport_error`.
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AssetLabels {
    connection: String,
    kind: String,
    /// `current` or `stale`.
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;
type FloatCounter = Counter<f64, AtomicU64>;

fn run_duration_histogram() -> Histogram {
    Histogram::new([1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0])
}

/// Every metric the service exports.
pub struct Metrics {
    registry: Registry,
    runs: Family<RunLabels, Counter>,
    run_duration: Family<ConnLabels, Histogram, fn() -> Histogram>,
    last_run: Family<ConnLabels, FloatGauge>,
    last_success: Family<ConnLabels, FloatGauge>,
    records_fetched: Family<ConnLabels, Counter>,
    assets_loaded: Family<ConnLabels, Counter>,
    records_rejected: Family<ConnLabels, Counter>,
    stale_marked: Family<ConnLabels, Counter>,
    stale_deleted: Family<ConnLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    rate_limited: Family<ConnLabels, Counter>,
    retries: Family<ConnLabels, Counter>,
    limiter_wait: Family<ConnLabels, FloatCounter>,
    ticks: Family<ConnLabels, Counter>,
    ticks_skipped: Family<ConnLabels, Counter>,
    in_flight: Family<ConnLabels, Gauge>,
    running: Gauge,
    queued: Gauge,
    assets: Family<AssetLabels, Gauge>,
    lag: Histogram,
    reloads: Family<ResultLabels, Counter>,
    reload_ok: Gauge,
    /// Serializes encoding with the refresh of the live gauges just before it.
    encode_lock: Mutex<()>,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("corral");
        let m = Metrics {
            runs: Family::default(),
            run_duration: Family::new_with_constructor(run_duration_histogram),
            last_run: Family::default(),
            last_success: Family::default(),
            records_fetched: Family::default(),
            assets_loaded: Family::default(),
            records_rejected: Family::default(),
            stale_marked: Family::default(),
            stale_deleted: Family::default(),
            requests: Family::default(),
            rate_limited: Family::default(),
            retries: Family::default(),
            limiter_wait: Family::default(),
            ticks: Family::default(),
            ticks_skipped: Family::default(),
            in_flight: Family::default(),
            running: Gauge::default(),
            queued: Gauge::default(),
            assets: Family::default(),
            lag: Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
            reloads: Family::default(),
            reload_ok: Gauge::default(),
            encode_lock: Mutex::new(()),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("build", "corral's version", Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]));
        r.register("runs", "Finished runs by connection and status", m.runs.clone());
        r.register("run_duration_seconds", "Duration of finished runs", m.run_duration.clone());
        r.register("last_run_timestamp_seconds", "When the last finished run started (Unix time)", m.last_run.clone());
        r.register(
            "last_success_timestamp_seconds",
            "When the last successful run started (Unix time)",
            m.last_success.clone(),
        );
        r.register("records_fetched", "Records fetched from the vendor", m.records_fetched.clone());
        r.register("assets_loaded", "Assets the store acknowledged", m.assets_loaded.clone());
        r.register(
            "records_rejected",
            "Records rejected (malformed, missing their key, refused)",
            m.records_rejected.clone(),
        );
        r.register("stale_marked", "Assets marked stale", m.stale_marked.clone());
        r.register("stale_deleted", "Stale assets deleted", m.stale_deleted.clone());
        r.register("http_requests", "Vendor API requests by response status", m.requests.clone());
        r.register("http_rate_limited", "Vendor answers that said slow down (429)", m.rate_limited.clone());
        r.register("http_retries", "Vendor API requests retried", m.retries.clone());
        r.register("http_limiter_wait_seconds", "Time requests waited for the rate limiter", m.limiter_wait.clone());
        r.register("schedule_ticks", "Scheduled runs that fell due", m.ticks.clone());
        r.register(
            "schedule_skipped",
            "Scheduled runs skipped because the connection's previous run was still going",
            m.ticks_skipped.clone(),
        );
        r.register("records_in_flight", "Records fetched and not yet stored, now", m.in_flight.clone());
        r.register("runs_running", "Runs syncing now", m.running.clone());
        r.register("runs_queued", "Runs waiting for engine.max_connections", m.queued.clone());
        r.register("assets", "Stored assets by connection, kind and status (current, stale)", m.assets.clone());
        r.register("runtime_lag_seconds", "How late the async runtime ran scheduled work", m.lag.clone());
        r.register("config_reloads", "Configuration reloads by result", m.reloads.clone());
        r.register(
            "config_last_reload_success",
            "Whether the last configuration reload succeeded (1) or not (0)",
            m.reload_ok.clone(),
        );
        m.reload_ok.set(1);
        Arc::new(Metrics { registry, ..m })
    }

    fn conn(name: &str) -> ConnLabels {
        ConnLabels { connection: name.to_string() }
    }

    /// A finished run.
    pub fn record_run(&self, s: &RunSummary) {
        let c = Self::conn(&s.connection);
        self.runs.get_or_create(&RunLabels { connection: s.connection.clone(), status: s.status.to_string() }).inc();
        let started = s.started_at.timestamp_millis() as f64 / 1000.0;
        if s.status != corral_core::RunStatus::Skipped {
            self.run_duration.get_or_create(&c).observe(s.duration_ms().max(0) as f64 / 1000.0);
            self.last_run.get_or_create(&c).set(started);
        }
        if s.status == corral_core::RunStatus::Success {
            self.last_success.get_or_create(&c).set(started);
        }
        self.records_fetched.get_or_create(&c).inc_by(s.records_fetched);
        self.assets_loaded.get_or_create(&c).inc_by(s.loaded());
        self.records_rejected.get_or_create(&c).inc_by(s.records_rejected);
        self.stale_marked.get_or_create(&c).inc_by(s.stale_marked);
        self.stale_deleted.get_or_create(&c).inc_by(s.stale_deleted);
        for (status, n) in &s.requests.by_status {
            self.requests
                .get_or_create(&RequestLabels { connection: s.connection.clone(), status: status.to_string() })
                .inc_by(*n);
        }
        if s.requests.transport_errors > 0 {
            self.requests
                .get_or_create(&RequestLabels { connection: s.connection.clone(), status: "transport_error".into() })
                .inc_by(s.requests.transport_errors);
        }
        self.rate_limited.get_or_create(&c).inc_by(s.requests.rate_limited);
        self.retries.get_or_create(&c).inc_by(s.requests.retries);
        self.limiter_wait.get_or_create(&c).inc_by(s.requests.limiter_wait_ms as f64 / 1000.0);
    }

    /// What the store says about a connection at start (its last run and last success).
    pub fn seed(
        &self,
        connection: &str,
        last_run: Option<&RunSummary>,
        last_success: Option<chrono::DateTime<chrono::Utc>>,
    ) {
        let c = Self::conn(connection);
        if let Some(r) = last_run {
            self.last_run.get_or_create(&c).set(r.started_at.timestamp_millis() as f64 / 1000.0);
        }
        if let Some(t) = last_success {
            self.last_success.get_or_create(&c).set(t.timestamp_millis() as f64 / 1000.0);
        }
        // Present from the start, at 0, so rates work from the first scrape.
        let _ = self.ticks.get_or_create(&c);
        let _ = self.ticks_skipped.get_or_create(&c);
    }

    pub fn tick(&self, connection: &str) {
        self.ticks.get_or_create(&Self::conn(connection)).inc();
    }

    pub fn tick_skipped(&self, connection: &str) {
        self.ticks_skipped.get_or_create(&Self::conn(connection)).inc();
    }

    pub fn observe_lag(&self, lag: std::time::Duration) {
        self.lag.observe(lag.as_secs_f64());
    }

    pub fn reload(&self, ok: bool) {
        self.reloads.get_or_create(&ResultLabels { result: if ok { "ok" } else { "error" }.into() }).inc();
        self.reload_ok.set(i64::from(ok));
    }

    /// The store's counts, by connection and kind (stale included).
    pub fn set_assets(&self, counts: &[AssetCount]) {
        self.assets.clear();
        for c in counts {
            let labels = |status: &str| AssetLabels {
                connection: c.connection.clone(),
                kind: c.kind.as_str().to_string(),
                status: status.to_string(),
            };
            self.assets.get_or_create(&labels("current")).set(c.count.saturating_sub(c.stale) as i64);
            self.assets.get_or_create(&labels("stale")).set(c.stale as i64);
        }
    }

    /// Encode everything, after setting the live gauges from `live`:
    /// (connection, records in flight) of each active run, and how many run and wait.
    pub fn encode(&self, live: &[(String, u64)], running: usize, queued: usize) -> Result<String, std::fmt::Error> {
        let _guard = self.encode_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.in_flight.clear();
        for (name, n) in live {
            self.in_flight.get_or_create(&Self::conn(name)).set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        self.running.set(running as i64);
        self.queued.set(queued as i64);
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_shows_in_the_metrics_and_they_parse() {
        let m = Metrics::new();
        let mut s = RunSummary::new("okta-eu", "okta");
        s.records_fetched = 10;
        s.inserted = 9;
        s.records_rejected = 1;
        s.requests.by_status.insert(200, 3);
        s.requests.by_status.insert(429, 1);
        s.requests.rate_limited = 1;
        s.requests.limiter_wait_ms = 1500;
        m.record_run(&s);
        m.tick("okta-eu");
        m.observe_lag(std::time::Duration::from_millis(3));
        m.set_assets(&[AssetCount {
            connection: "okta-eu".into(),
            kind: corral_core::AssetKind::User,
            count: 9,
            stale: 2,
        }]);
        let text = m.encode(&[("okta-eu".into(), 42)], 1, 0).expect("encode");
        let lines: Vec<String> =
            text.lines().map(|l| Ok(l.to_string())).collect::<Result<_, std::io::Error>>().expect("lines");
        let scrape = prometheus_parse::Scrape::parse(lines.into_iter().map(Ok)).expect("parse");
        let value = |name: &str, label: Option<(&str, &str)>| -> Option<f64> {
            scrape
                .samples
                .iter()
                .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
                .map(|s| match s.value {
                    prometheus_parse::Value::Counter(v)
                    | prometheus_parse::Value::Gauge(v)
                    | prometheus_parse::Value::Untyped(v) => v,
                    _ => f64::NAN,
                })
        };
        assert_eq!(value("corral_runs_total", Some(("status", "success"))), Some(1.0), "{text}");
        assert_eq!(value("corral_records_fetched_total", None), Some(10.0));
        assert_eq!(value("corral_http_requests_total", Some(("status", "429"))), Some(1.0));
        assert_eq!(value("corral_http_limiter_wait_seconds_total", None), Some(1.5));
        assert_eq!(value("corral_assets", Some(("status", "stale"))), Some(2.0));
        assert_eq!(value("corral_assets", Some(("status", "current"))), Some(7.0));
        assert_eq!(value("corral_records_in_flight", None), Some(42.0));
        assert_eq!(value("corral_schedule_ticks_total", None), Some(1.0));
        assert!(scrape.samples.iter().any(|s| s.metric == "corral_runtime_lag_seconds"), "{text}");
        assert!(scrape.samples.iter().all(|s| s.metric.starts_with("corral_")), "{text}");
    }
}
