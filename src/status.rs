//! `capstan status`: what an operator wants to know first about a cluster. The store's
//! members (each one's own view: leader, term, index, database size, or why it cannot be
//! reached), whether there is a quorum, which replica of the scheduler and of the
//! controller-manager acts (their Leases), and the nodes' readiness.
//!
//! The members are found from the etcd endpoints given (any one is enough: the member
//! list names the others' client URLs, and each is asked itself). The Kubernetes part
//! is read through the API servers given (failed over as the agents do); when none
//! answers, the store part is still shown.
//!
//! Exit status: 0 when a quorum of voting members answers and agrees on a leader, 1
//! otherwise, so that scripts can wait on it.

use std::time::Duration;

use capstan_proto::etcdserverpb::cluster_client::ClusterClient;
use capstan_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use capstan_proto::etcdserverpb::{Member, MemberListRequest, StatusRequest, StatusResponse};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use tonic::transport::{Channel, ClientTlsConfig};

/// A line of the report. The report is written at the end in one go, and a closed stdout
/// (`capstan status | head`) is not an error worth a panic.
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}

/// How long one member may take to answer.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the Kubernetes API may take to answer one request.
const API_TIMEOUT: Duration = Duration::from_secs(5);
/// Members asked at most (a list naming more is cut, with a note).
const MEMBERS_MAX: usize = 16;

#[derive(clap::Args)]
pub struct StatusArgs {
    /// etcd endpoints of the store (any member will do), comma separated; `http://`
    /// optional. Default: the cluster in --data-dir if given, else 127.0.0.1:2379.
    #[arg(long)]
    endpoints: Option<String>,
    /// Kubernetes API URLs, comma separated. Default: the cluster in --data-dir if given,
    /// else http://127.0.0.1:6443.
    #[arg(long)]
    server: Option<String>,
    /// The directory of a cluster started by `capstan up`: its addresses are used (and
    /// its kubeconfig, unless --kubeconfig is given).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// A kubeconfig with the cluster's CA and a client certificate, for an https:// API.
    #[arg(long)]
    kubeconfig: Option<std::path::PathBuf>,
    #[command(flatten)]
    etcd_tls: EtcdTlsFlags,
}

/// TLS to the etcd API, as etcdctl's flags give it.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct EtcdTlsFlags {
    /// The CA of https:// etcd endpoints (etcdctl's flag; `capstan status --data-dir`:
    /// its pki/ca.crt).
    #[arg(long)]
    cacert: Option<std::path::PathBuf>,
    /// A client certificate for the etcd API (`capstan status --data-dir`: its
    /// pki/admin.crt).
    #[arg(long, requires = "key")]
    cert: Option<std::path::PathBuf>,
    /// The key of --cert.
    #[arg(long, requires = "cert")]
    key: Option<std::path::PathBuf>,
}

impl EtcdTlsFlags {
    /// The TLS the flags give; where one is missing, the file of that name in `pki`
    /// (`ca.crt`, `admin.crt`, `admin.key`) when given and present. None without a CA.
    pub fn config(&self, pki: Option<&std::path::Path>) -> Result<Option<ClientTlsConfig>, String> {
        let pki = pki.filter(|p| p.join("ca.crt").exists());
        let pick = |flag: &Option<std::path::PathBuf>, file: &str| flag.clone().or_else(|| pki.map(|p| p.join(file)));
        let Some(ca) = pick(&self.cacert, "ca.crt") else {
            return Ok(None);
        };
        let (cert, key) = (pick(&self.cert, "admin.crt"), pick(&self.key, "admin.key"));
        etcd_client_tls(&ca, cert.as_deref().zip(key.as_deref())).map(Some)
    }
}

/// TLS to an etcd API: trust the CA file `ca`, present `identity` (certificate and key
/// files) when given.
pub fn etcd_client_tls(
    ca: &std::path::Path,
    identity: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<ClientTlsConfig, String> {
    use tonic::transport::{Certificate, Identity};
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(tls)
}

/// TLS for the etcd endpoints: the flags', or those of the `capstan up` directory.
fn etcd_tls(args: &StatusArgs) -> Result<Option<ClientTlsConfig>, String> {
    let pki = args.data_dir.as_ref().map(|d| d.join("pki"));
    args.etcd_tls.config(pki.as_deref())
}

/// What one member said about itself, or why it said nothing.
struct MemberView {
    name: String,
    id: u64,
    endpoint: String,
    is_learner: bool,
    status: Result<StatusResponse, String>,
}

fn with_scheme(endpoint: &str) -> String {
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    }
}

async fn channel(endpoint: &str, tls: Option<&ClientTlsConfig>) -> Result<Channel, String> {
    let endpoint_config = Channel::from_shared(with_scheme(endpoint)).map_err(|e| format!("{endpoint}: {e}"))?;
    let endpoint_config = match tls {
        Some(tls) => endpoint_config
            .tls_config(tls.clone())
            .map_err(|e| format!("{endpoint}: TLS: {e}"))?,
        None => endpoint_config,
    };
    endpoint_config
        .connect_timeout(MEMBER_TIMEOUT)
        .timeout(MEMBER_TIMEOUT)
        .connect()
        .await
        .map_err(|e| format!("cannot connect: {e}"))
}

async fn member_status(endpoint: &str, tls: Option<&ClientTlsConfig>) -> Result<StatusResponse, String> {
    let mut client = MaintenanceClient::new(channel(endpoint, tls).await?);
    client
        .status(StatusRequest {})
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| s.message().to_owned())
}

async fn member_list(endpoint: &str, tls: Option<&ClientTlsConfig>) -> Result<Vec<Member>, String> {
    let mut client = ClusterClient::new(channel(endpoint, tls).await?);
    client
        .member_list(MemberListRequest { linearizable: false })
        .await
        .map(|r| r.into_inner().members)
        .map_err(|s| s.message().to_owned())
}

pub async fn run(args: StatusArgs) -> Result<bool, String> {
    let etcd_tls = etcd_tls(&args)?;
    let (default_endpoints, default_server) = match &args.data_dir {
        Some(dir) => crate::up::addresses(dir)?,
        None => ("127.0.0.1:2379".to_owned(), "http://127.0.0.1:6443".to_owned()),
    };
    let endpoints: Vec<String> = args
        .endpoints
        .unwrap_or(default_endpoints)
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect();
    if endpoints.is_empty() {
        return Err("--endpoints: no endpoint given".into());
    }
    let server = args.server.unwrap_or(default_server);
    let kubeconfig = args
        .kubeconfig
        .clone()
        .or_else(|| args.data_dir.as_ref().map(|d| d.join("kubeconfig")));
    let tls = match kubeconfig {
        Some(path) if server.starts_with("https://") => {
            capstan_agents::tls::read_kubeconfig(&path)
                .map_err(|e| format!("--kubeconfig: {e}"))?
                .tls
        }
        _ => None,
    };

    let mut out = String::new();
    // The member list from the first endpoint that gives one.
    let mut members = None;
    let mut list_errors = Vec::new();
    for e in &endpoints {
        match member_list(e, etcd_tls.as_ref()).await {
            Ok(list) => {
                members = Some(list);
                break;
            }
            Err(why) => list_errors.push(format!("{e}: {why}")),
        }
    }
    let mut views = Vec::new();
    match members {
        Some(mut list) => {
            if list.len() > MEMBERS_MAX {
                say!(
                    out,
                    "(the member list names {} members; the first {MEMBERS_MAX} are shown)",
                    list.len()
                );
                list.truncate(MEMBERS_MAX);
            }
            let etcd_tls = etcd_tls.as_ref();
            let asks = list.iter().map(|m| async move {
                let endpoint = m.client_ur_ls.first().cloned().unwrap_or_default();
                let status = if endpoint.is_empty() {
                    Err("not started yet (no client URL)".to_owned())
                } else {
                    member_status(&endpoint, etcd_tls).await
                };
                MemberView {
                    name: m.name.clone(),
                    id: m.id,
                    endpoint,
                    is_learner: m.is_learner,
                    status,
                }
            });
            views = futures::future::join_all(asks).await;
        }
        None => {
            say!(out, "No member answered with the member list:");
            for e in &list_errors {
                say!(out, "  {e}");
            }
        }
    }
    let healthy = print_members(&mut out, &views);
    print_control_plane(&mut out, &server, tls.as_ref()).await;
    use std::io::Write as _;
    let _ = std::io::stdout().write_all(out.as_bytes());
    Ok(healthy)
}

/// Prints the members' table and the verdict; true when a quorum answers with a leader.
fn print_members(out: &mut String, views: &[MemberView]) -> bool {
    if views.is_empty() {
        say!(out, "Store: no member could be asked.");
        return false;
    }
    let voters: Vec<&MemberView> = views.iter().filter(|v| !v.is_learner).collect();
    let quorum = voters.len() / 2 + 1;
    let answering = voters.iter().filter(|v| v.status.is_ok()).count();
    let leaders: std::collections::BTreeSet<u64> = views
        .iter()
        .filter_map(|v| v.status.as_ref().ok())
        .map(|s| s.leader)
        .filter(|&l| l != 0)
        .collect();
    let leader_name = |id: u64| {
        views
            .iter()
            .find(|v| v.id == id)
            .map_or_else(|| format!("{id:x}"), |v| v.name.clone())
    };
    say!(
        out,
        "Store members ({answering} of {} voting members answer; a quorum is {quorum}):",
        voters.len()
    );
    say!(
        out,
        "  {:<10} {:<16} {:<26} {:<7} {:>6} {:>10} {:>10} {:>10}  STATUS",
        "NAME",
        "ID",
        "CLIENT URL",
        "LEADER",
        "TERM",
        "INDEX",
        "APPLIED",
        "DB SIZE"
    );
    for v in views {
        match &v.status {
            Ok(s) => say!(
                out,
                "  {:<10} {:<16x} {:<26} {:<7} {:>6} {:>10} {:>10} {:>10}  {}",
                v.name,
                v.id,
                v.endpoint,
                if s.leader == v.id { "yes" } else { "no" },
                s.raft_term,
                s.raft_index,
                s.raft_applied_index,
                format_bytes(s.db_size),
                if v.is_learner {
                    "learner".to_owned()
                } else if s.errors.is_empty() {
                    "ok".to_owned()
                } else {
                    s.errors.join("; ")
                }
            ),
            Err(why) => say!(
                out,
                "  {:<10} {:<16x} {:<26} {:<7} {:>6} {:>10} {:>10} {:>10}  unreachable: {why}",
                v.name,
                v.id,
                v.endpoint,
                "-",
                "-",
                "-",
                "-",
                "-"
            ),
        }
    }
    if voters.len().is_multiple_of(2) {
        say!(
            out,
            "  Note: {} voting members is an even number: it tolerates no more failures than {} \
             (a quorum of {} is {quorum}); add or remove one.",
            voters.len(),
            voters.len() - 1,
            voters.len()
        );
    }
    if answering < quorum {
        say!(
            out,
            "  QUORUM LOST: {answering} of {} voting members answer and {quorum} are needed; \
             writes (and linearizable reads) fail until enough members are back.",
            voters.len()
        );
        return false;
    }
    match leaders.len() {
        0 => {
            say!(
                out,
                "  No leader: an election is under way (or the members cannot reach each other)."
            );
            false
        }
        1 => {
            let id = *leaders.iter().next().expect("one leader");
            if views.iter().any(|v| v.id == id && v.status.is_err()) {
                say!(
                    out,
                    "  Leader: {} as the others last heard, but it does not answer: they elect \
                     another once their election timeout passes.",
                    leader_name(id)
                );
                return false;
            }
            say!(out, "  Leader: {}.", leader_name(id));
            true
        }
        _ => {
            let names: Vec<String> = leaders.iter().map(|&id| leader_name(id)).collect();
            say!(
                out,
                "  Members name different leaders ({}): an election just ended; ask again.",
                names.join(", ")
            );
            false
        }
    }
}

fn format_bytes(n: i64) -> String {
    let n = n.max(0) as f64;
    if n >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} GiB", n / (1024.0 * 1024.0 * 1024.0))
    } else if n >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", n / (1024.0 * 1024.0))
    } else if n >= 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else {
        format!("{n} B")
    }
}

async fn print_control_plane(out: &mut String, server: &str, tls: Option<&capstan_agents::tls::ClientTls>) {
    let client = match capstan_agents::client::api_client_tls(server, tls) {
        Ok(c) => c,
        Err(e) => {
            say!(out, "Kubernetes API: {e}");
            return;
        }
    };
    let leases: kube::Api<Lease> = kube::Api::namespaced(client.clone(), "kube-system");
    let nodes: kube::Api<Node> = kube::Api::all(client);
    say!(out, "Control plane (through {server}):");
    let now = k8s_openapi::jiff::Timestamp::now();
    for (what, lease) in [
        ("scheduler", "kube-scheduler"),
        ("controller-manager", "kube-controller-manager"),
    ] {
        match tokio::time::timeout(API_TIMEOUT, leases.get_opt(lease)).await {
            Ok(Ok(Some(l))) => {
                let spec = l.spec.unwrap_or_default();
                let holder = spec.holder_identity.unwrap_or_default();
                let ago = spec.renew_time.map(|t| now.duration_since(t.0));
                let expired = match (ago, spec.lease_duration_seconds) {
                    (Some(ago), Some(d)) => ago.as_secs() > i64::from(d),
                    _ => false,
                };
                let renewed = ago.map_or("never renewed".to_owned(), |a| {
                    format!("renewed {:.1} s ago", a.as_secs_f64().max(0.0))
                });
                if holder.is_empty() {
                    say!(out, "  {what:<19} no holder (released)");
                } else if expired {
                    say!(
                        out,
                        "  {what:<19} {holder}: its Lease EXPIRED ({renewed}); another replica takes over"
                    );
                } else {
                    say!(out, "  {what:<19} active: {holder} ({renewed})");
                }
            }
            Ok(Ok(None)) => say!(
                out,
                "  {what:<19} no replica has run yet (no Lease kube-system/{lease})"
            ),
            Ok(Err(e)) => say!(out, "  {what:<19} cannot read its Lease: {e}"),
            Err(_) => say!(
                out,
                "  {what:<19} the API did not answer within {} s",
                API_TIMEOUT.as_secs()
            ),
        }
    }
    match tokio::time::timeout(API_TIMEOUT, nodes.list(&kube::api::ListParams::default())).await {
        Ok(Ok(list)) => {
            let ready = list.items.iter().filter(|n| node_ready(n) == "Ready").count();
            say!(out, "Nodes ({} registered, {ready} Ready):", list.items.len());
            for n in &list.items {
                let address = n
                    .status
                    .as_ref()
                    .and_then(|s| s.addresses.as_ref())
                    .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
                    .map_or("", |a| a.address.as_str());
                say!(
                    out,
                    "  {:<20} {:<9} {address}",
                    n.metadata.name.as_deref().unwrap_or(""),
                    node_ready(n)
                );
            }
        }
        Ok(Err(e)) => say!(out, "Nodes: cannot list them: {e}"),
        Err(_) => say!(out, "Nodes: the API did not answer within {} s", API_TIMEOUT.as_secs()),
    }
}

/// `Ready`, `NotReady` or `Unknown`, as kubectl shows a node's Ready condition.
fn node_ready(n: &Node) -> &'static str {
    match capstan_agents::nodelifecycle::ready_status(n) {
        Some("True") => "Ready",
        Some("False") => "NotReady",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str, id: u64, status: Result<(u64, u64), &str>) -> MemberView {
        MemberView {
            name: name.into(),
            id,
            endpoint: format!("http://{name}:2379"),
            is_learner: false,
            status: status
                .map(|(leader, term)| StatusResponse {
                    leader,
                    raft_term: term,
                    ..Default::default()
                })
                .map_err(str::to_owned),
        }
    }

    #[test]
    fn a_quorum_with_one_leader_is_healthy_and_a_lost_quorum_is_not() {
        let healthy = [
            view("m1", 1, Ok((2, 3))),
            view("m2", 2, Ok((2, 3))),
            view("m3", 3, Err("down")),
        ];
        let mut out = String::new();
        assert!(print_members(&mut out, &healthy), "{out}");
        let lost = [
            view("m1", 1, Ok((0, 3))),
            view("m2", 2, Err("down")),
            view("m3", 3, Err("down")),
        ];
        assert!(!print_members(&mut out, &lost));
        assert!(out.contains("QUORUM LOST: 1 of 3"), "{out}");
        let electing = [
            view("m1", 1, Ok((0, 4))),
            view("m2", 2, Ok((0, 4))),
            view("m3", 3, Err("down")),
        ];
        assert!(!print_members(&mut out, &electing));
        assert!(!print_members(&mut out, &[]));
        let dead_leader = [
            view("m1", 1, Ok((3, 3))),
            view("m2", 2, Ok((3, 3))),
            view("m3", 3, Err("down")),
        ];
        assert!(!print_members(&mut out, &dead_leader));
        assert!(out.contains("Leader: m3 as the others last heard"), "{out}");
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(2048), "2.0 KiB");
        assert_eq!(format_bytes(3 * 1024 * 1024 + 512 * 1024), "3.5 MiB");
    }
}
