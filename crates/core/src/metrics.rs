//! Counters the engine and the HTTP toolkit keep while a connection runs.
//! Plain atomics: cheap to bump from any thread, read once into the summary.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// In-flight data between fetch and the store's acknowledgement, with peaks.
///
/// "Raw" is what fetch handed over and normalize has not finished; "records"
/// are normalized assets not yet acknowledged by the store (plus raw records
/// whose count the adapter declared up front).
#[derive(Debug, Default)]
pub struct PipelineGauges {
    raw_pages: AtomicUsize,
    raw_bytes: AtomicUsize,
    records: AtomicUsize,
    peak_raw_pages: AtomicUsize,
    peak_raw_bytes: AtomicUsize,
    peak_records: AtomicUsize,
    fetch_blocked_micros: AtomicU64,
    oversized_pages: AtomicU64,
}

fn add_and_track_peak(value: &AtomicUsize, peak: &AtomicUsize, delta: usize) {
    let now = value.fetch_add(delta, Ordering::AcqRel) + delta;
    peak.fetch_max(now, Ordering::AcqRel);
}

fn sub(value: &AtomicUsize, delta: usize) {
    // Saturating: a miscount must never wrap into a huge number.
    let _ = value.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| Some(v.saturating_sub(delta)));
}

impl PipelineGauges {
    pub(crate) fn raw_page_entered(&self, bytes: usize, records: usize) {
        add_and_track_peak(&self.raw_pages, &self.peak_raw_pages, 1);
        add_and_track_peak(&self.raw_bytes, &self.peak_raw_bytes, bytes);
        add_and_track_peak(&self.records, &self.peak_records, records);
    }

    pub(crate) fn fetch_blocked(&self, waited: Duration) {
        self.fetch_blocked_micros.fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn fetch_blocked_ms(&self) -> u64 {
        self.fetch_blocked_micros.load(Ordering::Relaxed) / 1000
    }

    pub(crate) fn raw_page_left(&self, bytes: usize, records: usize) {
        sub(&self.raw_pages, 1);
        sub(&self.raw_bytes, bytes);
        sub(&self.records, records);
    }

    /// A page was normalized: its declared raw records become `produced` assets.
    pub(crate) fn normalized(&self, bytes: usize, declared: usize, produced: usize) {
        sub(&self.records, declared);
        add_and_track_peak(&self.records, &self.peak_records, produced);
        sub(&self.raw_pages, 1);
        sub(&self.raw_bytes, bytes);
    }

    /// A page held more records than `engine.max_page_records`. Returns how
    /// many such pages came before it.
    pub(crate) fn oversized_page(&self) -> u64 {
        self.oversized_pages.fetch_add(1, Ordering::Relaxed)
    }

    /// The store acknowledged (or the engine gave up on) `n` records.
    pub(crate) fn records_done(&self, n: usize) {
        sub(&self.records, n);
    }

    pub fn snapshot(&self) -> InFlight {
        InFlight {
            raw_pages: self.raw_pages.load(Ordering::Acquire),
            raw_bytes: self.raw_bytes.load(Ordering::Acquire),
            records: self.records.load(Ordering::Acquire),
            peak_raw_pages: self.peak_raw_pages.load(Ordering::Acquire),
            peak_raw_bytes: self.peak_raw_bytes.load(Ordering::Acquire),
            peak_records: self.peak_records.load(Ordering::Acquire),
            record_bound: 0,
            oversized_pages: self.oversized_pages.load(Ordering::Relaxed),
        }
    }
}

/// A reading of [`PipelineGauges`]; the peaks go into the run summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    pub raw_pages: usize,
    pub raw_bytes: usize,
    pub records: usize,
    pub peak_raw_pages: usize,
    pub peak_raw_bytes: usize,
    pub peak_records: usize,
    /// The configured bound on `records` for this run ([`crate::EngineConfig::in_flight_record_bound`]).
    #[serde(default)]
    pub record_bound: usize,
    /// Pages with more records than `engine.max_page_records`: the bound
    /// above assumed none (a warning names the first).
    #[serde(default)]
    pub oversized_pages: u64,
}

/// Request counters for one connection, filled in by the HTTP toolkit.
#[derive(Debug, Default)]
pub struct RequestMetrics {
    by_status: Mutex<BTreeMap<u16, u64>>,
    transport_errors: AtomicU64,
    retries: AtomicU64,
    rate_limited: AtomicU64,
    limiter_wait_micros: AtomicU64,
    retry_wait_micros: AtomicU64,
}

impl RequestMetrics {
    pub fn record_status(&self, status: u16) {
        if let Ok(mut map) = self.by_status.lock() {
            *map.entry(status).or_default() += 1;
        }
        if status == 429 {
            self.rate_limited.fetch_add(1, Ordering::Relaxed);
        }
    }
    /// A vendor said "slow down" with a status other than 429 (Qualys answers 409).
    pub fn record_rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }
    pub fn record_transport_error(&self) {
        self.transport_errors.fetch_add(1, Ordering::Relaxed);
    }
    pub fn record_retry(&self, waited: Duration) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        self.retry_wait_micros.fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
    }
    pub fn record_limiter_wait(&self, waited: Duration) {
        self.limiter_wait_micros.fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> RequestStats {
        let by_status = self.by_status.lock().map(|m| m.clone()).unwrap_or_default();
        RequestStats {
            total: by_status.values().sum::<u64>() + self.transport_errors.load(Ordering::Relaxed),
            by_status,
            transport_errors: self.transport_errors.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            limiter_wait_ms: self.limiter_wait_micros.load(Ordering::Relaxed) / 1000,
            retry_wait_ms: self.retry_wait_micros.load(Ordering::Relaxed) / 1000,
        }
    }
}

/// Requests made by one connection, for the run summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestStats {
    pub total: u64,
    pub by_status: BTreeMap<u16, u64>,
    pub transport_errors: u64,
    pub retries: u64,
    /// Responses that told us to slow down (429, or the vendor's equivalent).
    pub rate_limited: u64,
    pub limiter_wait_ms: u64,
    pub retry_wait_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_track_peaks_and_never_wrap() {
        let g = PipelineGauges::default();
        g.raw_page_entered(100, 10);
        g.raw_page_entered(50, 5);
        g.normalized(100, 10, 9);
        g.records_done(9);
        g.records_done(1000);
        let s = g.snapshot();
        assert_eq!(s.raw_pages, 1);
        assert_eq!(s.raw_bytes, 50);
        assert_eq!(s.records, 0);
        assert_eq!(s.peak_raw_pages, 2);
        assert_eq!(s.peak_raw_bytes, 150);
        assert_eq!(s.peak_records, 15);
    }
}
