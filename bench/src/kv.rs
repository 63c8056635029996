//! `kv put` and `kv range`: closed-loop clients issuing single-key requests.
//!
//! `--clients` tasks share `--conns` HTTP/2 connections (client i uses connection
//! i mod conns) and take request numbers from one counter until `--total` are issued or
//! the deadline passes. Each client records its own latency histogram; they are merged at
//! the end. Throughput is successful requests over the wall time from the first request
//! to the last answer.
//!
//! `--client raw` (the default) drives the calls with the minimal HTTP/2 client of
//! [`crate::rawgrpc`], which costs the machine far less CPU per call than tonic's
//! `Channel` (`--client tonic`, the client of runs before 2026-12-05); the server under
//! test then gets more of the shared cores, as it would with the load on other machines.
//!
//! With several endpoints (the members of one cluster), connection j goes to endpoint
//! j mod endpoints, so `--conns` should be a multiple of the endpoint count for an even
//! spread. `--target leader` or `--target followers` first asks every endpoint for its
//! Status and keeps only the leader, or only the others.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan_proto::etcdserverpb::kv_client::KvClient;
use capstan_proto::etcdserverpb::{PutRequest, PutResponse, RangeRequest, RangeResponse};
use hdrhistogram::Histogram;
use tonic::transport::Channel;

use crate::cluster::wait_leader;
use crate::common::{
    connect_all, new_histogram, parse_endpoints, record_us, BenchResult, Deadline, Json, LatencySummary, Rng,
};
use crate::rawgrpc::{self, RawChannel, RawMethod};

#[derive(clap::Args, Debug, Clone)]
pub struct KvArgs {
    /// Comma-separated loopback endpoints (host:port).
    #[arg(long, default_value = "127.0.0.1:2379")]
    pub endpoints: String,
    /// Concurrent clients (each has one request in flight).
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// HTTP/2 connections the clients share (client i uses connection i mod conns;
    /// connection j goes to endpoint j mod endpoints).
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Which of the endpoints get the load: all, only the leader, or only the others
    /// (leader found with Maintenance.Status: leader == header.member_id).
    #[arg(long, value_enum, default_value_t = Target::All)]
    pub target: Target,
    /// Requests to issue (the run stops earlier at the timeout).
    #[arg(long, default_value_t = 10_000)]
    pub total: u64,
    /// Key length in bytes (a "k" and a zero-padded number).
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,
    /// Value length in bytes (random, so storage compression does not flatter anyone).
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
    /// Keys are drawn uniformly from this many.
    #[arg(long, default_value_t = 100_000)]
    pub key_space: u64,
    /// Seconds the whole run may take, connection and preload included.
    #[arg(long, default_value_t = 120)]
    pub timeout_s: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// The gRPC client that issues the calls: raw (a minimal HTTP/2 client, cheap on
    /// CPU) or tonic (tonic's Channel, as before 2026-12-05).
    #[arg(long, value_enum, default_value_t = ClientKind::Raw)]
    pub client: ClientKind,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientKind {
    Raw,
    Tonic,
}

impl ClientKind {
    fn name(self) -> &'static str {
        match self {
            ClientKind::Raw => "raw",
            ClientKind::Tonic => "tonic",
        }
    }
}

/// The connections of a run, of the kind `--client` asked for.
pub(crate) enum Conns {
    Tonic(Vec<Channel>),
    Raw(Vec<RawChannel>),
}

/// One client's handle on its connection.
pub(crate) enum Caller {
    Tonic(KvClient<Channel>),
    Raw {
        channel: RawChannel,
        put: RawMethod,
        range: RawMethod,
    },
}

impl Conns {
    pub(crate) fn caller(&self, c: usize) -> BenchResult<Caller> {
        Ok(match self {
            Conns::Tonic(channels) => {
                Caller::Tonic(KvClient::new(channels[c % channels.len()].clone()).max_decoding_message_size(64 << 20))
            }
            Conns::Raw(channels) => {
                let channel = channels[c % channels.len()].clone();
                Caller::Raw {
                    put: channel.method("/etcdserverpb.KV/Put")?,
                    range: channel.method("/etcdserverpb.KV/Range")?,
                    channel,
                }
            }
        })
    }
}

impl Caller {
    pub(crate) async fn put(&mut self, req: PutRequest) -> Result<PutResponse, String> {
        match self {
            Caller::Tonic(client) => client.put(req).await.map(|r| r.into_inner()).map_err(|s| s.to_string()),
            Caller::Raw { channel, put, .. } => channel.unary(put, &req).await,
        }
    }

    async fn range(&mut self, req: RangeRequest) -> Result<RangeResponse, String> {
        match self {
            Caller::Tonic(client) => client
                .range(req)
                .await
                .map(|r| r.into_inner())
                .map_err(|s| s.to_string()),
            Caller::Raw { channel, range, .. } => channel.unary(range, &req).await,
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    All,
    Leader,
    Followers,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::All => "all",
            Target::Leader => "leader",
            Target::Followers => "followers",
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct RangeArgs {
    #[command(flatten)]
    pub kv: KvArgs,
    /// Read consistency: l or linearizable (etcd's default), s or serializable (the
    /// member answers from its own state, without asking the leader).
    #[arg(long, default_value = "l")]
    pub consistency: String,
    /// Skip writing the key space before reading (it is already there).
    #[arg(long)]
    pub no_preload: bool,
    /// Clients writing the key space before the reads (default: --clients).
    #[arg(long)]
    pub preload_clients: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Put,
    Range { serializable: bool },
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Range { .. } => "range",
        }
    }
}

pub async fn run_put(a: KvArgs) -> BenchResult<()> {
    validate(&a)?;
    let deadline = Deadline::after(Duration::from_secs(a.timeout_s));
    let (used, conns) = setup(&a, deadline).await?;
    let r = drive(&a, a.clients, &conns, Op::Put, a.total, deadline, false).await?;
    report(&a, &used, Op::Put, &r, None);
    Ok(())
}

pub async fn run_range(r: RangeArgs) -> BenchResult<()> {
    let a = &r.kv;
    validate(a)?;
    let serializable = match r.consistency.as_str() {
        "l" | "linearizable" => false,
        "s" | "serializable" => true,
        other => {
            return Err(format!(
                "--consistency {other}: expected l, linearizable, s or serializable"
            ))
        }
    };
    let preload_clients = r.preload_clients.unwrap_or(a.clients);
    if preload_clients == 0 || preload_clients > 10_000 {
        return Err("--preload-clients must be in 1..=10000".into());
    }
    let deadline = Deadline::after(Duration::from_secs(a.timeout_s));
    let (used, conns) = setup(a, deadline).await?;
    let preload = if r.no_preload {
        None
    } else {
        // Every key of the space once, in order, so every read finds its key.
        let p = drive(a, preload_clients, &conns, Op::Put, a.key_space, deadline, true).await?;
        if p.ok < a.key_space {
            return Err(format!(
                "preload wrote {} of {} keys ({} errors, timed out: {}){}",
                p.ok,
                a.key_space,
                p.errors,
                p.timed_out,
                p.first_error
                    .as_ref()
                    .map(|e| format!("; first error: {e}"))
                    .unwrap_or_default()
            ));
        }
        Some(p)
    };
    let op = Op::Range { serializable };
    let res = drive(a, a.clients, &conns, op, a.total, deadline, false).await?;
    report(a, &used, op, &res, preload.as_ref());
    Ok(())
}

pub(crate) fn validate(a: &KvArgs) -> BenchResult<()> {
    parse_endpoints(&a.endpoints)?;
    if a.clients == 0 || a.conns == 0 {
        return Err("--clients and --conns must be at least 1".into());
    }
    if a.clients > 10_000 || a.conns > 1_000 {
        return Err("--clients is limited to 10000 and --conns to 1000".into());
    }
    let digits = a.key_space.saturating_sub(1).max(1).to_string().len();
    if a.key_size < digits + 1 {
        return Err(format!(
            "--key-size {} cannot hold {} distinct keys (needs {})",
            a.key_size,
            a.key_space,
            digits + 1
        ));
    }
    if a.key_space == 0 || a.total == 0 {
        return Err("--key-space and --total must be at least 1".into());
    }
    if a.val_size > 1 << 20 {
        return Err("--val-size is limited to 1 MiB".into());
    }
    Ok(())
}

/// Resolves `--target` and opens the connections; returns the endpoints used.
pub(crate) async fn setup(a: &KvArgs, deadline: Deadline) -> BenchResult<(Vec<SocketAddr>, Conns)> {
    let endpoints = parse_endpoints(&a.endpoints)?;
    let used = match a.target {
        Target::All => endpoints,
        target => {
            let view = wait_leader(&endpoints, Deadline::after(deadline.min_after(Duration::from_secs(10)))).await?;
            let used: Vec<SocketAddr> = endpoints
                .iter()
                .enumerate()
                .filter(|&(i, _)| (i == view.leader) == (target == Target::Leader))
                .map(|(_, e)| *e)
                .collect();
            if used.is_empty() {
                return Err(format!("--target {}: no such endpoint", target.name()));
            }
            used
        }
    };
    let n = a.conns.min(a.clients);
    let conns = match a.client {
        ClientKind::Tonic => Conns::Tonic(connect_all(&used, n, deadline).await?),
        ClientKind::Raw => {
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                out.push(rawgrpc::connect(used[i % used.len()], deadline).await?);
            }
            Conns::Raw(out)
        }
    };
    Ok((used, conns))
}

pub(crate) fn key(i: u64, size: usize) -> Vec<u8> {
    format!("k{:0width$}", i, width = size - 1).into_bytes()
}

#[derive(Debug)]
struct RunResult {
    ok: u64,
    errors: u64,
    timed_out: bool,
    first_error: Option<String>,
    misses: u64,
    elapsed: Duration,
    hist: Histogram<u64>,
}

/// Runs `count` requests of `op` over all clients. `sequential` walks keys 0..count in
/// order (the preload) instead of drawing them at random.
async fn drive(
    a: &KvArgs,
    clients: usize,
    conns: &Conns,
    op: Op,
    count: u64,
    deadline: Deadline,
    sequential: bool,
) -> BenchResult<RunResult> {
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    // Give up early when the server answers nothing but errors.
    let error_budget = (count / 10).max(100);
    let mut value = vec![0u8; a.val_size];
    Rng::new(0xC0FFEE).fill(&mut value);
    let template = PutRequest {
        value: value.into(),
        ..Default::default()
    };
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let mut client = conns.caller(c)?;
        let next = next.clone();
        let errors = errors.clone();
        let template = template.clone();
        let key_size = a.key_size;
        let key_space = a.key_space;
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(c as u64 + 1);
            let mut hist = new_histogram();
            let mut first_error = None;
            let mut timed_out = false;
            let mut misses = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count || errors.load(Ordering::Relaxed) > error_budget {
                    break;
                }
                if deadline.passed() {
                    timed_out = true;
                    break;
                }
                let k = if sequential { i } else { rng.below(key_space) };
                let k = key(k, key_size);
                let t0 = Instant::now();
                let res = match op {
                    Op::Put => {
                        let mut req = template.clone();
                        req.key = k.into();
                        tokio::time::timeout(deadline.remaining(), client.put(req))
                            .await
                            .map(|r| r.map(|_| true))
                    }
                    Op::Range { serializable } => {
                        let req = RangeRequest {
                            key: k.into(),
                            serializable,
                            ..Default::default()
                        };
                        tokio::time::timeout(deadline.remaining(), client.range(req))
                            .await
                            .map(|r| r.map(|resp| !resp.kvs.is_empty()))
                    }
                };
                match res {
                    Ok(Ok(found)) => {
                        record_us(&mut hist, t0.elapsed());
                        if !found {
                            misses += 1;
                        }
                    }
                    Ok(Err(status)) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        if first_error.is_none() {
                            first_error = Some(status);
                        }
                    }
                    Err(_) => {
                        timed_out = true;
                        break;
                    }
                }
            }
            (hist, first_error, timed_out, misses, Instant::now())
        }));
    }
    let mut hist = new_histogram();
    let mut first_error = None;
    let mut timed_out = false;
    let mut misses = 0;
    let mut last = started;
    for t in tasks {
        let (h, e, to, m, end) = t.await.map_err(|e| format!("client task failed: {e}"))?;
        hist.add(&h).map_err(|e| format!("merging histograms: {e}"))?;
        if first_error.is_none() {
            first_error = e;
        }
        timed_out |= to;
        misses += m;
        last = last.max(end);
    }
    Ok(RunResult {
        ok: hist.len(),
        errors: errors.load(Ordering::Relaxed),
        timed_out,
        first_error,
        misses,
        elapsed: last - started,
        hist,
    })
}

fn report(a: &KvArgs, used: &[SocketAddr], op: Op, r: &RunResult, preload: Option<&RunResult>) {
    let used_list = used.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(",");
    let secs = r.elapsed.as_secs_f64();
    let ops = if secs > 0.0 { r.ok as f64 / secs } else { 0.0 };
    let lat = LatencySummary::of(&r.hist);
    if a.json {
        let mut j = Json::new();
        j.str("bench", &format!("kv-{}", op.name()))
            .str("endpoints", &a.endpoints)
            .str("target", a.target.name())
            .str("client", a.client.name())
            .str("used_endpoints", &used_list)
            .int("clients", a.clients as i64)
            .int("conns", a.conns.min(a.clients) as i64)
            .int("total", a.total as i64)
            .int("key_size", a.key_size as i64)
            .int("val_size", a.val_size as i64)
            .int("key_space", a.key_space as i64)
            .int("ok", r.ok as i64)
            .int("errors", r.errors as i64)
            .bool("timed_out", r.timed_out)
            .num("elapsed_s", secs)
            .num("ops_per_s", ops)
            .obj("latency", lat.json());
        if let Op::Range { serializable } = op {
            j.bool("serializable", serializable).int("misses", r.misses as i64);
        }
        if let Some(p) = preload {
            j.int("preload_ok", p.ok as i64)
                .num("preload_s", p.elapsed.as_secs_f64());
        }
        if let Some(e) = &r.first_error {
            j.str("first_error", e);
        }
        println!("{}", j.render());
        return;
    }
    if let Some(p) = preload {
        println!("preload: {} keys in {:.2} s", p.ok, p.elapsed.as_secs_f64());
    }
    println!(
        "kv {} ({} gRPC client): {} clients over {} conns to {} ({}), key {} B, value {} B, key space {}",
        op.name(),
        a.client.name(),
        a.clients,
        a.conns.min(a.clients),
        used_list,
        a.target.name(),
        a.key_size,
        a.val_size,
        a.key_space
    );
    println!(
        "  {} ok, {} errors in {:.3} s: {:.1} ops/s{}",
        r.ok,
        r.errors,
        secs,
        ops,
        if r.timed_out { " (TIMED OUT)" } else { "" }
    );
    println!("  latency {}", lat.line());
    if let Op::Range { serializable } = op {
        println!(
            "  {} reads, {} misses",
            if serializable { "serializable" } else { "linearizable" },
            r.misses
        );
    }
    if let Some(e) = &r.first_error {
        println!("  first error: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_asked_size() {
        assert_eq!(key(7, 16), b"k000000000000007".to_vec());
        assert_eq!(key(123, 4).len(), 4);
    }
}
