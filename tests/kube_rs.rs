//! kube-rs against Capstan's Kubernetes API: its watcher and reflector (the Rust
//! equivalent of client-go's informer cache) stay correct while the API server is
//! killed and started again on the same data. After the restart the watch resumes from
//! a resourceVersion older than the new server's watch cache, gets 410 Expired, lists
//! again, and the cache converges to exactly what the server holds.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client, Config};

use common::Server;

const DEADLINE: Duration = Duration::from_secs(60);

fn configmap(name: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "data": {"k": name}})).expect("configmap")
}

/// Creates or deletes, retrying while the server is still starting.
async fn until_ok<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

async fn create(cms: &Api<ConfigMap>, name: &str) {
    until_ok(&format!("create {name}"), || {
        let (cms, cm) = (cms.clone(), configmap(name));
        async move { cms.create(&PostParams::default(), &cm).await }
    })
    .await;
}

async fn wait_for_names(store: &reflector::Store<ConfigMap>, want: &[&str]) {
    let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let have: BTreeSet<String> = store.state().iter().filter_map(|c| c.metadata.name.clone()).collect();
        if have == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the reflector holds {have:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_reflector_stays_correct_across_api_restarts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let args = ["--apiserver-listen", listen.as_str()];
    let data = dir.path().join("data");
    let log = dir.path().join("server.log");
    let server = Server::start_with(&data, &log, &args);

    let config = Config::new(format!("http://{listen}").parse().expect("url"));
    let client = Client::try_from(config).expect("client");
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let (store, writer) = reflector::store();
    let stream = reflector(writer, watcher(cms.clone(), watcher::Config::default()))
        .default_backoff()
        .applied_objects();
    let run = tokio::spawn(async move {
        futures::pin_mut!(stream);
        // Errors are retried by the backoff; the stream only ends with the test.
        while stream.next().await.is_some() {}
    });

    for name in ["a", "b"] {
        create(&cms, name).await;
    }
    wait_for_names(&store, &["a", "b"]).await;

    // Kill the server, write more through the next one: the reflector must catch up.
    server.kill();
    let server = Server::start_with(&data, &log, &args);
    create(&cms, "c").await;
    until_ok("delete a", || {
        let cms = cms.clone();
        async move { cms.delete("a", &DeleteParams::default()).await }
    })
    .await;
    wait_for_names(&store, &["b", "c"]).await;

    // Once more: a second restart in a row.
    server.kill();
    let _server = Server::start_with(&data, &log, &args);
    create(&cms, "d").await;
    wait_for_names(&store, &["b", "c", "d"]).await;
    run.abort();
}
