//! Listeners and forwarding to backends: the part of the node proxy that moves bytes.
//!
//! The proxy makes each Service reachable on this machine: ClusterIPs are in
//! 127.64.0.0/16 and pod IPs in 127.128.0.0/9, all of which Linux treats as local, so any
//! of them can be bound without configuring an interface. The part that watches Services
//! and EndpointSlices computes a table of [`Rule`]s (a listen address and protocol, its
//! backends, its ClientIP affinity) and hands the whole table to [`Forwarder::apply`]
//! whenever it changes; this module makes the listeners match it.
//!
//! # Design
//!
//! - **One task per listener.** A TCP rule's task accepts and spawns a task per
//!   connection, which connects to a backend and copies both ways with
//!   [`tokio::io::copy_bidirectional`]; its buffers are bounded, so a client that reads
//!   slowly holds up only its own connection. A UDP rule's task receives every datagram
//!   and hands it to the client's session: a socket connected to the chosen backend, with
//!   a task of its own that sends the backend's answers back from the listen address.
//! - **Changes apply at once and leave established connections alone.** A rule's backend
//!   list (with its affinity setting) is an immutable table behind an `Arc`, swapped
//!   whole under a lock held only for the swap. A new connection takes the current table
//!   as it is accepted, so it sees a change as soon as `apply` returns; a connection
//!   already copying bytes holds no reference to the table and is not disturbed by it.
//!   UDP sessions are the exception by nature: there is no connection to keep, so a
//!   session whose backend was removed ends at its next datagram either way; a datagram
//!   from the client then starts a session to a current backend.
//! - **A removed listener frees its port when `apply` returns**, not when its task next
//!   runs: the socket sits in a slot that `apply` empties (closing it) before it aborts
//!   the task. TCP listeners set `SO_REUSEADDR`, so the port can be bound again while
//!   connections accepted through the old listener are still open. A removed UDP rule's
//!   sessions end with it: their answers would have to leave from the closed socket.
//! - **Bounds.** Each rule admits at most [`Limits::tcp_connections_per_rule_max`] TCP
//!   connections and [`Limits::udp_sessions_per_rule_max`] UDP sessions, and its ClientIP
//!   affinity table holds at most [`Limits::affinity_clients_per_rule_max`] clients.
//!   Every connection costs two sockets and two copy buffers, and every session a socket
//!   (with two descriptors, see `connect_udp`) and a task, so without a bound one busy or
//!   hostile client of one Service could use up the process's file descriptors and memory
//!   and so take down every other Service on the node. Beyond the bound, a connection is
//!   accepted and closed at once and a datagram from a new client is dropped; both are
//!   counted in [`RuleStats`].
//! - **Backend choice.** Round-robin over the current backends. With ClientIP affinity a
//!   client IP goes back to the backend it last used, if that backend is still listed and
//!   was used within the timeout. A TCP connection that cannot reach its backend within
//!   [`Limits::connect_timeout`] tries the next one, each backend at most once; when none
//!   answers, the client's connection is closed. UDP has no handshake to fail, so a
//!   session takes the first choice; a backend that answers with "port unreachable" ends
//!   the session and the client's next datagram picks again.
//! - **No backends**: a TCP connection is accepted and closed at once (kube-proxy rejects
//!   it; a closed connection is what a client can observe here) and a datagram is dropped.
//!
//! - **Metrics** (with [`Forwarder::with_metrics`]): rules given with their Service port
//!   ([`Forwarder::apply_labelled`]) are counted per Service port in
//!   [`crate::metrics::ProxyMetrics`]: connections and sessions, active ones, bytes each
//!   way (counted as they are copied, not when a connection ends), and the errors
//!   [`RuleStats`] counts. A rule's series handles live in its [`Table`], so a new
//!   connection records with one atomic add and no lookup; the series of a Service port
//!   no longer in the table are removed at the end of `apply`.
//!
//! # Left out, deliberately
//!
//! - No iptables, nftables or IPVS: everything goes through this process's sockets, so it
//!   needs no privileges and only works for addresses this machine owns (127.0.0.0/8).
//! - No source IP preservation: the backend sees the proxy's address as its peer.
//! - No SCTP; no `externalTrafficPolicy`/`internalTrafficPolicy`, topology hints or
//!   weights: the table already says which backends to use.
//! - No per-connection idle timeout for TCP: a connection lasts until either side closes,
//!   as it would through kube-proxy's iptables rules.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::runtime::Handle;
use tokio::task::{AbortHandle, JoinError, JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::metrics::{ProxyMetrics, Running, ServiceSeries};
use crate::AgentError;

/// The transport a rule listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        })
    }
}

/// One listener and where its traffic goes. Rules are keyed by `(listen, protocol)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The address to listen on (a ClusterIP and port); port 0 is refused.
    pub listen: SocketAddr,
    pub protocol: Protocol,
    /// The backends (pod IP and target port); empty makes the Service refuse traffic.
    /// An address listed twice counts once.
    pub backends: Vec<SocketAddr>,
    /// ClientIP session affinity with its timeout: a client IP keeps its backend while
    /// that backend is listed and the client used it less than this long ago.
    pub session_affinity: Option<Duration>,
}

/// Bounds and timeouts, the same for every rule of a [`Forwarder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Concurrent TCP connections per rule; beyond it a connection is accepted and closed.
    pub tcp_connections_per_rule_max: usize,
    /// Concurrent UDP sessions (client addresses) per rule; beyond it datagrams from new
    /// clients are dropped.
    pub udp_sessions_per_rule_max: usize,
    /// A UDP session with no datagram either way for this long ends.
    pub udp_session_idle: Duration,
    /// How long one attempt to connect to a TCP backend may take before the next is tried.
    pub connect_timeout: Duration,
    /// Client IPs remembered per rule for ClientIP affinity; when full, expired entries
    /// go first, then the least recently used.
    pub affinity_clients_per_rule_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            tcp_connections_per_rule_max: 10_000,
            udp_sessions_per_rule_max: 10_000,
            udp_session_idle: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(1),
            affinity_clients_per_rule_max: 10_000,
        }
    }
}

/// What one rule has done since its listener was bound.
///
/// `accepted`, `refused_no_backend` and `dropped_over_limit` are disjoint: a TCP
/// connection or a datagram from a new UDP client is counted in exactly one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleStats {
    pub listen: SocketAddr,
    pub protocol: Protocol,
    /// TCP connections open through this listener, or live UDP sessions.
    pub active: usize,
    /// TCP connections admitted for forwarding, or UDP sessions started.
    pub accepted: u64,
    /// TCP connections closed, or datagrams dropped, because the rule had no backend.
    pub refused_no_backend: u64,
    /// TCP connections closed, or datagrams from new clients dropped, over the bound.
    pub dropped_over_limit: u64,
    /// Attempts to reach a backend that failed (TCP: refused or timed out; UDP: the
    /// session's socket could not be set up).
    pub connect_failures: u64,
}

/// The listeners, kept equal to the last table given to [`Forwarder::apply`].
///
/// Dropping it closes every listener at once; TCP connections already established keep
/// going until either side closes them.
pub struct Forwarder {
    runtime: Handle,
    limits: Limits,
    listeners: Mutex<HashMap<(SocketAddr, Protocol), Listener>>,
    metrics: Option<ProxyMetrics>,
    /// The Service ports that have series in `metrics`.
    exported: Mutex<HashSet<String>>,
}

impl Forwarder {
    /// A forwarder with no listeners. Its tasks run on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn new(limits: Limits) -> Forwarder {
        Forwarder {
            runtime: Handle::current(),
            limits,
            listeners: Mutex::new(HashMap::new()),
            metrics: None,
            exported: Mutex::new(HashSet::new()),
        }
    }

    /// Records the traffic of the rules given to [`Forwarder::apply_labelled`] in `metrics`.
    pub fn with_metrics(mut self, metrics: ProxyMetrics) -> Forwarder {
        self.metrics = Some(metrics);
        self
    }

    /// [`Forwarder::apply`] with each rule's Service port (`namespace/name:port`), under
    /// which its traffic is counted (with metrics); several rules may share one.
    pub fn apply_labelled(&self, rules: Vec<(Rule, String)>) -> Vec<(SocketAddr, Protocol, AgentError)> {
        self.apply_inner(rules.into_iter().map(|(r, s)| (r, Some(s))).collect())
    }

    /// Makes the listeners equal to `rules`: binds new ones, closes removed ones (their
    /// ports are free when this returns) and swaps the backends of the others, which new
    /// connections use at once.
    ///
    /// Returns the rules that could not be applied, with why: a listener that cannot be
    /// bound, port 0, or a key listed more than once (whose current listener, if any, is
    /// left as it was: which of the entries was meant cannot be known). Every other rule
    /// is applied. Only quick system calls are made (bind, listen, close); nothing waits
    /// on the network.
    pub fn apply(&self, rules: Vec<Rule>) -> Vec<(SocketAddr, Protocol, AgentError)> {
        self.apply_inner(rules.into_iter().map(|r| (r, None)).collect())
    }

    fn apply_inner(&self, rules: Vec<(Rule, Option<String>)>) -> Vec<(SocketAddr, Protocol, AgentError)> {
        let mut errors = Vec::new();
        let mut desired: HashMap<(SocketAddr, Protocol), (Rule, Option<String>)> = HashMap::with_capacity(rules.len());
        let mut duplicated: HashSet<(SocketAddr, Protocol)> = HashSet::new();
        for (rule, service) in rules {
            let key = (rule.listen, rule.protocol);
            if duplicated.contains(&key) {
                continue;
            }
            if desired.remove(&key).is_some() {
                duplicated.insert(key);
                let message = format!(
                    "{} {} is listed more than once; its listener is left as it was",
                    key.1, key.0
                );
                errors.push((key.0, key.1, AgentError::Config(message)));
                continue;
            }
            if rule.listen.port() == 0 {
                // Port 0 would bind some free port, which no client could know.
                let message = format!("{} {}: the listen port must not be 0", key.1, key.0);
                errors.push((key.0, key.1, AgentError::Config(message)));
                continue;
            }
            desired.insert(key, (rule, service));
        }

        let mut listeners = lock(&self.listeners);
        // Close before binding: a new rule may need an address a removed one holds (say
        // 0.0.0.0:80 replaced by 127.64.0.1:80). Dropping a Listener closes its socket.
        listeners.retain(|key, _| {
            let keep = desired.contains_key(key) || duplicated.contains(key);
            if !keep {
                info!(listen = %key.0, protocol = %key.1, "closing listener");
            }
            keep
        });
        // The Service ports with series after this apply: the desired rules' (their series
        // are made below, bound or not) and those of listeners left as they were.
        let mut exported: HashSet<String> = HashSet::new();
        if self.metrics.is_some() {
            for key in &duplicated {
                if let Some(service) = listeners.get(key).and_then(|l| l.rule.table().service.clone()) {
                    exported.insert(service);
                }
            }
        }
        for (key, (rule, service)) in desired {
            let series = match (&self.metrics, &service) {
                (Some(m), Some(s)) => {
                    exported.insert(s.clone());
                    // A listener that stays with its Service keeps its handles: a table
                    // change costs no lookups for the rules it leaves alone.
                    let kept = listeners
                        .get(&key)
                        .map(|l| l.rule.table())
                        .and_then(|t| (t.service.as_ref() == Some(s)).then(|| t.series.clone()).flatten());
                    Some(kept.unwrap_or_else(|| m.series(s)))
                }
                _ => None,
            };
            let table = Arc::new(Table::new(rule.backends, rule.session_affinity, service, series));
            if let Some(listener) = listeners.get(&key) {
                listener.rule.swap(table);
                continue;
            }
            match Listener::start(&self.runtime, key.0, key.1, table, self.limits) {
                Ok(listener) => {
                    info!(listen = %key.0, protocol = %key.1, "listening");
                    listeners.insert(key, listener);
                }
                Err(error) => {
                    warn!(listen = %key.0, protocol = %key.1, %error, "cannot listen");
                    errors.push((key.0, key.1, error));
                }
            }
        }
        drop(listeners);
        if let Some(m) = &self.metrics {
            let mut previous = lock(&self.exported);
            for gone in previous.difference(&exported) {
                m.remove(gone);
            }
            *previous = exported;
        }
        errors.sort_by_key(|(listen, protocol, _)| (*listen, *protocol));
        errors
    }

    /// Every listener's counters, ordered by listen address and protocol.
    pub fn stats(&self) -> Vec<RuleStats> {
        let mut stats: Vec<RuleStats> = lock(&self.listeners).values().map(|l| l.rule.stats()).collect();
        stats.sort_by_key(|s| (s.listen, s.protocol));
        stats
    }
}

/// The backlog of each TCP listener: connections the kernel completes before the accept
/// task takes them. A burst of connects larger than this waits for SYN retransmission.
const TCP_LISTEN_BACKLOG: u32 = 1024;

/// How long the accept loop pauses after an error that is not about one connection (out
/// of file descriptors, above all), which would otherwise repeat at once in a tight loop.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Room for the largest UDP payload (65,507 bytes over IPv4, 65,527 over IPv6): a
/// smaller buffer would truncate datagrams.
const UDP_DATAGRAM_MAX_BYTES: usize = 65_536;

/// A socket that `apply` can close from outside the task using it: the task polls it
/// through the lock (held only for one poll), `apply` takes it out and drops it.
type Slot<T> = Mutex<Option<T>>;

/// A bound listener: its socket, its task, and what connections share with it.
struct Listener {
    rule: Arc<RuleState>,
    socket: ListenSocket,
    task: JoinHandle<()>,
}

enum ListenSocket {
    Tcp(Arc<Slot<TcpListener>>),
    Udp(Arc<Slot<UdpSocket>>),
}

impl Listener {
    fn start(
        runtime: &Handle,
        listen: SocketAddr,
        protocol: Protocol,
        table: Arc<Table>,
        limits: Limits,
    ) -> Result<Listener, AgentError> {
        // Registering a socket with tokio's reactor needs the runtime's context; apply may
        // be called from a thread outside it.
        let _context = runtime.enter();
        let rule = Arc::new(RuleState::new(
            listen,
            protocol,
            table,
            limits.affinity_clients_per_rule_max,
        ));
        let (socket, task) = match protocol {
            Protocol::Tcp => {
                let listener = bind_tcp(listen).map_err(|e| AgentError::Io(format!("listening on TCP {listen}"), e))?;
                let slot = Arc::new(Mutex::new(Some(listener)));
                let task = runtime.spawn(serve_tcp(slot.clone(), rule.clone(), limits));
                (ListenSocket::Tcp(slot), task)
            }
            Protocol::Udp => {
                let socket = bind_udp(listen).map_err(|e| AgentError::Io(format!("binding UDP {listen}"), e))?;
                let slot = Arc::new(Mutex::new(Some(socket)));
                let task = runtime.spawn(UdpRule::new(slot.clone(), rule.clone(), limits).serve());
                (ListenSocket::Udp(slot), task)
            }
        };
        Ok(Listener { rule, socket, task })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Close the socket here rather than leave it to the task: an aborted task is only
        // dropped when the runtime next gets to it, and the port must be free when apply
        // returns. Aborting the UDP task also ends its sessions (they live in its JoinSet).
        match &self.socket {
            ListenSocket::Tcp(slot) => drop(lock(slot).take()),
            ListenSocket::Udp(slot) => drop(lock(slot).take()),
        }
        self.task.abort();
    }
}

fn bind_tcp(listen: SocketAddr) -> io::Result<TcpListener> {
    let socket = if listen.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Connections accepted through an earlier listener on this port may still be open
    // (they outlive its removal); without SO_REUSEADDR they would keep the port from being
    // bound again.
    socket.set_reuseaddr(true)?;
    // Every node's proxy serves every ClusterIP. Nodes that share one machine (`capstan
    // up --nodes 2`, hollow nodes) would otherwise fight over the address; with
    // SO_REUSEPORT they share it, the kernel spreads new connections over them, and the
    // others go on serving when one proxy dies.
    socket.set_reuseport(true)?;
    socket.bind(listen)?;
    socket.listen(TCP_LISTEN_BACKLOG)
}

fn bind_udp(listen: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol as IpProtocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(listen), Type::DGRAM, Some(IpProtocol::UDP))?;
    // As for TCP (see bind_tcp): a client's datagrams keep going to one of the proxies
    // sharing the address, chosen by the kernel from its address and port.
    socket.set_reuse_port(true)?;
    socket.bind(&listen.into())?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// A rule's backends as of one `apply`; replaced whole, never changed.
struct Table {
    /// In the order given, without repeats.
    backends: Vec<SocketAddr>,
    members: HashSet<SocketAddr>,
    session_affinity: Option<Duration>,
    /// The Service port the rule serves, if it was given one.
    service: Option<String>,
    /// Its series, with metrics.
    series: Option<ServiceSeries>,
}

impl Table {
    fn new(
        backends: Vec<SocketAddr>,
        session_affinity: Option<Duration>,
        service: Option<String>,
        series: Option<ServiceSeries>,
    ) -> Table {
        let mut members = HashSet::with_capacity(backends.len());
        let backends: Vec<SocketAddr> = backends.into_iter().filter(|b| members.insert(*b)).collect();
        Table {
            backends,
            members,
            session_affinity,
            service,
            series,
        }
    }

    /// Records in the series, if any.
    fn record(&self, what: impl FnOnce(&ServiceSeries)) {
        if let Some(series) = &self.series {
            what(series);
        }
    }
}

/// What a rule's listener task, its connections and `apply` share.
struct RuleState {
    listen: SocketAddr,
    protocol: Protocol,
    table: RwLock<Arc<Table>>,
    /// Where the next round-robin pick starts.
    next_backend: AtomicUsize,
    affinity: Mutex<HashMap<IpAddr, Pinned>>,
    affinity_clients_max: usize,
    active: AtomicUsize,
    accepted: AtomicU64,
    refused_no_backend: AtomicU64,
    dropped_over_limit: AtomicU64,
    connect_failures: AtomicU64,
}

/// A client IP's backend under ClientIP affinity, and when the client last got it.
struct Pinned {
    backend: SocketAddr,
    used: Instant,
}

impl RuleState {
    fn new(listen: SocketAddr, protocol: Protocol, table: Arc<Table>, affinity_clients_max: usize) -> RuleState {
        RuleState {
            listen,
            protocol,
            table: RwLock::new(table),
            next_backend: AtomicUsize::new(0),
            affinity: Mutex::new(HashMap::new()),
            affinity_clients_max,
            active: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            refused_no_backend: AtomicU64::new(0),
            dropped_over_limit: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
        }
    }

    fn table(&self) -> Arc<Table> {
        self.table.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn swap(&self, table: Arc<Table>) {
        *self.table.write().unwrap_or_else(PoisonError::into_inner) = table;
    }

    /// The backends to try for a new connection from `client`, in order: the pinned one
    /// first under ClientIP affinity, then the others round-robin.
    fn candidates(&self, table: &Table, client: IpAddr, now: Instant) -> Vec<SocketAddr> {
        let count = table.backends.len();
        if count == 0 {
            return Vec::new();
        }
        let start = self.next_backend.fetch_add(1, Ordering::Relaxed) % count;
        let mut order: Vec<SocketAddr> = table.backends[start..]
            .iter()
            .chain(&table.backends[..start])
            .copied()
            .collect();
        if let Some(timeout) = table.session_affinity {
            let pinned = lock(&self.affinity)
                .get(&client)
                .filter(|p| table.members.contains(&p.backend) && now.duration_since(p.used) < timeout)
                .map(|p| p.backend);
            if let Some(position) = pinned.and_then(|b| order.iter().position(|c| *c == b)) {
                order[..=position].rotate_right(1);
            }
        }
        order
    }

    /// Records that `client` got `backend`, for ClientIP affinity.
    fn remember(&self, table: &Table, client: IpAddr, backend: SocketAddr, now: Instant) {
        let Some(timeout) = table.session_affinity else {
            return;
        };
        if self.affinity_clients_max == 0 {
            return;
        }
        let mut pinned = lock(&self.affinity);
        if !pinned.contains_key(&client) && pinned.len() >= self.affinity_clients_max {
            // Full: this scan is O(entries), paid only by new clients while the table is
            // full, which a bound of thousands keeps to microseconds.
            pinned.retain(|_, p| now.duration_since(p.used) < timeout);
            if pinned.len() >= self.affinity_clients_max {
                let oldest = pinned.iter().min_by_key(|(_, p)| p.used).map(|(ip, _)| *ip);
                if let Some(oldest) = oldest {
                    pinned.remove(&oldest);
                }
            }
        }
        pinned.insert(client, Pinned { backend, used: now });
    }

    fn stats(&self) -> RuleStats {
        RuleStats {
            listen: self.listen,
            protocol: self.protocol,
            active: self.active.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
            refused_no_backend: self.refused_no_backend.load(Ordering::Relaxed),
            dropped_over_limit: self.dropped_over_limit.load(Ordering::Relaxed),
            connect_failures: self.connect_failures.load(Ordering::Relaxed),
        }
    }
}

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Counts one TCP connection as active for as long as it lives (in its Service's series
/// too, with metrics).
struct ActiveConnection {
    rule: Arc<RuleState>,
    _counted: Option<Running>,
}

impl ActiveConnection {
    fn new(rule: Arc<RuleState>, table: &Table) -> ActiveConnection {
        rule.active.fetch_add(1, Ordering::Relaxed);
        ActiveConnection {
            rule,
            _counted: table.series.as_ref().map(ServiceSeries::active),
        }
    }
}

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        self.rule.active.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve_tcp(socket: Arc<Slot<TcpListener>>, rule: Arc<RuleState>, limits: Limits) {
    loop {
        let accepted = poll_fn(|cx| match lock(&socket).as_ref() {
            Some(listener) => listener.poll_accept(cx).map(Some),
            None => Poll::Ready(None),
        })
        .await;
        let (client, peer) = match accepted {
            None => return,
            Some(Ok(accepted)) => accepted,
            Some(Err(error)) => {
                pause_after_accept_error(&rule, error).await;
                continue;
            }
        };
        // The table as of this moment: a connection accepted after apply returned uses
        // the new backends.
        let table = rule.table();
        if table.backends.is_empty() {
            count(&rule.refused_no_backend);
            table.record(|s| {
                s.no_backend.inc();
            });
            debug!(listen = %rule.listen, %peer, "no backend: closing the connection");
            continue;
        }
        // Only this task adds connections, so the count cannot rise between the check and
        // the increment.
        if rule.active.load(Ordering::Relaxed) >= limits.tcp_connections_per_rule_max {
            count(&rule.dropped_over_limit);
            table.record(|s| {
                s.over_limit.inc();
            });
            debug!(listen = %rule.listen, %peer, "connection bound reached: closing the connection");
            continue;
        }
        count(&rule.accepted);
        table.record(|s| {
            s.connections.inc();
        });
        let active = ActiveConnection::new(rule.clone(), &table);
        tokio::spawn(forward_tcp(client, peer, table, active, limits.connect_timeout));
    }
}

async fn pause_after_accept_error(rule: &RuleState, error: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted};
    // A connection reset before it was taken says nothing about the listener.
    if matches!(error.kind(), ConnectionAborted | ConnectionReset | Interrupted) {
        debug!(listen = %rule.listen, %error, "accept");
        return;
    }
    warn!(listen = %rule.listen, %error, "accept failed; pausing this listener");
    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
}

/// Connects `client` to a backend and copies both ways until both directions end.
/// `active` keeps it counted until then.
async fn forward_tcp(
    client: TcpStream,
    peer: SocketAddr,
    table: Arc<Table>,
    active: ActiveConnection,
    connect_timeout: Duration,
) {
    let rule = &active.rule;
    let mut connected = None;
    for backend in rule.candidates(&table, peer.ip(), Instant::now()) {
        match tokio::time::timeout(connect_timeout, TcpStream::connect(backend)).await {
            Ok(Ok(upstream)) => {
                connected = Some((upstream, backend));
                break;
            }
            Ok(Err(error)) => {
                count(&rule.connect_failures);
                table.record(|s| {
                    s.connect_failures.inc();
                });
                debug!(listen = %rule.listen, %backend, %error, "backend refused; trying the next");
            }
            Err(_elapsed) => {
                count(&rule.connect_failures);
                table.record(|s| {
                    s.connect_failures.inc();
                });
                debug!(listen = %rule.listen, %backend, ?connect_timeout, "backend did not answer; trying the next");
            }
        }
    }
    let Some((mut upstream, backend)) = connected else {
        debug!(listen = %rule.listen, %peer, "no backend could be reached: closing the connection");
        return;
    };
    rule.remember(&table, peer.ip(), backend, Instant::now());
    // Each side already decided when to send; Nagle's algorithm here would add a second
    // delay on top of theirs for every small write.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let mut client = Counted {
        stream: client,
        series: table.series.clone(),
    };
    // copy_bidirectional passes a half-close on (EOF one way shuts down writing the
    // other way) and returns once both directions have ended or either fails; both
    // sockets are closed as they are dropped here.
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((sent, received)) => debug!(listen = %rule.listen, %peer, %backend, sent, received, "connection closed"),
        Err(error) => debug!(listen = %rule.listen, %peer, %backend, %error, "connection ended"),
    }
}

/// A client's connection, counting the bytes read from it (received) and written to it
/// (sent) in its Service's series as they go, so that a long connection shows its
/// traffic before it ends and one that fails is counted too.
struct Counted {
    stream: TcpStream,
    series: Option<ServiceSeries>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.stream).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(series)) = (&polled, &self.series) {
            series.received.inc_by((buf.filled().len() - before) as u64);
        }
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.stream).poll_write(cx, buf);
        if let (Poll::Ready(Ok(n)), Some(series)) = (&polled, &self.series) {
            series.sent.inc_by(*n as u64);
        }
        polled
    }

    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A UDP rule's listener task: its sessions live in (and die with) this task.
struct UdpRule {
    socket: Arc<Slot<UdpSocket>>,
    rule: Arc<RuleState>,
    limits: Limits,
    sessions: HashMap<SocketAddr, Session>,
    /// Each task returns its client and session number when it ends by itself.
    tasks: JoinSet<(SocketAddr, u64)>,
    next_session: u64,
    /// The origin of the sessions' activity times, kept as milliseconds in atomics.
    epoch: Instant,
}

/// One client address's traffic to its backend.
struct Session {
    number: u64,
    backend: SocketAddr,
    /// The listener task sends the client's datagrams with this one (see [`connect_udp`]);
    /// the session's task receives the answers on its tokio twin.
    upstream: std::net::UdpSocket,
    activity: Arc<Activity>,
    task: AbortHandle,
    /// Counts the session as active while it is held (metrics on).
    _active: Option<Running>,
}

/// When a session last carried a datagram either way, shared by the listener task
/// (client to backend) and the session's task (backend to client).
struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new(epoch: Instant) -> Activity {
        let activity = Activity {
            epoch,
            last_ms: AtomicU64::new(0),
        };
        activity.touch();
        activity
    }

    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

impl UdpRule {
    fn new(socket: Arc<Slot<UdpSocket>>, rule: Arc<RuleState>, limits: Limits) -> UdpRule {
        UdpRule {
            socket,
            rule,
            limits,
            sessions: HashMap::new(),
            tasks: JoinSet::new(),
            next_session: 0,
            epoch: Instant::now(),
        }
    }

    async fn serve(mut self) {
        let mut buffer = vec![0u8; UDP_DATAGRAM_MAX_BYTES];
        loop {
            tokio::select! {
                received = recv_from(&self.socket, &mut buffer) => match received {
                    None => return,
                    Some(Ok((length, client))) => self.on_datagram(client, &buffer[..length]),
                    Some(Err(error)) => {
                        // Not expected on an unconnected socket; pause so that an error
                        // that repeats cannot spin.
                        warn!(listen = %self.rule.listen, %error, "UDP receive failed; pausing this listener");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                },
                Some(ended) = self.tasks.join_next(), if !self.tasks.is_empty() => self.on_session_end(ended),
            }
        }
    }

    fn on_datagram(&mut self, client: SocketAddr, datagram: &[u8]) {
        let table = self.rule.table();
        if let Some(session) = self.sessions.get(&client) {
            let backend = session.backend;
            if session.task.is_finished() {
                // Ended (idle, or its backend is unreachable) but not yet taken in by this
                // task: its socket has no reader, so the answer would be lost.
                debug!(listen = %self.rule.listen, %client, %backend, "UDP session over: starting another");
            } else if !table.members.contains(&backend) {
                debug!(listen = %self.rule.listen, %client, %backend, "backend removed: ending the session");
            } else {
                session.activity.touch();
                match session.upstream.send(datagram) {
                    Ok(n) => {
                        table.record(|s| {
                            s.received.inc_by(n as u64);
                        });
                        return;
                    }
                    // "Port unreachable" came back for an earlier datagram: nothing
                    // listens there any more.
                    Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
                        debug!(listen = %self.rule.listen, %client, %backend, "backend refused: ending the session");
                    }
                    Err(error) => {
                        // Dropped, as UDP may (the socket's buffer is full).
                        debug!(listen = %self.rule.listen, %client, %backend, %error, "datagram to backend dropped");
                        return;
                    }
                }
            }
            // This datagram starts a session to a current backend.
            self.end_session(client);
        }
        if table.backends.is_empty() {
            count(&self.rule.refused_no_backend);
            table.record(|s| {
                s.no_backend.inc();
            });
            return;
        }
        if self.sessions.len() >= self.limits.udp_sessions_per_rule_max {
            count(&self.rule.dropped_over_limit);
            table.record(|s| {
                s.over_limit.inc();
            });
            return;
        }
        let now = Instant::now();
        for backend in self.rule.candidates(&table, client.ip(), now) {
            match connect_udp(backend) {
                Ok((upstream, answers)) => {
                    self.rule.remember(&table, client.ip(), backend, now);
                    self.start_session(client, backend, upstream, answers, datagram, &table);
                    return;
                }
                Err(error) => {
                    count(&self.rule.connect_failures);
                    table.record(|s| {
                        s.connect_failures.inc();
                    });
                    debug!(listen = %self.rule.listen, %backend, %error, "cannot open a UDP socket to the backend");
                }
            }
        }
    }

    fn start_session(
        &mut self,
        client: SocketAddr,
        backend: SocketAddr,
        upstream: std::net::UdpSocket,
        answers: UdpSocket,
        datagram: &[u8],
        table: &Table,
    ) {
        match upstream.send(datagram) {
            Ok(n) => table.record(|s| {
                s.received.inc_by(n as u64);
            }),
            // Dropped, as UDP may; the session stays for the client's next datagram.
            Err(error) => {
                debug!(listen = %self.rule.listen, %client, %backend, %error, "first datagram to backend dropped")
            }
        }
        self.next_session += 1;
        let number = self.next_session;
        let activity = Arc::new(Activity::new(self.epoch));
        let task = self.tasks.spawn(run_session(SessionTask {
            client,
            number,
            backend,
            answers,
            listen_socket: self.socket.clone(),
            rule: self.rule.clone(),
            activity: activity.clone(),
            idle: self.limits.udp_session_idle,
            series: table.series.clone(),
        }));
        self.sessions.insert(
            client,
            Session {
                number,
                backend,
                upstream,
                activity,
                task,
                _active: table.series.as_ref().map(ServiceSeries::active),
            },
        );
        count(&self.rule.accepted);
        table.record(|s| {
            s.connections.inc();
        });
        self.rule.active.store(self.sessions.len(), Ordering::Relaxed);
        debug!(listen = %self.rule.listen, %client, %backend, "UDP session started");
    }

    fn end_session(&mut self, client: SocketAddr) {
        if let Some(session) = self.sessions.remove(&client) {
            session.task.abort();
        }
        self.rule.active.store(self.sessions.len(), Ordering::Relaxed);
    }

    fn on_session_end(&mut self, ended: Result<(SocketAddr, u64), JoinError>) {
        match ended {
            Ok((client, number)) => {
                // The client may have a newer session already (this one was ended and
                // replaced): only remove the one that ended.
                if self.sessions.get(&client).is_some_and(|s| s.number == number) {
                    self.sessions.remove(&client);
                }
            }
            // Aborted by end_session, which removed it already.
            Err(error) if error.is_cancelled() => {}
            Err(error) => {
                warn!(listen = %self.rule.listen, %error, "UDP session task failed");
                self.sessions.retain(|_, s| !s.task.is_finished());
            }
        }
        self.rule.active.store(self.sessions.len(), Ordering::Relaxed);
    }
}

/// Receives one datagram from the listen socket; `None` once it has been closed.
async fn recv_from(socket: &Slot<UdpSocket>, buffer: &mut [u8]) -> Option<io::Result<(usize, SocketAddr)>> {
    let mut buffer = ReadBuf::new(buffer);
    let received = poll_fn(|cx| match lock(socket).as_ref() {
        Some(socket) => socket.poll_recv_from(cx, &mut buffer).map(Some),
        None => Poll::Ready(None),
    })
    .await;
    received.map(|r| r.map(|from| (buffer.filled().len(), from)))
}

/// Sends one datagram from the listen address (the client expects answers from there).
async fn send_to(socket: &Slot<UdpSocket>, datagram: &[u8], to: SocketAddr) -> io::Result<usize> {
    poll_fn(|cx| match lock(socket).as_ref() {
        Some(socket) => socket.poll_send_to(cx, datagram, to),
        None => Poll::Ready(Err(io::Error::new(
            io::ErrorKind::NotConnected,
            "the listener was closed",
        ))),
    })
    .await
}

/// A socket of its own for one session, connected to `backend`: the backend's answers
/// arrive on it, so they are told apart from other clients' without any lookup.
///
/// Two descriptors for that one socket: the plain one to send the client's datagrams,
/// and a tokio one to wait for answers. tokio's `try_send` reports a socket writable only
/// once its reactor has seen it so, which for a new socket is after the listener task
/// yields: it would drop the first datagrams of every session. A non-blocking send on the
/// plain descriptor asks the kernel directly. The price is a second descriptor per session.
fn connect_udp(backend: SocketAddr) -> io::Result<(std::net::UdpSocket, UdpSocket)> {
    let local: SocketAddr = match backend {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = std::net::UdpSocket::bind(local)?;
    socket.connect(backend)?;
    // Non-blocking is a property of the socket, so the duplicate shares it.
    socket.set_nonblocking(true)?;
    let answers = UdpSocket::from_std(socket.try_clone()?)?;
    Ok((socket, answers))
}

struct SessionTask {
    client: SocketAddr,
    number: u64,
    backend: SocketAddr,
    answers: UdpSocket,
    listen_socket: Arc<Slot<UdpSocket>>,
    rule: Arc<RuleState>,
    activity: Arc<Activity>,
    idle: Duration,
    series: Option<ServiceSeries>,
}

/// Forwards the backend's answers to the client until the session has been idle for
/// `idle`, its backend is removed, or the backend is unreachable.
async fn run_session(session: SessionTask) -> (SocketAddr, u64) {
    loop {
        let idle_at = session.activity.last() + session.idle;
        tokio::select! {
            ready = session.answers.readable() => {
                if let Err(error) = ready {
                    debug!(client = %session.client, backend = %session.backend, %error, "UDP session ended");
                    break;
                }
                if !forward_answers(&session).await {
                    break;
                }
            }
            () = tokio::time::sleep_until(idle_at) => {
                // The client may have sent something meanwhile, moving the deadline.
                if Instant::now() >= session.activity.last() + session.idle {
                    debug!(client = %session.client, backend = %session.backend, "UDP session idle: ended");
                    break;
                }
            }
        }
    }
    (session.client, session.number)
}

/// Forwards the answers waiting on the session's socket; false when the session should end.
async fn forward_answers(session: &SessionTask) -> bool {
    // A buffer only while there is something to read: 64 KiB held by each of 10,000
    // idle sessions would be 640 MiB.
    let mut buffer = Vec::with_capacity(UDP_DATAGRAM_MAX_BYTES);
    loop {
        buffer.clear();
        match session.answers.try_recv_buf(&mut buffer) {
            Ok(_) => {
                if !session.rule.table().members.contains(&session.backend) {
                    debug!(client = %session.client, backend = %session.backend, "backend removed: ending the session");
                    return false;
                }
                session.activity.touch();
                match send_to(&session.listen_socket, &buffer, session.client).await {
                    Ok(n) => {
                        if let Some(series) = &session.series {
                            series.sent.inc_by(n as u64);
                        }
                    }
                    Err(error) if error.kind() == io::ErrorKind::NotConnected => return false,
                    // Dropped, as UDP may.
                    Err(error) => debug!(client = %session.client, %error, "answer to client dropped"),
                }
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return true,
            Err(error) => {
                // Above all "connection refused": the backend's port is closed.
                debug!(client = %session.client, backend = %session.backend, %error, "UDP session ended");
                return false;
            }
        }
    }
}

/// Locks a mutex, ignoring poisoning: no critical section here leaves its data half
/// changed (each is a lookup, an insert or removal, or one poll), so a panic elsewhere
/// must not take every listener down with it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    /// How long any awaited condition may take before the test fails.
    const DEADLINE: Duration = Duration::from_secs(10);

    /// A TCP backend on 127.0.0.1 answering each line with "<name> <line>".
    async fn tcp_backend(name: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a TCP backend");
        let addr = listener.local_addr().expect("backend address");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        if write.write_all(format!("{name} {line}\n").as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    /// A UDP backend on 127.0.0.1 answering each datagram with "<name> <datagram>".
    async fn udp_backend(name: &'static str) -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind a UDP backend");
        let addr = socket.local_addr().expect("backend address");
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 2048];
            while let Ok((length, from)) = socket.recv_from(&mut buffer).await {
                let answer = format!("{name} {}", String::from_utf8_lossy(&buffer[..length]));
                let _ = socket.send_to(answer.as_bytes(), from).await;
            }
        });
        addr
    }

    /// A free port on 127.64.0.`host`, as a ClusterIP would be (the kernel picks the port
    /// on a throwaway socket, which is closed again).
    fn free_listen(host: u8, protocol: Protocol) -> SocketAddr {
        let addr = SocketAddr::from(([127, 64, 0, host], 0));
        match protocol {
            Protocol::Tcp => std::net::TcpListener::bind(addr).and_then(|l| l.local_addr()),
            Protocol::Udp => std::net::UdpSocket::bind(addr).and_then(|s| s.local_addr()),
        }
        .expect("a free port on 127.64.0.0/16")
    }

    /// An address on which nothing listens: connecting to it is refused at once.
    fn dead_backend() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
    }

    fn tcp_rule(listen: SocketAddr, backends: Vec<SocketAddr>) -> Rule {
        Rule {
            listen,
            protocol: Protocol::Tcp,
            backends,
            session_affinity: None,
        }
    }

    fn udp_rule(listen: SocketAddr, backends: Vec<SocketAddr>) -> Rule {
        Rule {
            listen,
            protocol: Protocol::Udp,
            backends,
            session_affinity: None,
        }
    }

    fn apply_ok(forwarder: &Forwarder, rules: Vec<Rule>) {
        let errors = forwarder.apply(rules);
        assert!(errors.is_empty(), "apply failed: {errors:?}");
    }

    fn stats_of(forwarder: &Forwarder, listen: SocketAddr, protocol: Protocol) -> RuleStats {
        forwarder
            .stats()
            .into_iter()
            .find(|s| s.listen == listen && s.protocol == protocol)
            .expect("stats for the rule")
    }

    /// Polls `condition` every few milliseconds; fails the test after [`DEADLINE`].
    async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A TCP client of the proxy, speaking the backends' line protocol.
    struct Client(BufReader<TcpStream>);

    impl Client {
        async fn connect(listen: SocketAddr) -> Client {
            let stream = tokio::time::timeout(DEADLINE, TcpStream::connect(listen))
                .await
                .expect("connect in time")
                .expect("connect to the proxy");
            Client(BufReader::new(stream))
        }

        /// Sends `line` and returns the name of the backend that echoed it.
        async fn ask(&mut self, line: &str) -> String {
            self.0
                .get_mut()
                .write_all(format!("{line}\n").as_bytes())
                .await
                .expect("send through the proxy");
            let mut answer = String::new();
            let read = tokio::time::timeout(DEADLINE, self.0.read_line(&mut answer))
                .await
                .expect("an answer in time")
                .expect("read through the proxy");
            assert!(read > 0, "the proxy closed the connection");
            let (name, echoed) = answer.trim_end().split_once(' ').expect("an answer '<name> <line>'");
            assert_eq!(echoed, line);
            name.to_string()
        }

        /// Asserts that the proxy closes the connection without sending anything.
        async fn assert_closed(mut self) {
            let mut buffer = [0u8; 64];
            let read = tokio::time::timeout(DEADLINE, self.0.read(&mut buffer))
                .await
                .expect("closed in time");
            match read {
                Ok(0) | Err(_) => {}
                Ok(n) => panic!("expected a closed connection, got {n} bytes"),
            }
        }
    }

    /// Opens a connection, asks once, and closes it: which backend answered.
    async fn backend_of(listen: SocketAddr) -> String {
        Client::connect(listen).await.ask("hello").await
    }

    /// Sends `message` from `client` to the proxy and returns the answering backend's
    /// name, checking that the answer comes from the listen address.
    async fn udp_ask(client: &UdpSocket, listen: SocketAddr, message: &str) -> String {
        client
            .send_to(message.as_bytes(), listen)
            .await
            .expect("send a datagram");
        let mut buffer = [0u8; 2048];
        let (length, from) = tokio::time::timeout(DEADLINE, client.recv_from(&mut buffer))
            .await
            .expect("an answer in time")
            .expect("receive the answer");
        assert_eq!(from, listen, "the answer must come from the listen address");
        let answer = String::from_utf8_lossy(&buffer[..length]).into_owned();
        let (name, echoed) = answer.split_once(' ').expect("an answer '<name> <message>'");
        assert_eq!(echoed, message);
        name.to_string()
    }

    async fn udp_client() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0").await.expect("bind a UDP client")
    }

    #[tokio::test]
    async fn tcp_connections_go_round_robin() {
        let backends = vec![tcp_backend("a").await, tcp_backend("b").await];
        let listen = free_listen(1, Protocol::Tcp);
        let forwarder = Forwarder::new(Limits::default());
        apply_ok(&forwarder, vec![tcp_rule(listen, backends)]);

        let mut answered = Vec::new();
        for _ in 0..4 {
            answered.push(backend_of(listen).await);
        }
        assert_eq!(answered, ["a", "b", "a", "b"]);
        let stats = stats_of(&forwarder, listen, Protocol::Tcp);
        assert_eq!(stats.accepted, 4);
        assert_eq!(
            (
                stats.refused_no_backend,
                stats.dropped_over_limit,
                stats.connect_failures
            ),
            (0, 0, 0)
        );
        wait_for("the connections to be closed", || {
            stats_of(&forwarder, listen, Protocol::Tcp).active == 0
        })
        .await;
    }

    #[tokio::test]
    async fn removed_backend_gets_no_new_connections_but_keeps_established_ones() {
        let backends = [("a", tcp_backend("a").await), ("b", tcp_backend("b").await)];
        let listen = free_listen(2, Protocol::Tcp);
        let forwarder = Forwarder::new(Limits::default());
        apply_ok(
            &forwarder,
            vec![tcp_rule(listen, backends.iter().map(|(_, a)| *a).collect())],
        );

        let mut established = Client::connect(listen).await;
        let first = established.ask("before").await;
        let (kept_name, kept_addr) = *backends
            .iter()
            .find(|(name, _)| *name != first)
            .expect("the other backend");
        apply_ok(&forwarder, vec![tcp_rule(listen, vec![kept_addr])]);

        for _ in 0..3 {
            assert_eq!(
                backend_of(listen).await,
                kept_name,
                "a new connection went to the removed backend"
            );
        }
        assert_eq!(
            established.ask("after").await,
            first,
            "the established connection moved or broke"
        );
        // The short connections' tasks notice their close on their own time.
        wait_for("only the established connection to be open", || {
            stats_of(&forwarder, listen, Protocol::Tcp).active == 1
        })
        .await;
    }

    #[tokio::test]
    async fn client_ip_affinity_keeps_a_client_on_one_backend() {
        let backends = vec![tcp_backend("a").await, tcp_backend("b").await];
        let listen = free_listen(3, Protocol::Tcp);
        let forwarder = Forwarder::new(Limits::default());
        let rule = Rule {
            session_affinity: Some(Duration::from_secs(60)),
            ..tcp_rule(listen, backends)
        };
        apply_ok(&forwarder, vec![rule]);

        let first = backend_of(listen).await;
        for _ in 0..4 {
            // Without affinity these would alternate (see tcp_connections_go_round_robin).
            assert_eq!(
                backend_of(listen).await,
                first,
                "the same client IP went to another backend"
            );
        }
    }

    #[tokio::test]
    async fn unreachable_backend_is_skipped() {
        let live = tcp_backend("live").await;
        let listen = free_listen(4, Protocol::Tcp);
        let forwarder = Forwarder::new(Limits::default());
        apply_ok(&forwarder, vec![tcp_rule(listen, vec![dead_backend(), live])]);

        for _ in 0..4 {
            assert_eq!(backend_of(listen).await, "live");
        }
        let stats = stats_of(&forwarder, listen, Protocol::Tcp);
        // Round-robin put the dead backend first for two of the four connections.
        assert_eq!(stats.connect_failures, 2);
        assert_eq!(stats.accepted, 4);
    }

    #[tokio::test]
    async fn no_backends_closes_the_connection() {
        let listen = free_listen(5, Protocol::Tcp);
        let forwarder = Forwarder::new(Limits::default());
        apply_ok(&forwarder, vec![tcp_rule(listen, Vec::new())]);

        Client::connect(listen).await.assert_closed().await;
        wait_for("the refusal to be counted", || {
            stats_of(&forwarder, listen, Protocol::Tcp).refused_no_backend == 1
        })
        .await;
        let stats = stats_of(&forwarder, listen, Protocol::Tcp);
        assert_eq!((stats.accepted, stats.active), (0, 0));
    }

    #[tokio::test]
    async fn removing_a_rule_frees_its_port_at_once() {
        let tcp_listen = free_listen(6, Protocol::Tcp);
        let udp_listen = free_listen(6, Protocol::Udp);
        let forwarder = Forwarder::new(Limits::default());
        let rules = vec![
            tcp_rule(tcp_listen, vec![tcp_backend("a").await]),
            udp_rule(udp_listen, Vec::new()),
        ];
        apply_ok(&forwarder, rules.clone());
        let mut established = Client::connect(tcp_listen).await;
        assert_eq!(established.ask("before").await, "a");

        apply_ok(&forwarder, Vec::new());
        assert!(forwarder.stats().is_empty());
        // No waiting: the ports must be free when apply returns.
        let plain_tcp = std::net::TcpListener::bind(tcp_listen).expect("the TCP port is free after apply");
        let plain_udp = std::net::UdpSocket::bind(udp_listen).expect("the UDP port is free after apply");
        assert_eq!(established.ask("after").await, "a", "the established connection broke");
        drop((plain_tcp, plain_udp));

        // Dropping the forwarder closes its listeners as well.
        apply_ok(&forwarder, rules);
        drop(forwarder);
        std::net::TcpListener::bind(tcp_listen).expect("the TCP port is free after drop");
        std::net::UdpSocket::bind(udp_listen).expect("the UDP port is free after drop");
    }

    #[tokio::test]
    async fn udp_sessions_alternate_and_answers_come_back() {
        let backends = vec![udp_backend("a").await, udp_backend("b").await];
        let listen = free_listen(7, Protocol::Udp);
        let forwarder = Forwarder::new(Limits::default());
        apply_ok(&forwarder, vec![udp_rule(listen, backends)]);

        let (one, two) = (udp_client().await, udp_client().await);
        let first = udp_ask(&one, listen, "one").await;
        let second = udp_ask(&two, listen, "two").await;
        assert_ne!(first, second, "two client sessions should go to the two backends");
        // A session keeps its backend.
        assert_eq!(udp_ask(&one, listen, "one again").await, first);
        assert_eq!(udp_ask(&two, listen, "two again").await, second);
        let stats = stats_of(&forwarder, listen, Protocol::Udp);
        assert_eq!((stats.accepted, stats.active), (2, 2));
    }

    #[tokio::test]
    async fn udp_sessions_end_when_idle_or_their_backend_is_removed() {
        let backends = [("a", udp_backend("a").await), ("b", udp_backend("b").await)];
        let listen = free_listen(8, Protocol::Udp);
        let limits = Limits {
            udp_session_idle: Duration::from_millis(100),
            ..Limits::default()
        };
        let forwarder = Forwarder::new(limits);
        apply_ok(
            &forwarder,
            vec![udp_rule(listen, backends.iter().map(|(_, a)| *a).collect())],
        );

        let client = udp_client().await;
        udp_ask(&client, listen, "hello").await;
        wait_for("the idle session to end", || {
            stats_of(&forwarder, listen, Protocol::Udp).active == 0
        })
        .await;

        let current = udp_ask(&client, listen, "again").await;
        let (other_name, other_addr) = *backends
            .iter()
            .find(|(name, _)| *name != current)
            .expect("the other backend");
        assert_eq!(
            stats_of(&forwarder, listen, Protocol::Udp).accepted,
            2,
            "a new session after the idle one"
        );
        apply_ok(&forwarder, vec![udp_rule(listen, vec![other_addr])]);
        assert_eq!(
            udp_ask(&client, listen, "moved").await,
            other_name,
            "the session's removed backend answered"
        );
    }

    #[tokio::test]
    async fn udp_session_bound_drops_new_clients() {
        let listen = free_listen(9, Protocol::Udp);
        let limits = Limits {
            udp_sessions_per_rule_max: 1,
            ..Limits::default()
        };
        let forwarder = Forwarder::new(limits);
        apply_ok(&forwarder, vec![udp_rule(listen, vec![udp_backend("a").await])]);

        let (one, two) = (udp_client().await, udp_client().await);
        assert_eq!(udp_ask(&one, listen, "one").await, "a");
        two.send_to(b"two", listen).await.expect("send a datagram");
        wait_for("the datagram to be dropped", || {
            stats_of(&forwarder, listen, Protocol::Udp).dropped_over_limit == 1
        })
        .await;
        assert_eq!(
            udp_ask(&one, listen, "one again").await,
            "a",
            "the admitted session must keep working"
        );
    }

    #[tokio::test]
    async fn tcp_connection_bound_closes_the_connection_over_it() {
        let listen = free_listen(10, Protocol::Tcp);
        let limits = Limits {
            tcp_connections_per_rule_max: 1,
            ..Limits::default()
        };
        let forwarder = Forwarder::new(limits);
        apply_ok(&forwarder, vec![tcp_rule(listen, vec![tcp_backend("a").await])]);

        let mut first = Client::connect(listen).await;
        assert_eq!(first.ask("one").await, "a");
        Client::connect(listen).await.assert_closed().await;
        assert_eq!(first.ask("still").await, "a", "the first connection must keep working");
        let stats = stats_of(&forwarder, listen, Protocol::Tcp);
        assert_eq!((stats.accepted, stats.dropped_over_limit, stats.active), (1, 1, 1));

        // The slot frees up when the first connection ends.
        drop(first);
        wait_for("the first connection to end", || {
            stats_of(&forwarder, listen, Protocol::Tcp).active == 0
        })
        .await;
        assert_eq!(backend_of(listen).await, "a");
    }

    #[tokio::test]
    async fn apply_reports_bad_rules_and_applies_the_rest() {
        let backend = tcp_backend("a").await;
        let occupied = std::net::TcpListener::bind((Ipv4Addr::new(127, 64, 0, 11), 0)).expect("occupy a port");
        let occupied_addr = occupied.local_addr().expect("occupied address");
        let good = free_listen(12, Protocol::Tcp);
        let twice = free_listen(13, Protocol::Tcp);
        let port_zero = SocketAddr::from(([127, 64, 0, 14], 0));
        let forwarder = Forwarder::new(Limits::default());
        apply_ok(&forwarder, vec![tcp_rule(twice, vec![backend])]);

        let errors = forwarder.apply(vec![
            tcp_rule(occupied_addr, vec![backend]),
            tcp_rule(good, vec![backend]),
            tcp_rule(twice, vec![dead_backend()]),
            tcp_rule(twice, vec![dead_backend()]),
            tcp_rule(port_zero, vec![backend]),
        ]);
        let failed: Vec<(SocketAddr, bool)> = errors
            .iter()
            .map(|(listen, _, error)| (*listen, matches!(error, AgentError::Config(_))))
            .collect();
        let mut expected = vec![(occupied_addr, false), (twice, true), (port_zero, true)];
        expected.sort();
        assert_eq!(failed, expected, "{errors:?}");

        assert_eq!(backend_of(good).await, "a", "the good rule must apply");
        // The duplicated key keeps its listener and its old backend.
        assert_eq!(backend_of(twice).await, "a");
        let listening: Vec<SocketAddr> = forwarder.stats().iter().map(|s| s.listen).collect();
        let mut expected = vec![good, twice];
        expected.sort();
        assert_eq!(listening, expected);
    }
}
