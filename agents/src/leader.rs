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
//! Fencing. Dropping the work future is not enough by itself: a process paused longer
//! than the lease duration (SIGSTOP, a frozen VM) resumes with its timers and sockets all
//! ready at once, and may run work it had lined up before the elector gets to notice its
//! deadline passed, while another replica already acts. So the work never gets the plain
//! client. Each term (one acquisition, until the lead is lost) has a [`Fence`], and
//! [`fenced_client`] wraps the API client so that a mutating request (POST, PUT, PATCH,
//! DELETE) is checked as it leaves: it is sent only if the attempt that last renewed the
//! Lease *began* less than `renew_deadline` ago, on the monotonic clock (which runs on
//! while the process is stopped), and the term has not ended. Otherwise it fails
//! locally, never sent, with [`NotLeading`] (as kube's `Error::Service`; a controller
//! logs it as any failed write). Reads pass: they change nothing. The Lease's own
//! requests go through the plain client. A term's fence is closed for good when the term
//! ends, so a task that outlived it cannot write with its client even after this replica
//! leads again.
//!
//! Why that is enough: a renewal whose attempt began at `t` reached the Lease after `t`,
//! so another candidate saw it no earlier than `t`, and takes over no earlier than
//! `t + lease_duration` (its takeover is an update at the resourceVersion it read, so it
//! replaces that very renewal, not an older one); the holder's writes leave only until `t + renew_deadline`, a margin
//! of `lease_duration - renew_deadline` before. Its limit: the check is made when a
//! request leaves the process, not when the API server applies it. A request that passed
//! the fence and then was held up (the process paused between the check and the socket,
//! the bytes sitting in a socket buffer or on a slow network for longer than the margin)
//! can still land after another replica took over. Only the API server could refuse
//! that, with a fencing token checked on write, which Kubernetes does not have either.
//!
//! Records. The fence logs every mutating request it lets through, and every one it
//! refuses, under the target `capstan::acted`, so that what each replica did can be
//! checked afterwards without touching the controllers:
//!
//! ```text
//! <RFC 3339 time, µs> DEBUG capstan::acted: acted identity=<identity> method=<METHOD> path=<path>
//! <RFC 3339 time, µs>  WARN capstan::acted: refused identity=<identity> method=<METHOD> path=<path> reason="..."
//! ```
//!
//! The writes let through are logged at debug level, so that a busy scheduler does not
//! write a line per binding by default: `CAPSTAN_LOG=info,capstan::acted=debug` shows them.
//!
//! Defaults are Kubernetes' (15 s, 10 s, 2 s). [`LeaderElector::lead`] campaigns, leads
//! and campaigns again, forever; dropping its future stops it, and
//! [`LeaderElector::release`] gives a held Lease up at once (a graceful shutdown).
//!
//! Left out: `preferredHolder` and the coordinated election `strategy` fields (left as
//! they are), and the jitter client-go adds to the retry period (the candidates' own
//! timing spreads them enough here).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Method, Request, Response};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::client::Body;
use kube::Client;
// Tokio's clock is the monotonic one (std's `Instant`), except in tests that pause time,
// where the elector's timers and the fence then agree.
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

/// The proof of a fresh holding that the elected work's writes need: one per term, shared
/// by the elector (which notes each renewal) and the work's [`fenced_client`].
#[derive(Clone)]
pub struct Fence {
    identity: Arc<str>,
    renew_deadline: Duration,
    state: Arc<Mutex<FenceState>>,
}

#[derive(Debug, Clone, Copy)]
enum FenceState {
    /// Election is off: this replica always acts.
    Open,
    /// Held; the attempt that last renewed the Lease began at this instant.
    Renewed(Instant),
    /// The term ended (the lead was lost, or the work ended).
    Closed,
}

impl Fence {
    /// A fence that always lets writes through (leader election off), still recording
    /// them as `identity`'s.
    pub fn open(identity: &str) -> Fence {
        Fence::with_state(identity, Duration::ZERO, FenceState::Open)
    }

    /// A term's fence: held, renewed by the attempt that began at `renewed`.
    fn held(identity: &str, renew_deadline: Duration, renewed: Instant) -> Fence {
        Fence::with_state(identity, renew_deadline, FenceState::Renewed(renewed))
    }

    fn with_state(identity: &str, renew_deadline: Duration, state: FenceState) -> Fence {
        Fence {
            identity: identity.into(),
            renew_deadline,
            state: Arc::new(Mutex::new(state)),
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FenceState> {
        // The state is a plain value, valid whatever a panicking holder was doing.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes a successful renewal whose attempt began at `at` (never reopens a closed term).
    fn renewed(&self, at: Instant) {
        let mut state = self.state();
        if let FenceState::Renewed(previous) = *state {
            *state = FenceState::Renewed(previous.max(at));
        }
    }

    /// Ends the term: from now on its client writes nothing.
    fn close(&self) {
        *self.state() = FenceState::Closed;
    }

    /// Whether a write may leave now.
    pub fn check(&self) -> std::result::Result<(), NotLeading> {
        let state = *self.state();
        let refused = |reason: String| NotLeading {
            identity: self.identity.to_string(),
            reason,
        };
        match state {
            FenceState::Open => Ok(()),
            FenceState::Closed => Err(refused("its term as the leader has ended".into())),
            FenceState::Renewed(at) => {
                let since = Instant::now().saturating_duration_since(at);
                if since < self.renew_deadline {
                    Ok(())
                } else {
                    Err(refused(format!(
                        "its last renewal began {since:?} ago, past the renew deadline of {:?}",
                        self.renew_deadline
                    )))
                }
            }
        }
    }

    /// Checks a request as it leaves, and records it (see the module's doc).
    fn admit<B>(&self, request: &Request<B>) -> std::result::Result<(), NotLeading> {
        if !is_mutating(request.method()) {
            return Ok(());
        }
        let (method, path) = (request.method(), request.uri().path());
        match self.check() {
            Ok(()) => {
                tracing::debug!(target: "capstan::acted", identity = %self.identity, %method, %path, "acted");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(target: "capstan::acted", identity = %self.identity, %method, %path, reason = ?e.reason, "refused");
                Err(e)
            }
        }
    }
}

/// Requests that change something; the others (GET, watches, HEAD) pass the fence.
fn is_mutating(method: &Method) -> bool {
    [Method::POST, Method::PUT, Method::PATCH, Method::DELETE].contains(method)
}

/// A write refused by the [`Fence`]: it was not sent.
#[derive(Debug, Clone)]
pub struct NotLeading {
    pub identity: String,
    pub reason: String,
}

impl std::fmt::Display for NotLeading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "refused without sending: {} does not hold the lease ({})",
            self.identity, self.reason
        )
    }
}

impl std::error::Error for NotLeading {}

/// A client that sends through `client` everything `fence` lets through (see the module's
/// doc); a refused request fails with `kube::Error::Service` wrapping [`NotLeading`].
/// It shares `client`'s connections. Needs a Tokio runtime (kube's client spawns its
/// request buffer).
pub fn fenced_client(client: Client, fence: Fence) -> Client {
    let namespace = client.default_namespace().to_owned();
    Client::new(Fenced { client, fence }, namespace)
}

/// The tower service behind [`fenced_client`].
#[derive(Clone)]
struct Fenced {
    client: Client,
    fence: Fence,
}

impl tower_service::Service<Request<Body>> for Fenced {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = Pin<Box<dyn Future<Output = std::result::Result<Response<Body>, kube::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::result::Result<(), kube::Error>> {
        // The wrapped client queues requests itself.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let (client, fence) = (self.client.clone(), self.fence.clone());
        // Checked when the caller first polls, that is as late as possible before sending.
        Box::pin(async move {
            fence.admit(&request).map_err(|e| kube::Error::Service(Box::new(e)))?;
            client.send(request).await
        })
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

    /// [`LeaderElector::lead`] for work that needs no fence (it sees no client of it).
    pub async fn run<F, Fut>(&mut self, mut lead: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ()>,
    {
        self.lead(|_fence| lead()).await;
    }

    /// Campaigns until it holds the Lease, then runs `lead(fence)` for as long as it keeps
    /// renewing, with the term's [`Fence`] (give the work a [`fenced_client`] of it); when
    /// a renewal has not succeeded for the renew deadline, the work future is dropped (it
    /// stops at its next await), the fence closed, and the campaign starts again. Returns
    /// only if `lead()`'s future ends by itself, after releasing the Lease.
    pub async fn lead<F, Fut>(&mut self, mut lead: F)
    where
        F: FnMut(Fence) -> Fut,
        Fut: Future<Output = ()>,
    {
        loop {
            let renewed = self.acquire().await;
            let fence = Fence::held(&self.identity, self.timing.renew_deadline, renewed);
            tracing::info!(lease = %self.name, identity = %self.identity, "became the leader");
            let work = lead(fence.clone());
            let lost = tokio::select! {
                () = work => false,
                () = self.keep_renewing(&fence, renewed) => true,
            };
            // Whatever outlived the work future (a spawned task) writes nothing more.
            fence.close();
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

    /// Tries every retry period until this candidate holds the Lease; returns when the
    /// successful attempt began.
    pub async fn acquire(&mut self) -> Instant {
        loop {
            let (began, attempt) = self.attempt().await;
            match attempt {
                // Held, but so long ago (the process was paused meanwhile) that another may
                // hold it by now: not a start of a term; the next attempt tells.
                Attempt::Held if began.elapsed() >= self.timing.renew_deadline => {
                    tracing::debug!(lease = %self.name, "acquired the lease too long ago to lead")
                }
                Attempt::Held => return began,
                Attempt::HeldBy(_) => {}
                Attempt::Failed(e) => tracing::debug!(lease = %self.name, error = %e, "acquiring the lease failed"),
            }
            tokio::time::sleep(self.timing.retry_period).await;
        }
    }

    /// Renews every retry period, noting each renewal in `fence`; returns when no renewal
    /// has succeeded for the renew deadline (or another candidate holds the Lease).
    /// `renewed`: when the attempt that acquired the Lease began.
    async fn keep_renewing(&mut self, fence: &Fence, mut renewed: Instant) {
        loop {
            // Counted from when the last good attempt *began*, as the fence counts: the
            // others may have seen that renewal from then on.
            let deadline = renewed + self.timing.renew_deadline;
            tokio::time::sleep_until((Instant::now() + self.timing.retry_period).min(deadline)).await;
            if Instant::now() >= deadline {
                return;
            }
            // One attempt may not outlive the deadline either.
            match tokio::time::timeout_at(deadline, self.attempt()).await {
                Ok((began, Attempt::Held)) => {
                    renewed = began;
                    fence.renewed(began);
                }
                Ok((_, Attempt::HeldBy(holder))) => {
                    tracing::warn!(lease = %self.name, %holder, "the lease is held by another");
                    return;
                }
                Ok((_, Attempt::Failed(e))) => {
                    tracing::debug!(lease = %self.name, error = %e, "renewing the lease failed")
                }
                Err(_) => return,
            }
        }
    }

    /// [`LeaderElector::try_acquire_or_renew`], and when it began.
    async fn attempt(&mut self) -> (Instant, Attempt) {
        let began = Instant::now();
        (began, self.try_acquire_or_renew().await)
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
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn ago(d: Duration) -> Instant {
        Instant::now().checked_sub(d).expect("the clock runs longer than that")
    }

    #[test]
    fn a_fence_admits_writes_only_within_the_renew_deadline_of_its_term() {
        let deadline = Duration::from_secs(2);
        assert!(Fence::held("a", deadline, Instant::now()).check().is_ok());
        let stale = Fence::held("a", deadline, ago(Duration::from_secs(3)));
        let e = stale.check().expect_err("past the deadline");
        assert!(e.to_string().contains("past the renew deadline"), "{e}");
        stale.renewed(Instant::now());
        assert!(stale.check().is_ok(), "renewed");
        stale.close();
        assert!(stale.check().is_err(), "the term ended");
        stale.renewed(Instant::now());
        assert!(stale.check().is_err(), "an ended term stays closed");
        assert!(Fence::open("a").check().is_ok(), "no election");
    }

    /// Answers every request with `{}`, counting them.
    #[derive(Clone)]
    struct Counting(Arc<AtomicUsize>);

    impl tower_service::Service<Request<Body>> for Counting {
        type Response = Response<Body>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<std::result::Result<Response<Body>, std::convert::Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<Body>) -> Self::Future {
            self.0.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(Response::new(Body::from(b"{}".to_vec()))))
        }
    }

    #[tokio::test]
    async fn a_fenced_client_reads_but_does_not_send_writes_past_the_deadline() {
        let sent = Arc::new(AtomicUsize::new(0));
        let inner = Client::new(Counting(sent.clone()), "default");
        let fence = Fence::held("a", Duration::from_secs(2), Instant::now());
        let client = fenced_client(inner, fence.clone());
        let request = |method: Method| {
            Request::builder()
                .method(method)
                .uri("/api/v1/namespaces/default/configmaps")
                .body(Vec::new())
                .expect("request")
        };
        let _: serde_json::Value = client
            .request(request(Method::POST))
            .await
            .expect("a fresh holding writes");
        assert_eq!(sent.load(Ordering::SeqCst), 1);

        *fence.state() = FenceState::Renewed(ago(Duration::from_secs(3)));
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            let e = client
                .request::<serde_json::Value>(request(method.clone()))
                .await
                .expect_err("a stale holding does not write");
            assert!(
                matches!(&e, kube::Error::Service(inner) if inner.is::<NotLeading>()),
                "{method}: {e}"
            );
        }
        assert_eq!(sent.load(Ordering::SeqCst), 1, "refused writes are never sent");
        let _: serde_json::Value = client.request(request(Method::GET)).await.expect("reads pass");
        assert_eq!(sent.load(Ordering::SeqCst), 2);
    }

    /// Just enough of the Kubernetes API for one Lease (get, create, update at a
    /// resourceVersion), plus any other write, counted and answered `{}`.
    #[derive(Clone, Default)]
    struct FakeApi {
        lease: Arc<Mutex<Option<serde_json::Value>>>,
        writes: Arc<AtomicUsize>,
    }

    fn reply(code: u16, body: &serde_json::Value) -> Response<Body> {
        Response::builder()
            .status(code)
            .body(Body::from(body.to_string().into_bytes()))
            .expect("response")
    }

    fn status(code: u16, reason: &str) -> Response<Body> {
        reply(
            code,
            &serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "reason": reason, "code": code, "message": reason}),
        )
    }

    impl FakeApi {
        fn answer(&self, method: &Method, path: &str, body: &[u8]) -> Response<Body> {
            if !path.starts_with("/apis/coordination.k8s.io/") {
                self.writes.fetch_add(1, Ordering::SeqCst);
                return reply(201, &serde_json::json!({}));
            }
            let mut lease = self.lease.lock().expect("lease");
            let version = |l: &serde_json::Value| l["metadata"]["resourceVersion"].as_str().map(str::to_owned);
            match *method {
                Method::GET => match lease.as_ref() {
                    Some(l) => reply(200, l),
                    None => status(404, "NotFound"),
                },
                Method::POST | Method::PUT => {
                    let mut new: serde_json::Value = serde_json::from_slice(body).expect("a lease");
                    if *method == Method::PUT && lease.as_ref().and_then(version) != version(&new) {
                        return status(409, "Conflict");
                    }
                    let next = lease
                        .as_ref()
                        .and_then(version)
                        .map_or(1, |v| v.parse::<u64>().expect("rv") + 1);
                    new["metadata"]["resourceVersion"] = next.to_string().into();
                    *lease = Some(new.clone());
                    reply(if *method == Method::POST { 201 } else { 200 }, &new)
                }
                _ => status(405, "MethodNotAllowed"),
            }
        }
    }

    impl tower_service::Service<Request<Body>> for FakeApi {
        type Response = Response<Body>;
        type Error = kube::Error;
        type Future = Pin<Box<dyn Future<Output = std::result::Result<Response<Body>, kube::Error>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: Request<Body>) -> Self::Future {
            let api = self.clone();
            Box::pin(async move {
                let (parts, body) = request.into_parts();
                let body = body.collect_bytes().await?;
                Ok(api.answer(&parts.method, parts.uri.path(), &body))
            })
        }
    }

    async fn create_a_config_map(client: &Client) -> std::result::Result<(), String> {
        let request = Request::post("/api/v1/namespaces/default/configmaps")
            .body(Vec::new())
            .expect("request");
        client
            .request::<serde_json::Value>(request)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// Moves the (paused) clock forward by `d` without yielding: to everything on this
    /// runtime, the process was stopped for `d` in the middle of a poll.
    fn stall(d: Duration) {
        let mut advance = std::pin::pin!(tokio::time::advance(d));
        // The first poll moves the clock, then yields once (ignored here).
        let _ = advance
            .as_mut()
            .poll(&mut Context::from_waker(std::task::Waker::noop()));
    }

    /// The case the fence is for: the process stalls (as under SIGSTOP: the elector's
    /// timers cannot run) past the renew deadline, and on resuming, the work runs first
    /// and writes what it had lined up. The write is refused and never reaches the API;
    /// after the elector noticed and won the Lease again, a new term writes. The clock
    /// is tokio's paused one, so a busy machine cannot expire the Lease early.
    #[test]
    fn a_paused_holder_does_not_send_what_it_had_lined_up() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime");
        // (term, outcome of a write) in the order they were made.
        type Outcomes = Arc<Mutex<Vec<(u32, std::result::Result<(), String>)>>>;
        let outcomes: Outcomes = Arc::default();
        let api = FakeApi::default();
        runtime.block_on(async {
            let client = Client::new(api.clone(), "default");
            let timing = LeaseTiming {
                lease_duration: Duration::from_millis(1000),
                renew_deadline: Duration::from_millis(600),
                retry_period: Duration::from_millis(200),
            };
            let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
            let mut elector = LeaderElector::new(leases, "test", "a", timing).expect("elector");
            let mut term = 0;
            let stalled_write = Arc::new(Mutex::new(None));
            let lead = elector.lead(|fence| {
                term += 1;
                let (term, outcomes, client) = (term, outcomes.clone(), fenced_client(client.clone(), fence));
                let stalled_write = stalled_write.clone();
                async move {
                    let outcome = create_a_config_map(&client).await;
                    outcomes.lock().expect("outcomes").push((term, outcome));
                    if term > 1 {
                        return;
                    }
                    // The stall; nothing else in this process runs meanwhile.
                    stall(Duration::from_millis(1200));
                    // What the work had lined up goes out in a task of its own, so that it
                    // is tried whether the work or the elector runs first on resuming.
                    let task = tokio::spawn(async move {
                        let outcome = create_a_config_map(&client).await;
                        outcomes.lock().expect("outcomes").push((term, outcome));
                    });
                    *stalled_write.lock().expect("stalled write") = Some(task);
                    std::future::pending::<()>().await;
                }
            });
            tokio::time::timeout(Duration::from_secs(20), lead)
                .await
                .expect("a second term that ends");
            let task = stalled_write.lock().expect("stalled write").take();
            task.expect("the first term stalled")
                .await
                .expect("the stalled write's task");
        });
        let mut outcomes = outcomes.lock().expect("outcomes").clone();
        assert_eq!(outcomes.len(), 3, "{outcomes:?}");
        assert_eq!(outcomes[0], (1, Ok(())), "a fresh holding writes");
        // The stalled write and the new term's may end in either order.
        outcomes[1..].sort_by_key(|(term, _)| *term);
        assert_eq!(outcomes[1].0, 1);
        let refused = outcomes[1].1.as_ref().expect_err("the stalled holder's write");
        assert!(refused.contains("refused without sending"), "{refused}");
        assert_eq!(outcomes[2], (2, Ok(())), "a new term writes");
        assert_eq!(
            api.writes.load(Ordering::SeqCst),
            2,
            "the refused write never reached the API"
        );
    }

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
