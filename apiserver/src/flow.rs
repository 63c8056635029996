//! Flow control: a bound on the requests the API serves at once, shared fairly between
//! clients, so that one noisy client cannot starve the others.
//!
//! Upstream's API Priority and Fairness in its simplest form, one priority level:
//!
//! - There are [`Limits::seats_max`] seats; a request holds one while it is served.
//! - A client (a *flow*: the authenticated user, or the client's IP address when the
//!   server authenticates no one) holds at most [`Limits::client_seats_max`] of them.
//! - A request that finds no seat for it waits in its client's queue, of at most
//!   [`Limits::client_queue_max`] requests, for at most [`Limits::queue_wait`]. When a
//!   seat frees, the clients with waiting requests are served in turn (round robin),
//!   not in order of arrival, so a client with a long queue delays another by at most
//!   one request.
//! - A request whose queue is full, or whose wait runs out, gets upstream's answer: 429
//!   TooManyRequests with `Retry-After: 1` (client-go waits that long and retries).
//!
//! Exempt, as upstream exempts them: long-running requests (watches, logs, exec, attach,
//! port-forward, proxy), which would hold a seat for hours; the health paths; and the
//! group `system:masters` (upstream's `exempt` priority level).
//!
//! Its refusals and the requests in its queues are reported by [`crate::metrics`]
//! (upstream's `apiserver_flowcontrol_*` names, under one priority level).
//!
//! Left out: priority levels and FlowSchemas (the `flowcontrol.apiserver.k8s.io` API),
//! shuffle sharding (every client has a queue of its own here, bounded with the map of
//! clients: a client's entry goes when it has nothing in flight or queued), and seats
//! by request width (a LIST holds one seat like a GET).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::listen::Peer;
use crate::{auth, rbac};

/// Bounds of the flow control (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub seats_max: usize,
    pub client_seats_max: usize,
    pub client_queue_max: usize,
    pub queue_wait: Duration,
}

/// Upstream's `--max-requests-inflight` and `--max-mutating-requests-inflight` together.
pub const SEATS_MAX_DEFAULT: usize = 600;
/// A sixth of the seats: it takes six clients at their limit to fill the server.
pub const CLIENT_SEATS_MAX_DEFAULT: usize = 100;
/// Upstream's queue length limit.
pub const CLIENT_QUEUE_MAX_DEFAULT: usize = 50;
/// How long a queued request waits for a seat at most.
pub const QUEUE_WAIT_DEFAULT: Duration = Duration::from_secs(15);
/// What the 429 tells the client to wait, in seconds (upstream's).
const RETRY_AFTER_SECONDS: u64 = 1;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            seats_max: SEATS_MAX_DEFAULT,
            client_seats_max: CLIENT_SEATS_MAX_DEFAULT,
            client_queue_max: CLIENT_QUEUE_MAX_DEFAULT,
            queue_wait: QUEUE_WAIT_DEFAULT,
        }
    }
}

/// The seats and the clients' queues.
pub struct FlowControl {
    limits: Limits,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    seats_used: usize,
    flows: HashMap<String, Flow>,
    /// Clients with queued requests, in the order they are next served.
    turns: VecDeque<String>,
}

#[derive(Default)]
struct Flow {
    seats: usize,
    /// Each queued request's wake-up; one whose receiver is gone gave up waiting.
    queue: VecDeque<tokio::sync::oneshot::Sender<()>>,
}

/// Why a request was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    QueueFull,
    WaitedTooLong,
}

/// A request's seat, given back when dropped.
pub struct Seat {
    control: Arc<FlowControl>,
    flow: String,
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.control.release(&self.flow);
    }
}

impl FlowControl {
    pub fn new(limits: Limits) -> Arc<FlowControl> {
        assert!(
            limits.seats_max > 0 && limits.client_seats_max > 0,
            "flow control needs seats"
        );
        Arc::new(FlowControl {
            limits,
            state: Mutex::new(State::default()),
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves counts that are still consistent (every
        // change below is one step): go on with them.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A seat for a request of client `flow`: at once, after a wait in the client's
    /// queue, or refused.
    pub async fn acquire(self: &Arc<Self>, flow: &str) -> Result<Seat, Rejected> {
        let rx = {
            let mut state = self.lock();
            let seats_used = state.seats_used;
            let f = state.flows.entry(flow.to_owned()).or_default();
            f.queue.retain(|waiter| !waiter.is_closed());
            if f.queue.is_empty() && seats_used < self.limits.seats_max && f.seats < self.limits.client_seats_max {
                f.seats += 1;
                state.seats_used += 1;
                return Ok(self.seat(flow));
            }
            if f.queue.len() >= self.limits.client_queue_max {
                if f.seats == 0 && f.queue.is_empty() {
                    state.flows.remove(flow);
                }
                return Err(Rejected::QueueFull);
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            f.queue.push_back(tx);
            if !state.turns.iter().any(|t| t == flow) {
                state.turns.push_back(flow.to_owned());
            }
            rx
        };
        let mut rx = rx;
        match tokio::time::timeout(self.limits.queue_wait, &mut rx).await {
            Ok(Ok(())) => Ok(self.seat(flow)),
            // The sender went without a seat: only when the control is dropped.
            Ok(Err(_)) => Err(Rejected::WaitedTooLong),
            Err(_) => {
                // A seat may have been handed over just as the wait ran out: take it
                // (closing first, so that none can come after the check).
                rx.close();
                if rx.try_recv().is_ok() {
                    return Ok(self.seat(flow));
                }
                self.forget_if_idle(flow);
                Err(Rejected::WaitedTooLong)
            }
        }
    }

    fn seat(self: &Arc<Self>, flow: &str) -> Seat {
        Seat {
            control: self.clone(),
            flow: flow.to_owned(),
        }
    }

    fn forget_if_idle(&self, flow: &str) {
        let mut state = self.lock();
        if let Some(f) = state.flows.get_mut(flow) {
            f.queue.retain(|waiter| !waiter.is_closed());
            if f.seats == 0 && f.queue.is_empty() {
                state.flows.remove(flow);
                state.turns.retain(|t| t != flow);
            }
        }
    }

    /// Gives a seat back and hands free seats to the queued requests, a client at a time.
    fn release(&self, flow: &str) {
        let mut state = self.lock();
        assert!(state.seats_used > 0, "a seat released that was not taken");
        state.seats_used -= 1;
        if let Some(f) = state.flows.get_mut(flow) {
            assert!(f.seats > 0, "a seat released by a client holding none");
            f.seats -= 1;
        }
        self.dispatch(&mut state);
        if state
            .flows
            .get(flow)
            .is_some_and(|f| f.seats == 0 && f.queue.is_empty())
        {
            state.flows.remove(flow);
            state.turns.retain(|t| t != flow);
        }
    }

    fn dispatch(&self, state: &mut State) {
        // Each pass over the clients with queued requests hands out at most one seat to
        // each; it ends when no seat is left or no client can take one.
        let mut passed = 0;
        while state.seats_used < self.limits.seats_max && passed < state.turns.len() {
            let Some(name) = state.turns.pop_front() else { break };
            let Some(f) = state.flows.get_mut(&name) else { continue };
            let mut granted = false;
            if f.seats < self.limits.client_seats_max {
                while let Some(waiter) = f.queue.pop_front() {
                    if waiter.send(()).is_ok() {
                        granted = true;
                        break;
                    }
                }
            }
            if granted {
                f.seats += 1;
                state.seats_used += 1;
                passed = 0;
            } else {
                passed += 1;
            }
            let keep = !f.queue.is_empty();
            let idle = f.seats == 0 && f.queue.is_empty();
            if keep {
                state.turns.push_back(name);
            } else if idle {
                state.flows.remove(&name);
            }
        }
    }

    /// Requests waiting in the queues now (those that gave up not counted).
    pub fn queued(&self) -> usize {
        let state = self.lock();
        state
            .flows
            .values()
            .map(|f| f.queue.iter().filter(|waiter| !waiter.is_closed()).count())
            .sum()
    }

    #[cfg(test)]
    fn seats_used(&self) -> usize {
        self.lock().seats_used
    }

    #[cfg(test)]
    fn clients(&self) -> usize {
        self.lock().flows.len()
    }
}

/// Whether the query's `watch` parameter asks for a watch ([`rbac::watch_param`]).
pub fn query_watch(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .filter_map(|kv| kv.strip_prefix("watch="))
            .any(|v| rbac::watch_param(Some(v)))
    })
}

/// Whether a request may run for long (and so is not counted): upstream's long-running
/// check on the request's attributes: watches, proxy, and the streaming subresources.
pub fn is_long_running(method: &str, path: &str, query: Option<&str>) -> bool {
    let watch = query_watch(query);
    match rbac::request_attributes(method, path, watch) {
        rbac::Attributes::Resource(r) => long_running(&r, watch && method == "GET"),
        rbac::Attributes::NonResource(_) => false,
    }
}

/// [`is_long_running`] on a resource request's attributes. `watch_get`: a GET with the
/// `watch` parameter, which the handlers serve as a watch also of one named object
/// (whose verb is still `get`).
pub fn long_running(r: &rbac::ResourceAttributes, watch_get: bool) -> bool {
    watch_get
        || matches!(r.verb.as_str(), "watch" | "proxy")
        || matches!(
            r.subresource.as_str(),
            "log" | "exec" | "attach" | "portforward" | "proxy"
        )
}

/// The flow a request belongs to: its user, else its client's IP address.
fn flow_of(req: &Request) -> Option<String> {
    if let Some(user) = req.extensions().get::<rbac::UserInfo>() {
        if user.groups.iter().any(|g| g == "system:masters") {
            return None;
        }
        return Some(format!("user:{}", user.name));
    }
    let peer = req.extensions().get::<Peer>().map(|p| p.0.ip().to_string());
    Some(format!("ip:{}", peer.unwrap_or_default()))
}

/// The state of [`filter`]: the seats, and the metrics that count its refusals.
#[derive(Clone)]
pub struct Filter {
    pub control: Arc<FlowControl>,
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// The middleware: a seat for every request but the exempt ones, held until its
/// response is made (a streamed response body is not waited for).
pub async fn filter(axum::extract::State(f): axum::extract::State<Filter>, req: Request, next: Next) -> Response {
    let (method, uri) = (req.method().as_str(), req.uri());
    if auth::is_health_path(uri.path()) || is_long_running(method, uri.path(), uri.query()) {
        return next.run(req).await;
    }
    let Some(flow) = flow_of(&req) else {
        return next.run(req).await;
    };
    match f.control.acquire(&flow).await {
        Ok(seat) => {
            let response = next.run(req).await;
            drop(seat);
            response
        }
        Err(why) => {
            tracing::debug!(flow, ?why, "too many requests");
            if let Some(metrics) = &f.metrics {
                metrics.rejected(&req, why);
            }
            too_many_requests()
        }
    }
}

/// Upstream's 429.
fn too_many_requests() -> Response {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Too many requests, please try again later.",
        "reason": "TooManyRequests",
        "details": {"retryAfterSeconds": RETRY_AFTER_SECONDS},
        "code": 429,
    });
    let mut r = crate::http::json_response(StatusCode::TOO_MANY_REQUESTS, &body);
    r.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_str(&RETRY_AFTER_SECONDS.to_string()).expect("invariant: digits are a header value"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control(seats: usize, client_seats: usize, queue: usize) -> Arc<FlowControl> {
        FlowControl::new(Limits {
            seats_max: seats,
            client_seats_max: client_seats,
            client_queue_max: queue,
            queue_wait: Duration::from_secs(3600),
        })
    }

    #[tokio::test]
    async fn a_client_holds_its_share_at_most_and_others_still_get_seats() {
        let c = control(4, 2, 0);
        let a1 = c.acquire("a").await.expect("a's first seat");
        let a2 = c.acquire("a").await.expect("a's second seat");
        assert_eq!(c.acquire("a").await.err(), Some(Rejected::QueueFull));
        let b1 = c.acquire("b").await.expect("b is not starved by a");
        assert_eq!(c.seats_used(), 3);
        drop((a1, a2, b1));
        assert_eq!(c.seats_used(), 0);
        assert_eq!(c.clients(), 0, "idle clients are forgotten");
    }

    #[tokio::test]
    async fn freed_seats_go_to_the_queued_clients_in_turn() {
        let c = control(1, 1, 10);
        let held = c.acquire("a").await.expect("a seat");
        // a queues three requests, then b one: b is served second, not fourth.
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, flow) in ["a", "a", "a", "b"].into_iter().enumerate() {
            let (control, order) = (c.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let seat = control.acquire(flow).await.expect("queued, then served");
                order.lock().expect("not poisoned").push(format!("{flow}{i}"));
                drop(seat);
            }));
            // Each is queued before the next is spawned.
            let queued = if flow == "a" { i + 1 } else { 1 };
            while c.lock().flows.get(flow).map_or(0, |f| f.queue.len()) < queued {
                tokio::task::yield_now().await;
            }
        }
        drop(held);
        for t in tasks {
            t.await.expect("task");
        }
        let order = order.lock().expect("not poisoned").clone();
        assert_eq!(order.first().map(String::as_str), Some("a0"));
        assert_eq!(order.get(1).map(String::as_str), Some("b3"), "{order:?}");
        assert_eq!(c.seats_used(), 0);
        assert_eq!(c.clients(), 0);
    }

    #[tokio::test]
    async fn a_wait_that_runs_out_is_refused_and_forgotten() {
        let c = FlowControl::new(Limits {
            seats_max: 1,
            client_seats_max: 1,
            client_queue_max: 1,
            queue_wait: Duration::from_millis(1),
        });
        let held = c.acquire("a").await.expect("a seat");
        assert_eq!(c.acquire("b").await.err(), Some(Rejected::WaitedTooLong));
        assert_eq!(c.clients(), 1, "b's entry went with its wait");
        drop(held);
        assert_eq!(c.seats_used(), 0);
        assert_eq!(c.clients(), 0);
    }

    #[tokio::test]
    async fn queued_requests_are_counted_until_served_or_gone() {
        let c = control(1, 1, 10);
        let held = c.acquire("a").await.expect("a seat");
        let waiting = {
            let c = c.clone();
            tokio::spawn(async move { c.acquire("b").await.map(drop) })
        };
        while c.queued() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(c.queued(), 1);
        drop(held);
        waiting.await.expect("task").expect("served");
        assert_eq!(c.queued(), 0);
    }

    #[test]
    fn long_running_requests_are_told_apart() {
        let long = |path: &str, query: Option<&str>| is_long_running("GET", path, query);
        assert!(long("/api/v1/pods", Some("watch=true&resourceVersion=1")));
        assert!(long("/api/v1/watch/pods", None));
        assert!(long("/api/v1/namespaces/default/pods/p/log", Some("follow=true")));
        assert!(is_long_running("POST", "/api/v1/namespaces/default/pods/p/exec", None));
        assert!(long("/api/v1/namespaces/default/services/s/proxy/x", None));
        assert!(!long("/api/v1/pods", Some("watch=false")));
        assert!(!long("/api/v1/namespaces/default/pods/log", None), "a pod named log");
        assert!(!long("/apis/apps/v1/deployments", Some("limit=500")));
        assert!(!long("/version", None));
        assert!(
            long("/api/v1/namespaces/default/pods/p", Some("watch=true")),
            "a watch of one object"
        );
        assert!(!is_long_running(
            "PUT",
            "/api/v1/namespaces/default/pods/p",
            Some("watch=true")
        ));
    }
}
