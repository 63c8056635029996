#!/usr/bin/env bash
# kubectl scenario: drives an unmodified kubectl against Capstan's Kubernetes API and
# checks what it prints, the way it prints it against a real Kubernetes apiserver.
#
#   tests/kubectl.sh KUBECTL KUBECONFIG
#
# The API must be fresh (only the default namespaces), with a controller-manager acting on
# it (`capstan store --apiserver-listen` runs one in its process). Run by `cargo test
# --test kubectl` for each kubectl it finds (Debian's 1.20 under .tools/, the one on PATH).
#
# Every check prints "ok" or "FAIL" with what was expected and what came back; a failed
# check does not stop the run, but the script exits 1 at the end if any check failed.
set -uo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 KUBECTL KUBECONFIG" >&2
  exit 2
fi
KUBECTL_BIN=$1
KC=$2
# shellcheck source=tests/checks.sh
source "$(dirname "$0")/checks.sh"

# A fresh discovery cache: a stale one hides resources.
k() { "$KUBECTL_BIN" --kubeconfig "$KC" --cache-dir "$WORK/cache" --request-timeout 30s "$@"; }

echo "kubectl: $("$KUBECTL_BIN" version --client 2>&1 | head -1)"

out=$(k get ns 2>&1)
check "get ns: the default namespaces" "kube-system" "$out"
check "get ns: table columns" "NAME" "$out"
check "get ns: status column" "Active" "$out"

cat >"$WORK/web.yaml" <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web, tier: front}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: c
        image: nginx:1.25
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
  labels: {app: web}
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 80
EOF

out=$(k create -f "$WORK/web.yaml" 2>&1)
check "create -f: deployment" "deployment.apps/web created" "$out"
check "create -f: service" "service/web created" "$out"
out=$(k create -f "$WORK/web.yaml" 2>&1)
check "create -f again: AlreadyExists" 'Error from server (AlreadyExists)' "$out"
check "create -f again: names the object" 'deployments.apps "web" already exists' "$out"

# The OpenAPI document: kubectl explains fields from it and validates before it sends.
out=$(k explain deployment.spec.replicas 2>&1)
check "explain: the field" "replicas" "$out"
check "explain: its type" "<integer>" "$out"
out=$(k explain pods.spec.containers.image 2>&1)
check "explain: a nested field" "image" "$out"
check "explain: its type" "<string>" "$out"
cat >"$WORK/bad.yaml" <<'EOF'
apiVersion: v1
kind: ConfigMap
metadata:
  name: unvalidated
data:
  a: b
bogus: 1
EOF
out=$(k create -f "$WORK/bad.yaml" 2>&1)
check "create with an unknown field: refused" 'unknown field "bogus"' "$out"
out=$(k get cm unvalidated 2>&1)
check "create with an unknown field: nothing created" "(NotFound)" "$out"
out=$(k create -f "$WORK/bad.yaml" --validate=false 2>&1)
check "create --validate=false: created" "configmap/unvalidated created" "$out"
k delete cm unvalidated >/dev/null 2>&1

# The Deployment controller rolls it out (no node agent runs the pods: none gets ready).
wait_eq "the deployment controller created the pods" "2" \
  k get deploy web -o jsonpath='{.status.updatedReplicas}'
out=$(k get deploy web 2>&1)
check "get deploy: columns" "NAME   READY   UP-TO-DATE   AVAILABLE   AGE" "$out"
check "get deploy: row" "web    0/2     2            0" "$out"
out=$(k get deploy -o wide 2>&1)
check "get -o wide: wide columns" "CONTAINERS   IMAGES       SELECTOR" "$out"
check "get -o wide: values" "nginx:1.25   app=web" "$out"
out=$(k get svc web 2>&1)
check "get svc: columns" "TYPE        CLUSTER-IP" "$out"
check "get svc: port" "80/TCP" "$out"
ip=$(k get svc web -o jsonpath='{.spec.clusterIP}' 2>&1)
check "service has a ClusterIP from the service range" "127.64." "$ip"
out=$(k get svc web -o yaml 2>&1)
check "get -o yaml: kind" "kind: Service" "$out"
check "get -o yaml: resourceVersion" "resourceVersion:" "$out"
check "get -o yaml: uid" "uid:" "$out"
out=$(k get deploy -A 2>&1)
check "get -A: namespace column" "NAMESPACE   NAME" "$out"
check "get -A: row" "default     web" "$out"
out=$(k get deploy --show-labels 2>&1)
check "get --show-labels" "app=web,tier=front" "$out"
out=$(k get deploy,svc -l app=web -o name 2>&1)
check "get -l app=web: deployment" "deployment.apps/web" "$out"
check "get -l app=web: service" "service/web" "$out"
out=$(k get deploy -l 'tier in (back)' 2>&1)
check "get -l 'tier in (back)': nothing" "No resources found in default namespace." "$out"
out=$(k get deploy -l 'app=web,tier!=back' -o name 2>&1)
check "get -l set and inequality selectors" "deployment.apps/web" "$out"
out=$(k get deploy --field-selector metadata.name=web -o name 2>&1)
check "get --field-selector metadata.name" "deployment.apps/web" "$out"
out=$(k get deploy --field-selector metadata.name=other 2>&1)
check "get --field-selector filters" "No resources found" "$out"

# apply: first on an object made by create (kubectl warns and adds its annotation), then
# with a change, then unchanged.
out=$(k apply -f "$WORK/web.yaml" 2>&1)
check "apply over create" "deployment.apps/web configured" "$out"
sed -i 's/nginx:1.25/nginx:1.26/' "$WORK/web.yaml"
out=$(k apply -f "$WORK/web.yaml" 2>&1)
check "apply with a change" "deployment.apps/web configured" "$out"
out=$(k get deploy web -o jsonpath='{.spec.template.spec.containers[0].image}' 2>&1)
check_eq "apply changed the image" "nginx:1.26" "$out"
out=$(k get deploy web -o jsonpath='{.spec.template.spec.containers[0].ports[0].containerPort}' 2>&1)
check_eq "apply kept the merged list element" "80" "$out"
out=$(k get deploy web -o jsonpath='{.metadata.generation}' 2>&1)
check_eq "the spec change bumped the generation" "2" "$out"
out=$(k apply -f "$WORK/web.yaml" 2>&1)
check "apply unchanged" "deployment.apps/web unchanged" "$out"

out=$(k scale deploy web --replicas=5 2>&1)
check "scale" "deployment.apps/web scaled" "$out"
out=$(k get deploy web -o jsonpath='{.spec.replicas}' 2>&1)
check_eq "scale set the replicas" "5" "$out"
out=$(k scale deploy web --current-replicas=3 --replicas=4 2>&1)
check "scale with a stale --current-replicas fails" "error" "$out"

out=$(k describe deploy web 2>&1)
check "describe: name" "Name:" "$out"
check "describe: replicas" "5 desired" "$out"
check "describe: image" "nginx:1.26" "$out"

# Conflict: replace with a stale resourceVersion.
k create configmap cfg --from-literal=a=1 >/dev/null 2>&1
k get cm cfg -o json >"$WORK/cfg.json" 2>&1
k label cm cfg changed=yes >/dev/null 2>&1
out=$(k replace -f "$WORK/cfg.json" 2>&1)
check "replace with a stale resourceVersion: Conflict" "Error from server (Conflict)" "$out"
check "replace: upstream's message" "the object has been modified; please apply your changes to the latest version and try again" "$out"

# kubectl's generators (kubectl 1.32 and later send these objects as protobuf).
out=$(k create deployment gen --image=nginx:1.27 --port=80 2>&1)
check "create deployment (generator)" "deployment.apps/gen created" "$out"
out=$(k get deploy gen -o jsonpath='{.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].ports[0].containerPort} {.spec.selector.matchLabels.app}' 2>&1)
check_eq "the generated deployment" "nginx:1.27 80 gen" "$out"
out=$(k create secret generic gen-secret --from-literal=k=v 2>&1)
check "create secret generic" "secret/gen-secret created" "$out"
out=$(k get secret gen-secret -o jsonpath='{.type} {.data.k}' 2>&1)
check_eq "the generated secret" "Opaque dg==" "$out"
out=$(k create service nodeport gen-np --tcp=80:8080 2>&1)
check "create service nodeport" "service/gen-np created" "$out"
out=$(k get svc gen-np -o jsonpath='{.spec.type} {.spec.ports[0].targetPort}' 2>&1)
check_eq "the generated service" "NodePort 8080" "$out"
out=$(k get svc gen-np -o jsonpath='{.spec.ports[0].nodePort}' 2>&1)
check "the service got a NodePort" "3" "${out:0:1}"
k delete deploy gen >/dev/null 2>&1
k delete svc gen-np >/dev/null 2>&1

out=$(k get deploy nope 2>&1)
check "get a missing object: NotFound" 'Error from server (NotFound): deployments.apps "nope" not found' "$out"

# get -w sees changes as they happen.
k get cm -w --output-watch-events >"$WORK/watch.out" 2>&1 &
BG_PIDS+=($!)
wait_for "get -w: lists first" "$WORK/watch.out" "cfg"
k create configmap watched --from-literal=x=1 >/dev/null 2>&1
wait_for "get -w: sees a create" "$WORK/watch.out" "ADDED      watched"
k label cm watched seen=yes >/dev/null 2>&1
wait_for "get -w: sees an update" "$WORK/watch.out" "MODIFIED   watched"
k delete cm watched >/dev/null 2>&1
wait_for "get -w: sees a delete" "$WORK/watch.out" "DELETED    watched"

# delete, and wait for it.
out=$(k delete deploy web --wait=true 2>&1)
check "delete" 'deployment.apps "web" deleted' "$out"
out=$(k get deploy web 2>&1)
check "deleted: NotFound" "(NotFound)" "$out"
out=$(k delete svc web 2>&1)
check "delete service" 'service "web" deleted' "$out"

# A namespace and what is in it.
k create namespace scratch >/dev/null 2>&1
out=$(k -n scratch create configmap inside --from-literal=a=b 2>&1)
check "create in a new namespace" "configmap/inside created" "$out"
out=$(k create configmap x -n missing-ns --from-literal=a=b 2>&1)
check "create in a missing namespace: NotFound" 'namespaces "missing-ns" not found' "$out"
out=$(k delete namespace scratch 2>&1)
check "delete namespace" 'namespace "scratch" deleted' "$out"
out=$(k -n scratch get cm inside 2>&1)
check "deleting a namespace deletes its objects" "(NotFound)" "$out"

finish kubectl.sh
