//! Secure by default (issue 10): without `--insecure`, `capstan store --apiserver-listen`
//! and `capstan up` make a cluster CA on first start, serve the API over TLS with client
//! certificates and RBAC, run their own components with certificates of their own
//! identities, and write a kubeconfig (mode 0600) whose client certificate is the admin's.
//!
//! - Every kubectl this machine has drives the cluster with that kubeconfig; a pod runs
//!   on the in-process node (its agent authenticated as `system:node:n1`).
//! - Without credentials: 401. A user the CA issued without bindings: 403, on REST and on
//!   the mesh gRPC API alike (the mesh without a certificate: UNAUTHENTICATED).
//! - Every key and certificate file is 0600, the PKI directory 0700.
//! - The default roles view, edit and admin, each bound in a namespace to a user of the
//!   CA: what each may do, asked with `kubectl auth can-i` and done with kubectl.
//! - Node restriction, with kubectl as two nodes: a node reads the secret its pod uses,
//!   and no other; lists no secrets; changes no other node; deletes no other node's pod.
//! - A restart serves a new certificate from the same CA, and nothing is lost.
//! - ServiceAccount tokens from the TokenRequest API (`kubectl create token` too) are
//!   accepted and authorized as their account; an altered one gets 401.
//! - The node agent's port is TLS too: `kubectl logs` reads a pod's log through the API
//!   server, which asks the agent with its kubelet client certificate; asked directly,
//!   the agent answers 401 without a client certificate and 403 to a user of the CA not
//!   in `system:masters` (the kubelet's texts), and its certificate is the CA's for the
//!   node's address. An agent of a TLS cluster without a certificate refuses to start
//!   unless told --insecure.
//! - The etcd API is TLS too: etcdctl with the admin's certificate reads and writes,
//!   without one it is refused; `capstan snapshot save` and `capstan apiserver
//!   --etcd-servers https://` use it with etcdctl's and upstream's flags.
//! - Plain text only with --insecure: http:// peer URLs, or `capstan apiserver` without a
//!   certificate, refuse to start without it.
//! - `capstan up` (3 masters, 1 node as separate processes): the members speak mutual
//!   TLS, the node's agent and proxy reach the masters with their own kubeconfigs, and
//!   `kubectl logs` reads a pod's log from the agent's process over TLS;
//!   `capstan status` reads the etcd API and the Kubernetes API with the directory's
//!   certificates.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{kubectl, Reaper, Server, SECURE};

const DEADLINE: Duration = Duration::from_secs(90);

/// `kubectl run talker`: a pod that prints `line` and sleeps.
fn run_talker(k: &Path, kc: &Path, line: &str) {
    let script = format!("echo {line}; exec sleep 3600");
    let args = [
        "run",
        "talker",
        "--image=busybox",
        "--restart=Never",
        "--command",
        "--",
        "sh",
        "-c",
        &script,
    ];
    let made = kubectl(k, kc, &args);
    assert!(made.status.success(), "{}", text(&made));
}

fn text(o: &Output) -> String {
    common::output_text(o)
}

/// Runs kubectl until it succeeds and `ok` holds for its stdout, at most DEADLINE.
fn kubectl_until(bin: &Path, kc: &Path, args: &[&str], what: &str, ok: impl Fn(&str) -> bool) {
    common::output_until(
        what,
        DEADLINE,
        || kubectl(bin, kc, args),
        |o| o.status.success() && ok(&String::from_utf8_lossy(&o.stdout)),
    );
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Every file in `dir` is 0600 and `dir` itself 0700.
fn assert_private(dir: &Path) {
    assert_eq!(mode(dir), 0o700, "{}", dir.display());
    for entry in std::fs::read_dir(dir).expect("read the PKI directory") {
        let path = entry.expect("entry").path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
}

/// The kubeconfig `kc` with its user's certificate and key replaced by `user`'s (files).
fn with_user(kc: &Path, out: &Path, user: (&str, &str)) -> PathBuf {
    use base64::Engine;
    let text = std::fs::read_to_string(kc).expect("kubeconfig");
    let b64 = |p: &str| base64::engine::general_purpose::STANDARD.encode(std::fs::read(p).expect("PEM"));
    let creds = format!(
        "\n    client-certificate-data: {}\n    client-key-data: {}\n",
        b64(user.0),
        b64(user.1)
    );
    // The last "  user:" is the users entry (contexts name theirs as "    user: capstan").
    let idx = text.rfind("\n  user:").expect("the users entry") + 1;
    let written = format!("{}  user:{creds}", &text[..idx]);
    std::fs::write(out, written).expect("write kubeconfig");
    out.to_path_buf()
}

/// `capstan certs --user USER [--group G]` in `pki`, and a copy of the kubeconfig `kc`
/// presenting that certificate (in `dir`).
fn issue(pki: &Path, kc: &Path, dir: &Path, user: &str, group: Option<&str>) -> PathBuf {
    let mut certs = Command::new(env!("CARGO_BIN_EXE_capstan"));
    certs.args(["certs", "--dir"]).arg(pki).args(["--user", user]);
    if let Some(g) = group {
        certs.args(["--group", g]);
    }
    let out = certs.output().expect("capstan certs");
    assert!(out.status.success(), "{}", text(&out));
    let (crt, key) = (pki.join(format!("{user}.crt")), pki.join(format!("{user}.key")));
    with_user(
        kc,
        &dir.join(format!("{}.kubeconfig", user.replace(':', "-"))),
        (crt.to_str().expect("utf-8"), key.to_str().expect("utf-8")),
    )
}

/// The API server's certificate (DER), verified against the CA `ca_pem`.
fn served_certificate(addr: std::net::SocketAddr, ca_pem: &[u8]) -> Vec<u8> {
    tls_exchange(addr, ca_pem, None, None).0
}

/// Over TLS, presenting `client` (certificate and key files) if given: the server's
/// certificate, verified against the CA `ca_pem` for the address, and the answer to
/// `request` when given.
fn tls_exchange(
    addr: std::net::SocketAddr,
    ca_pem: &[u8],
    client: Option<(&Path, &Path)>,
    request: Option<&str>,
) -> (Vec<u8>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(c.expect("a CA certificate")).expect("add the CA");
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((crt, key)) => {
            let chain = rustls::pki_types::CertificateDer::pem_file_iter(crt)
                .expect("the client certificate")
                .collect::<Result<Vec<_>, _>>()
                .expect("the client certificate");
            let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).expect("the client key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("the client certificate and key")
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .expect("a handshake the CA verifies");
        let cert = tls.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec();
        let mut answer = String::new();
        if let Some(r) = request {
            tls.write_all(r.as_bytes()).await.expect("send");
            let mut buf = Vec::new();
            // The server closes after an HTTP/1.0 answer; a TLS close without notify is fine.
            let _ = tokio::time::timeout(DEADLINE, tls.read_to_end(&mut buf)).await;
            answer = String::from_utf8_lossy(&buf).to_string();
        }
        (cert, answer)
    })
}

/// A mesh `List` of pods with `tls`: the gRPC code it fails with, or Ok.
fn mesh_list_pods(url: &str, tls: &capstan_agents::tls::ClientTls) -> tonic::Code {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut mesh = capstan_agents::node::agent::mesh_client_tls(url, Some(tls)).expect("mesh client");
        let request = capstan_proto::mesh::ListRequest {
            resource: Some(capstan_proto::mesh::ResourceRef {
                group: String::new(),
                version: "v1".into(),
                resource: "pods".into(),
                namespace: "default".into(),
            }),
            ..Default::default()
        };
        match mesh.list(request).await {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        }
    })
}

#[test]
fn the_api_is_tls_with_client_certificates_and_rbac_by_default() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let data = dir.join("data");
    let (_reaper, server, listen, kc) = common::secure_store_with_node(dir);
    let pki = data.join("pki");

    // The kubeconfig: HTTPS, the CA, the admin's certificate; private.
    let config = std::fs::read_to_string(&kc).expect("the kubeconfig");
    assert!(config.contains(&format!("server: https://{listen}")), "{config}");
    assert!(config.contains("certificate-authority-data:"), "{config}");
    assert!(
        config.contains("client-certificate-data:") && config.contains("client-key-data:"),
        "{config}"
    );
    assert_eq!(mode(&kc), 0o600);
    assert_private(&pki);

    for k in common::kubectls_or_fail() {
        kubectl_until(&k, &kc, &["get", "nodes", "--no-headers"], "node n1 Ready", |out| {
            out.lines()
                .any(|l| l.starts_with("n1 ") && l.split_whitespace().nth(1) == Some("Ready"))
        });
        let can = kubectl(&k, &kc, &["auth", "can-i", "*", "*"]);
        assert_eq!(String::from_utf8_lossy(&can.stdout).trim(), "yes", "{}", text(&can));
    }
    let k = &common::kubectls_or_fail()[0];
    let made = kubectl(
        k,
        &kc,
        &["create", "deployment", "web", "--image=busybox", "--", "sleep", "3600"],
    );
    assert!(made.status.success(), "{}", text(&made));
    kubectl_until(
        k,
        &kc,
        &[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].status.phase}",
        ],
        "the pod Running on the in-process node",
        |out| out.contains("Running"),
    );
    // kubectl top: the agent's samples of its node and containers, through
    // metrics.k8s.io (a pod's CPU rate needs two samples, one interval apart).
    for k in common::kubectls_or_fail() {
        kubectl_until(&k, &kc, &["top", "node", "--no-headers"], "kubectl top node", |out| {
            out.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.first() == Some(&"n1") && f.get(1).is_some_and(|c| c.ends_with('m')) && l.contains("Mi")
            })
        });
        kubectl_until(
            &k,
            &kc,
            &["top", "pod", "-l", "app=web", "--no-headers"],
            "kubectl top pod",
            |out| out.lines().any(|l| l.starts_with("web-") && l.contains("Mi")),
        );
        // The selector is the server's: a selector no pod matches lists none.
        let none = kubectl(&k, &kc, &["top", "pod", "-l", "app=nothing", "--no-headers"]);
        assert!(
            none.status.success() && !text(&none).contains("web-"),
            "{}",
            text(&none)
        );
    }

    // No credentials: 401, but for the health paths.
    let addr: std::net::SocketAddr = listen.parse().expect("address");
    let ca_pem = std::fs::read(pki.join("ca.crt")).expect("ca.crt");
    let get = |path: &str| {
        tls_exchange(
            addr,
            &ca_pem,
            None,
            Some(&format!("GET {path} HTTP/1.0\r\nHost: capstan\r\n\r\n")),
        )
        .1
    };
    let answer = get("/api/v1/pods");
    assert!(answer.starts_with("HTTP/1.0 401"), "{answer}");
    assert!(answer.contains(r#""reason":"Unauthorized""#), "{answer}");
    let answer = get("/healthz");
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    // A user of the CA without bindings: 403 with upstream's message.
    let alice = issue(&pki, &kc, dir, "alice", None);
    assert_private(&pki);
    let (alice_crt, alice_key) = (pki.join("alice.crt"), pki.join("alice.key"));
    let o = kubectl(k, &alice, &["get", "pods"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("User \"alice\" cannot list resource \"pods\""),
        "{}",
        text(&o)
    );
    // The mesh API decides the same: no certificate, then alice's.
    let url = format!("https://{listen}");
    let no_cert = capstan_agents::tls::ClientTls::from_pem(&ca_pem, None).expect("TLS");
    assert_eq!(mesh_list_pods(&url, &no_cert), tonic::Code::Unauthenticated);
    let alice_tls = capstan_agents::tls::ClientTls::from_pem(
        &ca_pem,
        Some((
            &std::fs::read(&alice_crt).expect("crt"),
            &std::fs::read(&alice_key).expect("key"),
        )),
    )
    .expect("TLS");
    assert_eq!(mesh_list_pods(&url, &alice_tls), tonic::Code::PermissionDenied);

    // The agent's port: `kubectl logs` through the API server (over TLS, with its kubelet
    // client certificate); asked directly, without a certificate 401, as alice 403, as the
    // admin (system:masters) the log and the metrics. Its certificate is verified for the
    // node's address.
    run_talker(k, &kc, "hello over tls");
    kubectl_until(
        k,
        &kc,
        &["logs", "talker"],
        "kubectl logs over the agent's TLS port",
        |out| out.contains("hello over tls"),
    );
    let o = kubectl(k, &kc, &["logs", "talker", "--tail=1"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hello over tls\n", "{}", text(&o));
    let o = kubectl(
        k,
        &kc,
        &[
            "get",
            "node",
            "n1",
            "-o",
            "jsonpath={.status.daemonEndpoints.kubeletEndpoint.Port}",
        ],
    );
    let port: u16 = String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("the agent's port: {e}: {}", text(&o)));
    let agent: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let logs = "GET /containerLogs/default/talker/talker HTTP/1.0\r\nHost: n1\r\n\r\n";
    let answer = tls_exchange(agent, &ca_pem, None, Some(logs)).1;
    assert!(
        answer.starts_with("HTTP/1.0 401") && answer.ends_with("\r\n\r\nUnauthorized"),
        "{answer}"
    );
    let answer = tls_exchange(agent, &ca_pem, Some((&alice_crt, &alice_key)), Some(logs)).1;
    assert!(
        answer.starts_with("HTTP/1.0 403")
            && answer.ends_with("Forbidden (user=alice, verb=get, resource=nodes, subresource=proxy)"),
        "{answer}"
    );
    let (admin_crt, admin_key) = (pki.join("admin.crt"), pki.join("admin.key"));
    let answer = tls_exchange(agent, &ca_pem, Some((&admin_crt, &admin_key)), Some(logs)).1;
    assert!(
        answer.starts_with("HTTP/1.0 200") && answer.contains("hello over tls"),
        "{answer}"
    );
    // Its /metrics, as the kubelet's: the admin reads it, alice is told the kubelet's
    // subresource.
    let metrics = "GET /metrics HTTP/1.0\r\nHost: n1\r\n\r\n";
    let answer = tls_exchange(agent, &ca_pem, Some((&admin_crt, &admin_key)), Some(metrics)).1;
    assert!(
        answer.starts_with("HTTP/1.0 200") && answer.contains("kubelet_running_pods"),
        "{answer}"
    );
    let answer = tls_exchange(agent, &ca_pem, Some((&alice_crt, &alice_key)), Some(metrics)).1;
    assert!(
        answer.ends_with("Forbidden (user=alice, verb=get, resource=nodes, subresource=metrics)"),
        "{answer}"
    );

    // Node restriction, through kubectl as two nodes: a pod bound to n1 uses a secret;
    // n1 (the in-process agent read it to start the pod) may get it, n2 may not; a node
    // lists no secrets, changes no other node and deletes no other node's pods.
    let s = kubectl(k, &kc, &["create", "secret", "generic", "s1", "--from-literal=k=v"]);
    assert!(s.status.success(), "{}", text(&s));
    let manifest = dir.join("uses-secret.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: uses-secret}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    command: [sleep, \"3600\"]\n    envFrom: [{secretRef: {name: s1}}]\n",
    )
    .expect("write the manifest");
    let made = kubectl(k, &kc, &["create", "-f", manifest.to_str().expect("utf-8")]);
    assert!(made.status.success(), "{}", text(&made));
    kubectl_until(
        k,
        &kc,
        &["get", "pod", "uses-secret", "-o", "jsonpath={.status.phase}"],
        "the pod with the secret Running (its agent read the secret as system:node:n1)",
        |out| out == "Running",
    );
    let node_kubeconfig = |name: &str| issue(&pki, &kc, dir, &format!("system:node:{name}"), Some("system:nodes"));
    let (n1, n2) = (node_kubeconfig("n1"), node_kubeconfig("n2"));
    let ok = |kc: &Path, args: &[&str]| {
        let o = kubectl(k, kc, args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
    };
    let refused = |kc: &Path, args: &[&str], why: &str| {
        let o = kubectl(k, kc, args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains("Forbidden") && err.contains(why),
            "{args:?}: {}",
            text(&o)
        );
    };
    ok(&n1, &["get", "secret", "s1"]);
    refused(
        &n2,
        &["get", "secret", "s1"],
        "no relationship found between node 'n2' and this object",
    );
    refused(&n1, &["get", "secrets"], "cannot list resource \"secrets\"");
    ok(&n2, &["get", "pods"]);
    ok(&n1, &["label", "node", "n1", "checked=yes"]);
    refused(
        &n2,
        &["label", "node", "n1", "checked=no", "--overwrite"],
        "is not allowed to modify node \"n1\"",
    );
    refused(
        &n2,
        &["delete", "pod", "uses-secret"],
        "can only modify pods bound to it",
    );
    // ServiceAccount tokens in pods. The root CA is published in the namespace; a pod
    // gets a token volume from the admission and reads its token, CA and namespace where
    // in-cluster clients look, and reaches the API over TLS as its account (403: it
    // authenticated, and the default account may not list pods).
    kubectl_until(
        k,
        &kc,
        &[
            "get",
            "configmap",
            "kube-root-ca.crt",
            "-o",
            r"jsonpath={.data.ca\.crt}",
        ],
        "the root CA published in default",
        |out| out.trim() == String::from_utf8_lossy(&ca_pem).trim(),
    );
    let script = format!(
        "import ssl, urllib.request, urllib.error\n\
         d = '/var/run/secrets/kubernetes.io/serviceaccount/'\n\
         ns = open(d + 'namespace').read()\n\
         ctx = ssl.create_default_context(cafile=d + 'ca.crt')\n\
         req = urllib.request.Request('https://{listen}/api/v1/namespaces/' + ns + '/pods',\n\
             headers={{'Authorization': 'Bearer ' + open(d + 'token').read()}})\n\
         try:\n    urllib.request.urlopen(req, context=ctx); print('allowed')\n\
         except urllib.error.HTTPError as e:\n    print('answer', e.code, e.read().decode())\n"
    );
    let manifest = dir.join("in-cluster.yaml");
    let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "in-cluster"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "python",
            "command": ["python3", "-c", script]}]}});
    std::fs::write(&manifest, pod.to_string()).expect("write the manifest");
    let made = kubectl(k, &kc, &["create", "-f", manifest.to_str().expect("utf-8")]);
    assert!(made.status.success(), "{}", text(&made));
    let volumes = kubectl(
        k,
        &kc,
        &["get", "pod", "in-cluster", "-o", "jsonpath={.spec.volumes[*].name}"],
    );
    assert!(text(&volumes).contains("kube-api-access-"), "{}", text(&volumes));
    kubectl_until(
        k,
        &kc,
        &["get", "pod", "in-cluster", "-o", "jsonpath={.status.phase}"],
        "the in-cluster pod done",
        |out| out == "Succeeded" || out == "Failed",
    );
    let logs = kubectl(k, &kc, &["logs", "in-cluster"]);
    let said = String::from_utf8_lossy(&logs.stdout);
    assert!(
        said.contains("answer 403")
            && said.contains(r#"User \"system:serviceaccount:default:default\" cannot list resource \"pods\""#),
        "{}",
        text(&logs)
    );

    // The same token from outside the pod: good while the pod exists, refused (401)
    // once it is deleted, before it expires.
    let uid = kubectl(k, &kc, &["get", "pod", "in-cluster", "-o", "jsonpath={.metadata.uid}"]);
    let volumes_dir = data
        .join("node")
        .join("pods")
        .join(String::from_utf8_lossy(&uid.stdout).trim())
        .join("volumes");
    let token_path = std::fs::read_dir(&volumes_dir)
        .expect("the pod's volumes")
        .flatten()
        .map(|e| e.path().join("token"))
        .find(|p| p.exists())
        .expect("a token file in the pod's volumes");
    let token = std::fs::read_to_string(&token_path).expect("the token");
    let with_token = |token: &str| {
        tls_exchange(
            addr,
            &ca_pem,
            None,
            Some(&format!(
                "GET /api/v1/namespaces/default/pods HTTP/1.0\r\nHost: capstan\r\nAuthorization: Bearer {}\r\n\r\n",
                token.trim()
            )),
        )
        .1
    };
    // Revocation shows once the API's watch cache has seen the delete: waited for.
    let refused_soon = |token: &str, what: &str| {
        let until = Instant::now() + DEADLINE;
        loop {
            let answer = with_token(token);
            if answer.starts_with("HTTP/1.0 401") {
                return;
            }
            assert!(Instant::now() < until, "{what}: {answer}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let answer = with_token(&token);
    assert!(answer.starts_with("HTTP/1.0 403"), "{answer}");
    let deleted = kubectl(k, &kc, &["delete", "pod", "in-cluster", "--wait=true"]);
    assert!(deleted.status.success(), "{}", text(&deleted));
    refused_soon(&token, "the deleted pod's token");

    // A token of an account (the TokenRequest API, as `kubectl create token` asks for
    // it) dies with the account.
    ok(&kc, &["create", "serviceaccount", "builder"]);
    let ask = dir.join("builder-token.json");
    std::fs::write(
        &ask,
        r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{}}"#,
    )
    .expect("write the request");
    let made = kubectl(
        k,
        &kc,
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/default/serviceaccounts/builder/token",
            "-f",
            ask.to_str().expect("utf-8"),
        ],
    );
    let answer: serde_json::Value = serde_json::from_slice(&made.stdout).unwrap_or_default();
    let token = answer["status"]["token"].as_str().unwrap_or_default().to_owned();
    assert!(!token.is_empty(), "{}", text(&made));
    let answer = with_token(&token);
    assert!(
        answer.starts_with("HTTP/1.0 403") && answer.contains("system:serviceaccount:default:builder"),
        "{answer}"
    );
    ok(&kc, &["delete", "serviceaccount", "builder"]);
    refused_soon(&token, "the deleted account's token");

    // A node agent gets tokens only for its own pods, bound to them: n2 cannot ask for
    // one bound to uses-secret (on n1); n1 cannot ask for an unbound one.
    let pod_uid = kubectl(k, &kc, &["get", "pod", "uses-secret", "-o", "jsonpath={.metadata.uid}"]);
    let request = |node_kc: &Path, bound: bool| {
        let body = if bound {
            serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"audiences": [], "boundObjectRef": {"kind": "Pod", "apiVersion": "v1",
                    "name": "uses-secret", "uid": String::from_utf8_lossy(&pod_uid.stdout).trim()}}})
        } else {
            serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"audiences": []}})
        };
        let file = dir.join("token-request.json");
        std::fs::write(&file, body.to_string()).expect("write the request");
        kubectl(
            k,
            node_kc,
            &[
                "create",
                "--raw",
                "/api/v1/namespaces/default/serviceaccounts/default/token",
                "-f",
                file.to_str().expect("utf-8"),
            ],
        )
    };
    let o = request(&n1, true);
    assert!(o.status.success() && text(&o).contains("\"token\""), "{}", text(&o));
    let o = request(&n2, true);
    assert!(!o.status.success() && text(&o).contains("Forbidden"), "{}", text(&o));
    let o = request(&n1, false);
    assert!(!o.status.success() && text(&o).contains("Forbidden"), "{}", text(&o));
    // And creates only its own Node.
    let node2 = dir.join("node-n2.json");
    std::fs::write(&node2, r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"n2"}}"#).expect("write");
    refused(
        &n1,
        &["create", "-f", node2.to_str().expect("utf-8")],
        r#"node "n1" is not allowed to modify node "n2""#,
    );

    ok(&n1, &["delete", "pod", "uses-secret", "--wait=false"]);

    // The default roles, each bound in one namespace to a user of the CA, through kubectl
    // as that user.
    ok(&kc, &["create", "namespace", "team"]);
    let can = |kc: &Path, args: &[&str]| -> bool {
        let o = kubectl(k, kc, &[&["auth", "can-i"], args, &["-n", "team"]].concat());
        match String::from_utf8_lossy(&o.stdout).trim() {
            "yes" => true,
            "no" => false,
            _ => panic!("can-i {args:?}: {}", text(&o)),
        }
    };
    for (user, role) in [("carol", "view"), ("dave", "edit"), ("erin", "admin")] {
        ok(
            &kc,
            &[
                "create",
                "rolebinding",
                &format!("{user}-{role}"),
                "--clusterrole",
                role,
                "--user",
                user,
                "-n",
                "team",
            ],
        );
        let ukc = issue(&pki, &kc, dir, user, None);
        kubectl_until(
            k,
            &ukc,
            &["auth", "can-i", "get", "pods", "-n", "team"],
            "the binding in effect",
            |o| o.trim() == "yes",
        );
        let expect = |args: &[&str], want: bool| assert_eq!(can(&ukc, args), want, "{user} ({role}): can-i {args:?}");
        expect(&["get", "pods"], true);
        expect(&["list", "deployments.apps"], true);
        expect(&["create", "deployments.apps"], role != "view");
        expect(&["get", "secrets"], role != "view");
        expect(&["create", "rolebindings.rbac.authorization.k8s.io"], role == "admin");
        expect(&["delete", "namespaces"], false);
        let o = kubectl(k, &ukc, &["get", "pods", "-n", "default"]);
        assert!(
            !o.status.success(),
            "{user}: the binding holds in team only: {}",
            text(&o)
        );
        let o = kubectl(k, &ukc, &["create", "configmap", &format!("by-{user}"), "-n", "team"]);
        assert_eq!(
            o.status.success(),
            role != "view",
            "{user} ({role}) creates a config map: {}",
            text(&o)
        );
    }

    // ServiceAccount tokens: issued through the TokenRequest API, accepted as bearer
    // tokens, authorized as the account; an altered one is refused.
    let request = dir.join("token-request.json");
    std::fs::write(
        &request,
        r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"expirationSeconds":600}}"#,
    )
    .expect("write the request");
    let token_path = "/api/v1/namespaces/team/serviceaccounts/default/token";
    common::output_until(
        "a token for team's default ServiceAccount",
        DEADLINE,
        || {
            kubectl(
                k,
                &kc,
                &["create", "--raw", token_path, "-f", request.to_str().expect("utf-8")],
            )
        },
        |o| {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
            v["status"]["token"].as_str().is_some_and(|t| !t.is_empty())
        },
    );
    let o = kubectl(
        k,
        &kc,
        &["create", "--raw", token_path, "-f", request.to_str().expect("utf-8")],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("a TokenRequest");
    let token = v["status"]["token"].as_str().expect("a token").to_owned();
    let ca_file = pki.join("ca.crt");
    let server_url = format!("https://{listen}");
    let as_token = |token: &str, args: &[&str]| {
        let flags = [
            "--server",
            &server_url,
            "--certificate-authority",
            ca_file.to_str().expect("utf-8"),
            "--token",
            token,
        ];
        kubectl(k, Path::new("/dev/null"), &[&flags[..], args].concat())
    };
    let o = as_token(&token, &["get", "pods", "-n", "team"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("User \"system:serviceaccount:team:default\" cannot list resource \"pods\""),
        "{}",
        text(&o)
    );
    ok(
        &kc,
        &[
            "create",
            "rolebinding",
            "sa-view",
            "--clusterrole",
            "view",
            "--serviceaccount",
            "team:default",
            "-n",
            "team",
        ],
    );
    common::output_until(
        "the ServiceAccount's binding in effect",
        DEADLINE,
        || as_token(&token, &["get", "pods", "-n", "team"]),
        |o| o.status.success(),
    );
    let altered = format!("{}A", &token[..token.len() - 1]);
    let altered = if altered == token {
        format!("{}B", &token[..token.len() - 1])
    } else {
        altered
    };
    let o = as_token(&altered, &["get", "pods", "-n", "team"]);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("Unauthorized"),
        "{}",
        text(&o)
    );
    // kubectl create token (1.24 and later) sends its TokenRequest as protobuf.
    for newer in common::kubectls_or_fail().iter().skip(1) {
        let o = kubectl(newer, &kc, &["create", "token", "default", "-n", "team"]);
        assert!(o.status.success() && o.stdout.starts_with(b"eyJ"), "{}", text(&o));
    }

    // The etcd API: TLS, and a client certificate required.
    let etcd = format!("https://{}", server.addr);
    let etcdctl = |with_cert: bool, args: &[&str]| {
        let mut c = Command::new("etcdctl");
        c.env("ETCDCTL_API", "3")
            .args(["--endpoints", &etcd, "--dial-timeout", "5s", "--command-timeout", "10s"])
            .arg("--cacert")
            .arg(pki.join("ca.crt"));
        if with_cert {
            c.arg("--cert")
                .arg(pki.join("admin.crt"))
                .arg("--key")
                .arg(pki.join("admin.key"));
        }
        c.args(args).output().expect("run etcdctl")
    };
    let o = etcdctl(true, &["put", "greeting", "hello"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = etcdctl(true, &["get", "greeting", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "hello", "{}", text(&o));
    let o = etcdctl(false, &["get", "greeting"]);
    assert!(!o.status.success(), "without a client certificate: {}", text(&o));

    // The etcd API's other clients with the same certificates: a snapshot, and an API
    // server over it.
    let (ca, crt, key) = (pki.join("ca.crt"), pki.join("admin.crt"), pki.join("admin.key"));
    let tls_flags = |names: [&str; 3]| -> Vec<String> {
        names
            .iter()
            .zip([&ca, &crt, &key])
            .flat_map(|(flag, path)| [flag.to_string(), path.display().to_string()])
            .collect()
    };
    let snap = dir.join("backup.db");
    let o = Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(["snapshot", "save"])
        .arg(&snap)
        .args(["--endpoints", &etcd])
        .args(tls_flags(["--cacert", "--cert", "--key"]))
        .output()
        .expect("capstan snapshot save");
    assert!(o.status.success() && snap.exists(), "{}", text(&o));
    let apiserver_flags = tls_flags(["--etcd-cafile", "--etcd-certfile", "--etcd-keyfile"]);
    let flags: Vec<&str> = apiserver_flags.iter().map(String::as_str).collect();
    let remote = Server::apiserver_with(&etcd, &dir.join("remote.kubeconfig"), &dir.join("remote.log"), &flags);
    let mut stream = std::net::TcpStream::connect(remote.addr).expect("connect");
    std::io::Write::write_all(&mut stream, b"GET /api/v1/namespaces/team HTTP/1.0\r\nHost: x\r\n\r\n").expect("send");
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).expect("read");
    assert!(
        answer.contains(" 200 OK") && answer.contains(r#""name":"team""#),
        "{answer}"
    );
    drop(remote);

    // A restart: a new serving certificate from the same CA; the data and the admin's
    // kubeconfig still good.
    let before = served_certificate(addr, &ca_pem);
    server.kill();
    let _server = common::restart_secure_store_with_node(dir, &listen, &kc);
    let after = served_certificate(addr, &ca_pem);
    assert_ne!(before, after, "the restarted server made a new certificate");
    kubectl_until(
        k,
        &kc,
        &["get", "deployment", "web", "-o", "name"],
        "the deployment kept",
        |out| out.trim() == "deployment.apps/web",
    );
}

/// A store's `https://` metrics URL (the etcd API's certificate) and a separate
/// scheduler's `--secure-port`: only client certificates of the CA in `system:masters`
/// or, for `/metrics`, `system:monitoring`.
#[test]
fn metrics_over_https_need_a_certificate_of_the_right_group() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let port = common::free_port();
    let url = format!("https://127.0.0.1:{port}");
    let (_server, kc) = Server::with_api(dir, &[SECURE, "--listen-metrics-urls", &url]);
    let pki = dir.join("data").join("pki");
    let ca_pem = std::fs::read(pki.join("ca.crt")).expect("the CA");
    let store: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    // A separate scheduler's secure port, with a serving certificate of the cluster CA
    // for 127.0.0.1 (`capstan certs --hosts`), and the kubeconfig's CA for its clients.
    let certs = Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(["certs", "--dir"])
        .arg(&pki)
        .args(["--hosts", "127.0.0.1"])
        .output()
        .expect("capstan certs");
    assert!(certs.status.success(), "{}", text(&certs));
    let scheduler_port = common::free_port();
    let (cert, key) = (pki.join("apiserver.crt"), pki.join("apiserver.key"));
    let (_scheduler, _) = Server::component(
        "scheduler",
        "",
        &[
            "--kubeconfig",
            kc.to_str().expect("utf-8"),
            "--secure-port",
            &scheduler_port.to_string(),
            "--bind-address",
            "127.0.0.1",
            "--tls-cert-file",
            cert.to_str().expect("utf-8"),
            "--tls-private-key-file",
            key.to_str().expect("utf-8"),
        ],
        &dir.join("scheduler.log"),
    );
    let scheduler: std::net::SocketAddr = format!("127.0.0.1:{scheduler_port}").parse().expect("address");
    for (user, group) in [
        ("root", Some("system:masters")),
        ("prometheus", Some("system:monitoring")),
        ("alice", None),
    ] {
        let mut certs = Command::new(env!("CARGO_BIN_EXE_capstan"));
        certs.args(["certs", "--dir"]).arg(&pki).args(["--user", user]);
        if let Some(g) = group {
            certs.args(["--group", g]);
        }
        let out = certs.output().expect("capstan certs");
        assert!(out.status.success(), "{}", text(&out));
    }
    let files = |user: &str| (pki.join(format!("{user}.crt")), pki.join(format!("{user}.key")));
    let get = |addr: std::net::SocketAddr, user: Option<&str>, path: &str| {
        let request = format!("GET {path} HTTP/1.0\r\n\r\n");
        let client = user.map(files);
        tls_exchange(
            addr,
            &ca_pem,
            client.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
            Some(&request),
        )
        .1
    };
    // Root's `/metrics` of `addr`, read until it has `series` (within DEADLINE).
    let metrics_with = |addr: std::net::SocketAddr, series: &str| {
        let until = std::time::Instant::now() + DEADLINE;
        loop {
            let metrics = get(addr, Some("root"), "/metrics");
            assert!(metrics.starts_with("HTTP/1.0 200"), "{addr}: {metrics}");
            if metrics.contains(series) {
                break;
            }
            assert!(
                std::time::Instant::now() < until,
                "{addr}: no {series} within {DEADLINE:?}: {metrics}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    // The member elects itself just after it is ready.
    metrics_with(store, "etcd_server_has_leader 1");
    let health = get(store, Some("root"), "/health");
    assert!(
        health.starts_with("HTTP/1.0 200") && health.contains(r#""health":"true""#),
        "{health}"
    );
    let monitoring = get(store, Some("prometheus"), "/metrics");
    assert!(
        monitoring.starts_with("HTTP/1.0 200") && monitoring.contains("etcd_server_is_leader 1"),
        "{monitoring}"
    );

    // The scheduler's port: the same people, its own metrics (its queue's once it holds
    // its Lease and runs).
    metrics_with(scheduler, "scheduler_pending_pods");
    let health = get(scheduler, Some("root"), "/healthz");
    assert!(health.starts_with("HTTP/1.0 200") && health.ends_with("ok"), "{health}");
    let monitoring = get(scheduler, Some("prometheus"), "/metrics");
    assert!(monitoring.starts_with("HTTP/1.0 200"), "{monitoring}");

    // Refused alike on both: as the API server words a path it refuses.
    for addr in [store, scheduler] {
        let anonymous = get(addr, None, "/metrics");
        assert!(anonymous.starts_with("HTTP/1.0 401"), "{addr}: {anonymous}");
        let alice = get(addr, Some("alice"), "/metrics");
        assert!(
            alice.starts_with("HTTP/1.0 403")
                && alice.ends_with(r#"forbidden: User "alice" cannot get path "/metrics""#),
            "{addr}: {alice}"
        );
    }
    let prometheus = get(scheduler, Some("prometheus"), "/healthz");
    assert!(
        prometheus.starts_with("HTTP/1.0 403")
            && prometheus.ends_with(r#"forbidden: User "prometheus" cannot get path "/healthz""#),
        "{prometheus}"
    );

    // A secure port without a certificate is refused at start, not served some other way.
    let bare = Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(["controller-manager", "--kubeconfig"])
        .arg(&kc)
        .args(["--secure-port", &common::free_port().to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("run capstan controller-manager");
    assert!(
        !bare.status.success()
            && text(&bare).contains("--secure-port needs --tls-cert-file and --tls-private-key-file"),
        "{}",
        text(&bare)
    );
}

#[test]
fn plain_text_needs_insecure() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_capstan"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run capstan")
    };
    let data = tmp.path().join("d").display().to_string();
    let peer = format!("127.0.0.1:{}", common::free_port());
    let o = run(&[
        "store",
        "--data-dir",
        &data,
        "--listen-client",
        "127.0.0.1:0",
        "--listen-peer",
        &peer,
        "--initial-cluster",
        &format!("default=http://{peer}"),
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("are https://"),
        "{}",
        text(&o)
    );
    let o = run(&[
        "apiserver",
        "--listen",
        "127.0.0.1:0",
        "--etcd-servers",
        "http://127.0.0.1:1",
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("needs --insecure"),
        "{}",
        text(&o)
    );
    // An agent of a cluster over TLS: its port too, or --insecure. (It stops before it
    // dials the API, which is not there.)
    let pki = tmp.path().join("pki");
    let o = run(&["certs", "--dir", pki.to_str().expect("utf-8")]);
    assert!(o.status.success(), "{}", text(&o));
    let kc = tmp.path().join("agent.kubeconfig");
    with_user(
        &write_kubeconfig(&kc, "https://127.0.0.1:1", &pki.join("ca.crt")),
        &kc,
        (
            pki.join("admin.crt").to_str().expect("utf-8"),
            pki.join("admin.key").to_str().expect("utf-8"),
        ),
    );
    let root = tmp.path().join("node").display().to_string();
    let agent = |extra: &[&str]| {
        let base = [
            "agent",
            "--kubeconfig",
            kc.to_str().expect("utf-8"),
            "--node-name",
            "x",
            "--port",
            "0",
        ];
        run(&[&base[..], &["--root-dir", &root], extra].concat())
    };
    let o = agent(&[]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("give --tls-cert-file and --tls-private-key-file"),
        "{}",
        text(&o)
    );
    let o = agent(&[
        "--insecure",
        "--tls-cert-file",
        "x.crt",
        "--tls-private-key-file",
        "x.key",
    ]);
    assert!(!o.status.success(), "both: {}", text(&o));
    // What it needs, from the CA: a serving certificate for the node, private.
    let o = run(&[
        "certs",
        "--dir",
        pki.to_str().expect("utf-8"),
        "--node",
        "x",
        "--hosts",
        "10.0.0.21",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    for f in ["x-agent-serving.crt", "x-agent-serving.key"] {
        assert!(pki.join(f).exists(), "{f}: {}", text(&o));
    }
    assert_private(&pki);
}

/// A kubeconfig at `path` for `server` trusting the CA file `ca` (no user yet).
fn write_kubeconfig(path: &Path, server: &str, ca: &Path) -> PathBuf {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(std::fs::read(ca).expect("ca.crt"));
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    \
         certificate-authority-data: {ca}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n\
         current-context: c\nusers:\n- name: u\n  user: {{}}\n"
    );
    std::fs::write(path, text).expect("write the kubeconfig");
    path.to_path_buf()
}

/// `capstan up` as a process group leader's child: stopped (SIGTERM, which stops its
/// processes) when dropped.
struct Up(std::process::Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let until = Instant::now() + DEADLINE;
        while Instant::now() < until {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn capstan_up_is_secure_by_default() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("up");
    let front = format!("127.0.0.1:{}", common::free_port());
    let _reaper = Reaper(dir.join("nodes").join("node1"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args([
            "up",
            "--masters",
            "3",
            "--nodes",
            "1",
            "--loopback-net",
            "23",
            "--api-listen",
            &front,
        ])
        .arg("--data-dir")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn capstan up");
    let stdout = child.stdout.take().expect("stdout");
    let _up = Up(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let until = Instant::now() + Duration::from_secs(180);
    let mut seen = Vec::new();
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with("capstan up ready") => break,
            Ok(line) => seen.push(line),
            Err(e) => panic!("capstan up did not come up ({e}):\n{}", seen.join("\n")),
        }
    }
    let out = seen.join("\n");
    assert!(out.contains("API https://127.23.1.1:6443"), "{out}");
    assert!(out.contains("node1 Ready"), "{out}");
    let pki = dir.join("pki");
    assert_private(&pki);
    for f in [
        "node1-agent.kubeconfig",
        "node1-proxy.kubeconfig",
        "node1-agent-serving.crt",
        "node1-agent-serving.key",
        "ca.crt",
        "ca.key",
    ] {
        assert!(pki.join(f).exists(), "{f}");
    }
    let kc = dir.join("kubeconfig");
    assert_eq!(mode(&kc), 0o600);
    let k = &common::kubectls_or_fail()[0];
    kubectl_until(
        k,
        &kc,
        &["get", "nodes", "--no-headers"],
        "node1 Ready through the front door",
        |o| {
            o.lines()
                .any(|l| l.starts_with("node1 ") && l.split_whitespace().nth(1) == Some("Ready"))
        },
    );
    // A log read by a master's API server from the node's agent process, both over TLS:
    // the agent verifies the API server's kubelet client certificate, the API server the
    // agent's serving certificate (for 127.23.2.1), against the cluster CA.
    run_talker(k, &kc, "hello from node1");
    kubectl_until(k, &kc, &["logs", "talker"], "kubectl logs from node1's agent", |out| {
        out.contains("hello from node1")
    });
    let status = Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(["status", "--data-dir"])
        .arg(&dir)
        .output()
        .expect("capstan status");
    let said = text(&status);
    assert!(status.status.success(), "{said}");
    assert!(said.contains("node1"), "{said}");
    for m in ["m1", "m2", "m3"] {
        assert!(said.contains(m), "{said}");
    }
}
