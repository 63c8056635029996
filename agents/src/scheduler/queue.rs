//! The scheduling queue: the pods waiting for a node, as upstream's active queue, backoff
//! and unschedulable pods, in one structure.
//!
//! - *Active* pods are taken highest `spec.priority` first, then in arrival order
//!   (upstream's PrioritySort).
//! - *In flight*: taken by the scheduling loop; its binding is being written.
//! - *Parked*: no node fitted (or the binding failed). The pod is retried when something
//!   happens that may make room — a node added or changed, a bound pod gone, or (if it
//!   failed on spread or pod affinity) a pod bound elsewhere — once its backoff has passed
//!   (1 s doubling to 10 s, upstream's), and at the latest [`FLUSH_AFTER`] after it failed,
//!   for the events not watched (upstream flushes after 5 minutes).
//!
//! Pods are keyed by uid. Its size is bounded by the pending pods the API holds; the heap
//! keeps stale entries (a pod updated or removed) until they reach its top, where they are
//! dropped, so it holds at most one entry per activation.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use crate::metrics::PendingPods;

pub(crate) const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A parked pod is tried again after this long even without an event.
pub(crate) const FLUSH_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Active,
    InFlight,
    Parked {
        backoff_until: Instant,
        /// When the timer wakes it: `backoff_until` once an event asked for a retry, else
        /// the flush time.
        retry_at: Instant,
        pod_arrivals_may_help: bool,
    },
}

struct Entry {
    pod: Arc<Pod>,
    state: State,
    /// Failed attempts in a row.
    attempts: u32,
    /// The sequence number of its live heap entry (older ones are stale).
    seq: u64,
}

/// What happened in the cluster, for deciding which parked pods to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClusterEvent {
    /// A node added or changed, a pod gone, room freed: any parked pod may fit now.
    RoomFreed,
    /// A pod bound (or assumed) somewhere: only spread and pod affinity may change.
    PodArrived,
}

#[derive(Default)]
pub(crate) struct Queue {
    entries: HashMap<String, Entry>,
    /// (priority, earliest first, uid)
    active: BinaryHeap<(i32, Reverse<u64>, String)>,
    /// (retry time, uid) of parked pods.
    timers: BTreeSet<(Instant, String)>,
    /// The parked pods (what an event has to look at).
    parked: HashSet<String>,
    seq: u64,
}

fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

impl Queue {
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn activate(&mut self, uid: &str) {
        let Some(e) = self.entries.get_mut(uid) else {
            return;
        };
        if let State::Parked { retry_at, .. } = e.state {
            self.timers.remove(&(retry_at, uid.to_string()));
            self.parked.remove(uid);
        }
        self.seq += 1;
        e.state = State::Active;
        e.seq = self.seq;
        self.active.push((priority(&e.pod), Reverse(self.seq), uid.to_string()));
    }

    /// A pending pod this scheduler should place, new or updated.
    pub fn add_or_update(&mut self, uid: &str, pod: Arc<Pod>, now: Instant) {
        match self.entries.get_mut(uid) {
            None => {
                self.entries.insert(
                    uid.to_string(),
                    Entry {
                        pod,
                        state: State::Active,
                        attempts: 0,
                        seq: 0,
                    },
                );
                self.activate(uid);
            }
            Some(e) => {
                let changed = e.pod.spec != pod.spec || e.pod.metadata.labels != pod.metadata.labels;
                e.pod = pod;
                // A parked pod whose spec or labels changed may fit now (a status update,
                // such as our own Unschedulable condition, changes nothing).
                if changed && matches!(e.state, State::Parked { .. }) {
                    self.retry_parked(uid, now);
                }
            }
        }
    }

    pub fn remove(&mut self, uid: &str) {
        if let Some(e) = self.entries.remove(uid) {
            if let State::Parked { retry_at, .. } = e.state {
                self.timers.remove(&(retry_at, uid.to_string()));
                self.parked.remove(uid);
            }
        }
    }

    /// Moves parked pods whose time has come to the active queue.
    fn fire_timers(&mut self, now: Instant) {
        while let Some((at, _)) = self.timers.first() {
            if *at > now {
                break;
            }
            let Some((_, uid)) = self.timers.pop_first() else {
                break;
            };
            if self
                .entries
                .get(&uid)
                .is_some_and(|e| matches!(e.state, State::Parked { .. }))
            {
                self.activate(&uid);
            }
        }
    }

    /// The next pod to schedule (now in flight), if any is due.
    pub fn pop(&mut self, now: Instant) -> Option<(String, Arc<Pod>)> {
        self.fire_timers(now);
        while let Some((_, Reverse(seq), uid)) = self.active.pop() {
            let Some(e) = self.entries.get_mut(&uid) else {
                continue;
            };
            if e.state != State::Active || e.seq != seq {
                continue;
            }
            e.state = State::InFlight;
            return Some((uid, e.pod.clone()));
        }
        None
    }

    /// When the next parked pod is due.
    pub fn next_timer(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// An in-flight pod fitted nowhere (or its binding failed): parked with backoff.
    pub fn park(&mut self, uid: &str, now: Instant, pod_arrivals_may_help: bool, retry_soon: bool) {
        let Some(e) = self.entries.get_mut(uid) else {
            return;
        };
        if let State::Parked { retry_at, .. } = e.state {
            self.timers.remove(&(retry_at, uid.to_string()));
        }
        e.attempts = e.attempts.saturating_add(1);
        let backoff = BACKOFF_INITIAL
            .saturating_mul(1u32.checked_shl(e.attempts - 1).unwrap_or(u32::MAX))
            .min(BACKOFF_MAX);
        let backoff_until = now + backoff;
        let retry_at = if retry_soon { backoff_until } else { now + FLUSH_AFTER };
        e.state = State::Parked {
            backoff_until,
            retry_at,
            pod_arrivals_may_help,
        };
        self.timers.insert((retry_at, uid.to_string()));
        self.parked.insert(uid.to_string());
    }

    /// An in-flight pod was bound: it leaves the queue.
    pub fn bound(&mut self, uid: &str) {
        self.remove(uid);
    }

    /// Retries a parked pod: at once if its backoff has passed, else when it does.
    fn retry_parked(&mut self, uid: &str, now: Instant) {
        let Some(e) = self.entries.get_mut(uid) else {
            return;
        };
        let State::Parked {
            backoff_until,
            retry_at,
            pod_arrivals_may_help,
        } = e.state
        else {
            return;
        };
        if backoff_until <= now {
            self.activate(uid);
        } else if retry_at > backoff_until {
            self.timers.remove(&(retry_at, uid.to_string()));
            self.timers.insert((backoff_until, uid.to_string()));
            e.state = State::Parked {
                backoff_until,
                retry_at: backoff_until,
                pod_arrivals_may_help,
            };
        }
    }

    /// Something happened that may let parked pods fit.
    pub fn on_event(&mut self, event: ClusterEvent, now: Instant) {
        let uids: Vec<String> = self
            .parked
            .iter()
            .filter(|uid| {
                self.entries.get(*uid).is_some_and(|e| match e.state {
                    State::Parked {
                        pod_arrivals_may_help, ..
                    } => event == ClusterEvent::RoomFreed || pod_arrivals_may_help,
                    _ => false,
                })
            })
            .cloned()
            .collect();
        for uid in uids {
            self.retry_parked(&uid, now);
        }
    }

    /// The pods waiting, by where: O(pods queued).
    pub fn pending(&self, now: Instant) -> PendingPods {
        let mut pending = PendingPods::default();
        for e in self.entries.values() {
            match e.state {
                State::Active => pending.active += 1,
                State::InFlight => {}
                State::Parked { backoff_until, .. } if backoff_until > now => pending.backoff += 1,
                State::Parked { .. } => pending.unschedulable += 1,
            }
        }
        pending
    }

    /// After a relist: pods not in `uids` are gone.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        let gone: Vec<String> = self.entries.keys().filter(|u| !keep(u)).cloned().collect();
        for uid in gone {
            self.remove(&uid);
        }
    }

    #[cfg(test)]
    fn is_parked(&self, uid: &str) -> bool {
        let state = self
            .entries
            .get(uid)
            .is_some_and(|e| matches!(e.state, State::Parked { .. }));
        assert_eq!(state, self.parked.contains(uid), "the parked set agrees");
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, priority: i32) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "uid": name},
                "spec": {"containers": [], "priority": priority}}))
            .expect("pod"),
        )
    }

    #[test]
    fn priority_first_then_arrival() {
        let mut q = Queue::default();
        let now = Instant::now();
        q.add_or_update("a", pod("a", 0), now);
        q.add_or_update("b", pod("b", 10), now);
        q.add_or_update("c", pod("c", 0), now);
        let order: Vec<String> = std::iter::from_fn(|| q.pop(now).map(|(u, _)| u)).collect();
        assert_eq!(order, ["b", "a", "c"]);
        assert_eq!(q.len(), 3, "in flight until bound or parked");
    }

    #[test]
    fn pending_pods_are_counted_by_where_they_wait() {
        let mut q = Queue::default();
        let t0 = Instant::now();
        for uid in ["a", "b", "c", "d"] {
            q.add_or_update(uid, pod(uid, 0), t0);
        }
        for _ in 0..3 {
            assert!(q.pop(t0).is_some());
        }
        q.park("a", t0, false, false);
        q.park("b", t0, false, false);
        // "c" is in flight (its binding being written): in no queue.
        let at = |active, backoff, unschedulable| PendingPods {
            active,
            backoff,
            unschedulable,
        };
        assert_eq!(q.pending(t0), at(1, 2, 0));
        assert_eq!(
            q.pending(t0 + BACKOFF_INITIAL),
            at(1, 0, 2),
            "backoff over, waiting for an event"
        );
    }

    #[test]
    fn parked_pods_wait_for_events_and_their_backoff() {
        let mut q = Queue::default();
        let t0 = Instant::now();
        q.add_or_update("a", pod("a", 0), t0);
        assert!(q.pop(t0).is_some());
        q.park("a", t0, false, false);
        assert!(q.is_parked("a"));
        assert!(
            q.pop(t0 + Duration::from_secs(30)).is_none(),
            "no event: waits for the flush"
        );
        // A pod arriving does not help a pod short of resources.
        q.on_event(ClusterEvent::PodArrived, t0 + Duration::from_secs(2));
        assert!(q.pop(t0 + Duration::from_secs(2)).is_none());
        // Room freed within the backoff: retried when the backoff ends.
        q.on_event(ClusterEvent::RoomFreed, t0 + Duration::from_millis(500));
        assert!(q.pop(t0 + Duration::from_millis(900)).is_none());
        assert_eq!(q.next_timer(), Some(t0 + BACKOFF_INITIAL));
        assert!(q.pop(t0 + BACKOFF_INITIAL).is_some());
        assert!(!q.is_parked("a"));
        // Second failure: 2 s backoff; the flush still comes.
        q.park("a", t0, true, false);
        assert!(q.pop(t0 + FLUSH_AFTER).is_some());
        // An unchanged update (a status write) does not wake a parked pod.
        q.park("a", t0, true, false);
        q.add_or_update("a", pod("a", 0), t0 + Duration::from_secs(20));
        assert!(q.pop(t0 + Duration::from_secs(20)).is_none());
        q.add_or_update("a", pod("a", 5), t0 + Duration::from_secs(20));
        assert!(
            q.pop(t0 + Duration::from_secs(20)).is_some(),
            "a changed spec is retried"
        );
        q.park("a", t0, true, false);
        assert!(q.is_parked("a"));
        q.bound("a");
        assert_eq!(q.len(), 0);
        assert!(q.parked.is_empty());
    }
}
