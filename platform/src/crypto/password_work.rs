//! How many Argon2 hashes run at once.
//!
//! Each password check costs about 19 MiB and tens of milliseconds of a core, by design, and
//! anyone may ask for one (a login form, a sign-up). The per-account and per-address limits
//! bound what one attacker guesses, not what many addresses cost together: without a bound of
//! its own, a flood of logins from many addresses ran as many hashes as the blocking pool has
//! threads (hundreds, gigabytes), and every database call, which runs on the same pool, queued
//! behind them. Here at most two hashes per core run at once, a bounded number of requests wait
//! for one (briefly), and any other is answered "busy" at once (the caller answers 503).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;

/// Why a password check did not run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordBusy {
    #[error("too many password checks at once; try again")]
    Busy,
    #[error("the password check did not finish")]
    Failed,
}

/// The bound on concurrent password hashing, shared by every caller in the process.
#[derive(Debug, Clone)]
pub struct PasswordWork {
    slots: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    max_wait: Duration,
}

impl Default for PasswordWork {
    /// Two hashes per core at once, 32 per slot may wait, for 5 seconds at most.
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let slots = (2 * cores).clamp(2, 32);
        Self::new(slots, 32 * slots, Duration::from_secs(5))
    }
}

impl PasswordWork {
    pub fn new(slots: usize, max_waiting: usize, max_wait: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(slots.max(1))),
            waiting: Arc::default(),
            max_waiting,
            max_wait,
        }
    }

    /// Runs `hash` (an Argon2 hash or verification) on the blocking pool once a slot is free.
    pub async fn run<T: Send + 'static>(
        &self,
        hash: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordBusy> {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // Counted while waiting, so that the bound holds however many arrive at once.
                let waiting = Waiting::enter(&self.waiting);
                if waiting.count > self.max_waiting {
                    metrics::counter!("consent_password_checks_refused_total").increment(1);
                    return Err(PasswordBusy::Busy);
                }
                let acquired =
                    tokio::time::timeout(self.max_wait, self.slots.clone().acquire_owned()).await;
                match acquired {
                    Ok(Ok(permit)) => permit,
                    _ => {
                        metrics::counter!("consent_password_checks_refused_total").increment(1);
                        return Err(PasswordBusy::Busy);
                    }
                }
            }
        };
        // The permit goes with the task: a caller that hangs up does not free the slot before
        // the hash it started has finished.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            hash()
        })
        .await
        .map_err(|_| PasswordBusy::Failed)
    }
}

/// One waiter, counted until it stops waiting (also when its future is dropped).
struct Waiting<'a> {
    counter: &'a AtomicUsize,
    count: usize,
}

impl<'a> Waiting<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        let count = counter.fetch_add(1, Ordering::SeqCst) + 1;
        Self { counter, count }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// However many checks arrive at once, no more than the slots run together, only the
    /// allowed number wait, and the rest are refused at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checks_beyond_the_slots_wait_and_beyond_the_queue_are_refused() {
        let work = PasswordWork::new(2, 3, Duration::from_secs(30));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(std::sync::Mutex::new(gate));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let (work, running, most, gate) =
                (work.clone(), running.clone(), most.clone(), gate.clone());
            tasks.spawn(async move {
                work.run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    // Held until the test lets one go.
                    let _ = gate.lock().unwrap().recv();
                    running.fetch_sub(1, Ordering::SeqCst);
                })
                .await
            });
        }
        // Two run, three wait, five are refused without waiting.
        let mut refused = 0;
        while refused < 5 {
            match tasks.join_next().await.unwrap().unwrap() {
                Err(PasswordBusy::Busy) => refused += 1,
                other => panic!("only refusals can end before a release: {other:?}"),
            }
        }
        // Both slots' checks have started (spawned threads start when they start).
        while running.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for _ in 0..5 {
            release.send(()).unwrap();
        }
        let mut ran = 0;
        while let Some(r) = tasks.join_next().await {
            assert_eq!(r.unwrap(), Ok(()));
            ran += 1;
        }
        assert_eq!((ran, refused), (5, 5));
        assert_eq!(
            most.load(Ordering::SeqCst),
            2,
            "never more than the slots at once"
        );
        assert_eq!(work.waiting.load(Ordering::SeqCst), 0);
    }

    /// A waiter that waits longer than allowed is refused, and gives its place back.
    #[tokio::test]
    async fn a_check_waits_for_a_slot_no_longer_than_allowed() {
        let work = PasswordWork::new(1, 4, Duration::from_millis(50));
        let held = work.slots.clone().try_acquire_owned().unwrap();
        assert_eq!(work.run(|| 1).await, Err(PasswordBusy::Busy));
        assert_eq!(work.waiting.load(Ordering::SeqCst), 0);
        drop(held);
        assert_eq!(work.run(|| 2).await, Ok(2));
    }
}
