//! Recording HTTP exchanges (`corral record`): when a recorder is installed
//! in the process, every answer the toolkit reads (API requests, every
//! attempt, and token requests) is handed to it, in the order received.
//! Nothing is recorded otherwise; the check is an uncontended lock.
//!
//! The exchanges go over a bounded channel to whoever installed the
//! recorder (the CLI writes them with [`crate::cassette::CassetteWriter`]
//! on a thread of its own): a slow writer slows the sync down, it never
//! makes memory grow, and nothing is serialized on the async runtime.

use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use reqwest::Url;
use reqwest::header::HeaderMap;
use tokio::sync::mpsc;

/// One request and the answer read for it.
#[derive(Debug)]
pub struct Exchange {
    pub method: String,
    /// The URL requested (before any redirect).
    pub url: Url,
    /// The request body when it selects the answer (a JSON body of ids);
    /// never a token request's form (it carries the client secret).
    pub request_body: Option<Bytes>,
    /// A token request (OAuth2): its answer's tokens are redacted when written.
    pub token_request: bool,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

static RECORDER: Mutex<Option<mpsc::Sender<Exchange>>> = Mutex::new(None);

fn installed() -> Option<mpsc::Sender<Exchange>> {
    RECORDER.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// Install the process's recorder; the exchanges arrive on the receiver
/// until [`stop_recording`]. `None` when one is installed already.
pub fn start_recording(capacity: usize) -> Option<mpsc::Receiver<Exchange>> {
    let mut slot = RECORDER.lock().unwrap_or_else(PoisonError::into_inner);
    if slot.is_some() {
        return None;
    }
    let (tx, rx) = mpsc::channel(capacity.max(1));
    *slot = Some(tx);
    Some(rx)
}

/// Stop recording: the receiver ends once the exchanges already handed over are read.
pub fn stop_recording() {
    RECORDER.lock().unwrap_or_else(PoisonError::into_inner).take();
}

/// Whether a recorder is installed.
pub fn recording() -> bool {
    RECORDER.lock().unwrap_or_else(PoisonError::into_inner).is_some()
}

/// Hand an exchange to the recorder, if there is one (built only then).
pub(crate) async fn note(exchange: impl FnOnce() -> Exchange) {
    if let Some(tx) = installed() {
        // A recorder that went away records nothing more; the sync goes on.
        let _ = tx.send(exchange()).await;
    }
}
