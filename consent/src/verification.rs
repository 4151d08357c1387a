//! Where Biscuits are verified: a fixed set of threads with a bounded queue, apart from the HTTP
//! workers and the database pool. Verification is CPU work whose cost a stranger chooses (any
//! holder can append a block); the `grants` admission limits bound one verification to a few
//! milliseconds, and this pool bounds how many run at once, so hostile tokens can take at most
//! these threads, never the HTTP workers, a database connection or the async executor. When the
//! queue is full the request is refused at once (503 with `Retry-After`) instead of waiting.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// The pool is full: the caller should answer 503 with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("token verification is at capacity; retry shortly")]
pub struct Busy;

/// A bounded pool of verification threads (cheap to clone; the threads end when the last clone
/// is dropped).
#[derive(Clone, Debug)]
pub struct VerifyPool {
    tx: SyncSender<Job>,
    refused: Arc<AtomicUsize>,
}

impl VerifyPool {
    /// `threads` (0 = one per core) threads taking jobs from a queue of at most `queue`.
    pub fn new(threads: usize, queue: usize) -> std::io::Result<Self> {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            threads
        };
        let (tx, rx) = sync_channel::<Job>(queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("verify-{i}"))
                .spawn(move || work(&rx))?;
        }
        Ok(Self {
            tx,
            refused: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Runs `f` on a verification thread and waits for it without blocking the caller's
    /// thread. `Err(Busy)` at once when the queue is full. A job whose caller has gone (the
    /// client disconnected) is skipped.
    pub async fn run<T, F>(&self, f: F) -> Result<T, Busy>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            if !done.is_closed() {
                let _ = done.send(f());
            }
        });
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("consent_verify_refused_total").increment(1);
                return Err(Busy);
            }
        }
        // A job that panicked dropped its sender: report it as capacity trouble, not a hang.
        result.await.map_err(|_| Busy)
    }

    /// Requests refused because the queue was full, since start.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::Relaxed)
    }
}

fn work(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let guard = rx.lock().unwrap_or_else(|p| p.into_inner());
            guard.recv()
        };
        match job {
            // A panicking job must not take the thread with it.
            Ok(job) => {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn runs_jobs_and_refuses_when_full() {
        let pool = VerifyPool::new(1, 1).unwrap();
        assert_eq!(pool.run(|| 2 + 2).await, Ok(4));
        // Occupy the thread, fill the one queue slot, then the next is refused at once.
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let p = pool.clone();
        let busy = tokio::spawn(async move {
            p.run(move || {
                let _ = wait.recv_timeout(Duration::from_secs(5));
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let p = pool.clone();
        let queued = tokio::spawn(async move { p.run(|| 1).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        assert_eq!(pool.run(|| 0).await, Err(Busy));
        assert!(started.elapsed() < Duration::from_millis(100));
        assert_eq!(pool.refused(), 1);
        release.send(()).unwrap();
        assert_eq!(busy.await.unwrap(), Ok(()));
        assert_eq!(queued.await.unwrap(), Ok(1));
    }

    #[tokio::test]
    async fn a_panicking_job_leaves_the_pool_working() {
        let pool = VerifyPool::new(1, 4).unwrap();
        let r: Result<(), Busy> = pool.run(|| panic!("hostile")).await;
        assert_eq!(r, Err(Busy));
        assert_eq!(pool.run(|| 7).await, Ok(7));
    }
}
