//! What the node's containers use of CPU and memory, measured from the OS, and served as
//! the kubelet's Summary API (`GET /stats/summary`, see [`super::logs`]), which
//! metrics-server turns into `metrics.k8s.io` (`kubectl top`).
//!
//! # What is read, and from where
//!
//! Every [`Config::usage_interval`](super::agent::Config) (10 s by default, metrics-server's
//! resolution) the agent takes a sample, on the blocking pool, of each *running*
//! container of the process runtime (see [`super::process`]): its pid, start time and
//! memory cgroup come from its `state.json`.
//!
//! - **CPU**, cumulative: `usage_usec` of the container's cgroup's `cpu.stat` (cgroup v2:
//!   everything in the container), else `utime + stime` of `/proc/<pid>/stat` (its main
//!   process only, in clock ticks of 1/100 s, Linux's `USER_HZ` on every architecture
//!   Capstan runs on).
//! - **Memory working set** (upstream's): the cgroup's `memory.current` less
//!   `inactive_file` of its `memory.stat` (page cache the kernel may take back), else
//!   `VmRSS` of `/proc/<pid>/status` (the main process only).
//! - **The node**: the `cpu` line of `/proc/stat` (all time but `idle` and `iowait`) and
//!   `MemTotal - MemAvailable` of `/proc/meminfo`.
//!
//! A container gets a cgroup only with a memory limit on cgroup v2 (a v1 memory cgroup
//! has no `cpu.stat`); the rest fall back to `/proc`. A `/proc/<pid>` whose start time is
//! not the container's is a reused pid: no sample, as for a process that has ended (a
//! zombie), a file that is missing or a process that has gone. Nothing here fails the agent; a container without a sample is
//! left out of the summary.
//!
//! # Rates
//!
//! The last two samples of each container (and of the node) are kept; CPU usage is
//! `Δcpu / Δwall` in nanocores, the wall time read when a round starts reading (on the
//! blocking pool, so time queued for it does not count) from a monotonic clock
//! ([`Instant`]). With one sample so far (a new container, or a new run:
//! a restart starts its series again), `usageNanoCores` is left out. Containers no longer
//! running are dropped at each round, so what is kept is bounded by what runs.
//!
//! The parsers are pure functions on the files' text; reading is a thin layer over them.
//! `/proc/<pid>/stat`, the bounded reads and the `key value` lines of cgroup files are
//! [`super::process`]'s.
//!
//! # Left out
//!
//! - Simulated (hollow) containers: they have no process, and report nothing.
//! - The Summary API's other fields: network, filesystems, volumes, `rdmaStats`,
//!   `accelerators`, swap, the node's `systemContainers`, a pod's `startTime`,
//!   `memory.usageBytes`, `rssBytes`, page faults. `/stats/summary?only_cpu_and_memory`
//!   is accepted and answers the same.
//! - The processes a container's main process forks, when it has no cgroup.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use super::pods::Context;
use super::process::{counter, read_bounded, read_proc_stat, CGROUP_FILE_BYTES_MAX};
use super::runtime::Runtime;

/// How often containers are sampled when the agent's config does not say.
pub const USAGE_INTERVAL_DEFAULT: Duration = Duration::from_secs(10);
/// Clock ticks per second of `/proc/<pid>/stat` and `/proc/stat` (`USER_HZ`: 100 on
/// every Linux architecture Capstan runs on; the kernel converts to it for userspace).
const CLOCK_TICKS_PER_SECOND: u64 = 100;
/// `/proc/stat`, `/proc/meminfo` and `/proc/<pid>/status` (which the process runtime does
/// not read) are small, or have what is read here first; this bounds them all the same.
const PROC_FILE_BYTES_MAX: u64 = 64 * 1024;

/// One measurement of one container or of the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Cumulative CPU time.
    pub cpu_ns: u64,
    pub working_set_bytes: u64,
    /// When it was taken: the wall clock for `time`, the monotonic one for rates.
    pub wall: SystemTime,
    pub taken: Instant,
}

/// The last two samples of one series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Series {
    previous: Option<Sample>,
    last: Sample,
}

impl Series {
    fn push(series: Option<Series>, sample: Sample) -> Series {
        Series {
            previous: series.map(|s| s.last),
            last: sample,
        }
    }

    fn nanocores(&self) -> Option<u64> {
        let previous = self.previous?;
        rate_nanocores(
            previous.cpu_ns,
            self.last.cpu_ns,
            self.last.taken.saturating_duration_since(previous.taken),
        )
    }
}

/// CPU usage in nanocores (ns of CPU per s of wall time) between two cumulative readings
/// `elapsed` apart; None without elapsed time, or when the counter went back (a new run).
pub fn rate_nanocores(cpu_before_ns: u64, cpu_after_ns: u64, elapsed: Duration) -> Option<u64> {
    let elapsed_ns = elapsed.as_nanos();
    if elapsed_ns == 0 || cpu_after_ns < cpu_before_ns {
        return None;
    }
    let rate = u128::from(cpu_after_ns - cpu_before_ns) * 1_000_000_000 / elapsed_ns;
    Some(u64::try_from(rate).unwrap_or(u64::MAX))
}

/// `usage_usec` of a cgroup v2 `cpu.stat`, in ns.
pub fn parse_cpu_stat_usage_ns(text: &str) -> Option<u64> {
    counter(text, "usage_usec")?.checked_mul(1_000)
}

/// Upstream's working set: `memory.current` less `inactive_file` of `memory.stat`
/// (never below 0).
pub fn parse_cgroup_working_set_bytes(memory_current: &str, memory_stat: &str) -> Option<u64> {
    let current: u64 = memory_current.trim().parse().ok()?;
    let inactive = counter(memory_stat, "inactive_file")?;
    Some(current.saturating_sub(inactive))
}

fn ticks_to_ns(ticks: u64) -> Option<u64> {
    ticks.checked_mul(1_000_000_000 / CLOCK_TICKS_PER_SECOND)
}

/// A `Name:   N kB` line of `/proc/<pid>/status` or `/proc/meminfo`, in bytes.
fn kib_line(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(':')?;
        let mut words = rest.split_whitespace();
        let value: u64 = words.next()?.parse().ok()?;
        match words.next() {
            Some("kB") => value.checked_mul(1024),
            None => Some(value),
            Some(_) => None,
        }
    })
}

/// `VmRSS` of `/proc/<pid>/status`, in bytes (a kernel thread has none).
pub fn parse_vm_rss_bytes(text: &str) -> Option<u64> {
    kib_line(text, "VmRSS")
}

/// The node's busy CPU time from `/proc/stat`'s `cpu` line: all of it but `idle` and
/// `iowait` (`guest` and `guest_nice` are already in `user` and `nice`), in ns.
pub fn parse_node_cpu_ns(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.split_whitespace().next() == Some("cpu"))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    if values.len() < 4 {
        return None;
    }
    let busy: u64 = values
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| *v)
        .sum();
    ticks_to_ns(busy)
}

/// `MemTotal - MemAvailable` of `/proc/meminfo`, in bytes.
pub fn parse_node_working_set_bytes(text: &str) -> Option<u64> {
    Some(kib_line(text, "MemTotal")?.saturating_sub(kib_line(text, "MemAvailable")?))
}

/// One of the `/proc` files above, if it can be read.
fn read_proc(path: &str) -> Option<String> {
    read_bounded(Path::new(path), PROC_FILE_BYTES_MAX).ok()
}

/// A sample of a container's cgroup, if it is a cgroup v2 one that can still be read.
fn read_cgroup(cgroup: &Path) -> Option<(u64, u64)> {
    let read = |file: &str| read_bounded(&cgroup.join(file), CGROUP_FILE_BYTES_MAX).ok();
    let cpu_ns = parse_cpu_stat_usage_ns(&read("cpu.stat")?)?;
    let working_set = parse_cgroup_working_set_bytes(&read("memory.current")?, &read("memory.stat")?)?;
    Some((cpu_ns, working_set))
}

/// A sample of a container's main process, if `pid` is still the (not ended) process
/// started at `start_time_ticks`.
fn read_process(pid: u32, start_time_ticks: u64) -> Option<(u64, u64)> {
    let stat = read_proc_stat(pid).ok()?;
    if !stat.running() || stat.start_time_ticks != start_time_ticks {
        return None;
    }
    let cpu_ns = ticks_to_ns(stat.cpu_ticks)?;
    let rss = parse_vm_rss_bytes(&read_proc(&format!("/proc/{pid}/status"))?)?;
    Some((cpu_ns, rss))
}

/// A container the sampler measures: where it is, and which run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    namespace: String,
    pod: String,
    uid: String,
    container: String,
}

#[derive(Debug, Clone, Copy)]
struct ContainerSeries {
    /// The run the series is of: a new run starts a new series.
    start_time_ticks: u64,
    series: Series,
}

/// The samples the agent keeps: the node's and each running container's last two.
#[derive(Debug, Default)]
pub struct Usage {
    node: Mutex<Option<Series>>,
    containers: Mutex<HashMap<Key, ContainerSeries>>,
}

impl Usage {
    /// Takes one round of samples (blocking file reads): the node, and each running
    /// container of `ctx`'s process runtime; containers no longer running are dropped.
    /// The round's time, for its rates too, is read as it starts.
    pub fn sample(&self, ctx: &Context) {
        let wall = SystemTime::now();
        let taken = Instant::now();
        let node = read_proc("/proc/stat")
            .and_then(|t| parse_node_cpu_ns(&t))
            .zip(read_proc("/proc/meminfo").and_then(|t| parse_node_working_set_bytes(&t)));
        if let Some((cpu_ns, working_set_bytes)) = node {
            let mut series = self.node.lock().expect("invariant: no panics while the lock is held");
            *series = Some(Series::push(
                *series,
                Sample {
                    cpu_ns,
                    working_set_bytes,
                    wall,
                    taken,
                },
            ));
        }
        let Runtime::Process(runtime) = ctx.runtime.as_ref() else {
            return; // Simulated containers have no process to measure.
        };
        // Copied out first: the lock is the workers' too, and the reads below are slow.
        let running: Vec<Key> = ctx
            .running
            .lock()
            .expect("invariant: no panics while the lock is held")
            .iter()
            .flat_map(|((namespace, pod), runs)| {
                runs.containers
                    .iter()
                    .filter(|(_, (_, running))| *running.borrow())
                    .map(|(container, _)| Key {
                        namespace: namespace.clone(),
                        pod: pod.clone(),
                        uid: runs.uid.clone(),
                        container: container.clone(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut measured = Vec::with_capacity(running.len());
        for key in running {
            let Ok(Some(state)) = runtime.state(&key.uid, &key.container) else {
                continue;
            };
            if state.pid == 0 || state.exit.is_some() {
                continue;
            }
            let reading = state
                .memory_cgroup
                .as_deref()
                .and_then(read_cgroup)
                .or_else(|| read_process(state.pid, state.start_time_ticks));
            if let Some((cpu_ns, working_set_bytes)) = reading {
                let sample = Sample {
                    cpu_ns,
                    working_set_bytes,
                    wall,
                    taken,
                };
                measured.push((key, state.start_time_ticks, sample));
            }
        }
        let mut containers = self
            .containers
            .lock()
            .expect("invariant: no panics while the lock is held");
        let mut next = HashMap::with_capacity(measured.len());
        for (key, start_time_ticks, sample) in measured {
            let before = containers
                .remove(&key)
                .filter(|c| c.start_time_ticks == start_time_ticks)
                .map(|c| c.series);
            next.insert(
                key,
                ContainerSeries {
                    start_time_ticks,
                    series: Series::push(before, sample),
                },
            );
        }
        // What was not measured this round (ended, gone, unreadable) is dropped.
        *containers = next;
    }

    /// The Summary API's answer (see the module doc) for node `node_name`.
    pub fn summary(&self, node_name: &str) -> Value {
        let node = *self.node.lock().expect("invariant: no panics while the lock is held");
        let mut pods: BTreeMap<(String, String, String), Vec<(String, Series)>> = BTreeMap::new();
        for (key, c) in self
            .containers
            .lock()
            .expect("invariant: no panics while the lock is held")
            .iter()
        {
            pods.entry((key.namespace.clone(), key.pod.clone(), key.uid.clone()))
                .or_default()
                .push((key.container.clone(), c.series));
        }
        let pods: Vec<Value> = pods
            .into_iter()
            .map(|((namespace, name, uid), mut containers)| {
                containers.sort_by(|a, b| a.0.cmp(&b.0));
                pod_stats(&namespace, &name, &uid, &containers)
            })
            .collect();
        let mut node_stats = Map::new();
        node_stats.insert("nodeName".into(), json!(node_name));
        if let Some(series) = node {
            node_stats.insert(
                "cpu".into(),
                cpu_stats(series.last.wall, series.last.cpu_ns, series.nanocores()),
            );
            node_stats.insert(
                "memory".into(),
                memory_stats(series.last.wall, series.last.working_set_bytes),
            );
        }
        json!({"node": Value::Object(node_stats), "pods": pods})
    }
}

/// A pod's entry: its containers', and their sums (the pod's rate only when every
/// container has one).
fn pod_stats(namespace: &str, name: &str, uid: &str, containers: &[(String, Series)]) -> Value {
    let time = containers.iter().map(|(_, s)| s.last.wall).max().unwrap_or(UNIX_EPOCH);
    let cpu_ns = containers
        .iter()
        .map(|(_, s)| s.last.cpu_ns)
        .fold(0u64, u64::saturating_add);
    let nanocores = containers
        .iter()
        .map(|(_, s)| s.nanocores())
        .try_fold(0u64, |sum, r| Some(sum.saturating_add(r?)));
    let working_set = containers
        .iter()
        .map(|(_, s)| s.last.working_set_bytes)
        .fold(0u64, u64::saturating_add);
    let container_stats: Vec<Value> = containers
        .iter()
        .map(|(name, s)| {
            json!({
                "name": name,
                "cpu": cpu_stats(s.last.wall, s.last.cpu_ns, s.nanocores()),
                "memory": memory_stats(s.last.wall, s.last.working_set_bytes),
            })
        })
        .collect();
    json!({
        "podRef": {"name": name, "namespace": namespace, "uid": uid},
        "cpu": cpu_stats(time, cpu_ns, nanocores),
        "memory": memory_stats(time, working_set),
        "containers": container_stats,
    })
}

fn cpu_stats(time: SystemTime, cpu_ns: u64, nanocores: Option<u64>) -> Value {
    let mut stats = Map::new();
    stats.insert("time".into(), json!(rfc3339(time)));
    if let Some(n) = nanocores {
        stats.insert("usageNanoCores".into(), json!(n));
    }
    stats.insert("usageCoreNanoSeconds".into(), json!(cpu_ns));
    Value::Object(stats)
}

fn memory_stats(time: SystemTime, working_set_bytes: u64) -> Value {
    json!({"time": rfc3339(time), "workingSetBytes": working_set_bytes})
}

/// As Kubernetes writes times: `2006-01-02T15:04:05Z`.
fn rfc3339(time: SystemTime) -> String {
    super::process::rfc3339(time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_files_give_cpu_time_and_the_working_set() {
        let cpu_stat = "usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\nnr_periods 0\n";
        assert_eq!(parse_cpu_stat_usage_ns(cpu_stat), Some(1_234_567_000));
        assert_eq!(parse_cpu_stat_usage_ns("user_usec 5\n"), None);
        let memory_stat = "anon 4096\nfile 8192\nactive_file 4096\ninactive_file 3000\n";
        assert_eq!(parse_cgroup_working_set_bytes("10000\n", memory_stat), Some(7000));
        // Never below 0, and nothing from a malformed file.
        assert_eq!(parse_cgroup_working_set_bytes("1000\n", memory_stat), Some(0));
        assert_eq!(parse_cgroup_working_set_bytes("max\n", memory_stat), None);
        assert_eq!(parse_cgroup_working_set_bytes("1000\n", "anon 4096\n"), None);
    }

    #[test]
    fn proc_files_give_a_process_cpu_time_and_rss() {
        use super::super::process::parse_proc_stat;
        // A command name with spaces and a parenthesis; utime 250, stime 50, start 9876.
        let stat = "4242 (a b) c) R 1 4242 4242 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 1 0 9876 1000 10";
        let parsed = parse_proc_stat(stat).expect("a stat line");
        assert_eq!(ticks_to_ns(parsed.cpu_ticks), Some(3_000_000_000));
        assert_eq!(parsed.start_time_ticks, 9876);
        assert!(parsed.running());
        assert_eq!(parse_proc_stat("4242 (sh) R 1"), None);
        let status = "Name:\tsh\nVmPeak:\t   2000 kB\nVmRSS:\t    1500 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss_bytes(status), Some(1500 * 1024));
        assert_eq!(parse_vm_rss_bytes("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn the_node_is_its_busy_cpu_time_and_memory_not_available() {
        let stat = "cpu  100 20 30 1000 50 5 5 10 7 0\ncpu0 50 10 15 500 25 2 2 5 0 0\nintr 1 2 3\n";
        // user + nice + system + irq + softirq + steal, not idle, iowait or guests.
        assert_eq!(parse_node_cpu_ns(stat), Some(170 * 10_000_000));
        assert_eq!(parse_node_cpu_ns("cpu0 1 2 3 4\n"), None);
        let meminfo = "MemTotal:       16000 kB\nMemFree:         2000 kB\nMemAvailable:    6000 kB\n";
        assert_eq!(parse_node_working_set_bytes(meminfo), Some(10_000 * 1024));
        assert_eq!(parse_node_working_set_bytes("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn rates_are_cpu_time_over_wall_time() {
        // Half a core: 0.5 s of CPU in 1 s.
        assert_eq!(
            rate_nanocores(1_000_000_000, 1_500_000_000, Duration::from_secs(1)),
            Some(500_000_000)
        );
        assert_eq!(
            rate_nanocores(0, 200_000_000, Duration::from_millis(100)),
            Some(2_000_000_000)
        );
        assert_eq!(rate_nanocores(5, 10, Duration::ZERO), None);
        // A counter that went back is another run, not a negative rate.
        assert_eq!(rate_nanocores(10, 5, Duration::from_secs(1)), None);
    }

    #[test]
    fn a_pod_has_a_rate_only_once_each_container_has_two_samples() {
        let t0 = Instant::now();
        let sample = |cpu_ns, after_ms| Sample {
            cpu_ns,
            working_set_bytes: 100,
            wall: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            taken: t0 + Duration::from_millis(after_ms),
        };
        let two = Series::push(Some(Series::push(None, sample(0, 0))), sample(100_000_000, 1000));
        let one = Series::push(None, sample(0, 0));
        let pod = pod_stats("default", "p", "u", &[("a".into(), two), ("b".into(), one)]);
        assert_eq!(pod["containers"][0]["cpu"]["usageNanoCores"], json!(100_000_000));
        assert!(pod["containers"][1]["cpu"].get("usageNanoCores").is_none());
        assert!(pod["cpu"].get("usageNanoCores").is_none());
        assert_eq!(pod["memory"]["workingSetBytes"], json!(200));
        assert_eq!(pod["cpu"]["time"], json!("2023-11-14T22:13:20Z"));
        let pod = pod_stats("default", "p", "u", &[("a".into(), two)]);
        assert_eq!(pod["cpu"]["usageNanoCores"], json!(100_000_000));
        assert_eq!(pod["podRef"], json!({"name": "p", "namespace": "default", "uid": "u"}));
    }
}
