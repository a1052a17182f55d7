//! Small axum test servers and helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use corral_core::metrics::{RequestMetrics, RequestStats};
use corral_http::{HttpClient, HttpConfig, RetryConfig};

/// Serve `router` on an ephemeral loopback port; returns its base URL.
pub async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}

/// Retries fast enough for tests.
pub fn quick_retry() -> RetryConfig {
    RetryConfig {
        max_attempts: 4,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_rate_limited: 5,
        total_budget: Duration::from_secs(10),
    }
}

pub fn client(config: HttpConfig) -> (HttpClient, Arc<RequestMetrics>) {
    let metrics = Arc::new(RequestMetrics::default());
    let client = HttpClient::new(config.with_retry(quick_retry()), metrics.clone()).expect("client builds");
    (client, metrics)
}

pub fn stats(m: &RequestMetrics) -> RequestStats {
    m.snapshot()
}

pub fn count(m: &RequestMetrics, status: u16) -> u64 {
    m.snapshot().by_status.get(&status).copied().unwrap_or(0)
}

#[derive(Default)]
pub struct Counter(AtomicUsize);

impl Counter {
    pub fn bump(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}
