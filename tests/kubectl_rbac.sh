#!/usr/bin/env bash
# kubectl and the RBAC kinds (rbac.authorization.k8s.io/v1 Role, RoleBinding, ClusterRole,
# ClusterRoleBinding): kubectl's generators, get (tables, -o wide, -o yaml), apply, patch,
# edit and delete, and upstream's validation messages.
#
#   tests/kubectl_rbac.sh KUBECTL KUBECONFIG RUN
#
# RUN (a short lowercase word) makes the names of this run unique, so that several runs
# (one per kubectl) can share one API: the namespace is rbac-RUN, cluster-scoped objects
# end in -RUN. Run by `cargo test --test kubectl_rbac`.
#
# Every check prints "ok" or "FAIL" with what was expected and what came back; a failed
# check does not stop the run, but the script exits 1 at the end if any check failed.
set -uo pipefail

if [ $# -ne 3 ]; then
  echo "usage: $0 KUBECTL KUBECONFIG RUN" >&2
  exit 2
fi
KUBECTL_BIN=$1
KC=$2
RUN=$3
NS=rbac-$RUN
# shellcheck source=tests/checks.sh
source "$(dirname "$0")/checks.sh"

# A fresh discovery cache: a stale one hides resources.
k() { "$KUBECTL_BIN" --kubeconfig "$KC" --cache-dir "$WORK/cache" --request-timeout 30s "$@"; }

echo "kubectl: $("$KUBECTL_BIN" version --client 2>&1 | head -1)"

out=$(k api-resources --api-group=rbac.authorization.k8s.io 2>&1)
check "api-resources: clusterrolebindings" "clusterrolebindings                rbac.authorization.k8s.io/v1   false        ClusterRoleBinding" "$out"
check "api-resources: clusterroles" "clusterroles                       rbac.authorization.k8s.io/v1   false        ClusterRole" "$out"
check "api-resources: rolebindings" "rolebindings                       rbac.authorization.k8s.io/v1   true         RoleBinding" "$out"
check "api-resources: roles" "roles                              rbac.authorization.k8s.io/v1   true         Role" "$out"
# kubectl 1.20 prints the verbs as [create delete ...], later ones as create,delete,...
out=$(k api-resources --api-group=rbac.authorization.k8s.io -o wide 2>&1 |
  grep -c 'create.delete.deletecollection.get.list.patch.update.watch')
check_eq "api-resources -o wide: every verb of the four" "4" "$out"

k create namespace "$NS" >/dev/null 2>&1

# kubectl's generators (kubectl 1.32 and later send these objects as protobuf).
out=$(k -n "$NS" create role pod-reader --verb=get,list --resource=pods 2>&1)
check "create role" "role.rbac.authorization.k8s.io/pod-reader created" "$out"
out=$(k -n "$NS" get role pod-reader -o jsonpath='{.rules[0].apiGroups} {.rules[0].resources} {.rules[0].verbs}' 2>&1)
check_eq "the generated role's rule" '[""] ["pods"] ["get","list"]' "$out"
out=$(k -n "$NS" create rolebinding read-pods --role=pod-reader --user=alice --serviceaccount=default:sa1 2>&1)
check "create rolebinding" "rolebinding.rbac.authorization.k8s.io/read-pods created" "$out"
out=$(k create clusterrole "node-reader-$RUN" --verb=get,list,watch --resource=nodes 2>&1)
check "create clusterrole" "clusterrole.rbac.authorization.k8s.io/node-reader-$RUN created" "$out"
out=$(k create clusterrolebinding "devs-read-nodes-$RUN" --clusterrole="node-reader-$RUN" --group=devs 2>&1)
check "create clusterrolebinding" "clusterrolebinding.rbac.authorization.k8s.io/devs-read-nodes-$RUN created" "$out"

# Tables: roles have upstream's default columns; bindings name their role and subjects.
out=$(k -n "$NS" get roles 2>&1)
check "get roles: columns" "NAME         CREATED AT" "$out"
check "get roles: row" "pod-reader   20" "$out"
out=$(k -n "$NS" get rolebindings 2>&1)
check "get rolebindings: columns" "NAME        ROLE              AGE" "$out"
check "get rolebindings: row" "read-pods   Role/pod-reader   " "$out"
check_not "get rolebindings: no wide columns" "USERS" "$out"
out=$(k -n "$NS" get rolebinding -o wide 2>&1)
check "get rolebinding -o wide: columns" "USERS   GROUPS   SERVICEACCOUNTS" "$out"
check "get rolebinding -o wide: the role" "Role/pod-reader" "$out"
check "get rolebinding -o wide: the user" "alice" "$out"
check "get rolebinding -o wide: the service account" "default/sa1" "$out"
out=$(k get clusterrolebinding "devs-read-nodes-$RUN" -o wide 2>&1)
check "get clusterrolebinding -o wide: the role" "ClusterRole/node-reader-$RUN" "$out"
check "get clusterrolebinding -o wide: the group" "devs" "$out"
out=$(k get clusterroles 2>&1)
check "get clusterroles" "node-reader-$RUN" "$out"
check "get clusterroles: columns" "CREATED AT" "$out"
out=$(k -n "$NS" get role nope 2>&1)
check "get a missing role: NotFound" "Error from server (NotFound): roles.rbac.authorization.k8s.io \"nope\" not found" "$out"

# -o yaml: the subjects' apiGroup defaulted as upstream does.
out=$(k -n "$NS" get rolebinding read-pods -o yaml 2>&1)
check "get -o yaml: apiVersion" "apiVersion: rbac.authorization.k8s.io/v1" "$out"
check "get -o yaml: roleRef" "roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: pod-reader" "$out"
check "get -o yaml: user subject with its defaulted apiGroup" "- apiGroup: rbac.authorization.k8s.io
  kind: User
  name: alice" "$out"
check "get -o yaml: service account subject" "- kind: ServiceAccount
  name: sa1
  namespace: default" "$out"

# apply: create, unchanged, a change of subjects, then a change of roleRef (refused). The
# subject names its apiGroup: without it every apply patches the defaulted one away again
# ("configured", against a real apiserver too: `subjects` is an atomic list).
cat >"$WORK/rb.yaml" <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: applied
  namespace: $NS
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: node-reader-$RUN
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: User
  name: carol
EOF
out=$(k apply -f "$WORK/rb.yaml" 2>&1)
check "apply: created" "rolebinding.rbac.authorization.k8s.io/applied created" "$out"
out=$(k apply -f "$WORK/rb.yaml" 2>&1)
check "apply again: unchanged" "rolebinding.rbac.authorization.k8s.io/applied unchanged" "$out"
sed -i 's/name: carol/name: dave/' "$WORK/rb.yaml"
out=$(k apply -f "$WORK/rb.yaml" 2>&1)
check "apply with other subjects: configured" "rolebinding.rbac.authorization.k8s.io/applied configured" "$out"
out=$(k -n "$NS" get rolebinding applied -o jsonpath='{.subjects[*].name}' 2>&1)
check_eq "apply replaced the subjects (an atomic list)" "dave" "$out"
sed -i "s/name: node-reader-$RUN/name: other/" "$WORK/rb.yaml"
out=$(k apply -f "$WORK/rb.yaml" 2>&1)
check "apply with another roleRef: refused" "The RoleBinding \"applied\" is invalid: roleRef: Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"ClusterRole\", Name:\"other\"}: cannot change roleRef" "$out"

# patch and edit.
out=$(k -n "$NS" patch role pod-reader -p '{"rules":[{"apiGroups":[""],"resources":["pods","services"],"verbs":["get"]}]}' 2>&1)
check "patch (strategic merge)" "role.rbac.authorization.k8s.io/pod-reader patched" "$out"
out=$(k -n "$NS" get role pod-reader -o jsonpath='{.rules[*].resources} {.rules[*].verbs}' 2>&1)
check_eq "patch replaced the rules (an atomic list)" '["pods","services"] ["get"]' "$out"
out=$(KUBE_EDITOR="sed -i s/name:\ alice/name:\ bob/" k -n "$NS" edit rolebinding read-pods 2>&1)
check "edit" "rolebinding.rbac.authorization.k8s.io/read-pods edited" "$out"
out=$(k -n "$NS" get rolebinding read-pods -o jsonpath='{.subjects[*].name}' 2>&1)
check_eq "edit changed a subject" "bob sa1" "$out"

# Upstream's validation.
cat >"$WORK/bad-rb.yaml" <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: bad
  namespace: $NS
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Foo
  name: pod-reader
subjects:
- kind: User
  name: alice
EOF
out=$(k apply -f "$WORK/bad-rb.yaml" 2>&1)
check "a roleRef of kind Foo: refused" "The RoleBinding \"bad\" is invalid: roleRef.kind: Unsupported value: \"Foo\": supported values: \"Role\", \"ClusterRole\"" "$out"
cat >"$WORK/bad-role.yaml" <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: bad
  namespace: $NS
rules:
- nonResourceURLs: ["/healthz"]
  verbs: ["get"]
EOF
out=$(k create -f "$WORK/bad-role.yaml" 2>&1)
check "a Role with non-resource URLs: refused" "The Role \"bad\" is invalid: rules[0].nonResourceURLs: Invalid value: []string{\"/healthz\"}: namespaced rules cannot apply to non-resource URLs" "$out"
cat >"$WORK/bad-crb.yaml" <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: bad-$RUN
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: node-reader-$RUN
subjects:
- kind: ServiceAccount
  name: sa1
EOF
out=$(k create -f "$WORK/bad-crb.yaml" 2>&1)
check "a ClusterRoleBinding's service account without a namespace: refused" "The ClusterRoleBinding \"bad-$RUN\" is invalid: subjects[0].namespace: Required value" "$out"
out=$(k -n "$NS" get rolebinding bad 2>&1)
check "nothing invalid was stored" "(NotFound)" "$out"

# delete.
out=$(k -n "$NS" delete rolebinding read-pods applied 2>&1)
check "delete rolebindings" "rolebinding.rbac.authorization.k8s.io \"applied\" deleted" "$out"
out=$(k -n "$NS" delete role pod-reader 2>&1)
check "delete role" "role.rbac.authorization.k8s.io \"pod-reader\" deleted" "$out"
out=$(k delete clusterrolebinding "devs-read-nodes-$RUN" 2>&1)
check "delete clusterrolebinding" "clusterrolebinding.rbac.authorization.k8s.io \"devs-read-nodes-$RUN\" deleted" "$out"
out=$(k delete clusterrole "node-reader-$RUN" 2>&1)
check "delete clusterrole" "clusterrole.rbac.authorization.k8s.io \"node-reader-$RUN\" deleted" "$out"
out=$(k -n "$NS" get roles,rolebindings 2>&1)
check "deleted: none left in the namespace" "No resources found in $NS namespace." "$out"

finish kubectl_rbac.sh
