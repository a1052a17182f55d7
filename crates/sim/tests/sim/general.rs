use std::time::{Duration, Instant};

use corral_sim::{Behavior, Faults, Latency, SimConfig, Vendor};

use crate::common::*;

#[tokio::test]
async fn latency_and_slow_responses_are_applied() {
    let config = SimConfig::new(1, 10).latency_ms(150);
    let sim = sim(Vendor::Okta, config).await;
    let url = format!("{}/api/v1/users/me", sim.base_url);
    let t = Instant::now();
    let resp = client()
        .get(&url)
        .header("authorization", format!("SSWS {}", sim.config.credentials.token))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(150));

    let config =
        SimConfig::new(1, 10).faults(Faults { slow_rate: 1.0, slow: Duration::from_millis(200), ..Faults::default() });
    let sim = crate::common::sim(Vendor::Okta, config).await;
    let t = Instant::now();
    let resp = client()
        .get(format!("{}/api/v1/users", sim.base_url))
        .header("authorization", format!("SSWS {}", sim.config.credentials.token))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert_eq!(sim.counters.snapshot().fault("slow"), 1);
}

#[tokio::test]
async fn hung_requests_time_out_and_shutdown_is_prompt() {
    let config =
        SimConfig::new(1, 10).faults(Faults { hang_rate: 1.0, hang: Duration::from_secs(600), ..Faults::default() });
    let sim = sim(Vendor::Okta, config).await;
    let c = reqwest::Client::builder().timeout(Duration::from_millis(300)).build().expect("client");
    let err = c
        .get(format!("{}/api/v1/users", sim.base_url))
        .header("authorization", format!("SSWS {}", sim.config.credentials.token))
        .send()
        .await;
    assert!(err.is_err_and(|e| e.is_timeout()));
    assert_eq!(sim.counters.snapshot().fault("hang"), 1);
    let t = Instant::now();
    sim.shutdown().await;
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn faults_are_reproducible_from_the_seed() {
    async fn statuses(seed: u64) -> Vec<u16> {
        let sim = sim(Vendor::Okta, SimConfig::new(seed, 10).error_rate(0.5)).await;
        let mut out = Vec::new();
        for _ in 0..20 {
            let resp = client()
                .get(format!("{}/api/v1/users", sim.base_url))
                .header("authorization", format!("SSWS {}", sim.config.credentials.token))
                .send()
                .await
                .expect("send");
            out.push(resp.status().as_u16());
        }
        out
    }
    let a = statuses(77).await;
    assert_eq!(a, statuses(77).await);
    assert!(a.contains(&200) && a.iter().any(|s| *s >= 500));
    assert_ne!(a, statuses(78).await);
}

#[tokio::test]
async fn concurrency_limit_and_counters() {
    let config = SimConfig::new(1, 10)
        .latency(Latency::Fixed(Duration::from_millis(200)))
        .behavior(Behavior { max_concurrent: Some(2), ..Behavior::default() });
    let sim = sim(Vendor::Okta, config).await;
    let url = format!("{}/api/v1/users", sim.base_url);
    let auth = format!("SSWS {}", sim.config.credentials.token);
    let c = client();
    let reqs = (0..5).map(|_| c.get(&url).header("authorization", &auth).send());
    let results = futures_join(reqs.collect()).await;
    let ok = results.iter().filter(|s| **s == 200).count();
    let limited = results.iter().filter(|s| **s == 429).count();
    assert_eq!(ok + limited, 5);
    assert!(ok >= 2 && limited >= 1, "{results:?}");
    let snap = sim.counters.snapshot();
    assert_eq!(snap.requests, 5);
    assert_eq!(snap.endpoint("okta.users"), 5);
    assert_eq!(snap.status(429), limited as u64);
    assert!(snap.max_in_flight >= 3);
    assert!(snap.bytes_served > 0);
}

async fn futures_join<F>(futs: Vec<F>) -> Vec<u16>
where
    F: std::future::Future<Output = reqwest::Result<reqwest::Response>> + Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("join").expect("send").status().as_u16());
    }
    out
}

#[tokio::test]
async fn unknown_routes_are_404_in_vendor_shape() {
    let sim = sim(Vendor::CrowdStrike, SimConfig::new(1, 10)).await;
    let resp = client().get(format!("{}/nope", sim.base_url)).send().await.expect("send");
    assert_eq!(resp.status(), 404);
    let v: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(v["errors"][0]["code"], 404);
}

#[tokio::test]
async fn serves_on_the_callers_runtime_with_zero_threads() {
    let sim = sim(Vendor::CrowdStrike, SimConfig::new(6, 20).threads(0)).await;
    let token = cs_token(&sim.base_url, &sim.config.credentials).await;
    let ids = corral_sim::crowdstrike_device_ids(6, 20, 0);
    let resp = client()
        .post(format!("{}/devices/entities/devices/v2", sim.base_url))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "ids": ids }))
        .send()
        .await
        .expect("send");
    let v: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(v["resources"], serde_json::Value::from(corral_sim::crowdstrike_hosts(6, 20, 0)));
    sim.shutdown().await;
}
