//! One run per connection at a time: the lease held in the store.
//!
//! A run takes its connection's lease before it fetches anything and keeps
//! renewing it (every third of its time to live) while it runs, so two runs
//! of one connection never overlap, whichever process or machine starts
//! them. A run that finds the lease held is skipped, or waits for it when
//! the engine is asked to (`EngineConfig::wait_for_lease`). A run that can
//! no longer renew its lease (another run took it over after it expired,
//! or the store could not be reached for a whole time to live) is stopped:
//! it saves no checkpoint and does no stale handling from then on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::store::{Lease, LeaseGrant, Store, StoreError};

/// Why a run did not get its lease.
pub(super) enum Refused {
    /// Another run holds it (and the engine was not asked to wait).
    Held(Lease),
    /// The engine was cancelled while waiting for it.
    Cancelled,
    /// The store could not say.
    Store(StoreError),
}

/// A held lease, renewed in the background until [`LeaseGuard::release`].
pub(super) struct LeaseGuard {
    store: Arc<dyn Store>,
    connection: String,
    holder: String,
    lost: Arc<AtomicBool>,
    stop: CancellationToken,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

/// Who this process is, for the lease's `owner`: `host pid N`.
pub(super) fn owner() -> String {
    owner_of(&gethostname::gethostname().to_string_lossy(), std::process::id())
}

fn owner_of(host: &str, pid: u32) -> String {
    format!("{host} pid {pid}")
}

/// The lease's holder ran on this host in a process that is gone (it was
/// killed, or ended while the store was unreachable and could not release
/// it): no need to wait for the lease to expire. Only where the answer is
/// certain (Linux, where `/proc/PID` exists for every live process);
/// anywhere else a lease is waited out.
fn holder_is_gone(lease: &Lease) -> bool {
    let host = gethostname::gethostname();
    let Some(pid) = lease
        .owner
        .strip_prefix(&*host.to_string_lossy())
        .and_then(|rest| rest.strip_prefix(" pid "))
        .and_then(|pid| pid.parse::<u32>().ok())
    else {
        return false;
    };
    if pid == std::process::id() {
        // This process: gone unless one of its runs still holds it.
        return !live().lock().map(|l| l.contains(&lease.holder)).unwrap_or(true);
    }
    std::path::Path::new("/proc/self").exists() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// `holder` in [`live`] until dropped, unless `keep` (the lease was taken,
/// and its [`LeaseGuard`] removes it).
struct Registered<'a> {
    holder: &'a str,
    keep: bool,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if !self.keep
            && let Ok(mut l) = live().lock()
        {
            l.remove(self.holder);
        }
    }
}

/// The holders (sync ids) of the leases this process's runs hold now, or
/// are asking the store for.
fn live() -> &'static std::sync::Mutex<std::collections::HashSet<String>> {
    static LIVE: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<String>>> = std::sync::OnceLock::new();
    LIVE.get_or_init(Default::default)
}

/// Take `connection`'s lease for the run `holder`, waiting for it if `wait`.
/// On loss of the lease later, `on_lost` is cancelled.
pub(super) async fn acquire(
    store: Arc<dyn Store>,
    connection: &str,
    holder: &str,
    ttl: Duration,
    wait: bool,
    cancel: &CancellationToken,
    on_lost: CancellationToken,
) -> Result<LeaseGuard, Refused> {
    let owner = owner();
    // Live from before the lease is asked for: another run of this process
    // that finds the lease held by `holder` between the store granting it
    // and this function returning must not take it over as a run that is
    // gone (it once did, on a loaded machine, and both runs went on).
    if let Ok(mut l) = live().lock() {
        l.insert(holder.to_string());
    }
    let mut registered = Registered { holder, keep: false };
    let mut told = None::<Instant>;
    let mut released = None::<String>;
    loop {
        match store.acquire_lease(connection, holder, &owner, ttl).await {
            Ok(LeaseGrant::Acquired(_)) => break,
            Ok(LeaseGrant::Held(lease)) if holder_is_gone(&lease) && released.as_ref() != Some(&lease.holder) => {
                tracing::warn!(
                    connection, held_by = %lease.owner, sync_id = %lease.holder,
                    "the run holding this connection's lease is no longer running on this host; taking the lease over"
                );
                if let Err(e) = store.release_lease(connection, &lease.holder).await {
                    tracing::warn!(connection, error = %e, "could not release the lease of a run that is gone");
                }
                released = Some(lease.holder);
                continue;
            }
            Ok(LeaseGrant::Held(lease)) if !wait => return Err(Refused::Held(lease)),
            Ok(LeaseGrant::Held(lease)) => {
                // Say so at once, then once a minute while the wait goes on.
                if told.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    tracing::warn!(
                        connection, held_by = %lease.owner, sync_id = %lease.holder, expires_at = %lease.expires_at,
                        "another run of this connection is in progress; waiting for it to finish"
                    );
                    told = Some(Instant::now());
                }
            }
            Err(e) if !wait => return Err(Refused::Store(e)),
            Err(e) => tracing::warn!(connection, error = %e, "could not read the connection's lease; trying again"),
        }
        let poll = (ttl / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        tokio::select! {
            () = cancel.cancelled() => return Err(Refused::Cancelled),
            () = tokio::time::sleep(poll) => {}
        }
    }
    // From here the guard below takes `holder` out of `live` when the run ends.
    registered.keep = true;
    let lost = Arc::new(AtomicBool::new(false));
    let stop = CancellationToken::new();
    let renewer = tokio::spawn(renew(
        store.clone(),
        connection.to_string(),
        holder.to_string(),
        ttl,
        lost.clone(),
        stop.clone(),
        on_lost,
    ));
    Ok(LeaseGuard {
        store,
        connection: connection.to_string(),
        holder: holder.to_string(),
        lost,
        stop,
        renewer: Some(renewer),
    })
}

/// Renew every third of `ttl`; give up (and cancel `on_lost`) when the
/// lease is someone else's, or when no renewal succeeded for a whole `ttl`.
async fn renew(
    store: Arc<dyn Store>,
    connection: String,
    holder: String,
    ttl: Duration,
    lost: Arc<AtomicBool>,
    stop: CancellationToken,
    on_lost: CancellationToken,
) {
    let every = ttl / 3;
    let mut confirmed = Instant::now();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let attempt =
            tokio::time::timeout(every.max(Duration::from_millis(100)), store.renew_lease(&connection, &holder, ttl));
        let why = match attempt.await {
            Ok(Ok(Some(_))) => {
                confirmed = Instant::now();
                continue;
            }
            Ok(Ok(None)) => "another run took the lease over".to_string(),
            Ok(Err(e)) if confirmed.elapsed() < ttl => {
                tracing::warn!(connection = %connection, error = %e, "could not renew the connection's lease; trying again");
                continue;
            }
            Err(_) if confirmed.elapsed() < ttl => {
                tracing::warn!(connection = %connection, "renewing the connection's lease timed out; trying again");
                continue;
            }
            Ok(Err(e)) => format!("the lease could not be renewed for {ttl:?}: {e}"),
            Err(_) => format!("the lease could not be renewed for {ttl:?}: the store did not answer"),
        };
        tracing::error!(connection = %connection, sync_id = %holder, reason = %why, "lost the connection's lease; stopping this run");
        lost.store(true, Ordering::SeqCst);
        on_lost.cancel();
        return;
    }
}

impl LeaseGuard {
    /// The lease was lost: another run may own the connection now.
    pub(super) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Shared flag, set when the lease is lost.
    pub(super) fn lost_flag(&self) -> Arc<AtomicBool> {
        self.lost.clone()
    }

    /// Stop renewing and give the lease up (if still ours).
    pub(super) async fn release(mut self) {
        self.stop.cancel();
        if let Some(renewer) = self.renewer.take() {
            let _ = renewer.await;
        }
        if self.is_lost() {
            return;
        }
        if let Err(e) = self.store.release_lease(&self.connection, &self.holder).await {
            // It expires on its own: the next run waits at most its time to live.
            tracing::warn!(connection = %self.connection, error = %e, "could not release the connection's lease");
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        // A guard dropped without `release` (a panic) stops renewing; the
        // lease expires, or the next run of this process takes it over.
        self.stop.cancel();
        if let Ok(mut l) = live().lock() {
            l.remove(&self.holder);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(owner: String) -> Lease {
        let now = chrono::Utc::now();
        Lease { connection: "c".into(), holder: "s".into(), owner, acquired_at: now, expires_at: now }
    }

    #[test]
    fn only_a_gone_process_on_this_host_is_gone() {
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        // A lease of this process: gone unless one of its runs holds it.
        assert!(holder_is_gone(&lease(owner())));
        live().lock().expect("live").insert("s".into());
        assert!(!holder_is_gone(&lease(owner())));
        live().lock().expect("live").remove("s");
        // pid 0 never names a live process in /proc.
        assert_eq!(holder_is_gone(&lease(owner_of(&host, 0))), std::path::Path::new("/proc/self").exists());
        // Another host, or an owner we cannot read: never assumed gone.
        assert!(!holder_is_gone(&lease(owner_of("another-host.example", 0))));
        assert!(!holder_is_gone(&lease(format!("{host} pid x"))));
        assert!(!holder_is_gone(&lease(String::new())));
    }
}
