//! Driver error classification and the retry loop.
//!
//! Transient: network errors, timeouts, server selection failures, a primary
//! stepping down or a node recovering / shutting down, write-concern timeouts,
//! lock / write conflicts, and anything the server or driver labels
//! `RetryableWriteError` (or `RetryableError`). Every store write is an
//! idempotent upsert, delete, replace or insert with client-chosen ids, so
//! retrying after an ambiguous failure (the server may have applied the
//! write) is safe.
//!
//! Once the store's own retries are used up the error is permanent: the
//! engine, which retries transient batch failures itself, must not multiply
//! the store's attempts by its own (a hung server would otherwise hold a run
//! for attempts x attempts x timeout).

use std::time::Duration;

use tokio::time::Instant;

use corral_core::store::StoreError;
use mongodb::error::{Error, ErrorKind, WriteFailure};

/// Server error codes worth retrying (per the SDAM and retryable-writes specs, plus
/// lock / conflict / rate-limit codes).
pub(crate) const TRANSIENT_CODES: &[i32] = &[
    6,     // HostUnreachable
    7,     // HostNotFound
    24,    // LockTimeout
    46,    // LockBusy
    50,    // MaxTimeMSExpired
    64,    // WriteConcernFailed (wtimeout)
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    112,   // WriteConflict
    134,   // ReadConcernMajorityNotAvailableYet
    189,   // PrimarySteppedDown
    262,   // ExceededTimeLimit
    462,   // IngressRequestRateLimitExceeded
    9001,  // SocketException
    10058, // LegacyNotPrimary
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
];

/// Duplicate key. For an upsert keyed on a unique index this is the race of two
/// concurrent upserts of the same new key: retrying matches the winner's document.
pub(crate) const DUPLICATE_KEY: i32 = 11000;

/// Codes for a document over the server's BSON size limit.
pub(crate) const TOO_LARGE_CODES: &[i32] = &[
    10334, // BSONObjectTooLarge
    17419, // resulting document after update is larger than the limit
    17420, // document to upsert is larger than the limit
];

/// DocumentValidationFailure ($jsonSchema / validator on the collection).
pub(crate) const VALIDATION_FAILED: i32 = 121;

const TRANSIENT_LABELS: &[&str] =
    &["RetryableWriteError", "RetryableError", "TransientTransactionError", "SystemOverloadedError"];

/// A single-document write refused for a duplicate key (error 11000).
pub(crate) fn is_duplicate_key(e: &Error) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        _ => false,
    }
}

pub(crate) fn is_transient_code(code: i32) -> bool {
    TRANSIENT_CODES.contains(&code)
}

/// A short description of a driver error: its kind and server code, without
/// the full server response (and never the connection string).
pub(crate) fn describe(e: &Error) -> String {
    e.kind.to_string()
}

/// Map a driver error to a store error, `what` naming the operation.
pub(crate) fn classify(what: &str, e: &Error) -> StoreError {
    let msg = format!("{what}: {}", describe(e));
    if TRANSIENT_LABELS.iter().any(|l| e.contains_label(l)) {
        return StoreError::Transient(msg);
    }
    match e.kind.as_ref() {
        ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::ServerSelection { .. }
        | ErrorKind::DnsResolve { .. } => StoreError::Transient(msg),
        ErrorKind::Command(c) if is_transient_code(c.code) => StoreError::Transient(msg),
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) if is_transient_code(w.code) => StoreError::Transient(msg),
        ErrorKind::Write(WriteFailure::WriteError(w)) if is_transient_code(w.code) => StoreError::Transient(msg),
        ErrorKind::InsertMany(im)
            if im.write_concern_error.as_ref().is_some_and(|w| is_transient_code(w.code))
                || im.write_errors.as_ref().is_some_and(|ws| ws.iter().any(|w| is_transient_code(w.code))) =>
        {
            StoreError::Transient(msg)
        }
        ErrorKind::Authentication { .. } | ErrorKind::InvalidArgument { .. } | ErrorKind::InvalidTlsConfig { .. } => {
            StoreError::Config(msg)
        }
        ErrorKind::BsonDeserialization(_) => StoreError::Corrupt(msg),
        _ => StoreError::Permanent(msg),
    }
}

/// How the store retries transient failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included (at least 1).
    pub max_attempts: u32,
    /// Wait before the second attempt; doubled for each further one.
    pub initial_backoff: Duration,
    /// Cap on one wait.
    pub max_backoff: Duration,
    /// No new attempt starts once this much time has passed since the first.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(8),
            budget: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        RetryPolicy { max_attempts: 1, ..Default::default() }
    }
}

/// State of one retried operation.
pub(crate) struct Retry<'a> {
    policy: &'a RetryPolicy,
    what: &'a str,
    started: Instant,
    attempts: u32,
}

impl<'a> Retry<'a> {
    pub(crate) fn new(policy: &'a RetryPolicy, what: &'a str) -> Self {
        Retry { policy, what, started: Instant::now(), attempts: 1 }
    }

    /// After a failed attempt: a non-transient error is returned as is; a
    /// transient one waits (capped exponential backoff) and returns `Ok` when
    /// another attempt may start.
    ///
    /// Once the attempts or the time budget are used up, the error becomes
    /// [`StoreError::Permanent`] ("gave up after N attempts in T s"): the store
    /// has already retried, so its caller (the engine retries transient batch
    /// failures) must not stack its own retries on top. With a policy of a
    /// single attempt the store has not retried at all, and the transient
    /// error is passed on as such for the caller to retry.
    pub(crate) async fn after_failure(&mut self, err: StoreError) -> Result<(), StoreError> {
        let StoreError::Transient(msg) = err else { return Err(err) };
        let elapsed = self.started.elapsed();
        let backoff = self.backoff();
        let max_attempts = self.policy.max_attempts.max(1);
        if max_attempts == 1 {
            return Err(StoreError::Transient(msg));
        }
        if self.attempts >= max_attempts || elapsed + backoff > self.policy.budget {
            return Err(StoreError::Permanent(format!(
                "{msg} (gave up after {} attempt(s) in {:.1}s; retry budget {} attempts / {:.0}s)",
                self.attempts,
                elapsed.as_secs_f64(),
                max_attempts,
                self.policy.budget.as_secs_f64(),
            )));
        }
        tracing::warn!(
            operation = self.what,
            attempt = self.attempts,
            backoff_ms = backoff.as_millis() as u64,
            error = %msg,
            "transient MongoDB error; retrying"
        );
        tokio::time::sleep(backoff).await;
        self.attempts += 1;
        Ok(())
    }

    fn backoff(&self) -> Duration {
        let exp = self.attempts.saturating_sub(1).min(16);
        self.policy.initial_backoff.saturating_mul(1u32 << exp).min(self.policy.max_backoff)
    }
}

/// Run `op` until it succeeds, fails for good, or the retry policy gives up
/// (then [`StoreError::Permanent`], see [`Retry::after_failure`]). Each attempt
/// is bounded by `attempt_timeout` (a hung server counts as transient), so the
/// whole operation takes at most about `policy.budget + attempt_timeout`.
///
/// `op` is told whether an earlier attempt failed: after an ambiguous failure
/// the server may have applied that attempt, and an operation that reports a
/// count must then count what is there rather than what it changed.
pub(crate) async fn with_retry<T, F, Fut>(
    policy: &RetryPolicy,
    attempt_timeout: Duration,
    what: &str,
    mut op: F,
) -> Result<T, StoreError>
where
    F: FnMut(bool) -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut retry = Retry::new(policy, what);
    let mut failed_before = false;
    loop {
        let err = match tokio::time::timeout(attempt_timeout, op(failed_before)).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => e,
            Err(_) => StoreError::Transient(format!("{what}: no answer within {:.1}s", attempt_timeout.as_secs_f64())),
        };
        failed_before = true;
        retry.after_failure(err).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_and_selection_errors_are_transient() {
        let io: Error = ErrorKind::Io(std::sync::Arc::new(std::io::ErrorKind::ConnectionReset.into())).into();
        assert!(classify("x", &io).is_transient());
    }

    #[test]
    fn codes() {
        assert!(is_transient_code(10107));
        assert!(is_transient_code(189));
        assert!(!is_transient_code(DUPLICATE_KEY));
        assert!(!is_transient_code(13));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_gives_up_after_max_attempts() {
        let policy = RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            budget: Duration::from_secs(60),
        };
        let mut calls = 0;
        let r: Result<(), _> = with_retry(&policy, Duration::from_secs(5), "op", |_| {
            calls += 1;
            async { Err(StoreError::Transient("boom".into())) }
        })
        .await;
        assert_eq!(calls, 3);
        // Retried already: the caller must not retry again.
        let Err(StoreError::Permanent(msg)) = r else { panic!("expected permanent: {r:?}") };
        assert!(msg.contains("boom") && msg.contains("gave up after 3 attempt(s)"), "{msg}");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_gives_up_when_the_budget_is_spent() {
        let policy = RetryPolicy {
            max_attempts: 100,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(1),
            budget: Duration::from_secs(10),
        };
        let started = tokio::time::Instant::now();
        let mut calls = 0;
        let r: Result<(), _> = with_retry(&policy, Duration::from_secs(3), "op", |_| {
            calls += 1;
            async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                Err(StoreError::Transient("slow failure".into()))
            }
        })
        .await;
        // 2 s per attempt + 1 s backoff: attempts start at 0, 3, 6 and 9 s; none after the 10 s budget.
        assert_eq!(calls, 4);
        assert_eq!(started.elapsed(), Duration::from_secs(11));
        let Err(StoreError::Permanent(msg)) = r else { panic!("expected permanent: {r:?}") };
        assert!(msg.contains("gave up after 4 attempt(s) in 11.0s"), "{msg}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_single_attempt_policy_passes_transient_errors_on() {
        let mut calls = 0;
        let r: Result<(), _> = with_retry(&RetryPolicy::none(), Duration::from_secs(5), "op", |_| {
            calls += 1;
            async { Err(StoreError::Transient("blip".into())) }
        })
        .await;
        assert_eq!(calls, 1);
        // Not retried by the store: the caller may retry.
        assert!(matches!(r, Err(StoreError::Transient(ref m)) if m == "blip"), "{r:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let mut calls = 0;
        let r: Result<(), _> = with_retry(&RetryPolicy::default(), Duration::from_secs(5), "op", |_| {
            calls += 1;
            async { Err(StoreError::Permanent("no".into())) }
        })
        .await;
        assert_eq!(calls, 1);
        assert!(matches!(r, Err(StoreError::Permanent(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn hung_attempts_time_out_and_retry() {
        let policy = RetryPolicy { max_attempts: 2, ..Default::default() };
        let mut calls = 0;
        let r: Result<u32, _> = with_retry(&policy, Duration::from_secs(1), "op", |_| {
            calls += 1;
            let n = calls;
            async move {
                if n == 1 {
                    std::future::pending::<()>().await;
                }
                Ok(n)
            }
        })
        .await;
        assert_eq!(r.ok(), Some(2));
    }

    #[test]
    fn backoff_is_capped() {
        let policy = RetryPolicy {
            max_attempts: 30,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            budget: Duration::from_secs(600),
        };
        let mut r = Retry::new(&policy, "x");
        assert_eq!(r.backoff(), Duration::from_millis(100));
        r.attempts = 3;
        assert_eq!(r.backoff(), Duration::from_millis(400));
        r.attempts = 25;
        assert_eq!(r.backoff(), Duration::from_secs(2));
    }
}
