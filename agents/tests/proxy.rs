//! The node proxy against Capstan's API (in this process, over real HTTP/2: the mesh
//! API's `ProxyConfig` stream, driven by [`proxy::run_mesh`]): Services reached through
//! their ClusterIP and NodePort, at a backend that a pod would be (an echo server on a
//! 127.128.x.y address); an endpoint that turns unready gets no new connections while an
//! established one goes on; terminating endpoints stand in while none is ready; a
//! Service without a selector follows its manual Endpoints; and when the stream breaks
//! (a relay between the proxy and the API cut), the table goes on being served and the
//! changes made meanwhile arrive with the next snapshot.
//!
//! Each test has its own API and Service ports of its own, so that they can run at once
//! on the shared loopback addresses.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capstan_agents::node::agent::mesh_client;
use capstan_agents::proxy::{self, forward};
use common::{eventually, start};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
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

/// The answer through `to` to one line on a new connection.
async fn ask_once(to: SocketAddr, line: &str) -> Result<String, String> {
    Conn::open(to).await?.ask(line).await
}

/// Whether a new connection through `to` is accepted and closed at once (no backend).
async fn refused(to: SocketAddr) -> Result<(), String> {
    // Accepted and closed at once: the answer is an end of stream, or a reset when the
    // line arrived after the close.
    match ask_once(to, "hi").await {
        Err(e) if e == "closed" || e.contains("reset") || e.contains("Broken pipe") => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

/// Creates `service` (JSON) in `default`; returns it as the API allocated it.
async fn create_service(client: &Client, service: serde_json::Value) -> Service {
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let service: Service = serde_json::from_value(service).expect("service");
    services
        .create(&PostParams::default(), &service)
        .await
        .expect("create the service")
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

    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = capstan_agents::metrics::ProxyMetrics::new(&mut registry);
    let forwarder = forward::Forwarder::new(forward::Limits::default()).with_metrics(metrics);
    let node_ip: IpAddr = "127.0.0.1".parse().expect("ip");
    let mesh = mesh_client(&cluster.url).expect("mesh client");
    let (synced, first_table) = tokio::sync::oneshot::channel();
    let run = proxy::run_mesh(mesh, "n1", node_ip, &forwarder, move || {
        let _ = synced.send(());
    });
    let series = |name: &str| {
        let text = capstan_agents::metrics::encode(&registry);
        common::metric(&text, name).unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
    };
    let checks = async {
        let via_cluster_ip = SocketAddr::new(cluster_ip(&service), 18080);
        let via_node_port = SocketAddr::new(node_ip, node_port);
        // Ready means served: once the first table is in, both addresses answer at once.
        tokio::time::timeout(common::DEADLINE, first_table)
            .await
            .unwrap_or_else(|_| panic!("the proxy reports no first table within {:?}", common::DEADLINE))
            .expect("the proxy reports its first table");
        for to in [via_cluster_ip, via_node_port] {
            let answer = ask_once(to, "hi").await;
            assert_eq!(answer.as_deref(), Ok("pod-a hi"), "through {to}");
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
        eventually("no new connection to the unready pod", || refused(via_cluster_ip)).await;
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
        // The same in the metrics, per Service port (its two listeners together).
        let web = r#"service="default/web:http""#;
        assert!(series(&format!("capstan_proxy_connections_total{{{web}}}")) >= 3.0);
        assert!(series(&format!("capstan_proxy_errors_total{{{web},reason=\"no_backend\"}}")) >= 1.0);
        assert!(
            series(&format!("capstan_proxy_active_connections{{{web}}}")) >= 1.0,
            "the established one"
        );
        // "before" and "after" (with their newlines) at least, each way.
        assert!(series(&format!("capstan_proxy_received_bytes_total{{{web}}}")) >= 12.0);
        assert!(series(&format!("capstan_proxy_sent_bytes_total{{{web}}}")) >= 24.0);

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
        let text = capstan_agents::metrics::encode(&registry);
        assert!(!text.contains("default/web"), "its series went with it:\n{text}");
        drop(established);
    };
    tokio::select! {
        () = run => panic!("the proxy loop ended"),
        () = checks => {}
    }
}

/// Asks `n` times through `to` on new connections; every answer must be `want`.
async fn all_answer(to: SocketAddr, n: usize, want: &str) {
    for i in 0..n {
        let answer = ask_once(to, "hi").await;
        assert_eq!(answer.as_deref(), Ok(want), "connection {i} through {to}");
    }
}

#[tokio::test]
async fn terminating_endpoints_stand_in_and_a_selectorless_service_follows_its_endpoints() {
    let cluster = start().await;
    let client = cluster.client.clone();
    let old = backend("127.128.7.3", "old").await;
    let new = backend("127.128.7.4", "new").await;
    let db = backend("127.128.7.5", "db").await;
    let db_unready = backend("127.128.7.6", "db-unready").await;
    let db2 = backend("127.128.7.7", "db2").await;

    // A rolling update's moment: the old pod terminating (still serving), none ready.
    let api = create_service(
        &client,
        json!({"metadata": {"name": "api"},
               "spec": {"selector": {"app": "api"}, "ports": [{"name": "http", "port": 18082}]}}),
    )
    .await;
    let endpoint = |addr: SocketAddr, ready: bool| {
        json!({"addresses": [addr.ip().to_string()],
               "conditions": {"ready": ready, "serving": true, "terminating": !ready}})
    };
    // One slice per ReplicaSet's pods (each with its pods' port): the old pod terminating,
    // no new one yet.
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    for (name, port, eps) in [
        ("api-old", old.port(), json!([endpoint(old, false)])),
        ("api-new", new.port(), json!([])),
    ] {
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/service-name": "api"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": eps,
        }))
        .expect("slice");
        slices
            .create(&PostParams::default(), &slice)
            .await
            .expect("create a slice");
    }

    // A Service without a selector and its manual Endpoints (one ready address, one not).
    let db_service = create_service(
        &client,
        json!({"metadata": {"name": "db"}, "spec": {"ports": [{"name": "pg", "port": 18083}]}}),
    )
    .await;
    let manual = |ready: SocketAddr| {
        json!({"metadata": {"name": "db"},
               "subsets": [{"addresses": [{"ip": ready.ip().to_string()}],
                            "notReadyAddresses": [{"ip": db_unready.ip().to_string()}],
                            "ports": [{"name": "pg", "port": ready.port()}]},
                           {"addresses": [{"ip": db_unready.ip().to_string()}],
                            "ports": [{"name": "other", "port": db_unready.port()}]}]})
    };
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    endpoints
        .create(
            &PostParams::default(),
            &serde_json::from_value(manual(db)).expect("endpoints"),
        )
        .await
        .expect("create the endpoints");

    let forwarder = forward::Forwarder::new(forward::Limits::default());
    let mesh = mesh_client(&cluster.url).expect("mesh client");
    let run = proxy::run_mesh(mesh, "n1", "127.0.0.1".parse().expect("ip"), &forwarder, || {});
    let checks = async {
        let via_api = SocketAddr::new(cluster_ip(&api), 18082);
        eventually("the terminating pod answers while none is ready", || async move {
            let answer = ask_once(via_api, "hi").await?;
            (answer == "old hi").then_some(()).ok_or(answer)
        })
        .await;

        // The new pod is ready: it alone gets new connections.
        let ready = json!({"endpoints": [endpoint(new, true)]});
        slices
            .patch("api-new", &PatchParams::default(), &Patch::Merge(&ready))
            .await
            .expect("the new pod is ready");
        eventually("the ready pod answers", || async move {
            let answer = ask_once(via_api, "hi").await?;
            (answer == "new hi").then_some(()).ok_or(answer)
        })
        .await;
        all_answer(via_api, 6, "new hi").await;

        // The ready pod goes: the terminating one stands in again.
        let gone = json!({"endpoints": []});
        slices
            .patch("api-new", &PatchParams::default(), &Patch::Merge(&gone))
            .await
            .expect("the new pod goes");
        eventually("the terminating pod stands in again", || async move {
            let answer = ask_once(via_api, "hi").await?;
            (answer == "old hi").then_some(()).ok_or(answer)
        })
        .await;
        // Not serving any more: nothing to send new connections to.
        let not_serving = json!({"endpoints": [{"addresses": [old.ip().to_string()],
            "conditions": {"ready": false, "serving": false, "terminating": true}}]});
        slices
            .patch("api-old", &PatchParams::default(), &Patch::Merge(&not_serving))
            .await
            .expect("the old pod stops serving");
        eventually("no backend once nothing serves", || refused(via_api)).await;

        // The selectorless Service: its Endpoints' ready address, only it.
        let via_db = SocketAddr::new(cluster_ip(&db_service), 18083);
        eventually("the manual endpoint answers", || async move {
            let answer = ask_once(via_db, "hi").await?;
            (answer == "db hi").then_some(()).ok_or(answer)
        })
        .await;
        all_answer(via_db, 6, "db hi").await;

        // The Endpoints change: the Service follows.
        let mut changed: Endpoints = serde_json::from_value(manual(db2)).expect("endpoints");
        changed.metadata.resource_version = endpoints
            .get("db")
            .await
            .expect("get the endpoints")
            .metadata
            .resource_version;
        endpoints
            .replace("db", &PostParams::default(), &changed)
            .await
            .expect("replace the endpoints");
        eventually("the new manual endpoint answers", || async move {
            let answer = ask_once(via_db, "hi").await?;
            (answer == "db2 hi").then_some(()).ok_or(answer)
        })
        .await;

        // The Endpoints go: nothing to forward to.
        endpoints
            .delete("db", &Default::default())
            .await
            .expect("delete the endpoints");
        eventually("no backend without the Endpoints", || refused(via_db)).await;
    };
    tokio::select! {
        () = run => panic!("the proxy loop ended"),
        () = checks => {}
    }
}

/// A TCP relay to `to` that can be cut: then it closes its connections and every new one
/// at once, as an API server that went away would look to its clients.
struct Relay {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    /// Connections closed at once while cut.
    refused: Arc<AtomicUsize>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(to: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the relay");
        let addr = listener.local_addr().expect("addr");
        let up = Arc::new(AtomicBool::new(true));
        let refused = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (up, refused, connections) = (up.clone(), refused.clone(), connections.clone());
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        refused.fetch_add(1, Ordering::SeqCst);
                        continue; // dropped: closed
                    }
                    let copy = tokio::spawn(async move {
                        let Ok(mut outbound) = TcpStream::connect(to).await else {
                            return;
                        };
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    });
                    connections.lock().expect("lock").push(copy.abort_handle());
                }
            }
        });
        Relay {
            addr,
            up,
            refused,
            connections,
            task,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.connections.lock().expect("lock").drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

#[tokio::test]
async fn the_table_is_served_while_the_stream_is_down_and_resnapshotted_after() {
    let cluster = start().await;
    let client = cluster.client.clone();
    let pod = backend("127.128.7.8", "cache").await;
    let late_pod = backend("127.128.7.9", "late").await;
    let slice_for = |service: &str, pod: SocketAddr| -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{service}-1"), "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"port": pod.port(), "protocol": "TCP"}],
            "endpoints": [{"addresses": [pod.ip().to_string()]}],
        }))
        .expect("slice")
    };
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let cache = create_service(
        &client,
        json!({"metadata": {"name": "cache"}, "spec": {"selector": {"app": "cache"}, "ports": [{"port": 18084}]}}),
    )
    .await;
    slices
        .create(&PostParams::default(), &slice_for("cache", pod))
        .await
        .expect("create the slice");

    let api_addr: SocketAddr = cluster
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("the API's address");
    let relay = Relay::start(api_addr).await;
    let forwarder = forward::Forwarder::new(forward::Limits::default());
    let mesh = mesh_client(&format!("http://{}", relay.addr)).expect("mesh client");
    let run = proxy::run_mesh(mesh, "n1", "127.0.0.1".parse().expect("ip"), &forwarder, || {});
    let checks = async {
        let via_cache = SocketAddr::new(cluster_ip(&cache), 18084);
        eventually("the service answers", || async move {
            let answer = ask_once(via_cache, "hi").await?;
            (answer == "cache hi").then_some(()).ok_or(answer)
        })
        .await;

        // The stream breaks; the proxy tries again (and is refused) while the table
        // goes on being served.
        relay.cut();
        let refused_count = relay.refused.clone();
        eventually("the proxy tries to reconnect", || {
            let n = refused_count.load(Ordering::SeqCst);
            async move { (n >= 1).then_some(()).ok_or(format!("{n} attempts")) }
        })
        .await;
        assert_eq!(ask_once(via_cache, "down").await.as_deref(), Ok("cache down"));

        // Changes while it is away: one Service goes, another comes. The proxy cannot
        // know yet: the old table stays as it was.
        let services: Api<Service> = Api::namespaced(client.clone(), "default");
        services
            .delete("cache", &Default::default())
            .await
            .expect("delete the service");
        let late = create_service(
            &client,
            json!({"metadata": {"name": "late"}, "spec": {"selector": {"app": "late"}, "ports": [{"port": 18085}]}}),
        )
        .await;
        slices
            .create(&PostParams::default(), &slice_for("late", late_pod))
            .await
            .expect("create the slice");
        assert_eq!(ask_once(via_cache, "still").await.as_deref(), Ok("cache still"));
        let attempts = relay.refused.load(Ordering::SeqCst);
        eventually("another attempt while cut", || {
            let n = relay.refused.load(Ordering::SeqCst);
            async move { (n > attempts).then_some(()).ok_or(format!("{n} attempts")) }
        })
        .await;
        assert_eq!(ask_once(via_cache, "again").await.as_deref(), Ok("cache again"));

        // Back: the new snapshot replaces the table.
        relay.restore();
        let via_late = SocketAddr::new(cluster_ip(&late), 18085);
        eventually("the new service answers after the reconnect", || async move {
            let answer = ask_once(via_late, "hi").await?;
            (answer == "late hi").then_some(()).ok_or(answer)
        })
        .await;
        match TcpStream::connect(via_cache).await {
            Err(_) => {}
            Ok(_) => panic!("the Service deleted while the stream was down is still served"),
        }
    };
    tokio::select! {
        () = run => panic!("the proxy loop ended"),
        () = checks => {}
    }
}
