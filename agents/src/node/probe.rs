//! Container probes (liveness, readiness, startup), as the kubelet runs them: what one
//! probe does ([`Action`], from the pod's spec), one try of it with its timeout
//! ([`run_once`]), and the thresholds that turn tries into a result ([`Tracker`], pure:
//! the agent's loop calls it every period).
//!
//! - **exec**: the command runs as a local process with the container's environment and
//!   working directory (there is no container to enter here); exit status 0 succeeds.
//! - **httpGet**: `GET path` on the pod's IP (or `host`) and port, with the probe's
//!   headers and the kubelet's `User-Agent`; a status from 200 to 399 succeeds, as the
//!   kubelet counts redirects. Only the status line is read, so a plain HTTP/1.1
//!   request on a TCP stream is all it takes. `scheme: HTTPS` is not supported (no TLS
//!   in the agent): such a probe fails with a message saying so.
//! - **tcpSocket**: a connection to the port succeeds.
//! - **grpc**: not supported yet; such a probe fails with a message saying so.
//!
//! Ports may be named: they resolve against the container's `ports`.
//!
//! The [`Tracker`] starts as the kubelet does: a readiness probe is failing until it
//! first succeeds, a liveness probe succeeding; a result flips only after
//! `successThreshold` successes or `failureThreshold` failures in a row.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The kubelet's probe User-Agent (its version, as the API reports it).
const USER_AGENT: &str = "kube-probe/1.32";
/// Bytes of an HTTP answer read to find its status line.
const HTTP_HEAD_BYTES_MAX: usize = 4096;

/// What one probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Exec(Vec<String>),
    HttpGet {
        to: SocketAddr,
        host: String,
        path: String,
        headers: Vec<(String, String)>,
    },
    TcpSocket(SocketAddr),
    /// A probe this agent cannot run; each try fails with this message.
    Unsupported(String),
}

/// The probe's timing, with the API's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Timing {
    pub fn of(probe: &Probe) -> Timing {
        let secs = |v: Option<i32>, default: u64| Duration::from_secs(v.map_or(default, |s| s.max(0) as u64));
        Timing {
            initial_delay: secs(probe.initial_delay_seconds, 0),
            period: secs(probe.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: probe.success_threshold.map_or(1, |v| v.max(1) as u32),
            failure_threshold: probe.failure_threshold.map_or(3, |v| v.max(1) as u32),
        }
    }
}

fn port_of(port: &IntOrString, container: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("invalid port {n}")),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("no port named {name:?} in container {:?}", container.name)),
    }
}

/// The probe's action for `container` of a pod at `pod_ip`.
pub fn action(probe: &Probe, container: &Container, pod_ip: IpAddr) -> Action {
    if let Some(exec) = &probe.exec {
        let command = exec.command.clone().unwrap_or_default();
        if command.is_empty() {
            return Action::Unsupported("exec probe without a command".into());
        }
        return Action::Exec(command);
    }
    if let Some(http) = &probe.http_get {
        if http.scheme.as_deref() == Some("HTTPS") {
            return Action::Unsupported("HTTPS probes are not supported on this node".into());
        }
        let port = match port_of(&http.port, container) {
            Ok(p) => p,
            Err(e) => return Action::Unsupported(e),
        };
        let host = http.host.clone().filter(|h| !h.is_empty());
        let ip = match host.as_deref().map(str::parse::<IpAddr>) {
            None => pod_ip,
            Some(Ok(ip)) => ip,
            Some(Err(_)) => return Action::Unsupported(format!("host {host:?} is not an IP address")),
        };
        let headers: Vec<(String, String)> = http
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        let host_header = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("host"))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| SocketAddr::new(ip, port).to_string());
        let mut path = http.path.clone().unwrap_or_default();
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        return Action::HttpGet {
            to: SocketAddr::new(ip, port),
            host: host_header,
            path,
            headers: headers
                .into_iter()
                .filter(|(k, _)| !k.eq_ignore_ascii_case("host"))
                .collect(),
        };
    }
    if let Some(tcp) = &probe.tcp_socket {
        let ip = match tcp.host.as_deref().filter(|h| !h.is_empty()).map(str::parse::<IpAddr>) {
            None => pod_ip,
            Some(Ok(ip)) => ip,
            Some(Err(_)) => return Action::Unsupported(format!("host {:?} is not an IP address", tcp.host)),
        };
        return match port_of(&tcp.port, container) {
            Ok(port) => Action::TcpSocket(SocketAddr::new(ip, port)),
            Err(e) => Action::Unsupported(e),
        };
    }
    if probe.grpc.is_some() {
        return Action::Unsupported("gRPC probes are not supported on this node yet".into());
    }
    Action::Unsupported("the probe names no action".into())
}

/// One try: Ok, or the failure's message (what the kubelet puts in its event).
pub async fn run_once(
    action: &Action,
    timeout: Duration,
    env: &[(String, String)],
    working_dir: Option<&PathBuf>,
) -> Result<(), String> {
    let attempt = async {
        match action {
            Action::Exec(command) => {
                let mut cmd = tokio::process::Command::new(&command[0]);
                cmd.args(&command[1..])
                    .env_clear()
                    .envs(env.iter().map(|(k, v)| (k, v)))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .kill_on_drop(true);
                if !env.iter().any(|(k, _)| k == "PATH") {
                    cmd.env("PATH", super::process::DEFAULT_PATH);
                }
                if let Some(dir) = working_dir {
                    cmd.current_dir(dir);
                }
                let status = cmd
                    .status()
                    .await
                    .map_err(|e| format!("running {:?}: {e}", command[0]))?;
                if status.success() {
                    Ok(())
                } else {
                    Err(format!("command {command:?} exited with {status}"))
                }
            }
            Action::HttpGet {
                to,
                host,
                path,
                headers,
            } => {
                let mut stream = tokio::net::TcpStream::connect(to)
                    .await
                    .map_err(|e| format!("Get \"http://{to}{path}\": {e}"))?;
                let mut request = format!(
                    "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\nAccept: */*\r\nConnection: close\r\n"
                );
                for (k, v) in headers {
                    request.push_str(&format!("{k}: {v}\r\n"));
                }
                request.push_str("\r\n");
                stream
                    .write_all(request.as_bytes())
                    .await
                    .map_err(|e| format!("Get \"http://{to}{path}\": {e}"))?;
                let mut head = Vec::with_capacity(256);
                let mut buf = [0u8; 512];
                while !head.contains(&b'\n') && head.len() < HTTP_HEAD_BYTES_MAX {
                    let n = stream
                        .read(&mut buf)
                        .await
                        .map_err(|e| format!("Get \"http://{to}{path}\": {e}"))?;
                    if n == 0 {
                        break;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                let line = String::from_utf8_lossy(&head);
                let code: u16 = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .ok_or_else(|| format!("Get \"http://{to}{path}\": no HTTP status in the answer"))?;
                if (200..400).contains(&code) {
                    Ok(())
                } else {
                    Err(format!("HTTP probe failed with statuscode: {code}"))
                }
            }
            Action::TcpSocket(to) => tokio::net::TcpStream::connect(to)
                .await
                .map(drop)
                .map_err(|e| format!("dial tcp {to}: {e}")),
            Action::Unsupported(why) => Err(why.clone()),
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("probe timed out after {timeout:?}")),
    }
}

/// Which probe a [`Tracker`] follows: it decides the starting result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Liveness,
    Readiness,
    Startup,
}

/// Turns tries into a result with the thresholds.
#[derive(Debug, Clone)]
pub struct Tracker {
    success_threshold: u32,
    failure_threshold: u32,
    result: bool,
    in_a_row: u32,
}

impl Tracker {
    pub fn new(kind: Kind, timing: &Timing) -> Tracker {
        Tracker {
            success_threshold: timing.success_threshold,
            failure_threshold: timing.failure_threshold,
            result: kind == Kind::Liveness,
            in_a_row: 0,
        }
    }

    /// The current result: ready, alive, started.
    pub fn result(&self) -> bool {
        self.result
    }

    /// Records one try; returns the new result when it changed.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok == self.result {
            self.in_a_row = 0;
            return None;
        }
        self.in_a_row += 1;
        let needed = if ok {
            self.success_threshold
        } else {
            self.failure_threshold
        };
        if self.in_a_row >= needed {
            self.result = ok;
            self.in_a_row = 0;
            return Some(ok);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(v: serde_json::Value) -> Container {
        serde_json::from_value(v).expect("container")
    }

    fn probe(v: serde_json::Value) -> Probe {
        serde_json::from_value(v).expect("probe")
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn actions_resolve_named_ports_hosts_and_paths() {
        let c = container(json!({"name": "web", "ports": [{"name": "http", "containerPort": 8080}]}));
        assert_eq!(
            action(
                &probe(json!({"httpGet": {"port": "http", "path": "healthz",
                "httpHeaders": [{"name": "X-Probe", "value": "1"}]}})),
                &c,
                LOCAL
            ),
            Action::HttpGet {
                to: "127.0.0.1:8080".parse().expect("addr"),
                host: "127.0.0.1:8080".into(),
                path: "/healthz".into(),
                headers: vec![("X-Probe".into(), "1".into())],
            }
        );
        assert_eq!(
            action(
                &probe(json!({"tcpSocket": {"port": 9000, "host": "127.0.0.2"}})),
                &c,
                LOCAL
            ),
            Action::TcpSocket("127.0.0.2:9000".parse().expect("addr"))
        );
        assert_eq!(
            action(&probe(json!({"exec": {"command": ["true"]}})), &c, LOCAL),
            Action::Exec(vec!["true".into()])
        );
        for (p, why) in [
            (json!({"tcpSocket": {"port": "nope"}}), "no port named \"nope\""),
            (json!({"httpGet": {"port": 80, "scheme": "HTTPS"}}), "HTTPS"),
            (json!({"grpc": {"port": 80}}), "gRPC"),
        ] {
            match action(&probe(p), &c, LOCAL) {
                Action::Unsupported(m) => assert!(m.contains(why), "{m}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn timing_defaults_are_the_apis() {
        let t = Timing::of(&probe(json!({"exec": {"command": ["true"]}})));
        assert_eq!(
            t,
            Timing {
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                success_threshold: 1,
                failure_threshold: 3
            }
        );
    }

    #[test]
    fn thresholds_flip_the_result_only_in_a_row() {
        let timing = Timing {
            success_threshold: 2,
            failure_threshold: 3,
            ..Timing::of(&Probe::default())
        };
        let mut ready = Tracker::new(Kind::Readiness, &timing);
        assert!(!ready.result(), "readiness starts failing");
        assert_eq!(ready.record(true), None);
        assert_eq!(ready.record(false), None, "not in a row");
        assert_eq!(ready.record(true), None);
        assert_eq!(ready.record(true), Some(true));
        assert_eq!(ready.record(false), None);
        assert_eq!(ready.record(false), None);
        assert_eq!(ready.record(false), Some(false));
        let alive = Tracker::new(Kind::Liveness, &timing);
        assert!(alive.result(), "liveness starts succeeding");
        assert!(!Tracker::new(Kind::Startup, &timing).result());
    }

    #[tokio::test]
    async fn exec_tcp_and_http_tries_succeed_and_fail_as_the_kubelet_counts() {
        // Generous: a bound for the tries that must succeed, not a wait.
        let t = Duration::from_secs(30);
        let env = vec![("WANT".to_string(), "yes".to_string())];
        let exec = |s: &str| Action::Exec(vec!["/bin/sh".into(), "-c".into(), s.into()]);
        assert_eq!(run_once(&exec("test \"$WANT\" = yes"), t, &env, None).await, Ok(()));
        let failed = run_once(&exec("exit 3"), t, &env, None).await.expect_err("exit 3");
        assert!(failed.contains("exit status: 3"), "{failed}");
        let slow = run_once(&exec("sleep 30"), Duration::from_millis(200), &env, None)
            .await
            .expect_err("a timeout");
        assert!(slow.contains("timed out"), "{slow}");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let open = listener.local_addr().expect("addr");
        assert_eq!(run_once(&Action::TcpSocket(open), t, &[], None).await, Ok(()));
        drop(listener);
        assert!(
            run_once(&Action::TcpSocket(open), t, &[], None).await.is_err(),
            "closed port"
        );

        // An HTTP server answering 200 on /ok, 302 on /moved and 500 elsewhere.
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = server.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = server.accept().await {
                let mut req = vec![0u8; 1024];
                let n = s.read(&mut req).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&req[..n]).to_string();
                let status = if req.starts_with("GET /ok ") && req.contains("User-Agent: kube-probe/") {
                    "200 OK"
                } else if req.starts_with("GET /moved ") {
                    "302 Found"
                } else {
                    "500 Internal Server Error"
                };
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let get = |path: &str| Action::HttpGet {
            to: addr,
            host: addr.to_string(),
            path: path.into(),
            headers: vec![],
        };
        assert_eq!(run_once(&get("/ok"), t, &[], None).await, Ok(()));
        assert_eq!(run_once(&get("/moved"), t, &[], None).await, Ok(()));
        assert_eq!(
            run_once(&get("/broken"), t, &[], None).await,
            Err("HTTP probe failed with statuscode: 500".into())
        );
    }
}
