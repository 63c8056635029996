//! `watch-fanout`: many watchers on one key (or prefix), events put one at a time, and
//! the time from each put to each watcher's receipt.
//!
//! 1. Open `--streams` watch streams over `--conns` connections, each with one watcher
//!    (a gRPC stream only counts as open once the server has answered on it).
//! 2. Read the server's RSS (`--pid`), create the other watchers, wait for every
//!    "created" answer, let the server settle, read the RSS again: the difference over
//!    the watchers added is the memory per idle watcher.
//! 3. Put `--events` values. Each value carries the run ID, its sequence number and the
//!    time the put was sent (on this process's monotonic clock), so every receipt gives a
//!    delivery latency without any clock agreement with the server. With `--rate 0` (the
//!    default) the next put is sent only when every watcher has the previous event, so the
//!    latency is that of one event fanning out to all watchers, not of a queue; with
//!    `--rate R` puts are sent open-loop at R per second.
//!
//! Reported: delivery latency per (watcher, event) from the put being sent and from its
//! acknowledgement, the time until all watchers had an event, deliveries per second over
//! the event phase, the put latency, and the memory figures.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan_proto::etcdserverpb::kv_client::KvClient;
use capstan_proto::etcdserverpb::watch_client::WatchClient;
use capstan_proto::etcdserverpb::watch_request::RequestUnion;
use capstan_proto::etcdserverpb::{PutRequest, WatchCreateRequest, WatchRequest};
use futures::channel::mpsc as fmpsc;
use futures::SinkExt;
use tokio::sync::Notify;
use tonic::transport::Channel;

use crate::common::{
    connect, connect_all, new_histogram, parse_endpoints, record_us, rss_bytes, BenchResult, Deadline, Json,
    LatencySummary, Rng,
};

/// Bytes at the start of every event value: magic, run ID, sequence number, send time.
const HEADER_LEN: usize = 24;
const MAGIC: &[u8; 4] = b"CSBW";

#[derive(clap::Args, Debug, Clone)]
pub struct WatchArgs {
    /// Comma-separated loopback endpoints (host:port).
    #[arg(long, default_value = "127.0.0.1:2379")]
    pub endpoints: String,
    /// Watchers in all.
    #[arg(long, default_value_t = 10_000)]
    pub watchers: usize,
    /// Watch streams the watchers are spread over (evenly).
    #[arg(long, default_value_t = 100)]
    pub streams: usize,
    /// HTTP/2 connections the streams are spread over.
    #[arg(long, default_value_t = 4)]
    pub conns: usize,
    /// Events (puts) to send.
    #[arg(long, default_value_t = 100)]
    pub events: u64,
    /// The watched key; with --prefix, the watched prefix (puts go to <key><seq>).
    #[arg(long, default_value = "/capstan-bench/watch")]
    pub key: String,
    /// Watch a prefix instead of a single key.
    #[arg(long)]
    pub prefix: bool,
    /// Puts per second, open loop; 0 waits for every watcher to have an event before
    /// sending the next.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Value length in bytes (at least 24: the header carrying the send time).
    #[arg(long, default_value_t = 64)]
    pub val_size: usize,
    /// PID of the server, to read its RSS before and after creating the watchers.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Milliseconds to wait after the last watcher is created before reading the RSS.
    #[arg(long, default_value_t = 1000)]
    pub settle_ms: u64,
    /// Longest wait for all watchers to have one event (lockstep mode).
    #[arg(long, default_value_t = 10)]
    pub event_timeout_s: u64,
    /// Seconds the whole run may take.
    #[arg(long, default_value_t = 120)]
    pub timeout_s: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What the stream tasks and the putter share.
struct Shared {
    epoch: Instant,
    run_id: u32,
    watchers: u32,
    created: AtomicU64,
    refused: AtomicU64,
    canceled: AtomicU64,
    delivered: AtomicU64,
    /// Deliveries per event.
    per_event: Vec<AtomicU32>,
    send_ns: Vec<AtomicU64>,
    ack_ns: Vec<AtomicU64>,
    /// Something the main task waits for may have happened.
    progress: Notify,
    first_refusal: std::sync::Mutex<Option<String>>,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

struct StreamOutcome {
    /// (event sequence number, receipt time in ns since the epoch)
    receipts: Vec<(u32, u64)>,
    error: Option<String>,
}

pub async fn run(a: WatchArgs) -> BenchResult<()> {
    let endpoints = parse_endpoints(&a.endpoints)?;
    if a.watchers == 0 || a.streams == 0 || a.conns == 0 || a.events == 0 {
        return Err("--watchers, --streams, --conns and --events must be at least 1".into());
    }
    if a.streams > a.watchers {
        return Err("--streams cannot exceed --watchers".into());
    }
    if a.watchers > 1_000_000 || a.streams > 10_000 || a.events > 1_000_000 {
        return Err("limits: --watchers 1000000, --streams 10000, --events 1000000".into());
    }
    if a.watchers as u64 * a.events > 200_000_000 {
        return Err("--watchers x --events is limited to 200 million deliveries".into());
    }
    if a.val_size < HEADER_LEN || a.val_size > 1 << 20 {
        return Err(format!("--val-size must be in {HEADER_LEN}..=1048576"));
    }
    if !(a.rate >= 0.0 && a.rate.is_finite()) {
        return Err("--rate must be a non-negative number".into());
    }
    let deadline = Deadline::after(Duration::from_secs(a.timeout_s));
    let (key, range_end) = if a.prefix {
        (a.key.as_bytes().to_vec(), prefix_end(a.key.as_bytes()))
    } else {
        (a.key.as_bytes().to_vec(), Vec::new())
    };
    let channels = connect_all(&endpoints, a.conns.min(a.streams), deadline).await?;
    let kv_channel = connect(endpoints[0], deadline).await?;
    let run_id = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(7)
        ^ std::process::id())
    .max(1);
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        run_id,
        watchers: a.watchers as u32,
        created: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        canceled: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        per_event: (0..a.events).map(|_| AtomicU32::new(0)).collect(),
        send_ns: (0..a.events).map(|_| AtomicU64::new(0)).collect(),
        ack_ns: (0..a.events).map(|_| AtomicU64::new(0)).collect(),
        progress: Notify::new(),
        first_refusal: std::sync::Mutex::new(None),
    });
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: key.clone().into(),
            range_end: range_end.clone().into(),
            ..Default::default()
        })),
    };

    // 1. One watcher per stream: the streams are open once these are created.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut senders = Vec::with_capacity(a.streams);
    let mut tasks = Vec::with_capacity(a.streams);
    let t_open = Instant::now();
    for s in 0..a.streams {
        let (mut tx, rx) = fmpsc::channel::<WatchRequest>(256);
        tx.try_send(create.clone())
            .map_err(|e| format!("queueing a create request: {e}"))?;
        senders.push(tx);
        let client = WatchClient::new(channels[s % channels.len()].clone()).max_decoding_message_size(64 << 20);
        tasks.push(tokio::spawn(stream_task(
            client,
            rx,
            shared.clone(),
            stop_rx.clone(),
            deadline,
        )));
    }
    wait_created(&shared, a.streams as u64, deadline).await?;
    let open_s = t_open.elapsed().as_secs_f64();
    let rss_before = match a.pid {
        Some(pid) => Some(rss_bytes(pid)?),
        None => None,
    };

    // 2. The other watchers, spread evenly.
    let t_create = Instant::now();
    let rest = a.watchers - a.streams;
    for i in 0..rest {
        let s = i % a.streams;
        match tokio::time::timeout(deadline.remaining(), senders[s].send(create.clone())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("stream {s} closed while creating watchers: {e}")),
            Err(_) => return Err("timed out creating watchers".into()),
        }
    }
    wait_created(&shared, a.watchers as u64, deadline).await?;
    let create_s = t_create.elapsed().as_secs_f64();
    let rss_after = match a.pid {
        Some(pid) => {
            tokio::time::sleep(deadline.min_after(Duration::from_millis(a.settle_ms))).await;
            Some(rss_bytes(pid)?)
        }
        None => None,
    };

    // 3. Events.
    let put_hist = put_events(&a, kv_channel, &key, &shared, deadline).await?;
    let expected = a.watchers as u64 * a.events;
    let drain_deadline = Deadline::after(deadline.min_after(Duration::from_secs(30)));
    while shared.delivered.load(Ordering::Acquire) < expected && !drain_deadline.passed() {
        let _ = tokio::time::timeout(
            drain_deadline.min_after(Duration::from_millis(100)),
            shared.progress.notified(),
        )
        .await;
    }
    let rss_end = match a.pid {
        Some(pid) => rss_bytes(pid).ok(),
        None => None,
    };
    let _ = stop_tx.send(true);
    drop(senders);
    let mut receipts = Vec::new();
    let mut stream_errors = Vec::new();
    for t in tasks {
        match tokio::time::timeout(Duration::from_secs(10), t).await {
            Ok(Ok(o)) => {
                receipts.extend(o.receipts);
                if let Some(e) = o.error {
                    stream_errors.push(e);
                }
            }
            Ok(Err(e)) => stream_errors.push(format!("stream task failed: {e}")),
            Err(_) => stream_errors.push("stream task did not stop".into()),
        }
    }

    // Results.
    let mut from_send = new_histogram();
    let mut from_ack = new_histogram();
    let mut before_ack = 0u64;
    let mut last_receipt = vec![0u64; a.events as usize];
    let send: Vec<u64> = shared.send_ns.iter().map(|v| v.load(Ordering::Acquire)).collect();
    let ack: Vec<u64> = shared.ack_ns.iter().map(|v| v.load(Ordering::Acquire)).collect();
    for &(seq, at) in &receipts {
        let i = seq as usize;
        record_us(&mut from_send, Duration::from_nanos(at.saturating_sub(send[i])));
        if ack[i] > 0 {
            if at < ack[i] {
                before_ack += 1;
            }
            record_us(&mut from_ack, Duration::from_nanos(at.saturating_sub(ack[i])));
        }
        last_receipt[i] = last_receipt[i].max(at);
    }
    let mut all_have = new_histogram();
    let mut complete_events = 0u64;
    for (i, c) in shared.per_event.iter().enumerate() {
        if c.load(Ordering::Acquire) >= a.watchers as u32 {
            complete_events += 1;
            record_us(
                &mut all_have,
                Duration::from_nanos(last_receipt[i].saturating_sub(send[i])),
            );
        }
    }
    let first_send = send.iter().copied().filter(|&s| s > 0).min().unwrap_or(0);
    let last_at = receipts.iter().map(|&(_, at)| at).max().unwrap_or(0);
    let phase_s = last_at.saturating_sub(first_send) as f64 / 1e9;
    let delivered = receipts.len() as u64;
    let deliveries_per_s = if phase_s > 0.0 { delivered as f64 / phase_s } else { 0.0 };
    let added = (a.watchers - a.streams) as i64;
    let per_watcher = match (rss_before, rss_after) {
        (Some(b), Some(af)) if added > 0 => Some((af as i64 - b as i64) as f64 / added as f64),
        _ => None,
    };
    let refused = shared.refused.load(Ordering::Acquire);
    let canceled = shared.canceled.load(Ordering::Acquire);
    let first_refusal = shared.first_refusal.lock().map(|g| g.clone()).unwrap_or_default();
    let timed_out = deadline.passed() || delivered < expected;

    let send_l = LatencySummary::of(&from_send);
    let ack_l = LatencySummary::of(&from_ack);
    let all_l = LatencySummary::of(&all_have);
    let put_l = LatencySummary::of(&put_hist);
    if a.json {
        let mut j = Json::new();
        j.str("bench", "watch-fanout")
            .str("endpoints", &a.endpoints)
            .int("watchers", a.watchers as i64)
            .int("streams", a.streams as i64)
            .int("conns", a.conns.min(a.streams) as i64)
            .int("events", a.events as i64)
            .bool("prefix", a.prefix)
            .num("rate", a.rate)
            .int("val_size", a.val_size as i64)
            .num("open_s", open_s)
            .num("create_s", create_s)
            .int("expected_deliveries", expected as i64)
            .int("deliveries", delivered as i64)
            .int("complete_events", complete_events as i64)
            .int("delivered_before_put_ack", before_ack as i64)
            .num("event_phase_s", phase_s)
            .num("deliveries_per_s", deliveries_per_s)
            .obj("delivery_from_send", send_l.json())
            .obj("delivery_from_ack", ack_l.json())
            .obj("all_watchers_have_event", all_l.json())
            .obj("put", put_l.json())
            .opt_int("rss_before_bytes", rss_before.map(|v| v as i64))
            .opt_int("rss_after_create_bytes", rss_after.map(|v| v as i64))
            .opt_int("rss_end_bytes", rss_end.map(|v| v as i64))
            .int("watchers_measured", added);
        match per_watcher {
            Some(v) => j.num("bytes_per_idle_watcher", v),
            None => j.opt_int("bytes_per_idle_watcher", None),
        };
        j.int("refused", refused as i64)
            .int("canceled", canceled as i64)
            .bool("timed_out", timed_out);
        if let Some(e) = &first_refusal {
            j.str("first_refusal", e);
        }
        if let Some(e) = stream_errors.first() {
            j.str("first_stream_error", e);
        }
        println!("{}", j.render());
    } else {
        println!(
            "watch fan-out: {} watchers on {} {:?} over {} streams / {} conns, {} events{}",
            a.watchers,
            if a.prefix { "prefix" } else { "key" },
            a.key,
            a.streams,
            a.conns.min(a.streams),
            a.events,
            if a.rate > 0.0 {
                format!(" at {} puts/s", a.rate)
            } else {
                " one at a time (next put after every watcher has the last)".into()
            }
        );
        println!(
            "  streams opened in {open_s:.3} s; other {} watchers created in {create_s:.3} s",
            a.watchers - a.streams
        );
        println!(
            "  deliveries: {delivered} of {expected} ({complete_events} of {} events reached every watcher){}",
            a.events,
            if timed_out { " (INCOMPLETE)" } else { "" }
        );
        println!("  deliveries/s: {deliveries_per_s:.0} over {phase_s:.3} s of event phase");
        println!("  delivery latency from put sent: {}", send_l.line());
        println!("  delivery latency from put ack:  {}", ack_l.line());
        println!("    ({before_ack} deliveries arrived before the put's acknowledgement)");
        println!("  all watchers have the event:    {}", all_l.line());
        println!("  put latency:                    {}", put_l.line());
        if let (Some(b), Some(af)) = (rss_before, rss_after) {
            println!(
                "  server RSS: {:.1} MiB with {} watchers, {:.1} MiB with {} (after {} ms settle), {} at the end",
                b as f64 / 1048576.0,
                a.streams,
                af as f64 / 1048576.0,
                a.watchers,
                a.settle_ms,
                rss_end
                    .map(|v| format!("{:.1} MiB", v as f64 / 1048576.0))
                    .unwrap_or_else(|| "?".into())
            );
            if let Some(pw) = per_watcher {
                println!("  memory per idle watcher: {pw:.0} B ({added} watchers added)");
            }
        }
        if refused > 0 || canceled > 0 {
            println!(
                "  refused creates: {refused}, canceled watchers: {canceled}{}",
                first_refusal
                    .as_ref()
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default()
            );
        }
        for e in stream_errors.iter().take(3) {
            println!("  stream error: {e}");
        }
    }
    if refused > 0 {
        return Err(format!("{refused} watchers were refused"));
    }
    Ok(())
}

/// Waits until `target` watchers are created (or refused).
async fn wait_created(shared: &Shared, target: u64, deadline: Deadline) -> BenchResult<()> {
    loop {
        let created = shared.created.load(Ordering::Acquire);
        let refused = shared.refused.load(Ordering::Acquire);
        if refused > 0 {
            let why = shared
                .first_refusal
                .lock()
                .map(|g| g.clone())
                .unwrap_or_default()
                .unwrap_or_default();
            return Err(format!(
                "the server refused {refused} watchers ({created} created): {why}"
            ));
        }
        if created >= target {
            return Ok(());
        }
        if deadline.passed() {
            return Err(format!("timed out with {created} of {target} watchers created"));
        }
        let _ = tokio::time::timeout(
            deadline.min_after(Duration::from_millis(100)),
            shared.progress.notified(),
        )
        .await;
    }
}

async fn stream_task(
    mut client: WatchClient<Channel>,
    requests: fmpsc::Receiver<WatchRequest>,
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    deadline: Deadline,
) -> StreamOutcome {
    let mut out = StreamOutcome {
        receipts: Vec::new(),
        error: None,
    };
    let mut inbound = tokio::select! {
        r = tokio::time::timeout(deadline.remaining(), client.watch(requests)) => match r {
            Ok(Ok(resp)) => resp.into_inner(),
            Ok(Err(status)) => {
                out.error = Some(format!("opening the watch stream: {status}"));
                note_refusal(&shared, &format!("stream: {status}"));
                return out;
            }
            Err(_) => {
                out.error = Some("opening the watch stream timed out".into());
                return out;
            }
        },
        _ = stop.changed() => return out,
    };
    // One timer for the whole stream, not one per message: a fan-out run reads millions
    // of messages, and the load tool shares the machine with the server it measures.
    let expiry = tokio::time::sleep(deadline.remaining());
    tokio::pin!(expiry);
    loop {
        // Not biased: a stream that never goes quiet must still see the stop and the
        // deadline.
        let msg = tokio::select! {
            m = inbound.message() => m,
            _ = stop.changed() => break,
            _ = &mut expiry => break,
        };
        let resp = match msg {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(status) => {
                out.error = Some(format!("watch stream: {status}"));
                break;
            }
        };
        let at = shared.now_ns();
        if resp.created {
            if resp.canceled {
                note_refusal(&shared, &resp.cancel_reason);
            } else {
                shared.created.fetch_add(1, Ordering::AcqRel);
            }
            shared.progress.notify_one();
            continue;
        }
        if resp.canceled {
            shared.canceled.fetch_add(1, Ordering::AcqRel);
            continue;
        }
        for ev in &resp.events {
            let Some(kv) = &ev.kv else { continue };
            let Some(seq) = parse_value(&kv.value, shared.run_id) else {
                continue;
            };
            if seq as usize >= shared.per_event.len() {
                continue;
            }
            out.receipts.push((seq as u32, at));
            let n = shared.per_event[seq as usize].fetch_add(1, Ordering::AcqRel) + 1;
            let total = shared.delivered.fetch_add(1, Ordering::AcqRel) + 1;
            if n == shared.watchers || total == shared.watchers as u64 * shared.per_event.len() as u64 {
                shared.progress.notify_one();
            }
        }
    }
    out
}

fn note_refusal(shared: &Shared, why: &str) {
    shared.refused.fetch_add(1, Ordering::AcqRel);
    if let Ok(mut g) = shared.first_refusal.lock() {
        g.get_or_insert_with(|| why.to_string());
    }
    shared.progress.notify_one();
}

/// Sends the events; returns the put latencies.
async fn put_events(
    a: &WatchArgs,
    channel: Channel,
    key: &[u8],
    shared: &Arc<Shared>,
    deadline: Deadline,
) -> BenchResult<hdrhistogram::Histogram<u64>> {
    let client = KvClient::new(channel);
    let mut padding = vec![0u8; a.val_size - HEADER_LEN];
    Rng::new(42).fill(&mut padding);
    let make = |seq: u64, send_ns: u64| -> PutRequest {
        let mut v = Vec::with_capacity(a.val_size);
        v.extend_from_slice(MAGIC);
        v.extend_from_slice(&shared.run_id.to_be_bytes());
        v.extend_from_slice(&seq.to_be_bytes());
        v.extend_from_slice(&send_ns.to_be_bytes());
        v.extend_from_slice(&padding);
        let k = if a.prefix {
            let mut k = key.to_vec();
            k.extend_from_slice(format!("{seq:08}").as_bytes());
            k
        } else {
            key.to_vec()
        };
        PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        }
    };
    let mut hist = new_histogram();
    if a.rate > 0.0 {
        let interval = Duration::from_secs_f64(1.0 / a.rate);
        let start = tokio::time::Instant::now();
        let mut inflight = tokio::task::JoinSet::new();
        for seq in 0..a.events {
            if deadline.passed() {
                break;
            }
            tokio::time::sleep_until(start + interval.mul_f64(seq as f64)).await;
            let mut c = client.clone();
            let shared = shared.clone();
            let t0 = Instant::now();
            let send_ns = shared.now_ns();
            shared.send_ns[seq as usize].store(send_ns, Ordering::Release);
            let req = make(seq, send_ns);
            inflight.spawn(async move {
                let r = tokio::time::timeout(deadline.remaining(), c.put(req)).await;
                shared.ack_ns[seq as usize].store(shared.now_ns(), Ordering::Release);
                (r, t0.elapsed())
            });
            while let Some(done) = inflight.try_join_next() {
                record_put(&mut hist, done)?;
            }
        }
        while let Some(done) = inflight.join_next().await {
            record_put(&mut hist, done)?;
        }
    } else {
        let mut c = client;
        let per_event = Duration::from_secs(a.event_timeout_s);
        for seq in 0..a.events {
            if deadline.passed() {
                break;
            }
            let t0 = Instant::now();
            let send_ns = shared.now_ns();
            shared.send_ns[seq as usize].store(send_ns, Ordering::Release);
            let r = tokio::time::timeout(deadline.remaining(), c.put(make(seq, send_ns))).await;
            shared.ack_ns[seq as usize].store(shared.now_ns(), Ordering::Release);
            record_put(&mut hist, Ok((r, t0.elapsed())))?;
            let until = Deadline::after(deadline.min_after(per_event));
            while shared.per_event[seq as usize].load(Ordering::Acquire) < shared.watchers && !until.passed() {
                let _ =
                    tokio::time::timeout(until.min_after(Duration::from_millis(100)), shared.progress.notified()).await;
            }
        }
    }
    Ok(hist)
}

type PutOutcome = (
    Result<
        Result<tonic::Response<capstan_proto::etcdserverpb::PutResponse>, tonic::Status>,
        tokio::time::error::Elapsed,
    >,
    Duration,
);

fn record_put(
    hist: &mut hdrhistogram::Histogram<u64>,
    done: Result<PutOutcome, tokio::task::JoinError>,
) -> BenchResult<()> {
    match done {
        Ok((Ok(Ok(_)), took)) => {
            record_us(hist, took);
            Ok(())
        }
        Ok((Ok(Err(status)), _)) => Err(format!("put failed: {status}")),
        Ok((Err(_), _)) => Err("put timed out".into()),
        Err(e) => Err(format!("put task failed: {e}")),
    }
}

/// The sequence number in a value this run wrote, or None.
fn parse_value(v: &[u8], run_id: u32) -> Option<u64> {
    if v.len() < HEADER_LEN || &v[..4] != MAGIC {
        return None;
    }
    let id = u32::from_be_bytes(v[4..8].try_into().ok()?);
    if id != run_id {
        return None;
    }
    Some(u64::from_be_bytes(v[8..16].try_into().ok()?))
}

/// etcd's prefix range end: the prefix with its last byte below 0xff incremented.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b".to_vec());
        assert_eq!(prefix_end(&[0xff]), vec![0]);
    }

    #[test]
    fn values_carry_run_and_sequence() {
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&9u32.to_be_bytes());
        v.extend_from_slice(&5u64.to_be_bytes());
        v.extend_from_slice(&0u64.to_be_bytes());
        assert_eq!(parse_value(&v, 9), Some(5));
        assert_eq!(parse_value(&v, 8), None);
        assert_eq!(parse_value(&v[..10], 9), None);
    }
}
