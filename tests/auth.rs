//! Authentication and RBAC authorization of the Kubernetes API, end to end: `capstan
//! apiserver --token-auth-file F --authorization-mode RBAC` over a `capstan store`, driven
//! with raw HTTP (status codes and Status bodies), each user with its own bearer token.
//! And over HTTPS (`capstan certs`, `--tls-cert-file`), the same with every kubectl this
//! machine has (client-go sends credentials only over TLS): with tokens, and with client
//! certificates (`--client-ca-file`).
//!
//! - No token, a wrong token, or another scheme: 401 `Unauthorized`; the health paths
//!   answer without one.
//! - `system:masters` (cluster-admin, a default binding) may do anything.
//! - A user without bindings is refused with upstream's 403 message; a RoleBinding to the
//!   default `view` ClusterRole lets them read pods in that namespace only, and still not
//!   write or read Secrets.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::Server;

/// The longest any condition is waited for.
const DEADLINE: Duration = Duration::from_secs(60);

const ADMIN: &str = "admin-token-1";
const ALICE: &str = "alice-token-2";

/// One HTTP/1.0 request without a body: the status code and the body.
fn request(to: SocketAddr, method: &str, path: &str, authorization: Option<&str>) -> (u16, String) {
    send(to, method, path, authorization, None)
}

/// One HTTP/1.0 request, with a JSON body if given: the status code and the body.
fn send(to: SocketAddr, method: &str, path: &str, authorization: Option<&str>, body: Option<&str>) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let content = body.map_or(String::new(), |b| {
        format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len())
    });
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {to}\r\n{auth}{content}\r\n{}",
        body.unwrap_or("")
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (code, body.to_owned())
}

/// A store, and `capstan apiserver` over it with the two users' tokens, RBAC and `extra`
/// arguments: the API server, the store, the kubeconfig it wrote.
fn start(dir: &Path, extra: &[&str]) -> (Server, Server, PathBuf) {
    let store = Server::start(&dir.join("data"), &dir.join("store.log"));
    let tokens = dir.join("tokens.csv");
    std::fs::write(
        &tokens,
        format!("{ADMIN},admin,uid-admin,\"system:masters\"\n{ALICE},alice,uid-alice\n"),
    )
    .expect("write tokens");
    let kc = dir.join("kubeconfig");
    let mut args = vec![
        "--token-auth-file",
        tokens.to_str().expect("utf-8"),
        "--authorization-mode",
        "RBAC",
    ];
    args.extend_from_slice(extra);
    let api = Server::apiserver_with(&store.url(), &kc, &dir.join("apiserver.log"), &args);
    (api, store, kc)
}

#[test]
fn tokens_authenticate_and_rbac_authorizes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (api, _store, _kc) = start(dir.path(), &[]);
    let to = api.addr;
    let admin = format!("Bearer {ADMIN}");

    // Health paths need nothing; everything else needs a token the server knows.
    assert_eq!(request(to, "GET", "/healthz", None).0, 200);
    assert_eq!(request(to, "GET", "/readyz", None).0, 200);
    for auth in [None, Some("Bearer wrong"), Some("Basic YWRtaW46eA==")] {
        let (code, body) = request(to, "GET", "/api/v1/namespaces", auth);
        assert_eq!(code, 401, "{auth:?}: {body}");
        let status: serde_json::Value = serde_json::from_str(&body).expect("a Status");
        assert_eq!(
            (
                status["kind"].as_str(),
                status["reason"].as_str(),
                status["code"].as_u64()
            ),
            (Some("Status"), Some("Unauthorized"), Some(401)),
            "{body}"
        );
    }
    // cluster-admin through system:masters, once the policy has loaded.
    let until = Instant::now() + DEADLINE;
    loop {
        let (code, body) = request(to, "GET", "/api/v1/namespaces", Some(&admin));
        if code == 200 {
            break;
        }
        assert!(Instant::now() < until, "admin never allowed: {code} {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The default roles are there.
    let (code, body) = request(
        to,
        "GET",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles/cluster-admin",
        Some(&admin),
    );
    assert_eq!(code, 200, "{body}");
    // alice has no binding: upstream's 403.
    let (code, body) = request(
        to,
        "GET",
        "/api/v1/namespaces/default/pods",
        Some(&format!("Bearer {ALICE}")),
    );
    assert_eq!(code, 403, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("a Status");
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(
        status["message"],
        "pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
    );
    assert_eq!(status["details"]["kind"], "pods");
    // An authenticated user may read the discovery paths (system:discovery).
    assert_eq!(request(to, "GET", "/api", Some(&format!("Bearer {ALICE}"))).0, 200);

    // A RoleBinding to the default view ClusterRole, in one namespace only.
    let alice = format!("Bearer {ALICE}");
    for (path, body) in [
        (
            "/api/v1/namespaces",
            r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"team"}}"#,
        ),
        (
            "/api/v1/namespaces/team/configmaps",
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c1"},"data":{"a":"b"}}"#,
        ),
        (
            "/apis/rbac.authorization.k8s.io/v1/namespaces/team/rolebindings",
            r#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding","metadata":{"name":"alice-view"},
                "roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"view"},
                "subjects":[{"kind":"User","name":"alice"}]}"#,
        ),
    ] {
        let (code, answer) = send(to, "POST", path, Some(&admin), Some(body));
        assert_eq!(code, 201, "POST {path}: {answer}");
    }
    let until = Instant::now() + DEADLINE;
    loop {
        let (code, body) = request(to, "GET", "/api/v1/namespaces/team/configmaps/c1", Some(&alice));
        if code == 200 {
            break;
        }
        assert!(Instant::now() < until, "the binding never took effect: {code} {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        request(to, "GET", "/api/v1/namespaces/team/configmaps", Some(&alice)).0,
        200
    );
    assert_eq!(
        request(
            to,
            "GET",
            "/api/v1/namespaces/team/configmaps?watch=true&timeoutSeconds=1",
            Some(&alice)
        )
        .0,
        200,
        "view may watch"
    );
    for (method, path, body, what) in [
        (
            "GET",
            "/api/v1/namespaces/default/configmaps",
            None,
            "another namespace",
        ),
        ("GET", "/api/v1/namespaces/team/secrets", None, "secrets (not in view)"),
        (
            "POST",
            "/api/v1/namespaces/team/configmaps",
            Some(r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c2"}}"#),
            "a write",
        ),
        ("GET", "/api/v1/nodes", None, "a cluster-scoped resource"),
    ] {
        let (code, answer) = send(to, method, path, Some(&alice), body);
        assert_eq!(code, 403, "{what}: {answer}");
    }
    let (_, body) = request(
        to,
        "GET",
        "/api/v1/namespaces/team/configmaps/c9",
        Some(&format!("Bearer {ALICE}")),
    );
    assert!(
        body.contains("\"reason\":\"NotFound\""),
        "view may get, so a missing object is 404: {body}"
    );
    let (code, body) = request(to, "DELETE", "/api/v1/namespaces/team/configmaps/c1", Some(&alice));
    assert_eq!(code, 403);
    let status: serde_json::Value = serde_json::from_str(&body).expect("a Status");
    assert_eq!(
        status["message"],
        "configmaps \"c1\" is forbidden: User \"alice\" cannot delete resource \"configmaps\" in API group \"\" in the namespace \"team\""
    );
    assert_eq!(status["details"]["name"], "c1");
}

fn kubectl(bin: &Path, kubeconfig: &Path, token: &str, args: &[&str]) -> Output {
    kubectl_with(bin, kubeconfig, &[&format!("--token={token}")], args)
}

/// kubectl with `credentials` (flags) before `args`.
fn kubectl_with(bin: &Path, kubeconfig: &Path, credentials: &[&str], args: &[&str]) -> Output {
    Command::new(bin)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(credentials)
        .args(args)
        .output()
        .expect("run kubectl")
}

fn capstan_certs(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_capstan"))
        .arg("certs")
        .args(args)
        .output()
        .expect("run capstan certs");
    assert!(out.status.success(), "capstan certs {args:?}: {}", text(&out));
}

fn text(o: &Output) -> String {
    common::output_text(o)
}

/// Runs kubectl until `ok` holds for its output, at most DEADLINE.
fn kubectl_until(bin: &Path, kc: &Path, token: &str, args: &[&str], what: &str, ok: impl Fn(&Output) -> bool) {
    common::output_until(what, DEADLINE, || kubectl(bin, kc, token, args), ok);
}

/// `capstan certs`, then the API over HTTPS with the kubeconfig it writes (the CA in it):
/// every kubectl sends its token, and RBAC decides as above.
#[test]
fn kubectl_over_https_with_tokens_and_rbac() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = dir.path().join("pki");
    capstan_certs(&[
        "--dir",
        certs.to_str().expect("utf-8"),
        "--hosts",
        "127.0.0.1,localhost",
    ]);
    for (file, mode) in [("ca.key", 0o600), ("apiserver.key", 0o600), ("ca.crt", 0o600)] {
        let m = std::fs::metadata(certs.join(file)).expect(file).permissions().mode() & 0o777;
        assert_eq!(m, mode, "{file}");
    }
    let ca_before = std::fs::read(certs.join("ca.crt")).expect("ca.crt");
    // Issued again: the CA stays.
    capstan_certs(&["--dir", certs.to_str().expect("utf-8")]);
    assert_eq!(std::fs::read(certs.join("ca.crt")).expect("ca.crt"), ca_before);

    let (cert, key) = (certs.join("apiserver.crt"), certs.join("apiserver.key"));
    let tls = [
        "--tls-cert-file",
        cert.to_str().expect("utf-8"),
        "--tls-private-key-file",
        key.to_str().expect("utf-8"),
    ];
    let (_api, _store, kc) = start(dir.path(), &tls);
    let written = std::fs::read_to_string(&kc).expect("kubeconfig");
    assert!(written.contains("server: https://127.0.0.1:"), "{written}");
    assert!(written.contains("certificate-authority-data: "), "{written}");

    for (i, k) in common::kubectls_or_fail().iter().enumerate() {
        let ns = format!("team-{i}");
        kubectl_until(
            k,
            &kc,
            ADMIN,
            &["get", "namespaces"],
            "admin lists namespaces over HTTPS",
            |o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("kube-system"),
        );
        let o = kubectl(k, &kc, ADMIN, &["create", "namespace", &ns]);
        assert!(o.status.success(), "{}", text(&o));
        let o = kubectl(
            k,
            &kc,
            ADMIN,
            &["-n", &ns, "create", "configmap", "c1", "--from-literal=a=b"],
        );
        assert!(o.status.success(), "{}", text(&o));
        let o = kubectl(k, &kc, "nope", &["get", "pods"]);
        assert!(!o.status.success());
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("Unauthorized"),
            "{}",
            text(&o)
        );
        let o = kubectl(k, &kc, ALICE, &["-n", &ns, "get", "configmaps"]);
        assert!(!o.status.success());
        let want = format!(
            "Error from server (Forbidden): configmaps is forbidden: User \"alice\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"{ns}\""
        );
        assert!(String::from_utf8_lossy(&o.stderr).contains(&want), "{}", text(&o));
        let o = kubectl(
            k,
            &kc,
            ADMIN,
            &[
                "-n",
                &ns,
                "create",
                "rolebinding",
                "alice-view",
                "--clusterrole=view",
                "--user=alice",
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
        kubectl_until(
            k,
            &kc,
            ALICE,
            &["-n", &ns, "get", "configmap", "c1", "-o", "name"],
            "alice reads configmaps once bound to view",
            |o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "configmap/c1",
        );
        // kubectl auth can-i asks the server (SelfSubjectAccessReview).
        for (token, args, want) in [
            (
                ALICE,
                vec!["auth", "can-i", "list", "configmaps", "-n", ns.as_str()],
                "yes",
            ),
            (
                ALICE,
                vec!["auth", "can-i", "create", "configmaps", "-n", ns.as_str()],
                "no",
            ),
            (
                ALICE,
                vec!["auth", "can-i", "list", "configmaps", "-n", "default"],
                "no",
            ),
            (ADMIN, vec!["auth", "can-i", "*", "*"], "yes"),
        ] {
            let o = kubectl(k, &kc, token, &args);
            assert_eq!(
                String::from_utf8_lossy(&o.stdout).trim(),
                want,
                "{args:?}: {}",
                text(&o)
            );
            assert_eq!(o.status.success(), want == "yes", "{args:?}: {}", text(&o));
        }
        // kubectl auth whoami (SelfSubjectReview), where this kubectl has it (1.27 on).
        let auth_help = Command::new(k)
            .args(["auth", "--help"])
            .output()
            .expect("kubectl auth --help");
        if String::from_utf8_lossy(&auth_help.stdout).contains("whoami") {
            let o = kubectl(k, &kc, ALICE, &["auth", "whoami", "-o", "json"]);
            assert!(o.status.success(), "{}", text(&o));
            let review: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
            assert_eq!(review["status"]["userInfo"]["username"], "alice", "{}", text(&o));
            assert_eq!(
                review["status"]["userInfo"]["groups"],
                serde_json::json!(["system:authenticated"])
            );
        }
        let o = kubectl(
            k,
            &kc,
            ALICE,
            &["-n", &ns, "create", "configmap", "c2", "--from-literal=a=b"],
        );
        assert!(!o.status.success(), "view may not create: {}", text(&o));
        // kubectl 1.20 prefixes "Error from server (Forbidden): ", 1.32's generator
        // "error: failed to create configmap: ".
        let want = format!(
            "configmaps is forbidden: User \"alice\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"{ns}\""
        );
        assert!(String::from_utf8_lossy(&o.stderr).contains(&want), "{}", text(&o));
    }
}

/// `--client-ca-file`: kubectl authenticates with the certificates `capstan certs` issues
/// (the CN the user, each O a group); a certificate of another CA fails the handshake;
/// tokens still work beside them.
#[test]
fn client_certificates_authenticate_users_and_groups() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = dir.path().join("pki");
    let p = pki.to_str().expect("utf-8");
    capstan_certs(&["--dir", p]);
    capstan_certs(&["--dir", p, "--user", "bob", "--group", "qa"]);
    let other = dir.path().join("other");
    capstan_certs(&["--dir", other.to_str().expect("utf-8")]);
    let file = |d: &Path, f: &str| d.join(f).to_str().expect("utf-8").to_owned();
    let (cert, key, ca) = (
        file(&pki, "apiserver.crt"),
        file(&pki, "apiserver.key"),
        file(&pki, "ca.crt"),
    );
    let args = [
        "--tls-cert-file",
        cert.as_str(),
        "--tls-private-key-file",
        key.as_str(),
        "--client-ca-file",
        ca.as_str(),
    ];
    let (_api, _store, kc) = start(dir.path(), &args);
    let (admin_crt, admin_key) = (file(&pki, "admin.crt"), file(&pki, "admin.key"));
    let admin = [
        "--client-certificate",
        admin_crt.as_str(),
        "--client-key",
        admin_key.as_str(),
    ];
    let (bob_crt, bob_key) = (file(&pki, "bob.crt"), file(&pki, "bob.key"));
    let bob = [
        "--client-certificate",
        bob_crt.as_str(),
        "--client-key",
        bob_key.as_str(),
    ];
    let (x_crt, x_key) = (file(&other, "admin.crt"), file(&other, "admin.key"));
    let stranger = ["--client-certificate", x_crt.as_str(), "--client-key", x_key.as_str()];

    for (i, k) in common::kubectls_or_fail().iter().enumerate() {
        let until = Instant::now() + DEADLINE;
        loop {
            let o = kubectl_with(k, &kc, &admin, &["get", "namespaces"]);
            if o.status.success() && String::from_utf8_lossy(&o.stdout).contains("kube-system") {
                break;
            }
            assert!(Instant::now() < until, "admin's certificate never let in: {}", text(&o));
            std::thread::sleep(Duration::from_millis(200));
        }
        let o = kubectl_with(k, &kc, &bob, &["auth", "can-i", "list", "pods", "-A"]);
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "no", "{}", text(&o));
        let o = kubectl_with(k, &kc, &stranger, &["get", "namespaces"]);
        assert!(!o.status.success(), "another CA's certificate: {}", text(&o));
        // The token still works beside certificates.
        let o = kubectl(k, &kc, ADMIN, &["get", "namespaces", "-o", "name"]);
        assert!(o.status.success(), "{}", text(&o));

        // A binding for bob's group.
        let binding = format!("devs-view-{i}");
        let o = kubectl_with(
            k,
            &kc,
            &admin,
            &[
                "create",
                "clusterrolebinding",
                &binding,
                "--clusterrole=view",
                "--group=qa",
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
        let until = Instant::now() + DEADLINE;
        loop {
            let o = kubectl_with(k, &kc, &bob, &["auth", "can-i", "list", "pods", "-A"]);
            if String::from_utf8_lossy(&o.stdout).trim() == "yes" {
                break;
            }
            assert!(
                Instant::now() < until,
                "bob's group binding never took effect: {}",
                text(&o)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let o = kubectl_with(k, &kc, &bob, &["get", "pods", "-A"]);
        assert!(o.status.success(), "{}", text(&o));
        let o = kubectl_with(k, &kc, &admin, &["delete", "clusterrolebinding", &binding]);
        assert!(o.status.success(), "{}", text(&o));
        let auth_help = Command::new(k)
            .args(["auth", "--help"])
            .output()
            .expect("kubectl auth --help");
        if String::from_utf8_lossy(&auth_help.stdout).contains("whoami") {
            let o = kubectl_with(k, &kc, &bob, &["auth", "whoami", "-o", "json"]);
            assert!(o.status.success(), "{}", text(&o));
            let review: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
            assert_eq!(review["status"]["userInfo"]["username"], "bob");
            assert_eq!(
                review["status"]["userInfo"]["groups"],
                serde_json::json!(["qa", "system:authenticated"])
            );
        }
    }
}
