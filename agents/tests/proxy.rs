//! The node proxy against Capstan's Kubernetes API (in this process, over real HTTP):
//! Services reached through their ClusterIP and NodePort, at a backend that a pod would
//! be (an echo server on a 127.128.x.y address); an endpoint that turns unready gets no
//! new connections while an established one goes on.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use capstan_agents::proxy::{self, forward};
use common::{eventually, start};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// An echo server on `ip` that answers each line with `<name> <line>`.
async fn backend(ip: &str, name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.expect("bind the backend");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if write.write_all(format!("{name} {line}\n").as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A connection through the proxy that asks a line and reads the answer.
struct Conn(BufReader<TcpStream>);

impl Conn {
    async fn open(to: SocketAddr) -> Result<Conn, String> {
        TcpStream::connect(to)
            .await
            .map(|s| Conn(BufReader::new(s)))
            .map_err(|e| format!("connect {to}: {e}"))
    }

    async fn ask(&mut self, line: &str) -> Result<String, String> {
        self.0
            .get_mut()
            .write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = String::new();
        let n = tokio::time::timeout(Duration::from_secs(5), self.0.read_line(&mut answer))
            .await
            .map_err(|_| "no answer in 5 s".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed".into());
        }
        Ok(answer.trim_end().to_owned())
    }
}

fn cluster_ip(service: &Service) -> IpAddr {
    service
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .expect("a ClusterIP")
        .parse()
        .expect("an IP")
}

#[tokio::test]
async fn a_service_is_served_on_its_cluster_ip_and_node_port_and_follows_readiness() {
    let cluster = start().await;
    let client = cluster.client.clone();
    let pod = backend("127.128.7.2", "pod-a").await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"type": "NodePort", "selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 18080, "targetPort": pod.port()}]},
    }))
    .expect("service");
    let service = services
        .create(&PostParams::default(), &service)
        .await
        .expect("create the service");
    let node_port = service.spec.as_ref().and_then(|s| s.ports.as_ref()).expect("ports")[0]
        .node_port
        .expect("a nodePort") as u16;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": pod.port(), "protocol": "TCP"}],
        "endpoints": [{"addresses": [pod.ip().to_string()], "conditions": {"ready": true}}],
    }))
    .expect("slice");
    slices
        .create(&PostParams::default(), &slice)
        .await
        .expect("create the slice");

    let forwarder = forward::Forwarder::new(forward::Limits::default());
    let node_ip: IpAddr = "127.0.0.1".parse().expect("ip");
    let run = proxy::run(client.clone(), node_ip, &forwarder);
    let checks = async {
        let via_cluster_ip = SocketAddr::new(cluster_ip(&service), 18080);
        let via_node_port = SocketAddr::new(node_ip, node_port);
        for to in [via_cluster_ip, via_node_port] {
            eventually(&format!("an answer through {to}"), || async move {
                let answer = Conn::open(to).await?.ask("hi").await?;
                (answer == "pod-a hi").then_some(()).ok_or(answer)
            })
            .await;
        }
        let mut established = Conn::open(via_cluster_ip).await.expect("connect");
        assert_eq!(established.ask("before").await.as_deref(), Ok("pod-a before"));

        // The pod turns unready: new connections are refused, the open one goes on.
        let unready = json!({"endpoints": [{"addresses": [pod.ip().to_string()],
            "conditions": {"ready": false}}]});
        slices
            .patch("web-1", &PatchParams::default(), &Patch::Merge(&unready))
            .await
            .expect("mark unready");
        eventually("no new connection to the unready pod", || async move {
            // Accepted and closed at once: the answer is an end of stream, or a reset
            // when the line arrived after the close.
            match Conn::open(via_cluster_ip).await?.ask("hi").await {
                Err(e) if e == "closed" || e.contains("reset") || e.contains("Broken pipe") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        assert_eq!(
            established.ask("after").await.as_deref(),
            Ok("pod-a after"),
            "the established connection goes on"
        );
        let stats = forwarder.stats();
        let rule = stats
            .iter()
            .find(|s| s.listen == via_cluster_ip)
            .expect("the rule's stats");
        assert!(rule.refused_no_backend >= 1, "{rule:?}");

        // Ready again: served again.
        let ready = json!({"endpoints": [{"addresses": [pod.ip().to_string()],
            "conditions": {"ready": true}}]});
        slices
            .patch("web-1", &PatchParams::default(), &Patch::Merge(&ready))
            .await
            .expect("mark ready");
        eventually("served again", || async move {
            let answer = Conn::open(via_cluster_ip).await?.ask("again").await?;
            (answer == "pod-a again").then_some(()).ok_or(answer)
        })
        .await;

        // The Service goes: its address is no longer served.
        services
            .delete("web", &Default::default())
            .await
            .expect("delete the service");
        eventually("the ClusterIP no longer listens", || async move {
            match TcpStream::connect(via_cluster_ip).await {
                Err(_) => Ok(()),
                Ok(_) => Err("still accepting".to_string()),
            }
        })
        .await;
    };
    tokio::select! {
        () = run => panic!("the proxy loop ended"),
        () = checks => {}
    }
}
