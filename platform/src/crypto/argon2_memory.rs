//! Argon2's working memory, kept between password checks.
//!
//! Every check fills 19 MiB of blocks. Allocated afresh each time, that memory is mapped, faulted
//! in and zeroed by the kernel on every check, because `consent serve` has glibc hand large freed
//! blocks back to the system (for its idle footprint, see BENCHMARKS.md): 24.5 ms a check against
//! 12.7 ms with the blocks reused (release build, our parameters, same machine). So buffers of
//! the standard size are kept while checks keep coming, and released once none has been used for
//! [`IDLE_RELEASE`]: an idle server holds none. Each check overwrites every block it reads before
//! reading it, so what a buffer held before changes nothing; it is as exposed as freed heap
//! memory was.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Block;

/// Unused this long, a kept buffer is released.
const IDLE_RELEASE: Duration = Duration::from_secs(2);

/// At most this many buffers are kept (as many checks as [`super::PasswordWork`] ever runs at
/// once); more at once are allocated and freed as before.
const MAX_KEPT: usize = 32;

struct Kept {
    blocks: Vec<Block>,
    since: Instant,
}

static KEPT: Mutex<Vec<Kept>> = Mutex::new(Vec::new());

fn kept() -> std::sync::MutexGuard<'static, Vec<Kept>> {
    // A panic elsewhere while holding it left a list of buffers, which is still a list of buffers.
    KEPT.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` with `count` blocks: a kept buffer when there is one of that size (the standard
/// parameters'), else new ones; the buffer is kept afterwards if it has the standard size.
pub(super) fn with_blocks<T>(
    count: usize,
    standard: usize,
    f: impl FnOnce(&mut [Block]) -> T,
) -> T {
    let reused = (count == standard)
        .then(|| {
            let mut kept = kept();
            let at = kept.iter().rposition(|k| k.blocks.len() == count)?;
            Some(kept.remove(at).blocks)
        })
        .flatten();
    let mut blocks = reused.unwrap_or_else(|| vec![Block::default(); count]);
    let out = f(&mut blocks);
    if count == standard {
        let mut kept = kept();
        if kept.len() < MAX_KEPT {
            kept.push(Kept {
                blocks,
                since: Instant::now(),
            });
        }
    }
    out
}

/// Releases the buffers unused for `idle` or longer (freed after the lock is let go).
fn release_idle(idle: Duration) {
    let released: Vec<Kept> = {
        let mut kept = kept();
        let (old, fresh): (Vec<Kept>, Vec<Kept>) =
            kept.drain(..).partition(|k| k.since.elapsed() >= idle);
        *kept = fresh;
        old
    };
    drop(released);
}

/// Releases idle buffers every second until `shutdown`, then all of them.
pub fn spawn_release(
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    release_idle(IDLE_RELEASE);
                }
                _ = shutdown.changed() => {
                    release_idle(Duration::ZERO);
                    return;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kept buffers of `len` blocks (the password tests running alongside keep buffers of the
    /// standard size in the same process-wide list).
    fn kept_of(len: usize) -> usize {
        kept().iter().filter(|k| k.blocks.len() == len).count()
    }

    #[test]
    fn buffers_of_the_standard_size_are_reused_then_released_when_idle() {
        let (standard, other) = (8, 4);
        let first = with_blocks(standard, standard, |b| b.as_ptr() as usize);
        assert_eq!(kept_of(standard), 1);
        let second = with_blocks(standard, standard, |b| b.as_ptr() as usize);
        assert_eq!(first, second, "the kept buffer is used again");
        // Another size is neither taken from the list nor kept.
        with_blocks(other, standard, |b| assert_eq!(b.len(), other));
        assert_eq!((kept_of(standard), kept_of(other)), (1, 0));
        release_idle(Duration::from_secs(60));
        assert_eq!(kept_of(standard), 1, "recently used: kept");
        release_idle(Duration::ZERO);
        assert_eq!(kept_of(standard), 0, "released");
    }
}
