//! Group execution of small statements: requests that arrive together share one statement, one
//! round trip and one commit.
//!
//! A [`Batcher`] owns one thread. Callers [`submit`](Batcher::submit) a job and await its
//! result; the thread takes whatever has queued up since its last batch (at most `max_batch`),
//! runs the batch function once on a pooled connection, and hands each caller its own result.
//! Nothing waits for a batch to fill: an idle batcher runs a lone job at once, and batches grow
//! only while the previous one is in flight, so batching adds no latency at low load and removes
//! per-statement and per-commit work (parse, executor start-up, WAL flush, round trips) at high
//! load, where PostgreSQL would otherwise spend most of its time on them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use tokio::sync::oneshot;

use super::{Db, StorageError, StorageResult};

type Reply<R> = oneshot::Sender<StorageResult<R>>;

/// The work of one batch: `jobs` in, exactly one result per job out, in the same order. It takes
/// its connections from `db` (usually one; a second one to settle an outcome the first could not
/// report, say).
pub type BatchFn<J, R> = Box<dyn Fn(&Db, &[J]) -> StorageResult<Vec<R>> + Send + 'static>;

/// How many batches a batcher ran, and how many jobs they held (also exported as the
/// `consent_db_batch_size` histogram, which is per process).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchCounts {
    pub batches: u64,
    pub jobs: u64,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    jobs: AtomicU64,
}

/// See the [module documentation](self).
pub struct Batcher<J, R> {
    name: &'static str,
    jobs: mpsc::Sender<(J, Reply<R>)>,
    counters: Arc<Counters>,
}

impl<J, R> std::fmt::Debug for Batcher<J, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").field("name", &self.name).finish()
    }
}

impl<J: Send + 'static, R: Send + 'static> Batcher<J, R> {
    /// Starts the batch thread. It ends when the batcher is dropped.
    pub fn spawn(
        db: Db,
        name: &'static str,
        max_batch: usize,
        run: BatchFn<J, R>,
    ) -> StorageResult<Self> {
        let (jobs, queue) = mpsc::channel::<(J, Reply<R>)>();
        let counters = Arc::new(Counters::default());
        let counting = counters.clone();
        std::thread::Builder::new()
            .name(format!("db-batch-{name}"))
            .spawn(move || {
                let max_batch = max_batch.max(1);
                while let Ok(first) = queue.recv() {
                    let mut batch = vec![first];
                    while batch.len() < max_batch {
                        match queue.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    // A caller that has gone (its client disconnected) wants nothing done: running
                    // its job could, say, spend a refresh token nobody receives the successor of.
                    let (inputs, replies): (Vec<J>, Vec<Reply<R>>) =
                        batch.into_iter().filter(|(_, r)| !r.is_closed()).unzip();
                    if inputs.is_empty() {
                        continue;
                    }
                    metrics::histogram!("consent_db_batch_size", "batch" => name)
                        .record(inputs.len() as f64);
                    counting.batches.fetch_add(1, Ordering::Relaxed);
                    counting
                        .jobs
                        .fetch_add(inputs.len() as u64, Ordering::Relaxed);
                    // A panicking batch fails its jobs, not the thread (and so every later job).
                    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run(&db, &inputs)
                    }));
                    let outcome = ran
                        .unwrap_or_else(|_| {
                            Err(StorageError::Unavailable(format!("batch {name} panicked")))
                        })
                        .and_then(|outs| match outs.len() == replies.len() {
                            true => Ok(outs),
                            false => Err(StorageError::Unavailable(format!(
                                "batch {name} returned {} results for {} jobs",
                                outs.len(),
                                replies.len()
                            ))),
                        });
                    match outcome {
                        Ok(outs) => {
                            for (reply, out) in replies.into_iter().zip(outs) {
                                // The caller may have gone (client disconnected): nothing to do.
                                let _ = reply.send(Ok(out));
                            }
                        }
                        Err(e) => {
                            tracing::warn!(batch = name, error = %e, "database batch failed");
                            let message = e.to_string();
                            for reply in replies {
                                let _ = reply.send(Err(StorageError::Unavailable(message.clone())));
                            }
                        }
                    }
                }
            })
            .map_err(|e| StorageError::Unavailable(format!("cannot start batch thread: {e}")))?;
        Ok(Self {
            name,
            jobs,
            counters,
        })
    }

    /// Batches run so far and the jobs they held.
    pub fn counts(&self) -> BatchCounts {
        BatchCounts {
            batches: self.counters.batches.load(Ordering::Relaxed),
            jobs: self.counters.jobs.load(Ordering::Relaxed),
        }
    }

    /// Queues `job` for the next batch and waits for its result. A failed batch fails each of its
    /// jobs with [`StorageError::Unavailable`] (the batch function decides what else counts as a
    /// per-job result).
    pub async fn submit(&self, job: J) -> StorageResult<R> {
        let (reply, result) = oneshot::channel();
        self.jobs
            .send((job, reply))
            .map_err(|_| StorageError::Unavailable(format!("batch {} stopped", self.name)))?;
        result
            .await
            .map_err(|_| StorageError::Unavailable(format!("batch {} dropped a job", self.name)))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    fn sqlite_db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(
            dir.path().join("b.db").to_str().unwrap(),
            2,
            Duration::from_secs(5),
        )
        .unwrap();
        (dir, db)
    }

    /// A batcher whose first batch takes 200 ms, so that jobs submitted meanwhile queue up and
    /// form the next batches; it records every batch it ran.
    type Log = Arc<Mutex<Vec<Vec<u32>>>>;

    fn slow_first(db: Db, max: usize) -> (Arc<Batcher<u32, u32>>, Log) {
        let seen = Arc::new(Mutex::new(Vec::<Vec<u32>>::new()));
        let log = seen.clone();
        let batcher = Batcher::<u32, u32>::spawn(
            db,
            "test",
            max,
            Box::new(move |_db, jobs| {
                let first = {
                    let mut log = log.lock().unwrap();
                    log.push(jobs.to_vec());
                    log.len() == 1
                };
                if first {
                    std::thread::sleep(Duration::from_millis(200));
                }
                if jobs.contains(&13) {
                    return Err(StorageError::Unavailable("unlucky".into()));
                }
                if jobs.contains(&66) {
                    panic!("a bug in the batch function");
                }
                Ok(jobs.iter().map(|j| j * 2).collect())
            }),
        )
        .unwrap();
        (Arc::new(batcher), seen)
    }

    /// Submits job 0, waits until its batch runs, then submits `rest` at once.
    async fn first_then(
        b: &Arc<Batcher<u32, u32>>,
        rest: impl IntoIterator<Item = u32>,
    ) -> Vec<(u32, StorageResult<u32>)> {
        let first = {
            let b = b.clone();
            tokio::spawn(async move { (0, b.submit(0).await) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut tasks = vec![first];
        for i in rest {
            let b = b.clone();
            tasks.push(tokio::spawn(async move { (i, b.submit(i).await) }));
        }
        let mut out = vec![];
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn queued_jobs_share_batches_of_at_most_max_and_each_gets_its_own_result() {
        let (_dir, db) = sqlite_db();
        let (batcher, seen) = slow_first(db, 8);
        for (i, r) in first_then(&batcher, 20..40).await {
            assert_eq!(r.unwrap(), i * 2);
        }
        let batches = seen.lock().unwrap().clone();
        assert_eq!(batches[0], [0]);
        // The 20 queued jobs: three batches (8, 8, 4), none over the maximum.
        assert_eq!(batches.len(), 4, "{batches:?}");
        assert!(batches.iter().all(|b| b.len() <= 8), "{batches:?}");
        let counts = batcher.counts();
        assert_eq!((counts.batches, counts.jobs), (4, 21));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_failed_or_panicking_batch_fails_each_of_its_jobs_and_the_batcher_goes_on() {
        let (_dir, db) = sqlite_db();
        let (batcher, seen) = slow_first(db, 64);
        // 13 fails the batch it lands in: every job queued with it fails too.
        let out = first_then(&batcher, [1, 13, 2]).await;
        assert_eq!(out[0].1.as_ref().unwrap(), &0);
        for (i, r) in &out[1..] {
            assert!(
                matches!(r, Err(StorageError::Unavailable(m)) if m.contains("unlucky")),
                "job {i}: {r:?}"
            );
        }
        // A panic fails its batch, not the thread.
        let panicked = batcher.submit(66).await;
        assert!(
            matches!(&panicked, Err(StorageError::Unavailable(m)) if m.contains("panicked")),
            "{panicked:?}"
        );
        assert_eq!(batcher.submit(5).await.unwrap(), 10);
        let mut shared = seen.lock().unwrap()[1].clone();
        shared.sort();
        assert_eq!(shared, [1, 2, 13], "the three queued jobs formed one batch");
    }

    #[tokio::test]
    async fn a_wrong_number_of_results_is_a_failure_not_a_mismatch() {
        let (_dir, db) = sqlite_db();
        let batcher = Batcher::<u32, u32>::spawn(
            db,
            "test",
            8,
            Box::new(|_db, jobs| match jobs.contains(&7) {
                true => Ok(vec![]),
                false => Ok(jobs.to_vec()),
            }),
        )
        .unwrap();
        assert!(matches!(
            batcher.submit(7).await,
            Err(StorageError::Unavailable(m)) if m.contains("0 results for 1 jobs")
        ));
        assert_eq!(batcher.submit(1).await.unwrap(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn jobs_whose_caller_has_gone_are_not_run() {
        let (_dir, db) = sqlite_db();
        let (batcher, seen) = slow_first(db, 64);
        let first = {
            let b = batcher.clone();
            tokio::spawn(async move { b.submit(0).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Queued behind the slow batch, then abandoned (as a disconnected client's request is).
        let abandoned = {
            let b = batcher.clone();
            tokio::spawn(async move { b.submit(9).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        abandoned.abort();
        assert_eq!(first.await.unwrap().unwrap(), 0);
        assert_eq!(batcher.submit(3).await.unwrap(), 6);
        let batches = seen.lock().unwrap().clone();
        assert!(!batches.iter().flatten().any(|j| *j == 9), "{batches:?}");
    }
}
