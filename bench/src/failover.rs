//! `failover`: SIGKILL a cluster's leader under a steady put load and time the
//! recovery.
//!
//! 1. Ask every endpoint for its Status until all agree on a leader (`leader ==
//!    header.member_id`); `--pids` gives the server processes in endpoint order.
//! 2. Start `--clients` put clients on the other endpoints (round-robin, one connection
//!    per endpoint). Each put has a `--request-timeout-ms` timeout; after an answer or
//!    an error a client waits until `--interval-ms` after it sent the put (a gentle,
//!    steady load), after a timeout it sends the next put at once. A put forwarded to the
//!    dead leader is lost and only ends at its timeout, so while the cluster recovers a
//!    fresh put is sent about every timeout/clients (6 ms with the defaults): that is the
//!    resolution of the failover time.
//! 3. After `--warmup-ms`, run `kill -9 <leader pid>`. The kill time is when `kill`
//!    returned (the signal has been sent; the command's own duration is reported too).
//! 4. Keep the load on until every surviving endpoint has acknowledged a put sent after
//!    the kill, or `--timeout-s`.
//!
//! Reported, from the kill: the first acknowledgement of a put sent after the kill (the
//! failover time), the first such acknowledgement on each surviving endpoint, when a
//! survivor first reported a new leader in its Status (polled every 10 ms), when the old
//! leader's client port stopped accepting connections (which also shows the right process
//! was killed), and the puts sent before the kill and acknowledged after it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan_proto::etcdserverpb::kv_client::KvClient;
use capstan_proto::etcdserverpb::PutRequest;

use crate::cluster::{member_status, wait_leader};
use crate::common::{
    connect, fmt_us, new_histogram, parse_endpoints, record_us, BenchResult, Deadline, Json, LatencySummary, Rng,
};

#[derive(clap::Args, Debug, Clone)]
pub struct FailoverArgs {
    /// Comma-separated loopback endpoints (host:port), one per member.
    #[arg(long)]
    pub endpoints: String,
    /// Comma-separated PIDs of the members' server processes, in the order of
    /// --endpoints; the leader's is sent SIGKILL.
    #[arg(long)]
    pub pids: String,
    /// Put clients, spread round-robin over the endpoints that are not the leader.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Timeout of each put, in milliseconds; a timed-out put is sent again at once.
    #[arg(long, default_value_t = 100)]
    pub request_timeout_ms: u64,
    /// Each client sends at most one put per this many milliseconds.
    #[arg(long, default_value_t = 20)]
    pub interval_ms: u64,
    /// Milliseconds of load before the kill.
    #[arg(long, default_value_t = 1000)]
    pub warmup_ms: u64,
    /// Key length in bytes.
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,
    /// Value length in bytes.
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
    /// Keys are drawn uniformly from this many.
    #[arg(long, default_value_t = 10_000)]
    pub key_space: u64,
    /// Seconds the whole run may take (finding the leader included).
    #[arg(long, default_value_t = 60)]
    pub timeout_s: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What the clients and the main task share. Times are nanoseconds since `epoch`; 0 is
/// "not yet".
struct Shared {
    epoch: Instant,
    kill_ns: AtomicU64,
    stop: AtomicBool,
    acked_before_kill: AtomicU64,
    /// Per surviving endpoint: the first acknowledgement of a put sent after the kill.
    first_ack_after_kill: Vec<AtomicU64>,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        (self.epoch.elapsed().as_nanos() as u64).max(1)
    }
}

#[derive(Default)]
struct ClientOutcome {
    /// Latencies of puts sent and acknowledged before the kill.
    before: Option<hdrhistogram::Histogram<u64>>,
    /// Latest acknowledgement of any put before the kill.
    last_ack_before_kill_ns: u64,
    /// Puts sent before the kill, acknowledged after it: (sent, acknowledged).
    straddling: Vec<(u64, u64)>,
    ok: u64,
    errors: u64,
    timeouts: u64,
    errors_after_kill: u64,
    timeouts_after_kill: u64,
    first_error_after_kill: Option<String>,
    first_error_before_kill: Option<String>,
}

pub async fn run(a: FailoverArgs) -> BenchResult<()> {
    let endpoints = parse_endpoints(&a.endpoints)?;
    let pids: Vec<u32> = a
        .pids
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u32>().map_err(|e| format!("--pids {p}: {e}")))
        .collect::<Result<_, _>>()?;
    if endpoints.len() < 2 {
        return Err("--endpoints needs the members of a cluster (at least 2)".into());
    }
    if pids.len() != endpoints.len() {
        return Err(format!(
            "{} endpoints but {} pids; give one PID per endpoint, in the same order",
            endpoints.len(),
            pids.len()
        ));
    }
    if a.clients == 0 || a.clients > 1_000 {
        return Err("--clients must be in 1..=1000".into());
    }
    if a.request_timeout_ms == 0 {
        return Err("--request-timeout-ms must be at least 1".into());
    }
    let digits = a.key_space.saturating_sub(1).max(1).to_string().len();
    if a.key_space == 0 || a.key_size < digits + 1 {
        return Err(format!(
            "--key-size {} cannot hold {} distinct keys",
            a.key_size, a.key_space
        ));
    }
    if a.val_size > 1 << 20 {
        return Err("--val-size is limited to 1 MiB".into());
    }
    for &pid in &pids {
        if !process_running(pid) {
            return Err(format!("process {pid} is not running"));
        }
    }
    let deadline = Deadline::after(Duration::from_secs(a.timeout_s));

    // 1. The leader.
    let view = wait_leader(&endpoints, Deadline::after(deadline.min_after(Duration::from_secs(30)))).await?;
    let leader = view.leader;
    let old = view.statuses[leader].clone();
    let leader_addr = endpoints[leader];
    let leader_pid = pids[leader];
    let survivors: Vec<usize> = (0..endpoints.len()).filter(|&i| i != leader).collect();

    // 2. The load.
    let mut channels = Vec::with_capacity(survivors.len());
    for &i in &survivors {
        channels.push(connect(endpoints[i], deadline).await?);
    }
    let status_channels = {
        let mut v = Vec::with_capacity(survivors.len());
        for &i in &survivors {
            v.push(connect(endpoints[i], deadline).await?);
        }
        v
    };
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        kill_ns: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        acked_before_kill: AtomicU64::new(0),
        first_ack_after_kill: survivors.iter().map(|_| AtomicU64::new(0)).collect(),
    });
    let mut value = vec![0u8; a.val_size];
    Rng::new(0xFA11).fill(&mut value);
    let template = PutRequest {
        value: value.into(),
        ..Default::default()
    };
    let request_timeout = Duration::from_millis(a.request_timeout_ms);
    let interval = Duration::from_millis(a.interval_ms);
    let mut tasks = Vec::with_capacity(a.clients);
    for c in 0..a.clients {
        let slot = c % survivors.len();
        let mut client = KvClient::new(channels[slot].clone());
        let label = endpoints[survivors[slot]].to_string();
        let shared = shared.clone();
        let template = template.clone();
        let (key_size, key_space) = (a.key_size, a.key_space);
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(c as u64 + 101);
            let mut out = ClientOutcome {
                before: Some(new_histogram()),
                ..Default::default()
            };
            while !shared.stop.load(Ordering::Acquire) && !deadline.passed() {
                let k = format!("f{:0width$}", rng.below(key_space), width = key_size - 1);
                let mut req = template.clone();
                req.key = k.into_bytes().into();
                let t0 = Instant::now();
                let sent = shared.now_ns();
                let res = tokio::time::timeout(deadline.min_after(request_timeout), client.put(req)).await;
                let at = shared.now_ns();
                let kill = shared.kill_ns.load(Ordering::Acquire);
                let sent_after_kill = kill != 0 && sent >= kill;
                match res {
                    Ok(Ok(_)) => {
                        out.ok += 1;
                        if kill == 0 || at < kill {
                            shared.acked_before_kill.fetch_add(1, Ordering::Relaxed);
                            out.last_ack_before_kill_ns = out.last_ack_before_kill_ns.max(at);
                            if let Some(h) = out.before.as_mut() {
                                record_us(h, t0.elapsed());
                            }
                        } else if sent_after_kill {
                            let _ = shared.first_ack_after_kill[slot].compare_exchange(
                                0,
                                at,
                                Ordering::AcqRel,
                                Ordering::Acquire,
                            );
                        } else {
                            out.straddling.push((sent, at));
                        }
                    }
                    Ok(Err(status)) => {
                        out.errors += 1;
                        let msg = format!("{label}: {}", status.message());
                        if kill != 0 {
                            out.errors_after_kill += 1;
                            out.first_error_after_kill.get_or_insert(msg);
                        } else {
                            out.first_error_before_kill.get_or_insert(msg);
                        }
                    }
                    Err(_) => {
                        out.timeouts += 1;
                        if kill != 0 {
                            out.timeouts_after_kill += 1;
                        }
                        // Send the next put at once.
                        continue;
                    }
                }
                let pause = interval.saturating_sub(t0.elapsed());
                if !pause.is_zero() {
                    tokio::time::sleep(deadline.min_after(pause)).await;
                }
            }
            out
        }));
    }

    tokio::time::sleep(deadline.min_after(Duration::from_millis(a.warmup_ms))).await;
    if shared.acked_before_kill.load(Ordering::Acquire) == 0 {
        shared.stop.store(true, Ordering::Release);
        let mut first_error = None;
        for t in tasks {
            if let Ok(o) = t.await {
                first_error = first_error.or(o.first_error_before_kill);
            }
        }
        return Err(format!(
            "no put was acknowledged in the {} ms before the kill (first error: {}); nothing killed",
            a.warmup_ms,
            first_error.as_deref().unwrap_or("none, puts timed out")
        ));
    }

    // 3. The kill.
    let k0 = Instant::now();
    let killed = tokio::process::Command::new("kill")
        .arg("-9")
        .arg(leader_pid.to_string())
        .status()
        .await;
    let kill_ns = shared.now_ns();
    shared.kill_ns.store(kill_ns, Ordering::Release);
    let kill_cmd = k0.elapsed();
    match killed {
        Ok(s) if s.success() => {}
        Ok(s) => {
            shared.stop.store(true, Ordering::Release);
            return Err(format!("kill -9 {leader_pid} failed: {s}"));
        }
        Err(e) => {
            shared.stop.store(true, Ordering::Release);
            return Err(format!("cannot run kill -9 {leader_pid}: {e}"));
        }
    }

    // The old leader's client port should refuse connections almost at once.
    let mut port_probe = tokio::spawn(port_closed_after(leader_addr, shared.clone(), Duration::from_secs(2)));
    // A survivor naming a new leader in its Status.
    let status_probe = tokio::spawn(new_leader_seen(
        status_channels,
        old.member_id,
        shared.clone(),
        deadline,
    ));

    // 4. Until every survivor has acknowledged a put sent after the kill (or the old
    // leader's port is found still open: the wrong process was killed).
    let mut port_closed_ns = None;
    let mut port_checked = false;
    while !deadline.passed() {
        if !port_checked && port_probe.is_finished() {
            port_closed_ns = (&mut port_probe).await.unwrap_or(None);
            port_checked = true;
            if port_closed_ns.is_none() {
                break;
            }
        }
        if shared
            .first_ack_after_kill
            .iter()
            .all(|v| v.load(Ordering::Acquire) != 0)
        {
            break;
        }
        tokio::time::sleep(deadline.min_after(Duration::from_millis(5))).await;
    }
    shared.stop.store(true, Ordering::Release);
    let mut outcomes = Vec::with_capacity(tasks.len());
    for t in tasks {
        match tokio::time::timeout(request_timeout + Duration::from_secs(5), t).await {
            Ok(Ok(o)) => outcomes.push(o),
            Ok(Err(e)) => return Err(format!("client task failed: {e}")),
            Err(_) => return Err("a client did not stop".into()),
        }
    }
    if !port_checked {
        port_closed_ns = port_probe.await.unwrap_or(None);
    }
    // The puts may have got through before a Status poll named the new leader: give the
    // poller a little longer.
    let (new_leader_ns, new_leader_id) =
        match tokio::time::timeout(deadline.min_after(Duration::from_secs(3)), status_probe).await {
            Ok(Ok(Some((at, id)))) => (Some(at), Some(id)),
            _ => (None, None),
        };
    // The term now, once writes of the new leader have been applied: etcd reports the
    // term of the last applied entry in Status, so an answer taken during the election
    // can still show the old term.
    let mut new_term = None;
    for &i in &survivors {
        if let Ok(ch) = connect(endpoints[i], Deadline::after(Duration::from_secs(1))).await {
            if let Ok(s) = member_status(ch, Duration::from_secs(1)).await {
                new_term = new_term.max(Some(s.raft_term));
            }
        }
    }

    // Results.
    let since_kill = |at: u64| Duration::from_nanos(at.saturating_sub(kill_ns));
    let per_endpoint: Vec<Option<Duration>> = shared
        .first_ack_after_kill
        .iter()
        .map(|v| match v.load(Ordering::Acquire) {
            0 => None,
            at => Some(since_kill(at)),
        })
        .collect();
    let failover = per_endpoint.iter().flatten().min().copied();
    let all_survivors = if per_endpoint.iter().all(Option::is_some) {
        per_endpoint.iter().flatten().max().copied()
    } else {
        None
    };
    let mut before = new_histogram();
    let mut last_ack_before_kill = 0u64;
    let mut straddling = Vec::new();
    let (mut ok, mut errors, mut timeouts, mut errors_after, mut timeouts_after) = (0, 0, 0, 0, 0);
    let mut first_error = None;
    for o in outcomes {
        if let Some(h) = &o.before {
            before.add(h).map_err(|e| format!("merging histograms: {e}"))?;
        }
        last_ack_before_kill = last_ack_before_kill.max(o.last_ack_before_kill_ns);
        straddling.extend(o.straddling);
        ok += o.ok;
        errors += o.errors;
        timeouts += o.timeouts;
        errors_after += o.errors_after_kill;
        timeouts_after += o.timeouts_after_kill;
        if first_error.is_none() {
            first_error = o.first_error_after_kill;
        }
    }
    let warm = LatencySummary::of(&before);
    let warm_s = Duration::from_nanos(kill_ns).as_secs_f64();
    let new_leader_endpoint = new_leader_id.and_then(|id| {
        view.statuses
            .iter()
            .position(|s| s.member_id == id)
            .map(|i| endpoints[i].to_string())
    });
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let opt_ms = |d: Option<Duration>| d.map(ms);
    let straddle_last = straddling.iter().map(|&(_, at)| since_kill(at)).max();
    let timed_out = failover.is_none() || all_survivors.is_none();

    if a.json {
        let mut j = Json::new();
        j.str("bench", "failover")
            .str("endpoints", &a.endpoints)
            .str("pids", &a.pids)
            .int("clients", a.clients as i64)
            .int("request_timeout_ms", a.request_timeout_ms as i64)
            .int("interval_ms", a.interval_ms as i64)
            .str("old_leader_endpoint", &leader_addr.to_string())
            .str("old_leader_id", &format!("{:x}", old.member_id))
            .int("old_leader_pid", leader_pid as i64)
            .int("old_term", old.raft_term as i64)
            .num("kill_cmd_ms", ms(kill_cmd));
        num_opt(&mut j, "failover_ms", opt_ms(failover));
        num_opt(&mut j, "all_survivors_ms", opt_ms(all_survivors));
        let mut per = Json::new();
        for (n, d) in per_endpoint.iter().enumerate() {
            num_opt(&mut per, &endpoints[survivors[n]].to_string(), opt_ms(*d));
        }
        j.obj("first_ack_after_kill_ms", per);
        num_opt(&mut j, "new_leader_seen_ms", opt_ms(new_leader_ns.map(since_kill)));
        match (&new_leader_id, &new_leader_endpoint) {
            (Some(id), Some(ep)) => j
                .str("new_leader_id", &format!("{id:x}"))
                .str("new_leader_endpoint", ep),
            (Some(id), None) => j.str("new_leader_id", &format!("{id:x}")),
            _ => j.opt_int("new_leader_id", None),
        };
        // More than old_term + 1: more than one election round (a split vote, say).
        j.opt_int("term_after", new_term.map(|t| t as i64));
        num_opt(&mut j, "leader_port_closed_ms", opt_ms(port_closed_ns.map(since_kill)));
        num_opt(
            &mut j,
            "last_ack_before_kill_ms",
            (last_ack_before_kill > 0).then(|| ms(Duration::from_nanos(kill_ns.saturating_sub(last_ack_before_kill)))),
        );
        j.num("warmup_s", warm_s)
            .int("acked_before_kill", warm.count as i64)
            .num(
                "warmup_ops_per_s",
                if warm_s > 0.0 { warm.count as f64 / warm_s } else { 0.0 },
            )
            .obj("warmup_latency", warm.json())
            .int("acked_after_kill_sent_before", straddling.len() as i64);
        num_opt(&mut j, "last_straddling_ack_ms", opt_ms(straddle_last));
        j.int("ok", ok as i64)
            .int("errors", errors as i64)
            .int("timeouts", timeouts as i64)
            .int("errors_after_kill", errors_after as i64)
            .int("timeouts_after_kill", timeouts_after as i64)
            .bool("timed_out", timed_out);
        if let Some(e) = &first_error {
            j.str("first_error_after_kill", e);
        }
        println!("{}", j.render());
    } else {
        let show = |d: Option<Duration>| d.map_or("none".to_string(), |d| fmt_us(d.as_micros() as f64));
        println!(
            "failover: killed leader {} (member {:x}, pid {}, term {}) after {:.2} s of load; kill took {}",
            leader_addr,
            old.member_id,
            leader_pid,
            old.raft_term,
            warm_s,
            fmt_us(kill_cmd.as_micros() as f64)
        );
        println!("  first put sent after the kill acknowledged after {}", show(failover));
        for (n, d) in per_endpoint.iter().enumerate() {
            println!("    on {}: {}", endpoints[survivors[n]], show(*d));
        }
        println!(
            "  new leader seen in Status after {}{}; term {} before, {} after",
            show(new_leader_ns.map(since_kill)),
            match (&new_leader_id, &new_leader_endpoint) {
                (Some(id), Some(ep)) => format!(" ({id:x} on {ep})"),
                (Some(id), None) => format!(" ({id:x})"),
                _ => String::new(),
            },
            old.raft_term,
            new_term.map_or("unknown".to_string(), |t| t.to_string())
        );
        println!(
            "  old leader's port closed after {}",
            show(port_closed_ns.map(since_kill))
        );
        println!(
            "  before the kill: {} puts acknowledged, latency {}",
            warm.count,
            warm.line()
        );
        println!(
            "  {} puts sent before the kill were acknowledged after it; after the kill {} errors, {} timeouts",
            straddling.len(),
            errors_after,
            timeouts_after
        );
        if let Some(e) = &first_error {
            println!("  first error after the kill: {e}");
        }
        if timed_out {
            println!("  TIMED OUT before every survivor acknowledged a put");
        }
    }
    if port_closed_ns.is_none() {
        return Err(format!(
            "{leader_addr} still accepts connections 2 s after kill -9 {leader_pid}: is that PID the server \
             on that endpoint (--pids in --endpoints order)?"
        ));
    }
    if failover.is_none() {
        return Err("no put sent after the kill was acknowledged before the timeout".into());
    }
    Ok(())
}

fn num_opt(j: &mut Json, k: &str, v: Option<f64>) {
    match v {
        Some(v) => j.num(k, v),
        None => j.opt_int(k, None),
    };
}

/// Running, and not a zombie waiting for its parent (a killed server the script has not
/// reaped yet).
fn process_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may contain spaces.
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => true,
        },
        Err(_) => false,
    }
}

/// When connecting to `addr` first failed, polling every millisecond for at most `limit`.
async fn port_closed_after(addr: SocketAddr, shared: Arc<Shared>, limit: Duration) -> Option<u64> {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        match tokio::time::timeout(Duration::from_millis(50), tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => tokio::time::sleep(Duration::from_millis(1)).await,
            Ok(Err(_)) => return Some(shared.now_ns()),
            // A dead process's port refuses at once; a hanging connect means it lives.
            Err(_) => {}
        }
    }
    None
}

/// Polls Status on the survivors every 10 ms until one names a leader other than `old`;
/// returns when that answer arrived (ns since the epoch) and the new leader's member ID.
async fn new_leader_seen(
    channels: Vec<tonic::transport::Channel>,
    old: u64,
    shared: Arc<Shared>,
    deadline: Deadline,
) -> Option<(u64, u64)> {
    while !deadline.passed() {
        let round = futures::future::join_all(channels.iter().map(|ch| {
            let shared = shared.clone();
            async move {
                let s = member_status(ch.clone(), deadline.min_after(Duration::from_millis(200))).await;
                (s, shared.now_ns())
            }
        }))
        .await;
        let seen = round
            .into_iter()
            .filter_map(|(s, at)| s.ok().map(|s| (at, s.leader)))
            .filter(|&(_, l)| l != 0 && l != old)
            .min_by_key(|&(at, _)| at);
        if seen.is_some() {
            return seen;
        }
        tokio::time::sleep(deadline.min_after(Duration::from_millis(10))).await;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_running() {
        assert!(process_running(std::process::id()));
        assert!(!process_running(u32::MAX));
    }
}
