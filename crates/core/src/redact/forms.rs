//! The literal forms in which a secret is looked for.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// Base64 fragments shorter than this (in characters) are not looked for.
pub const MIN_BASE64_FRAGMENT: usize = 8;

/// The literal forms in which `secret` is looked for (see the module docs):
/// the value, its serde_json escaping, its form encoding, and its base64
/// fragments of at least [`MIN_BASE64_FRAGMENT`] characters. Deduplicated;
/// empty for an empty secret.
pub fn secret_forms(secret: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if secret.is_empty() {
        return out;
    }
    let candidates = [secret.to_string(), json_escaped(secret), form_urlencoded(secret)]
        .into_iter()
        .chain(base64_fragments(secret.as_bytes()));
    for form in candidates {
        if !form.is_empty() && !out.contains(&form) {
            out.push(form);
        }
    }
    out
}

/// `s` as it appears inside a JSON string written by serde_json.
fn json_escaped(s: &str) -> String {
    match serde_json::to_string(s) {
        Ok(quoted) => quoted.get(1..quoted.len().saturating_sub(1)).unwrap_or(s).to_string(),
        Err(_) => s.to_string(),
    }
}

/// `s` as `application/x-www-form-urlencoded` (what an HTTP form body carries,
/// as reqwest writes it): ASCII letters, digits and `*-._` kept, a space as
/// `+`, every other byte `%XX`.
pub fn form_urlencoded(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Base64 (RFC 4648, standard alphabet, with `=` padding), as HTTP Basic credentials carry it.
pub fn base64(input: &[u8]) -> String {
    STANDARD.encode(input)
}

/// The base64 characters `secret` determines on its own, wherever it sits in
/// a base64 stream: for each of the three byte alignments and both
/// alphabets, the characters whose six bits all come from the secret.
fn base64_fragments(secret: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for offset in 0..3usize {
            let mut shifted = vec![0u8; offset];
            shifted.extend_from_slice(secret);
            let encoded = engine.encode(&shifted);
            let first = (8 * offset).div_ceil(6);
            let end = 8 * (offset + secret.len()) / 6;
            if let Some(fragment) = encoded.get(first..end)
                && fragment.len() >= MIN_BASE64_FRAGMENT
            {
                out.push(fragment.to_string());
            }
        }
    }
    out
}
