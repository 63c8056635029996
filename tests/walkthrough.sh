#!/usr/bin/env bash
# The README's walk-through, checked: a Deployment of a small HTTP server, exposed as a
# NodePort Service, reached with curl through its ClusterIP and its NodePort, scaled,
# rolled to a new version, its logs read; its pods find the Service by its DNS name.
#
#   tests/walkthrough.sh KUBECTL KUBECONFIG NODE_IP
#
# Needs the whole single-node cluster (`capstan store --apiserver-listen … --scheduler
# --node-name …`, as `make up` starts it) with a fresh API. Run by `cargo test --test
# walkthrough`. Checks print "ok" or "FAIL"; the script exits 1 at the end if any failed.
set -uo pipefail

if [ $# -ne 3 ]; then
  echo "usage: $0 KUBECTL KUBECONFIG NODE_IP" >&2
  exit 2
fi
KUBECTL_BIN=$1
KC=$2
NODE_IP=$3
# shellcheck source=tests/checks.sh
source "$(dirname "$0")/checks.sh"

k() { "$KUBECTL_BIN" --kubeconfig "$KC" --cache-dir "$WORK/cache" --request-timeout 30s "$@"; }
get() { curl -s --max-time 5 "$@"; }

echo "kubectl: $("$KUBECTL_BIN" version --client 2>&1 | head -1)"

wait_eq "the node is Ready" "True" \
  k get node -o jsonpath='{.items[0].status.conditions[?(@.type=="Ready")].status}'

# A greeting in a ConfigMap, mounted into the containers at /etc/walkthrough.
manifest() { # version replicas
  cat <<YAML
apiVersion: v1
kind: ConfigMap
metadata: {name: greeting}
data: {greeting: hello}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: $2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: python:3
        command: ["sh", "-c"]
        args: ["echo version=\$(VERSION) \$(cat /etc/walkthrough/greeting) > index.html && exec python3 -m http.server 8080 --bind \$(POD_IP)"]
        env:
        - {name: VERSION, value: "$1"}
        - name: POD_IP
          valueFrom: {fieldRef: {fieldPath: status.podIP}}
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /, port: http}
          periodSeconds: 1
        volumeMounts: [{name: greeting, mountPath: /etc/walkthrough, readOnly: true}]
      volumes: [{name: greeting, configMap: {name: greeting}}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
YAML
}

out=$(manifest 1 2 | k apply -f - 2>&1)
check "apply: deployment" "deployment.apps/web created" "$out"
check "apply: service" "service/web created" "$out"
out=$(k rollout status deploy/web --timeout=120s 2>&1)
check "the deployment rolls out" "successfully rolled out" "$out"
out=$(k get pods -l app=web -o wide 2>&1)
check "get pods: Running and ready" "1/1     Running" "$out"
check "get pods: an address from the node's pod CIDR" "127.128." "$out"

ip=$(k get svc web -o jsonpath='{.spec.clusterIP}')
np=$(k get svc web -o jsonpath='{.spec.ports[0].nodePort}')
wait_eq "curl through the ClusterIP" "version=1 hello" get "http://$ip/"
wait_eq "curl through the NodePort" "version=1 hello" get "http://$NODE_IP:$np/"

out=$(k scale deploy/web --replicas=3 2>&1)
check "scale" "deployment.apps/web scaled" "$out"
out=$(k rollout status deploy/web --timeout=120s 2>&1)
check "scaled out" "successfully rolled out" "$out"
wait_eq "three ready endpoints" "3" \
  sh -c "\"$KUBECTL_BIN\" --kubeconfig \"$KC\" get endpoints web -o jsonpath='{.subsets[*].addresses[*].ip}' | wc -w"

out=$(manifest 2 3 | k apply -f - 2>&1)
check "apply version 2" "deployment.apps/web configured" "$out"
out=$(k rollout status deploy/web --timeout=180s 2>&1)
check "version 2 rolls out" "successfully rolled out" "$out"
wait_eq "the Service serves version 2" "version=2 hello" get "http://$ip/"
wait_eq "only version 2 pods are left" "3" \
  sh -c "\"$KUBECTL_BIN\" --kubeconfig \"$KC\" get pods -l app=web -o name | wc -l"

pod=$(k get pods -l app=web -o jsonpath='{.items[0].metadata.name}')
pod_ip=$(k get pod "$pod" -o jsonpath='{.status.podIP}')
get "http://$pod_ip:8080/?from=walkthrough" >/dev/null
wait_eq "logs: the request is in the container's log" "1" \
  sh -c "\"$KUBECTL_BIN\" --kubeconfig \"$KC\" logs $pod | grep -c 'GET /?from=walkthrough'"
out=$(k logs "$pod" -c web --tail=1 2>&1)
check "logs --tail=1 -c web: the last line" "GET /" "$out"
out=$(k logs "$pod" --previous 2>&1)
check "logs --previous: none yet" "previous terminated container \"web\" in pod \"$pod\" not found" "$out"

# logs -f follows a container to its end.
out=$(k run counter --image=busybox --restart=Never --command -- sh -c 'for i in 1 2 3; do echo line-$i; sleep 0.5; done' 2>&1)
check "run a pod that counts" "pod/counter created" "$out"
wait_eq "it starts" "true" sh -c "\"$KUBECTL_BIN\" --kubeconfig \"$KC\" get pod counter -o jsonpath='{.status.containerStatuses[0].started}{.status.containerStatuses[0].state.terminated.reason}' | sed 's/^falseCompleted$/true/'"
out=$(timeout 60 "$KUBECTL_BIN" --kubeconfig "$KC" logs -f counter 2>&1)
check_eq "logs -f: every line, then the end" "$(printf 'line-1\nline-2\nline-3')" "$out"

# A pod resolves the Service by name through the cluster DNS.
out=$(k run dns-check --image=python:3 --restart=Never --command -- \
  python3 -c "import socket; print(socket.gethostbyname('web.default.svc.cluster.local'))" 2>&1)
check "run a pod that resolves the Service" "pod/dns-check created" "$out"
wait_eq "it succeeds" "Succeeded" k get pod dns-check -o jsonpath='{.status.phase}'
out=$(k logs dns-check 2>&1)
check_eq "it resolved the ClusterIP" "$ip" "$out"

out=$(k delete deploy web 2>&1)
check "delete the deployment" 'deployment.apps "web" deleted' "$out"
wait_eq "its pods stop and go" "0" \
  sh -c "\"$KUBECTL_BIN\" --kubeconfig \"$KC\" get pods -l app=web -o name | wc -l"
out=$(get "http://$ip/" 2>&1)
check_not "the Service no longer answers" "version=" "$out"

finish walkthrough
