//! Graph throttling: 429 with `Retry-After` in seconds is waited out, and a
//! client configured at the vendor's rate uses it without being throttled.
//!
//! Its own test binary, so the heavier sync tests do not compete for the CPU while it times requests.

mod common;

use std::time::{Duration, Instant};

use corral_core::{AssetKind, RunStatus};
use corral_sim::SimConfig;
use serde_json::json;

use common::*;

/// The simulator's limit: R requests per second, sliding window (like Graph).
const R: u32 = 20;

/// A client much faster than the vendor allows is throttled; it waits as told
/// (every request of the connection pauses), so the sync succeeds and the
/// simulator never sees more than a handful of attempts beyond its limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_seconds_is_honoured() {
    const SIZE: usize = 200;
    let sim = start(SimConfig::new(2, SIZE).rate_limit(R, Duration::from_secs(1))).await;
    let adapter = adapter(&sim, json!({"page_size": 10, "requests_per_second": 1000}));
    let started = Instant::now();
    let (summary, store) = sync(adapter, &[]).await;
    let elapsed = started.elapsed();
    assert_eq!(summary.status, RunStatus::Success, "{}", show(&summary));
    assert_eq!(stored_ids(&store, AssetKind::User).len(), SIZE);
    let c = sim.counters.snapshot();
    assert!(c.rate_limited >= 1, "the vendor had to say 429: {c:?}");
    assert_eq!(summary.requests.rate_limited, c.rate_limited);
    // Waiting as told: a 429 stops every request of the client for the
    // announced seconds, so each throttled window holds at most the admitted
    // R plus the requests already on the wire (one per stream).
    assert!(c.max_in_window <= u64::from(R) + 2, "{c:?}");
    assert!(c.rate_limited <= 8, "{c:?}");
    // 40 pages at 20/s need 2 s: the waits cost about a second each.
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");

    // The client really waited the announced seconds: each stream's request
    // after a 429 reached the simulator no sooner than Retry-After allowed,
    // and the waits it recorded add up to what was announced.
    let events = sim.counters.events();
    let mut announced = Duration::ZERO;
    for (i, e) in events.iter().enumerate().filter(|(_, e)| e.status == 429) {
        let wait = e.retry_after.expect("a 429 announces Retry-After");
        assert!(wait >= Duration::from_secs(1), "{e:?}");
        announced += wait;
        let next = events[i + 1..].iter().find(|n| n.endpoint == e.endpoint).expect("the stream went on");
        assert!(
            next.arrived + Duration::from_millis(20) >= e.finished + wait,
            "{} asked again {:?} after a 429 announcing {wait:?}",
            e.endpoint,
            next.arrived.saturating_sub(e.finished)
        );
    }
    let recorded = Duration::from_millis(summary.requests.retry_wait_ms);
    assert!(recorded + Duration::from_millis(5 * c.rate_limited) >= announced, "waited {recorded:?} of {announced:?}");
    assert!(recorded <= announced + Duration::from_secs(1), "waited {recorded:?}, announced {announced:?}");
    sim.shutdown().await;
}

/// Configured at the vendor's R, the client spaces its requests evenly across
/// both streams (at 90 % of R, see `config::PACING`): never more than R in
/// any window, and it is not throttled. (How much of R it uses is a figure
/// for benches, not a test: on a busy machine it varies.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_at_the_vendor_rate_it_uses_the_rate_without_429s() {
    const SIZE: usize = 800;
    const PAGE: usize = 20;
    let sim = start(SimConfig::new(3, SIZE).rate_limit(R, Duration::from_secs(1))).await;
    let adapter = adapter(&sim, json!({"page_size": PAGE, "requests_per_second": R}));
    let (summary, store) = sync(adapter, &[]).await;
    assert_eq!(summary.status, RunStatus::Success, "{}", show(&summary));
    assert_eq!(stored_ids(&store, AssetKind::User).len(), SIZE);

    let c = sim.counters.snapshot();
    // Data requests answered 200 (the token endpoint is not rate limited).
    let served = c.endpoint("graph.users") + c.endpoint("graph.devices") - c.rate_limited;
    assert_eq!(served as usize, 2 * SIZE / PAGE, "{c:?}");
    assert_eq!(c.rate_limited, 0, "the client knows the limit: never throttled: {c:?}");
    assert_eq!(summary.requests.rate_limited, 0);
    assert!(c.max_in_window <= u64::from(R), "never faster than the vendor allows: {c:?}");
    assert!(summary.requests.limiter_wait_ms > 0, "the client paced itself: {:?}", summary.requests);
    sim.shutdown().await;
}
