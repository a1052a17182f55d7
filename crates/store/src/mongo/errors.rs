//! Driver error classification and the retry loop.
//!
//! Transient: network errors, timeouts, server selection failures, a primary
//! stepping down or a node recovering / shutting down, write-concern timeouts,
//! lock / write conflicts, and anything the server or driver labels
//! `RetryableWriteError` (or `RetryableError`). Every store write is an
//! idempotent upsert, delete or replace, so retrying after an ambiguous
//! failure (the server may have applied the write) is safe.

use std::time::{Duration, Instant};

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
    /// another attempt may start, or gives up when the attempts or the time
    /// budget are used up.
    pub(crate) async fn after_failure(&mut self, err: StoreError) -> Result<(), StoreError> {
        let StoreError::Transient(msg) = err else { return Err(err) };
        let elapsed = self.started.elapsed();
        let backoff = self.backoff();
        if self.attempts >= self.policy.max_attempts.max(1) || elapsed + backoff > self.policy.budget {
            return Err(StoreError::Transient(format!(
                "{msg} (gave up after {} attempt(s) in {:.1}s)",
                self.attempts,
                elapsed.as_secs_f64()
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

/// Run `op` until it succeeds, fails for good, or the retry policy gives up.
/// Each attempt is bounded by `attempt_timeout` (a hung server counts as transient).
pub(crate) async fn with_retry<T, F, Fut>(
    policy: &RetryPolicy,
    attempt_timeout: Duration,
    what: &str,
    mut op: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut retry = Retry::new(policy, what);
    loop {
        let err = match tokio::time::timeout(attempt_timeout, op()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => e,
            Err(_) => StoreError::Transient(format!("{what}: no answer within {:.1}s", attempt_timeout.as_secs_f64())),
        };
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
        let r: Result<(), _> = with_retry(&policy, Duration::from_secs(5), "op", || {
            calls += 1;
            async { Err(StoreError::Transient("boom".into())) }
        })
        .await;
        assert_eq!(calls, 3);
        let Err(StoreError::Transient(msg)) = r else { panic!("expected transient: {r:?}") };
        assert!(msg.contains("gave up after 3 attempt(s)"), "{msg}");
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let mut calls = 0;
        let r: Result<(), _> = with_retry(&RetryPolicy::default(), Duration::from_secs(5), "op", || {
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
        let r: Result<u32, _> = with_retry(&policy, Duration::from_secs(1), "op", || {
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
