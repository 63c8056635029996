//! Realistic inputs: the objects the patch target patches when an input brings none, and
//! the seed corpus of every target ([`corpus`]), which `fuzz/corpus/` was started from.

use bytes::Bytes;
use capstan_proto::etcdserverpb::{
    compare, request_op, CompactionRequest, Compare, DeleteRangeRequest, HashKvRequest, LeaseGrantRequest,
    LeaseRevokeRequest, LeaseTimeToLiveRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, WatchCreateRequest,
};
use capstan_proto::peer::{RaftBatch, SnapshotChunk};
use capstan_proto::store::{command, Command};
use prost::Message as _;
use protobuf::Message as _;
use raft::prelude::{ConfChange, ConfChangeType, Entry, EntryType, Message, MessageType, Snapshot};
use serde_json::{json, Value};

use crate::etcd::Op;
use crate::input::frame;
use crate::rest::{index_of, SEPARATOR};

/// Objects of the kinds clients write most, as a client sends them.
pub fn objects() -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-0", "labels": {"app": "web"},
            "annotations": {"note": "fuzz"}},
            "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27", "ports": [{"containerPort": 80}],
                "env": [{"name": "MODE", "value": "prod"}],
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
                "readinessProbe": {"httpGet": {"path": "/", "port": 80}, "periodSeconds": 5},
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                {"name": "sidecar", "image": "busybox", "command": ["sleep", "3600"]}],
                "initContainers": [{"name": "init", "image": "busybox", "command": ["true"]}],
                "volumes": [{"name": "data", "emptyDir": {}}],
                "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
                "nodeSelector": {"disk": "ssd"}}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27",
                        "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}}}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"type": "NodePort", "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}]}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
            "data": {"a": "1", "b": "two"}, "binaryData": {"c": "AAEC"}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "token"}, "type": "Opaque",
            "data": {"token": "c2VjcmV0"}, "stringData": {"user": "admin"}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a", "labels": {"team": "a"}}}),
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node1", "labels": {"kubernetes.io/os": "linux"}},
            "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"],
                "taints": [{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]}}),
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web-5d4f",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                    "uid": "0b0f0e0d-1111-4222-8333-444455556666", "controller": true}]},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web", "pod-template-hash": "5d4f"}},
                "template": {"metadata": {"labels": {"app": "web", "pod-template-hash": "5d4f"}},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}}}),
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "node1"},
            "spec": {"holderIdentity": "node1", "leaseDurationSeconds": 40,
                "renewTime": "2026-01-01T00:00:00.000000Z"}}),
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "web-abc",
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": true}, "nodeName": "node1"}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}),
        json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web"},
            "subsets": [{"addresses": [{"ip": "10.244.1.5"}], "ports": [{"name": "http", "port": 8080}]}]}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "builder"},
            "secrets": [{"name": "builder-token"}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "readers"},
            "subjects": [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"},
                {"kind": "ServiceAccount", "name": "builder", "namespace": "default"}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}}),
        json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "web-0.1"},
            "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web-0"},
            "reason": "Scheduled", "message": "assigned default/web-0 to node1", "type": "Normal",
            "source": {"component": "default-scheduler"}, "count": 1}),
    ]
}

/// The Kubernetes protobuf bodies kubectl 1.32 sends for `kubectl create configmap`,
/// `deployment` and `namespace` (recorded; the same as in `apiserver/src/protobuf.rs`'s
/// tests).
pub const PROTOBUF_BODIES: &[(&str, &[u8])] = &[
    ("ConfigMap", b"k8s\x00\x0a\x0f\x0a\x02v1\x12\x09ConfigMap\x12\x1b\x0a\x11\x0a\x01c\x12\x00\x1a\x00\x22\x00*\x002\x008\x00B\x00\x12\x06\x0a\x01a\x12\x01b\x1a\x00\x22\x00"),
    ("Deployment", b"k8s\x00\x0a\x15\x0a\x07apps/v1\x12\x0aDeployment\x12\xb8\x01\x0a\x1f\x0a\x03web\x12\x00\x1a\x00\x22\x00*\x002\x008\x00B\x00Z\x0a\x0a\x03app\x12\x03web\x12\x86\x01\x08\x01\x12\x0c\x0a\x0a\x0a\x03app\x12\x03web\x1al\x0a\x1c\x0a\x00\x12\x00\x1a\x00\x22\x00*\x002\x008\x00B\x00Z\x0a\x0a\x03app\x12\x03web\x12L\x12.\x0a\x05nginx\x12\x05nginx*\x002\x0a\x0a\x00\x10\x00\x18P\x22\x00*\x00B\x00j\x00r\x00\x80\x01\x00\x88\x01\x00\x90\x01\x00\xa2\x01\x00\x1a\x002\x00B\x00J\x00R\x00X\x00`\x00h\x00\x82\x01\x00\x8a\x01\x00\x9a\x01\x00\xc2\x01\x00\x22\x02\x0a\x00(\x008\x00\x1a\x0c\x08\x00\x10\x00\x18\x00 \x00(\x008\x00\x1a\x00\x22\x00"),
    ("Service", b"k8s\x00\x0a\x0d\x0a\x02v1\x12\x07Service\x12b\x0a\x1b\x0a\x01s\x12\x00\x1a\x00\x22\x00*\x002\x008\x00B\x00Z\x08\x0a\x03app\x12\x01s\x12?\x0a\x1b\x0a\x0780-8080\x12\x03TCP\x18P\x22\x07\x08\x00\x10\x90?\x1a\x00(\x00\x12\x08\x0a\x03app\x12\x01s\x1a\x00\x22\x08NodePort:\x00B\x00R\x00Z\x00`\x00h\x00\x1a\x02\x0a\x00\x1a\x00\x22\x00"),
    ("Secret", b"k8s\x00\x0a\x0c\x0a\x02v1\x12\x06Secret\x12\x1d\x0a\x11\x0a\x01s\x12\x00\x1a\x00\x22\x00*\x002\x008\x00B\x00\x12\x06\x0a\x01k\x12\x01v\x1a\x00\x1a\x00\x22\x00"),
    ("Namespace", b"k8s\x00\x0a\x0f\x0a\x02v1\x12\x09Namespace\x12\x19\x0a\x11\x0a\x01n\x12\x00\x1a\x00\x22\x00*\x002\x008\x00B\x00\x12\x00\x1a\x02\x0a\x00\x1a\x00\x22\x00"),
    ("RoleBinding", b"k8s\x00\x0a+\x0a\x1crbac.authorization.k8s.io/v1\x12\x0bRoleBinding\x12\xc1\x01\x0a\x16\x0a\x06cap-rb\x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00\x12*\x0a\x04User\x12\x19rbac.authorization.k8s.io\x1a\x05alice\"\x00\x12*\x0a\x05Group\x12\x19rbac.authorization.k8s.io\x1a\x04devs\"\x00\x12 \x0a\x0eServiceAccount\x12\x00\x1a\x03sa1\"\x07default\x1a-\x0a\x19rbac.authorization.k8s.io\x12\x04Role\x1a\x0apod-reader\x1a\x00\"\x00"),
];

/// One seed input of a target.
pub struct Seed {
    pub target: &'static str,
    pub name: String,
    pub data: Vec<u8>,
}

fn seed(target: &'static str, name: impl Into<String>, data: Vec<u8>) -> Seed {
    Seed {
        target,
        name: name.into(),
        data,
    }
}

fn kind_of(obj: &Value) -> &str {
    obj["kind"].as_str().unwrap_or("")
}

fn to_json(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// The seed corpus of every target.
pub fn corpus() -> Vec<Seed> {
    let mut out = Vec::new();
    rest_seeds(&mut out);
    patch_seeds(&mut out);
    etcd_seeds(&mut out);
    raft_seeds(&mut out);
    out
}

fn rest_seeds(out: &mut Vec<Seed>) {
    for obj in objects() {
        let kind = kind_of(&obj).to_string();
        let Some(i) = index_of(&kind) else { continue };
        let selector = u8::try_from(i).unwrap_or(0);
        // A create alone, then a create and an update that changes labels and the spec.
        let mut data = vec![selector];
        data.extend(to_json(&obj));
        out.push(seed("rest_body", format!("{}-create", kind.to_lowercase()), data));
        // The update is what kubectl edit sends: the stored object back (resourceVersion
        // and all), changed.
        let body = Bytes::from(to_json(&obj));
        let Ok(mut changed) = crate::api::create(&capstan_apiserver::resources::RESOURCES[i], &body) else {
            continue;
        };
        changed["metadata"]["labels"] = json!({"app": "web", "tier": "front"});
        if changed["spec"]["replicas"].is_number() {
            changed["spec"]["replicas"] = json!(5);
        }
        if changed["spec"]["containers"].is_array() {
            changed["spec"]["containers"][0]["image"] = json!("nginx:1.28");
        }
        let mut data = vec![selector];
        data.extend(to_json(&obj));
        data.extend_from_slice(SEPARATOR);
        data.extend(to_json(&changed));
        out.push(seed("rest_body", format!("{}-update", kind.to_lowercase()), data));
    }
    for (kind, body) in PROTOBUF_BODIES {
        let Some(i) = index_of(kind) else { continue };
        let mut data = vec![0x80 | u8::try_from(i).unwrap_or(0)];
        data.extend_from_slice(body);
        out.push(seed("rest_body", format!("{}-protobuf", kind.to_lowercase()), data));
    }
}

fn patch_seeds(out: &mut Vec<Seed>) {
    let objects = objects();
    let selector = |kind: &str, ty: u8| -> u8 {
        let i = crate::patches::fixed_index(kind).unwrap_or(0);
        (u8::try_from(i).unwrap_or(0) << 2) | ty
    };
    let patches: Vec<(&str, u8, Value)> = vec![
        (
            "Deployment",
            0,
            json!({"spec": {"replicas": 5}, "metadata": {"labels": {"tier": null, "new": "x"}}}),
        ),
        (
            "Pod",
            0,
            json!({"metadata": {"annotations": {"note": null}}, "spec": {"activeDeadlineSeconds": 30}}),
        ),
        ("ConfigMap", 0, json!({"data": {"a": null, "c": "3"}})),
        (
            "Deployment",
            1,
            json!([{"op": "replace", "path": "/spec/replicas", "value": 2},
            {"op": "add", "path": "/metadata/labels/x", "value": "y"},
            {"op": "test", "path": "/spec/replicas", "value": 2}]),
        ),
        (
            "Pod",
            1,
            json!([{"op": "add", "path": "/spec/tolerations/-",
            "value": {"key": "x", "operator": "Exists"}},
            {"op": "copy", "from": "/metadata/labels", "path": "/metadata/annotations"},
            {"op": "move", "from": "/metadata/annotations/app", "path": "/metadata/annotations/moved"},
            {"op": "remove", "path": "/metadata/labels/app"}]),
        ),
        (
            "Service",
            1,
            json!([{"op": "replace", "path": "/spec/ports/0/port", "value": 81}]),
        ),
        (
            "Pod",
            2,
            json!({"spec": {"containers": [{"name": "nginx", "image": "nginx:1.28"},
            {"name": "sidecar", "$patch": "delete"}],
            "$setElementOrder/containers": [{"name": "nginx"}]}}),
        ),
        (
            "Deployment",
            2,
            json!({"spec": {"template": {"spec": {"containers": [{"name": "nginx",
            "env": [{"name": "A", "value": "1"}]}]}}}, "metadata": {"$retainKeys": ["name", "labels"]}}),
        ),
        (
            "Node",
            2,
            json!({"spec": {"$deleteFromPrimitiveList/podCIDRs": ["10.244.1.0/24"],
            "taints": [{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule", "$patch": "delete"}]}}),
        ),
        (
            "Service",
            2,
            json!({"spec": {"ports": [{"port": 80, "name": "web", "$patch": "replace"}]}}),
        ),
        ("Deployment", 3, json!({"spec": {"replicas": 4}})),
    ];
    for (i, (kind, ty, patch)) in patches.into_iter().enumerate() {
        let mut data = vec![selector(kind, ty)];
        data.extend(to_json(&patch));
        out.push(seed("patch", format!("{i:02}-{}-{ty}", kind.to_lowercase()), data));
    }
    // With a target document of the input's own: a JSON patch replacing the root (a number
    // where an object belongs), and a strategic merge patch over a document of its own.
    let with_target: Vec<(&str, u8, Value, Value)> = vec![
        (
            "Deployment",
            1,
            objects[1].clone(),
            json!([{"op": "add", "path": "", "value": {"spec": 5}}]),
        ),
        (
            "Pod",
            2,
            objects[0].clone(),
            json!({"spec": {"containers": [{"name": "sidecar", "image": "alpine"}]}}),
        ),
        (
            "ConfigMap",
            0,
            json!({"a": [1, 2, {"b": null}]}),
            json!({"a": {"b": [true]}}),
        ),
    ];
    for (i, (kind, ty, target, patch)) in with_target.into_iter().enumerate() {
        let mut data = vec![selector(kind, ty)];
        data.extend(to_json(&target));
        data.push(0);
        data.extend(to_json(&patch));
        out.push(seed("patch", format!("target-{i}-{}-{ty}", kind.to_lowercase()), data));
    }
}

fn encode(op: Op, m: &impl prost::Message) -> Vec<u8> {
    frame(op as u8, &m.encode_to_vec())
}

fn put(key: &str, value: &str, lease: i64) -> PutRequest {
    PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        lease,
        prev_kv: true,
        ..Default::default()
    }
}

fn range(key: &str, end: &str) -> RangeRequest {
    RangeRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        range_end: Bytes::copy_from_slice(end.as_bytes()),
        ..Default::default()
    }
}

fn etcd_seeds(out: &mut Vec<Seed>) {
    let registry = "/registry/pods/default/web-0";
    let mut puts_then_read = encode(Op::Put, &put(registry, "{\"kind\":\"Pod\"}", 0));
    puts_then_read.extend(encode(Op::Put, &put("/registry/pods/default/web-1", "v", 0)));
    puts_then_read.extend(encode(Op::Put, &put(registry, "v2", 0)));
    puts_then_read.extend(encode(
        Op::Range,
        &RangeRequest {
            limit: 1,
            count_only: false,
            sort_order: 2,
            sort_target: 3,
            ..range("/registry/pods/", "/registry/pods0")
        },
    ));
    out.push(seed("etcd_request", "puts-range", puts_then_read));

    let mut lease = encode(Op::LeaseGrant, &LeaseGrantRequest { ttl: 30, id: 77 });
    lease.extend(encode(Op::Put, &put("/leased", "x", 77)));
    lease.extend(encode(
        Op::LeaseTimeToLive,
        &LeaseTimeToLiveRequest { id: 77, keys: true },
    ));
    lease.extend(frame(Op::LeaseLeases as u8, &[]));
    lease.extend(encode(Op::LeaseRevoke, &LeaseRevokeRequest { id: 77 }));
    lease.extend(encode(Op::Range, &range("/leased", "")));
    out.push(seed("etcd_request", "lease-lifecycle", lease));

    // Kubernetes' optimistic update: a transaction on the key's mod_revision.
    let cas = TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Mod as i32,
            key: Bytes::from_static(b"/registry/pods/default/web-0"),
            range_end: Bytes::new(),
            target_union: Some(compare::TargetUnion::ModRevision(1)),
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(put(registry, "v3", 0))),
        }],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestRange(range(registry, ""))),
        }],
    };
    let mut txn = encode(Op::Put, &put(registry, "v1", 0));
    txn.extend(encode(Op::Txn, &cas));
    let nested = TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Greater as i32,
            target: compare::CompareTarget::Version as i32,
            key: Bytes::from_static(b"/a"),
            range_end: Bytes::from_static(b"/b"),
            target_union: Some(compare::TargetUnion::Version(0)),
        }],
        success: vec![
            RequestOp {
                request: Some(request_op::Request::RequestTxn(cas.clone())),
            },
            RequestOp {
                request: Some(request_op::Request::RequestDeleteRange(DeleteRangeRequest {
                    key: Bytes::from_static(b"/a"),
                    range_end: Bytes::from_static(b"/b"),
                    prev_kv: true,
                })),
            },
        ],
        failure: Vec::new(),
    };
    txn.extend(encode(Op::Txn, &nested));
    out.push(seed("etcd_request", "txn-cas-nested", txn));

    let mut history = Vec::new();
    for i in 0..4 {
        history.extend(encode(Op::Put, &put("/h", &format!("v{i}"), 0)));
    }
    history.extend(encode(
        Op::DeleteRange,
        &DeleteRangeRequest {
            key: Bytes::from_static(b"/h"),
            range_end: Bytes::new(),
            prev_kv: true,
        },
    ));
    history.extend(encode(
        Op::WatchCreate,
        &WatchCreateRequest {
            key: Bytes::from_static(b"/h"),
            start_revision: 1,
            prev_kv: true,
            ..Default::default()
        },
    ));
    history.extend(encode(Op::HashKv, &HashKvRequest { revision: 0 }));
    history.extend(encode(
        Op::Compaction,
        &CompactionRequest {
            revision: 3,
            physical: true,
        },
    ));
    history.extend(encode(
        Op::Range,
        &RangeRequest {
            revision: 2,
            ..range("/h", "")
        },
    ));
    out.push(seed("etcd_request", "history-watch-compact", history));

    // A log entry as a follower applies it: a Command, and one no member can decode.
    let cmd = Command {
        op: Some(command::Op::Put(put("/raw", "entry", 0))),
    };
    let mut raw = frame(Op::LogEntry as u8, &cmd.encode_to_vec());
    raw.extend(frame(Op::LogEntry as u8, b"\xff\xff\xff"));
    out.push(seed("etcd_request", "log-entries", raw));
}

fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
    Entry {
        index,
        term,
        entry_type: EntryType::EntryNormal,
        data: data.to_vec().into(),
        ..Default::default()
    }
}

fn message(ty: MessageType, from: u64, term: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(ty);
    m.from = from;
    m.to = 1;
    m.term = term;
    m
}

fn raft_seeds(out: &mut Vec<Seed>) {
    let cmd = Command {
        op: Some(command::Op::Put(put("/k", "v", 0))),
    }
    .encode_to_vec();
    // A leader's append: the entries after the follower's last, with the commit index.
    let mut append = message(MessageType::MsgAppend, 2, 2);
    append.index = 3;
    append.log_term = 2;
    append.commit = 4;
    append.set_entries(vec![entry(4, 2, &cmd), entry(5, 2, &cmd)].into());
    let mut heartbeat = message(MessageType::MsgHeartbeat, 2, 2);
    heartbeat.commit = 3;
    let mut vote = message(MessageType::MsgRequestPreVote, 3, 3);
    vote.index = 3;
    vote.log_term = 2;
    let mut append_resp = message(MessageType::MsgAppendResponse, 2, 3);
    append_resp.index = 4;
    let mut read_index = message(MessageType::MsgReadIndex, 2, 2);
    read_index.set_entries(vec![entry(0, 0, b"ctx")].into());
    let mut cc = ConfChange::default();
    cc.set_change_type(ConfChangeType::AddLearnerNode);
    cc.node_id = 4;
    let mut cc_entry = entry(4, 2, &cc.write_to_bytes().unwrap_or_default());
    cc_entry.set_entry_type(EntryType::EntryConfChange);
    let mut conf_append = message(MessageType::MsgAppend, 2, 2);
    conf_append.index = 3;
    conf_append.log_term = 2;
    conf_append.commit = 4;
    conf_append.set_entries(vec![cc_entry].into());
    let bytes = |m: &Message| m.write_to_bytes().unwrap_or_default();
    let singles: Vec<(&str, u8, &Message)> = vec![
        ("append", 1, &append),
        ("heartbeat", 1, &heartbeat),
        ("prevote", 1, &vote),
        ("append-response-to-leader", 1 | 4, &append_resp),
        ("read-index-to-leader", 1 | 4, &read_index),
        ("conf-change-append", 1, &conf_append),
    ];
    for (name, mode, m) in singles {
        let mut data = vec![mode];
        data.extend(bytes(m));
        out.push(seed("raft_message", name, data));
    }
    let batch = RaftBatch {
        messages: vec![Bytes::from(bytes(&heartbeat)), Bytes::from(bytes(&append))],
    };
    let mut data = vec![0];
    data.extend(batch.encode_to_vec());
    out.push(seed("raft_message", "batch", data));

    // A snapshot stream's chunk: the message and a whole (empty-state) snapshot file.
    let file = snapshot_file(&[(b"k".as_slice(), b"v".as_slice())]);
    let mut snap = Snapshot::default();
    snap.mut_metadata().index = 10;
    snap.mut_metadata().term = 2;
    snap.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
    let mut snap_msg = message(MessageType::MsgSnapshot, 2, 2);
    snap_msg.set_snapshot(snap);
    let chunk = SnapshotChunk {
        message: Bytes::from(bytes(&snap_msg)),
        data: Bytes::from(file.clone()),
    };
    let mut data = vec![2];
    data.extend(chunk.encode_to_vec());
    out.push(seed("raft_message", "snapshot-chunk", data));
    let mut data = vec![3];
    data.extend(file);
    out.push(seed("raft_message", "snapshot-file", data));
}

/// A snapshot file of the given records, as `snapshot::write_state` writes one.
pub fn snapshot_file(records: &[(&[u8], &[u8])]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut b = capstan_store::snapshot::MAGIC.to_vec();
    for (k, v) in records {
        b.extend_from_slice(&u32::try_from(k.len()).unwrap_or(0).to_be_bytes());
        b.extend_from_slice(k);
        b.extend_from_slice(&u32::try_from(v.len()).unwrap_or(0).to_be_bytes());
        b.extend_from_slice(v);
    }
    b.extend_from_slice(&u32::MAX.to_be_bytes());
    while !b.len().is_multiple_of(512) {
        b.push(0);
    }
    let sum = Sha256::digest(&b);
    b.extend_from_slice(&sum);
    b
}
