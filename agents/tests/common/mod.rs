//! Shared by the agents' tests: a store member and the Kubernetes API over it, in this
//! process, over real HTTP on a free loopback port, and a deadline-bound poll.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use capstan_apiserver::{Api as KubeApi, ApiConfig, Storage};
use capstan_store::{Node, NodeConfig};
use kube::{Client, Config};
use tokio::time::Instant;

pub const DEADLINE: Duration = Duration::from_secs(60);

/// The store and the API; dropping it stops the API.
pub struct Cluster {
    _node: Arc<Node>,
    _dir: tempfile::TempDir,
    pub client: Client,
    /// The API's URL (REST and the mesh API).
    pub url: String,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

pub async fn start() -> Cluster {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(NodeConfig::new("agents-test", dir.path().to_path_buf())).expect("start the store");
    let api = KubeApi::new(Storage::local(node.clone()), ApiConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(capstan_apiserver::serve(listener, api, async move {
        let _ = rx.await;
    }));
    let config = Config::new(format!("http://{addr}").parse().expect("url"));
    let client = Client::try_from(config).expect("client");
    Cluster {
        _node: node,
        _dir: dir,
        client,
        url: format!("http://{addr}"),
        _shutdown: tx,
    }
}

/// Polls `f` every 50 ms until it returns `Some`, at most [`DEADLINE`]; `what` names the
/// condition in the failure, with the last thing `describe` saw.
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(last) => assert!(
                Instant::now() < deadline,
                "{what}: not within {DEADLINE:?}; last: {last}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the series `name` (with its labels, as encoded) in the OpenMetrics
/// `text`, if it is there.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}
