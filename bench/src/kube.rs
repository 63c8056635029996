//! `kube`: closed-loop load on a Kubernetes API server (Capstan's, over its own store or
//! over etcd): each of `--clients` clients runs `--iterations` rounds of create, get,
//! update and list on ConfigMaps of its own in one namespace, one request in flight,
//! over HTTP/1.1 keep-alive connections. Latency is recorded per verb; throughput is
//! all successful requests over the wall time.
//!
//! The list selects the client's own ConfigMaps by label, so it returns up to
//! `--iterations` objects. The namespace is deleted at the end (not timed).

use std::sync::Arc;
use std::time::Instant;

use hdrhistogram::Histogram;
use hyper::{Method, StatusCode};

use crate::common::{new_histogram, record_us, BenchResult, Deadline, Json, LatencySummary, Rng};
use crate::kubeapi::Api;

#[derive(clap::Args, Debug, Clone)]
pub struct KubeArgs {
    /// The API server, `http://host:port` on loopback.
    #[arg(long, default_value = "http://127.0.0.1:6443")]
    pub server: String,
    /// Concurrent clients (each has one request in flight).
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// Rounds of create, get, update, list per client.
    #[arg(long, default_value_t = 100)]
    pub iterations: usize,
    /// Namespace to work in (created, and deleted at the end).
    #[arg(long, default_value = "capstan-bench")]
    pub namespace: String,
    /// Bytes of data in each ConfigMap.
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
    /// Seconds the whole run may take.
    #[arg(long, default_value_t = 300)]
    pub timeout_s: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

const VERBS: [&str; 4] = ["create", "get", "update", "list"];

pub async fn run(a: KubeArgs) -> BenchResult<()> {
    let deadline = Deadline::after(std::time::Duration::from_secs(a.timeout_s));
    // Answers are read whole: their cost is part of the request's.
    let api = Arc::new(Api::new(&a.server, a.clients)?);
    let ns = a.namespace.clone();
    let (created, _) = api
        .call(
            Method::POST,
            "/api/v1/namespaces",
            Some(format!(
                r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{ns}"}}}}"#
            )),
        )
        .await?;
    if !(created.is_success() || created == StatusCode::CONFLICT) {
        return Err(format!("creating namespace {ns}: {created}"));
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..a.clients {
        let (api, ns, a) = (api.clone(), ns.clone(), a.clone());
        tasks.push(tokio::spawn(async move {
            let mut hists: Vec<Histogram<u64>> = VERBS.iter().map(|_| new_histogram()).collect();
            let mut errors = 0u64;
            let mut rng = Rng::new(c as u64 + 1);
            let coll = format!("/api/v1/namespaces/{ns}/configmaps");
            for i in 0..a.iterations {
                if deadline.passed() {
                    break;
                }
                let name = format!("b{c}-{i}");
                let obj = |rng: &mut Rng| {
                    let mut v = vec![0u8; a.val_size];
                    for b in v.iter_mut() {
                        *b = b'a' + rng.below(26) as u8;
                    }
                    format!(
                        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}","labels":{{"bench-client":"c{c}"}}}},"data":{{"v":"{}"}}}}"#,
                        String::from_utf8_lossy(&v)
                    )
                };
                let steps: [(Method, String, Option<String>, StatusCode); 4] = [
                    (Method::POST, coll.clone(), Some(obj(&mut rng)), StatusCode::CREATED),
                    (Method::GET, format!("{coll}/{name}"), None, StatusCode::OK),
                    (Method::PUT, format!("{coll}/{name}"), Some(obj(&mut rng)), StatusCode::OK),
                    (Method::GET, format!("{coll}?labelSelector=bench-client%3Dc{c}"), None, StatusCode::OK),
                ];
                for (v, (method, path, body, want)) in steps.into_iter().enumerate() {
                    let t = Instant::now();
                    match api.call(method, &path, body).await {
                        Ok((s, _)) if s == want => record_us(&mut hists[v], t.elapsed()),
                        _ => errors += 1,
                    }
                }
            }
            (hists, errors)
        }));
    }
    let mut hists: Vec<Histogram<u64>> = VERBS.iter().map(|_| new_histogram()).collect();
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await.map_err(|e| format!("client task: {e}"))?;
        for (all, one) in hists.iter_mut().zip(h) {
            all.add(one).map_err(|e| format!("histogram: {e}"))?;
        }
        errors += e;
    }
    let wall = start.elapsed();
    let ok: u64 = hists.iter().map(|h| h.len()).sum();
    let rate = ok as f64 / wall.as_secs_f64().max(1e-9);
    // Not timed: remove what the run made.
    let _ = api
        .call(Method::DELETE, &format!("/api/v1/namespaces/{ns}"), None)
        .await;
    if a.json {
        let mut j = Json::new();
        j.str("server", &a.server)
            .int("clients", a.clients as i64)
            .int("iterations", a.iterations as i64)
            .int("ok", ok as i64)
            .int("errors", errors as i64)
            .num("seconds", wall.as_secs_f64())
            .num("requests_per_s", rate);
        for (verb, h) in VERBS.iter().zip(&hists) {
            j.obj(verb, LatencySummary::of(h).json());
        }
        println!("{}", j.render());
    } else {
        println!(
            "kube: {} clients x {} rounds (create, get, update, list) on {}",
            a.clients, a.iterations, a.server
        );
        println!(
            "  {ok} ok, {errors} errors in {:.3} s: {rate:.1} requests/s",
            wall.as_secs_f64()
        );
        for (verb, h) in VERBS.iter().zip(&hists) {
            println!("  {verb:<6} {}", LatencySummary::of(h).line());
        }
    }
    Ok(())
}
