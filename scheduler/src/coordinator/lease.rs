//! Keeps one etcd lease alive and owns its local deadline (I8): the instant after which this node acts as if the lease were gone; it never extends a deadline that already passed and never revives a lost lease.
//!
//! The deadline is `(instant the last successful keep-alive was sent) + TTL − margin` on tokio's
//! monotonic clock, with `margin = max(1 s, TTL / 5)`. etcd starts the lease's new TTL when it
//! *receives* the keep-alive, which is after we sent it, so the lease cannot expire in etcd
//! before our deadline plus the margin; the margin absorbs clock-rate differences and the time
//! the core needs to notice. Keep-alives go out every TTL / 3, one at a time, so each answer
//! belongs to the request just sent.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

/// How long before the lease's earliest possible expiry this node stops.
pub(crate) fn safety_margin(ttl: Duration) -> Duration {
    (ttl / 5).max(Duration::from_secs(1))
}

/// The instant after which a lease renewed (or granted) by a request sent at `sent` must be
/// treated as gone.
pub(crate) fn deadline(sent: Instant, granted_ttl: Duration, margin: Duration) -> Instant {
    sent + granted_ttl.saturating_sub(margin)
}

/// Where this node's lease stands, shared by the keeper, the driver and the public handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseState {
    /// No lease: not registered yet, re-registering, or shut down.
    None,
    /// Lease `id` may be used until `valid_until`.
    Valid { id: i64, valid_until: Instant },
    /// Lease `id` passed its deadline or etcd said it is gone; it is never used again.
    Lost { id: i64 },
}

impl LeaseState {
    /// The lease id if it is valid at `now`.
    pub(crate) fn valid_at(&self, now: Instant) -> Option<i64> {
        match *self {
            Self::Valid { id, valid_until } if now < valid_until => Some(id),
            _ => None,
        }
    }
}

/// The lease state plus the public `bool` view of it, updated together.
#[derive(Debug)]
pub(crate) struct LeaseSignal {
    state: watch::Sender<LeaseState>,
    valid: watch::Sender<bool>,
}

impl LeaseSignal {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            state: watch::Sender::new(LeaseState::None),
            valid: watch::Sender::new(false),
        })
    }

    pub(crate) fn state(&self) -> LeaseState {
        *self.state.borrow()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<LeaseState> {
        self.state.subscribe()
    }

    pub(crate) fn subscribe_valid(&self) -> watch::Receiver<bool> {
        self.valid.subscribe()
    }

    /// True while the current lease's deadline has not passed; reads the clock, so it is
    /// right even if the keeper task has not run yet.
    pub(crate) fn is_valid(&self) -> bool {
        self.state().valid_at(Instant::now()).is_some()
    }

    /// A freshly granted lease.
    pub(crate) fn granted(&self, id: i64, valid_until: Instant) {
        self.state
            .send_replace(LeaseState::Valid { id, valid_until });
        self.valid.send_replace(true);
    }

    /// Moves lease `id`'s deadline to `valid_until` if it is later and the lease is still
    /// valid now; returns false when the lease is no longer valid (it must not be revived).
    fn renewed(&self, id: i64, valid_until: Instant) -> bool {
        let now = Instant::now();
        let mut still_valid = false;
        self.state.send_if_modified(|state| match *state {
            LeaseState::Valid {
                id: current,
                valid_until: old,
            } if current == id && now < old => {
                still_valid = true;
                if valid_until > old {
                    *state = LeaseState::Valid { id, valid_until };
                    true
                } else {
                    false
                }
            }
            _ => false,
        });
        still_valid
    }

    /// Lease `id` is gone; a no-op when another lease is current.
    pub(crate) fn lost(&self, id: i64) {
        let changed = self.state.send_if_modified(|state| match *state {
            LeaseState::Valid { id: current, .. } if current == id => {
                *state = LeaseState::Lost { id };
                true
            }
            _ => false,
        });
        if changed {
            self.valid.send_replace(false);
        }
    }

    /// No lease at all (shut down).
    pub(crate) fn clear(&self) {
        self.state.send_replace(LeaseState::None);
        self.valid.send_replace(false);
    }
}

/// What one keep-alive achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Renewal {
    /// etcd restarted the lease's TTL at this many seconds.
    Renewed(Duration),
    /// etcd no longer knows the lease (expired or revoked).
    Gone,
}

/// Sends one keep-alive and waits for its answer; an error is transient (retry).
#[async_trait]
pub(crate) trait Renewer: Send {
    async fn renew(&mut self) -> Result<Renewal, String>;
}

/// Renews the lease in `signal` every `ttl / 3` until cancelled or lost, marking it lost the
/// moment its deadline passes without a renewal. After a failed keep-alive it retries sooner,
/// every `ttl / 10` (at least 100 ms).
pub(crate) async fn keep_alive<R: Renewer>(
    mut renewer: R,
    id: i64,
    ttl: Duration,
    signal: Arc<LeaseSignal>,
    cancel: CancellationToken,
) {
    let margin = safety_margin(ttl);
    let interval = ttl / 3;
    let retry = (ttl / 10).max(Duration::from_millis(100));
    let mut next = Instant::now() + interval;
    loop {
        let Some(valid_until) = current_deadline(&signal, id) else {
            return;
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            () = sleep_until(valid_until) => {
                expire(&signal, id);
                return;
            }
            () = sleep_until(next) => {}
        }
        let sent = Instant::now();
        let outcome = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            () = sleep_until(valid_until) => {
                expire(&signal, id);
                return;
            }
            outcome = renewer.renew() => outcome,
        };
        match outcome {
            Ok(Renewal::Renewed(granted)) => {
                if !signal.renewed(id, deadline(sent, granted, margin)) {
                    expire(&signal, id);
                    return;
                }
                next = sent + interval;
            }
            Ok(Renewal::Gone) => {
                tracing::warn!(
                    lease = id,
                    "etcd no longer knows the lease: every shard is lost"
                );
                signal.lost(id);
                return;
            }
            Err(error) => {
                tracing::warn!(lease = id, %error, "lease keep-alive failed, retrying");
                next = Instant::now() + retry;
            }
        }
    }
}

fn current_deadline(signal: &LeaseSignal, id: i64) -> Option<Instant> {
    match signal.state() {
        LeaseState::Valid {
            id: current,
            valid_until,
        } if current == id => Some(valid_until),
        _ => None,
    }
}

fn expire(signal: &LeaseSignal, id: i64) {
    tracing::warn!(
        lease = id,
        "lease not renewed before its local deadline: every shard is lost"
    );
    signal.lost(id);
}

/// Keep-alives over one etcd lease keep-alive stream, reopened after any error or timeout so
/// that a late answer is never taken for the answer to a newer request.
pub(crate) struct EtcdRenewer {
    client: Client,
    id: i64,
    granted_ttl: Duration,
    timeout: Duration,
    stream: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    in_flight: bool,
}

impl EtcdRenewer {
    pub(crate) fn new(client: Client, id: i64, granted_ttl: Duration) -> Self {
        Self {
            client,
            id,
            granted_ttl,
            timeout: granted_ttl / 3,
            stream: None,
            in_flight: false,
        }
    }

    async fn renew_once(&mut self) -> Result<Renewal, etcd_client::Error> {
        if let Some((keeper, stream)) = self.stream.as_mut() {
            keeper.keep_alive().await?;
            return match stream.message().await? {
                Some(answer) if answer.ttl() > 0 => Ok(Renewal::Renewed(Duration::from_secs(
                    u64::try_from(answer.ttl()).unwrap_or(0),
                ))),
                Some(_) => Ok(Renewal::Gone),
                None => Err(etcd_client::Error::LeaseKeepAliveError(
                    "keep-alive stream ended".to_owned(),
                )),
            };
        }
        // Opening the stream sends a keep-alive and waits for its answer; it only reports
        // whether the lease exists, so the TTL is the one granted.
        match self.client.lease_client().keep_alive(self.id).await {
            Ok(opened) => {
                self.stream = Some(opened);
                Ok(Renewal::Renewed(self.granted_ttl))
            }
            Err(error) if lease_not_found(&error) => Ok(Renewal::Gone),
            Err(error) => Err(error),
        }
    }
}

impl std::fmt::Debug for EtcdRenewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdRenewer").field("id", &self.id).finish()
    }
}

#[async_trait]
impl Renewer for EtcdRenewer {
    async fn renew(&mut self) -> Result<Renewal, String> {
        if self.in_flight {
            // The previous call was abandoned mid-way: its answer may still arrive.
            self.stream = None;
        }
        self.in_flight = true;
        let outcome = timeout(self.timeout, self.renew_once()).await;
        self.in_flight = false;
        match outcome {
            Ok(Ok(renewal)) => Ok(renewal),
            Ok(Err(error)) => {
                self.stream = None;
                Err(error.to_string())
            }
            Err(_) => {
                self.stream = None;
                Err(format!("no answer within {:?}", self.timeout))
            }
        }
    }
}

/// True when etcd says the lease does not exist (expired or revoked).
pub(crate) fn lease_not_found(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::LeaseKeepAliveError(message) => message.contains("lease not found"),
        // etcd answers "etcdserver: requested lease not found".
        etcd_client::Error::GRpcStatus(status) => status.message().contains("lease not found"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// Divisible by 3 and 10 in milliseconds, since tokio's timers have millisecond resolution.
    const TTL: Duration = Duration::from_secs(15);
    const MARGIN: Duration = Duration::from_secs(3);

    /// Answers keep-alives from a script; an exhausted script hangs (etcd unreachable).
    struct Scripted {
        answers: VecDeque<Result<Renewal, String>>,
        sent: Arc<Mutex<Vec<Instant>>>,
    }

    #[async_trait]
    impl Renewer for Scripted {
        async fn renew(&mut self) -> Result<Renewal, String> {
            self.sent.lock().unwrap().push(Instant::now());
            match self.answers.pop_front() {
                Some(answer) => answer,
                None => std::future::pending().await,
            }
        }
    }

    fn start(
        answers: Vec<Result<Renewal, String>>,
    ) -> (
        Arc<LeaseSignal>,
        Arc<Mutex<Vec<Instant>>>,
        CancellationToken,
    ) {
        let signal = LeaseSignal::new();
        let granted_at = Instant::now();
        signal.granted(7, deadline(granted_at, TTL, safety_margin(TTL)));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let cancel = CancellationToken::new();
        let renewer = Scripted {
            answers: answers.into(),
            sent: sent.clone(),
        };
        tokio::spawn(keep_alive(renewer, 7, TTL, signal.clone(), cancel.clone()));
        (signal, sent, cancel)
    }

    #[test]
    fn the_margin_is_a_fifth_of_the_ttl_but_at_least_a_second() {
        assert_eq!(
            safety_margin(Duration::from_secs(10)),
            Duration::from_secs(2)
        );
        assert_eq!(
            safety_margin(Duration::from_secs(3)),
            Duration::from_secs(1)
        );
        assert_eq!(
            safety_margin(Duration::from_secs(60)),
            Duration::from_secs(12)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_that_is_never_renewed_is_lost_exactly_at_ttl_minus_margin() {
        let start_at = Instant::now();
        let (signal, sent, _cancel) = start(vec![]);
        let mut valid = signal.subscribe_valid();
        assert!(*valid.borrow_and_update());
        valid.changed().await.unwrap();
        assert!(!*valid.borrow());
        assert_eq!(start_at.elapsed(), TTL - MARGIN);
        assert!(!signal.is_valid());
        assert_eq!(signal.state(), LeaseState::Lost { id: 7 });
        // The one keep-alive went out at TTL/3 and never came back.
        assert_eq!(sent.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn each_renewal_moves_the_deadline_to_its_send_time_plus_ttl_minus_margin() {
        let start_at = Instant::now();
        let renewed = Ok(Renewal::Renewed(TTL));
        let (signal, sent, _cancel) = start(vec![renewed.clone(), renewed]);
        let mut valid = signal.subscribe_valid();
        valid.changed().await.unwrap();
        let sent = sent.lock().unwrap().clone();
        // Two successes at TTL/3 and 2·TTL/3, then a third that hangs.
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[1] - start_at, 2 * TTL / 3);
        assert_eq!(start_at.elapsed(), 2 * TTL / 3 + TTL - MARGIN);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_keep_alives_are_retried_quickly_and_can_save_the_lease() {
        let start_at = Instant::now();
        let failure = Err("connection refused".to_owned());
        let (signal, sent, cancel) = start(vec![
            failure.clone(),
            failure.clone(),
            failure,
            Ok(Renewal::Renewed(TTL)),
        ]);
        tokio::time::sleep(TTL).await;
        assert!(signal.is_valid(), "saved by the fourth keep-alive");
        let sent = sent.lock().unwrap().clone();
        assert_eq!(sent[1] - sent[0], TTL / 10);
        assert_eq!(sent[3] - start_at, TTL / 3 + 3 * TTL / 10);
        cancel.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_etcd_no_longer_knows_is_lost_at_once() {
        let start_at = Instant::now();
        let (signal, _sent, _cancel) = start(vec![Ok(Renewal::Gone)]);
        let mut valid = signal.subscribe_valid();
        valid.changed().await.unwrap();
        assert_eq!(start_at.elapsed(), TTL / 3);
        assert_eq!(signal.state(), LeaseState::Lost { id: 7 });
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_answer_never_revives_a_lost_lease() {
        let signal = LeaseSignal::new();
        let now = Instant::now();
        signal.granted(1, now + Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!signal.renewed(1, Instant::now() + TTL));
        assert!(!signal.is_valid());
    }

    #[tokio::test(start_paused = true)]
    async fn losing_an_old_lease_does_not_touch_the_new_one() {
        let signal = LeaseSignal::new();
        signal.granted(2, Instant::now() + TTL);
        signal.lost(1);
        assert!(signal.is_valid());
        assert!(*signal.subscribe_valid().borrow());
    }
}
