//! Pairing waiting runs with workers' credit: queued runs first, then scheduled runs whose fire
//! is within the look-ahead (offered ahead, so the worker prepares them). Offers are read in one
//! batch across shards; each goes to a worker with credit, preferring one that has the run's
//! image. Also the sweep: runs whose worker went silent fail `worker_lost`, offers never
//! answered go back in line. It never moves a run's state except through the store's
//! conditional batch calls.

use std::collections::HashMap;

use chrono::Utc;
use kairos_domain::{RunId, ShardId};
use kairos_proto::v1::{SchedulerMessage, scheduler_message};
use kairos_store::{LeasedRun, Offer, ShardLease};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Awaiting, Dispatcher, Session, ack_result};

/// Most runs offered per round (one store read).
const ASSIGN_BATCH: usize = 1024;
/// How often silent runs and unanswered offers are looked for.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

impl Dispatcher {
    pub(super) async fn assign_loop(&self, stop: CancellationToken) {
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        loop {
            self.assign_rounds(&stop).await;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = sweep.tick() => self.sweep().await,
            }
        }
    }

    /// Offers waiting runs until there is no credit or nothing waits.
    async fn assign_rounds(&self, stop: &CancellationToken) {
        loop {
            let picked = self.pick();
            if picked.is_empty() || stop.is_cancelled() {
                return;
            }
            if !self.offer(picked).await {
                // The store is unreachable: wait a little instead of spinning on every wake.
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
                }
                return;
            }
        }
    }

    /// Takes as many waiting runs as there is credit for (queued ones first).
    fn pick(&self) -> Vec<(LeasedRun, bool)> {
        let mut state = self.state();
        let credit: usize = state.sessions.values().map(|s| s.credit as usize).sum();
        let mut budget = credit.min(ASSIGN_BATCH);
        let mut picked = Vec::new();
        while budget > 0 {
            let Some(run) = state.ready.pop_front() else {
                break;
            };
            if state.awaiting.contains_key(&run.id) || state.running.contains_key(&run.id) {
                continue;
            }
            picked.push((run, false));
            budget -= 1;
        }
        let now = Utc::now();
        while budget > 0 {
            let Some(run) = state.upcoming.pop_front() else {
                break;
            };
            let past = run.fire_time.is_none_or(|t| t <= now);
            if past
                || state.due.contains(&run.id)
                || state.awaiting.contains_key(&run.id)
                || state.running.contains_key(&run.id)
            {
                continue; // the fire takes care of it
            }
            picked.push((run, true));
            budget -= 1;
        }
        picked
    }

    /// Reads the picked runs' offers in one batch and sends each to a worker. False when the
    /// read failed (the runs are back in line).
    async fn offer(&self, picked: Vec<(LeasedRun, bool)>) -> bool {
        let runs: Vec<LeasedRun> = picked.iter().map(|(r, _)| r.clone()).collect();
        let any_upcoming = picked.iter().any(|(_, upcoming)| *upcoming);
        let offers = match self.store.offers_across(&runs, any_upcoming).await {
            Ok(offers) => offers,
            Err(e) => {
                tracing::warn!(runs = runs.len(), error = %e, "cannot load offers; they wait for the next round");
                let mut state = self.state();
                for (run, upcoming) in picked {
                    if upcoming {
                        state.upcoming.push_back(run);
                    } else {
                        state.ready.push_front(run);
                    }
                }
                return false;
            }
        };
        let mut offers: HashMap<RunId, Offer> = offers.into_iter().map(|o| (o.run_id, o)).collect();
        let now = Instant::now();
        let now_utc = Utc::now();
        let mut sends = Vec::new();
        {
            let mut state = self.state();
            for (run, upcoming) in picked {
                // Gone from the offers: cancelled, skipped, already taken, or its job deleted.
                let Some(offer) = offers.remove(&run.id) else {
                    continue;
                };
                if state.leases.get(&run.lease.shard()) != Some(&run.lease)
                    || state.awaiting.contains_key(&run.id)
                    || state.running.contains_key(&run.id)
                {
                    continue;
                }
                if upcoming
                    && (state.due.contains(&run.id) || run.fire_time.is_none_or(|t| t <= now_utc))
                {
                    continue; // fired while the offer was read: the fire path has it
                }
                let Some(session) = choose(&state.sessions, offer.image.as_str()) else {
                    if upcoming {
                        state.upcoming.push_back(run);
                    } else {
                        state.ready.push_front(run);
                    }
                    continue;
                };
                let Some(s) = state.sessions.get_mut(&session) else {
                    continue;
                };
                s.credit -= 1;
                let tx = s.tx.clone();
                let message = assignment_message(&offer, upcoming);
                state.awaiting.insert(
                    run.id,
                    Awaiting {
                        run,
                        session,
                        sent_at: now,
                        upcoming,
                        accepted: false,
                        firing: false,
                        acking: false,
                    },
                );
                sends.push((session, offer.run_id, tx, message));
            }
        }
        for (session, run, tx, message) in sends {
            if tx.send(Ok(message)).await.is_err() {
                // The stream closed under us: back in line unless someone decided it already.
                let mut state = self.state();
                let mine = state
                    .awaiting
                    .get(&run)
                    .is_some_and(|a| a.session == session && !a.acking && !a.firing);
                if mine
                    && let Some(a) = state.awaiting.remove(&run)
                    && !a.upcoming
                {
                    state.ready.push_front(a.run);
                }
            }
        }
        true
    }

    /// Fails runs whose worker went silent; puts offers never answered back in line.
    pub(super) async fn sweep(&self) {
        let now = Instant::now();
        let now_utc = Utc::now();
        let ack_timeout = self.config.ack_timeout;
        let ack_timeout_utc = chrono::Duration::from_std(ack_timeout).unwrap_or_default();
        let (lost, withdrawn) = {
            let mut state = self.state();
            let lost_after = self.config.lost_after;
            let lost: Vec<(RunId, ShardLease)> = state
                .running
                .iter()
                .filter(|(_, r)| now.duration_since(r.last_seen) > lost_after)
                .map(|(id, r)| (*id, r.run.lease.clone()))
                .collect();
            for (id, _) in &lost {
                state.running.remove(id);
            }
            let stale: Vec<RunId> = state
                .awaiting
                .iter()
                .filter(|(_, a)| !a.acking && !a.firing)
                .filter(|(_, a)| {
                    if a.upcoming {
                        // Held for a fire that should have come by now.
                        a.run
                            .fire_time
                            .is_none_or(|t| t + ack_timeout_utc < now_utc)
                    } else {
                        now.duration_since(a.sent_at) > ack_timeout
                    }
                })
                .map(|(id, _)| *id)
                .collect();
            let mut withdrawn = Vec::new();
            for id in stale {
                let Some(a) = state.awaiting.remove(&id) else {
                    continue;
                };
                if a.upcoming {
                    if let Some(s) = state.sessions.get(&a.session) {
                        withdrawn.push((s.tx.clone(), id));
                    }
                } else {
                    state.ready.push_back(a.run);
                }
            }
            (lost, withdrawn)
        };
        if !withdrawn.is_empty() {
            tracing::debug!(
                runs = withdrawn.len(),
                "offers ahead of a fire that never came were withdrawn"
            );
        }
        for (tx, id) in withdrawn {
            let _ = tx.send(Ok(ack_result(id, false))).await;
        }
        self.wake.notify_one();
        let mut by_shard: HashMap<ShardId, (ShardLease, Vec<RunId>)> = HashMap::new();
        for (id, lease) in lost {
            by_shard
                .entry(lease.shard())
                .or_insert_with(|| (lease.clone(), Vec::new()))
                .1
                .push(id);
        }
        for (_, (lease, ids)) in by_shard {
            match self.store.fail_lost_runs(&lease, &ids).await {
                Ok(failed) => {
                    self.metrics.runs_lost.inc_by(failed.len() as u64);
                    tracing::warn!(
                        shard = lease.shard().get(),
                        runs = failed.len(),
                        "runs failed: their worker stopped heartbeating"
                    );
                }
                Err(e) => {
                    tracing::warn!(shard = lease.shard().get(), error = %e, "cannot fail lost runs")
                }
            }
        }
    }
}

/// The session to offer a run of `image` to: one with credit that has the image, else the one
/// with the most credit.
fn choose(sessions: &HashMap<u64, Session>, image: &str) -> Option<u64> {
    let mut best: Option<(bool, u32, u64)> = None;
    for (id, s) in sessions {
        if s.credit == 0 {
            continue;
        }
        let key = (s.images.contains(image), s.credit, *id);
        if best.is_none_or(|b| (key.0, key.1) > (b.0, b.1)) {
            best = Some(key);
        }
    }
    best.map(|(_, _, id)| id)
}

pub(super) fn assignment_message(a: &Offer, upcoming: bool) -> SchedulerMessage {
    let assignment = scheduler_message::Assignment {
        run_id: a.run_id.to_string(),
        job_id: a.job_id.to_string(),
        image: a.image.as_str().to_owned(),
        command: a.command.args().to_vec(),
        env: a.env.vars().clone(),
        memory_mb: a.memory.mb() as i32,
        timeout_seconds: a.timeout.seconds() as i32,
        fire_time: Some(prost_types::Timestamp {
            seconds: a.fire_time.timestamp(),
            nanos: a.fire_time.timestamp_subsec_nanos() as i32,
        }),
        attempt: a.attempt as i32,
        shard: u32::from(a.shard.get()),
        upcoming,
        registry_auth: a
            .registry_auth
            .as_ref()
            .map(|r| scheduler_message::RegistryAuth {
                server: r.server.clone(),
                username: r.username.clone(),
                password: r.password.expose().to_owned(),
            }),
        tenant_id: a.tenant_id.to_string(),
    };
    SchedulerMessage {
        kind: Some(scheduler_message::Kind::Assignment(assignment)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn session(credit: u32, images: &[&str]) -> Session {
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        Session {
            worker_id: "w".to_owned(),
            credit,
            images: images
                .iter()
                .map(|s| (*s).to_owned())
                .collect::<HashSet<_>>(),
            tx,
        }
    }

    #[test]
    fn a_worker_with_the_image_is_preferred_then_the_one_with_most_credit() {
        let sessions = HashMap::from([
            (1, session(10, &[])),
            (2, session(1, &["busybox:1.36"])),
            (3, session(0, &["alpine:3"])),
        ]);
        assert_eq!(choose(&sessions, "busybox:1.36"), Some(2));
        assert_eq!(
            choose(&sessions, "alpine:3"),
            Some(1),
            "no credit, no offer"
        );
        assert_eq!(choose(&sessions, "debian:12"), Some(1));
        assert_eq!(choose(&HashMap::new(), "debian:12"), None);
    }

    #[test]
    fn no_credit_anywhere_means_no_session() {
        let sessions = HashMap::from([(1, session(0, &["busybox:1.36"]))]);
        assert_eq!(choose(&sessions, "busybox:1.36"), None);
    }
}
