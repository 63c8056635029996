//! Network faults between members without root: a TCP proxy in front of every member's
//! peer port, which passes, delays, cuts or resets each directed link's traffic on
//! command.
//!
//! # Who is talking to whom
//!
//! Member i's peer URL, the one every member knows it by (in `--initial-cluster` and its
//! own `--initial-advertise-peer-urls`; member IDs are derived from it, so all must see the
//! same URL), is the proxy's listener `127.0.0.1:Pi` ([`NetProxy::listen_addr`]), which
//! forwards to member i's real `--listen-peer` address (its *target*). A listener per
//! destination cannot tell from the destination who dials, so each member j dials from an
//! address of its own: it runs with `--peer-source-ip 127.0.1.(j+1)` ([`source_ip`]; on
//! Linux all of 127.0.0.0/8 is local, nothing needs configuring), and the proxy learns the
//! directed link j→i from the accepted connection's source address. A connection from any
//! other address (an operator's tool, a join lookup) is forwarded without faults and
//! counted apart ([`NetProxy::unknown_source_stats`]).
//!
//! The store keeps one outgoing stream per peer and sends its Raft messages one way on
//! it: j's messages to i travel on link j→i, i's answers on link i→j. A fault on the link
//! j→i applies to both directions of the TCP connections that j opened to i (the HTTP/2
//! frames i sends back on them, acknowledgements, pings), which is what "j cannot reach i"
//! means to a stream protocol; a one-way partition is `set_link(j, i, Down)` alone.
//!
//! # Faults ([`LinkFault`]), per directed link
//!
//! - `Up`: bytes pass as they come.
//! - `Down`, a partition: the link's open connections are closed at once (abortively, with
//!   a reset, so nothing still buffered in the proxy is delivered); new connections are
//!   accepted (the kernel completes the handshake anyway) but black-holed: the proxy
//!   neither reads them nor connects onwards, so nothing passes, and the dialer sees a
//!   connection that hangs, as behind a dropped route. When the link leaves `Down` the
//!   black-holed connections are closed, so the dialer's stream fails and it reconnects
//!   through the healed link.
//! - `Delay { delay_ms }`: every chunk read is written onwards `delay_ms` after it was
//!   read, in order (a chunk never overtakes the one before it, even when the delay is
//!   lowered meanwhile). Both directions of a connection are delayed, so a round trip
//!   takes at least twice the delay.
//! - `Lossy { percent }`: each chunk read, with that probability, resets the connection
//!   instead of passing: everything in flight on it is lost and the dialer reconnects.
//!   This is loss at the stream level, not packet loss: TCP would retransmit a lost
//!   packet, so dropping packets only shows as delay; what a stream protocol above it
//!   can lose is a connection with what it carried.
//!
//! A fault takes effect on the next chunk of every open connection of the link (`Down` at
//! once). The random draws come from [`SplitMix64`] seeded by the proxy's seed, the link
//! and the connection's number on it; how a stream is cut into chunks depends on timing,
//! so a seed reproduces the draws, not a run.
//!
//! # Bounds
//!
//! Open connections per link ([`NetProxyConfig::connections_per_link_max`]: beyond, a new
//! one is closed at once and counted as refused), bytes held per direction of a connection
//! ([`NetProxyConfig::buffered_bytes_max`], whole chunks of [`READ_CHUNK_BYTES`]: when
//! delayed chunks fill it, the proxy stops reading, and TCP's flow control pushes back on
//! the sender), the delay ([`DELAY_MS_MAX`]) and the members ([`MEMBERS_MAX`]).
//!
//! # Threads
//!
//! The proxy runs on a tokio runtime of its own, on a thread of its own, so that a
//! synchronous caller (the [`crate::Cluster`]) can own it and an async one is not slowed
//! by it; it is controlled from any thread through shared state (each link's fault in a
//! `watch` channel, its counters in atomics). Dropping the [`NetProxy`] stops the runtime,
//! which closes every listener and connection, and joins the thread.
//!
//! Left out: faults on the client ports (clients see a member's faults only through it),
//! bandwidth limits, reordering and duplication (TCP forbids both), half-open connections
//! after a partition (a `Down` closes; a real partition leaves both ends waiting on
//! keep-alives), IPv6, and faults on connections from unknown sources.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::{mix64, ChaosError, Result, SplitMix64};

/// Members one proxy serves, at most (their source addresses are 127.0.1.1 to 127.0.1.N).
pub const MEMBERS_MAX: usize = 64;
/// Bytes read from a socket at a time: the chunk a fault applies to.
pub const READ_CHUNK_BYTES: usize = 16 * 1024;
/// The longest delay a link may be given.
pub const DELAY_MS_MAX: u64 = 60_000;
/// Pause after a failed accept (out of file descriptors), so the loop does not spin.
const ACCEPT_RETRY_MS: u64 = 50;

/// The source address member `member` dials its peers from: 127.0.1.(member+1). Pass it
/// to the member as `--peer-source-ip`.
pub fn source_ip(member: usize) -> IpAddr {
    assert!(member < MEMBERS_MAX, "member {member} is beyond MEMBERS_MAX");
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, member as u8 + 1))
}

/// The member that dials from `ip`, if any of `members`.
fn member_of(ip: IpAddr, members: usize) -> Option<usize> {
    match ip {
        IpAddr::V4(v4) => match v4.octets() {
            [127, 0, 1, n] if n >= 1 && usize::from(n) <= members => Some(usize::from(n) - 1),
            _ => None,
        },
        IpAddr::V6(_) => None,
    }
}

/// What happens to the traffic of one directed link (see the module doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LinkFault {
    #[default]
    Up,
    /// Partitioned: open connections closed, new ones black-holed.
    Down,
    /// Every chunk passes `delay_ms` after it arrived, in order.
    Delay { delay_ms: u64 },
    /// Each chunk resets its connection with probability `percent`/100.
    Lossy { percent: u64 },
}

impl LinkFault {
    fn validate(self) -> Result<()> {
        match self {
            LinkFault::Delay { delay_ms } if delay_ms > DELAY_MS_MAX => Err(ChaosError::InvalidConfig(format!(
                "a link delay of {delay_ms} ms is over DELAY_MS_MAX ({DELAY_MS_MAX} ms)"
            ))),
            LinkFault::Lossy { percent } if percent > 100 => Err(ChaosError::InvalidConfig(format!(
                "a loss of {percent} % is over 100 %"
            ))),
            _ => Ok(()),
        }
    }
}

/// Counters of one directed link (or of the connections from unknown sources to one
/// member), over the proxy's life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Connections accepted (refused ones included).
    pub connections: u64,
    /// Connections open now, forwarded or black-holed.
    pub open: u64,
    /// Bytes delivered from the dialer to the destination.
    pub bytes_sent: u64,
    /// Bytes delivered back from the destination to the dialer.
    pub bytes_returned: u64,
    /// Connections reset by `Lossy`.
    pub resets: u64,
    /// Connections closed by `Down`, and black-holed ones closed when the link left it.
    pub cut: u64,
    /// Connections accepted while the link was `Down`.
    pub black_holed: u64,
    /// Connections closed at once: over the per-link bound, or the destination refused.
    pub refused: u64,
}

#[derive(Clone, Debug)]
pub struct NetProxyConfig {
    /// Member i's real peer address (its `--listen-peer`), for every member.
    pub targets: Vec<SocketAddr>,
    /// The address the listeners bind (on port 0: the system picks the ports).
    pub listen_ip: IpAddr,
    /// Seeds the `Lossy` draws.
    pub seed: u64,
    /// Open connections per link (and per destination from unknown sources), at most.
    pub connections_per_link_max: usize,
    /// Bytes held per direction of one connection (delayed chunks waiting), at most;
    /// rounded down to whole chunks of [`READ_CHUNK_BYTES`], at least one.
    pub buffered_bytes_max: usize,
    /// How long the proxy waits for a destination to accept.
    pub connect_timeout_ms: u64,
}

impl NetProxyConfig {
    pub fn new(targets: Vec<SocketAddr>) -> NetProxyConfig {
        NetProxyConfig {
            targets,
            listen_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            seed: 0,
            connections_per_link_max: 64,
            buffered_bytes_max: 4 << 20,
            connect_timeout_ms: 1_000,
        }
    }
}

/// One directed link's state: its fault and counters.
struct Link {
    fault: watch::Sender<LinkFault>,
    /// Connections numbered on this link, for their seeds.
    accepted: AtomicU64,
    open: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_returned: AtomicU64,
    resets: AtomicU64,
    cut: AtomicU64,
    black_holed: AtomicU64,
    refused: AtomicU64,
}

impl Link {
    fn new() -> Link {
        Link {
            fault: watch::Sender::new(LinkFault::Up),
            accepted: AtomicU64::new(0),
            open: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_returned: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            cut: AtomicU64::new(0),
            black_holed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    fn stats(&self) -> LinkStats {
        LinkStats {
            connections: self.accepted.load(Ordering::Relaxed),
            open: self.open.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            bytes_returned: self.bytes_returned.load(Ordering::Relaxed),
            resets: self.resets.load(Ordering::Relaxed),
            cut: self.cut.load(Ordering::Relaxed),
            black_holed: self.black_holed.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

struct Shared {
    members: usize,
    targets: Vec<SocketAddr>,
    /// Directed links, `from * members + to` (the diagonal is unused).
    links: Vec<Link>,
    /// Per destination: connections from unknown sources (always `Up`).
    unknown: Vec<Link>,
    seed: u64,
    connections_per_link_max: u64,
    queue_chunks: usize,
    connect_timeout: Duration,
}

/// The proxies in front of every member's peer port (see the module doc).
pub struct NetProxy {
    shared: Arc<Shared>,
    listen: Vec<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NetProxy {
    /// Binds a listener per member and starts forwarding, every link `Up`.
    pub fn start(config: NetProxyConfig) -> Result<NetProxy> {
        let members = config.targets.len();
        if members == 0 || members > MEMBERS_MAX {
            return Err(ChaosError::InvalidConfig(format!(
                "a network proxy serves 1..={MEMBERS_MAX} members, not {members}"
            )));
        }
        if config.connections_per_link_max == 0 || config.buffered_bytes_max == 0 {
            return Err(ChaosError::InvalidConfig(
                "connections_per_link_max and buffered_bytes_max must be above 0".into(),
            ));
        }
        let io = |context: &str| {
            let context = context.to_string();
            move |source: std::io::Error| ChaosError::Io { context, source }
        };
        let mut listeners = Vec::with_capacity(members);
        let mut listen = Vec::with_capacity(members);
        for _ in 0..members {
            let l = std::net::TcpListener::bind(SocketAddr::new(config.listen_ip, 0))
                .map_err(io("binding a network proxy listener"))?;
            l.set_nonblocking(true)
                .map_err(io("making a proxy listener non-blocking"))?;
            listen.push(l.local_addr().map_err(io("reading a proxy listener's address"))?);
            listeners.push(l);
        }
        let shared = Arc::new(Shared {
            members,
            targets: config.targets.clone(),
            links: (0..members * members).map(|_| Link::new()).collect(),
            unknown: (0..members).map(|_| Link::new()).collect(),
            seed: config.seed,
            connections_per_link_max: config.connections_per_link_max as u64,
            queue_chunks: (config.buffered_bytes_max / READ_CHUNK_BYTES).max(1),
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io("building the network proxy's runtime"))?;
        let (shutdown, stop) = oneshot::channel::<()>();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("chaos-netproxy".into())
            .spawn(move || {
                runtime.block_on(async move {
                    for (to, l) in listeners.into_iter().enumerate() {
                        match TcpListener::from_std(l) {
                            Ok(l) => {
                                tokio::spawn(accept_loop(thread_shared.clone(), to, l));
                            }
                            Err(e) => tracing::error!(to, error = %e, "a proxy listener cannot be registered"),
                        }
                    }
                    // Until the NetProxy is dropped (its sender goes with it).
                    let _ = stop.await;
                });
                // The runtime is dropped here, outside any async context: every task
                // with its sockets goes with it.
            })
            .map_err(io("spawning the network proxy's thread"))?;
        Ok(NetProxy {
            shared,
            listen,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    pub fn members(&self) -> usize {
        self.shared.members
    }

    /// The proxy's listener for member `to`: the address to advertise as its peer URL.
    pub fn listen_addr(&self, to: usize) -> SocketAddr {
        self.listen[to]
    }

    /// Sets the fault of the link `from`→`to` (see [`LinkFault`]).
    pub fn set_link(&self, from: usize, to: usize, fault: LinkFault) -> Result<()> {
        fault.validate()?;
        let link = self.link(from, to)?;
        link.fault.send_replace(fault);
        tracing::info!(from, to, ?fault, "link fault set");
        Ok(())
    }

    /// Sets every link (every ordered pair of distinct members) to `fault`.
    pub fn set_all_links(&self, fault: LinkFault) -> Result<()> {
        fault.validate()?;
        for from in 0..self.shared.members {
            for to in (0..self.shared.members).filter(|&to| to != from) {
                self.set_link(from, to, fault)?;
            }
        }
        Ok(())
    }

    /// The fault of the link `from`→`to`.
    pub fn link_fault(&self, from: usize, to: usize) -> Result<LinkFault> {
        Ok(*self.link(from, to)?.fault.borrow())
    }

    /// Cuts the members into groups: links between members of different groups go
    /// `Down` (both ways), links within a group `Up`. Members named in no group form one
    /// more group together, so `partition(&[&[0]])` isolates member 0. Replaces every
    /// link's fault.
    pub fn partition(&self, groups: &[&[usize]]) -> Result<()> {
        let members = self.shared.members;
        let unnamed = groups.len();
        let mut group_of = vec![unnamed; members];
        for (g, group) in groups.iter().enumerate() {
            for &m in group.iter() {
                if m >= members {
                    return Err(ChaosError::InvalidConfig(format!(
                        "partition names member {m}; there are {members}"
                    )));
                }
                if group_of[m] != unnamed {
                    return Err(ChaosError::InvalidConfig(format!(
                        "partition names member {m} in two groups"
                    )));
                }
                group_of[m] = g;
            }
        }
        for from in 0..members {
            for to in (0..members).filter(|&to| to != from) {
                let fault = if group_of[from] == group_of[to] {
                    LinkFault::Up
                } else {
                    LinkFault::Down
                };
                self.set_link(from, to, fault)?;
            }
        }
        Ok(())
    }

    /// Member `member` alone on one side, everyone else on the other.
    pub fn isolate(&self, member: usize) -> Result<()> {
        self.partition(&[&[member]])
    }

    /// Every link `Up`.
    pub fn heal(&self) {
        for link in &self.shared.links {
            link.fault.send_replace(LinkFault::Up);
        }
        tracing::info!("all links healed");
    }

    /// The counters of the link `from`→`to`.
    pub fn stats(&self, from: usize, to: usize) -> Result<LinkStats> {
        Ok(self.link(from, to)?.stats())
    }

    /// The counters of connections to member `to` from addresses that are no member's.
    pub fn unknown_source_stats(&self, to: usize) -> Result<LinkStats> {
        self.shared
            .unknown
            .get(to)
            .map(Link::stats)
            .ok_or_else(|| ChaosError::InvalidConfig(format!("no member {to} behind this proxy")))
    }

    /// Every link's fault and counters, one line per link, for failure messages.
    pub fn report(&self) -> String {
        let members = self.shared.members;
        let mut out = String::new();
        for from in 0..members {
            for to in (0..members).filter(|&to| to != from) {
                let link = &self.shared.links[from * members + to];
                out.push_str(&format!(
                    "link {from}->{to}: {:?} {:?}\n",
                    *link.fault.borrow(),
                    link.stats()
                ));
            }
        }
        out
    }

    fn link(&self, from: usize, to: usize) -> Result<&Link> {
        let members = self.shared.members;
        if from >= members || to >= members || from == to {
            return Err(ChaosError::InvalidConfig(format!(
                "no link {from}->{to} between {members} members (links join two distinct members)"
            )));
        }
        Ok(&self.shared.links[from * members + to])
    }
}

impl Drop for NetProxy {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the network proxy's thread panicked");
            }
        }
    }
}

async fn accept_loop(shared: Arc<Shared>, to: usize, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(to, error = %e, "the network proxy cannot accept");
                tokio::time::sleep(Duration::from_millis(ACCEPT_RETRY_MS)).await;
                continue;
            }
        };
        let from = member_of(peer.ip(), shared.members).filter(|&from| from != to);
        tokio::spawn(connection(shared.clone(), from, to, stream));
    }
}

/// Decrements a link's open connections when the connection ends, however it ends.
struct OpenGuard<'a>(&'a AtomicU64);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How forwarding one direction ended early.
enum End {
    /// `Lossy` drew this chunk.
    Reset,
    /// The link went `Down` between two chunks.
    Cut,
    /// A socket failed, or the other direction's queue is gone.
    Closed,
}

/// One accepted connection on the link `from`→`to` (`from` is `None` for an unknown
/// source), from accept to close.
async fn connection(shared: Arc<Shared>, from: Option<usize>, to: usize, mut client: TcpStream) {
    let link = match from {
        Some(from) => &shared.links[from * shared.members + to],
        None => &shared.unknown[to],
    };
    let number = link.accepted.fetch_add(1, Ordering::Relaxed);
    if link.open.fetch_add(1, Ordering::Relaxed) >= shared.connections_per_link_max {
        link.open.fetch_sub(1, Ordering::Relaxed);
        link.refused.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(?from, to, "a link is at its connection bound; a connection is refused");
        return;
    }
    let _open = OpenGuard(&link.open);
    let mut faults = link.fault.subscribe();
    if *faults.borrow_and_update() == LinkFault::Down {
        link.black_holed.fetch_add(1, Ordering::Relaxed);
        // Neither read nor forwarded: held until the link leaves Down.
        while *faults.borrow_and_update() == LinkFault::Down {
            if faults.changed().await.is_err() {
                return;
            }
        }
        link.cut.fetch_add(1, Ordering::Relaxed);
        let _ = client.set_zero_linger();
        return;
    }
    let target = shared.targets[to];
    let mut upstream = match tokio::time::timeout(shared.connect_timeout, TcpStream::connect(target)).await {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(e)) => {
            tracing::debug!(?from, to, %target, error = %e, "the destination refused a proxied connection");
            link.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        Err(_) => {
            tracing::debug!(?from, to, %target, "the destination did not accept in time");
            link.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let seed = mix64(shared.seed ^ mix64(((from.unwrap_or(usize::MAX) as u64) << 32) ^ to as u64) ^ number);
    let ended = {
        let (client_read, client_write) = client.split();
        let (upstream_read, upstream_write) = upstream.split();
        let forward = async {
            tokio::try_join!(
                pipe(
                    client_read,
                    upstream_write,
                    &link.fault,
                    &link.bytes_sent,
                    SplitMix64::new(seed),
                    shared.queue_chunks
                ),
                pipe(
                    upstream_read,
                    client_write,
                    &link.fault,
                    &link.bytes_returned,
                    SplitMix64::new(mix64(seed)),
                    shared.queue_chunks
                ),
            )
        };
        tokio::select! {
            ended = forward => ended.err(),
            () = until_down(&mut faults) => Some(End::Cut),
        }
    };
    match ended {
        None | Some(End::Closed) => {}
        Some(End::Reset) => {
            link.resets.fetch_add(1, Ordering::Relaxed);
            let _ = client.set_zero_linger();
            let _ = upstream.set_zero_linger();
        }
        Some(End::Cut) => {
            link.cut.fetch_add(1, Ordering::Relaxed);
            let _ = client.set_zero_linger();
            let _ = upstream.set_zero_linger();
        }
    }
}

/// Returns when the link goes `Down` (never, if its state is gone).
async fn until_down(faults: &mut watch::Receiver<LinkFault>) {
    loop {
        if *faults.borrow_and_update() == LinkFault::Down {
            return;
        }
        if faults.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Forwards one direction of a connection, chunk by chunk, applying the link's fault to
/// each: `Ok` at the end of the stream (passed on as a shutdown of the writing side).
async fn pipe(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    fault: &watch::Sender<LinkFault>,
    bytes: &AtomicU64,
    mut rng: SplitMix64,
    queue_chunks: usize,
) -> std::result::Result<(), End> {
    // (when to write, what): at most `queue_chunks` wait, and a slot is reserved before
    // reading, so a full queue stops the reading.
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(queue_chunks);
    let reader = async move {
        let mut buf = vec![0u8; READ_CHUNK_BYTES];
        let mut last = Instant::now();
        loop {
            let slot = tx.reserve().await.map_err(|_| End::Closed)?;
            let n = from.read(&mut buf).await.map_err(|_| End::Closed)?;
            if n == 0 {
                return Ok(());
            }
            let now = Instant::now();
            let at = match *fault.borrow() {
                LinkFault::Up => now,
                LinkFault::Down => return Err(End::Cut),
                LinkFault::Delay { delay_ms } => now + Duration::from_millis(delay_ms),
                LinkFault::Lossy { percent } => {
                    if rng.percent(percent) {
                        return Err(End::Reset);
                    }
                    now
                }
            };
            // Never before the chunk ahead of it.
            last = at.max(last);
            slot.send((last, buf[..n].to_vec()));
        }
    };
    let writer = async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            to.write_all(&chunk).await.map_err(|_| End::Closed)?;
            bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        let _ = to.shutdown().await;
        Ok(())
    };
    tokio::try_join!(reader, writer).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_map_back_to_members() {
        for m in 0..5 {
            assert_eq!(member_of(source_ip(m), 5), Some(m));
        }
        assert_eq!(member_of(source_ip(5), 5), None, "beyond the members");
        assert_eq!(member_of(IpAddr::V4(Ipv4Addr::LOCALHOST), 5), None);
        assert_eq!(member_of("127.0.1.0".parse().expect("an address"), 5), None);
        assert_eq!(member_of("::1".parse().expect("an address"), 5), None);
    }

    #[test]
    fn faults_out_of_bounds_are_refused() {
        assert!(LinkFault::Lossy { percent: 101 }.validate().is_err());
        assert!(LinkFault::Lossy { percent: 100 }.validate().is_ok());
        assert!(LinkFault::Delay {
            delay_ms: DELAY_MS_MAX + 1
        }
        .validate()
        .is_err());
        assert!(LinkFault::Delay { delay_ms: 0 }.validate().is_ok());
    }
}
