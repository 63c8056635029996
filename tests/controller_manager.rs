//! `capstan controller-manager` and `capstan scheduler` as real processes against a store
//! with the Kubernetes API. Two controller-manager replicas: the one holding the Lease
//! keeps a `default` ServiceAccount in every namespace (also after the account is
//! deleted); when it is killed (SIGKILL), the other takes the Lease over and goes on. With
//! a scheduler beside it, a Deployment's pods get created and bound to the node that has
//! room.

mod common;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};

use common::{store_with_api, Server, TIMING};

const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `f` every 100 ms until it returns `Some`, at most [`DEADLINE`].
async fn eventually<T, F, Fut>(what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    common::eventually(what, DEADLINE, f).await
}

/// The uid of `namespace`'s default account, once it exists (and is not `other_than`).
async fn default_account(client: &Client, namespace: &str, other_than: Option<&str>) -> String {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    eventually(
        &format!("a default account in {namespace} other than {other_than:?}"),
        || {
            let accounts = accounts.clone();
            async move {
                accounts
                    .get_opt("default")
                    .await
                    .ok()
                    .flatten()
                    .and_then(|a| a.metadata.uid)
                    .filter(|u| Some(u.as_str()) != other_than)
            }
        },
    )
    .await
}

async fn create_namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("namespace");
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("create the namespace");
}

async fn lease_holder(client: &Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    leases
        .get_opt("kube-controller-manager")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leading_replica_keeps_default_service_accounts_and_another_takes_over_when_it_dies() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_store, master, client) = store_with_api(dir.path());

    let (first, first_id) = Server::component("controller-manager", &master, &TIMING, &dir.path().join("cm1.log"));
    let (second, second_id) = Server::component("controller-manager", &master, &TIMING, &dir.path().join("cm2.log"));
    assert_ne!(first_id, second_id);

    // The namespaces the API creates at start, and a new one, get their account.
    for ns in ["default", "kube-system", "kube-public"] {
        default_account(&client, ns, None).await;
    }
    create_namespace(&client, "team-a").await;
    let uid = default_account(&client, "team-a", None).await;

    // Deleted, it comes back (a new object).
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "team-a");
    accounts
        .delete("default", &DeleteParams::default())
        .await
        .expect("delete the account");
    let again = default_account(&client, "team-a", Some(&uid)).await;
    assert_ne!(again, uid);

    // Kill the replica that holds the Lease; the other takes over and goes on.
    let holder = eventually("a lease holder", || lease_holder(&client)).await;
    let (_survivor, survivor_id) = if holder == first_id {
        first.kill();
        (second, second_id)
    } else {
        assert_eq!(holder, second_id, "the holder is one of the two replicas");
        second.kill();
        (first, first_id)
    };
    create_namespace(&client, "team-b").await;
    default_account(&client, "team-b", None).await;
    let now_holding = eventually("the survivor holding the lease", || {
        let client = client.clone();
        let survivor_id = survivor_id.clone();
        async move { lease_holder(&client).await.filter(|h| *h == survivor_id) }
    })
    .await;
    assert_eq!(now_holding, survivor_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployments_pods_are_created_and_scheduled() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{Node, Pod};
    use kube::api::ListParams;

    let dir = tempfile::tempdir().expect("temp dir");
    let (_store, master, client) = store_with_api(dir.path());
    // Each serves its metrics at --metrics-bind-address.
    let (cm_metrics, scheduler_metrics) = (free_address(), free_address());
    fn with_metrics(addr: &str) -> Vec<&str> {
        [&TIMING[..], &["--metrics-bind-address", addr]].concat()
    }
    let (_cm, _) = Server::component(
        "controller-manager",
        &master,
        &with_metrics(&cm_metrics),
        &dir.path().join("cm.log"),
    );
    let (_scheduler, _) = Server::component(
        "scheduler",
        &master,
        &with_metrics(&scheduler_metrics),
        &dir.path().join("scheduler.log"),
    );

    let nodes: Api<Node> = Api::all(client.clone());
    for (name, cpu) in [("small", "100m"), ("big", "4")] {
        let node: Node = serde_json::from_value(serde_json::json!({"metadata": {"name": name},
            "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"}}}))
        .expect("node");
        eventually("create a node", || {
            let (nodes, node) = (nodes.clone(), node.clone());
            async move { nodes.create(&PostParams::default(), &node).await.ok() }
        })
        .await;
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx",
                                  "resources": {"requests": {"cpu": "500m"}}}]}}}
    }))
    .expect("deployment");
    deployments
        .create(&PostParams::default(), &d)
        .await
        .expect("create the deployment");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let placed = eventually("two pods bound", || {
        let pods = pods.clone();
        async move {
            let list = pods.list(&ListParams::default().labels("app=web")).await.ok()?.items;
            let nodes: Vec<String> = list.iter().filter_map(|p| p.spec.as_ref()?.node_name.clone()).collect();
            (list.len() == 2 && nodes.len() == 2).then_some(nodes)
        }
    })
    .await;
    assert_eq!(placed, ["big", "big"], "only the big node has room for 500m");
    // The attempts and reconciles behind that, in the components' metrics.
    let scraped = |addr: &str| metrics_text(addr.parse().expect("address"));
    let text = scraped(&scheduler_metrics);
    assert!(
        text.lines()
            .any(|l| l.starts_with(r#"scheduler_schedule_attempts_total{result="scheduled""#) && !l.ends_with(" 0")),
        "{text}"
    );
    let text = scraped(&cm_metrics);
    assert!(
        text.contains(r#"capstan_controller_reconciles_total{controller="replicaset",result="success"}"#),
        "{text}"
    );
    // Every node got a pod CIDR from the controller-manager's node IPAM.
    for name in ["small", "big"] {
        let cidr = eventually("a pod CIDR", || {
            let nodes = nodes.clone();
            async move { nodes.get(name).await.ok()?.spec?.pod_cidr }
        })
        .await;
        assert!(cidr.starts_with("127.128."), "{cidr}");
    }
}

/// A loopback address with a free port.
fn free_address() -> String {
    format!("127.0.0.1:{}", common::free_port())
}

/// `GET /metrics` of a component: the body (the component is ready, so it serves).
fn metrics_text(addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the metrics address");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
    response
}
