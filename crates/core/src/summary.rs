//! Run summaries: what one sync of one connection did, for people and machines.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::adapter::Reject;
use crate::metrics::{InFlight, RequestStats};
use crate::store::StaleOutcome;

/// How a run ended. Ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Everything fetched, normalized and stored.
    Success,
    /// Not run: another run of the connection held its lease.
    Skipped,
    /// Stored what it could; some records were rejected or some streams failed.
    Partial,
    /// The run did not do its job (nothing usable fetched, or the store failed).
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Success => "success",
            RunStatus::Skipped => "skipped",
            RunStatus::Partial => "partial",
            RunStatus::Failed => "failed",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Wall time spent in each stage, in milliseconds. Stages overlap, so these
/// add up to more than the run's duration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageTimes {
    /// From the first fetch call until the last stream finished fetching.
    pub fetch_ms: u64,
    /// CPU time the pool's threads spent in normalize, summed over the
    /// threads. Read from Linux's per-thread accounting; elsewhere it is the
    /// time that passed on each thread, which reads higher than the CPU time
    /// when other work shares the cores.
    pub normalize_cpu_ms: u64,
    /// Time the store took to acknowledge batches, summed over batches.
    pub load_ms: u64,
    /// Time fetch spent waiting for room in the pipeline (backpressure).
    pub fetch_blocked_ms: u64,
}

/// Runtime lag measured while the run was going, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LagStats {
    pub samples: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// Samples over the warning threshold.
    pub over_threshold: u64,
    /// Engine task polls that took longer than the threshold (a blocked worker).
    #[serde(default)]
    pub long_polls: u64,
    #[serde(default)]
    pub max_poll_us: u64,
    /// The stage whose poll blocked longest, if any blocked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocking_stage: Option<String>,
    /// Late ticks by what was running then (`stage@connection`, or
    /// `(no engine task)` when the workers were starved by something else).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub late_causes: BTreeMap<String, u64>,
}

/// Rejected records of one reason: how many, and the first few.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RejectGroup {
    pub count: u64,
    pub samples: Vec<Reject>,
}

/// What happened to one stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamSummary {
    pub pages: u64,
    pub records_fetched: u64,
    pub assets_normalized: u64,
    /// Records rejected one by one (an undecodable page is counted below).
    pub rejected: u64,
    /// Pages that could not be decoded at all, and the records known to be
    /// lost with them (see [`RunSummary::records_lost`]).
    #[serde(default)]
    pub pages_rejected: u64,
    #[serde(default)]
    pub records_lost: u64,
    #[serde(default)]
    pub pages_rejected_unsized: u64,
    /// The fetch finished without error.
    pub fetch_completed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch_error: Option<String>,
    /// The fetch ended but saw only part of the stream (some scopes failed:
    /// `FetchContext::incomplete`); what it could not see. No stale handling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<String>,
    /// Pages that could not be decoded at all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub page_errors: Vec<String>,
    /// Stale handling ran for this stream (only after a clean fetch and load).
    pub stale_handled: bool,
    #[serde(default)]
    pub stale: StaleOutcome,
}

/// The summary of one sync of one connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub sync_id: String,
    pub connection: String,
    pub adapter: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    pub status: RunStatus,
    pub stages: StageTimes,
    pub pages: u64,
    pub records_fetched: u64,
    pub assets_normalized: u64,
    /// Records rejected one by one (malformed, missing their key, refused by the store).
    pub records_rejected: u64,
    /// Pages that could not be decoded at all (`malformed_page`): every
    /// record in them is lost to this run.
    #[serde(default)]
    pub pages_rejected: u64,
    /// Records lost with those pages, as far as fetch knew how many each
    /// held (`RawPage::record_hint`): exact when `pages_rejected_unsized` is
    /// 0, a lower bound otherwise.
    #[serde(default)]
    pub records_lost: u64,
    /// Rejected pages whose record count fetch did not know.
    #[serde(default)]
    pub pages_rejected_unsized: u64,
    /// Rejected records and pages grouped by reason, with samples.
    pub rejects: BTreeMap<String, RejectGroup>,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub batches: u64,
    pub failed_batches: u64,
    pub stale_marked: u64,
    pub stale_deleted: u64,
    pub streams: BTreeMap<String, StreamSummary>,
    pub requests: RequestStats,
    pub lag: LagStats,
    pub in_flight: InFlight,
    /// Every error that affected the run, in the order they happened.
    pub errors: Vec<String>,
    /// Progress over the run's time, for charts of throughput and runtime
    /// lag: at most [`TIMELINE_MAX_POINTS`] points (see [`Timeline`]).
    /// Empty in runs stored before it existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<TimelinePoint>,
}

/// Most points a run's [`RunSummary::timeline`] keeps.
pub const TIMELINE_MAX_POINTS: usize = 120;

/// One point of a run's timeline: the run's cumulative counts at `t_ms`
/// after it started, and the runtime lag since the previous point.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// Milliseconds since the run started.
    pub t_ms: u64,
    /// Records fetched so far.
    pub records_fetched: u64,
    /// Assets the store acknowledged so far.
    pub assets_loaded: u64,
    /// Records fetched and not yet acknowledged by the store, at `t_ms`.
    #[serde(default)]
    pub records_in_flight: u64,
    /// 99th percentile of the runtime lag since the previous point (microseconds).
    pub lag_p99_us: u64,
}

/// A bounded time series: points are appended every `interval`; when
/// [`TIMELINE_MAX_POINTS`] are held, neighbours are merged pairwise (the later
/// point's counts, the larger lag) and the interval doubles, so a run of any
/// length keeps at most that many evenly spaced points.
#[derive(Debug, Clone)]
pub struct Timeline {
    points: Vec<TimelinePoint>,
    interval_ms: u64,
}

impl Timeline {
    /// A timeline sampled every `interval_ms` (at least 1) to begin with.
    pub fn new(interval_ms: u64) -> Self {
        Timeline { points: Vec::with_capacity(TIMELINE_MAX_POINTS), interval_ms: interval_ms.max(1) }
    }

    /// How long until the next point is due.
    pub fn interval_ms(&self) -> u64 {
        self.interval_ms
    }

    /// Add a point; when full, merge neighbours and double the interval.
    pub fn push(&mut self, point: TimelinePoint) {
        // A point with the time of the last one replaces it (the final point of a short run).
        if let Some(last) = self.points.last_mut()
            && last.t_ms >= point.t_ms
        {
            let lag = last.lag_p99_us.max(point.lag_p99_us);
            *last = TimelinePoint { lag_p99_us: lag, t_ms: last.t_ms, ..point };
            return;
        }
        if self.points.len() >= TIMELINE_MAX_POINTS {
            self.points = self
                .points
                .chunks(2)
                .map(|pair| {
                    let later = pair[pair.len() - 1];
                    TimelinePoint { lag_p99_us: pair.iter().map(|p| p.lag_p99_us).max().unwrap_or(0), ..later }
                })
                .collect();
            self.interval_ms = self.interval_ms.saturating_mul(2);
        }
        self.points.push(point);
    }

    pub fn points(&self) -> &[TimelinePoint] {
        &self.points
    }

    pub fn into_points(self) -> Vec<TimelinePoint> {
        self.points
    }
}

impl RunSummary {
    /// A summary of a run that has not done anything yet: a new sync id,
    /// start and end now, status success, every counter zero.
    pub fn new(connection: &str, adapter: &str) -> Self {
        let now = Utc::now();
        RunSummary {
            sync_id: uuid::Uuid::now_v7().to_string(),
            connection: connection.to_string(),
            adapter: adapter.to_string(),
            started_at: now,
            ended_at: now,
            status: RunStatus::Success,
            stages: StageTimes::default(),
            pages: 0,
            records_fetched: 0,
            assets_normalized: 0,
            records_rejected: 0,
            pages_rejected: 0,
            records_lost: 0,
            pages_rejected_unsized: 0,
            rejects: BTreeMap::new(),
            inserted: 0,
            updated: 0,
            unchanged: 0,
            batches: 0,
            failed_batches: 0,
            stale_marked: 0,
            stale_deleted: 0,
            streams: BTreeMap::new(),
            requests: Default::default(),
            lag: Default::default(),
            in_flight: Default::default(),
            errors: Vec::new(),
            timeline: Vec::new(),
        }
    }

    pub fn loaded(&self) -> u64 {
        self.inserted + self.updated + self.unchanged
    }

    /// Records lost with undecodable pages, for people: `500`, or `500+`
    /// when some pages' record counts were unknown.
    pub fn lost_display(&self) -> String {
        lost_text(self.records_lost, self.pages_rejected_unsized)
    }

    pub fn duration_ms(&self) -> i64 {
        (self.ended_at - self.started_at).num_milliseconds()
    }
}

/// The worst status across several runs (empty: success).
pub fn overall_status<'a>(runs: impl IntoIterator<Item = &'a RunSummary>) -> RunStatus {
    runs.into_iter().map(|r| r.status).max().unwrap_or(RunStatus::Success)
}

/// Render summaries as a plain-text table for terminals.
pub fn render_table(runs: &[RunSummary]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:<12} {:<8} {:>9} {:>9} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>8} {:>10}",
        "CONNECTION",
        "ADAPTER",
        "STATUS",
        "FETCHED",
        "ASSETS",
        "REJECTED",
        "LOST",
        "INSERTED",
        "UPDATED",
        "UNCHANGED",
        "STALE m/d",
        "TIME",
        "LAG p99/max"
    );
    for r in runs {
        let _ = writeln!(
            out,
            "{:<20} {:<12} {:<8} {:>9} {:>9} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>7.1}s {:>10}",
            truncate(&r.connection, 20),
            truncate(&r.adapter, 12),
            r.status.as_str(),
            r.records_fetched,
            r.assets_normalized,
            r.records_rejected,
            r.lost_display(),
            r.inserted,
            r.updated,
            r.unchanged,
            format!("{}/{}", r.stale_marked, r.stale_deleted),
            r.duration_ms() as f64 / 1000.0,
            format!("{}/{}ms", r.lag.p99_us / 1000, r.lag.max_us / 1000),
        );
    }
    // Where the time went: stages overlap, so these add up to more than TIME.
    let _ = writeln!(
        out,
        "\n{:<20} {:>7} {:>8} {:>10} {:>8} {:>8} {:>9} {:>6} {:>8} {:>9} {:>8}",
        "STAGES",
        "PAGES",
        "FETCH",
        "NORM CPU",
        "LOAD",
        "BLOCKED",
        "REQUESTS",
        "429s",
        "RETRIES",
        "LIMIT WAIT",
        "LAG p50"
    );
    for r in runs {
        let secs = |ms: u64| format!("{:.1}s", ms as f64 / 1000.0);
        let _ = writeln!(
            out,
            "{:<20} {:>7} {:>8} {:>10} {:>8} {:>8} {:>9} {:>6} {:>8} {:>10} {:>8}",
            truncate(&r.connection, 20),
            r.pages,
            secs(r.stages.fetch_ms),
            secs(r.stages.normalize_cpu_ms),
            secs(r.stages.load_ms),
            secs(r.stages.fetch_blocked_ms),
            r.requests.total,
            r.requests.rate_limited,
            r.requests.retries,
            secs(r.requests.limiter_wait_ms),
            format!("{}ms", r.lag.p50_us / 1000),
        );
    }
    for r in runs {
        if r.rejects.is_empty() && r.errors.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{} ({}, sync {}):", r.connection, r.status, r.sync_id);
        for e in &r.errors {
            let _ = writeln!(out, "  error: {e}");
        }
        for (reason, group) in &r.rejects {
            if reason == crate::engine::MALFORMED_PAGE {
                let _ = writeln!(
                    out,
                    "  rejected {} page(s) that could not be decoded ({reason}): {} record(s) lost with them",
                    group.count,
                    r.lost_display()
                );
            } else {
                let _ = writeln!(out, "  rejected {} record(s): {reason}", group.count);
            }
            for s in &group.samples {
                let _ = writeln!(out, "    {}: {}", s.record, s.detail);
            }
        }
    }
    out
}

fn lost_text(lost: u64, unsized_pages: u64) -> String {
    if unsized_pages > 0 { format!("{lost}+") } else { lost.to_string() }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { s.chars().take(n - 1).chain(['…']).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeline_stays_bounded_and_keeps_the_last_counts_and_the_worst_lag() {
        // Sampled as the engine does: the next point is due one interval later.
        let mut t = Timeline::new(1000);
        let (mut now, mut i) = (0u64, 0u64);
        while now < 3_600_000 {
            now += t.interval_ms();
            i += 1;
            let lag = if i == 150 { 90_000 } else { 100 };
            t.push(TimelinePoint {
                t_ms: now,
                records_fetched: now,
                assets_loaded: now / 2,
                records_in_flight: 1,
                lag_p99_us: lag,
            });
            assert!(t.points().len() <= TIMELINE_MAX_POINTS);
        }
        let points = t.points();
        assert!(points.len() > TIMELINE_MAX_POINTS / 2, "{}", points.len());
        assert!(points.windows(2).all(|w| w[0].t_ms < w[1].t_ms), "time goes forward");
        let last = points[points.len() - 1];
        assert_eq!((last.t_ms, last.records_fetched, last.assets_loaded), (now, now, now / 2));
        assert_eq!(points.iter().filter(|p| p.lag_p99_us == 90_000).count(), 1, "the worst lag survives merging");
        assert!(t.interval_ms() >= 16_000, "an hour in 120 points: {}", t.interval_ms());
        // A point at the same time replaces the last one.
        let mut t = Timeline::new(10);
        t.push(TimelinePoint { t_ms: 5, records_fetched: 1, lag_p99_us: 7, ..Default::default() });
        t.push(TimelinePoint { t_ms: 5, records_fetched: 2, lag_p99_us: 3, ..Default::default() });
        assert_eq!(t.points(), [TimelinePoint { t_ms: 5, records_fetched: 2, lag_p99_us: 7, ..Default::default() }]);
    }

    #[test]
    fn a_summary_stored_before_the_timeline_existed_still_loads() {
        let mut json = serde_json::to_value(RunSummary::new("c", "a")).expect("encode");
        assert!(json.get("timeline").is_none(), "an empty timeline is not written");
        json.as_object_mut().expect("object").remove("timeline");
        let back: RunSummary = serde_json::from_value(json).expect("decode");
        assert!(back.timeline.is_empty());
    }

    #[test]
    fn the_table_shows_stages_stale_split_errors_and_rejects() {
        let mut r = RunSummary::new("edr-eu", "crowdstrike");
        r.status = RunStatus::Partial;
        r.pages = 17;
        r.stages = StageTimes { fetch_ms: 1500, normalize_cpu_ms: 250, load_ms: 900, fetch_blocked_ms: 40 };
        r.stale_marked = 3;
        r.stale_deleted = 2;
        r.requests.total = 21;
        r.requests.rate_limited = 1;
        r.errors.push("stream hosts: page 3: page could not be decoded".into());
        r.rejects.insert(
            "missing_key".into(),
            RejectGroup { count: 4, samples: vec![Reject::new("record 2 of page 1", "missing_key", "no device_id")] },
        );
        let table = render_table(&[r]);
        let stages = table.lines().find(|l| l.starts_with("edr-eu") && l.contains("1.5s")).expect("stage line");
        let cells: Vec<&str> = stages.split_whitespace().collect();
        assert_eq!(cells, ["edr-eu", "17", "1.5s", "0.2s", "0.9s", "0.0s", "21", "1", "0", "0.0s", "0ms"], "{table}");
        assert!(table.lines().any(|l| l.starts_with("edr-eu") && l.contains(" 3/2 ")), "{table}");
        assert!(table.contains("error: stream hosts: page 3"), "{table}");
        assert!(table.contains("rejected 4 record(s): missing_key") && table.contains("no device_id"), "{table}");
    }
}
