"""The official Python `kubernetes` client against Capstan's Kubernetes API.

    python tests/python_client.py KUBECONFIG WINDOW

Typed CRUD, lists with selectors, watch with resume, and the 410 path: a watch from a
resourceVersion older than the watch cache's window (WINDOW events, as the server was
started with) ends with an ERROR event, which the client turns into ApiException(410);
the caller lists again. Exits non-zero on the first failed check.
"""

import sys
import time

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

KUBECONFIG, WINDOW = sys.argv[1], int(sys.argv[2])
config.load_kube_config(config_file=KUBECONFIG)
core = client.CoreV1Api()
apps = client.AppsV1Api()
NS = "py"
checks = 0


def check(name, cond, detail=""):
    global checks
    checks += 1
    if not cond:
        print(f"FAIL {name} {detail}")
        sys.exit(1)
    print(f"ok   {name}")


def expect_status(name, code, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except ApiException as e:
        check(name, e.status == code, f"status {e.status}: {e.body}")
        return e
    check(name, False, "no error")
    return None


core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))
ns = core.read_namespace(NS)
check("namespace created and read", ns.metadata.name == NS and ns.status.phase == "Active")

# Typed CRUD on a ConfigMap.
cm = client.V1ConfigMap(
    metadata=client.V1ObjectMeta(name="settings", labels={"app": "py"}),
    data={"mode": "fast"},
)
created = core.create_namespaced_config_map(NS, cm)
check("create returns the object", created.metadata.uid and created.metadata.resource_version)
check("creationTimestamp parses", created.metadata.creation_timestamp is not None)
got = core.read_namespaced_config_map("settings", NS)
check("read", got.data == {"mode": "fast"})
got.data["mode"] = "slow"
replaced = core.replace_namespaced_config_map("settings", NS, got)
check("replace", replaced.data["mode"] == "slow")
check("replace moves the resourceVersion", replaced.metadata.resource_version != got.metadata.resource_version)
stale = got
stale.data["mode"] = "stale"
e = expect_status("replace with a stale resourceVersion: 409", 409, core.replace_namespaced_config_map, "settings", NS, stale)
check("409 reason is Conflict", e is not None and '"reason":"Conflict"' in e.body.replace(" ", ""))
patched = core.patch_namespaced_config_map("settings", NS, {"data": {"extra": "1"}})
check("patch (strategic merge)", patched.data == {"mode": "slow", "extra": "1"})
expect_status("create twice: 409", 409, core.create_namespaced_config_map, NS, cm)
expect_status("read a missing object: 404", 404, core.read_namespaced_config_map, "nope", NS)

core.create_namespaced_config_map(
    NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="other", labels={"app": "other"}), data={})
)
lst = core.list_namespaced_config_map(NS, label_selector="app=py")
check("list with a label selector", [i.metadata.name for i in lst.items] == ["settings"])
lst = core.list_namespaced_config_map(NS, label_selector="app in (py,other)")
check("list with a set-based selector", sorted(i.metadata.name for i in lst.items) == ["other", "settings"])
lst = core.list_namespaced_config_map(NS, field_selector="metadata.name=other")
check("list with a field selector", [i.metadata.name for i in lst.items] == ["other"])
page = core.list_namespaced_config_map(NS, limit=1)
check("list with limit: one item and a continue token", len(page.items) == 1 and page.metadata._continue)
rest = core.list_namespaced_config_map(NS, limit=1, _continue=page.metadata._continue)
check("the continue token gives the rest", len(rest.items) == 1 and rest.items[0].metadata.name != page.items[0].metadata.name)
check("lists carry a resourceVersion", bool(lst.metadata.resource_version))

# A Deployment, typed.
dep = client.V1Deployment(
    metadata=client.V1ObjectMeta(name="web"),
    spec=client.V1DeploymentSpec(
        replicas=2,
        selector=client.V1LabelSelector(match_labels={"app": "web"}),
        template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels={"app": "web"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="nginx")]),
        ),
    ),
)
d = apps.create_namespaced_deployment(NS, dep)
check("create a deployment", d.metadata.generation == 1 and d.spec.replicas == 2)
s = apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 4}})
check("scale through the scale subresource", s.spec.replicas == 4)
check("the deployment has the new replicas", apps.read_namespaced_deployment("web", NS).spec.replicas == 4)

# A pod: delete_namespaced_pod answers with the pod.
pod = client.V1Pod(
    metadata=client.V1ObjectMeta(name="p1"),
    spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]),
)
p = core.create_namespaced_pod(NS, pod)
check("create a pod: Pending", p.status.phase == "Pending")
deleted = core.delete_namespaced_pod("p1", NS)
check("delete_namespaced_pod returns the pod", isinstance(deleted, client.V1Pod) and deleted.metadata.name == "p1")

# Watch, and resume from the last event seen.
rv = core.list_namespaced_config_map(NS).metadata.resource_version
core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="w1")))
core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="w2")))
w = watch.Watch()
seen = []
last_rv = rv
for ev in w.stream(core.list_namespaced_config_map, NS, resource_version=rv, timeout_seconds=10):
    seen.append((ev["type"], ev["object"].metadata.name))
    last_rv = ev["object"].metadata.resource_version
    if len(seen) == 2:
        w.stop()
check("watch from a resourceVersion sees later changes in order", seen == [("ADDED", "w1"), ("ADDED", "w2")], seen)
core.delete_namespaced_config_map("w1", NS)
seen = []
for ev in w.stream(core.list_namespaced_config_map, NS, resource_version=last_rv, timeout_seconds=10):
    seen.append((ev["type"], ev["object"].metadata.name))
    w.stop()
check("watch resumed from the last event sees only what came after", seen == [("DELETED", "w1")], seen)

# 410: push an old resourceVersion out of the watch cache's window (the server runs with
# a window of WINDOW events), then watch from it.
old_rv = core.read_namespaced_config_map("settings", NS).metadata.resource_version
for i in range(WINDOW + 5):
    core.patch_namespaced_config_map("settings", NS, {"data": {"n": str(i)}})
try:
    for ev in w.stream(core.list_namespaced_config_map, NS, resource_version=old_rv, timeout_seconds=10):
        check("a watch from a resourceVersion older than the window gets no events", False, ev)
    check("a watch from a resourceVersion older than the window ends in an error", False, "stream ended quietly")
except ApiException as e:
    check("a watch from a resourceVersion older than the window: ApiException 410", e.status == 410, e)
relist = core.list_namespaced_config_map(NS)
check("list again after 410", any(i.metadata.name == "settings" for i in relist.items))

# Deleting a namespace marks it Terminating; the namespace controller (the server runs the
# controller-manager) empties it and then it goes.
# A finalizer of ours holds the namespace in Terminating until it is removed below.
core.create_namespaced_config_map(
    NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="hold", finalizers=["example.com/hold"]))
)
# The client's API description types the answer as a Status, so it hands back the body
# (the namespace, as upstream answers) undecoded.
terminating = core.delete_namespace(NS)
check(
    "delete_namespace answers with the namespace, Terminating",
    isinstance(terminating, dict)
    and terminating.get("kind") == "Namespace"
    and terminating.get("status", {}).get("phase") == "Terminating"
    and terminating.get("metadata", {}).get("deletionTimestamp"),
    terminating,
)
e = expect_status("create in a terminating namespace: 403", 403, core.create_namespaced_config_map, NS,
                  client.V1ConfigMap(metadata=client.V1ObjectMeta(name="late")))
check("403 reason is Forbidden", e is not None and '"reason":"Forbidden"' in e.body.replace(" ", ""), e and e.body)
core.patch_namespaced_config_map("hold", NS, {"metadata": {"finalizers": None}})
deadline = time.monotonic() + 60
while True:
    try:
        core.read_namespace(NS)
    except ApiException as e:
        check("the namespace is gone", e.status == 404, f"status {e.status}: {e.body}")
        break
    check("the namespace goes within 60 s", time.monotonic() < deadline)
    time.sleep(0.1)
print(f"python_client.py: all {checks} checks passed")
