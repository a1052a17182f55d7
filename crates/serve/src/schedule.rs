//! When each connection runs: an interval (`every = "4h"`) or a cron
//! expression in a time zone, shifted by a per-connection offset so that
//! many connections on one schedule do not all start in the same second.
//!
//! The offset is a pure function of the connection's name (FNV-1a), so it
//! is the same in every process and after every restart:
//! - `every = P`: ticks at `k × P + offset` since the Unix epoch, the offset
//!   spread over the whole period (300 connections on `every = "1m"` start
//!   about one every 200 ms);
//! - `cron = "…"`: each occurrence (in the schedule's time zone) plus an
//!   offset within `jitter` (the `[serve]` default, or the schedule's own).

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// A schedule as written in corral.toml: `{ every = "4h" }`,
/// `{ cron = "0 2 * * *", time_zone = "Europe/Berlin" }` or `{ manual = true }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// An interval: `30m`, `4h`, `1d` (at least one second).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    /// A cron expression (five fields, or six with seconds; `@daily` and the like).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// The cron expression's time zone (IANA name); default: `[serve] time_zone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// The most a cron occurrence is delayed by (per connection); default: `[serve] jitter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<String>,
    /// Never run on a schedule; only on demand (the API, the page).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub manual: bool,
}

/// What a schedule falls back on: the `[serve]` table's time zone and jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleDefaults {
    pub time_zone: Tz,
    pub jitter: Duration,
}

impl Default for ScheduleDefaults {
    fn default() -> Self {
        ScheduleDefaults { time_zone: Tz::UTC, jitter: Duration::from_secs(60) }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("a schedule needs exactly one of `every`, `cron` or `manual = true`")]
    NotExactlyOne,
    #[error("`every`: `{0}` is not a duration like 30m, 4h or 1d")]
    BadInterval(String),
    #[error("`every`: `{0}` is shorter than one second")]
    TooShort(String),
    #[error("`cron`: `{pattern}` is not a cron expression: {reason}")]
    BadCron { pattern: String, reason: String },
    #[error("`time_zone`: `{0}` is not an IANA time zone like UTC or Europe/Berlin")]
    BadTimeZone(String),
    #[error("`{field}`: `{value}` is not a duration like 30s or 5m")]
    BadDuration { field: &'static str, value: String },
}

/// Parse a time zone name (`UTC`, `Europe/Berlin`).
pub fn parse_time_zone(name: &str) -> Result<Tz, ScheduleError> {
    Tz::from_str(name.trim()).map_err(|_| ScheduleError::BadTimeZone(name.to_string()))
}

/// Parse a duration (`30s`, `5m`, `0s`) for the setting `field`.
pub fn parse_duration(field: &'static str, value: &str) -> Result<Duration, ScheduleError> {
    humantime::parse_duration(value.trim()).map_err(|_| ScheduleError::BadDuration { field, value: value.to_string() })
}

#[derive(Debug, Clone)]
enum Kind {
    Every { period_ms: i64, text: String },
    Cron { cron: Box<croner::Cron>, tz: Tz, text: String },
}

/// A connection's parsed schedule, with its offset.
#[derive(Debug, Clone)]
pub struct Schedule {
    kind: Kind,
    /// This connection's shift of every tick (milliseconds).
    offset_ms: i64,
}

impl Schedule {
    /// Parse `spec` for the connection `name`. `Ok(None)`: manual only.
    pub fn parse(
        spec: &ScheduleSpec,
        defaults: &ScheduleDefaults,
        name: &str,
    ) -> Result<Option<Schedule>, ScheduleError> {
        let given = usize::from(spec.every.is_some()) + usize::from(spec.cron.is_some()) + usize::from(spec.manual);
        if given != 1 {
            return Err(ScheduleError::NotExactlyOne);
        }
        if spec.manual {
            return Ok(None);
        }
        let hash = fnv1a(name.as_bytes());
        if let Some(every) = &spec.every {
            let period =
                humantime::parse_duration(every.trim()).map_err(|_| ScheduleError::BadInterval(every.clone()))?;
            if period < Duration::from_secs(1) {
                return Err(ScheduleError::TooShort(every.clone()));
            }
            let period_ms = i64::try_from(period.as_millis()).unwrap_or(i64::MAX / 4).min(i64::MAX / 4);
            let offset_ms = (hash % period_ms as u64) as i64;
            return Ok(Some(Schedule { kind: Kind::Every { period_ms, text: every.trim().to_string() }, offset_ms }));
        }
        let pattern = spec.cron.clone().unwrap_or_default();
        let cron = croner::Cron::from_str(pattern.trim())
            .map_err(|e| ScheduleError::BadCron { pattern: pattern.clone(), reason: e.to_string() })?;
        let tz = match &spec.time_zone {
            Some(name) => parse_time_zone(name)?,
            None => defaults.time_zone,
        };
        let jitter = match &spec.jitter {
            Some(j) => parse_duration("jitter", j)?,
            None => defaults.jitter,
        };
        let jitter_ms = u64::try_from(jitter.as_millis()).unwrap_or(u64::MAX);
        let offset_ms = if jitter_ms == 0 { 0 } else { (hash % jitter_ms) as i64 };
        Ok(Some(Schedule {
            kind: Kind::Cron { cron: Box::new(cron), tz, text: pattern.trim().to_string() },
            offset_ms,
        }))
    }

    /// The first tick strictly after `t` (None: the cron expression has no later occurrence).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.kind {
            Kind::Every { period_ms, .. } => {
                let ms = t.timestamp_millis();
                let k = (ms - self.offset_ms).div_euclid(*period_ms) + 1;
                DateTime::from_timestamp_millis(k.checked_mul(*period_ms)?.checked_add(self.offset_ms)?)
            }
            Kind::Cron { cron, tz, .. } => {
                let offset = chrono::Duration::milliseconds(self.offset_ms);
                let base = (t - offset).with_timezone(tz);
                let next = cron.find_next_occurrence(&base, false).ok()?;
                Some(next.with_timezone(&Utc) + offset)
            }
        }
    }

    /// When a connection whose last run started at `last` (None: it never
    /// ran) is next due, seen at `now`: its next tick; or `now` when a tick
    /// fell due since that run and did not run (corral was not running then):
    /// missed ticks run once, not once each.
    pub fn first_due(&self, last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match last {
            None => self.next_after(now),
            Some(last) => match self.next_after(last) {
                Some(next) if next <= now => Some(now),
                other => other,
            },
        }
    }

    /// This connection's shift of its ticks.
    pub fn offset(&self) -> Duration {
        Duration::from_millis(self.offset_ms.max(0) as u64)
    }

    /// For people: `every 4h`, `cron 0 2 * * * (Europe/Berlin)`.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Every { text, .. } => format!("every {text}"),
            Kind::Cron { text, tz, .. } => format!("cron {text} ({tz})"),
        }
    }
}

/// FNV-1a, 64 bits: a stable hash (the same in every build and process).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).expect("time")
    }

    fn every(p: &str) -> ScheduleSpec {
        ScheduleSpec { every: Some(p.into()), ..Default::default() }
    }

    fn cron(p: &str, tz: Option<&str>) -> ScheduleSpec {
        ScheduleSpec { cron: Some(p.into()), time_zone: tz.map(str::to_string), ..Default::default() }
    }

    fn parse(spec: &ScheduleSpec, name: &str) -> Schedule {
        Schedule::parse(spec, &ScheduleDefaults::default(), name).expect("parse").expect("scheduled")
    }

    #[test]
    fn intervals_tick_at_a_stable_per_connection_phase() {
        let s = parse(&every("1m"), "okta-eu");
        let offset = s.offset();
        assert!(offset < Duration::from_secs(60));
        let t = at("2024-05-01T12:00:00Z");
        let first = s.next_after(t).expect("tick");
        assert!(first > t && first <= t + chrono::Duration::minutes(1));
        assert_eq!(first.timestamp_millis() % 60_000, offset.as_millis() as i64);
        // Strictly after: a tick is never its own successor.
        assert_eq!(s.next_after(first), Some(first + chrono::Duration::minutes(1)));
        assert_eq!(s.next_after(first - chrono::Duration::milliseconds(1)), Some(first));
        // The same name gives the same phase in every process.
        assert_eq!(parse(&every("1m"), "okta-eu").offset(), offset);
        assert_eq!(s.describe(), "every 1m");
    }

    #[test]
    fn three_hundred_connections_spread_over_the_minute() {
        let mut seconds = std::collections::BTreeMap::<u64, usize>::new();
        for i in 0..300 {
            let s = parse(&every("1m"), &format!("crowdstrike-{i:03}"));
            *seconds.entry(s.offset().as_secs()).or_default() += 1;
        }
        // Uniform would be 5 a second; no second gets a crowd.
        assert!(seconds.len() >= 50, "only {} distinct seconds", seconds.len());
        assert!(seconds.values().all(|n| *n <= 15), "{seconds:?}");
    }

    #[test]
    fn cron_runs_in_its_time_zone_within_its_jitter() {
        let spec = ScheduleSpec { jitter: Some("0s".into()), ..cron("0 2 * * *", Some("Europe/Berlin")) };
        let s = parse(&spec, "edr");
        assert_eq!(s.offset(), Duration::ZERO);
        // 02:00 in Berlin in summer is 00:00 UTC.
        assert_eq!(s.next_after(at("2024-07-01T12:00:00Z")), Some(at("2024-07-02T00:00:00Z")));
        // In winter, 01:00 UTC.
        assert_eq!(s.next_after(at("2024-01-10T12:00:00Z")), Some(at("2024-01-11T01:00:00Z")));
        assert_eq!(s.describe(), "cron 0 2 * * * (Europe/Berlin)");
        // With the default jitter (1m), the occurrence moves by less than that.
        let s = parse(&cron("0 2 * * *", None), "edr");
        let next = s.next_after(at("2024-07-01T12:00:00Z")).expect("next");
        assert!(next >= at("2024-07-02T02:00:00Z") && next < at("2024-07-02T02:01:00Z"), "{next}");
        assert_eq!(s.next_after(next), Some(next + chrono::Duration::days(1)));
    }

    #[test]
    fn missed_ticks_run_once_and_a_connection_never_run_waits_for_its_tick() {
        let s = parse(&every("1h"), "cmdb");
        let now = at("2024-05-01T12:00:00Z");
        // Last ran three hours ago: three ticks missed, due now (once).
        assert_eq!(s.first_due(Some(now - chrono::Duration::hours(3)), now), Some(now));
        // Last ran at its latest tick: next tick.
        let last = s.next_after(now - chrono::Duration::hours(1)).expect("tick");
        assert_eq!(s.first_due(Some(last), now), s.next_after(last));
        assert!(s.first_due(Some(last), now).expect("due") > now);
        // Never ran: its next tick.
        assert_eq!(s.first_due(None, now), s.next_after(now));
    }

    #[test]
    fn bad_schedules_say_what_is_wrong() {
        let d = ScheduleDefaults::default();
        let err = |spec: ScheduleSpec| Schedule::parse(&spec, &d, "c").expect_err("bad");
        assert_eq!(err(ScheduleSpec::default()), ScheduleError::NotExactlyOne);
        assert_eq!(
            err(ScheduleSpec { every: Some("1h".into()), cron: Some("* * * * *".into()), ..Default::default() }),
            ScheduleError::NotExactlyOne
        );
        assert_eq!(err(every("often")), ScheduleError::BadInterval("often".into()));
        assert_eq!(err(every("500ms")), ScheduleError::TooShort("500ms".into()));
        assert!(matches!(err(cron("61 * * * *", None)), ScheduleError::BadCron { .. }));
        assert_eq!(err(cron("* * * * *", Some("Mars/Olympus"))), ScheduleError::BadTimeZone("Mars/Olympus".into()));
        let manual = ScheduleSpec { manual: true, ..Default::default() };
        assert!(Schedule::parse(&manual, &d, "c").expect("manual").is_none());
    }
}
