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
struct FakeExport {
    polls: AtomicUsize,
    plan: Vec<(ExportState, Vec<u32>)>,
    fetched: Mutex<Vec<u32>>,
    cancelled: AtomicUsize,
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
    async fn fetch_chunk(&self, _job: &str, chunk: &u32) -> Result<Bytes, FetchError> {
        if let Ok(mut f) = self.fetched.lock() {
            f.push(*chunk);
        }
        if *chunk == 99 {
            return Err(FetchError::Http { endpoint: "chunk".into(), detail: "HTTP 404".into() });
        }
        Ok(Bytes::from(format!("[{chunk}]")))
    }
    async fn cancel(&self, _job: &str) {
        self.cancelled.fetch_add(1, Ordering::SeqCst);
    }
}

fn fake(plan: Vec<(ExportState, Vec<u32>)>) -> FakeExport {
    FakeExport { polls: AtomicUsize::new(0), plan, fetched: Mutex::new(Vec::new()), cancelled: AtomicUsize::new(0) }
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
    assert_eq!(report.polls, 5);
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
    assert!(err.to_string().contains("ended as ERROR after 1 chunk"), "{err}");
    assert_eq!(job.cancelled.load(Ordering::SeqCst), 1);

    let job = fake(vec![(ExportState::Finished, vec![1, 99])]);
    let err = run_export(&job, fast(), |_, _| async { Ok(()) }).await.expect_err("chunk error");
    assert!(err.to_string().contains("404"), "{err}");
}

#[tokio::test]
async fn export_times_out() {
    let job = fake(vec![(ExportState::Running, vec![])]);
    let opts = ExportOptions { timeout: Duration::from_millis(20), ..fast() };
    let err = run_export(&job, opts, |_, _| async { Ok(()) }).await.expect_err("timeout");
    assert!(err.to_string().contains("not finished"), "{err}");
    assert_eq!(job.cancelled.load(Ordering::SeqCst), 1);
}
