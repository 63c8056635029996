//! The `capstan` binary: every Capstan process is a subcommand of it.

use std::net::SocketAddr;
use std::path::PathBuf;

use capstan_store::{server, Node, NodeConfig};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "capstan",
    version,
    about = "A Kubernetes-compatible control plane with its own Raft key-value store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the key-value store over the etcd v3 gRPC API (single member).
    Store(StoreArgs),
}

#[derive(clap::Args)]
struct StoreArgs {
    /// Member name; also seeds the member and cluster IDs.
    #[arg(long, default_value = "default")]
    name: String,
    /// Directory holding the member's data (created if missing).
    #[arg(long, default_value = "./.capstan/default")]
    data_dir: PathBuf,
    /// Address to serve the etcd API on.
    #[arg(long, default_value = "127.0.0.1:2379")]
    listen_client: SocketAddr,
    /// URL advertised to clients in MemberList (default: http://<listen-client>).
    #[arg(long)]
    advertise_client: Option<String>,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("CAPSTAN_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("capstan: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Store(args) => rt.block_on(run_store(args)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("capstan: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run_store(args: StoreArgs) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(args.listen_client)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen_client))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let mut config = NodeConfig::new(&args.name, args.data_dir.clone());
    config.client_url = args.advertise_client.unwrap_or_else(|| format!("http://{addr}"));
    let node = Node::start(config).map_err(|e| format!("cannot open the store in {}: {e}", args.data_dir.display()))?;
    tracing::info!(%addr, data_dir = %args.data_dir.display(), revision = node.mvcc.revision(), "store serving the etcd v3 API");
    // The line tests and scripts wait for.
    println!("capstan store ready on {addr}");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    server::serve(node.clone(), listener, shutdown)
        .await
        .map_err(|e| e.to_string())?;
    node.stop();
    Ok(())
}
