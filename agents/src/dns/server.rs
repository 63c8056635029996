//! The network side: one UDP socket and one TCP listener on the same address, the answer
//! to one query's bytes, and the relay to the upstream nameservers.
//!
//! - UDP: each datagram is handled in a task of its own, at most
//!   [`Limits::udp_queries_max`](super::Limits) at once (past that a datagram is dropped,
//!   and the client's retry comes back later). In-zone answers are computed at once from
//!   the index; an answer longer than the client can take (512 bytes without EDNS, else
//!   the smaller of its EDNS size and ours) is sent truncated (TC, no records) so that
//!   the client asks again over TCP, as servers do.
//! - TCP: a task per connection, at most `tcp_connections_max` (past that a connection is
//!   closed at once); queries in the 2-byte length framing of RFC 1035, answered in turn;
//!   a connection idle for `tcp_idle_timeout_ms` is closed.
//! - Forwarding: the query's bytes as received, to each upstream in turn until one
//!   answers, over the transport the client used (a UDP socket of its own per forward,
//!   connected to the upstream so only its datagrams arrive, and answers with another id
//!   ignored; a TCP connection per forward). The answer's bytes go back unchanged. Each
//!   try is bounded by `forward_timeout_ms`; at most `forwards_max` forwards at once, and
//!   a query past that gets REFUSED (CoreDNS's `max_concurrent`). No upstream, or none
//!   answering: SERVFAIL.
//!
//! Left out: caching of forwarded answers (the node's resolver or the upstream caches),
//! health checks and random choice among upstreams (tried in order, as glibc does), DNS
//! over TLS, TCP pipelining replies out of order.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::index::{self, Decision, Index};
use super::Limits;
use crate::error::{AgentError, Result};

/// The largest query read from a datagram; a longer one is cut and then fails to decode.
const UDP_QUERY_BYTES_MAX: usize = 4096;
/// The largest answer taken from an upstream over UDP (the protocol's bound).
const UDP_RESPONSE_BYTES_MAX: usize = 65_535;
/// The size every DNS client can take over UDP without EDNS (RFC 1035).
const UDP_PLAIN_BYTES_MAX: usize = 512;
/// Tries at binding TCP on the port the kernel gave the UDP socket, when the caller
/// asked for any port and that one is taken for TCP.
const BIND_ATTEMPTS_MAX: usize = 8;
/// A pause after a failed `accept` or `recv` so that a persistent error (out of file
/// descriptors) is not a busy loop.
const ERROR_BACKOFF_MS: u64 = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    Udp,
    Tcp,
}

/// What the UDP and TCP tasks share.
pub(crate) struct Shared {
    pub zone: Name,
    pub limits: Limits,
    pub upstreams: Vec<SocketAddr>,
    /// `None` until both kinds have been listed once. Replaced whole after changes; a
    /// reader clones the `Arc` and never holds the lock across an await.
    pub index: RwLock<Option<Arc<Index>>>,
    pub forwards: Semaphore,
}

impl Shared {
    fn current_index(&self) -> Option<Arc<Index>> {
        match self.index.read() {
            Ok(guard) => guard.clone(),
            // A writer that panicked left a whole index (it only ever swaps an Arc).
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn forward_timeout(&self) -> Duration {
        Duration::from_millis(self.limits.forward_timeout_ms)
    }

    /// Encodes `reply` to `query` for `transport`: an OPT record when the query had one,
    /// truncated when it does not fit what the client can take.
    fn encode(&self, mut reply: Message, query: &Message, transport: Transport) -> Option<Vec<u8>> {
        let ours = self.limits.edns_payload_max_bytes.max(512);
        if query.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(ours);
            reply.edns = Some(edns);
        }
        let limit = match (transport, &query.edns) {
            (Transport::Tcp, _) => usize::from(u16::MAX),
            (Transport::Udp, None) => UDP_PLAIN_BYTES_MAX,
            (Transport::Udp, Some(edns)) => usize::from(edns.max_payload().clamp(512, ours)),
        };
        let bytes = match reply.to_vec() {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(error = %e, "could not encode an answer; SERVFAIL");
                return index::error_to(query, ResponseCode::ServFail).to_vec().ok();
            }
        };
        if bytes.len() <= limit {
            return Some(bytes);
        }
        reply.truncate().to_vec().ok()
    }

    /// Relays `bytes` (the query `query`) to the upstreams.
    async fn forward(&self, bytes: &[u8], query: &Message, transport: Transport) -> Option<Vec<u8>> {
        let Ok(_permit) = self.forwards.try_acquire() else {
            tracing::debug!("too many forwards in flight; REFUSED");
            return self.encode(index::error_to(query, ResponseCode::Refused), query, transport);
        };
        for upstream in &self.upstreams {
            let result = match transport {
                Transport::Udp => exchange_udp(*upstream, bytes, self.forward_timeout()).await,
                Transport::Tcp => exchange_tcp(*upstream, bytes, self.forward_timeout()).await,
            };
            match result {
                Ok(answer) => return Some(answer),
                Err(e) => tracing::debug!(%upstream, error = %e, "the upstream did not answer"),
            }
        }
        self.encode(index::error_to(query, ResponseCode::ServFail), query, transport)
    }

    /// Asks the upstreams for `target`/`query_type` (the end of an ExternalName's CNAME):
    /// their answer code and records, or `None` when none answered.
    async fn chase(&self, target: &Name, query_type: RecordType) -> Option<(ResponseCode, Vec<Record>)> {
        let _permit = self.forwards.try_acquire().ok()?;
        let mut query = Message::query();
        query.metadata.recursion_desired = true;
        query.add_query(Query::query(target.clone(), query_type));
        let mut edns = Edns::new();
        edns.set_max_payload(self.limits.edns_payload_max_bytes.max(512));
        query.edns = Some(edns);
        let bytes = query.to_vec().ok()?;
        for upstream in &self.upstreams {
            let Ok(answer) = exchange_udp(*upstream, &bytes, self.forward_timeout()).await else {
                continue;
            };
            let Ok(mut answer) = Message::from_vec(&answer) else {
                continue;
            };
            if answer.metadata.truncation {
                match exchange_tcp(*upstream, &bytes, self.forward_timeout()).await {
                    Ok(bytes) => match Message::from_vec(&bytes) {
                        Ok(full) => answer = full,
                        Err(_) => continue,
                    },
                    Err(_) => continue,
                }
            }
            let code = answer.metadata.response_code;
            if code == ResponseCode::NoError || code == ResponseCode::NXDomain {
                return Some((code, answer.answers));
            }
        }
        None
    }
}

/// A FORMERR for bytes that are not a DNS message, when they have a header to answer
/// (and are not themselves a response).
fn format_error(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() < 12 || bytes[2] & 0x80 != 0 {
        return None;
    }
    let id = u16::from_be_bytes([bytes[0], bytes[1]]);
    Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
        .to_vec()
        .ok()
}

/// The answer to one query's bytes, or nothing to send.
pub(crate) async fn handle(shared: &Shared, bytes: &[u8], transport: Transport) -> Option<Vec<u8>> {
    let query = match Message::from_vec(bytes) {
        Ok(query) => query,
        Err(e) => {
            tracing::debug!(error = %e, "a query that does not decode");
            return format_error(bytes);
        }
    };
    let index = shared.current_index();
    match index::answer(&shared.zone, index.as_deref(), &query)? {
        Decision::Reply(reply) => shared.encode(reply, &query, transport),
        Decision::Forward => shared.forward(bytes, &query, transport).await,
        Decision::Chase {
            mut reply,
            target,
            query_type,
        } => {
            if let Some((code, records)) = shared.chase(&target, query_type).await {
                // The code is the chain's last name's (RFC 6604).
                reply.metadata.response_code = code;
                reply.answers.extend(records);
            }
            shared.encode(reply, &query, transport)
        }
    }
}

/// One query to `upstream` over UDP: the first datagram back with the query's id.
async fn exchange_udp(upstream: SocketAddr, query: &[u8], timeout: Duration) -> io::Result<Vec<u8>> {
    let local: SocketAddr = if upstream.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; UDP_RESPONSE_BYTES_MAX];
    loop {
        let n = tokio::time::timeout_at(deadline, socket.recv(&mut buf))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer in time"))??;
        // A response (QR set) to this query (same id); anything else is stale or stray.
        if n >= 12 && buf[..2] == query[..2] && buf[2] & 0x80 != 0 {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

/// One query to `upstream` over TCP, on a connection of its own.
async fn exchange_tcp(upstream: SocketAddr, query: &[u8], timeout: Duration) -> io::Result<Vec<u8>> {
    let len = u16::try_from(query.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query too long"))?;
    tokio::time::timeout(timeout, async {
        let mut stream = TcpStream::connect(upstream).await?;
        let mut framed = Vec::with_capacity(query.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(query);
        stream.write_all(&framed).await?;
        let n = stream.read_u16().await?;
        let mut answer = vec![0u8; usize::from(n)];
        stream.read_exact(&mut answer).await?;
        Ok(answer)
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer in time"))?
}

/// Whether forwarding to `upstream` would reach this server itself (`listen` is the bound
/// address): the same address, or a loopback one on our port when we listen on every
/// address. (An upstream that is another of this host's own addresses is not detected.)
pub(crate) fn is_self(listen: SocketAddr, upstream: SocketAddr) -> bool {
    upstream == listen
        || (upstream.port() == listen.port()
            && listen.ip().is_unspecified()
            && (upstream.ip().is_loopback() || upstream.ip().is_unspecified()))
}

/// Binds UDP on `listen` and TCP on the same address (the same port, when `listen` asks
/// for any).
pub(crate) async fn bind(listen: SocketAddr) -> Result<(UdpSocket, TcpListener)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let udp = UdpSocket::bind(listen)
            .await
            .map_err(|e| AgentError::Io(format!("bind DNS UDP on {listen}"), e))?;
        let local = udp
            .local_addr()
            .map_err(|e| AgentError::Io(format!("address of DNS UDP on {listen}"), e))?;
        match TcpListener::bind(local).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if listen.port() == 0 && e.kind() == io::ErrorKind::AddrInUse && attempt < BIND_ATTEMPTS_MAX => {
                tracing::debug!(%local, "port taken for TCP; another");
            }
            Err(e) => return Err(AgentError::Io(format!("bind DNS TCP on {local}"), e)),
        }
    }
}

/// Answers datagrams on `socket` until an error that is not about one datagram.
pub(crate) async fn serve_udp(shared: Arc<Shared>, socket: Arc<UdpSocket>) -> Result<()> {
    let in_flight = Arc::new(Semaphore::new(shared.limits.udp_queries_max.max(1)));
    // Aborted with this future.
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; UDP_QUERY_BYTES_MAX];
    loop {
        while tasks.try_join_next().is_some() {}
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) => {
                tracing::warn!(error = %e, "DNS UDP receive failed");
                tokio::time::sleep(Duration::from_millis(ERROR_BACKOFF_MS)).await;
                continue;
            }
        };
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            tracing::debug!(%from, "too many UDP queries in flight; dropped");
            continue;
        };
        let query = buf[..n].to_vec();
        let (shared, socket) = (shared.clone(), socket.clone());
        tasks.spawn(async move {
            let _permit = permit;
            if let Some(answer) = handle(&shared, &query, Transport::Udp).await {
                if let Err(e) = socket.send_to(&answer, from).await {
                    tracing::debug!(%from, error = %e, "could not send a DNS answer");
                }
            }
        });
    }
}

/// Serves DNS over TCP connections from `listener`.
pub(crate) async fn serve_tcp(shared: Arc<Shared>, listener: TcpListener) -> Result<()> {
    let connections = Arc::new(Semaphore::new(shared.limits.tcp_connections_max.max(1)));
    let mut tasks = JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "DNS TCP accept failed");
                tokio::time::sleep(Duration::from_millis(ERROR_BACKOFF_MS)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many DNS TCP connections; closed");
            continue;
        };
        let shared = shared.clone();
        tasks.spawn(async move {
            let _permit = permit;
            if let Err(e) = serve_connection(&shared, stream).await {
                tracing::debug!(%peer, error = %e, "DNS TCP connection ended");
            }
        });
    }
}

async fn serve_connection(shared: &Shared, mut stream: TcpStream) -> io::Result<()> {
    let idle = Duration::from_millis(shared.limits.tcp_idle_timeout_ms);
    let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "idle");
    loop {
        let len = match tokio::time::timeout(idle, stream.read_u16()).await {
            Err(_) => return Ok(()),
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(result) => result?,
        };
        let mut query = vec![0u8; usize::from(len)];
        tokio::time::timeout(idle, stream.read_exact(&mut query))
            .await
            .map_err(|_| timed_out())??;
        let Some(answer) = handle(shared, &query, Transport::Tcp).await else {
            continue;
        };
        let Ok(len) = u16::try_from(answer.len()) else {
            // Only an upstream's relayed bytes could be this long, and TCP framing bounds those.
            continue;
        };
        let mut framed = Vec::with_capacity(answer.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&answer);
        tokio::time::timeout(idle, stream.write_all(&framed))
            .await
            .map_err(|_| timed_out())??;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_forwards_to_itself() {
        let addr = |s: &str| s.parse::<SocketAddr>().expect("addr");
        assert!(is_self(addr("127.0.0.1:53"), addr("127.0.0.1:53")));
        assert!(is_self(addr("0.0.0.0:53"), addr("127.0.0.1:53")));
        assert!(is_self(addr("0.0.0.0:53"), addr("127.0.0.53:53")));
        assert!(!is_self(addr("127.0.0.1:5353"), addr("127.0.0.1:53")));
        assert!(!is_self(addr("10.96.0.10:53"), addr("127.0.0.53:53")));
        assert!(!is_self(addr("0.0.0.0:53"), addr("8.8.8.8:53")));
    }

    #[test]
    fn garbage_gets_formerr_and_responses_get_nothing() {
        let mut bytes = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xff];
        let answer = format_error(&bytes).expect("a FORMERR");
        let m = Message::from_vec(&answer).expect("decodes");
        assert_eq!(
            (m.metadata.id, m.metadata.response_code),
            (0x1234, ResponseCode::FormErr)
        );
        bytes[2] |= 0x80;
        assert!(format_error(&bytes).is_none());
        assert!(format_error(&[1, 2, 3]).is_none());
    }
}
