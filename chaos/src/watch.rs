//! A watch workload and a checker of etcd's watch guarantees.
//!
//! # What runs
//!
//! - [`run_watchers`]: `watchers_per_endpoint` watchers on every endpoint, each with its
//!   own client that talks to that one endpoint only, so a fault on a member shows up in
//!   its watchers and nowhere else. Each watches `prefix` from `start_revision` and records
//!   every event it is sent (revision = the kv's `mod_revision`, key, value, put/delete,
//!   and the index of the `WatchResponse` it came in, so that atomicity can be checked)
//!   and every *session*: one watch stream, from the revision it asked to start at to the
//!   reason it ended. A session that ends on an error, a closed stream, a stall or a
//!   cancel is a disconnect: the watcher waits a backoff (doubling from `backoff_min_ms`
//!   to `backoff_max_ms`, with seeded jitter), opens a new client and resumes at the last
//!   event's revision + 1, as etcd's clients do.
//! - [`run_txn_writer`]: one seeded writer that puts 2 to 4 distinct keys of the prefix in
//!   one transaction (sometimes also deleting another key), so that one revision holds
//!   several events, and records which transactions were acknowledged at which revision.
//! - [`read_event_log`]: the authoritative event log of the prefix, read at the end from a
//!   healthy member with one watch from the first revision to the final one (nothing is
//!   compacted during a run, so the history is all there).
//!
//! Both workloads run until their [`RunControl`] says otherwise: `stop()` ends them at
//! once; `drain(R, deadline)` lets each watcher go on (reconnecting if it must) until it
//! knows it has every event up to revision R — it received an event at R or later, or a
//! progress notification at R or later — or the deadline passes. A drained watcher's
//! record says so (`drained_to`), and the checker then expects it to hold every event of
//! the log up to R. The control also shows live counters ([`RunControl::live`]), so a
//! test waits for conditions ("the killed member's watchers have noticed") instead of
//! sleeping.
//!
//! # Stalls
//!
//! A paused member keeps its sockets: its watch streams neither fail nor deliver. Every
//! session therefore asks for progress every `progress_interval_ms` (etcd's
//! `RequestProgress`, answered by a response without events, once the stream's watchers
//! are synced) and gives up on the stream when nothing at all arrived for
//! `stall_timeout_ms`. A new connection to a paused member hangs too, and times out after
//! `connect_timeout_ms`: these failed attempts are counted, not recorded one by one.
//!
//! # Compaction
//!
//! A watch canceled with `compact_revision` set (the resume revision was compacted) ends
//! the watcher: it cannot go on without a gap. The session records it as
//! [`SessionEnd::Compacted`] and the checker reports it as a violation of reliability.
//!
//! # The checker
//!
//! [`check_watches`] compares each watcher's record with the log, identifying an event by
//! (revision, key) — etcd refuses a transaction that writes one key twice, so that is
//! unique in a valid log — and reports, per watcher, the first violation of each
//! guarantee (see [`Guarantee`] for exactly what each check does). [`check_acknowledged`]
//! checks that every transaction the writer had acknowledged is in the log, whole, at its
//! revision.
//!
//! # Bounds
//!
//! Watchers ([`WATCHERS_MAX`]), events recorded per watcher (`events_max`: a watcher that
//! would pass it stops, recording whole responses only, and says it was truncated),
//! sessions per watcher, backoff, every network wait (connect, progress request, stall),
//! transactions per writer, events read into the final log.
//!
//! Left out: watches with `prev_kv`, filters or `fragment`; several watches sharing one
//! stream; `require_leader` (a partitioned member's watchers are not detected, only
//! paused and dead ones); leases; compaction during the run (the final log is read with
//! a watch, which needs the history); checking events the writer never attempted against
//! the log (the writer's values are unique, so [`check_acknowledged`] would catch a
//! lost or altered acknowledged write, but an invented one is only caught by the
//! watchers' comparison with the log read from a healthy member).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, ConnectOptions, EventType, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchResponse, WatchStream,
};
use tokio::sync::watch as signal;

use crate::{mix64, ChaosError, Result, SplitMix64};

/// Watchers in one run, at most.
pub const WATCHERS_MAX: usize = 256;
/// Events recorded per watcher, at most (the configured `events_max` may be lower).
pub const EVENTS_MAX: usize = 10_000_000;
/// Sessions (watch streams) per watcher, at most.
pub const SESSIONS_MAX: usize = 1_000_000;
/// Longest backoff, connect timeout, stall timeout or progress interval.
pub const WAIT_MAX_MS: u64 = 60_000;
/// Keys a writer spreads its transactions over, at most.
pub const KEYS_MAX: usize = 1024;
/// Transactions per writer, at most.
pub const TXNS_MAX: usize = 10_000_000;
/// Puts per transaction: between these two, inclusive.
const PUTS_MIN: usize = 2;
const PUTS_MAX: usize = 4;
/// Problems listed in a verdict of [`check_acknowledged`] (all are counted).
const PROBLEMS_LISTED_MAX: usize = 20;
/// Deadline for queueing one progress request on a stream.
const PROGRESS_SEND_TIMEOUT_MS: u64 = 1_000;

// ---------------------------------------------------------------------------------------
// Events and records
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Put,
    Delete,
}

/// One event of the prefix: what a watcher was sent, or one entry of the final log.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Event {
    /// The kv's `mod_revision` (for a delete, the revision of the delete).
    pub revision: i64,
    pub key: Vec<u8>,
    /// Empty for a delete.
    pub value: Vec<u8>,
    pub kind: EventKind,
}

impl Event {
    pub fn put(revision: i64, key: &str, value: &str) -> Event {
        Event {
            revision,
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            kind: EventKind::Put,
        }
    }

    pub fn delete(revision: i64, key: &str) -> Event {
        Event {
            revision,
            key: key.as_bytes().to_vec(),
            value: Vec::new(),
            kind: EventKind::Delete,
        }
    }

    fn id(&self) -> (i64, &[u8]) {
        (self.revision, &self.key)
    }

    fn from_etcd(event: &etcd_client::Event) -> Option<Event> {
        let kv = event.kv()?;
        let kind = match event.event_type() {
            EventType::Put => EventKind::Put,
            EventType::Delete => EventKind::Delete,
        };
        Some(Event {
            revision: kv.mod_revision(),
            key: kv.key().to_vec(),
            value: kv.value().to_vec(),
            kind,
        })
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = String::from_utf8_lossy(&self.key);
        match self.kind {
            EventKind::Put => write!(
                f,
                "put {key}={} @{}",
                String::from_utf8_lossy(&self.value),
                self.revision
            ),
            EventKind::Delete => write!(f, "delete {key} @{}", self.revision),
        }
    }
}

/// An event as a watcher received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub event: Event,
    /// Index of the `WatchResponse` it came in, counting every response the watcher got
    /// (created, progress, events) over all its sessions: two events with the same index
    /// came in the same response.
    pub response: u64,
}

/// Why a session (one watch stream) ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// The stream failed or ended (a killed member, a closed connection).
    Error(String),
    /// Nothing arrived for `stall_timeout_ms` although progress was requested.
    Stalled,
    /// The store canceled the watch because the revision it needed was compacted.
    Compacted { compact_revision: i64, reason: String },
    /// The store canceled the watch for another reason.
    Canceled(String),
    /// The run was stopped, or the drain completed.
    Stopped,
    /// The drain's deadline passed first.
    DrainDeadline,
    /// The next response would have taken the watcher past `events_max`.
    Full,
}

impl SessionEnd {
    /// Whether this end is a disconnect the watcher did not ask for.
    pub fn is_disconnect(&self) -> bool {
        matches!(
            self,
            SessionEnd::Error(_) | SessionEnd::Stalled | SessionEnd::Compacted { .. } | SessionEnd::Canceled(_)
        )
    }
}

/// One watch stream of a watcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The start revision the watch asked for.
    pub start_revision: i64,
    /// Index in the watcher's `events` of the first event received in this session (=
    /// the number of events received before it).
    pub first_event: usize,
    /// Nanoseconds from the run's origin ([`RunControl`]'s creation).
    pub started_ns: u64,
    pub ended_ns: u64,
    pub end: SessionEnd,
}

/// Everything one watcher saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatcherHistory {
    pub watcher: usize,
    pub endpoint: String,
    /// The revision the first session asked to start at.
    pub start_revision: i64,
    pub events: Vec<Received>,
    pub sessions: Vec<Session>,
    /// Attempts to open a stream that failed (connection refused, timed out).
    pub connect_failures: u64,
    pub last_connect_error: Option<String>,
    /// Responses received, of every kind.
    pub responses: u64,
    /// Progress notifications received, and the highest revision one of them named.
    pub progress_notifications: u64,
    pub progress_revision: i64,
    /// Events without a kv (ignored; the store should never send one).
    pub malformed_events: u64,
    /// Set when the watcher drained: it holds every event up to this revision.
    pub drained_to: Option<i64>,
    /// The watcher stopped because `events_max` or `sessions_max` was reached: its
    /// record is a prefix of what it would have seen.
    pub truncated: bool,
}

impl WatcherHistory {
    /// An empty record, for building histories by hand (checker tests).
    pub fn new(watcher: usize, endpoint: &str, start_revision: i64) -> WatcherHistory {
        WatcherHistory {
            watcher,
            endpoint: endpoint.to_string(),
            start_revision,
            events: Vec::new(),
            sessions: Vec::new(),
            connect_failures: 0,
            last_connect_error: None,
            responses: 0,
            progress_notifications: 0,
            progress_revision: 0,
            malformed_events: 0,
            drained_to: None,
            truncated: false,
        }
    }

    /// Sessions that ended in a disconnect (error, stall, cancel, compaction).
    pub fn disconnects(&self) -> usize {
        self.sessions.iter().filter(|s| s.end.is_disconnect()).count()
    }

    /// Events received after the last disconnect (all of them when there was none).
    pub fn events_after_last_disconnect(&self) -> usize {
        match self.sessions.iter().rposition(|s| s.end.is_disconnect()) {
            Some(i) => self
                .sessions
                .get(i + 1)
                .map_or(0, |next| self.events.len() - next.first_event),
            None => self.events.len(),
        }
    }

    fn last_revision(&self) -> i64 {
        self.events.last().map_or(0, |r| r.event.revision)
    }
}

/// What every watcher of a run saw, in watcher order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchHistory {
    pub watchers: Vec<WatcherHistory>,
}

impl WatchHistory {
    pub fn of_endpoint<'a>(&'a self, endpoint: &'a str) -> impl Iterator<Item = &'a WatcherHistory> + 'a {
        self.watchers.iter().filter(move |w| w.endpoint == endpoint)
    }
}

// ---------------------------------------------------------------------------------------
// Control: stop, drain, live counters
// ---------------------------------------------------------------------------------------

/// What the workloads of one [`RunControl`] should do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Run,
    /// Stop at once.
    Stop,
    /// Watchers: go on until every event up to `revision` is received, or until
    /// `deadline`. Writers stop.
    Drain {
        revision: i64,
        deadline: Instant,
    },
}

/// Live counters of one watcher.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveWatcher {
    pub endpoint: String,
    pub events: u64,
    pub disconnects: u64,
    /// Revision of the last event received.
    pub last_revision: i64,
    /// A session is open and has received at least one response.
    pub connected: bool,
}

/// A snapshot of a run's live counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveSnapshot {
    /// Watchers in the order they were registered (= watcher index for one run).
    pub watchers: Vec<LiveWatcher>,
    pub acknowledged_txns: u64,
    pub unknown_txns: u64,
    pub last_acknowledged_revision: i64,
}

struct Live {
    origin: Instant,
    watchers: Mutex<Vec<LiveWatcher>>,
    acknowledged_txns: AtomicU64,
    unknown_txns: AtomicU64,
    last_acknowledged_revision: AtomicI64,
}

impl Live {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX - 1)
    }

    fn update(&self, slot: usize, f: impl FnOnce(&mut LiveWatcher)) {
        let mut watchers = self
            .watchers
            .lock()
            .expect("a watcher panicked holding the live counters");
        if let Some(w) = watchers.get_mut(slot) {
            f(w);
        }
    }
}

/// The caller's side of a run: stops or drains the workloads given its [`RunSignal`],
/// and reads their live counters. Dropping it stops them.
pub struct RunControl {
    tx: signal::Sender<Command>,
    live: Arc<Live>,
}

/// The workloads' side of a [`RunControl`].
#[derive(Clone)]
pub struct RunSignal {
    rx: signal::Receiver<Command>,
    live: Arc<Live>,
}

impl RunControl {
    /// A new control, and the signal to hand to the workloads. Times in the records are
    /// nanoseconds from this call.
    pub fn new() -> (RunControl, RunSignal) {
        let (tx, rx) = signal::channel(Command::Run);
        let live = Arc::new(Live {
            origin: Instant::now(),
            watchers: Mutex::new(Vec::new()),
            acknowledged_txns: AtomicU64::new(0),
            unknown_txns: AtomicU64::new(0),
            last_acknowledged_revision: AtomicI64::new(0),
        });
        (RunControl { tx, live: live.clone() }, RunSignal { rx, live })
    }

    pub fn stop(&self) {
        self.tx.send_replace(Command::Stop);
    }

    /// Asks watchers to finish once they hold every event up to `revision`, or after
    /// `deadline_ms`; writers stop.
    pub fn drain(&self, revision: i64, deadline_ms: u64) {
        let deadline = Instant::now() + Duration::from_millis(deadline_ms);
        self.tx.send_replace(Command::Drain { revision, deadline });
    }

    pub fn live(&self) -> LiveSnapshot {
        LiveSnapshot {
            watchers: self
                .live
                .watchers
                .lock()
                .expect("a watcher panicked holding the live counters")
                .clone(),
            acknowledged_txns: self.live.acknowledged_txns.load(Ordering::Relaxed),
            unknown_txns: self.live.unknown_txns.load(Ordering::Relaxed),
            last_acknowledged_revision: self.live.last_acknowledged_revision.load(Ordering::Relaxed),
        }
    }
}

impl RunSignal {
    /// The current command; `Stop` once the control is dropped.
    pub fn command(&self) -> Command {
        if self.rx.has_changed().is_err() {
            Command::Stop
        } else {
            *self.rx.borrow()
        }
    }

    /// Returns when the command may have changed (also when the control is dropped:
    /// callers look at [`RunSignal::command`] again, which then says `Stop`).
    async fn changed(&mut self) {
        let _ = self.rx.changed().await;
    }
}

// ---------------------------------------------------------------------------------------
// Watchers
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// The key prefix watched; must not be empty.
    pub prefix: String,
    pub watchers_per_endpoint: usize,
    /// Revision the watchers start at (>= 1).
    pub start_revision: i64,
    /// Events recorded per watcher, at most ([`EVENTS_MAX`]).
    pub events_max: usize,
    /// Sessions per watcher, at most ([`SESSIONS_MAX`]).
    pub sessions_max: usize,
    /// Deadline to connect and open a watch stream.
    pub connect_timeout_ms: u64,
    /// How often a session asks for progress.
    pub progress_interval_ms: u64,
    /// A session that received nothing for this long is abandoned as stalled; more than
    /// `progress_interval_ms`.
    pub stall_timeout_ms: u64,
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    /// Seeds the backoff jitter.
    pub seed: u64,
}

impl Default for WatchConfig {
    fn default() -> WatchConfig {
        WatchConfig {
            prefix: "/capstan-chaos/watch/".into(),
            watchers_per_endpoint: 1,
            start_revision: 1,
            events_max: 200_000,
            sessions_max: 10_000,
            connect_timeout_ms: 1_000,
            progress_interval_ms: 250,
            stall_timeout_ms: 1_500,
            backoff_min_ms: 50,
            backoff_max_ms: 1_000,
            seed: 1,
        }
    }
}

impl WatchConfig {
    fn validate(&self, endpoints: &[String]) -> Result<()> {
        let bad = |what: String| Err(ChaosError::InvalidConfig(what));
        if endpoints.is_empty() {
            return bad("no endpoint".into());
        }
        let watchers = endpoints.len().saturating_mul(self.watchers_per_endpoint);
        if self.watchers_per_endpoint == 0 || watchers > WATCHERS_MAX {
            return bad(format!(
                "{} watchers per endpoint on {} endpoints: 1..={WATCHERS_MAX} watchers in all",
                self.watchers_per_endpoint,
                endpoints.len()
            ));
        }
        if self.prefix.is_empty() {
            return bad("prefix must not be empty".into());
        }
        if self.start_revision < 1 {
            return bad(format!("start_revision must be >= 1, not {}", self.start_revision));
        }
        if self.events_max == 0 || self.events_max > EVENTS_MAX {
            return bad(format!("events_max must be 1..={EVENTS_MAX}, not {}", self.events_max));
        }
        if self.sessions_max == 0 || self.sessions_max > SESSIONS_MAX {
            return bad(format!(
                "sessions_max must be 1..={SESSIONS_MAX}, not {}",
                self.sessions_max
            ));
        }
        for (name, ms) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("progress_interval_ms", self.progress_interval_ms),
            ("stall_timeout_ms", self.stall_timeout_ms),
            ("backoff_min_ms", self.backoff_min_ms),
            ("backoff_max_ms", self.backoff_max_ms),
        ] {
            if ms == 0 || ms > WAIT_MAX_MS {
                return bad(format!("{name} must be 1..={WAIT_MAX_MS}, not {ms}"));
            }
        }
        if self.stall_timeout_ms <= self.progress_interval_ms {
            return bad(format!(
                "stall_timeout_ms ({}) must exceed progress_interval_ms ({})",
                self.stall_timeout_ms, self.progress_interval_ms
            ));
        }
        if self.backoff_min_ms > self.backoff_max_ms {
            return bad("backoff_min_ms exceeds backoff_max_ms".into());
        }
        Ok(())
    }
}

/// Runs `watchers_per_endpoint` watchers on each endpoint until `signal` stops them (or
/// they drain), and returns what each saw. Watcher `i` watches endpoint
/// `i / watchers_per_endpoint`.
pub async fn run_watchers(endpoints: Vec<String>, config: WatchConfig, signal: RunSignal) -> Result<WatchHistory> {
    config.validate(&endpoints)?;
    let config = Arc::new(config);
    let mut tasks = tokio::task::JoinSet::new();
    for (e, endpoint) in endpoints.iter().enumerate() {
        for k in 0..config.watchers_per_endpoint {
            let index = e * config.watchers_per_endpoint + k;
            let slot = {
                let mut live = signal
                    .live
                    .watchers
                    .lock()
                    .expect("a watcher panicked holding the live counters");
                live.push(LiveWatcher {
                    endpoint: endpoint.clone(),
                    ..LiveWatcher::default()
                });
                live.len() - 1
            };
            let watcher = Watcher {
                index,
                slot,
                endpoint: endpoint.clone(),
                config: config.clone(),
                signal: signal.clone(),
                rng: SplitMix64::new(mix64(config.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))),
                history: WatcherHistory::new(index, endpoint, config.start_revision),
                next_revision: config.start_revision,
            };
            tasks.spawn(watcher.run());
        }
    }
    let mut watchers = Vec::with_capacity(tasks.len());
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(history) => watchers.push(history),
            Err(e) => return Err(ChaosError::Task(e.to_string())),
        }
    }
    watchers.sort_by_key(|w| w.watcher);
    for w in &watchers {
        tracing::info!(
            watcher = w.watcher,
            endpoint = w.endpoint,
            events = w.events.len(),
            sessions = w.sessions.len(),
            disconnects = w.disconnects(),
            connect_failures = w.connect_failures,
            drained_to = ?w.drained_to,
            "watcher done"
        );
    }
    Ok(WatchHistory { watchers })
}

struct Watcher {
    index: usize,
    slot: usize,
    endpoint: String,
    config: Arc<WatchConfig>,
    signal: RunSignal,
    rng: SplitMix64,
    history: WatcherHistory,
    /// Where the next session starts: the last event's revision + 1.
    next_revision: i64,
}

/// How a session or a wait was left.
enum Next {
    /// Reconnect (after the backoff).
    Retry,
    /// The watcher is done.
    Finish,
}

impl Watcher {
    /// Whether every event up to `revision` is known to be received.
    fn caught_up(&self, revision: i64) -> bool {
        self.history.last_revision() >= revision || self.history.progress_revision >= revision
    }

    /// Looks at the command: whether the watcher should finish now (stopped, drained,
    /// or past the drain's deadline). Records `drained_to` when drained.
    fn should_finish(&mut self) -> bool {
        match self.signal.command() {
            Command::Run => false,
            Command::Stop => true,
            Command::Drain { revision, deadline } => {
                if self.caught_up(revision) {
                    self.history.drained_to = Some(revision);
                    true
                } else {
                    Instant::now() >= deadline
                }
            }
        }
    }

    async fn run(mut self) -> WatcherHistory {
        let mut backoff_ms = self.config.backoff_min_ms;
        loop {
            if self.should_finish() {
                break;
            }
            if self.history.sessions.len() >= self.config.sessions_max {
                tracing::warn!(watcher = self.index, "sessions_max reached; the watcher stops");
                self.history.truncated = true;
                break;
            }
            let open = open_watch(
                &self.endpoint,
                &self.config.prefix,
                self.next_revision,
                self.config.connect_timeout_ms,
            );
            let opened = tokio::select! {
                opened = open => Some(opened),
                _ = self.signal.changed() => None,
            };
            match opened {
                None => continue,
                Some(Err(error)) => {
                    tracing::debug!(
                        watcher = self.index,
                        endpoint = self.endpoint,
                        error,
                        "watch did not open"
                    );
                    self.history.connect_failures += 1;
                    self.history.last_connect_error = Some(error);
                }
                Some(Ok((client, stream))) => {
                    let (next, responded) = self.session(client, stream).await;
                    if responded {
                        backoff_ms = self.config.backoff_min_ms;
                    }
                    if let Next::Finish = next {
                        break;
                    }
                }
            }
            // Backoff with jitter in [d/2, d]; a new command cuts it short.
            let jittered = backoff_ms / 2 + self.rng.below(backoff_ms / 2 + 1);
            backoff_ms = (backoff_ms * 2).min(self.config.backoff_max_ms);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(jittered)) => {}
                _ = self.signal.changed() => {}
            }
        }
        self.signal.live.update(self.slot, |w| w.connected = false);
        self.history
    }

    /// Runs one session to its end and records it; returns what to do next and whether
    /// any response arrived.
    async fn session(&mut self, client: Client, mut stream: WatchStream) -> (Next, bool) {
        let started_ns = self.signal.live.now_ns();
        let start_revision = self.next_revision;
        let first_event = self.history.events.len();
        let stall = Duration::from_millis(self.config.stall_timeout_ms);
        let mut ticker = tokio::time::interval(Duration::from_millis(self.config.progress_interval_ms));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await; // The first tick is immediate.
        let mut last_message = Instant::now();
        let mut responded = false;
        if matches!(self.signal.command(), Command::Drain { .. }) {
            // Ask at once: a quiet prefix sends nothing else to catch up on.
            if let Err(e) = request_progress(&mut stream).await {
                return self.end_session(start_revision, first_event, started_ns, SessionEnd::Error(e), false);
            }
        }
        let end = loop {
            let drain_deadline = match self.signal.command() {
                Command::Drain { deadline, .. } => Some(deadline),
                _ => None,
            };
            let far = Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                message = stream.message() => match message {
                    Ok(Some(response)) => {
                        if !responded {
                            responded = true;
                            self.signal.live.update(self.slot, |w| w.connected = true);
                        }
                        last_message = Instant::now();
                        if let Some(end) = self.on_response(response) {
                            break end;
                        }
                        if self.should_finish() {
                            break self.finish_reason();
                        }
                    }
                    Ok(None) => break SessionEnd::Error("the watch stream ended".into()),
                    Err(e) => break SessionEnd::Error(e.to_string()),
                },
                _ = ticker.tick() => {
                    if last_message.elapsed() >= stall {
                        break SessionEnd::Stalled;
                    }
                    if let Err(e) = request_progress(&mut stream).await {
                        break SessionEnd::Error(e);
                    }
                }
                _ = self.signal.changed() => {
                    if self.should_finish() {
                        break self.finish_reason();
                    }
                    if let Err(e) = request_progress(&mut stream).await {
                        break SessionEnd::Error(e);
                    }
                }
                _ = tokio::time::sleep_until(drain_deadline.unwrap_or(far).into()), if drain_deadline.is_some() => {
                    break SessionEnd::DrainDeadline;
                }
            }
        };
        drop(stream);
        drop(client);
        self.end_session(start_revision, first_event, started_ns, end, responded)
    }

    /// Why the watcher finishes, once [`Watcher::should_finish`] said it does.
    fn finish_reason(&self) -> SessionEnd {
        match self.signal.command() {
            Command::Drain { .. } if self.history.drained_to.is_none() => SessionEnd::DrainDeadline,
            _ => SessionEnd::Stopped,
        }
    }

    fn end_session(
        &mut self,
        start_revision: i64,
        first_event: usize,
        started_ns: u64,
        end: SessionEnd,
        responded: bool,
    ) -> (Next, bool) {
        let next = match &end {
            SessionEnd::Error(_) | SessionEnd::Stalled | SessionEnd::Canceled(_) => Next::Retry,
            SessionEnd::Compacted { .. } | SessionEnd::Stopped | SessionEnd::DrainDeadline | SessionEnd::Full => {
                Next::Finish
            }
        };
        if end.is_disconnect() {
            tracing::debug!(
                watcher = self.index,
                endpoint = self.endpoint,
                ?end,
                "watch session lost"
            );
            self.signal.live.update(self.slot, |w| {
                w.disconnects += 1;
                w.connected = false;
            });
        }
        self.history.sessions.push(Session {
            start_revision,
            first_event,
            started_ns,
            ended_ns: self.signal.live.now_ns(),
            end,
        });
        (next, responded)
    }

    /// Records one response; `Some` if it ends the session.
    fn on_response(&mut self, response: WatchResponse) -> Option<SessionEnd> {
        let index = self.history.responses;
        self.history.responses += 1;
        if response.canceled() {
            let reason = response.cancel_reason().to_string();
            return Some(if response.compact_revision() > 0 {
                SessionEnd::Compacted {
                    compact_revision: response.compact_revision(),
                    reason,
                }
            } else {
                SessionEnd::Canceled(reason)
            });
        }
        let events = response.events();
        if events.is_empty() {
            if !response.created() {
                self.history.progress_notifications += 1;
                let revision = response.header().map_or(0, |h| h.revision());
                self.history.progress_revision = self.history.progress_revision.max(revision);
            }
            return None;
        }
        if self.history.events.len() + events.len() > self.config.events_max {
            tracing::warn!(watcher = self.index, "events_max reached; the watcher stops");
            self.history.truncated = true;
            return Some(SessionEnd::Full);
        }
        for event in events {
            match Event::from_etcd(event) {
                Some(event) => self.history.events.push(Received { event, response: index }),
                None => self.history.malformed_events += 1,
            }
        }
        let last = self.history.last_revision();
        self.next_revision = last + 1;
        let count = self.history.events.len() as u64;
        self.signal.live.update(self.slot, |w| {
            w.events = count;
            w.last_revision = last;
        });
        None
    }
}

/// A new client to `endpoint` only, and a watch stream on `prefix` from `start_revision`.
async fn open_watch(
    endpoint: &str,
    prefix: &str,
    start_revision: i64,
    timeout_ms: u64,
) -> std::result::Result<(Client, WatchStream), String> {
    let timeout = Duration::from_millis(timeout_ms);
    let options = ConnectOptions::new().with_connect_timeout(timeout);
    let attempt = async {
        let mut client = Client::connect([endpoint], Some(options)).await?;
        let options = WatchOptions::new().with_prefix().with_start_revision(start_revision);
        let stream = client.watch(prefix, Some(options)).await?;
        Ok::<_, etcd_client::Error>((client, stream))
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(opened)) => Ok(opened),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no watch stream within {timeout_ms} ms")),
    }
}

async fn request_progress(stream: &mut WatchStream) -> std::result::Result<(), String> {
    match tokio::time::timeout(
        Duration::from_millis(PROGRESS_SEND_TIMEOUT_MS),
        stream.request_progress(),
    )
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("progress request: {e}")),
        Err(_) => Err(format!(
            "progress request not queued within {PROGRESS_SEND_TIMEOUT_MS} ms"
        )),
    }
}

/// Reads the prefix's complete event log from `from_revision` to `until_revision`
/// (inclusive) with one watch on `endpoint`: done when an event at or past
/// `until_revision` arrives, or a progress notification at or past it. Events past
/// `until_revision` are left out. Fails if the stream breaks, the revision was
/// compacted, more than `events_max` events come, or `timeout_ms` passes.
pub async fn read_event_log(
    endpoint: &str,
    prefix: &str,
    from_revision: i64,
    until_revision: i64,
    events_max: usize,
    timeout_ms: u64,
) -> Result<Vec<Event>> {
    if prefix.is_empty() || from_revision < 1 || events_max > EVENTS_MAX {
        return Err(ChaosError::InvalidConfig(format!(
            "read_event_log: prefix {prefix:?} (not empty), from_revision {from_revision} (>= 1), events_max {events_max} (<= {EVENTS_MAX})"
        )));
    }
    let timeout = Duration::from_millis(timeout_ms);
    let read = async {
        let options = ConnectOptions::new().with_connect_timeout(timeout);
        let mut client = Client::connect([endpoint], Some(options)).await?;
        let mut stream = client
            .watch(
                prefix,
                Some(WatchOptions::new().with_prefix().with_start_revision(from_revision)),
            )
            .await?;
        let mut log: Vec<Event> = Vec::new();
        let mut ticker = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                message = stream.message() => {
                    let Some(response) = message? else {
                        return Err(ChaosError::Watch(format!("the watch stream of {endpoint} ended")));
                    };
                    if response.canceled() {
                        if response.compact_revision() > 0 {
                            return Err(ChaosError::Compacted {
                                revision: from_revision,
                                compact_revision: response.compact_revision(),
                            });
                        }
                        return Err(ChaosError::Watch(format!(
                            "{endpoint} canceled the watch: {}",
                            response.cancel_reason()
                        )));
                    }
                    let mut done = response.events().is_empty()
                        && !response.created()
                        && response.header().map_or(0, |h| h.revision()) >= until_revision;
                    for event in response.events() {
                        let Some(event) = Event::from_etcd(event) else {
                            return Err(ChaosError::Watch(format!("{endpoint} sent an event without a kv")));
                        };
                        if event.revision >= until_revision {
                            done = true;
                        }
                        if event.revision <= until_revision {
                            if log.len() == events_max {
                                return Err(ChaosError::Watch(format!("more than {events_max} events")));
                            }
                            log.push(event);
                        }
                    }
                    if done {
                        return Ok(log);
                    }
                }
                _ = ticker.tick() => stream.request_progress().await?,
            }
        }
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(result) => result,
        Err(_) => Err(ChaosError::Timeout(format!(
            "reading the event log of {prefix:?} from {endpoint} up to revision {until_revision} took over {timeout_ms} ms"
        ))),
    }
}

// ---------------------------------------------------------------------------------------
// The transaction writer
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct TxnWriterConfig {
    /// Keys are `{prefix}k{i}`; must not be empty.
    pub prefix: String,
    /// Keys written, `PUTS_MAX`..=[`KEYS_MAX`] (at least 4).
    pub keys: usize,
    /// Names this writer in its values (`w{writer}-t{n}-k{i}`), so that several writers'
    /// values stay unique.
    pub writer: usize,
    pub seed: u64,
    /// Transactions, at most ([`TXNS_MAX`]).
    pub txns_max: usize,
    /// Pause between two transactions.
    pub interval_ms: u64,
    /// Deadline of each transaction.
    pub op_timeout_ms: u64,
    /// Share of transactions that also delete a key they do not put, in percent.
    pub delete_percent: u64,
    /// An endpoint that failed is avoided for this long (unless all are avoided).
    pub avoid_ms: u64,
}

impl Default for TxnWriterConfig {
    fn default() -> TxnWriterConfig {
        TxnWriterConfig {
            prefix: "/capstan-chaos/watch/".into(),
            keys: 8,
            writer: 0,
            seed: 1,
            txns_max: 100_000,
            interval_ms: 5,
            op_timeout_ms: 1_000,
            delete_percent: 20,
            avoid_ms: 1_000,
        }
    }
}

impl TxnWriterConfig {
    fn validate(&self, endpoints: &[String]) -> Result<()> {
        let bad = |what: String| Err(ChaosError::InvalidConfig(what));
        if endpoints.is_empty() {
            return bad("no endpoint".into());
        }
        if self.prefix.is_empty() {
            return bad("prefix must not be empty".into());
        }
        if self.keys < PUTS_MAX || self.keys > KEYS_MAX {
            return bad(format!("keys must be {PUTS_MAX}..={KEYS_MAX}, not {}", self.keys));
        }
        if self.txns_max > TXNS_MAX {
            return bad(format!("txns_max must be at most {TXNS_MAX}, not {}", self.txns_max));
        }
        if self.op_timeout_ms == 0 || self.op_timeout_ms > WAIT_MAX_MS {
            return bad(format!("op_timeout_ms must be 1..={WAIT_MAX_MS}"));
        }
        if self.interval_ms > WAIT_MAX_MS || self.avoid_ms > WAIT_MAX_MS {
            return bad(format!("interval_ms and avoid_ms must be at most {WAIT_MAX_MS}"));
        }
        if self.delete_percent > 100 {
            return bad(format!("delete_percent is {}%", self.delete_percent));
        }
        Ok(())
    }
}

/// One write of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    pub key: Vec<u8>,
    /// Empty for a delete.
    pub value: Vec<u8>,
    pub kind: EventKind,
}

/// One transaction the writer sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnRecord {
    /// The n-th transaction of the writer.
    pub n: usize,
    pub endpoint: String,
    /// The revision it was acknowledged at; 0 when the outcome is unknown.
    pub revision: i64,
    /// Acknowledged: the writes that made events (every put; a delete only if it deleted
    /// something). Unknown: every write attempted.
    pub writes: Vec<Write>,
    pub call_ns: u64,
    pub return_ns: u64,
}

/// What a writer did: acknowledged transactions, and those whose outcome is unknown
/// (error or timeout: they may or may not have been applied).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnHistory {
    pub acknowledged: Vec<TxnRecord>,
    pub unknown: Vec<TxnRecord>,
}

/// Runs the transaction writer until `signal` stops or drains it, or `txns_max`
/// transactions were sent. Each transaction goes to an endpoint chosen at random among
/// those that did not fail in the last `avoid_ms`.
pub async fn run_txn_writer(
    endpoints: Vec<String>,
    config: TxnWriterConfig,
    mut signal: RunSignal,
) -> Result<TxnHistory> {
    config.validate(&endpoints)?;
    let timeout = Duration::from_millis(config.op_timeout_ms);
    let connect = |endpoint: &str| {
        let options = ConnectOptions::new()
            .with_timeout(timeout)
            .with_connect_timeout(timeout);
        let endpoint = endpoint.to_string();
        async move { Client::connect([endpoint], Some(options)).await }
    };
    let mut clients: Vec<Option<Client>> = vec![None; endpoints.len()];
    let mut avoid_until: Vec<Option<Instant>> = vec![None; endpoints.len()];
    let mut rng = SplitMix64::new(mix64(
        config.seed ^ (config.writer as u64).wrapping_mul(0xD1B5_4A32_D192_ED03),
    ));
    let mut history = TxnHistory::default();
    let key = |k: usize| format!("{}k{k}", config.prefix).into_bytes();
    for n in 0..config.txns_max {
        if signal.command() != Command::Run {
            break;
        }
        // The writes: 2..=4 distinct keys put, sometimes one more deleted.
        let mut order: Vec<usize> = (0..config.keys).collect();
        let puts = PUTS_MIN + rng.below((PUTS_MAX - PUTS_MIN + 1) as u64) as usize;
        let deletes = usize::from(config.keys > puts && rng.percent(config.delete_percent));
        for i in 0..puts + deletes {
            let j = i + rng.below((config.keys - i) as u64) as usize;
            order.swap(i, j);
        }
        let writes: Vec<Write> = order[..puts + deletes]
            .iter()
            .enumerate()
            .map(|(i, &k)| {
                if i < puts {
                    Write {
                        key: key(k),
                        value: format!("w{}-t{n}-k{k}", config.writer).into_bytes(),
                        kind: EventKind::Put,
                    }
                } else {
                    Write {
                        key: key(k),
                        value: Vec::new(),
                        kind: EventKind::Delete,
                    }
                }
            })
            .collect();
        let ops: Vec<TxnOp> = writes
            .iter()
            .map(|w| match w.kind {
                EventKind::Put => TxnOp::put(w.key.clone(), w.value.clone(), None),
                EventKind::Delete => TxnOp::delete(w.key.clone(), None),
            })
            .collect();

        let now = Instant::now();
        let healthy: Vec<usize> = (0..endpoints.len())
            .filter(|&e| avoid_until[e].is_none_or(|t| t <= now))
            .collect();
        let e = if healthy.is_empty() {
            rng.below(endpoints.len() as u64) as usize
        } else {
            healthy[rng.below(healthy.len() as u64) as usize]
        };
        let call_ns = signal.live.now_ns();
        let attempt = async {
            if clients[e].is_none() {
                clients[e] = Some(connect(&endpoints[e]).await?);
            }
            let client = clients[e].as_mut().expect("connected just above");
            client.txn(Txn::new().and_then(ops)).await
        };
        let result = match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(response)) => match response.header().map(|h| h.revision()) {
                Some(revision) if revision > 0 => Ok((revision, response.op_responses())),
                _ => Err("a response without a revision".to_string()),
            },
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_string()),
        };
        let return_ns = signal.live.now_ns();
        match result {
            Ok((revision, responses)) => {
                let made_events: Vec<Write> = writes
                    .into_iter()
                    .zip(responses.iter().map(Some).chain(std::iter::repeat(None)))
                    .filter(|(w, r)| match (w.kind, r) {
                        (EventKind::Put, _) => true,
                        (EventKind::Delete, Some(TxnOpResponse::Delete(d))) => d.deleted() > 0,
                        (EventKind::Delete, _) => false,
                    })
                    .map(|(w, _)| w)
                    .collect();
                history.acknowledged.push(TxnRecord {
                    n,
                    endpoint: endpoints[e].clone(),
                    revision,
                    writes: made_events,
                    call_ns,
                    return_ns,
                });
                signal.live.acknowledged_txns.fetch_add(1, Ordering::Relaxed);
                signal
                    .live
                    .last_acknowledged_revision
                    .fetch_max(revision, Ordering::Relaxed);
            }
            Err(error) => {
                tracing::debug!(endpoint = endpoints[e], n, error, "transaction failed; outcome unknown");
                history.unknown.push(TxnRecord {
                    n,
                    endpoint: endpoints[e].clone(),
                    revision: 0,
                    writes,
                    call_ns,
                    return_ns,
                });
                signal.live.unknown_txns.fetch_add(1, Ordering::Relaxed);
                // A fresh connection next time: the old one may be to a dead process.
                clients[e] = None;
                avoid_until[e] = Some(Instant::now() + Duration::from_millis(config.avoid_ms));
            }
        }
        if config.interval_ms > 0 {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(config.interval_ms)) => {}
                _ = signal.changed() => {}
            }
        }
    }
    tracing::info!(
        acknowledged = history.acknowledged.len(),
        unknown = history.unknown.len(),
        "transaction writer done"
    );
    Ok(history)
}

// ---------------------------------------------------------------------------------------
// The checker
// ---------------------------------------------------------------------------------------

/// etcd's watch guarantees, as checked here against the final log. An event is
/// identified by (revision, key); its *log position* is its index in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Guarantee {
    /// Every received event is in the log: an event with its revision and key exists,
    /// with the same kind and value. Catches invented and altered events.
    Valid,
    /// Revisions never go backwards from one received event to the next, and two
    /// events of one revision come in the log's order (a repeat of the same event is
    /// left to `Unique`).
    Ordered,
    /// No (revision, key) is received twice.
    Unique,
    /// All received events of one revision came in one response, and that response
    /// held every event the log has at that revision.
    Atomic,
    /// No gap: every log event from the watcher's start revision up to its end is
    /// received, the end being its last received event's revision, or the revision it
    /// drained to if that is later (not when truncated). A watch canceled because its
    /// revision was compacted is reported here too.
    Reliable,
    /// Every session asked to start exactly after the last event received before it
    /// (the first at the watcher's start revision), and the first event it delivered
    /// is the log's first event at or after that revision.
    Resumable,
}

impl Guarantee {
    pub const ALL: [Guarantee; 6] = [
        Guarantee::Valid,
        Guarantee::Ordered,
        Guarantee::Unique,
        Guarantee::Atomic,
        Guarantee::Reliable,
        Guarantee::Resumable,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Guarantee::Valid => "valid",
            Guarantee::Ordered => "ordered",
            Guarantee::Unique => "unique",
            Guarantee::Atomic => "atomic",
            Guarantee::Reliable => "reliable",
            Guarantee::Resumable => "resumable",
        }
    }
}

/// The first violation of one guarantee by one watcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub guarantee: Guarantee,
    pub watcher: usize,
    pub endpoint: String,
    /// The revision where it shows.
    pub revision: i64,
    /// The received event where it shows (index in the watcher's events), if one.
    pub event_index: Option<usize>,
    /// The session where it shows, if one.
    pub session: Option<usize>,
    pub expected: String,
    pub got: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "watcher {} ({}): {} violated at revision {}",
            self.watcher,
            self.endpoint,
            self.guarantee.name(),
            self.revision
        )?;
        if let Some(i) = self.event_index {
            write!(f, ", received event #{i}")?;
        }
        if let Some(s) = self.session {
            write!(f, ", session {s}")?;
        }
        write!(f, ": expected {}; got {}", self.expected, self.got)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatcherVerdict {
    pub watcher: usize,
    pub endpoint: String,
    pub events: usize,
    pub sessions: usize,
    pub disconnects: usize,
    pub drained_to: Option<i64>,
    pub truncated: bool,
    /// At most one per guarantee, in [`Guarantee::ALL`]'s order.
    pub violations: Vec<Violation>,
}

impl WatcherVerdict {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn violation(&self, guarantee: Guarantee) -> Option<&Violation> {
        self.violations.iter().find(|v| v.guarantee == guarantee)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchVerdict {
    /// The final log itself is not a valid log (revisions going backwards, an event
    /// twice); the watchers were not checked.
    pub log_problem: Option<String>,
    pub watchers: Vec<WatcherVerdict>,
}

impl WatchVerdict {
    pub fn ok(&self) -> bool {
        self.log_problem.is_none() && self.watchers.iter().all(WatcherVerdict::ok)
    }

    pub fn violations(&self) -> impl Iterator<Item = &Violation> {
        self.watchers.iter().flat_map(|w| w.violations.iter())
    }

    /// Whether some watcher violated `guarantee`.
    pub fn violated(&self, guarantee: Guarantee) -> bool {
        self.violations().any(|v| v.guarantee == guarantee)
    }
}

impl fmt::Display for WatchVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(problem) = &self.log_problem {
            return writeln!(f, "the final log is invalid: {problem}");
        }
        for w in &self.watchers {
            let drained = w
                .drained_to
                .map_or("not drained".to_string(), |r| format!("drained to {r}"));
            write!(
                f,
                "watcher {} ({}): {} events, {} sessions, {} disconnects, {drained}{}:",
                w.watcher,
                w.endpoint,
                w.events,
                w.sessions,
                w.disconnects,
                if w.truncated { ", truncated" } else { "" }
            )?;
            for g in Guarantee::ALL {
                let state = if w.violation(g).is_some() { "VIOLATED" } else { "ok" };
                write!(f, " {} {state};", g.name())?;
            }
            writeln!(f)?;
            for v in &w.violations {
                writeln!(f, "  {v}")?;
            }
        }
        Ok(())
    }
}

/// The final log with its index.
struct Log<'a> {
    events: &'a [Event],
    position: HashMap<(i64, &'a [u8]), usize>,
}

impl<'a> Log<'a> {
    fn new(events: &'a [Event]) -> std::result::Result<Log<'a>, String> {
        let mut position = HashMap::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            if e.revision < 1 {
                return Err(format!("log event #{i} ({e}) has revision {}", e.revision));
            }
            if i > 0 && e.revision < events[i - 1].revision {
                return Err(format!("log event #{i} ({e}) comes after {}", events[i - 1]));
            }
            if let Some(j) = position.insert(e.id(), i) {
                return Err(format!("log events #{j} and #{i} are both {e}"));
            }
        }
        Ok(Log { events, position })
    }

    /// Index of the first event at or after `revision`.
    fn first_from(&self, revision: i64) -> usize {
        self.events.partition_point(|e| e.revision < revision)
    }

    /// The events at `revision`.
    fn at(&self, revision: i64) -> &'a [Event] {
        let start = self.first_from(revision);
        let end = self.events.partition_point(|e| e.revision <= revision);
        &self.events[start..end]
    }

    fn describe_at(&self, revision: i64) -> String {
        let events = self.at(revision);
        if events.is_empty() {
            format!("nothing at revision {revision} in the log")
        } else {
            let listed: Vec<String> = events.iter().map(ToString::to_string).collect();
            format!("the log's [{}]", listed.join(", "))
        }
    }
}

/// Checks every watcher's record against `final_events`, the complete log of the prefix
/// (ordered by revision, then by position within the revision).
pub fn check_watches(final_events: &[Event], watchers: &[WatcherHistory]) -> WatchVerdict {
    let log = match Log::new(final_events) {
        Ok(log) => log,
        Err(problem) => {
            return WatchVerdict {
                log_problem: Some(problem),
                watchers: Vec::new(),
            }
        }
    };
    WatchVerdict {
        log_problem: None,
        watchers: watchers.iter().map(|w| check_watcher(&log, w)).collect(),
    }
}

fn check_watcher(log: &Log<'_>, w: &WatcherHistory) -> WatcherVerdict {
    let violation = |guarantee, revision, event_index, session, expected: String, got: String| Violation {
        guarantee,
        watcher: w.watcher,
        endpoint: w.endpoint.clone(),
        revision,
        event_index,
        session,
        expected,
        got,
    };
    let events = &w.events;
    let positions: Vec<Option<usize>> = events
        .iter()
        .map(|r| log.position.get(&r.event.id()).copied())
        .collect();
    let mut violations = Vec::new();

    // Valid: in the log, unaltered.
    let valid = events.iter().enumerate().find_map(|(i, r)| match positions[i] {
        None => Some(violation(
            Guarantee::Valid,
            r.event.revision,
            Some(i),
            None,
            log.describe_at(r.event.revision),
            format!("{} (response {}), which the log does not have", r.event, r.response),
        )),
        Some(p) if log.events[p] != r.event => Some(violation(
            Guarantee::Valid,
            r.event.revision,
            Some(i),
            None,
            log.events[p].to_string(),
            format!("{} (response {})", r.event, r.response),
        )),
        Some(_) => None,
    });
    violations.extend(valid);

    // Ordered: revisions never go back; the log's order within a revision.
    let ordered = (1..events.len()).find_map(|i| {
        let (before, now) = (&events[i - 1].event, &events[i].event);
        if now.revision < before.revision {
            return Some(violation(
                Guarantee::Ordered,
                now.revision,
                Some(i),
                None,
                format!("a revision >= {} after {before}", before.revision),
                now.to_string(),
            ));
        }
        match (positions[i - 1], positions[i]) {
            (Some(a), Some(b)) if now.revision == before.revision && b < a => Some(violation(
                Guarantee::Ordered,
                now.revision,
                Some(i),
                None,
                format!(
                    "the log's order within revision {}: {}",
                    now.revision,
                    log.describe_at(now.revision)
                ),
                format!("{now} after {before}"),
            )),
            _ => None,
        }
    });
    violations.extend(ordered);

    // Unique: no (revision, key) twice.
    let mut seen: HashMap<(i64, &[u8]), usize> = HashMap::with_capacity(events.len());
    let unique = events.iter().enumerate().find_map(|(i, r)| {
        seen.insert(r.event.id(), i).map(|first| {
            violation(
                Guarantee::Unique,
                r.event.revision,
                Some(i),
                None,
                format!(
                    "{} once (received as event #{first}, response {})",
                    r.event, events[first].response
                ),
                format!("it again in response {}", r.response),
            )
        })
    });
    violations.extend(unique);

    // Atomic: one response per revision, holding the whole revision.
    let mut response_of: HashMap<i64, (u64, usize)> = HashMap::new();
    let mut atomic = events.iter().enumerate().find_map(|(i, r)| {
        let (response, first) = *response_of.entry(r.event.revision).or_insert((r.response, i));
        (response != r.response).then(|| {
            violation(
                Guarantee::Atomic,
                r.event.revision,
                Some(i),
                None,
                format!(
                    "every event of revision {} in one response (the first, #{first}, came in response {response})",
                    r.event.revision
                ),
                format!("{} in response {}", r.event, r.response),
            )
        })
    });
    if atomic.is_none() {
        let mut keys_of: HashMap<i64, HashSet<&[u8]>> = HashMap::new();
        for r in events {
            keys_of.entry(r.event.revision).or_default().insert(&r.event.key);
        }
        let mut done: HashSet<i64> = HashSet::new();
        atomic = events.iter().enumerate().find_map(|(i, r)| {
            let revision = r.event.revision;
            if !done.insert(revision) {
                return None;
            }
            let in_log = log.at(revision);
            let got = &keys_of[&revision];
            let missing: Vec<String> = in_log
                .iter()
                .filter(|e| !got.contains(e.key.as_slice()))
                .map(ToString::to_string)
                .collect();
            (!missing.is_empty()).then(|| {
                violation(
                    Guarantee::Atomic,
                    revision,
                    Some(i),
                    None,
                    format!(
                        "all {} events of revision {revision} in response {}",
                        in_log.len(),
                        r.response
                    ),
                    format!("{} of them; missing {}", got.len(), missing.join(", ")),
                )
            })
        });
    }
    violations.extend(atomic);

    // Reliable: no gap from the start to the end.
    let received: HashSet<(i64, &[u8])> = events.iter().map(|r| r.event.id()).collect();
    let mut end = w.last_revision();
    if !w.truncated {
        end = end.max(w.drained_to.unwrap_or(0));
    }
    let from = log.first_from(w.start_revision);
    let to = log.first_from(end.saturating_add(1));
    let gap = log.events[from..to.max(from)]
        .iter()
        .find(|e| !received.contains(&e.id()))
        .map(|missing| {
            let before = events.iter().rposition(|r| r.event.revision < missing.revision);
            let after = events.iter().position(|r| r.event.revision > missing.revision);
            let around = match (before, after) {
                (Some(b), Some(a)) => format!(
                    "nothing: the watcher went from {} (event #{b}) to {} (event #{a})",
                    events[b].event, events[a].event
                ),
                (None, Some(a)) => format!(
                    "nothing: its first event at or after the start revision {} was {} (event #{a})",
                    w.start_revision, events[a].event
                ),
                (Some(b), None) => format!(
                    "nothing after {} (event #{b}), though it {}",
                    events[b].event,
                    w.drained_to
                        .map_or("was not drained".to_string(), |d| format!("drained to revision {d}"))
                ),
                (None, None) => format!("no event at all, though it drained to revision {end}"),
            };
            violation(
                Guarantee::Reliable,
                missing.revision,
                None,
                None,
                missing.to_string(),
                around,
            )
        });
    let compacted = || {
        w.sessions
            .iter()
            .enumerate()
            .find_map(|(s, session)| match &session.end {
                SessionEnd::Compacted {
                    compact_revision,
                    reason,
                } => Some(violation(
                    Guarantee::Reliable,
                    session.start_revision,
                    None,
                    Some(s),
                    format!("events from revision {}", session.start_revision),
                    format!("the watch canceled as compacted (compact revision {compact_revision}: {reason})"),
                )),
                _ => None,
            })
    };
    violations.extend(gap.or_else(compacted));

    // Resumable: each session starts right after the last event before it, and its
    // first event is the log's next one.
    let resumable = w.sessions.iter().enumerate().find_map(|(s, session)| {
        let f = session.first_event.min(events.len());
        let before = f.checked_sub(1).map(|b| &events[b].event);
        let expected_start = before.map_or(w.start_revision, |e| e.revision + 1);
        let after = before.map_or("the watcher's start".to_string(), |e| {
            format!("the last event before it, {e}")
        });
        if session.start_revision != expected_start {
            return Some(violation(
                Guarantee::Resumable,
                session.start_revision,
                None,
                Some(s),
                format!("a start at revision {expected_start}, after {after}"),
                format!("a start at revision {}", session.start_revision),
            ));
        }
        let next_first = w
            .sessions
            .get(s + 1)
            .map_or(events.len(), |n| n.first_event.min(events.len()));
        if f >= next_first {
            return None; // No event in this session.
        }
        let got = &events[f].event;
        let expected = log.events.get(log.first_from(expected_start));
        match expected {
            Some(e) if e.id() == got.id() => None,
            _ => Some(violation(
                Guarantee::Resumable,
                got.revision,
                Some(f),
                Some(s),
                format!(
                    "the log's first event from revision {expected_start} ({}), after {after}",
                    expected.map_or("none".to_string(), ToString::to_string)
                ),
                format!("{got} first"),
            )),
        }
    });
    violations.extend(resumable);

    violations.sort_by_key(|v| v.guarantee);
    WatcherVerdict {
        watcher: w.watcher,
        endpoint: w.endpoint.clone(),
        events: events.len(),
        sessions: w.sessions.len(),
        disconnects: w.disconnects(),
        drained_to: w.drained_to,
        truncated: w.truncated,
        violations,
    }
}

/// Whether acknowledged writes survived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckVerdict {
    pub txns_checked: usize,
    pub writes_checked: usize,
    /// Problems found (each names the transaction); all are counted, the first
    /// [`PROBLEMS_LISTED_MAX`] listed.
    pub problem_count: usize,
    pub problems: Vec<String>,
}

impl AckVerdict {
    pub fn ok(&self) -> bool {
        self.problem_count == 0
    }
}

/// Checks that every acknowledged transaction is in the log, whole, at the revision it
/// was acknowledged at: each of its writes is an event there with the same key, kind and
/// value ("no acknowledged write lost"), the revision holds no other event (it was one
/// transaction), and no two acknowledged transactions share a revision.
pub fn check_acknowledged(final_events: &[Event], acknowledged: &[TxnRecord]) -> AckVerdict {
    let mut verdict = AckVerdict {
        txns_checked: 0,
        writes_checked: 0,
        problem_count: 0,
        problems: Vec::new(),
    };
    let mut problem = |text: String| {
        if verdict.problems.len() < PROBLEMS_LISTED_MAX {
            verdict.problems.push(text);
        }
        verdict.problem_count += 1;
    };
    let log = match Log::new(final_events) {
        Ok(log) => log,
        Err(p) => {
            problem(format!("the final log is invalid: {p}"));
            return verdict;
        }
    };
    let mut by_revision: HashMap<i64, usize> = HashMap::new();
    for txn in acknowledged {
        verdict.txns_checked += 1;
        if let Some(other) = by_revision.insert(txn.revision, txn.n) {
            problem(format!(
                "transactions {other} and {} were both acknowledged at revision {}",
                txn.n, txn.revision
            ));
        }
        for write in &txn.writes {
            verdict.writes_checked += 1;
            let wanted = Event {
                revision: txn.revision,
                key: write.key.clone(),
                value: write.value.clone(),
                kind: write.kind,
            };
            let found = log.position.get(&wanted.id()).map(|&p| &log.events[p]);
            if found != Some(&wanted) {
                problem(format!(
                    "acknowledged write lost: transaction {} ({}) wrote {wanted}; the log has {}",
                    txn.n,
                    txn.endpoint,
                    found.map_or_else(|| log.describe_at(txn.revision), ToString::to_string)
                ));
            }
        }
        let at = log.at(txn.revision);
        if at.len() > txn.writes.len() {
            problem(format!(
                "revision {} holds {} events but transaction {} made {}: {}",
                txn.revision,
                at.len(),
                txn.n,
                txn.writes.len(),
                log.describe_at(txn.revision)
            ));
        }
    }
    verdict
}
