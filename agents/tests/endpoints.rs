//! The Endpoints and EndpointSlice controller against Capstan's Kubernetes API (in this
//! process, over real HTTP): a Service's Endpoints and slice list the matching pods with an
//! IP (ready and not ready apart, named ports resolved per pod), follow readiness, labels
//! and deletions with exactly one write per change, are repaired when deleted, and go with
//! the Service; a Service without selector keeps the user's Endpoints. Writes the API
//! refuses are recorded as upstream's warning events.
//!
//! Pods are not scheduled or run here: the test writes their status itself. Pod IPs are
//! 127.128.0.x: pod addresses from node IPAM's default cluster CIDR, inside loopback
//! (the API allows loopback in Endpoints and slices for that, unlike upstream).

mod common;

use std::sync::{Arc, Mutex};

use capstan_agents::endpoints::{endpoints_update, plan_slices};
use common::{eventually, start};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Event, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::ResourceExt;
use serde_json::{json, Value};

const NS: &str = "default";
const MANAGED: &str = "endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io";

/// Per subset: ready IPs, not-ready IPs, "name:port/protocol"; subsets sorted.
type Subsets = Vec<(Vec<String>, Vec<String>, Vec<String>)>;

fn subsets(e: &Endpoints) -> Subsets {
    let ips = |v: &Option<Vec<k8s_openapi::api::core::v1::EndpointAddress>>| -> Vec<String> {
        v.iter().flatten().map(|a| a.ip.clone()).collect()
    };
    let mut out: Subsets = e
        .subsets
        .iter()
        .flatten()
        .map(|s| {
            let ports = s
                .ports
                .iter()
                .flatten()
                .map(|p| {
                    format!(
                        "{}:{}/{}",
                        p.name.clone().unwrap_or_default(),
                        p.port,
                        p.protocol.clone().unwrap_or_default()
                    )
                })
                .collect();
            (ips(&s.addresses), ips(&s.not_ready_addresses), ports)
        })
        .collect();
    out.sort();
    out
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

const PORTS: [&str; 2] = ["http:8080/TCP", "metrics:9090/TCP"];

/// Waits until the Endpoints `name` have `want` as their subsets.
async fn wait_endpoints(api: &Api<Endpoints>, name: &str, want: Subsets) -> Endpoints {
    eventually(&format!("endpoints {name} = {want:?}"), || async {
        let e = api
            .get_opt(name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no endpoints")?;
        if subsets(&e) == want {
            Ok(e)
        } else {
            Err(format!("{:?}", subsets(&e)))
        }
    })
    .await
}

/// Per endpoint: (ip, ready, serving, terminating, pod), sorted.
type SliceEndpoints = Vec<(String, bool, bool, bool, String)>;

fn slice_endpoints(s: &EndpointSlice) -> SliceEndpoints {
    let mut out: SliceEndpoints = s
        .endpoints
        .iter()
        .map(|e| {
            let c = e.conditions.clone().unwrap_or_default();
            (
                e.addresses.join(","),
                c.ready == Some(true),
                c.serving == Some(true),
                c.terminating == Some(true),
                e.target_ref.as_ref().and_then(|t| t.name.clone()).unwrap_or_default(),
            )
        })
        .collect();
    out.sort();
    out
}

async fn managed_slices(api: &Api<EndpointSlice>, service: &str) -> Result<Vec<EndpointSlice>, String> {
    let selector = format!("kubernetes.io/service-name={service},{MANAGED}");
    Ok(api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| e.to_string())?
        .items)
}

/// Waits until the Service has exactly one managed slice, whose endpoints are `want`.
async fn wait_slice(api: &Api<EndpointSlice>, service: &str, want: SliceEndpoints) -> EndpointSlice {
    eventually(&format!("one slice of {service} with {want:?}"), || async {
        let mut slices = managed_slices(api, service).await?;
        match slices.len() {
            1 if slice_endpoints(&slices[0]) == want => Ok(slices.remove(0)),
            _ => Err(format!("{:?}", slices.iter().map(slice_endpoints).collect::<Vec<_>>())),
        }
    })
    .await
}

fn ep(ip: &str, ready: bool, serving: bool, terminating: bool, pod: &str) -> (String, bool, bool, bool, String) {
    (ip.into(), ready, serving, terminating, pod.into())
}

async fn create<K>(api: &Api<K>, object: Value) -> K
where
    K: kube::Resource
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + k8s_openapi::serde::Serialize
        + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object).expect("a valid object");
    // The API may still be creating its namespaces.
    eventually("create", || async {
        api.create(&PostParams::default(), &object)
            .await
            .map_err(|e| e.to_string())
    })
    .await
}

fn pod(name: &str, app: &str, node: Option<&str>) -> Value {
    let mut spec = json!({"containers": [{
        "name": "c",
        "image": "nginx",
        "ports": [{"name": "http", "containerPort": 8080}]
    }]});
    if let Some(node) = node {
        spec["nodeName"] = json!(node);
    }
    json!({"metadata": {"name": name, "labels": {"app": app}}, "spec": spec})
}

/// Sets the pod's IP and Ready condition through `/status`, as its node agent would.
async fn set_status(pods: &Api<Pod>, name: &str, ip: &str, ready: bool) {
    let status = json!({"status": {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("pod status");
}

async fn relabel(pods: &Api<Pod>, name: &str, app: &str) {
    let patch = json!({"metadata": {"labels": {"app": app}}});
    pods.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("relabel");
}

/// The resourceVersions a watch delivered (bookmarks aside), recorded by a task.
struct Recorded {
    versions: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

async fn record<K>(api: &Api<K>, params: WatchParams, from: &str) -> Recorded
where
    K: kube::Resource + Clone + k8s_openapi::serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let versions: Arc<Mutex<Vec<String>>> = Arc::default();
    let stream = api.watch(&params, from).await.expect("watch");
    let seen = versions.clone();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(Ok(event)) = stream.next().await {
            let rv = match event {
                WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => o.resource_version(),
                WatchEvent::Bookmark(_) | WatchEvent::Error(_) => None,
            };
            seen.lock().expect("versions").extend(rv);
        }
    });
    Recorded { versions, task }
}

impl Recorded {
    /// The writes seen once the one at `rv` has been (all writes up to it).
    async fn through(self, rv: &str) -> Vec<String> {
        let versions = self.versions.clone();
        let seen = eventually(&format!("the watch reaching {rv}"), || async {
            let v = versions.lock().expect("versions").clone();
            if v.iter().any(|x| x == rv) {
                Ok(v)
            } else {
                Err(format!("{v:?}"))
            }
        })
        .await;
        self.task.abort();
        seen
    }
}

/// What the tests read and write, in namespace [`NS`].
struct Apis {
    services: Api<Service>,
    pods: Api<Pod>,
    endpoints: Api<Endpoints>,
    slices: Api<EndpointSlice>,
}

impl Apis {
    fn new(client: &kube::Client) -> Apis {
        Apis {
            services: Api::namespaced(client.clone(), NS),
            pods: Api::namespaced(client.clone(), NS),
            endpoints: Api::namespaced(client.clone(), NS),
            slices: Api::namespaced(client.clone(), NS),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_and_slices_follow_the_pods_a_service_selects() {
    let cluster = start().await;
    let client = cluster.client.clone();
    let controller = tokio::spawn(capstan_agents::endpoints::run(client.clone()));
    let Apis {
        services,
        pods,
        endpoints,
        slices,
    } = Apis::new(&client);

    // A Service without selector, with the user's Endpoints: left alone throughout.
    create(
        &services,
        json!({"metadata": {"name": "manual"}, "spec": {"ports": [{"port": 5432}]}}),
    )
    .await;
    let manual: Endpoints = create(
        &endpoints,
        json!({"metadata": {"name": "manual"},
               "subsets": [{"addresses": [{"ip": "10.2.0.1"}], "ports": [{"port": 5432}]}]}),
    )
    .await;

    let web: Service = create(
        &services,
        json!({
            "metadata": {"name": "web", "labels": {"team": "a"}},
            "spec": {
                "selector": {"app": "web"},
                "ports": [
                    {"name": "http", "port": 80, "targetPort": "http"},
                    {"name": "metrics", "port": 9090, "targetPort": 9090}
                ]
            }
        }),
    )
    .await;
    let web_1 = create(&pods, pod("web-1", "web", Some("node-a"))).await;
    create(&pods, pod("web-2", "web", None)).await;
    create(&pods, pod("db-1", "db", None)).await;
    set_status(&pods, "web-1", "127.128.0.1", true).await;
    set_status(&pods, "web-2", "127.128.0.2", false).await;
    set_status(&pods, "db-1", "127.128.0.3", true).await;

    // Endpoints: web-1 ready, web-2 not, db-1 absent; "http" resolved to 8080 per pod.
    let e = wait_endpoints(
        &endpoints,
        "web",
        vec![(strings(&["127.128.0.1"]), strings(&["127.128.0.2"]), strings(&PORTS))],
    )
    .await;
    let subset = &e.subsets.as_ref().expect("subsets")[0];
    let address = &subset.addresses.as_ref().expect("addresses")[0];
    assert_eq!(address.node_name.as_deref(), Some("node-a"));
    let target = address.target_ref.clone().expect("targetRef");
    assert_eq!(target.kind.as_deref(), Some("Pod"));
    assert_eq!(target.name.as_deref(), Some("web-1"));
    assert_eq!(target.namespace.as_deref(), Some(NS));
    assert_eq!(target.uid, web_1.uid());
    assert_eq!(
        subset.not_ready_addresses.as_ref().expect("not ready")[0].node_name,
        None
    );
    assert_eq!(e.labels().get("team").map(String::as_str), Some("a"));
    assert!(e.owner_references().is_empty(), "Endpoints have no owner upstream");

    // The slice: same pods, conditions, labels, owner.
    let slice = wait_slice(
        &slices,
        "web",
        vec![
            ep("127.128.0.1", true, true, false, "web-1"),
            ep("127.128.0.2", false, false, false, "web-2"),
        ],
    )
    .await;
    let name = slice.name_any();
    assert!(
        name.starts_with("web-")
            && name.len() == "web-".len() + 5
            && name[4..].chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
        "{name}"
    );
    assert_eq!(slice.address_type, "IPv4");
    let labels = slice.labels();
    assert_eq!(
        labels.get("kubernetes.io/service-name").map(String::as_str),
        Some("web")
    );
    assert_eq!(
        labels.get("endpointslice.kubernetes.io/managed-by").map(String::as_str),
        Some("endpointslice-controller.k8s.io")
    );
    assert_eq!(labels.get("team").map(String::as_str), Some("a"));
    let owner = &slice.owner_references()[0];
    assert_eq!(slice.owner_references().len(), 1);
    assert_eq!(
        (owner.api_version.as_str(), owner.kind.as_str(), owner.name.as_str()),
        ("v1", "Service", "web")
    );
    assert_eq!(Some(owner.uid.clone()), web.uid());
    assert_eq!((owner.controller, owner.block_owner_deletion), (Some(true), Some(true)));
    let mut ports: Vec<(String, i32, String)> = slice
        .ports
        .iter()
        .flatten()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port.unwrap_or_default(),
                p.protocol.clone().unwrap_or_default(),
            )
        })
        .collect();
    ports.sort();
    assert_eq!(
        ports,
        vec![
            ("http".into(), 8080, "TCP".into()),
            ("metrics".into(), 9090, "TCP".into())
        ]
    );
    let web_1_endpoint = slice
        .endpoints
        .iter()
        .find(|e| e.addresses == ["127.128.0.1"])
        .expect("web-1");
    assert_eq!(web_1_endpoint.node_name.as_deref(), Some("node-a"));

    // web-2 becomes ready, after an irrelevant change to web-1 (which also triggers the
    // Service): exactly one write each to the Endpoints and to the slice.
    let by_name = |n: &str| WatchParams::default().fields(&format!("metadata.name={n}"));
    let endpoints_writes = record(&endpoints, by_name("web"), &e.resource_version().expect("rv")).await;
    let slice_writes = record(&slices, by_name(&name), &slice.resource_version().expect("rv")).await;
    let note = json!({"metadata": {"annotations": {"note": "unrelated"}}});
    pods.patch("web-1", &PatchParams::default(), &Patch::Merge(&note))
        .await
        .expect("annotate");
    set_status(&pods, "web-2", "127.128.0.2", true).await;
    let e = wait_endpoints(
        &endpoints,
        "web",
        vec![(strings(&["127.128.0.1", "127.128.0.2"]), vec![], strings(&PORTS))],
    )
    .await;
    let slice = wait_slice(
        &slices,
        "web",
        vec![
            ep("127.128.0.1", true, true, false, "web-1"),
            ep("127.128.0.2", true, true, false, "web-2"),
        ],
    )
    .await;
    // A later write would show up as the next one; create something else to reconcile and
    // wait for it, so that any spurious write of web's had its chance.
    create(
        &services,
        json!({"metadata": {"name": "probe"}, "spec": {"selector": {"app": "none"}, "ports": [{"port": 1}]}}),
    )
    .await;
    wait_endpoints(&endpoints, "probe", vec![]).await;
    wait_slice(&slices, "probe", vec![]).await;
    let e2 = endpoints.get("web").await.expect("endpoints");
    assert_eq!(e2.resource_version(), e.resource_version(), "no write without a change");
    let writes = endpoints_writes.through(&e.resource_version().expect("rv")).await;
    assert_eq!(writes.len(), 1, "one write to the Endpoints: {writes:?}");
    let writes = slice_writes.through(&slice.resource_version().expect("rv")).await;
    assert_eq!(writes.len(), 1, "one write to the slice: {writes:?}");

    // The API makes an identical update no write at all, so the counts above cannot see a
    // controller that sends them; this can: at the steady state, as the API returns the
    // objects (defaults and all), there is nothing to send.
    let service = services.get("web").await.expect("web");
    let selected = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("pods")
        .items;
    assert_eq!(endpoints_update(&service, &selected, Some(&e2)), None);
    let plan = plan_slices(
        &service,
        &selected,
        &managed_slices(&slices, "web").await.expect("slices"),
    );
    assert!(plan.is_empty(), "{plan:?}");

    // A pod relabelled into the selector joins; relabelled out, it leaves.
    relabel(&pods, "db-1", "web").await;
    wait_endpoints(
        &endpoints,
        "web",
        vec![(
            strings(&["127.128.0.1", "127.128.0.2", "127.128.0.3"]),
            vec![],
            strings(&PORTS),
        )],
    )
    .await;
    relabel(&pods, "db-1", "db").await;
    wait_endpoints(
        &endpoints,
        "web",
        vec![(strings(&["127.128.0.1", "127.128.0.2"]), vec![], strings(&PORTS))],
    )
    .await;

    // Deleted by someone: put back.
    endpoints
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete endpoints");
    slices
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete slice");
    wait_endpoints(
        &endpoints,
        "web",
        vec![(strings(&["127.128.0.1", "127.128.0.2"]), vec![], strings(&PORTS))],
    )
    .await;
    let slice = wait_slice(
        &slices,
        "web",
        vec![
            ep("127.128.0.1", true, true, false, "web-1"),
            ep("127.128.0.2", true, true, false, "web-2"),
        ],
    )
    .await;
    assert_ne!(slice.name_any(), name, "a new slice");

    // A deleted pod leaves both.
    pods.delete("web-2", &DeleteParams::default())
        .await
        .expect("delete web-2");
    wait_endpoints(
        &endpoints,
        "web",
        vec![(strings(&["127.128.0.1"]), vec![], strings(&PORTS))],
    )
    .await;
    wait_slice(&slices, "web", vec![ep("127.128.0.1", true, true, false, "web-1")]).await;

    // A pod on a node is deleted gracefully: out of the Endpoints, terminating in the slice.
    pods.delete("web-1", &DeleteParams::default())
        .await
        .expect("delete web-1");
    let terminating = pods.get("web-1").await.expect("web-1 is terminating");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    wait_endpoints(&endpoints, "web", vec![]).await;
    wait_slice(&slices, "web", vec![ep("127.128.0.1", false, true, true, "web-1")]).await;

    // The Service goes: so do its Endpoints and slices.
    services
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete web");
    eventually("web's endpoints and slices deleted", || async {
        let e = endpoints.get_opt("web").await.map_err(|e| e.to_string())?;
        let s = managed_slices(&slices, "web").await?;
        if e.is_none() && s.is_empty() {
            Ok(())
        } else {
            Err(format!("endpoints {:?}, {} slices", e.map(|e| subsets(&e)), s.len()))
        }
    })
    .await;

    // The Service without selector: its Endpoints untouched, no slices from us.
    let after = endpoints.get("manual").await.expect("manual endpoints");
    assert_eq!(after.resource_version(), manual.resource_version());
    assert!(managed_slices(&slices, "manual").await.expect("list").is_empty());
    controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_services_deleted_while_it_was_away_left_is_swept_at_start() {
    let cluster = start().await;
    let client = cluster.client.clone();
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), NS);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
    let subsets = json!([{"addresses": [{"ip": "10.2.0.1"}], "ports": [{"port": 80}]}]);
    create(&endpoints, json!({"metadata": {"name": "gone"}, "subsets": subsets})).await;
    let lock: Endpoints = create(
        &endpoints,
        json!({"metadata": {"name": "lock", "annotations": {"control-plane.alpha.kubernetes.io/leader": "{}"}}}),
    )
    .await;
    let slice = |service: &str, managed_by: &str| {
        json!({
            "metadata": {"generateName": format!("{service}-"), "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": managed_by
            }},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.2.0.1"]}]
        })
    };
    create::<EndpointSlice>(&slices, slice("gone", "endpointslice-controller.k8s.io")).await;
    let foreign: EndpointSlice = create(&slices, slice("gone", "someone-else")).await;

    let controller = tokio::spawn(capstan_agents::endpoints::run(client.clone()));
    eventually("the leftovers of service gone deleted", || async {
        let e = endpoints.get_opt("gone").await.map_err(|e| e.to_string())?;
        let s = managed_slices(&slices, "gone").await?;
        if e.is_none() && s.is_empty() {
            Ok(())
        } else {
            Err(format!("endpoints: {}, managed slices: {}", e.is_some(), s.len()))
        }
    })
    .await;
    // Swept in the same pass: a leader-election lock and another manager's slice stay.
    let after = endpoints.get("lock").await.expect("the lock stays");
    assert_eq!(after.resource_version(), lock.resource_version());
    slices
        .get(&foreign.name_any())
        .await
        .expect("another manager's slice stays");
    controller.abort();
}

/// The warning events of `reason` about the `kind` named `name`, from `component`.
async fn warnings(
    events: &Api<Event>,
    kind: &str,
    name: &str,
    reason: &str,
    component: &str,
) -> Result<Vec<Event>, String> {
    let list = events.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
    let found: Vec<Event> = list
        .items
        .into_iter()
        .filter(|e| {
            e.involved_object.kind.as_deref() == Some(kind)
                && e.involved_object.name.as_deref() == Some(name)
                && e.reason.as_deref() == Some(reason)
        })
        .collect();
    for e in &found {
        assert_eq!(e.type_.as_deref(), Some("Warning"), "{e:?}");
        let source = e.source.as_ref().and_then(|s| s.component.as_deref());
        assert_eq!(source, Some(component), "{e:?}");
        assert_eq!(e.involved_object.namespace.as_deref(), Some(NS), "{e:?}");
        assert_eq!(e.involved_object.api_version.as_deref(), Some("v1"), "{e:?}");
    }
    if found.is_empty() {
        Err(format!("no {reason} event about {kind} {name}"))
    } else {
        Ok(found)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_writes_are_recorded_as_upstreams_warnings() {
    let cluster = start().await;
    let client = cluster.client.clone();
    let controller = tokio::spawn(capstan_agents::endpoints::run(client.clone()));
    let Apis {
        services,
        pods,
        endpoints,
        slices,
    } = Apis::new(&client);
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    // A pod IP the API takes in a pod's status but refuses in Endpoints and slices.
    const LINK_LOCAL: &str = "169.254.0.5";
    let refused =
        format!("Invalid value: \"{LINK_LOCAL}\": may not be in the link-local range (169.254.0.0/16, fe80::/10)");

    // Updates: a Service whose objects exist, then a pod with a link-local IP.
    let web: Service = create(
        &services,
        json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
    )
    .await;
    create(&pods, pod("web-1", "web", None)).await;
    set_status(&pods, "web-1", "127.128.0.1", true).await;
    wait_endpoints(
        &endpoints,
        "web",
        vec![(strings(&["127.128.0.1"]), vec![], strings(&[":80/TCP"]))],
    )
    .await;
    let slice = wait_slice(&slices, "web", vec![ep("127.128.0.1", true, true, false, "web-1")]).await;
    create(&pods, pod("web-2", "web", None)).await;
    set_status(&pods, "web-2", LINK_LOCAL, true).await;

    let update = eventually("a FailedToUpdateEndpoint event", || async {
        warnings(
            &events,
            "Endpoints",
            "web",
            "FailedToUpdateEndpoint",
            "endpoint-controller",
        )
        .await
    })
    .await;
    let message = update[0].message.clone().unwrap_or_default();
    let prefix = "Failed to update endpoint default/web: Endpoints \"web\" is invalid: subsets[0].addresses[";
    assert!(message.starts_with(prefix), "{message}");
    assert!(message.ends_with(&format!("].ip: {refused}")), "{message}");
    let current = endpoints.get("web").await.expect("endpoints");
    assert_eq!(update[0].involved_object.uid, current.uid(), "the Endpoints written");

    let update = eventually("a FailedToUpdateEndpointSlices event", || async {
        warnings(
            &events,
            "Service",
            "web",
            "FailedToUpdateEndpointSlices",
            "endpoint-slice-controller",
        )
        .await
    })
    .await;
    let message = update[0].message.clone().unwrap_or_default();
    let s = slice.name_any();
    let prefix = format!(
        "Error updating Endpoint Slices for Service default/web: failed to update {s} EndpointSlice for \
         Service default/web: EndpointSlice.discovery.k8s.io \"{s}\" is invalid: endpoints["
    );
    assert!(message.starts_with(&prefix), "{message}");
    assert!(message.ends_with(&format!("].addresses[0]: {refused}")), "{message}");
    assert_eq!(update[0].involved_object.uid, web.uid(), "the Service");

    // Creates: a new Service whose only pod already has a link-local IP (the pod first,
    // so that the Service's first reconcile sees it).
    create(&pods, pod("api-1", "api", None)).await;
    set_status(&pods, "api-1", LINK_LOCAL, true).await;
    let api: Service = create(
        &services,
        json!({"metadata": {"name": "api"}, "spec": {"selector": {"app": "api"}, "ports": [{"port": 80}]}}),
    )
    .await;
    let create_warning = eventually("a FailedToCreateEndpoint event", || async {
        warnings(
            &events,
            "Endpoints",
            "api",
            "FailedToCreateEndpoint",
            "endpoint-controller",
        )
        .await
    })
    .await;
    assert_eq!(
        create_warning[0].involved_object.uid, None,
        "Endpoints not created have no uid"
    );
    let message = create_warning[0].message.clone().unwrap_or_default();
    assert_eq!(
        message,
        format!(
            "Failed to create endpoint for service default/api: Endpoints \"api\" is invalid: \
             subsets[0].addresses[0].ip: {refused}"
        )
    );
    let create_warning = eventually("a FailedToUpdateEndpointSlices event for the create", || async {
        warnings(
            &events,
            "Service",
            "api",
            "FailedToUpdateEndpointSlices",
            "endpoint-slice-controller",
        )
        .await
    })
    .await;
    let message = create_warning[0].message.clone().unwrap_or_default();
    let prefix = "Error updating Endpoint Slices for Service default/api: failed to create EndpointSlice for \
         Service default/api: EndpointSlice.discovery.k8s.io ";
    assert!(message.starts_with(prefix), "{message}");
    assert!(
        message.ends_with(&format!(" is invalid: endpoints[0].addresses[0]: {refused}")),
        "{message}"
    );
    assert_eq!(create_warning[0].involved_object.uid, api.uid(), "the Service");
    assert!(
        endpoints.get_opt("api").await.expect("get").is_none(),
        "nothing was created"
    );
    controller.abort();
}
