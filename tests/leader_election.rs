//! Leader election of real processes: three `capstan controller-manager` and three
//! `capstan scheduler` replicas against a store with the Kubernetes API, under continuous
//! work (a namespace, for which the ServiceAccount controller writes an account, and a
//! pod, which the scheduler binds, every quarter second).
//!
//! For each component: the replica holding its Lease is paused (SIGSTOP) until another
//! holds the Lease and has acted, then resumed (SIGCONT); then the holder is killed
//! (SIGKILL), and the next one too. Each takeover is timed, from the signal to the
//! successor's first action.
//!
//! What each replica did is read from its own log: the fenced client records every write
//! it lets through (`capstan::acted: acted`, see `agents/src/leader.rs`), with the time to
//! the microsecond, and the elector logs `became the leader`. The check: in time order,
//! every write is by the replica that last became the leader, so no replica acts after
//! another began to (not even the resumed one) unless it won the Lease back in between;
//! no two ever act at once. (Whether the resumed one tries to write before its elector
//! drops its work depends on scheduling; that case is made certain, and checked to be
//! refused unsent, by `a_paused_holder_does_not_send_what_it_had_lined_up` in
//! `agents/src/leader.rs`.)

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};

use common::{eventually, store_with_api, Server, TIMING};

/// Every wait for a condition gives up after this.
const DEADLINE: Duration = Duration::from_secs(60);
const LEASE_DURATION: Duration = Duration::from_secs(3);
const RETRY_PERIOD: Duration = Duration::from_millis(500);
/// The node never heartbeats: keep the node lifecycle controller from tainting it.
const CONTROLLER_MANAGER_FLAGS: [&str; 4] = ["--node-monitor-grace-period", "1h", "--node-startup-grace-period", "1h"];
/// What a takeover may take beyond the election's own bound (see [`takeover_bound`]): the
/// successor starts its controllers, which list and watch before their first write, in
/// one of seven processes sharing the machine with the test (2 cores in CI).
const SLACK: Duration = Duration::from_secs(6);

/// The longest a takeover may take, from the holder's death (or pause) to the successor's
/// first write. The holder renewed at most a retry period (and one attempt) before it
/// died; a candidate polls every retry period, so it saw that renewal at most a retry
/// period after it was written, and the holding expires for it a lease duration after
/// that sight; its next attempt, at most a retry period later, takes the Lease. So the
/// Lease changes hands at most `lease_duration + 2 × retry_period` after the death (it
/// may be less than the lease duration: the last renewal came before it), and the
/// first write follows once the successor's work has started.
fn takeover_bound() -> Duration {
    LEASE_DURATION + 2 * RETRY_PERIOD + SLACK
}

/// One replica: its process (None once killed), its identity in the Lease, its log.
struct Replica {
    server: Option<Server>,
    identity: String,
    log: PathBuf,
}

/// The replicas of one component.
struct Component {
    name: &'static str,
    lease: &'static str,
    replicas: Vec<Replica>,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// A write let through by the fence.
    Acted { method: String, path: String },
    /// A write the fence refused (never sent).
    Refused { method: String, path: String },
    /// The elector won the Lease.
    Became,
    /// The elector stopped leading.
    Lost,
}

#[derive(Debug, Clone)]
struct Record {
    at: Timestamp,
    replica: usize,
    kind: Kind,
}

/// `key=value` (up to the next space) in a log line.
fn field(line: &str, key: &str) -> String {
    line.split(' ')
        .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_default()
        .to_string()
}

/// One log line as a record, if it is one (`<time>  LEVEL target: message fields`).
fn parse(line: &str, replica: usize) -> Option<Record> {
    let (time, rest) = line.split_once(' ')?;
    let at: Timestamp = time.parse().ok()?;
    let rest = rest.trim_start();
    let kind = if rest.contains(" capstan::acted: acted ") {
        Kind::Acted {
            method: field(rest, "method"),
            path: field(rest, "path"),
        }
    } else if rest.contains(" capstan::acted: refused ") {
        Kind::Refused {
            method: field(rest, "method"),
            path: field(rest, "path"),
        }
    } else if rest.contains(" capstan_agents::leader: became the leader") {
        Kind::Became
    } else if rest.contains(" capstan_agents::leader: lost the lease") {
        Kind::Lost
    } else {
        return None;
    };
    Some(Record { at, replica, kind })
}

impl Component {
    /// Three replicas of `capstan <name>`, logging at info whatever the environment says.
    fn start(
        name: &'static str,
        lease: &'static str,
        master: &str,
        dir: &std::path::Path,
        extra: &[&str],
    ) -> Component {
        let mut args: Vec<&str> = TIMING.to_vec();
        args.extend_from_slice(extra);
        let replicas = (0..3)
            .map(|i| {
                let log = dir.join(format!("{name}-{i}.log"));
                let (server, identity) = Server::component_with_env(
                    name,
                    master,
                    &args,
                    &[("CAPSTAN_LOG", "info,capstan::acted=debug")],
                    &log,
                );
                Replica {
                    server: Some(server),
                    identity,
                    log,
                }
            })
            .collect();
        Component { name, lease, replicas }
    }

    /// Everything the replicas' logs record so far, in time order.
    fn records(&self) -> Vec<Record> {
        let mut records: Vec<Record> = Vec::new();
        for (i, r) in self.replicas.iter().enumerate() {
            let text = std::fs::read_to_string(&r.log).unwrap_or_default();
            records.extend(text.lines().filter_map(|l| parse(l, i)));
        }
        // Stable: one process's lines keep their order on equal times.
        records.sort_by_key(|r| r.at);
        records
    }

    async fn holder(&self, client: &Client) -> Option<usize> {
        let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
        let holder = leases.get_opt(self.lease).await.ok()??.spec?.holder_identity?;
        self.replicas.iter().position(|r| r.identity == holder)
    }

    fn first_action_after(&self, replica: usize, after: Timestamp) -> Option<Timestamp> {
        self.records()
            .into_iter()
            .find(|r| r.replica == replica && r.at > after && matches!(r.kind, Kind::Acted { .. }))
            .map(|r| r.at)
    }

    /// Waits until a live replica other than `gone` holds the Lease and has acted since
    /// `since`: returns it, when it became the leader and when it first acted.
    async fn successor(&self, client: &Client, gone: usize, since: Timestamp) -> (usize, Timestamp, Timestamp) {
        let what = format!("{}: a successor of replica {gone} acting", self.name);
        eventually(&what, DEADLINE, move || async move {
            let next = self.holder(client).await.filter(|h| *h != gone)?;
            let acted = self.first_action_after(next, since)?;
            let became = self
                .records()
                .into_iter()
                .filter(|r| r.replica == next && r.kind == Kind::Became && r.at <= acted)
                .map(|r| r.at)
                .next_back()?;
            Some((next, became, acted))
        })
        .await
    }
}

/// One handover, timed from the signal.
struct Takeover {
    component: &'static str,
    how: &'static str,
    from: usize,
    to: usize,
    /// Until the successor won the Lease.
    to_lease: Duration,
    /// Until its first write.
    to_action: Duration,
}

fn since(from: Timestamp, to: Timestamp) -> Duration {
    Duration::from_micros(u64::try_from(to.as_microsecond() - from.as_microsecond()).unwrap_or(0))
}

/// Pauses the holder, then kills two holders in turn; returns the takeovers.
async fn exercise(client: &Client, c: &mut Component) -> Vec<Takeover> {
    let mut takeovers = Vec::new();
    let what = format!("{}: a holder that acted", c.name);
    let view: &Component = c;
    let paused = eventually(&what, DEADLINE, move || async move {
        let h = view.holder(client).await?;
        view.first_action_after(h, Timestamp::UNIX_EPOCH).map(|_| h)
    })
    .await;

    // Paused past the lease duration: another takes over, and the paused one, resumed,
    // must notice it lost the Lease without acting (its fence refuses what it had lined up).
    let stopped = Timestamp::now();
    c.replicas[paused].server.as_ref().expect("live").signal("STOP");
    let (next, became, acted) = c.successor(client, paused, stopped).await;
    takeovers.push(Takeover {
        component: c.name,
        how: "SIGSTOP",
        from: paused,
        to: next,
        to_lease: since(stopped, became),
        to_action: since(stopped, acted),
    });
    c.replicas[paused].server.as_ref().expect("live").signal("CONT");
    let what = format!(
        "{}: the resumed replica {paused} stepping down, then {next} acting",
        c.name
    );
    let view: &Component = c;
    eventually(&what, DEADLINE, move || async move {
        let records = view.records();
        // Its log lines after the stop were all written after the resume.
        let lost = records
            .iter()
            .find(|r| r.replica == paused && r.kind == Kind::Lost && r.at > stopped)?
            .at;
        records
            .iter()
            .any(|r| r.replica != paused && r.at > lost && matches!(r.kind, Kind::Acted { .. }))
            .then_some(())
    })
    .await;

    // Killed: the holder twice (the resumed replica may be the next one).
    for _ in 0..2 {
        let what = format!("{}: a live holder", c.name);
        let view: &Component = c;
        let holder = eventually(&what, DEADLINE, move || async move {
            view.holder(client).await.filter(|h| view.replicas[*h].server.is_some())
        })
        .await;
        let killed = Timestamp::now();
        c.replicas[holder].server.take().expect("live").kill();
        let (next, became, acted) = c.successor(client, holder, killed).await;
        takeovers.push(Takeover {
            component: c.name,
            how: "SIGKILL",
            from: holder,
            to: next,
            to_lease: since(killed, became),
            to_action: since(killed, acted),
        });
    }
    takeovers
}

/// The check on `component`'s records (in time order): every write is by the replica that
/// last became the leader. Returns the terms: (replica, first write, last write, writes).
fn acting_terms(component: &str, records: &[Record]) -> Vec<(usize, Timestamp, Timestamp, usize)> {
    let mut leader: Option<usize> = None;
    let mut terms: Vec<(usize, Timestamp, Timestamp, usize)> = Vec::new();
    for r in records {
        match &r.kind {
            Kind::Became => leader = Some(r.replica),
            Kind::Acted { method, path } => {
                assert_eq!(
                    leader,
                    Some(r.replica),
                    "{}: replica {} wrote ({method} {path}) at {} while the last to become the \
                     leader was {leader:?}: two replicas acted at once",
                    component,
                    r.replica,
                    r.at
                );
                match terms.last_mut() {
                    Some(t) if t.0 == r.replica => {
                        t.2 = r.at;
                        t.3 += 1;
                    }
                    _ => terms.push((r.replica, r.at, r.at, 1)),
                }
            }
            Kind::Refused { .. } | Kind::Lost => {}
        }
    }
    terms
}

/// Creates a namespace and a pod every quarter second until `stop`: work for the
/// ServiceAccount controller and the scheduler at every moment.
fn generate_work(client: Client, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let pods: Api<Pod> = Api::namespaced(client, "default");
        let mut created = 0;
        while !stop.load(Ordering::SeqCst) {
            created += 1;
            let ns: Namespace =
                serde_json::from_value(serde_json::json!({"metadata": {"name": format!("load-{created}")}}))
                    .expect("namespace");
            let pod: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("load-{created}")},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}
            }))
            .expect("pod");
            // A failure (the API busy) only means less work this round.
            let _ = namespaces.create(&PostParams::default(), &ns).await;
            let _ = pods.create(&PostParams::default(), &pod).await;
            // Pacing of the load, not a wait for a condition.
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        created
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_three_replicas_one_acts_and_another_takes_over_when_it_dies_or_pauses() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_store, master, client) = store_with_api(dir.path());
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(serde_json::json!({"metadata": {"name": "n1"},
        "status": {"allocatable": {"cpu": "64", "memory": "256Gi", "pods": "10000"}}}))
    .expect("node");
    eventually("create the node", DEADLINE, || {
        let (nodes, node) = (nodes.clone(), node.clone());
        async move { nodes.create(&PostParams::default(), &node).await.ok() }
    })
    .await;

    let mut controller_managers = Component::start(
        "controller-manager",
        "kube-controller-manager",
        &master,
        dir.path(),
        &CONTROLLER_MANAGER_FLAGS,
    );
    let mut schedulers = Component::start("scheduler", "kube-scheduler", &master, dir.path(), &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let load = generate_work(client.clone(), stop.clone());

    let mut takeovers = exercise(&client, &mut controller_managers).await;
    takeovers.extend(exercise(&client, &mut schedulers).await);
    stop.store(true, Ordering::SeqCst);
    let created = load.await.expect("the load");

    for t in &takeovers {
        eprintln!(
            "{} {} of replica {} -> replica {}: held the lease after {:.3} s, acted after {:.3} s",
            t.component,
            t.how,
            t.from,
            t.to,
            t.to_lease.as_secs_f64(),
            t.to_action.as_secs_f64()
        );
    }
    for c in [&controller_managers, &schedulers] {
        let terms = acting_terms(c.name, &c.records());
        let refused = c
            .records()
            .iter()
            .filter(|r| matches!(r.kind, Kind::Refused { .. }))
            .count();
        let summary: Vec<String> = terms
            .iter()
            .map(|(r, first, last, n)| format!("replica {r}: {n} writes {first} .. {last}"))
            .collect();
        eprintln!(
            "{}: {refused} writes refused; terms:\n  {}",
            c.name,
            summary.join("\n  ")
        );
        assert!(
            terms.len() >= 4,
            "{}: four replicas' turns at least (first holder, after the pause, after each kill)",
            c.name
        );
    }
    eprintln!("load: {created} namespaces and pods created");
    for t in &takeovers {
        assert!(
            t.to_action <= takeover_bound(),
            "{} {} of replica {}: replica {} acted {:?} after it, above {:?}",
            t.component,
            t.how,
            t.from,
            t.to,
            t.to_action,
            takeover_bound()
        );
    }
}

/// The check itself: a write between another replica's takeover and its own return to
/// the Lease is caught; one after winning the Lease back is not.
#[test]
#[should_panic(expected = "two replicas acted at once")]
fn the_check_catches_a_replica_acting_after_another_took_over() {
    let lines = [
        (
            0,
            "2026-12-05T21:59:34.000001Z  INFO capstan_agents::leader: became the leader lease=l identity=a",
        ),
        (
            0,
            "2026-12-05T21:59:34.100000Z  DEBUG capstan::acted: acted identity=a method=POST path=/x",
        ),
        (
            1,
            "2026-12-05T21:59:37.000000Z  INFO capstan_agents::leader: became the leader lease=l identity=b",
        ),
        (
            1,
            "2026-12-05T21:59:37.100000Z  DEBUG capstan::acted: acted identity=b method=POST path=/y",
        ),
        (
            0,
            "2026-12-05T21:59:38.000000Z  INFO capstan_agents::leader: became the leader lease=l identity=a",
        ),
        (
            0,
            "2026-12-05T21:59:38.100000Z  DEBUG capstan::acted: acted identity=a method=PUT path=/z",
        ),
    ];
    let records: Vec<Record> = lines.iter().filter_map(|(i, l)| parse(l, *i)).collect();
    assert_eq!(records.len(), 6, "every line parsed");
    assert_eq!(
        records[5].kind,
        Kind::Acted {
            method: "PUT".into(),
            path: "/z".into()
        }
    );
    assert_eq!(acting_terms("test", &records).len(), 3, "won back: no overlap");
    // Without winning it back.
    let interleaved: Vec<Record> = records.iter().filter(|r| r.at != records[4].at).cloned().collect();
    acting_terms("test", &interleaved);
}
