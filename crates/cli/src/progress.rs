//! Progress bars per connection on a terminal (indicatif), fed from the engine's counters.

use std::time::Duration;

use corral_core::Engine;

use crate::logging::LogSink;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct Bars {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Bars {
    /// Draw one bar per connection; log lines print above them meanwhile.
    pub fn start(engine: Engine, connections: Vec<String>, logs: &LogSink) -> Bars {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8));
        logs.set_bars(Some(multi.clone()));
        let logs = logs.clone();
        let task = tokio::spawn(async move {
            let style = ProgressStyle::with_template("{spinner} {prefix:<24} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            let bars: Vec<(String, ProgressBar)> = connections
                .into_iter()
                .map(|name| {
                    let bar = multi.add(ProgressBar::new_spinner());
                    bar.set_style(style.clone());
                    bar.set_prefix(name.clone());
                    bar.set_message("waiting");
                    (name, bar)
                })
                .collect();
            let mut tick = tokio::time::interval(Duration::from_millis(150));
            loop {
                let stopping = tokio::select! {
                    _ = token.cancelled() => true,
                    _ = tick.tick() => false,
                };
                let progress = engine.progress();
                for (name, bar) in &bars {
                    if let Some((_, p)) = progress.iter().find(|(n, _)| n == name) {
                        let rejected = p.rejected.load(std::sync::atomic::Ordering::Relaxed);
                        bar.set_message(format!(
                            "fetched {:>9}  loaded {:>9}  rejected {:>6}",
                            p.fetched(),
                            p.loaded(),
                            rejected
                        ));
                        if p.is_done() && !bar.is_finished() {
                            bar.finish();
                        } else {
                            bar.tick();
                        }
                    }
                }
                if stopping {
                    for (_, bar) in &bars {
                        if !bar.is_finished() {
                            bar.finish();
                        }
                    }
                    logs.set_bars(None);
                    return;
                }
            }
        });
        Bars { stop, task }
    }

    pub async fn finish(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}
