//! `capstan proxy` as a real process, with `capstan controller-manager` and a store with
//! the Kubernetes API: a NodePort Service over a pod (its status written by hand: no node
//! agent yet) whose address is a loopback address a server of this test listens on. The
//! endpoints controller writes the slice, the proxy serves it; HTTP requests reach the
//! pod through the ClusterIP and through the NodePort, and stop reaching it when the pod
//! turns unready.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use common::{store_with_api, Server, TIMING};

const DEADLINE: Duration = Duration::from_secs(60);
const POD_IP: &str = "127.128.9.2";

/// A one-thread HTTP server at the pod's address answering every request `pod-a`.
fn pod_server() -> u16 {
    let listener = TcpListener::bind((POD_IP, 0)).expect("bind the pod's address");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\npod-a");
        }
    });
    port
}

/// GET / at `to`: the body, or what went wrong.
fn get(to: SocketAddr) -> Result<String, String> {
    common::http_get(to)
}

async fn eventually<T, F, Fut>(what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    common::eventually(what, DEADLINE, f).await
}

#[tokio::test]
async fn a_node_port_service_reaches_its_ready_pod_through_the_proxy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_store, master, client) = store_with_api(dir.path());
    let (_cm, _) = Server::component("controller-manager", &master, &TIMING, &dir.path().join("cm.log"));
    let (_proxy, _) = Server::component("proxy", &master, &["--node-name", "n1"], &dir.path().join("proxy.log"));
    let port = pod_server();

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web-1", "labels": {"app": "web"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "web", "image": "web",
                 "ports": [{"name": "http", "containerPort": port}]}]},
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod).await.expect("create the pod");
    let status = |ready: &str| {
        json!({"status": {"phase": "Running", "podIP": POD_IP, "podIPs": [{"ip": POD_IP}],
            "hostIP": "127.0.0.1",
            "conditions": [{"type": "Ready", "status": ready}, {"type": "ContainersReady", "status": ready}]}})
    };
    pods.patch_status("web-1", &PatchParams::default(), &Patch::Merge(&status("True")))
        .await
        .expect("the pod's status");

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"type": "NodePort", "selector": {"app": "web"},
                 "ports": [{"port": 18081, "targetPort": "http"}]},
    }))
    .expect("service");
    let service = services
        .create(&PostParams::default(), &service)
        .await
        .expect("create the service");
    let spec = service.spec.expect("spec");
    let cluster_ip: std::net::IpAddr = spec.cluster_ip.expect("a ClusterIP").parse().expect("an IP");
    let node_port = spec.ports.expect("ports")[0].node_port.expect("a nodePort") as u16;

    for to in [
        SocketAddr::new(cluster_ip, 18081),
        SocketAddr::new("127.0.0.1".parse().expect("ip"), node_port),
    ] {
        eventually(&format!("GET through {to}"), || async move {
            tokio::task::spawn_blocking(move || get(to))
                .await
                .ok()?
                .ok()
                .filter(|b| b == "pod-a")
        })
        .await;
    }

    pods.patch_status("web-1", &PatchParams::default(), &Patch::Merge(&status("False")))
        .await
        .expect("the pod turns unready");
    let to = SocketAddr::new(cluster_ip, 18081);
    eventually("the unready pod gets no new request", || async move {
        tokio::task::spawn_blocking(move || get(to)).await.ok()?.err()
    })
    .await;
}
