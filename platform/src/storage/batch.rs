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

use std::sync::mpsc;

use tokio::sync::oneshot;

use super::{AnyConnection, Db, StorageError, StorageResult};

type Reply<R> = oneshot::Sender<StorageResult<R>>;

/// The work of one batch: `jobs` in, exactly one result per job out, in the same order.
pub type BatchFn<J, R> =
    Box<dyn Fn(&mut AnyConnection, &[J]) -> StorageResult<Vec<R>> + Send + 'static>;

/// See the [module documentation](self).
pub struct Batcher<J, R> {
    name: &'static str,
    jobs: mpsc::Sender<(J, Reply<R>)>,
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
                    let (inputs, replies): (Vec<J>, Vec<Reply<R>>) = batch.into_iter().unzip();
                    metrics::histogram!("consent_db_batch_size", "batch" => name)
                        .record(inputs.len() as f64);
                    // A panicking batch fails its jobs, not the thread (and so every later job).
                    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        db.conn().and_then(|mut c| run(&mut c.conn, &inputs))
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
        Ok(Self { name, jobs })
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
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn sqlite_db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(
            dir.path().join("b.db").to_str().unwrap(),
            2,
            std::time::Duration::from_secs(5),
        )
        .unwrap();
        (dir, db)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_jobs_share_batches_and_each_gets_its_own_result() {
        let (_dir, db) = sqlite_db();
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let batcher = Arc::new(
            Batcher::<u32, u32>::spawn(
                db,
                "test",
                64,
                Box::new(move |_c, jobs| {
                    seen.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    Ok(jobs.iter().map(|j| j * 2).collect())
                }),
            )
            .unwrap(),
        );
        let tasks: Vec<_> = (0..200u32)
            .map(|i| {
                let b = batcher.clone();
                tokio::spawn(async move { (i, b.submit(i).await.unwrap()) })
            })
            .collect();
        for t in tasks {
            let (i, doubled) = t.await.unwrap();
            assert_eq!(doubled, i * 2);
        }
        let batches = calls.load(Ordering::SeqCst);
        assert!(batches < 200, "200 jobs ran in {batches} batches");
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_job_and_the_batcher_goes_on() {
        let (_dir, db) = sqlite_db();
        let batcher = Batcher::<u32, u32>::spawn(
            db,
            "test",
            8,
            Box::new(|_c, jobs| match jobs.contains(&13) {
                true => Err(StorageError::Unavailable("unlucky".into())),
                // A wrong result count is a failure too, never a silent mismatch.
                false if jobs.contains(&7) => Ok(vec![]),
                false => Ok(jobs.to_vec()),
            }),
        )
        .unwrap();
        assert!(matches!(
            batcher.submit(13).await,
            Err(StorageError::Unavailable(m)) if m.contains("unlucky")
        ));
        assert!(matches!(
            batcher.submit(7).await,
            Err(StorageError::Unavailable(m)) if m.contains("0 results for 1 jobs")
        ));
        assert_eq!(batcher.submit(1).await.unwrap(), 1);
    }
}
