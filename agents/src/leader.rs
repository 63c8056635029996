//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection`
//! does it, so that of several replicas of a component exactly one acts.
//!
//! The Lease names its holder (`holderIdentity`), how long a holding lasts without renewal
//! (`leaseDurationSeconds`), and when it was acquired and last renewed. Every write is an
//! update at the resourceVersion last read, so two candidates racing for the same Lease
//! cannot both win: one gets 409 Conflict.
//!
//! Time. Candidates never compare their clocks with the times written in the Lease.
//! A candidate notes *when it observed* the record change (its own monotonic clock); the
//! holding has expired for it once `lease_duration` has passed since then without a
//! change. The holder renews every `retry_period`; if it has not renewed for
//! `renew_deadline` it stops acting at once (the future doing the work is dropped), and
//! `renew_deadline < lease_duration` leaves the margin in which the others still wait.
//! So at no moment do two act, as long as each process's clock runs at about the same
//! rate (not that the clocks agree).
//!
//! Defaults are Kubernetes' (15 s, 10 s, 2 s). [`LeaderElector::run`] campaigns, leads
//! and campaigns again, forever; dropping its future stops it, and
//! [`LeaderElector::release`] gives a held Lease up at once (a graceful shutdown).
//!
//! Left out: `preferredHolder` and the coordinated election `strategy` fields (left as
//! they are), and the jitter client-go adds to the retry period (the candidates' own
//! timing spreads them enough here).

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::time::Instant;

use crate::error::{AgentError, Result};

/// How long a holding lasts and how often it is renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long the others wait, from their last sight of a renewal, before they take
    /// the Lease (`leaseDurationSeconds`; whole seconds on the wire, rounded up).
    pub lease_duration: Duration,
    /// How long the holder keeps acting without a successful renewal.
    pub renew_deadline: Duration,
    /// How often the holder renews, and a candidate tries again.
    pub retry_period: Duration,
}

impl Default for LeaseTiming {
    fn default() -> LeaseTiming {
        LeaseTiming {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl LeaseTiming {
    /// The settings must leave the holder time to renew before its deadline, and the
    /// deadline time to stop it before anyone else may take over.
    pub fn check(&self) -> Result<()> {
        if self.retry_period.is_zero() {
            return Err(AgentError::Config("the retry period must be above zero".into()));
        }
        if self.renew_deadline <= self.retry_period {
            return Err(AgentError::Config(format!(
                "the renew deadline ({:?}) must be longer than the retry period ({:?})",
                self.renew_deadline, self.retry_period
            )));
        }
        if self.lease_duration <= self.renew_deadline {
            return Err(AgentError::Config(format!(
                "the lease duration ({:?}) must be longer than the renew deadline ({:?})",
                self.lease_duration, self.renew_deadline
            )));
        }
        Ok(())
    }

    fn lease_duration_seconds(&self) -> i32 {
        let s = self.lease_duration.as_secs() + u64::from(self.lease_duration.subsec_nanos() > 0);
        i32::try_from(s).unwrap_or(i32::MAX)
    }
}

/// What a candidate last saw of the Lease, and when (on its own clock).
struct Observed {
    holder: String,
    renew_time: Option<MicroTime>,
    resource_version: Option<String>,
    at: Instant,
}

/// One candidate for one Lease.
pub struct LeaderElector {
    leases: Api<Lease>,
    name: String,
    identity: String,
    timing: LeaseTiming,
    observed: Option<Observed>,
}

/// The outcome of one attempt to acquire or renew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// This candidate holds the Lease (acquired or renewed just now).
    Held,
    /// Another holds it, and its holding has not expired yet for this candidate.
    HeldBy(String),
    /// The write lost a race (409) or failed; try again after the retry period.
    Failed(String),
}

impl LeaderElector {
    /// A candidate `identity` for the Lease `name` in `leases`' namespace.
    pub fn new(leases: Api<Lease>, name: &str, identity: &str, timing: LeaseTiming) -> Result<LeaderElector> {
        timing.check()?;
        if identity.is_empty() {
            return Err(AgentError::Config("the candidate's identity must not be empty".into()));
        }
        Ok(LeaderElector {
            leases,
            name: name.to_owned(),
            identity: identity.to_owned(),
            timing,
            observed: None,
        })
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Campaigns until it holds the Lease, then runs `lead()` for as long as it keeps
    /// renewing; when a renewal has not succeeded for the renew deadline, the work future
    /// is dropped (it stops at its next await) and the campaign starts again. Returns only
    /// if `lead()`'s future ends by itself, after releasing the Lease.
    pub async fn run<F, Fut>(&mut self, mut lead: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ()>,
    {
        loop {
            self.acquire().await;
            tracing::info!(lease = %self.name, identity = %self.identity, "became the leader");
            let work = lead();
            let lost = tokio::select! {
                () = work => false,
                () = self.keep_renewing() => true,
            };
            if lost {
                tracing::warn!(lease = %self.name, identity = %self.identity, "lost the lease: stopped leading");
                continue;
            }
            if let Err(e) = self.release().await {
                tracing::warn!(lease = %self.name, error = %e, "could not release the lease");
            }
            return;
        }
    }

    /// Tries every retry period until this candidate holds the Lease.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Attempt::Held => return,
                Attempt::HeldBy(_) => {}
                Attempt::Failed(e) => tracing::debug!(lease = %self.name, error = %e, "acquiring the lease failed"),
            }
            tokio::time::sleep(self.timing.retry_period).await;
        }
    }

    /// Renews every retry period; returns when no renewal has succeeded for the renew
    /// deadline (or another candidate holds the Lease).
    async fn keep_renewing(&mut self) {
        let mut last_renewal = Instant::now();
        loop {
            let deadline = last_renewal + self.timing.renew_deadline;
            tokio::time::sleep_until((Instant::now() + self.timing.retry_period).min(deadline)).await;
            if Instant::now() >= deadline {
                return;
            }
            // One attempt may not outlive the deadline either.
            match tokio::time::timeout_at(deadline, self.try_acquire_or_renew()).await {
                Ok(Attempt::Held) => last_renewal = Instant::now(),
                Ok(Attempt::HeldBy(holder)) => {
                    tracing::warn!(lease = %self.name, %holder, "the lease is held by another");
                    return;
                }
                Ok(Attempt::Failed(e)) => tracing::debug!(lease = %self.name, error = %e, "renewing the lease failed"),
                Err(_) => return,
            }
        }
    }

    /// One round of client-go's `tryAcquireOrRenew`.
    pub async fn try_acquire_or_renew(&mut self) -> Attempt {
        let now = MicroTime(Timestamp::now());
        let current = match self.leases.get_opt(&self.name).await {
            Ok(lease) => lease,
            Err(e) => return Attempt::Failed(e.to_string()),
        };
        let Some(current) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.record(now.clone(), now, 0)),
            };
            return match self.leases.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(&created);
                    Attempt::Held
                }
                Err(e) => Attempt::Failed(e.to_string()),
            };
        };
        self.observe(&current);
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let held_by_other = !holder.is_empty() && holder != self.identity;
        if held_by_other {
            let seen = self.observed.as_ref().map_or_else(Instant::now, |o| o.at);
            if Instant::now() < seen + self.timing.lease_duration {
                return Attempt::HeldBy(holder);
            }
        }
        let (acquired, transitions) = if holder == self.identity {
            (
                spec.acquire_time.clone().unwrap_or_else(|| now.clone()),
                spec.lease_transitions.unwrap_or(0),
            )
        } else {
            (now.clone(), spec.lease_transitions.unwrap_or(0).saturating_add(1))
        };
        let mut next = current;
        next.spec = Some(LeaseSpec {
            preferred_holder: spec.preferred_holder,
            strategy: spec.strategy,
            ..self.record(acquired, now, transitions)
        });
        // The update carries the resourceVersion read above: a concurrent writer makes it 409.
        match self.leases.replace(&self.name, &PostParams::default(), &next).await {
            Ok(updated) => {
                self.observe(&updated);
                Attempt::Held
            }
            Err(e) => Attempt::Failed(e.to_string()),
        }
    }

    /// Gives the Lease up if this candidate holds it: no holder, so another takes it at
    /// its next attempt instead of waiting out the lease duration.
    pub async fn release(&mut self) -> Result<()> {
        let Some(mut current) = self.leases.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = current.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.leases
            .replace(&self.name, &PostParams::default(), &current)
            .await?;
        self.observed = None;
        Ok(())
    }

    fn record(&self, acquired: MicroTime, renewed: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.timing.lease_duration_seconds()),
            acquire_time: Some(acquired),
            renew_time: Some(renewed),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Notes the record and, if it changed since last time, when it was seen.
    fn observe(&mut self, lease: &Lease) {
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.unwrap_or_default();
        let resource_version = lease.metadata.resource_version.clone();
        let unchanged = self.observed.as_ref().is_some_and(|o| {
            o.holder == holder && o.renew_time == spec.renew_time && o.resource_version == resource_version
        });
        if !unchanged {
            self.observed = Some(Observed {
                holder,
                renew_time: spec.renew_time,
                resource_version,
                at: Instant::now(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_must_leave_margins() {
        assert!(LeaseTiming::default().check().is_ok());
        let bad = LeaseTiming {
            lease_duration: Duration::from_secs(10),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        };
        assert!(bad.check().is_err());
        let bad = LeaseTiming {
            retry_period: Duration::from_secs(10),
            ..LeaseTiming::default()
        };
        assert!(bad.check().is_err());
        let short = LeaseTiming {
            lease_duration: Duration::from_millis(2500),
            renew_deadline: Duration::from_secs(2),
            retry_period: Duration::from_millis(500),
        };
        assert!(short.check().is_ok());
        assert_eq!(
            short.lease_duration_seconds(),
            3,
            "whole seconds on the wire, rounded up"
        );
    }
}
