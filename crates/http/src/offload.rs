//! CPU work on a body (decoding it, scanning it for a cursor) never runs on
//! the tokio runtime, however small the body: [`off_runtime`] moves it to the
//! blocking pool and awaits the result.

use std::cell::Cell;

thread_local! {
    static OFFLOADED: Cell<u64> = const { Cell::new(0) };
}

/// Run `f` on tokio's blocking pool and await its result; `None` if it
/// panicked (or the runtime is shutting down). Use it for every decode or
/// scan of a response body in a fetch path; only headers are read inline.
pub async fn off_runtime<T, F>(f: F) -> Option<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    OFFLOADED.with(|c| c.set(c.get().wrapping_add(1)));
    tokio::task::spawn_blocking(f).await.ok()
}

/// How many times [`off_runtime`] was called from the current thread. Tests
/// on a current-thread runtime use it to check that a fetch path offloads.
#[doc(hidden)]
pub fn offloaded_on_this_thread() -> u64 {
    OFFLOADED.with(Cell::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_on_another_thread_and_counts() {
        let before = offloaded_on_this_thread();
        let here = std::thread::current().id();
        let there = off_runtime(|| std::thread::current().id()).await;
        assert!(there.is_some_and(|t| t != here));
        assert_eq!(offloaded_on_this_thread(), before + 1);
        #[allow(clippy::panic)]
        let panicked: Option<()> = off_runtime(|| panic!("decoder bug")).await;
        assert_eq!(panicked, None);
    }
}
