//! `status`: each endpoint's view of the cluster (Maintenance.Status), and the leader.
//!
//! A member is the leader when its Status answer names itself: `leader ==
//! header.member_id`. The cluster has a leader when every endpoint answers and all name
//! the same leader, which is one of them. `--wait-leader` polls until then; the
//! `--target leader|followers` option of `kv put`/`kv range` and the `failover` workload
//! use the same rule.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use capstan_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use capstan_proto::etcdserverpb::StatusRequest;
use tonic::transport::Channel;

use crate::common::{connect, parse_endpoints, BenchResult, Deadline, Json};

#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    /// Comma-separated loopback endpoints (host:port), one per member.
    #[arg(long, default_value = "127.0.0.1:2379")]
    pub endpoints: String,
    /// Poll until every endpoint answers and all name the same leader, one of them.
    #[arg(long)]
    pub wait_leader: bool,
    /// Seconds the whole run may take.
    #[arg(long, default_value_t = 30)]
    pub timeout_s: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One endpoint's answer to Maintenance.Status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberStatus {
    pub member_id: u64,
    pub leader: u64,
    pub raft_term: u64,
    pub raft_index: u64,
    pub raft_applied_index: u64,
    pub revision: i64,
    pub version: String,
}

impl MemberStatus {
    pub fn is_leader(&self) -> bool {
        self.leader != 0 && self.leader == self.member_id
    }

    fn json(&self) -> Json {
        let mut j = Json::new();
        j.str("member_id", &format!("{:x}", self.member_id))
            .str("leader", &format!("{:x}", self.leader))
            .bool("is_leader", self.is_leader())
            .int("raft_term", self.raft_term as i64)
            .int("raft_index", self.raft_index as i64)
            .int("raft_applied_index", self.raft_applied_index as i64)
            .int("revision", self.revision)
            .str("version", &self.version);
        j
    }
}

/// The endpoints and the agreed leader: `statuses[leader]` is the leader's own answer.
#[derive(Clone, Debug)]
pub struct ClusterView {
    pub statuses: Vec<MemberStatus>,
    pub leader: usize,
}

/// Maintenance.Status on one channel, bounded by `timeout`.
pub async fn member_status(channel: Channel, timeout: Duration) -> BenchResult<MemberStatus> {
    let mut client = MaintenanceClient::new(channel);
    match tokio::time::timeout(timeout, client.status(StatusRequest {})).await {
        Ok(Ok(resp)) => {
            let r = resp.into_inner();
            let header = r.header.unwrap_or_default();
            Ok(MemberStatus {
                member_id: header.member_id,
                leader: r.leader,
                raft_term: r.raft_term,
                raft_index: r.raft_index,
                raft_applied_index: r.raft_applied_index,
                revision: header.revision,
                version: r.version,
            })
        }
        Ok(Err(status)) => Err(format!("status: {status}")),
        Err(_) => Err("status: timed out".into()),
    }
}

/// One Status round over all endpoints (connecting to each), concurrently.
pub async fn poll_once(endpoints: &[SocketAddr], per_call: Duration) -> Vec<BenchResult<MemberStatus>> {
    let calls = endpoints.iter().map(|&addr| async move {
        let deadline = Deadline::after(per_call);
        let ch = connect(addr, deadline).await?;
        member_status(ch, deadline.remaining()).await
    });
    futures::future::join_all(calls).await
}

/// The index of the agreed leader, if every endpoint answered and all name the same
/// member, which is one of the endpoints and names itself.
pub fn agreed_leader(statuses: &[BenchResult<MemberStatus>]) -> Result<usize, String> {
    let mut ok = Vec::with_capacity(statuses.len());
    for (i, s) in statuses.iter().enumerate() {
        match s {
            Ok(s) => ok.push(s),
            Err(e) => return Err(format!("endpoint {i}: {e}")),
        }
    }
    let Some(first) = ok.first() else {
        return Err("no endpoint".into());
    };
    let leader = first.leader;
    if leader == 0 {
        return Err("endpoint 0 knows no leader".into());
    }
    if let Some(i) = ok.iter().position(|s| s.leader != leader) {
        return Err(format!(
            "endpoints disagree on the leader ({:x} and {:x} at endpoint {i})",
            leader, ok[i].leader
        ));
    }
    let mut ids: Vec<u64> = ok.iter().map(|s| s.member_id).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != ok.len() {
        return Err("two endpoints report the same member ID (the same member listed twice?)".into());
    }
    ok.iter()
        .position(|s| s.is_leader())
        .ok_or_else(|| format!("leader {leader:x} is none of the endpoints"))
}

/// Polls Status on every endpoint every 50 ms until one leader is agreed or the
/// deadline passes.
pub async fn wait_leader(endpoints: &[SocketAddr], deadline: Deadline) -> BenchResult<ClusterView> {
    loop {
        let round = poll_once(endpoints, deadline.min_after(Duration::from_secs(2))).await;
        match agreed_leader(&round) {
            Ok(leader) => {
                let statuses = round.into_iter().map(|s| s.unwrap_or_default()).collect();
                return Ok(ClusterView { statuses, leader });
            }
            Err(why) => {
                if deadline.passed() {
                    return Err(format!("no agreed leader: {why}"));
                }
            }
        }
        tokio::time::sleep(deadline.min_after(Duration::from_millis(50))).await;
    }
}

pub async fn run_status(a: StatusArgs) -> BenchResult<()> {
    let endpoints = parse_endpoints(&a.endpoints)?;
    let deadline = Deadline::after(Duration::from_secs(a.timeout_s));
    let started = Instant::now();
    let (statuses, leader): (Vec<BenchResult<MemberStatus>>, Result<usize, String>) = if a.wait_leader {
        match wait_leader(&endpoints, deadline).await {
            Ok(v) => (v.statuses.into_iter().map(Ok).collect(), Ok(v.leader)),
            Err(e) => {
                let last = poll_once(
                    &endpoints,
                    deadline
                        .min_after(Duration::from_secs(2))
                        .max(Duration::from_millis(500)),
                )
                .await;
                (last, Err(e))
            }
        }
    } else {
        let round = poll_once(&endpoints, deadline.min_after(Duration::from_secs(5))).await;
        let leader = agreed_leader(&round);
        (round, leader)
    };
    let waited = started.elapsed();
    if a.json {
        let mut j = Json::new();
        j.str("bench", "status").str("endpoints", &a.endpoints);
        match &leader {
            Ok(i) => {
                j.int("leader_index", *i as i64)
                    .str("leader_endpoint", &endpoints[*i].to_string());
            }
            Err(e) => {
                j.opt_int("leader_index", None).str("no_leader", e);
            }
        }
        j.num("waited_s", waited.as_secs_f64());
        let mut members = Json::new();
        for (addr, s) in endpoints.iter().zip(&statuses) {
            match s {
                Ok(s) => members.obj(&addr.to_string(), s.json()),
                Err(e) => members.str(&addr.to_string(), e),
            };
        }
        j.obj("members", members);
        println!("{}", j.render());
    } else {
        for (addr, s) in endpoints.iter().zip(&statuses) {
            match s {
                Ok(s) => println!(
                    "{addr}: member {:x}, leader {:x}{}, term {}, index {}, applied {}, revision {}, version {}",
                    s.member_id,
                    s.leader,
                    if s.is_leader() { " (this member)" } else { "" },
                    s.raft_term,
                    s.raft_index,
                    s.raft_applied_index,
                    s.revision,
                    s.version
                ),
                Err(e) => println!("{addr}: {e}"),
            }
        }
        match &leader {
            Ok(i) => println!("leader: {} (after {:.3} s)", endpoints[*i], waited.as_secs_f64()),
            Err(e) => println!("no agreed leader: {e}"),
        }
    }
    match leader {
        Ok(_) => Ok(()),
        Err(e) if a.wait_leader => Err(e),
        // Without --wait-leader, an answer from every endpoint is success.
        Err(_) => match statuses.iter().find_map(|s| s.as_ref().err()) {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(id: u64, leader: u64) -> BenchResult<MemberStatus> {
        Ok(MemberStatus {
            member_id: id,
            leader,
            ..Default::default()
        })
    }

    #[test]
    fn leader_must_be_agreed_and_present() {
        assert_eq!(agreed_leader(&[st(1, 2), st(2, 2), st(3, 2)]), Ok(1));
        assert!(agreed_leader(&[st(1, 2), st(2, 2), st(3, 3)]).is_err());
        assert!(agreed_leader(&[st(1, 0), st(2, 0), st(3, 0)]).is_err());
        assert!(agreed_leader(&[st(1, 9), st(2, 9), st(3, 9)]).is_err());
        assert!(agreed_leader(&[st(1, 2), Err("down".into()), st(3, 2)]).is_err());
        assert!(agreed_leader(&[st(2, 2), st(2, 2)]).is_err());
        // A single member that leads itself.
        assert_eq!(agreed_leader(&[st(7, 7)]), Ok(0));
    }
}
