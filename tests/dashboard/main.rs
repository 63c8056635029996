//! The web dashboard (`/ui/`) in a real browser: headless Chromium (Debian's `chromium`),
//! driven over WebDriver by Debian's `chromedriver`, against a real secure cluster
//! process with a node.
//!
//! The page must sign in with a bearer token, act with that user's permissions (a viewer's
//! scale is refused with upstream's 403 message, an admin's goes through), show a
//! Deployment appear and scale live from watches without reloading (a scale made with
//! kubectl and one made in the page), show its Service's endpoints and its events, stream
//! a pod's log, show the node with its usage and the control plane, and delete the
//! Deployment. Screenshots of the workloads view and the control
//! plane are kept in `target/test-artefacts/` (`dashboard.png`,
//! `dashboard-controlplane.png`; `dashboard-failure.png` when a wait fails).

#[path = "../common/mod.rs"]
mod common;
mod webdriver;

use common::kubectl;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use webdriver::Browser;

const DEADLINE: Duration = Duration::from_secs(90);

fn ok(k: &Path, kc: &Path, args: &[&str]) -> String {
    let o = kubectl(k, kc, args);
    assert!(o.status.success(), "kubectl {args:?}: {}", common::output_text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A token of the ServiceAccount `kube-system/<name>` from the TokenRequest API.
fn token(k: &Path, kc: &Path, dir: &Path, name: &str) -> String {
    let ask = dir.join(format!("{name}-token-request.json"));
    std::fs::write(
        &ask,
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}})
            .to_string(),
    )
    .expect("write the token request");
    let path = format!("/api/v1/namespaces/kube-system/serviceaccounts/{name}/token");
    let answer: Value = serde_json::from_str(&ok(
        k,
        kc,
        &["create", "--raw", &path, "-f", ask.to_str().expect("utf-8")],
    ))
    .expect("a TokenRequest");
    answer["status"]["token"].as_str().expect("a token").to_owned()
}

/// `[data-testid="<id>"]`, with `inner` selected inside it when given.
fn tid(id: &str, inner: &str) -> String {
    let outer = format!("[data-testid=\"{id}\"]");
    if inner.is_empty() {
        outer
    } else {
        format!("{outer} {inner}")
    }
}

/// Signs in on the login form with `token` and waits for the workloads view.
fn sign_in(b: &Browser, token: &str) {
    b.wait_for("#token", DEADLINE);
    b.type_into("#token", token);
    b.click("#login");
    b.click(&tid("tab-workloads", ""));
}

#[test]
fn the_dashboard_shows_the_cluster_live_and_acts_as_its_user() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let (_reaper, _server, listen, kc) = common::secure_store_with_node(dir);
    let k = &common::kubectls_or_fail()[0];
    common::output_until(
        "node n1 Ready",
        DEADLINE,
        || kubectl(k, &kc, &["get", "nodes", "--no-headers"]),
        |o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.starts_with("n1 ") && l.contains(" Ready "))
        },
    );

    // Two users of the page: a viewer and an administrator.
    ok(k, &kc, &["create", "serviceaccount", "viewer", "-n", "kube-system"]);
    ok(k, &kc, &["create", "serviceaccount", "operator", "-n", "kube-system"]);
    ok(
        k,
        &kc,
        &[
            "create",
            "clusterrolebinding",
            "ui-viewer",
            "--clusterrole=view",
            "--serviceaccount=kube-system:viewer",
        ],
    );
    ok(
        k,
        &kc,
        &[
            "create",
            "clusterrolebinding",
            "ui-operator",
            "--clusterrole=cluster-admin",
            "--serviceaccount=kube-system:operator",
        ],
    );
    let viewer = token(k, &kc, dir, "viewer");
    let operator = token(k, &kc, dir, "operator");

    let b = Browser::start(common::free_port(), &dir.join("chromedriver.log"));
    let page = format!("https://{listen}/ui/");
    b.goto(&page);
    // The page's files come without credentials, under a strict policy; the data does
    // not: anonymous, the API answers 401 and the page asks for a token.
    let probe = b.script(
        "const get = p => { const x = new XMLHttpRequest(); x.open('GET', p, false); x.send();
                            return [x.status, x.getResponseHeader('content-security-policy') || '']; };
         return [get('/ui/app.js'), get('/ui/api/controlplane'), get('/api/v1/nodes')];",
        json!([]),
    );
    assert_eq!(probe[0][0], 200, "{probe}");
    assert!(
        probe[0][1]
            .as_str()
            .is_some_and(|csp| csp.starts_with("default-src 'self'")),
        "{probe}"
    );
    assert_eq!(probe[1][0], 401, "{probe}");
    assert_eq!(probe[2][0], 401, "{probe}");
    sign_in(&b, &viewer);

    // A Deployment made elsewhere appears.
    let web = dir.join("web.json");
    std::fs::write(&web, deployment(1).to_string()).expect("write the deployment");
    ok(k, &kc, &["create", "-f", web.to_str().expect("utf-8")]);
    let row = "deployment-default-web";
    let ready = |want: &'static str| {
        let css = tid(row, "[data-field=\"ready\"]");
        b.until(&format!("the deployment shown {want} ready"), DEADLINE, || {
            (b.text(&css).as_deref() == Some(want)).then_some(())
        })
    };
    ready("1/1");

    // The viewer may not scale: the page shows upstream's 403 and nothing changes.
    b.type_into(&tid(row, &tid("scale-input", "")), "2");
    b.click(&tid(row, &tid("scale", "")));
    let refused = b.until("the viewer's scale refused", DEADLINE, || {
        b.text(&tid("action-error", "")).filter(|t| t.contains("cannot"))
    });
    assert!(
        refused
            .contains("User \"system:serviceaccount:kube-system:viewer\" cannot patch resource \"deployments/scale\""),
        "{refused}"
    );
    let replicas = || ok(k, &kc, &["get", "deployment", "web", "-o", "jsonpath={.spec.replicas}"]);
    assert_eq!(replicas(), "1");

    // Sign out, and in as the operator; from here on the page must never reload.
    b.script("sessionStorage.clear();", json!([]));
    b.goto(&page);
    sign_in(&b, &operator);
    let loaded_at = b.script("return window.__capstanLoadedAt;", json!([]));
    assert!(loaded_at.is_number(), "window.__capstanLoadedAt: {loaded_at}");
    ready("1/1");

    // Scaled with kubectl: the page follows.
    ok(k, &kc, &["scale", "deployment", "web", "--replicas=2"]);
    ready("2/2");
    assert_eq!(b.text(&tid(row, "[data-field=\"replicas\"]")).as_deref(), Some("2"));

    // Scaled in the page: the API has it, and the page shows it once the watch says so.
    b.type_into(&tid(row, &tid("scale-input", "")), "3");
    b.click(&tid(row, &tid("scale", "")));
    ready("3/3");
    assert_eq!(replicas(), "3");

    // The Service in front of it, with the three pods' endpoints; the events that got
    // it there.
    ok(
        k,
        &kc,
        &["expose", "deployment", "web", "--port=80", "--target-port=8080"],
    );
    b.click(&tid("tab-services", ""));
    b.until("the Service's three endpoints", DEADLINE, || {
        let endpoints = b.text(&tid("service-default-web", "[data-field=\"endpoints\"]"))?;
        (endpoints.matches(":8080").count() == 3).then_some(())
    });
    b.click(&tid("tab-events", ""));
    b.until("the Deployment's scaling event", DEADLINE, || {
        b.script(
            "return [...document.querySelectorAll('tr')].some(r => r.textContent.includes('ScalingReplicaSet'));",
            json!([]),
        )
        .as_bool()
        .filter(|seen| *seen)
    });
    b.click(&tid("tab-workloads", ""));

    // A pod's log, streamed.
    let pod = b.until("a Running web pod", DEADLINE, || {
        b.script(
            "for (const r of document.querySelectorAll('tr[data-testid^=\"pod-default-web-\"]')) {
                 const s = r.querySelector('[data-field=\"status\"]');
                 if (s && s.textContent.trim() === 'Running') return r.getAttribute('data-testid');
             }
             return null;",
            json!([]),
        )
        .as_str()
        .map(str::to_owned)
    });
    assert_eq!(b.text(&tid(&pod, "[data-field=\"restarts\"]")).as_deref(), Some("0"));
    b.click(&tid(&pod, &tid("logs", "")));
    b.until("the pod's log in the page", DEADLINE, || {
        b.text(&tid("log-text", "")).filter(|t| t.contains("Serving HTTP on "))
    });
    b.click(&tid("log-close", ""));

    // The node, and the control plane.
    b.click(&tid("tab-nodes", ""));
    b.until("node n1 Ready in the page", DEADLINE, || {
        (b.text(&tid("node-n1", "[data-field=\"ready\"]")).as_deref() == Some("True")).then_some(())
    });
    // Its usage from metrics.k8s.io, as a share of what it can allocate ("12m / 2000m
    // (1%)"), once the agent has two samples.
    for field in ["cpu", "memory"] {
        let css = tid("node-n1", &format!("[data-field=\"{field}\"]"));
        b.until(&format!("node n1's {field} usage in the page"), DEADLINE, || {
            b.text(&css).filter(|t| t.ends_with("%)") && !t.starts_with('—'))
        });
    }
    b.click(&tid("tab-controlplane", ""));
    let leader = b.until("the store's leader", DEADLINE, || {
        b.text(&tid("leader", "")).filter(|t| !t.is_empty() && t != "—")
    });
    assert!(
        b.find(&tid(&format!("member-{leader}"), "")).is_some(),
        "no row for the leader {leader}"
    );
    let index = b.until("the raft index", DEADLINE, || {
        b.text(&tid("raft-index", "")).and_then(|t| t.parse::<u64>().ok())
    });
    assert!(index > 0, "raft index {index}");
    // The member's own answer in its row (one member here: the API server's own).
    let own = b.until("the leader's own raft index in its row", DEADLINE, || {
        let css = tid(&format!("member-{leader}"), "[data-field=\"member-raft-index\"]");
        b.text(&css).and_then(|t| t.parse::<u64>().ok())
    });
    assert!(own > 0, "the leader's row says raft index {own}");
    std::fs::write(webdriver::artefact("dashboard-controlplane.png"), b.screenshot()).expect("keep the screenshot");

    // The artefact: the workloads view with the scaled Deployment.
    b.click(&tid("tab-workloads", ""));
    ready("3/3");
    let png = b.screenshot();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "a screenshot of {} bytes",
        png.len()
    );
    let shot = webdriver::artefact("dashboard.png");
    std::fs::write(&shot, &png).expect("keep the screenshot");
    eprintln!("dashboard screenshot: {}", shot.display());

    // Deleted from the page: gone from the API, then from the page.
    b.click(&tid(row, &tid("delete", "")));
    b.click(&tid(row, &tid("confirm-delete", "")));
    common::output_until(
        "the deployment deleted",
        DEADLINE,
        || kubectl(k, &kc, &["get", "deployment", "web"]),
        |o| !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("NotFound"),
    );
    b.until("the deployment's row gone", DEADLINE, || {
        b.find(&tid(row, "")).is_none().then_some(())
    });

    assert_eq!(
        b.script("return window.__capstanLoadedAt;", json!([])),
        loaded_at,
        "the page reloaded"
    );
}

/// `web`: python's HTTP server, which logs `Serving HTTP on ...` and is ready while it
/// answers.
fn deployment(replicas: u32) -> Value {
    let script = "touch ready && exec python3 -u -m http.server 8080 --bind $POD_IP";
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "terminationGracePeriodSeconds": 5,
                "containers": [{"name": "web", "image": "python:3", "command": ["sh", "-c", script],
                    "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1}}]}}},
    })
}
