//! Fault draws and body corruption.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::config::{Latency, SimConfig};

/// The random decisions for one request, drawn together so that a sequential client
/// sees the same sequence of faults on every run with the same seed.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Draws {
    pub latency: Duration,
    pub error_5xx: Option<u16>,
    pub hang: bool,
    pub slow: bool,
    /// Keep this fraction of the body.
    pub truncate: Option<f64>,
    /// Which malformed variant to serve.
    pub malformed: Option<u8>,
}

pub(crate) struct FaultRng(StdRng);

impl FaultRng {
    pub(crate) fn new(seed: u64) -> Self {
        FaultRng(StdRng::seed_from_u64(seed ^ 0xFA17_5EED))
    }

    pub(crate) fn draw(&mut self, config: &SimConfig) -> Draws {
        let f = &config.faults;
        let r = &mut self.0;
        // Always draw the same number of values so one knob does not shift the others.
        let lat: f64 = r.random();
        let e: f64 = r.random();
        let which: f64 = r.random();
        let hang: f64 = r.random();
        let slow: f64 = r.random();
        let trunc: f64 = r.random();
        let frac: f64 = r.random();
        let mal: f64 = r.random();
        let variant: u8 = r.random_range(0..3);
        let latency = match &config.latency {
            Latency::None => Duration::ZERO,
            Latency::Fixed(d) => *d,
            Latency::Uniform { min, max } => {
                let (lo, hi) = if min <= max { (*min, *max) } else { (*max, *min) };
                lo + (hi - lo).mul_f64(lat)
            }
        };
        Draws {
            latency,
            error_5xx: (e < f.error_5xx_rate).then_some(match which {
                x if x < 0.5 => 503,
                x if x < 0.8 => 500,
                _ => 502,
            }),
            hang: hang < f.hang_rate,
            slow: slow < f.slow_rate,
            truncate: (trunc < f.truncate_rate).then_some(0.1 + 0.8 * frac),
            malformed: (mal < f.malformed_rate).then_some(variant),
        }
    }
}

/// Cut a body after `keep` of its length (at least one byte is removed).
pub(crate) fn truncate(body: &[u8], keep: f64) -> Vec<u8> {
    if body.len() < 2 {
        return Vec::new();
    }
    let cut = ((body.len() as f64 * keep) as usize).clamp(1, body.len() - 1);
    body[..cut].to_vec()
}

/// A body that is not valid JSON, in one of three shapes seen in the wild.
pub(crate) fn malformed(body: &[u8], variant: u8) -> Vec<u8> {
    match variant % 3 {
        // A proxy's HTML page served with 200 and a JSON content type.
        0 => b"<!DOCTYPE html><html><head><title>Service Unavailable</title></head>\
<body><h1>Service Unavailable</h1><p>upstream connect error</p></body></html>"
            .to_vec(),
        // Garbage spliced into the middle of the document.
        1 => {
            let mid = body.len() / 2;
            let mut out = Vec::with_capacity(body.len() + 32);
            out.extend_from_slice(&body[..mid]);
            out.extend_from_slice(b"{\"corrupted\": NaN,,}");
            out.extend_from_slice(&body[mid..]);
            out
        }
        // Two documents back to back (trailing characters).
        _ => {
            let mut out = body.to_vec();
            out.extend_from_slice(b"\n{\"meta\":{\"trace_id\":");
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupted_bodies_do_not_parse() {
        let body = br#"{"a":[1,2,3],"b":"x"}"#;
        for v in 0..3 {
            assert!(serde_json::from_slice::<serde_json::Value>(&malformed(body, v)).is_err());
        }
        for keep in [0.0, 0.1, 0.5, 0.99, 1.0] {
            let t = truncate(body, keep);
            assert!(t.len() < body.len());
            assert!(serde_json::from_slice::<serde_json::Value>(&t).is_err());
        }
    }

    #[test]
    fn draws_are_reproducible() {
        let mut c = SimConfig::default();
        c.faults.error_5xx_rate = 0.5;
        let a: Vec<_> = {
            let mut r = FaultRng::new(3);
            (0..50).map(|_| r.draw(&c).error_5xx).collect()
        };
        let mut r = FaultRng::new(3);
        let b: Vec<_> = (0..50).map(|_| r.draw(&c).error_5xx).collect();
        assert_eq!(a, b);
        assert!(a.iter().any(Option::is_some) && a.iter().any(Option::is_none));
    }
}
