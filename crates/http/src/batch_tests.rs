use super::*;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

#[tokio::test]
async fn batches_run_with_bounded_concurrency() {
    let in_flight = AtomicUsize::new(0);
    let peak = AtomicUsize::new(0);
    let ids: Vec<u32> = (0..103).collect();
    let results: Vec<Result<Vec<u32>, FetchError>> = in_batches(ids, 10, 3, |batch| {
        let (in_flight, peak) = (&in_flight, &peak);
        async move {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok(batch)
        }
    })
    .collect()
    .await;
    assert_eq!(results.len(), 11);
    let mut all: Vec<u32> = results.into_iter().flat_map(|r| r.unwrap_or_default()).collect();
    all.sort_unstable();
    assert_eq!(all, (0..103).collect::<Vec<_>>());
    assert!(peak.load(Ordering::SeqCst) <= 3);
    assert!(peak.load(Ordering::SeqCst) >= 2);
}

/// A fake export whose chunks appear over successive polls, out of order.
/// Chunk 99 fails, chunk 7 has expired, chunk 1 takes `slow` to download.
struct FakeExport {
    polls: AtomicUsize,
    plan: Vec<(ExportState, Vec<u32>)>,
    fetched: Mutex<Vec<u32>>,
    cancelled: AtomicUsize,
    slow: Duration,
    /// (chunk, started, finished) of every download.
    log: Mutex<Vec<(u32, std::time::Instant, std::time::Instant)>>,
}

impl ExportJob for FakeExport {
    type Chunk = u32;
    async fn create(&self) -> Result<String, FetchError> {
        Ok("job-1".into())
    }
    async fn status(&self, job: &str) -> Result<ExportStatus<u32>, FetchError> {
        assert_eq!(job, "job-1");
        let n = self.polls.fetch_add(1, Ordering::SeqCst).min(self.plan.len() - 1);
        let (state, chunks) = self.plan[n].clone();
        Ok(ExportStatus { state, chunks })
    }
    async fn fetch_chunk(&self, _job: &str, chunk: &u32) -> Result<ChunkBody, FetchError> {
        let started = std::time::Instant::now();
        if let Ok(mut f) = self.fetched.lock() {
            f.push(*chunk);
        }
        if *chunk == 1 {
            tokio::time::sleep(self.slow).await;
        }
        if let Ok(mut l) = self.log.lock() {
            l.push((*chunk, started, std::time::Instant::now()));
        }
        match *chunk {
            99 => Err(FetchError::Http { endpoint: "chunk".into(), detail: "HTTP 500".into() }),
            7 => Ok(ChunkBody::Expired),
            c => Ok(ChunkBody::Data(Bytes::from(format!("[{c}]")))),
        }
    }
    async fn cancel(&self, _job: &str) {
        self.cancelled.fetch_add(1, Ordering::SeqCst);
    }
}

fn fake(plan: Vec<(ExportState, Vec<u32>)>) -> FakeExport {
    FakeExport {
        polls: AtomicUsize::new(0),
        plan,
        fetched: Mutex::new(Vec::new()),
        cancelled: AtomicUsize::new(0),
        slow: Duration::ZERO,
        log: Mutex::new(Vec::new()),
    }
}

fn fast() -> ExportOptions {
    ExportOptions {
        poll_initial: Duration::from_millis(1),
        poll_max: Duration::from_millis(4),
        concurrency: 2,
        timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn export_delivers_each_chunk_once_as_it_appears() {
    let job = fake(vec![
        (ExportState::Queued, vec![]),
        (ExportState::Running, vec![3, 1]),
        (ExportState::Running, vec![3, 1]),
        (ExportState::Running, vec![1, 3, 2]),
        (ExportState::Finished, vec![1, 2, 3, 5, 4]),
    ]);
    let mut delivered = Vec::new();
    let report = run_export(&job, fast(), |c, body| {
        delivered.push((c, body));
        async { Ok(()) }
    })
    .await;
    let report = report.expect("export finished");
    assert_eq!(report.chunks, 5);
    assert!(report.polls >= 5, "{report:?}");
    let mut ids: Vec<u32> = delivered.iter().map(|(c, _)| *c).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2, 3, 4, 5]);
    assert!(delivered.iter().all(|(c, b)| b == &Bytes::from(format!("[{c}]"))));
    assert_eq!(job.fetched.lock().map(|f| f.len()).unwrap_or(0), 5);
    assert_eq!(job.cancelled.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn export_failure_is_an_error_and_cancels() {
    let job = fake(vec![(ExportState::Running, vec![1]), (ExportState::Failed("ERROR".into()), vec![1])]);
    let err = run_export(&job, fast(), |_, _| async { Ok(()) }).await.expect_err("failed export");
    assert!(err.to_string().contains("export job-1 ended as ERROR after"), "{err}");
    assert_eq!(job.cancelled.load(Ordering::SeqCst), 1);

    let job = fake(vec![(ExportState::Finished, vec![1, 99])]);
    let err = run_export(&job, fast(), |_, _| async { Ok(()) }).await.expect_err("chunk error");
    assert!(err.to_string().contains("HTTP 500"), "{err}");
}

#[tokio::test]
async fn an_expired_chunk_fails_the_export_clearly() {
    let job = fake(vec![(ExportState::Running, vec![2, 7]), (ExportState::Finished, vec![2, 7, 3])]);
    let mut delivered = Vec::new();
    let err = run_export(&job, fast(), |c, _| {
        delivered.push(c);
        async { Ok(()) }
    })
    .await
    .expect_err("expired chunk");
    let msg = err.to_string();
    assert!(matches!(err, FetchError::Protocol { .. }), "{msg}");
    assert!(msg.contains("chunk 7 expired") && msg.contains("run again"), "{msg}");
    assert_eq!(job.cancelled.load(Ordering::SeqCst), 1);
    assert!(!delivered.contains(&7));
}

#[tokio::test]
async fn polling_goes_on_while_a_chunk_downloads() {
    // Chunk 1 takes 300 ms; chunk 2 is listed by a later poll during that download.
    let mut job = fake(vec![
        (ExportState::Running, vec![1]),
        (ExportState::Running, vec![1]),
        (ExportState::Running, vec![1, 2]),
        (ExportState::Finished, vec![1, 2]),
    ]);
    job.slow = Duration::from_millis(300);
    let report = run_export(&job, fast(), |_, _| async { Ok(()) }).await.expect("finished");
    assert_eq!(report.chunks, 2);
    let log = job.log.lock().map(|l| l.clone()).unwrap_or_default();
    let one = log.iter().find(|(c, ..)| *c == 1).expect("chunk 1");
    let two = log.iter().find(|(c, ..)| *c == 2).expect("chunk 2");
    assert!(two.1 < one.2, "chunk 2 started while chunk 1 was still downloading: {log:?}");
    assert!(report.polls >= 4, "{report:?}");
}

#[tokio::test]
async fn no_more_than_concurrency_chunks_are_held_for_a_slow_sink() {
    // The sink takes 100 ms per chunk; with concurrency 2 at most two chunks
    // are downloading, downloaded or being delivered at any time.
    let job = fake(vec![(ExportState::Running, vec![2, 3, 4, 5]), (ExportState::Finished, vec![2, 3, 4, 5, 6])]);
    let delivered = std::sync::Arc::new(Mutex::new(Vec::new()));
    let report = run_export(&job, fast(), |_, _| {
        let delivered = delivered.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Ok(mut d) = delivered.lock() {
                d.push(std::time::Instant::now());
            }
            Ok(())
        }
    })
    .await
    .expect("finished");
    assert_eq!(report.chunks, 5);
    let mut starts: Vec<std::time::Instant> =
        job.log.lock().map(|l| l.iter().map(|(_, s, _)| *s).collect()).unwrap_or_default();
    starts.sort();
    let delivered = delivered.lock().map(|d| d.clone()).unwrap_or_default();
    assert_eq!((starts.len(), delivered.len()), (5, 5));
    for i in 2..5 {
        assert!(starts[i] >= delivered[i - 2], "download {i} started before delivery {} ended", i - 2);
    }
}
