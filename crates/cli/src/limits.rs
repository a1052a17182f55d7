//! Open-file budget: many connections at once must never run the process out
//! of file descriptors ("Too many open files" would fail connections at random).
//!
//! At start the soft `RLIMIT_NOFILE` is raised to the hard limit. If the
//! configured `engine.max_connections` could still need more descriptors than
//! that, the number of connections syncing at once is lowered, with a warning:
//! the run takes longer but every connection gets its sockets.

use corral_core::EngineConfig;

/// Descriptors budgeted per concurrently syncing connection: its pooled HTTP
/// connections (the built-in adapters keep at most 5 requests in flight) and
/// the token endpoint, with headroom.
pub const FDS_PER_CONNECTION: u64 = 8;
/// Descriptors kept for everything else: stdio, the store (SQLite and its WAL,
/// or the MongoDB pool), the runtime, logs.
pub const FDS_RESERVED: u64 = 128;

/// Raise the soft open-file limit as far as allowed and fit `max_connections` under it.
pub fn fit_open_files(mut config: EngineConfig) -> EngineConfig {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::debug!(error = %e, "could not read or raise the open-file limit");
            return config;
        }
    };
    let fitted = max_connections_for(limit);
    if (config.max_connections as u64) > fitted {
        tracing::warn!(
            configured = config.max_connections,
            used = fitted,
            open_file_limit = limit,
            "engine.max_connections lowered to fit the open-file limit ({FDS_PER_CONNECTION} descriptors per connection); \
             raise `ulimit -n` to sync more connections at once"
        );
        config.max_connections = fitted as usize;
    }
    config
}

/// How many connections fit in `limit` open files (at least one).
pub fn max_connections_for(limit: u64) -> u64 {
    (limit.saturating_sub(FDS_RESERVED) / FDS_PER_CONNECTION).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_fit_the_limit() {
        assert_eq!(max_connections_for(1024), 112);
        assert_eq!(max_connections_for(256), 16);
        assert_eq!(max_connections_for(100), 1, "a tiny limit still syncs, one connection at a time");
        assert!(max_connections_for(1024) * FDS_PER_CONNECTION + FDS_RESERVED <= 1024);
    }
}
