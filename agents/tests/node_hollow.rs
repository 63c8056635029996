//! Hollow nodes (the simulated runtime) against Capstan's Kubernetes API in this process,
//! over real HTTP and the mesh API: 20 nodes from one `run_hollow` call, each registered
//! as simulated, with pod addresses from the node IPAM controller's blocks; a pod bound
//! to each (an init container, a main container without a command and with a readiness
//! probe that would always fail if it were run) becomes Running and Ready, with a
//! `simulated://` container ID and its start line in `kubectl logs` through the one log
//! port the nodes share; deleted, the pods go and their files with them.

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use capstan_agents::node::agent::{self, Config};
use capstan_agents::node::pods;
use capstan_agents::node::process::LogLimits;
use capstan_agents::node::registration::{self, Capacity, Heartbeat, NodeIdentity};
use capstan_agents::node::runtime::RuntimeKind;
use capstan_agents::nodeipam::{self, Blocks, Cidr};
use common::{eventually, start};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, LogParams, PostParams};
use serde_json::json;

const NODES: usize = 20;

fn in_cidr(ip: &str, cidr: &Cidr) -> bool {
    let Ok(ip) = ip.parse::<Ipv4Addr>() else { return false };
    let shift = 32 - u32::from(cidr.prefix);
    u64::from(u32::from(ip)) >> shift == u64::from(cidr.base) >> shift
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_hollow_nodes_run_a_pod_each_ready_at_once_and_delete_them() {
    let cluster = start().await;
    let blocks = Blocks::new(nodeipam::CLUSTER_CIDR_DEFAULT.parse().expect("cidr"), 24).expect("blocks");
    tokio::spawn(nodeipam::run(cluster.client.clone(), blocks));
    let dir = tempfile::tempdir().expect("temp dir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let log_port = listener.local_addr().expect("addr").port();
    let template = Config {
        identity: NodeIdentity {
            name: "hollow".into(),
            address: "127.0.0.1".parse().expect("ip"),
            labels: BTreeMap::from([("rack".to_owned(), "r1".to_owned())]),
            taints: Vec::new(),
            capacity: Capacity {
                cpu_millis: 4000,
                memory_bytes: 8 << 30,
                pods: 110,
            },
            agent_port: log_port,
        },
        heartbeat: Heartbeat::default(),
        data_dir: dir.path().to_path_buf(),
        pod_cidr: None,
        log_limits: LogLimits::default(),
        backoff_initial: pods::BACKOFF_INITIAL,
        backoff_max: pods::BACKOFF_MAX,
        usage_interval: capstan_agents::node::usage::USAGE_INTERVAL_DEFAULT,
        port_metrics: None,
        listener: Some(listener),
        init_program: None,
        dns: None,
        // run_hollow makes every node simulated whatever the template says.
        runtime: RuntimeKind::Process,
    };
    let ready: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = ready.clone();
    let hollow = tokio::spawn({
        let (client, url) = (cluster.client.clone(), cluster.url.clone());
        async move {
            agent::run_hollow(client, &url, template, NODES, move |a| {
                seen.lock().expect("lock").push(a.context.node_name.clone());
            })
            .await
        }
    });
    eventually("every hollow node starts", || async {
        if hollow.is_finished() {
            return Ok("ended".to_owned());
        }
        let n = ready.lock().expect("lock").len();
        if n == NODES {
            Ok(String::new())
        } else {
            Err(format!("{n} of {NODES} started"))
        }
    })
    .await;
    assert!(!hollow.is_finished(), "the hollow nodes run");
    let mut names = ready.lock().expect("lock").clone();
    names.sort();
    let mut want: Vec<String> = (0..NODES).map(|i| format!("hollow-{i}")).collect();
    want.sort();
    assert_eq!(names, want, "one node per index, named after the template");

    // The nodes say they are simulated, and publish the shared log port.
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let mut cidrs = BTreeMap::new();
    for name in &want {
        let node = nodes.get(name).await.expect("the node is registered");
        let labels = node.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get(registration::SIMULATED_LABEL).map(String::as_str),
            Some("true")
        );
        assert_eq!(
            labels.get("rack").map(String::as_str),
            Some("r1"),
            "the template's labels"
        );
        let status = node.status.clone().unwrap_or_default();
        let info = status.node_info.clone().unwrap_or_default();
        assert!(
            info.container_runtime_version.starts_with("capstan-simulated://"),
            "{}",
            info.container_runtime_version
        );
        let port = status.daemon_endpoints.and_then(|d| d.kubelet_endpoint).map(|e| e.port);
        assert_eq!(port, Some(i32::from(log_port)));
        let cidr: Cidr = eventually(&format!("a pod CIDR for {name}"), || async {
            let node = nodes.get(name).await.map_err(|e| e.to_string())?;
            let text = node.spec.and_then(|s| s.pod_cidr).ok_or("no podCIDR yet")?;
            text.parse::<Cidr>().map_err(|e| e.to_string())
        })
        .await;
        cidrs.insert(name.clone(), cidr);
    }

    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    for (i, node) in want.iter().enumerate() {
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("p{i}"), "namespace": "default"},
            "spec": {
                "nodeName": node,
                "initContainers": [{"name": "setup", "image": "busybox", "command": ["false"]}],
                "containers": [{
                    "name": "app", "image": "registry.k8s.io/pause:3.10",
                    // Would never pass if it ran: simulated containers are not probed.
                    "readinessProbe": {"exec": {"command": ["false"]}, "periodSeconds": 1},
                    "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
                }],
                "volumes": [{"name": "scratch", "emptyDir": {}}],
            },
        }))
        .expect("a pod");
        pods.create(&PostParams::default(), &pod).await.expect("create the pod");
    }
    let mut uids = BTreeMap::new();
    for (i, node) in want.iter().enumerate() {
        let name = format!("p{i}");
        let cidr = cidrs[node];
        let uid = eventually(&format!("{name} Running and Ready on {node}"), || async {
            let pod = pods.get(&name).await.map_err(|e| e.to_string())?;
            let s = pod.status.clone().ok_or("no status yet")?;
            let ready = s
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let app = s.container_statuses.iter().flatten().find(|c| c.name == "app");
            let setup = s.init_container_statuses.iter().flatten().find(|c| c.name == "setup");
            let ip = s.pod_ip.clone().unwrap_or_default();
            let ok = s.phase.as_deref() == Some("Running")
                && ready
                && in_cidr(&ip, &cidr)
                && app.is_some_and(|c| {
                    c.ready
                        && c.started == Some(true)
                        && c.container_id
                            .as_deref()
                            .is_some_and(|id| id.starts_with("simulated://"))
                })
                && setup.is_some_and(|c| {
                    let done = c.state.as_ref().and_then(|st| st.terminated.as_ref());
                    done.is_some_and(|t| t.exit_code == 0)
                });
            if ok {
                Ok(pod.metadata.uid.clone().unwrap_or_default())
            } else {
                Err(format!("pod CIDR {cidr:?}: {s:?}"))
            }
        })
        .await;
        uids.insert(name, (node.clone(), uid));
    }

    // kubectl logs' path: the API server asks the node's log port, shared by all.
    for name in ["p0", "p19"] {
        let params = LogParams {
            container: Some("app".into()),
            ..LogParams::default()
        };
        let log = pods.logs(name, &params).await.expect("the pod's log");
        assert_eq!(log, "simulated container app started\n");
    }

    for i in 0..NODES {
        pods.delete(&format!("p{i}"), &DeleteParams::default())
            .await
            .expect("delete the pod");
    }
    for (name, (node, uid)) in &uids {
        eventually(&format!("{name} gone"), || async {
            match pods.get_opt(name).await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(p) => Err(format!("still there: {:?}", p.status.and_then(|s| s.phase))),
            }
        })
        .await;
        let files = dir.path().join(node).join("containers").join(uid);
        eventually(&format!("{name}'s files removed"), || async {
            if files.exists() {
                Err(format!("{} exists", files.display()))
            } else {
                Ok(())
            }
        })
        .await;
    }
    assert!(!hollow.is_finished(), "the hollow nodes still run");
    hollow.abort();
}
