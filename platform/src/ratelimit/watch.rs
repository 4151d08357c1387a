//! Which failure counters may have moved, so that a check with none recent anywhere need not
//! read Redis.
//!
//! Every failure is counted and announced on [`CHANNEL`] in one Redis transaction
//! ([`crate::cache::Cache::incr_windows`]); every instance hears every announcement and
//! keeps the announced keys "hot" until their window has passed. A check reads the shared
//! counters when one of its keys is hot, and always while the instance cannot be sure it heard
//! everything that could still be counted:
//! - until its subscription has been receiving for a whole window (a counter made before that
//!   has expired by then: counters expire a window after their first failure);
//! - after a resubscription (messages published while it was down are lost), after its receiver
//!   lagged, after an announcement it cannot read, and after one of its own numbered beats
//!   (published every [`BEAT`]) went missing: again for a whole window;
//! - while delivery lags: a beat published [`STALE`] ago has not come back, or none has for
//!   [`SILENT`] (a busy or half-open connection); trust resumes when the beats catch up in order;
//! - while more keys are hot than it keeps ([`MAX_HOT`]).
//!
//! What changes against reading on every check: another instance's failure takes effect here
//! once its announcement arrives (the tests require 200 ms at most) instead of once its
//! increment lands, and delivery up to about 1.5 s late ([`STALE`] plus one [`BEAT`]) goes
//! unnoticed. A burst here that lands within that delay after failures that completed on
//! another instance passes where the read would have blocked it; only a key with no failure
//! heard here in its window can be skipped, so the gain is one burst per key per instance.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The channel of failure announcements and beats.
pub const CHANNEL: &str = "rate-limit-failures";
/// How often each instance publishes its beat.
pub const BEAT: Duration = Duration::from_millis(500);
/// A beat not back after this long means delivery lags: checks read until it catches up.
pub const STALE: Duration = Duration::from_secs(1);
/// No beat back for this long (the beats themselves may be late to leave): checks read.
pub const SILENT: Duration = Duration::from_secs(3);
/// Beats kept waiting for; beyond this, delivery is taken as broken (trust starts over).
const MAX_PENDING: usize = 64;
/// Hot keys kept; beyond this, every check reads the shared counters until the overflow's
/// windows have passed (a flood of failures costs memory bounded by this, not by the flood).
pub const MAX_HOT: usize = 100_000;
/// Announced windows are capped at a day (an instant that far ahead cannot overflow).
const MAX_WINDOW: Duration = Duration::from_secs(86_400);

/// The announcement of one failure counted on `key` for `window`.
pub fn announcement(key: &str, window: Duration) -> String {
    format!("fail {} {key}", window.as_millis())
}

#[derive(Debug)]
pub struct FailureWatch {
    /// Tells this instance's beats from the others'.
    nonce: String,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Since when this instance has heard every announcement (own beats arriving in order, no
    /// lag, no resubscription); `None` while it cannot tell.
    since: Option<Instant>,
    /// The number of the next beat to publish.
    next_beat: u64,
    /// Beats published (or tried) and not heard yet: number, when, and whether the
    /// publication is known to have failed (still late if nothing later comes back; never lost).
    pending: VecDeque<(u64, Instant, bool)>,
    /// When the last own beat was heard.
    last_heard: Option<Instant>,
    /// Keys with a recent failure, and until when a counter made by it can live.
    hot: HashMap<String, Instant>,
    /// Until when checks read the shared counters because hot keys were not kept.
    overflow_until: Option<Instant>,
}

/// What one message on [`CHANNEL`] says.
#[derive(Debug, PartialEq, Eq)]
enum Heard<'a> {
    Beat { nonce: &'a str, number: u64 },
    Failure { key: &'a str, window: Duration },
    Unreadable,
}

fn parse(message: &str) -> Heard<'_> {
    if let Some(beat) = message.strip_prefix("beat ") {
        return match beat.split_once(' ').map(|(n, k)| (n, k.parse::<u64>())) {
            Some((nonce, Ok(number))) => Heard::Beat { nonce, number },
            _ => Heard::Unreadable,
        };
    }
    let Some(rest) = message.strip_prefix("fail ") else {
        return Heard::Unreadable;
    };
    // The key is everything after the window: keys may hold spaces, never the window.
    match rest.split_once(' ') {
        Some((ms, key)) if !key.is_empty() => match ms.parse::<u64>() {
            Ok(ms) => Heard::Failure {
                key,
                window: Duration::from_millis(ms).min(MAX_WINDOW),
            },
            Err(_) => Heard::Unreadable,
        },
        _ => Heard::Unreadable,
    }
}

impl Default for FailureWatch {
    fn default() -> Self {
        use rand::RngCore;
        let mut bytes = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self {
            nonce: bytes.iter().map(|b| format!("{b:02x}")).collect(),
            state: Mutex::default(),
        }
    }
}

impl FailureWatch {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere mid-update of plain data; refusing to
        // trust is the safe reading of any state it left: trust starts over (a whole window).
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if self.state.is_poisoned() {
            guard.since = None;
            self.state.clear_poison();
        }
        guard
    }

    /// This instance's next beat (its number and message), to be published at `now`.
    pub fn beat(&self, now: Instant) -> (u64, String) {
        let mut s = self.state();
        let number = s.next_beat;
        s.next_beat += 1;
        s.pending.push_back((number, now, false));
        if s.pending.len() > MAX_PENDING {
            s.pending.pop_front();
            s.since = None;
        }
        (number, format!("beat {} {number}", self.nonce))
    }

    /// Beat `number` could not be published: overtaken, it is not taken as lost (its lateness
    /// still counts until a later beat comes back).
    pub fn unsent(&self, number: u64) {
        if let Some(entry) = self.state().pending.iter_mut().find(|(n, ..)| *n == number) {
            entry.2 = true;
        }
    }

    /// Takes in one message heard on [`CHANNEL`] at `now`; `subscribed_at` is when the
    /// subscription that delivered it began receiving.
    pub fn heard(&self, message: &str, now: Instant, subscribed_at: Option<Instant>) {
        let mut s = self.state();
        match parse(message) {
            Heard::Beat { nonce, number } if nonce == self.nonce => {
                s.beat(number, now, subscribed_at)
            }
            Heard::Beat { .. } => {}
            Heard::Failure { key, window } => s.hot(key, window, now),
            Heard::Unreadable => {
                tracing::warn!("unreadable failure announcement; reading the shared counters");
                s.since = None;
            }
        }
    }

    /// Some messages were lost (the receiver lagged or its channel closed).
    pub fn missed(&self) {
        self.state().since = None;
    }

    /// A failure counted by this instance: hot here at once, before its announcement returns.
    pub fn failed_here(&self, key: &str, window: Duration, now: Instant) {
        self.state().hot(key, window.min(MAX_WINDOW), now);
    }

    /// Forgets hot keys whose window has passed.
    pub fn prune(&self, now: Instant) {
        self.state().hot.retain(|_, until| *until > now);
    }

    /// Whether the shared counters of `keys` (windows of `window`) are known to hold nothing
    /// this instance has not heard of: none of them is hot and it has heard every announcement
    /// for at least `window`.
    pub fn may_skip(
        &self,
        keys: &[&str],
        window: Duration,
        now: Instant,
        subscribed_at: Option<Instant>,
    ) -> bool {
        if window > MAX_WINDOW {
            // Announcements of longer windows are kept hot for MAX_WINDOW only.
            return false;
        }
        let s = self.state();
        let (Some(since), Some(subscribed), Some(heard)) = (s.since, subscribed_at, s.last_heard)
        else {
            return false;
        };
        subscribed <= since
            && now.saturating_duration_since(heard) <= SILENT
            && s.pending
                .front()
                .is_none_or(|(_, at, _)| now.saturating_duration_since(*at) <= STALE)
            && now.saturating_duration_since(since) >= window
            && s.overflow_until.is_none_or(|until| until <= now)
            && !keys
                .iter()
                .any(|k| s.hot.get(*k).is_some_and(|until| *until > now))
    }
}

impl State {
    /// Own beat `number` heard at `now`. Beats come back in the order they were published:
    /// one that overtakes an earlier one means the earlier was lost.
    fn beat(&mut self, number: u64, now: Instant, subscribed_at: Option<Instant>) {
        let Some(position) = self.pending.iter().position(|(n, ..)| *n == number) else {
            // Not waited for (from before a restart of the count): says nothing.
            return;
        };
        let lost = self
            .pending
            .iter()
            .take(position)
            .any(|(_, _, unsent)| !unsent);
        self.pending.drain(..=position);
        let unbroken = !lost
            && match (self.since, subscribed_at) {
                (Some(since), Some(subscribed)) => subscribed <= since,
                _ => false,
            };
        if !unbroken {
            if self.since.is_some() {
                tracing::info!(
                    lost,
                    "failure watch listening afresh: a whole window before trust"
                );
            }
            // Everything published from here on is heard (the beat came through this
            // subscription); what came before may not have been.
            self.since = subscribed_at.map(|_| now);
        }
        self.last_heard = Some(now);
    }

    fn hot(&mut self, key: &str, window: Duration, now: Instant) {
        let until = now + window;
        if let Some(at) = self.hot.get_mut(key) {
            *at = (*at).max(until);
            return;
        }
        if self.overflow_until.is_some_and(|u| u > now) {
            self.overflow_until = self.overflow_until.max(Some(until));
            return;
        }
        if self.hot.len() >= MAX_HOT {
            self.hot.retain(|_, at| *at > now);
            // Still nine tenths full: overflow now rather than scan again a few keys later.
            if self.hot.len() >= MAX_HOT / 10 * 9 {
                tracing::warn!(
                    kept = MAX_HOT,
                    "too many recent authentication failures to track; every check reads the \
                     shared counters until they expire"
                );
                self.overflow_until = Some(until);
                return;
            }
        }
        self.hot.insert(key.to_string(), until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    /// `w` publishes a beat every [`BEAT`] from `from` until `to`, each heard at once (through
    /// a subscription made at `subscribed`); returns `to`.
    fn beats(w: &FailureWatch, from: Instant, to: Instant, subscribed: Instant) -> Instant {
        let mut now = from;
        while now < to {
            w.heard(&w.beat(now).1, now, Some(subscribed));
            now += BEAT;
        }
        w.heard(&w.beat(to).1, to, Some(subscribed));
        to
    }

    /// A watch that has heard its own beats for a minute from a subscription made at `t0`.
    fn trusted(t0: Instant) -> (FailureWatch, Instant) {
        let w = FailureWatch::default();
        let now = beats(&w, t0, t0 + MINUTE, t0);
        (w, now)
    }

    #[test]
    fn announcements_read_back_exactly() {
        assert_eq!(
            parse(&announcement("lf:client:pair:c 1:a b", MINUTE)),
            Heard::Failure {
                key: "lf:client:pair:c 1:a b",
                window: MINUTE
            }
        );
        assert_eq!(
            parse("beat x 7"),
            Heard::Beat {
                nonce: "x",
                number: 7
            }
        );
        for bad in [
            "fail",
            "fail 60000",
            "fail 60000 ",
            "fail x k",
            "fail -1 k",
            "hello",
            "beat x",
            "beat x y",
        ] {
            assert_eq!(parse(bad), Heard::Unreadable, "{bad}");
        }
        assert_eq!(
            parse(&format!("fail {} k", u64::MAX)),
            Heard::Failure {
                key: "k",
                window: MAX_WINDOW
            }
        );
    }

    #[test]
    fn trust_needs_a_whole_window_of_own_beats() {
        let t0 = Instant::now();
        let w = FailureWatch::default();
        assert!(!w.may_skip(&["k"], MINUTE, t0, Some(t0)), "nothing heard");
        w.heard("beat someone-else 0", t0, Some(t0));
        assert!(!w.may_skip(&["k"], Duration::ZERO, t0, Some(t0)));
        let (w, now) = trusted(t0);
        assert!(w.may_skip(&["k"], MINUTE, now, Some(t0)));
        // A longer window than has been heard is not trusted yet.
        assert!(!w.may_skip(&["k"], MINUTE * 5, now, Some(t0)));
        // Not subscribed (reconnecting), or subscribed again since: not trusted.
        assert!(!w.may_skip(&["k"], MINUTE, now, None));
        assert!(!w.may_skip(&["k"], MINUTE, now, Some(now)));
    }

    #[test]
    fn late_beats_pause_trust_until_they_catch_up() {
        let t0 = Instant::now();
        let (w, now) = trusted(t0);
        // Beats leave and do not come back: reading after STALE.
        let (_, first) = w.beat(now);
        let (_, second) = w.beat(now + BEAT);
        assert!(w.may_skip(&["k"], MINUTE, now + STALE, Some(t0)));
        let late = now + STALE + BEAT + Duration::from_millis(1);
        assert!(!w.may_skip(&["k"], MINUTE, late, Some(t0)));
        // They arrive, in order: nothing was lost, trusted again at once.
        w.heard(&first, late, Some(t0));
        assert!(
            !w.may_skip(&["k"], MINUTE, late, Some(t0)),
            "the second is late too"
        );
        w.heard(&second, late, Some(t0));
        assert!(w.may_skip(&["k"], MINUTE, late, Some(t0)));
        // No beat back for SILENT (none even left): reading.
        assert!(!w.may_skip(&["k"], MINUTE, late + SILENT + BEAT, Some(t0)));
        // A beat that could not be published is late like any other until a later one comes
        // back; overtaken, it is not taken as lost.
        let (w, now) = trusted(t0);
        let (unsent, _) = w.beat(now);
        w.unsent(unsent);
        let after = now + STALE + Duration::from_millis(1);
        assert!(!w.may_skip(&["k"], MINUTE, after, Some(t0)));
        let (_, next) = w.beat(now + BEAT);
        w.heard(&next, after, Some(t0));
        assert!(w.may_skip(&["k"], MINUTE, after, Some(t0)), "not lost");
        // A window longer than announcements are kept hot for is never skipped.
        assert!(!w.may_skip(&["k"], MAX_WINDOW * 2, after, Some(t0)));
    }

    #[test]
    fn lost_beats_lag_and_unreadable_messages_end_trust() {
        let t0 = Instant::now();
        // A beat overtaken by the next one was lost: a whole window before trust again.
        let (w, now) = trusted(t0);
        let _lost = w.beat(now);
        let (_, next) = w.beat(now + BEAT);
        w.heard(&next, now + BEAT, Some(t0));
        assert!(!w.may_skip(&["k"], MINUTE, now + BEAT, Some(t0)));
        let again = beats(&w, now + BEAT, now + BEAT + MINUTE, t0);
        assert!(w.may_skip(&["k"], MINUTE, again, Some(t0)));
        // Beats that never come back are given up on after MAX_PENDING.
        let (w, mut now) = trusted(t0);
        for _ in 0..=MAX_PENDING {
            w.beat(now);
            now += Duration::from_millis(1);
        }
        let after = beats(&w, now, now + BEAT, t0);
        assert!(!w.may_skip(&["k"], Duration::from_secs(30), after, Some(t0)));
        // The receiver lagged.
        let (w, now) = trusted(t0);
        w.missed();
        assert!(!w.may_skip(&["k"], MINUTE, now, Some(t0)));
        let next = beats(&w, now, now + BEAT, t0);
        assert!(!w.may_skip(&["k"], MINUTE, next, Some(t0)));
        // An announcement it cannot read.
        let (w, now) = trusted(t0);
        w.heard("fail soon k", now, Some(t0));
        assert!(!w.may_skip(&["other"], MINUTE, now, Some(t0)));
        // A resubscription between beats breaks the stretch at the next beat too.
        let (w, now) = trusted(t0);
        let resubscribed = now + Duration::from_millis(300);
        w.heard(&w.beat(now + BEAT).1, now + BEAT, Some(resubscribed));
        assert!(!w.may_skip(&["k"], MINUTE, now + BEAT, Some(resubscribed)));
        let again = beats(&w, now + BEAT, now + BEAT + MINUTE, resubscribed);
        assert!(w.may_skip(&["k"], MINUTE, again, Some(resubscribed)));
    }

    #[test]
    fn a_poisoned_watch_starts_trust_over_and_recovers() {
        let t0 = Instant::now();
        let (w, now) = trusted(t0);
        std::thread::scope(|scope| {
            let poisoner = scope.spawn(|| {
                let _guard = w.state.lock().unwrap();
                panic!("poisoning the watch's lock on purpose");
            });
            assert!(poisoner.join().is_err());
        });
        assert!(w.state.is_poisoned());
        assert!(!w.may_skip(&["k"], MINUTE, now, Some(t0)));
        assert!(!w.state.is_poisoned(), "cleared once read safely");
        let again = beats(&w, now, now + MINUTE, t0);
        assert!(w.may_skip(&["k"], MINUTE, again, Some(t0)));
    }

    #[test]
    fn failures_make_their_keys_hot_for_their_window() {
        let t0 = Instant::now();
        let (w, now) = trusted(t0);
        w.heard(&announcement("pair", MINUTE), now, Some(t0));
        assert!(!w.may_skip(&["pair", "addr"], MINUTE, now, Some(t0)));
        assert!(w.may_skip(&["other", "addr"], MINUTE, now, Some(t0)));
        w.failed_here("addr", Duration::from_secs(5), now);
        assert!(!w.may_skip(&["other", "addr"], MINUTE, now, Some(t0)));
        // Beats keep trust; the keys cool off when their windows pass.
        let later = beats(&w, now, now + Duration::from_secs(6), t0);
        assert!(w.may_skip(&["other", "addr"], MINUTE, later, Some(t0)));
        assert!(!w.may_skip(&["pair"], MINUTE, later, Some(t0)));
        let after = beats(&w, later, now + MINUTE + BEAT, t0);
        w.prune(after);
        assert!(w.may_skip(&["pair", "addr"], MINUTE, after, Some(t0)));
        assert!(w.state().hot.is_empty());
    }

    #[test]
    fn too_many_hot_keys_mean_reading_everything() {
        let t0 = Instant::now();
        let (w, now) = trusted(t0);
        for i in 0..MAX_HOT {
            w.failed_here(&format!("k{i}"), MINUTE, now);
        }
        assert!(w.may_skip(&["cold"], MINUTE, now, Some(t0)));
        w.failed_here("one-too-many", MINUTE, now);
        assert!(!w.may_skip(&["cold"], MINUTE, now, Some(t0)));
        assert_eq!(w.state().hot.len(), MAX_HOT, "memory stays bounded");
        let after = beats(&w, now, now + MINUTE + BEAT, t0);
        assert!(w.may_skip(&["cold"], MINUTE, after, Some(t0)));
    }
}
