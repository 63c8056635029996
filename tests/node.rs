//! A node as real processes beside the control plane: `capstan agent` and `capstan proxy`
//! next to a store with the Kubernetes API, controller-manager and scheduler. Pods are
//! small HTTP servers (python3) reached through their Service's ClusterIP.
//!
//! - A pod whose readiness probe starts failing leaves the Service's endpoints and the
//!   proxy's backends; it comes back when the probe passes again.
//! - The seeds' API outage: with the store (and so the API) killed, the pod keeps
//!   serving through the proxy, and a container that dies meanwhile is restarted by the
//!   agent alone; when the API is back, the pod's status catches up.
//! - An agent killed and started again adopts the running container instead of
//!   starting it again.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::{ready_pods, web, Reaper, Server};
use k8s_openapi::api::core::v1::{Endpoints, Pod};
use kube::api::Api;

const DEADLINE: Duration = Duration::from_secs(90);

/// GET / at `to`: the body without its line end, or what went wrong.
fn get(to: SocketAddr) -> Result<String, String> {
    common::http_get(to).map(|b| b.trim().to_owned())
}

async fn eventually<T, F, Fut>(what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    common::eventually(what, DEADLINE, f).await
}

/// The control plane (store, API, controller-manager, scheduler) with its API on `api`,
/// Service addresses in `services`.
fn control_plane(dir: &Path, api: &str, services: &str) -> Server {
    Server::start_with(
        &dir.join("data"),
        &dir.join("store.log"),
        &[
            "--apiserver-listen",
            api,
            "--scheduler",
            "--service-cluster-ip-range",
            services,
        ],
    )
}

/// `capstan agent` for node `node`, pods in `pod_cidr`, files under `root`.
fn agent(master: &str, node: &str, pod_cidr: &str, root: &Path, log: &Path) -> Server {
    let root = root.to_str().expect("utf-8 path");
    Server::component(
        "agent",
        master,
        &[
            "--node-name",
            node,
            "--port",
            "0",
            "--pod-cidr",
            pod_cidr,
            "--root-dir",
            root,
        ],
        log,
    )
    .0
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().expect("uid")
}

fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().expect("name")
}

/// The `ready` file of a pod's container, in its working directory under the agent's root.
fn ready_file(root: &Path, pod: &Pod) -> std::path::PathBuf {
    root.join("containers").join(uid(pod)).join("web/work/ready")
}

#[tokio::test]
async fn an_unready_pod_leaves_the_endpoints_and_the_proxy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("agent");
    let _reaper = Reaper(root.clone());
    let api = format!("127.0.0.1:{}", common::free_port());
    let master = format!("http://{api}");
    let _store = control_plane(dir.path(), &api, "127.68.0.0/16");
    let _agent = agent(
        &master,
        "n-ready",
        "127.129.1.0/24",
        &root,
        &dir.path().join("agent.log"),
    );
    let (_proxy, _) = Server::component(
        "proxy",
        &master,
        &["--node-name", "n-ready"],
        &dir.path().join("proxy.log"),
    );
    let client = kube::Client::try_from(kube::Config::new(master.parse().expect("url"))).expect("client");
    let to = web(&client, 2).await;
    let pods = eventually("two pods run and are ready", || async {
        let pods = ready_pods(&client).await;
        (pods.len() == 2).then_some(pods)
    })
    .await;
    let names: Vec<String> = pods.iter().map(name).collect();
    // Round-robin: both answer through the ClusterIP.
    eventually("both pods answer through the proxy", || async {
        let seen: std::collections::BTreeSet<String> = (0..10).filter_map(|_| get(to).ok()).collect();
        (seen.len() == 2).then_some(())
    })
    .await;

    // The first pod's readiness probe starts failing.
    std::fs::remove_file(ready_file(&root, &pods[0])).expect("remove the ready file");
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let pod_ip = |p: &Pod| p.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("pod ip");
    let (gone, stays) = (pod_ip(&pods[0]), pod_ip(&pods[1]));
    eventually("the unready pod leaves the endpoints", || async {
        let ep = endpoints.get("web").await.ok()?;
        let ready: Vec<String> = ep
            .subsets
            .iter()
            .flatten()
            .flat_map(|s| s.addresses.iter().flatten())
            .map(|a| a.ip.clone())
            .collect();
        (ready == vec![stays.clone()]).then_some(())
    })
    .await;
    let _ = &gone;
    eventually("every request reaches the ready pod", || async {
        let answers: Vec<String> = (0..10).filter_map(|_| get(to).ok()).collect();
        (answers.len() == 10 && answers.iter().all(|a| *a == names[1])).then_some(())
    })
    .await;

    std::fs::write(ready_file(&root, &pods[0]), "").expect("ready again");
    eventually("it comes back", || async {
        let seen: std::collections::BTreeSet<String> = (0..10).filter_map(|_| get(to).ok()).collect();
        (seen.len() == 2).then_some(())
    })
    .await;
}

#[tokio::test]
async fn pods_serve_through_an_api_outage_and_an_agent_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("agent");
    let _reaper = Reaper(root.clone());
    let api = format!("127.0.0.1:{}", common::free_port());
    let master = format!("http://{api}");
    let store = control_plane(dir.path(), &api, "127.69.0.0/16");
    let agent_log = dir.path().join("agent.log");
    let first_agent = agent(&master, "n-outage", "127.129.2.0/24", &root, &agent_log);
    let (_proxy, _) = Server::component(
        "proxy",
        &master,
        &["--node-name", "n-outage"],
        &dir.path().join("proxy.log"),
    );
    let client = kube::Client::try_from(kube::Config::new(master.parse().expect("url"))).expect("client");
    let to = web(&client, 1).await;
    let pod = eventually("the pod runs and is ready", || async {
        ready_pods(&client).await.into_iter().next()
    })
    .await;
    let pod_name = name(&pod);
    eventually("it answers through the proxy", || async {
        (get(to).ok()? == pod_name).then_some(())
    })
    .await;
    let state_file = root.join("containers").join(uid(&pod)).join("web/state.json");
    let pid = |f: &Path| -> u32 {
        let state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(f).expect("state file")).expect("state json");
        state["pid"].as_u64().expect("pid") as u32
    };

    // The API goes away: the pod keeps serving through the proxy.
    store.kill();
    for _ in 0..5 {
        assert_eq!(get(to).as_deref(), Ok(pod_name.as_str()), "served during the outage");
    }
    // A container that dies meanwhile is restarted by the agent on its own.
    let before = pid(&state_file);
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &before.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    eventually("the agent restarts it without the API", || async {
        (pid(&state_file) != before && get(to).ok()? == pod_name).then_some(())
    })
    .await;

    // The API is back: the status catches up with the restart.
    let _store = control_plane(dir.path(), &api, "127.69.0.0/16");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    eventually("the restart shows in the status once the API is back", || async {
        let p = pods.get(&pod_name).await.ok()?;
        let c = p.status?.container_statuses?.into_iter().next()?;
        (c.restart_count == 1 && c.ready).then_some(())
    })
    .await;

    // The agent is killed and started again: it adopts the running container.
    let running = pid(&state_file);
    first_agent.kill();
    assert_eq!(get(to).as_deref(), Ok(pod_name.as_str()), "served while no agent runs");
    let _second_agent = agent(&master, "n-outage", "127.129.2.0/24", &root, &agent_log);
    eventually("the new agent reports the pod as it is", || async {
        let p = pods.get(&pod_name).await.ok()?;
        let c = p.status?.container_statuses?.into_iter().next()?;
        (c.restart_count == 1 && c.ready).then_some(())
    })
    .await;
    let log = std::fs::read_to_string(&agent_log).unwrap_or_default();
    assert!(log.contains("adopted a running container"), "{log}");
    assert_eq!(pid(&state_file), running, "the container was not started again");
    assert_eq!(get(to).as_deref(), Ok(pod_name.as_str()));
    // The new agent probes the adopted container at the pod's address: readiness
    // follows the container (the status above may still be the first agent's).
    let ready_is = |want: bool| {
        let pods = pods.clone();
        let pod_name = pod_name.clone();
        async move {
            let p = pods.get(&pod_name).await.ok()?;
            let c = p.status?.container_statuses?.into_iter().next()?;
            (c.ready == want).then_some(())
        }
    };
    std::fs::remove_file(ready_file(&root, &pod)).expect("remove the ready file");
    eventually("the adopted container turns unready", || ready_is(false)).await;
    std::fs::write(ready_file(&root, &pod), "").expect("ready again");
    eventually("the adopted container is ready again", || ready_is(true)).await;
}
