//! Open-file budget: many connections at once must never run the process out
//! of file descriptors ("Too many open files" would fail connections at random).
//!
//! At start the soft `RLIMIT_NOFILE` is raised to the hard limit. What it
//! allows beyond a reserve becomes `engine.max_open_files`: each connection
//! waits for the descriptors its adapter says it can hold (its HTTP requests
//! in flight, its token endpoint, its files) before it starts. When the
//! connections `max_connections` lets run at once could need more than that,
//! a warning says the run will be slower than configured.

use corral_core::{Connection, EngineConfig};

/// Descriptors kept for everything else: stdio, the store (SQLite and its WAL,
/// or the MongoDB pool), the runtime, logs.
pub const FDS_RESERVED: u64 = 128;

/// Raise the soft open-file limit as far as allowed and budget connections under it.
pub fn fit_open_files(mut config: EngineConfig, connections: &[Connection]) -> EngineConfig {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::debug!(error = %e, "could not read or raise the open-file limit");
            return config;
        }
    };
    let budget = budget_for(limit);
    if config.max_open_files == 0 || config.max_open_files > budget {
        config.max_open_files = budget;
    }
    let wanted = concurrent_need(connections, config.max_connections);
    if wanted > config.max_open_files {
        tracing::warn!(
            max_connections = config.max_connections,
            open_files_wanted = wanted,
            open_files_budget = config.max_open_files,
            open_file_limit = limit,
            "fewer connections will sync at once than engine.max_connections allows: they would need more \
             descriptors than the open-file limit leaves; raise `ulimit -n` to sync more connections at once"
        );
    }
    config
}

/// Descriptors the connections may use under an open-file `limit` (at least a few).
pub fn budget_for(limit: u64) -> usize {
    usize::try_from(limit.saturating_sub(FDS_RESERVED).max(8)).unwrap_or(usize::MAX).min(1 << 30)
}

/// The most descriptors `max_connections` of these connections could hold at once.
fn concurrent_need(connections: &[Connection], max_connections: usize) -> usize {
    let mut costs: Vec<usize> = connections.iter().map(|c| c.adapter.max_open_files().max(1)).collect();
    costs.sort_unstable_by(|a, b| b.cmp(a));
    costs.iter().take(max_connections).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_leaves_the_reserve() {
        assert_eq!(budget_for(1024), 896);
        assert_eq!(budget_for(100), 8, "a tiny limit still syncs, a connection at a time");
        assert!(budget_for(1024) as u64 + FDS_RESERVED <= 1024);
    }
}
