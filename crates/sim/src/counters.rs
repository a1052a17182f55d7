//! What a simulator saw and served, for assertions in tests and benchmark reports.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Requests remembered in [`Counters::events`] at most.
pub const MAX_EVENTS: usize = 100_000;

/// One request as the simulator saw it (times since the simulator started).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RequestEvent {
    /// When it arrived (before latency and faults).
    pub arrived: Duration,
    /// When its answer was ready to be written.
    pub finished: Duration,
    pub endpoint: String,
    pub status: u16,
    /// A 429's announced wait, from `finished`: `Retry-After` seconds (Graph),
    /// `X-Ratelimit-Retryafter` epoch (CrowdStrike) or `X-Rate-Limit-Reset` (Okta).
    pub retry_after: Option<Duration>,
}

/// Live counters of one simulator instance. Read them with [`Counters::snapshot`].
#[derive(Debug, Default)]
pub struct Counters {
    requests: AtomicU64,
    rate_limited: AtomicU64,
    max_in_window: AtomicU64,
    tokens_issued: AtomicU64,
    bytes_served: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    connections: AtomicU64,
    connections_open: AtomicU64,
    max_connections_open: AtomicU64,
    maps: Mutex<Maps>,
    events: Mutex<Vec<RequestEvent>>,
}

#[derive(Debug, Default)]
struct Maps {
    by_endpoint: BTreeMap<&'static str, u64>,
    by_status: BTreeMap<u16, u64>,
    faults: BTreeMap<&'static str, u64>,
    in_flight_by_endpoint: BTreeMap<&'static str, u64>,
    max_in_flight_by_endpoint: BTreeMap<&'static str, u64>,
}

/// A point-in-time copy of [`Counters`].
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CountersSnapshot {
    /// Every request received (any endpoint, any outcome).
    pub requests: u64,
    /// Requests per endpoint label, e.g. `cs.entities`, `okta.users`, `graph.users`.
    pub by_endpoint: BTreeMap<String, u64>,
    /// Responses per HTTP status.
    pub by_status: BTreeMap<u16, u64>,
    /// 429 responses served (rate limit or concurrency limit), and Qualys's
    /// 409s for the same reasons.
    pub rate_limited: u64,
    /// Most requests (admitted or not) seen within one rate-limit window: sliding
    /// windows for CrowdStrike/Graph, fixed windows for Okta. 0 without a rate limit.
    pub max_in_window: u64,
    pub tokens_issued: u64,
    /// Response body bytes written.
    pub bytes_served: u64,
    /// Most requests being handled at the same time.
    pub max_in_flight: u64,
    /// TCP connections clients opened (accepted by the simulator).
    pub connections: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Most TCP connections open at the same time, idle pooled ones included:
    /// what a client held open, compared with its `max_open_files`.
    pub max_connections_open: u64,
    /// Most requests to one endpoint label being handled at the same time.
    pub max_in_flight_by_endpoint: BTreeMap<String, u64>,
    /// Injected faults by kind: `5xx`, `slow`, `hang`, `truncate`, `malformed`,
    /// `malformed_page`, `token_expired`, `token_revoked`.
    pub faults: BTreeMap<String, u64>,
}

impl CountersSnapshot {
    pub fn status(&self, status: u16) -> u64 {
        self.by_status.get(&status).copied().unwrap_or(0)
    }
    pub fn endpoint(&self, endpoint: &str) -> u64 {
        self.by_endpoint.get(endpoint).copied().unwrap_or(0)
    }
    pub fn fault(&self, kind: &str) -> u64 {
        self.faults.get(kind).copied().unwrap_or(0)
    }
    pub fn max_in_flight_at(&self, endpoint: &str) -> u64 {
        self.max_in_flight_by_endpoint.get(endpoint).copied().unwrap_or(0)
    }
}

impl Counters {
    pub fn snapshot(&self) -> CountersSnapshot {
        let maps = self.maps.lock().unwrap_or_else(|e| e.into_inner());
        CountersSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            by_endpoint: maps.by_endpoint.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            by_status: maps.by_status.clone(),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            max_in_window: self.max_in_window.load(Ordering::Relaxed),
            tokens_issued: self.tokens_issued.load(Ordering::Relaxed),
            bytes_served: self.bytes_served.load(Ordering::Relaxed),
            max_in_flight: self.max_in_flight.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
            connections_open: self.connections_open.load(Ordering::Relaxed),
            max_connections_open: self.max_connections_open.load(Ordering::Relaxed),
            max_in_flight_by_endpoint: maps
                .max_in_flight_by_endpoint
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            faults: maps.faults.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    /// Every request so far, in the order they finished (at most [`MAX_EVENTS`]).
    pub fn events(&self) -> Vec<RequestEvent> {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn request(&self, endpoint: &'static str) -> u64 {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut maps = self.maps.lock().unwrap_or_else(|e| e.into_inner());
        *maps.by_endpoint.entry(endpoint).or_default() += 1;
        let here = maps.in_flight_by_endpoint.entry(endpoint).or_default();
        *here += 1;
        let here = *here;
        let peak = maps.max_in_flight_by_endpoint.entry(endpoint).or_default();
        *peak = (*peak).max(here);
        drop(maps);
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_in_flight.fetch_max(now, Ordering::Relaxed);
        now
    }

    /// A request finished (or its client went away).
    pub(crate) fn leave(&self, endpoint: &'static str) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let mut maps = self.maps.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = maps.in_flight_by_endpoint.get_mut(endpoint) {
            *n = n.saturating_sub(1);
        }
    }

    pub(crate) fn event(&self, event: RequestEvent) {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if events.len() < MAX_EVENTS {
            events.push(event);
        }
    }

    pub(crate) fn done(&self, status: u16, bytes: u64) {
        self.bytes_served.fetch_add(bytes, Ordering::Relaxed);
        if status == 429 {
            self.rate_limited.fetch_add(1, Ordering::Relaxed);
        }
        let mut maps = self.maps.lock().unwrap_or_else(|e| e.into_inner());
        *maps.by_status.entry(status).or_default() += 1;
    }

    /// Body bytes written by a streamed answer.
    pub(crate) fn add_bytes(&self, n: u64) {
        self.bytes_served.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn fault(&self, kind: &'static str) {
        let mut maps = self.maps.lock().unwrap_or_else(|e| e.into_inner());
        *maps.faults.entry(kind).or_default() += 1;
    }

    /// A client opened a TCP connection.
    pub(crate) fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        let now = self.connections_open.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_connections_open.fetch_max(now, Ordering::Relaxed);
    }

    /// The server closed (dropped) a client's connection.
    pub(crate) fn connection_closed(&self) {
        let _ = self.connections_open.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(1)));
    }

    /// A refusal for exceeding a limit that is not a 429 (Qualys's 409s).
    pub(crate) fn rate_limited_answer(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests being handled now.
    pub(crate) fn in_flight_now(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn token_issued(&self) {
        self.tokens_issued.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn observe_window(&self, n: u64) {
        self.max_in_window.fetch_max(n, Ordering::Relaxed);
    }
}
