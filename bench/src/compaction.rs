//! `compaction`: put throughput and latency before, during and after one compaction of a
//! long history.
//!
//! etcd's users report latency spikes and throughput dips while the store compacts: the
//! old revisions of every key are deleted from the backend, which competes with the
//! writes for the disk, the write lock and the CPU. This workload makes such a
//! compaction happen at a known moment under a steady put load and measures the load on
//! each side of it.
//!
//! The run, in three steps:
//!
//! 1. **History.** `--history` puts over `--keys` keys drawn uniformly (so with the
//!    defaults each key has about 200 old revisions), issued by the same clients and
//!    connections as the load, through the cheap client of [`crate::rawgrpc`] as
//!    `kv put --client raw` does. Every put makes one revision; the run fails unless all
//!    are acknowledged.
//! 2. **Load.** `--clients` closed-loop clients over `--conns` HTTP/2 connections
//!    (client i on connection i mod conns, connection j to endpoint j mod endpoints, as
//!    in `kv put`) put random keys of the same key space for `--duration-s`. Every put's
//!    latency and completion time (from the start of the load) is kept, 8 bytes per put.
//! 3. **Compaction.** At `--compact-at-s` into the load, a separate connection asks for
//!    the current revision (a linearizable Range of one key; its header's revision) and
//!    sends one Compact request at that revision (`physical` as `--physical` says; with
//!    physical set, etcd answers only when the compaction has deleted the old
//!    revisions from its backend, not when the compaction is merely recorded). With
//!    several endpoints the Compact goes to the agreed leader (Maintenance.Status); the
//!    load is spread over all of them. If the answer comes later than 3 s before the end
//!    of `--duration-s`, the load goes on until 3 s after the answer, so that the
//!    `after` phase always spans at least 2 s.
//!
//! The puts are put in phases by their completion time: `before` is [load start,
//! Compact sent), `during` is [Compact sent, Compact answered + 1 s) (the second after
//! the answer catches the backend's catching up: a flush, a commit), `after` is the rest.
//! Each phase reports puts per second over its span, p50, p99 and maximum latency (an
//! HdrHistogram as in `kv`). The whole load is also cut into 100 ms windows (only the
//! complete ones before the load is told to stop), whose smallest and largest rates show
//! a stall that the phase averages would smooth over; `windows` lists every window's put
//! count for a plot, and `compact_sent_s` when the Compact went out.
//!
//! Bounds: the run ends by `--timeout-s` (connections, history and load included; a
//! compaction not answered by then leaves `compact_ms` null and `timed_out` true), the
//! load stops early after 1,000 failed puts, and at most 50 million puts' samples are
//! kept (a client stops when its share is full; at the rates of one machine a run of
//! `--duration-s` 600 stays far below that).
//!
//! Left out: compacting several times (auto-compaction's rhythm), defragmentation (a
//! separate Maintenance call, which etcd users schedule apart from compaction), reads
//! during the compaction, and the server's memory and disk use. The current revision
//! is read just before the Compact rather than taken from the puts' answers, so the
//! compaction covers every put acknowledged until then.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan_proto::etcdserverpb::{CompactionRequest, CompactionResponse, PutRequest, RangeRequest, RangeResponse};
use hdrhistogram::Histogram;
use serde_json::json;

use crate::cluster::wait_leader;
use crate::common::{fmt_us, new_histogram, parse_endpoints, BenchResult, Deadline, LatencySummary, Rng};
use crate::kv::{self, ClientKind, Conns, KvArgs, Target};
use crate::rawgrpc;

/// Width of the windows the load's rate is counted in.
const WINDOW_US: u64 = 100_000;
/// The `during` phase lasts until this long after the Compact's answer.
const DURING_TAIL_US: u64 = 1_000_000;
/// The load lasts at least this long after the Compact's answer (so `after` spans at
/// least this minus [`DURING_TAIL_US`]).
const LOAD_AFTER_ANSWER: Duration = Duration::from_secs(3);
/// Failed puts after which the load (or the history) stops.
const ERRORS_MAX: u64 = 1_000;
/// Samples kept over all clients (8 bytes each).
const SAMPLES_MAX: usize = 50_000_000;

#[derive(clap::Args, Debug, Clone)]
pub struct CompactionArgs {
    /// Comma-separated loopback endpoints (host:port); the load is spread over all, the
    /// Compact goes to the leader.
    #[arg(long, default_value = "127.0.0.1:2379")]
    pub endpoints: String,
    /// Revisions (puts) written before the load, all to be compacted away but the last
    /// of each key.
    #[arg(long, default_value_t = 200_000)]
    pub history: u64,
    /// Keys the history and the load put to (drawn uniformly).
    #[arg(long, default_value_t = 1_000)]
    pub keys: u64,
    /// Concurrent clients of the load (each has one put in flight).
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// HTTP/2 connections the clients share.
    #[arg(long, default_value_t = 8)]
    pub conns: usize,
    /// Seconds of put load (longer if the compaction is answered less than 3 s before
    /// its end).
    #[arg(long, default_value_t = 12)]
    pub duration_s: u64,
    /// Seconds into the load at which the Compact is sent.
    #[arg(long, default_value_t = 4)]
    pub compact_at_s: u64,
    /// Ask for a physical compaction (answered once the old revisions are deleted):
    /// `--physical false` for etcd's default, answered when it is recorded.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub physical: bool,
    /// Key length in bytes (a "k" and a zero-padded number).
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,
    /// Value length in bytes (random).
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
    /// Seconds the whole run may take, connections and history included.
    #[arg(long, default_value_t = 120)]
    pub timeout_s: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One acknowledged put of the load: when it was answered (µs from the load's start)
/// and how long it took (µs).
#[derive(Clone, Copy, Debug)]
struct Sample {
    done_us: u32,
    latency_us: u32,
}

/// What the Compact did, in µs from the load's start.
#[derive(Clone, Copy, Debug)]
struct CompactTimes {
    revision: i64,
    sent_us: u64,
    /// None when the deadline passed first.
    answered_us: Option<u64>,
}

/// One phase's numbers.
#[derive(Clone, Copy, Debug, Default)]
struct Phase {
    puts: u64,
    span_us: u64,
    latency: LatencySummary,
}

impl Phase {
    fn ops_per_s(&self) -> f64 {
        if self.span_us == 0 {
            0.0
        } else {
            self.puts as f64 * 1e6 / self.span_us as f64
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "ops_per_s": self.ops_per_s(),
            "p50_us": self.latency.p50_us,
            "p99_us": self.latency.p99_us,
            "max_us": self.latency.max_us,
            "puts": self.puts,
        })
    }

    fn line(&self, name: &str) -> String {
        format!(
            "  {name:<7} {:>10.1} puts/s over {:>7.3} s ({} puts)  p50 {}  p99 {}  max {}",
            self.ops_per_s(),
            self.span_us as f64 / 1e6,
            self.puts,
            fmt_us(self.latency.p50_us as f64),
            fmt_us(self.latency.p99_us as f64),
            fmt_us(self.latency.max_us as f64),
        )
    }
}

/// The load's samples cut into phases and windows.
#[derive(Debug)]
struct Analysis {
    before: Phase,
    during: Phase,
    after: Phase,
    windows: Vec<u64>,
}

fn validate(a: &CompactionArgs) -> BenchResult<()> {
    if a.history == 0 || a.history > 100_000_000 {
        return Err("--history must be in 1..=100000000".into());
    }
    if a.keys == 0 {
        return Err("--keys must be at least 1".into());
    }
    if a.duration_s == 0 || a.duration_s > 600 {
        return Err("--duration-s must be in 1..=600".into());
    }
    if a.compact_at_s == 0 || a.compact_at_s >= a.duration_s {
        return Err(format!(
            "--compact-at-s {} must be at least 1 and below --duration-s {}",
            a.compact_at_s, a.duration_s
        ));
    }
    if a.timeout_s <= a.duration_s || a.timeout_s > 3600 {
        return Err(format!(
            "--timeout-s {} must exceed --duration-s {} and be at most 3600",
            a.timeout_s, a.duration_s
        ));
    }
    Ok(())
}

/// The `kv put` settings of the same connections and keys.
fn kv_args(a: &CompactionArgs) -> KvArgs {
    KvArgs {
        endpoints: a.endpoints.clone(),
        clients: a.clients,
        conns: a.conns,
        target: Target::All,
        total: a.history,
        key_size: a.key_size,
        val_size: a.val_size,
        key_space: a.keys,
        timeout_s: a.timeout_s,
        json: a.json,
        client: ClientKind::Raw,
    }
}

fn put_template(val_size: usize) -> PutRequest {
    let mut value = vec![0u8; val_size];
    Rng::new(0xC0FFEE).fill(&mut value);
    PutRequest {
        value: value.into(),
        ..Default::default()
    }
}

pub async fn run(a: CompactionArgs) -> BenchResult<()> {
    validate(&a)?;
    let kv = kv_args(&a);
    kv::validate(&kv)?;
    let deadline = Deadline::after(Duration::from_secs(a.timeout_s));
    let endpoints = parse_endpoints(&a.endpoints)?;
    let compact_addr = if endpoints.len() > 1 {
        let view = wait_leader(&endpoints, Deadline::after(deadline.min_after(Duration::from_secs(10)))).await?;
        endpoints[view.leader]
    } else {
        endpoints[0]
    };
    let (_, conns) = kv::setup(&kv, deadline).await?;
    let compact_channel = rawgrpc::connect(compact_addr, deadline).await?;

    let history = write_history(&a, &conns, deadline).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let clients = spawn_load(&a, &conns, start, stop.clone(), errors.clone(), deadline)?;

    let compacted = compact(&a, compact_channel, compact_addr, start, deadline).await;
    let (times, compact_timed_out) = match compacted {
        Ok(Some(t)) => {
            let answered = t.answered_us.unwrap_or_else(|| deadline_us(start, deadline));
            let stop_at =
                start + Duration::from_secs(a.duration_s).max(Duration::from_micros(answered) + LOAD_AFTER_ANSWER);
            tokio::time::sleep(
                stop_at
                    .saturating_duration_since(Instant::now())
                    .min(deadline.remaining()),
            )
            .await;
            (Some(t), t.answered_us.is_none())
        }
        Ok(None) => (None, true),
        Err(e) => {
            stop.store(true, Ordering::Relaxed);
            for c in clients {
                let _ = c.await;
            }
            return Err(e);
        }
    };
    stop.store(true, Ordering::Relaxed);
    let stop_us = micros_since(start, Instant::now());

    let mut samples = Vec::new();
    let mut timed_out = compact_timed_out;
    let mut first_error = None;
    for c in clients {
        let (s, to, e) = c.await.map_err(|e| format!("client task failed: {e}"))?;
        samples.extend(s);
        timed_out |= to;
        if first_error.is_none() {
            first_error = e;
        }
    }
    let Some(times) = times else {
        return Err("the deadline passed before the Compact was sent".into());
    };
    let analysis = analyse(&samples, times, stop_us)?;
    let errors = errors.load(Ordering::Relaxed);
    if let Some(e) = &first_error {
        eprintln!("capstan-bench compaction: {errors} failed puts; the first: {e}");
    }
    report(&a, compact_addr, history, times, &analysis, errors, timed_out);
    Ok(())
}

fn micros_since(start: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(start).as_micros()).unwrap_or(u64::MAX)
}

fn deadline_us(start: Instant, deadline: Deadline) -> u64 {
    micros_since(start, Instant::now() + deadline.remaining())
}

/// Writes the history: `history` puts of random keys over all clients. Fails unless all
/// are acknowledged. Returns the number written.
async fn write_history(a: &CompactionArgs, conns: &Conns, deadline: Deadline) -> BenchResult<u64> {
    let next = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let template = put_template(a.val_size);
    let mut tasks = Vec::with_capacity(a.clients);
    for c in 0..a.clients {
        let mut caller = conns.caller(c)?;
        let (next, ok, errors, template) = (next.clone(), ok.clone(), errors.clone(), template.clone());
        let (history, keys, key_size) = (a.history, a.keys, a.key_size);
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(0x4157 + c as u64);
            let mut first_error = None;
            while next.fetch_add(1, Ordering::Relaxed) < history
                && errors.load(Ordering::Relaxed) < ERRORS_MAX
                && !deadline.passed()
            {
                let mut req = template.clone();
                req.key = kv::key(rng.below(keys), key_size).into();
                match tokio::time::timeout(deadline.remaining(), caller.put(req)).await {
                    Ok(Ok(_)) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Err(e)) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error.get_or_insert(e);
                    }
                    Err(_) => break,
                }
            }
            first_error
        }));
    }
    let mut first_error = None;
    for t in tasks {
        let e = t.await.map_err(|e| format!("history task failed: {e}"))?;
        if first_error.is_none() {
            first_error = e;
        }
    }
    let written = ok.load(Ordering::Relaxed);
    if written < a.history {
        return Err(format!(
            "the history has {written} of {} puts ({} errors, deadline passed: {}){}",
            a.history,
            errors.load(Ordering::Relaxed),
            deadline.passed(),
            first_error.map(|e| format!("; first error: {e}")).unwrap_or_default()
        ));
    }
    Ok(written)
}

type ClientOutcome = (Vec<Sample>, bool, Option<String>);

/// Starts the load's clients; they put until `stop` is set, the deadline passes, the
/// load has failed [`ERRORS_MAX`] times or their share of samples is full.
fn spawn_load(
    a: &CompactionArgs,
    conns: &Conns,
    start: Instant,
    stop: Arc<AtomicBool>,
    errors: Arc<AtomicU64>,
    deadline: Deadline,
) -> BenchResult<Vec<tokio::task::JoinHandle<ClientOutcome>>> {
    let template = put_template(a.val_size);
    let samples_max = SAMPLES_MAX / a.clients.max(1);
    let mut tasks = Vec::with_capacity(a.clients);
    for c in 0..a.clients {
        let mut caller = conns.caller(c)?;
        let (stop, errors, template) = (stop.clone(), errors.clone(), template.clone());
        let (keys, key_size) = (a.keys, a.key_size);
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(c as u64 + 1);
            let mut samples = Vec::with_capacity(4096);
            let mut first_error = None;
            let mut timed_out = false;
            while !stop.load(Ordering::Relaxed)
                && errors.load(Ordering::Relaxed) < ERRORS_MAX
                && samples.len() < samples_max
            {
                if deadline.passed() {
                    timed_out = true;
                    break;
                }
                let mut req = template.clone();
                req.key = kv::key(rng.below(keys), key_size).into();
                let t0 = Instant::now();
                match tokio::time::timeout(deadline.remaining(), caller.put(req)).await {
                    Ok(Ok(_)) => {
                        let done = Instant::now();
                        samples.push(Sample {
                            done_us: u32::try_from(micros_since(start, done)).unwrap_or(u32::MAX),
                            latency_us: u32::try_from(micros_since(t0, done)).unwrap_or(u32::MAX),
                        });
                    }
                    Ok(Err(e)) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error.get_or_insert(e);
                    }
                    Err(_) => {
                        timed_out = true;
                        break;
                    }
                }
            }
            (samples, timed_out, first_error)
        }));
    }
    Ok(tasks)
}

/// Waits until `--compact-at-s` into the load, reads the current revision and compacts
/// at it. `Ok(None)` when the deadline passed before the Compact was sent; an answer
/// that does not come by the deadline leaves `answered_us` empty.
async fn compact(
    a: &CompactionArgs,
    mut channel: rawgrpc::RawChannel,
    addr: SocketAddr,
    start: Instant,
    deadline: Deadline,
) -> BenchResult<Option<CompactTimes>> {
    let at = start + Duration::from_secs(a.compact_at_s);
    tokio::time::sleep(at.saturating_duration_since(Instant::now()).min(deadline.remaining())).await;
    if deadline.passed() {
        return Ok(None);
    }
    let range = channel.method("/etcdserverpb.KV/Range")?;
    let compact = channel.method("/etcdserverpb.KV/Compact")?;
    let req = RangeRequest {
        key: kv::key(0, a.key_size).into(),
        count_only: true,
        ..Default::default()
    };
    let revision =
        match tokio::time::timeout(deadline.remaining(), channel.unary::<_, RangeResponse>(&range, &req)).await {
            Ok(Ok(r)) => r.header.map(|h| h.revision).unwrap_or_default(),
            Ok(Err(e)) => return Err(format!("{addr}: reading the current revision: {e}")),
            Err(_) => return Ok(None),
        };
    if revision < 2 {
        return Err(format!(
            "{addr}: the current revision is {revision}; nothing to compact"
        ));
    }
    let req = CompactionRequest {
        revision,
        physical: a.physical,
    };
    let sent = Instant::now();
    let answered = match tokio::time::timeout(
        deadline.remaining(),
        channel.unary::<_, CompactionResponse>(&compact, &req),
    )
    .await
    {
        Ok(Ok(_)) => Some(Instant::now()),
        Ok(Err(e)) => return Err(format!("{addr}: Compact at revision {revision}: {e}")),
        Err(_) => None,
    };
    Ok(Some(CompactTimes {
        revision,
        sent_us: micros_since(start, sent),
        answered_us: answered.map(|t| micros_since(start, t)),
    }))
}

/// Cuts the samples into the phases and the 100 ms windows; `stop_us` is when the load
/// was told to stop (the windows end at the last whole one before it).
fn analyse(samples: &[Sample], t: CompactTimes, stop_us: u64) -> BenchResult<Analysis> {
    let last_us = samples.iter().map(|s| u64::from(s.done_us)).max().unwrap_or(0);
    let end_us = stop_us.max(last_us + 1);
    let during_end = t
        .answered_us
        .map_or(end_us, |a| a.saturating_add(DURING_TAIL_US).min(end_us))
        .max(t.sent_us);
    let bounds = [
        (0, t.sent_us.min(end_us)),
        (t.sent_us.min(end_us), during_end),
        (during_end, end_us),
    ];
    let mut hists: [Histogram<u64>; 3] = [new_histogram(), new_histogram(), new_histogram()];
    let mut windows = vec![0u64; usize::try_from(stop_us / WINDOW_US).unwrap_or(0)];
    for s in samples {
        let done = u64::from(s.done_us);
        let phase = bounds.iter().position(|&(lo, hi)| done >= lo && done < hi).unwrap_or(2);
        hists[phase]
            .record(u64::from(s.latency_us).clamp(1, 600_000_000))
            .map_err(|e| format!("recording a latency: {e}"))?;
        if let Some(w) = windows.get_mut(usize::try_from(done / WINDOW_US).unwrap_or(usize::MAX)) {
            *w += 1;
        }
    }
    let phase = |i: usize| Phase {
        puts: hists[i].len(),
        span_us: bounds[i].1.saturating_sub(bounds[i].0),
        latency: LatencySummary::of(&hists[i]),
    };
    Ok(Analysis {
        before: phase(0),
        during: phase(1),
        after: phase(2),
        windows,
    })
}

fn window_rate(count: u64) -> f64 {
    count as f64 * 1e6 / WINDOW_US as f64
}

fn report(
    a: &CompactionArgs,
    compact_addr: SocketAddr,
    history: u64,
    t: CompactTimes,
    r: &Analysis,
    errors: u64,
    timed_out: bool,
) {
    let compact_ms = t.answered_us.map(|u| u.saturating_sub(t.sent_us) as f64 / 1e3);
    let min_window = r.windows.iter().copied().min().map_or(0.0, window_rate);
    let max_window = r.windows.iter().copied().max().map_or(0.0, window_rate);
    if a.json {
        let j = json!({
            "history": history,
            "compact_revision": t.revision,
            "compact_ms": compact_ms,
            "compact_sent_s": t.sent_us as f64 / 1e6,
            "before": r.before.json(),
            "during": r.during.json(),
            "after": r.after.json(),
            "min_window_ops_per_s": min_window,
            "max_window_ops_per_s": max_window,
            "windows": r.windows,
            "errors": errors,
            "timed_out": timed_out,
        });
        println!("{j}");
        return;
    }
    println!(
        "compaction: history of {history} puts over {} keys; {} clients over {} conns to {}",
        a.keys,
        a.clients,
        a.conns.min(a.clients),
        a.endpoints
    );
    println!(
        "  Compact at revision {} ({}) to {compact_addr} sent {:.3} s into the load, {}",
        t.revision,
        if a.physical { "physical" } else { "not physical" },
        t.sent_us as f64 / 1e6,
        compact_ms.map_or("not answered".to_string(), |ms| format!("answered in {ms:.1} ms"))
    );
    println!("{}", r.before.line("before"));
    println!("{}", r.during.line("during"));
    println!("{}", r.after.line("after"));
    println!(
        "  100 ms windows: {} of them, slowest {:.0} puts/s, fastest {:.0} puts/s",
        r.windows.len(),
        min_window,
        max_window
    );
    println!("  {errors} errors{}", if timed_out { " (TIMED OUT)" } else { "" });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(done_us: u32, latency_us: u32) -> Sample {
        Sample { done_us, latency_us }
    }

    #[test]
    fn samples_fall_into_phases_and_windows() {
        // Compact sent at 1 s, answered at 1.5 s: during is [1 s, 2.5 s), stop at 4 s.
        let t = CompactTimes {
            revision: 10,
            sent_us: 1_000_000,
            answered_us: Some(1_500_000),
        };
        let samples = [
            sample(50_000, 100),
            sample(999_999, 200),
            sample(1_000_000, 5_000),
            sample(2_499_999, 7_000),
            sample(2_500_000, 300),
            sample(4_000_100, 400), // drained after the stop: after, no window
        ];
        let r = analyse(&samples, t, 4_000_000).expect("valid samples");
        assert_eq!((r.before.puts, r.during.puts, r.after.puts), (2, 2, 2));
        assert_eq!(r.before.span_us, 1_000_000);
        assert_eq!(r.during.span_us, 1_500_000);
        assert_eq!(r.after.span_us, 4_000_101 - 2_500_000);
        assert!((r.before.ops_per_s() - 2.0).abs() < 1e-9);
        // The histogram keeps 3 significant digits.
        assert!((7_000..=7_010).contains(&r.during.latency.max_us));
        assert!((4_990..=5_010).contains(&r.during.latency.p50_us));
        assert_eq!(r.windows.len(), 40);
        assert_eq!(r.windows[0], 1);
        assert_eq!(r.windows[9], 1);
        assert_eq!(r.windows[10], 1);
        assert_eq!(r.windows[24], 1);
        assert_eq!(r.windows[25], 1);
        assert_eq!(r.windows.iter().sum::<u64>(), 5);
    }

    #[test]
    fn an_unanswered_compaction_leaves_no_after_phase() {
        let t = CompactTimes {
            revision: 10,
            sent_us: 1_000_000,
            answered_us: None,
        };
        let r = analyse(&[sample(3_000_000, 10)], t, 3_500_000).expect("valid samples");
        assert_eq!((r.before.puts, r.during.puts, r.after.puts), (0, 1, 0));
        assert_eq!(r.after.span_us, 0);
        assert!((r.after.ops_per_s()).abs() < f64::EPSILON);
    }

    #[test]
    fn arguments_are_checked() {
        let mut a = CompactionArgs {
            endpoints: "127.0.0.1:2379".into(),
            history: 200_000,
            keys: 1_000,
            clients: 64,
            conns: 8,
            duration_s: 12,
            compact_at_s: 4,
            physical: true,
            key_size: 16,
            val_size: 256,
            timeout_s: 120,
            json: false,
        };
        assert!(validate(&a).is_ok());
        assert!(kv::validate(&kv_args(&a)).is_ok());
        a.compact_at_s = 12;
        assert!(validate(&a).is_err());
        a.compact_at_s = 4;
        a.timeout_s = 12;
        assert!(validate(&a).is_err());
        a.timeout_s = 120;
        a.endpoints = "10.1.2.3:2379".into();
        assert!(kv::validate(&kv_args(&a)).is_err());
    }
}
