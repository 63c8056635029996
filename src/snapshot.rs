//! `capstan snapshot`: save a running cluster's state to a file, rebuild a member's data
//! directory from such a file, and say what a file holds (etcdctl's `snapshot save`,
//! `snapshot restore` and `snapshot status`, with their flag names). docs/operations.md
//! walks through a backup and a restore.
//!
//! - `save FILE`: Maintenance.Snapshot from the first of `--endpoints` that answers,
//!   written to `FILE.part`, fsynced, read back and its digest checked, then renamed to
//!   `FILE` (and the directory fsynced): a `FILE` that exists is whole and checked. A
//!   member that fails before or during the transfer is left for the next endpoint. The
//!   file has the same bytes `etcdctl snapshot save` writes from a Capstan member, so
//!   either tool's file restores.
//! - `restore FILE --data-dir D`: a new data directory for one member of a new cluster
//!   with the old data ([`capstan_store::restore`]: every key at its revisions, leases;
//!   the old membership dropped; a Raft log bootstrapped as `capstan store` with the same
//!   `--name`, `--initial-cluster`, `--initial-cluster-token` and peer URL would). Run it
//!   once per member, from the same file, with the same cluster flags, then start each
//!   member with those flags. Offline: the member must not be running, and `D` must not
//!   exist (or be empty).
//! - `status FILE`: hash, revision, total keys and size, as etcdctl prints them (`-w
//!   simple|table|json`); the hash is the history's CRC-32, which `etcdctl endpoint hashkv`
//!   also gives at that revision.
//!
//! Left out: TLS and authentication flags (Capstan serves neither), etcd's bbolt files
//! (refused with a clear message), and restoring into a running member.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use capstan_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use capstan_proto::etcdserverpb::SnapshotRequest;
use capstan_store::restore::{self, RestoreConfig, SnapshotStatus};

/// `capstan store`'s default peer URL (see `NodeConfig::new`), and so a restored single
/// member's unless told otherwise.
const PEER_URL_DEFAULT: &str = "http://127.0.0.1:2380";
/// The longest one chunk of the stream may take to arrive before the endpoint is given
/// up on (a member spools the whole snapshot before it sends the first one).
const CHUNK_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(clap::Args)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    command: SnapshotCommand,
}

#[derive(clap::Subcommand)]
enum SnapshotCommand {
    /// Save the state of a running cluster (one member's) to FILE.
    Save(SaveArgs),
    /// Create a member's data directory from a snapshot FILE, as a member of a new cluster
    /// with the snapshot's data (run once per member, with the same cluster flags).
    Restore(RestoreArgs),
    /// Check a snapshot FILE (its digest) and print its hash, revision, keys and size.
    Status(StatusArgs),
}

#[derive(clap::Args)]
struct SaveArgs {
    /// Where to write the snapshot (through FILE.part, renamed once checked).
    file: PathBuf,
    /// Members' client addresses, comma separated (host:port, `http://` optional); the
    /// first that answers sends the snapshot.
    #[arg(long, default_value = "127.0.0.1:2379")]
    endpoints: String,
    /// How long to wait for a connection to one endpoint.
    #[arg(long, default_value = "2s", value_parser = super::parse_duration)]
    dial_timeout: Duration,
    /// For https:// endpoints (a store without --insecure): the CA and a client
    /// certificate of the cluster, as etcdctl takes them.
    #[command(flatten)]
    tls: crate::status::EtcdTlsFlags,
}

#[derive(clap::Args)]
struct RestoreArgs {
    /// The snapshot file (from `capstan snapshot save` or `etcdctl snapshot save` against
    /// Capstan).
    file: PathBuf,
    /// The member's new data directory; must not exist (or be empty).
    #[arg(long)]
    data_dir: PathBuf,
    /// The member's name, as it will be started with (`capstan store --name`).
    #[arg(long, default_value = "default")]
    name: String,
    /// Every member of the new cluster as name=peer-URL, comma separated, this one
    /// included, as the members will be started with; empty: this member alone.
    #[arg(long, default_value = "")]
    initial_cluster: String,
    /// The new cluster's token, as the members will be started with.
    #[arg(long, default_value = "capstan-cluster")]
    initial_cluster_token: String,
    /// This member's peer URL (default: http://127.0.0.1:2380, as `capstan store` without
    /// --listen-peer); must match its entry in --initial-cluster when both are given.
    #[arg(long)]
    initial_advertise_peer_urls: Option<String>,
}

#[derive(clap::Args)]
struct StatusArgs {
    /// The snapshot file.
    file: PathBuf,
    /// Output format: simple, table or json (as etcdctl's).
    #[arg(short = 'w', long = "write-out", default_value = "simple", value_parser = ["simple", "table", "json"])]
    write_out: String,
}

pub async fn run(args: SnapshotArgs) -> Result<(), String> {
    match args.command {
        SnapshotCommand::Save(a) => save(a).await,
        // Restore and status only read and write files; nothing else runs meanwhile.
        SnapshotCommand::Restore(a) => restore_member(a),
        SnapshotCommand::Status(a) => status(a),
    }
}

/// `host:port` or a URL, as etcdctl takes endpoints, to a URL.
fn endpoint_url(e: &str) -> String {
    if e.starts_with("http://") || e.starts_with("https://") {
        e.to_string()
    } else {
        format!("http://{e}")
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

async fn save(args: SaveArgs) -> Result<(), String> {
    let endpoints: Vec<String> = args
        .endpoints
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(endpoint_url)
        .collect();
    if endpoints.is_empty() {
        return Err("--endpoints names no endpoint".into());
    }
    let tls = args.tls.config(None)?;
    let part = with_suffix(&args.file, ".part");
    let mut failures = Vec::new();
    for (i, endpoint) in endpoints.iter().enumerate() {
        match save_from(endpoint, &part, args.dial_timeout, tls.as_ref()).await {
            Ok(()) => {
                let status = match restore::inspect(&part) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = std::fs::remove_file(&part);
                        failures.push(format!("{endpoint}: the saved file does not check: {e}"));
                        continue;
                    }
                };
                std::fs::rename(&part, &args.file)
                    .map_err(|e| format!("cannot rename {} to {}: {e}", part.display(), args.file.display()))?;
                std::fs::File::open(parent_dir(&args.file))
                    .and_then(|d| d.sync_all())
                    .map_err(|e| format!("cannot sync the directory of {}: {e}", args.file.display()))?;
                println!("Snapshot saved at {}", args.file.display());
                println!(
                    "from {endpoint}: revision {}, {} keys, {} bytes, hash {:x}",
                    status.revision, status.total_keys, status.size_bytes, status.hash
                );
                return Ok(());
            }
            Err(e) => {
                let _ = std::fs::remove_file(&part);
                if i + 1 < endpoints.len() {
                    tracing::warn!(endpoint, error = %e, "no snapshot from this endpoint; trying the next");
                }
                failures.push(format!("{endpoint}: {e}"));
            }
        }
    }
    Err(format!("no snapshot saved: {}", failures.join("; ")))
}

/// An error with its causes (tonic's transport error alone says only "transport error").
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    let mut last = text.clone();
    while let Some(c) = cause {
        // hyper repeats its own message in its cause.
        let this = c.to_string();
        if this != last {
            text.push_str(&format!(": {this}"));
        }
        last = this;
        cause = c.source();
    }
    text
}

/// Streams one member's snapshot into `part` and fsyncs it.
async fn save_from(
    endpoint: &str,
    part: &Path,
    dial_timeout: Duration,
    tls: Option<&tonic::transport::ClientTlsConfig>,
) -> Result<(), String> {
    let mut config =
        tonic::transport::Endpoint::from_shared(endpoint.to_string()).map_err(|e| format!("not an endpoint: {e}"))?;
    if let Some(tls) = tls {
        config = config.tls_config(tls.clone()).map_err(|e| format!("TLS: {e}"))?;
    }
    let channel = config
        .connect_timeout(dial_timeout)
        .connect()
        .await
        .map_err(|e| format!("cannot connect: {}", with_causes(&e)))?;
    let mut client = MaintenanceClient::new(channel);
    let mut stream = tokio::time::timeout(CHUNK_TIMEOUT, client.snapshot(SnapshotRequest {}))
        .await
        .map_err(|_| format!("no answer within {CHUNK_TIMEOUT:?}"))?
        .map_err(|s| format!("{}: {}", s.code(), s.message()))?
        .into_inner();
    let file = std::fs::File::create(part).map_err(|e| format!("cannot create {}: {e}", part.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut received = 0u64;
    // The size the member announced: what it has sent plus what it says remains.
    let mut expected = None;
    loop {
        let next = tokio::time::timeout(CHUNK_TIMEOUT, stream.message())
            .await
            .map_err(|_| format!("no data within {CHUNK_TIMEOUT:?} after {received} bytes"))?
            .map_err(|s| {
                format!(
                    "the stream failed after {received} bytes: {}: {}",
                    s.code(),
                    s.message()
                )
            })?;
        let Some(chunk) = next else { break };
        w.write_all(&chunk.blob)
            .map_err(|e| format!("cannot write {}: {e}", part.display()))?;
        received += chunk.blob.len() as u64;
        expected = Some(received + chunk.remaining_bytes);
        if chunk.remaining_bytes == 0 {
            break;
        }
    }
    match expected {
        Some(total) if total == received => {}
        Some(total) => return Err(format!("the stream ended after {received} of {total} bytes")),
        None => return Err("the stream ended without data".into()),
    }
    let file = w
        .into_inner()
        .map_err(|e| format!("cannot write {}: {}", part.display(), e.error()))?;
    file.sync_all()
        .map_err(|e| format!("cannot sync {}: {e}", part.display()))?;
    Ok(())
}

/// The host:port of a peer URL, for the `--listen-peer` of the start command printed.
fn host_port(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

fn restore_member(args: RestoreArgs) -> Result<(), String> {
    let initial_cluster = super::parse_initial_cluster(&args.initial_cluster)?;
    if let Some(url) = &args.initial_advertise_peer_urls {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("--initial-advertise-peer-urls {url:?} is not http://host:port"));
        }
    }
    if !initial_cluster.is_empty() {
        match initial_cluster.iter().find(|(n, _)| *n == args.name) {
            None => return Err(format!("--initial-cluster does not name this member ({})", args.name)),
            Some((_, url)) => {
                if let Some(advertised) = &args.initial_advertise_peer_urls {
                    if advertised != url {
                        return Err(format!(
                            "--initial-advertise-peer-urls {advertised} differs from {url}, this \
                             member's peer URL in --initial-cluster"
                        ));
                    }
                }
            }
        }
    }
    let mut config = RestoreConfig::new(&args.name, args.data_dir.clone());
    config.initial_cluster = initial_cluster.clone();
    config.initial_cluster_token = args.initial_cluster_token.clone();
    config.peer_url = args
        .initial_advertise_peer_urls
        .clone()
        .unwrap_or_else(|| PEER_URL_DEFAULT.to_string());
    let summary = restore::restore(&args.file, &config).map_err(|e| e.to_string())?;
    let s = &summary.snapshot;
    println!(
        "Restored {} (revision {}, compacted at {}, {} live keys, {} versions, {} leases) into {}",
        args.file.display(),
        s.revision,
        s.compact_revision,
        summary.live_keys,
        s.total_keys,
        s.leases,
        summary.data_dir.display()
    );
    let members: Vec<String> = summary
        .members
        .iter()
        .map(|m| format!("{}={} ({:x})", m.name, m.peer_urls.join(","), m.id))
        .collect();
    println!(
        "as member {} ({:x}) of a new cluster ({:x}) of {}: {}",
        args.name,
        summary.member_id,
        summary.cluster_id,
        members.len(),
        members.join(", ")
    );
    if !s.members.is_empty() || s.removed_members > 0 {
        let old: Vec<String> = s.members.iter().map(|m| format!("{} ({:x})", m.name, m.id)).collect();
        println!(
            "dropped the snapshot's membership: {} member(s) [{}], {} removed member record(s)",
            s.members.len(),
            old.join(", "),
            s.removed_members
        );
    }
    let my_url = summary
        .members
        .iter()
        .find(|m| m.id == summary.member_id)
        .and_then(|m| m.peer_urls.first().cloned())
        .unwrap_or_else(|| config.peer_url.clone());
    let mut start = format!(
        "capstan store --name {} --data-dir {}",
        args.name,
        summary.data_dir.display()
    );
    if !initial_cluster.is_empty() {
        start.push_str(&format!(" --initial-cluster {}", args.initial_cluster));
    }
    if args.initial_cluster_token != "capstan-cluster" {
        start.push_str(&format!(" --initial-cluster-token {}", args.initial_cluster_token));
    }
    if initial_cluster.len() > 1 || args.initial_advertise_peer_urls.is_some() {
        start.push_str(&format!(
            " --listen-peer {} --initial-advertise-peer-urls {my_url}",
            host_port(&my_url)
        ));
    }
    println!("Start it with (plus its --listen-client and other flags as before):\n  {start}");
    Ok(())
}

/// go-humanize's `Bytes`, which etcdctl prints sizes with: SI units, one decimal below 10.
fn humanize_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 10 {
        return format!("{n} B");
    }
    let e = ((n as f64).ln() / 1000f64.ln()).floor() as usize;
    let e = e.min(UNITS.len() - 1);
    let val = ((n as f64) / 1000f64.powi(e as i32) * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 {
        format!("{val:.1} {}", UNITS[e])
    } else {
        format!("{val:.0} {}", UNITS[e])
    }
}

/// The status as etcdctl prints it in `format` (simple, table or json).
fn format_status(s: &SnapshotStatus, format: &str) -> String {
    let size = humanize_bytes(s.size_bytes);
    match format {
        "json" => format!(
            "{{\"hash\":{},\"revision\":{},\"totalKey\":{},\"totalSize\":{}}}\n",
            s.hash, s.revision, s.total_keys, s.size_bytes
        ),
        "table" => {
            let header = ["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"];
            let row = [
                format!("{:x}", s.hash),
                s.revision.to_string(),
                s.total_keys.to_string(),
                size,
            ];
            let widths: Vec<usize> = header.iter().zip(&row).map(|(h, r)| h.len().max(r.len()) + 2).collect();
            let rule = format!(
                "+{}+\n",
                widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("+")
            );
            let centered = |text: &str, w: usize| {
                let left = (w - text.len()) / 2;
                format!("{}{text}{}", " ".repeat(left), " ".repeat(w - text.len() - left))
            };
            let head: Vec<String> = header.iter().zip(&widths).map(|(h, w)| centered(h, *w)).collect();
            // As etcdctl: numbers right-aligned, the hash and size left-aligned.
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (r, w))| match i {
                    1 | 2 => format!("{r:>width$} ", width = w - 1),
                    _ => format!(" {r:<width$}", width = w - 1),
                })
                .collect();
            format!("{rule}|{}|\n{rule}|{}|\n{rule}", head.join("|"), cells.join("|"))
        }
        _ => format!("{:x}, {}, {}, {}\n", s.hash, s.revision, s.total_keys, size),
    }
}

fn status(args: StatusArgs) -> Result<(), String> {
    let s = restore::inspect(&args.file).map_err(|e| e.to_string())?;
    print!("{}", format_status(&s, &args.write_out));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_as_etcdctl_prints_them() {
        assert_eq!(humanize_bytes(0), "0 B");
        assert_eq!(humanize_bytes(544), "544 B");
        assert_eq!(humanize_bytes(2048), "2.0 kB");
        assert_eq!(humanize_bytes(25_088), "25 kB");
        assert_eq!(humanize_bytes(2_088_960), "2.1 MB");
    }

    #[test]
    fn status_formats() {
        let s = SnapshotStatus {
            hash: 0xfe01_cf57,
            revision: 10,
            compact_revision: 0,
            total_keys: 7,
            leases: 0,
            members: Vec::new(),
            removed_members: 0,
            records: 30,
            size_bytes: 2_088_960,
        };
        assert_eq!(format_status(&s, "simple"), "fe01cf57, 10, 7, 2.1 MB\n");
        assert_eq!(
            format_status(&s, "json"),
            "{\"hash\":4261531479,\"revision\":10,\"totalKey\":7,\"totalSize\":2088960}\n"
        );
        let table = format_status(&s, "table");
        let expect = "\
+----------+----------+------------+------------+
|   HASH   | REVISION | TOTAL KEYS | TOTAL SIZE |
+----------+----------+------------+------------+
| fe01cf57 |       10 |          7 | 2.1 MB     |
+----------+----------+------------+------------+
";
        assert_eq!(table, expect);
    }

    #[test]
    fn endpoints_take_an_optional_scheme() {
        assert_eq!(endpoint_url("127.0.0.1:2379"), "http://127.0.0.1:2379");
        assert_eq!(endpoint_url("http://a:1"), "http://a:1");
        assert_eq!(host_port("http://10.0.0.1:2380"), "10.0.0.1:2380");
        assert_eq!(host_port("http://10.0.0.1:2380/"), "10.0.0.1:2380");
    }
}
