//! When a failed call may be sent again and how long to wait first: exponential backoff with
//! jitter, and a retry rule per kind of call. It must never retry a call that could create
//! something twice.
//!
//! The rules:
//! - a call that provably never left the client (the connection could not be opened) is
//!   retried whatever it is;
//! - reads retry `UNAVAILABLE` and `DEADLINE_EXCEEDED`;
//! - writes whose repeat changes nothing more (update, delete, pause, resume, cancel, backfill,
//!   execute with an idempotency key) retry `UNAVAILABLE`;
//! - creates (create job or schedule, execute without a key, trigger, create tenant) are not
//!   retried once sent: the first attempt may have committed.
//!
//! The delay is hand-written because it is one line of arithmetic; what to retry is ours.

use std::time::Duration;

use rand::Rng;
use tonic::{Code, Status};

/// How often and how patiently a call is retried on transient failures.
///
/// Attempt `n` (from 1) that failed waits a random time in `[b/2, b]` before the next one, where
/// `b = min(max_backoff, initial_backoff · 2^(n-1))` ("equal jitter": clients that failed
/// together do not come back together, and none comes back at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 means no retry.
    pub max_attempts: u32,
    /// The backoff bound after the first failure.
    pub initial_backoff: Duration,
    /// The largest backoff bound.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 6 attempts, 100 ms doubling up to 2 s: about 3 s of patience in all.
    fn default() -> Self {
        Self {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// Never retry.
    pub const fn none() -> Self {
        Self {
            max_attempts: 1,
            initial_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
        }
    }

    /// The bound `b` of the wait after failed attempt `attempt` (1-based).
    pub fn backoff_bound(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.initial_backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff)
    }

    /// A random wait in `[b/2, b]` after failed attempt `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let bound = self.backoff_bound(attempt);
        let half = bound / 2;
        let spread = u64::try_from((bound - half).as_micros()).unwrap_or(u64::MAX);
        half + Duration::from_micros(rand::rng().random_range(0..=spread))
    }
}

/// What a call does to the server's state, which decides what may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallKind {
    /// Reads nothing but state: retry `UNAVAILABLE` and `DEADLINE_EXCEEDED`.
    Read,
    /// A write whose repeat has no further effect: retry `UNAVAILABLE`.
    IdempotentWrite,
    /// May create something each time: retry only what was never sent.
    Create,
}

impl CallKind {
    /// Whether a call of this kind that failed with `status` may be sent again.
    pub(crate) fn may_retry(self, status: &Status) -> bool {
        if never_sent(status) {
            return true;
        }
        match self {
            CallKind::Read => matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded),
            CallKind::IdempotentWrite => status.code() == Code::Unavailable,
            CallKind::Create => false,
        }
    }
}

/// The connection error behind a status that comes from failing to open the connection
/// (tonic's `ConnectError` in its source chain): the request never left the client.
pub(crate) fn connect_error(status: &Status) -> Option<&(dyn std::error::Error + 'static)> {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<tonic::ConnectError>() {
            return Some(e);
        }
        source = e.source();
    }
    None
}

/// True when the request provably never left the client.
pub(crate) fn never_sent(status: &Status) -> bool {
    connect_error(status).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_doubles_up_to_the_cap() {
        let p = RetryPolicy::default();
        let bounds: Vec<_> = (1..=7).map(|n| p.backoff_bound(n).as_millis()).collect();
        assert_eq!(bounds, [100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(p.backoff_bound(u32::MAX), Duration::from_secs(2));
    }

    #[test]
    fn the_delay_is_jittered_within_half_and_the_whole_bound() {
        let p = RetryPolicy::default();
        let delays: Vec<_> = (0..200).map(|_| p.delay(3)).collect();
        assert!(
            delays
                .iter()
                .all(|d| *d >= Duration::from_millis(200) && *d <= Duration::from_millis(400))
        );
        let first = delays[0];
        assert!(delays.iter().any(|d| *d != first), "no jitter");
        assert_eq!(RetryPolicy::none().delay(1), Duration::ZERO);
    }

    #[test]
    fn reads_retry_unavailable_and_deadlines_writes_only_unavailable_creates_nothing_sent() {
        let unavailable = Status::unavailable("restarting");
        let deadline = Status::deadline_exceeded("slow");
        let invalid = Status::invalid_argument("name: must not be empty");
        assert!(CallKind::Read.may_retry(&unavailable));
        assert!(CallKind::Read.may_retry(&deadline));
        assert!(!CallKind::Read.may_retry(&invalid));
        assert!(CallKind::IdempotentWrite.may_retry(&unavailable));
        assert!(!CallKind::IdempotentWrite.may_retry(&deadline));
        assert!(!CallKind::Create.may_retry(&unavailable));
        assert!(!CallKind::Create.may_retry(&deadline));
    }

    #[test]
    fn a_connect_error_means_nothing_was_sent() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let status = Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(never_sent(&status));
        assert!(CallKind::Create.may_retry(&status));
        assert!(!never_sent(&Status::unavailable("connection reset")));
    }
}
