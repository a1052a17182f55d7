//! Capturing what the adapter logs while the suite runs.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// Captured log text is kept up to this many bytes (the rest is dropped).
const MAX_LOG_BYTES: usize = 64 * 1024 * 1024;

type Buffer = Arc<Mutex<Vec<u8>>>;

static CAPTURE: OnceLock<Option<Buffer>> = OnceLock::new();

struct Writer(Buffer);

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock()
            && b.len() < MAX_LOG_BYTES
        {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Install the capturing subscriber (once per process). `false` when
/// another global subscriber was installed first: logs are then not checked.
pub(crate) fn install() -> bool {
    CAPTURE
        .get_or_init(|| {
            use tracing_subscriber::util::SubscriberInitExt;
            let buffer: Buffer = Arc::default();
            let writer = buffer.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::DEBUG)
                .with_ansi(false)
                .with_writer(move || Writer(writer.clone()))
                .finish();
            subscriber.try_init().ok().map(|()| buffer)
        })
        .is_some()
}

/// Everything logged so far (lossy UTF-8), if logs are captured.
pub(crate) fn text() -> Option<String> {
    let buffer = CAPTURE.get()?.as_ref()?;
    let bytes = buffer.lock().ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}
