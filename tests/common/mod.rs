//! Shared by the integration tests: runs a real `capstan store` process.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a store may take to open its data and print its ready line.
pub const START_DEADLINE: Duration = Duration::from_secs(60);

const READY: &str = "capstan store ready on ";

/// Given to [`Server::start_with`]: serve the API as the default does, over TLS with
/// client certificates (not passed on to the server).
pub const SECURE: &str = "<secure>";

/// A running `capstan store`. Dropping it kills the process (SIGKILL) and waits for it;
/// when the test is failing, the tail of the server's log is printed.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl Server {
    /// Starts `capstan store` on `data_dir`, on a free port, and waits for its ready line.
    /// The server's stderr goes to `log` (appended, so restarts keep one log).
    pub fn start(data_dir: &Path, log: &Path) -> Server {
        Server::start_with(data_dir, log, &[])
    }

    /// [`Server::start`] with more command-line arguments. The Kubernetes API, if
    /// asked for, is served in plain HTTP (`--insecure`) unless `extra` has [`SECURE`].
    pub fn start_with(data_dir: &Path, log: &Path, extra: &[&str]) -> Server {
        let mut args: Vec<String> = vec!["store".into(), "--data-dir".into(), data_dir.display().to_string()];
        args.extend(["--listen-client".into(), "127.0.0.1:0".into()]);
        args.extend(extra.iter().filter(|a| **a != SECURE).map(|s| s.to_string()));
        if !extra.contains(&SECURE) {
            args.push("--insecure".into());
        }
        Server::launch(&args, READY, log)
    }

    /// `capstan store` in `dir` (data in `data/`, log `server.log`) serving the Kubernetes
    /// API on a free port, with `extra` arguments; returns it and the kubeconfig it wrote
    /// (`dir/kubeconfig`).
    pub fn with_api(dir: &Path, extra: &[&str]) -> (Server, PathBuf) {
        let kubeconfig = dir.join("kubeconfig");
        let kc = kubeconfig.to_str().expect("utf-8 path");
        let mut args = vec!["--apiserver-listen", "127.0.0.1:0", "--write-kubeconfig", kc];
        args.extend_from_slice(extra);
        let server = Server::start_with(&dir.join("data"), &dir.join("server.log"), &args);
        (server, kubeconfig)
    }

    /// Starts `capstan apiserver` over the etcd at `etcd_url`, on a free port, writing
    /// its kubeconfig to `kubeconfig`.
    pub fn apiserver(etcd_url: &str, kubeconfig: &Path, log: &Path) -> Server {
        Server::apiserver_with(etcd_url, kubeconfig, log, &[])
    }

    /// [`Server::apiserver`] with more command-line arguments.
    pub fn apiserver_with(etcd_url: &str, kubeconfig: &Path, log: &Path, extra: &[&str]) -> Server {
        let mut args: Vec<String> = vec![
            "apiserver".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--etcd-servers".into(),
            etcd_url.into(),
            "--write-kubeconfig".into(),
            kubeconfig.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        if !extra.contains(&"--tls-cert-file") {
            args.push("--insecure".into());
        }
        Server::launch(&args, "capstan apiserver ready on ", log)
    }

    /// Runs `capstan <args>` and waits for the stdout line starting with `ready`, which
    /// ends with the address it serves.
    fn launch(args: &[String], ready: &'static str, log: &Path) -> Server {
        let (mut server, addr) = Server::spawn_until_ready(args, ready, &[], log);
        server.addr = addr
            .parse()
            .unwrap_or_else(|e| panic!("bad address in the ready line {addr:?}: {e}"));
        server
    }

    /// Starts `capstan <component> --master <master>` (controller-manager, scheduler, proxy) with
    /// `extra` arguments and waits for its ready line; returns it with the identity it
    /// campaigns as.
    pub fn component(component: &'static str, master: &str, extra: &[&str], log: &Path) -> (Server, String) {
        Server::component_with_env(component, master, extra, &[], log)
    }

    /// [`Server::component`] with environment variables set for it.
    pub fn component_with_env(
        component: &'static str,
        master: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        log: &Path,
    ) -> (Server, String) {
        let mut args: Vec<String> = vec![component.into(), "--master".into(), master.into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let ready: &'static str = match component {
            "scheduler" => "capstan scheduler ready as ",
            "proxy" => "capstan proxy ready on node ",
            "agent" => "capstan agent ready on node ",
            _ => "capstan controller-manager ready as ",
        };
        Server::spawn_until_ready(&args, ready, env, log)
    }

    /// Runs `capstan <args>` (with `env` set) and waits for the stdout line starting with
    /// `ready`; returns the process and the rest of that line.
    fn spawn_until_ready(args: &[String], ready: &'static str, env: &[(&str, &str)], log: &Path) -> (Server, String) {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the server log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_capstan"))
            .args(args)
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("spawn capstan");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        // Reads stdout to its end (the pipe must stay drained), reporting the ready line.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix(ready) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(rest.trim().to_string());
                    }
                }
            }
        });
        let mut server = Server {
            child: Some(child),
            addr: "0.0.0.0:0".parse().expect("address"),
            log: log.to_path_buf(),
        };
        match rx.recv_timeout(START_DEADLINE) {
            Ok(rest) => (server, rest),
            Err(_) => {
                let status = server.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                panic!(
                    "capstan {} did not print its ready line within {START_DEADLINE:?} \
                     (exit status: {status:?}); log:\n{}",
                    args[0],
                    server.log_tail()
                );
            }
        }
    }

    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// SIGKILL, then wait until the process is gone.
    pub fn kill(mut self) {
        self.kill_now();
    }

    /// Sends `signal` (a name `kill` knows: STOP, CONT, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed: {status}", self.pid());
    }

    fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill_now();
        if std::thread::panicking() {
            eprintln!("--- capstan store log (tail) ---\n{}", self.log_tail());
        }
    }
}

/// Kills a script's whole process group (the script and its children) if the test ends
/// before the script does.
struct GroupGuard(Option<Child>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            if child.try_wait().ok().flatten().is_none() {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", child.id())])
                    .status();
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// Runs `bash script args...` in its own process group with output to `out_path`, for
/// at most `deadline`. Returns its exit status (None: it did not finish in time; it was
/// killed) and its output.
pub fn run_script(
    script: &Path,
    args: &[&str],
    out_path: &Path,
    deadline: Duration,
) -> (Option<std::process::ExitStatus>, String) {
    run_script_with(Path::new("bash"), script, args, out_path, deadline)
}

/// [`run_script`] with another interpreter.
pub fn run_script_with(
    interpreter: &Path,
    script: &Path,
    args: &[&str],
    out_path: &Path,
    deadline: Duration,
) -> (Option<std::process::ExitStatus>, String) {
    use std::os::unix::process::CommandExt;
    let out = std::fs::File::create(out_path).expect("script output file");
    let child = Command::new(interpreter)
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("clone file"))
        .stderr(out)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("run {} {}: {e}", interpreter.display(), script.display()));
    let mut guard = GroupGuard(Some(child));
    let until = std::time::Instant::now() + deadline;
    let status = loop {
        let child = guard.0.as_mut().expect("child");
        if let Some(status) = child.try_wait().expect("wait for the script") {
            break Some(status);
        }
        if std::time::Instant::now() >= until {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(guard);
    (status, std::fs::read_to_string(out_path).unwrap_or_default())
}

/// Prints a check script's output and fails the test unless it finished in time and
/// passed, showing its failed checks and the tail of `server`'s log.
pub fn assert_script(
    what: &str,
    (status, output): (Option<std::process::ExitStatus>, String),
    deadline: Duration,
    server: &Server,
) {
    println!("{output}");
    match status {
        None => panic!("{what} did not finish within {deadline:?}:\n{output}"),
        Some(s) => assert!(
            s.success(),
            "{what} failed ({s}); the failed checks:\n{}\n--- server log ---\n{}",
            failed_checks(&output),
            server.log_tail()
        ),
    }
}

/// The lines of a check script's output that are not passed checks.
pub fn failed_checks(output: &str) -> String {
    output
        .lines()
        .filter(|l| !l.starts_with("ok "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A port on 127.0.0.1 for a server told its port on its command line: outside the
/// kernel's ephemeral range and reserved among the test processes (see
/// `capstan_chaos::ports`), so nothing else takes it before the server binds it.
pub fn free_port() -> u16 {
    capstan_chaos::ports::free_port(std::net::Ipv4Addr::LOCALHOST).expect("a free port on 127.0.0.1")
}

/// Polls `f` every 100 ms until it returns `Some`, at most `deadline`; panics naming
/// `what` past it.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = std::time::Instant::now() + deadline;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(std::time::Instant::now() < until, "{what}: not within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A store with the Kubernetes API in `dir` and no controllers of its own (the components
/// under test take the Leases): the process, the API's URL, a client of it.
pub fn store_with_api(dir: &Path) -> (Server, String, kube::Client) {
    let listen = format!("127.0.0.1:{}", free_port());
    let store = Server::start_with(
        &dir.join("data"),
        &dir.join("store.log"),
        &["--apiserver-listen", listen.as_str(), "--no-controller-manager"],
    );
    let master = format!("http://{listen}");
    let client = kube::Client::try_from(kube::Config::new(master.parse().expect("url"))).expect("client");
    (store, master, client)
}

/// A secure store in `dir` (TLS with client certificates, RBAC; data in `data/`, log
/// `server.log`) serving the Kubernetes API on a free port, with the scheduler and an
/// in-process node `n1`. Returns, in the order to drop them: the reaper of n1's
/// containers, the process, the API's address and the admin's kubeconfig.
pub fn secure_store_with_node(dir: &Path) -> (Reaper, Server, String, PathBuf) {
    let data = dir.join("data");
    let kc = dir.join("kubeconfig");
    let listen = format!("127.0.0.1:{}", free_port());
    let reaper = Reaper(data.join("node"));
    let server = restart_secure_store_with_node(dir, &listen, &kc);
    (reaper, server, listen, kc)
}

/// [`secure_store_with_node`] started (again) on `listen`, writing `kubeconfig`.
pub fn restart_secure_store_with_node(dir: &Path, listen: &str, kubeconfig: &Path) -> Server {
    let args = [
        SECURE,
        "--apiserver-listen",
        listen,
        "--write-kubeconfig",
        kubeconfig.to_str().expect("utf-8"),
        "--scheduler",
        "--node-name",
        "n1",
        "--agent-port",
        "0",
        "--dns-listen",
        "127.0.0.1:0",
    ];
    Server::start_with(&dir.join("data"), &dir.join("server.log"), &args)
}

/// Short leader-election timings for tests with several replicas: lease 3 s, renew
/// deadline 2 s, retry 500 ms (the flags of `capstan controller-manager` and `scheduler`).
pub const TIMING: [&str; 6] = [
    "--leader-elect-lease-duration",
    "3s",
    "--leader-elect-renew-deadline",
    "2s",
    "--leader-elect-retry-period",
    "500ms",
];

/// `bin` (a kubectl) with `--kubeconfig kubeconfig` and `args`, run to its end.
pub fn kubectl(bin: &Path, kubeconfig: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("run kubectl")
}

fn works(kubectl: &Path) -> bool {
    Command::new(kubectl)
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Every kubectl to test with.
pub fn kubectls() -> Vec<PathBuf> {
    let mut found = Vec::new();
    let debian = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/kubectl-1.20/usr/bin/kubectl");
    if works(&debian) {
        found.push(debian);
    }
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(k) = std::env::split_paths(&path)
            .map(|d| d.join("kubectl"))
            .find(|k| works(k))
        {
            found.push(k);
        }
    }
    found
}

pub fn kubectls_or_fail() -> Vec<PathBuf> {
    let found = kubectls();
    assert!(
        !found.is_empty(),
        "no kubectl found: run scripts/install-deps.sh test (it unpacks Debian's kubectl 1.20 into .tools/)"
    );
    found
}

/// Kills every container still running under a node agent's root directory when dropped:
/// containers outlive their agent by design, and a test must not leave processes behind.
pub struct Reaper(pub PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        use capstan_agents::node::process::{LogLimits, ProcessRuntime};
        if let Ok(runtime) = ProcessRuntime::new(self.0.join("containers"), LogLimits::default()) {
            runtime.kill_all();
        }
    }
}

/// `GET /` over HTTP/1.0 at `to`: the answer's body, or what went wrong (2 s to connect,
/// 5 s to read).
pub fn http_get(to: SocketAddr) -> Result<String, String> {
    http_get_path(to, "/")
}

/// [`http_get`] of `path`.
pub fn http_get_path(to: SocketAddr, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.0\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(|e| e.to_string())?;
    match response.split_once("\r\n\r\n") {
        Some((_, body)) => Ok(body.to_owned()),
        None => Err(format!("not an HTTP response: {response:?}")),
    }
}

/// A Deployment of `replicas` HTTP servers answering their pod's name, each ready while
/// the file `ready` exists in its working directory, behind a ClusterIP Service.
pub async fn web(client: &kube::Client, replicas: i32) -> SocketAddr {
    let script = "echo $POD_NAME > index.html && touch ready && exec python3 -m http.server 8080 --bind $POD_IP";
    let deployment: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "terminationGracePeriodSeconds": 5,
                "containers": [{"name": "web", "image": "python:3", "command": ["sh", "-c", script],
                    "env": [
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    ],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1}}]}}},
    }))
    .expect("deployment");
    kube::Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), "default")
        .create(&kube::api::PostParams::default(), &deployment)
        .await
        .expect("create the deployment");
    let service: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
    }))
    .expect("service");
    let service = kube::Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), "default")
        .create(&kube::api::PostParams::default(), &service)
        .await
        .expect("create the service");
    let ip = service.spec.and_then(|s| s.cluster_ip).expect("a ClusterIP");
    format!("{ip}:80").parse().expect("address")
}

/// The pods of the Deployment that are Running and Ready.
pub async fn ready_pods(client: &kube::Client) -> Vec<k8s_openapi::api::core::v1::Pod> {
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(client.clone(), "default");
    let Ok(list) = pods.list(&kube::api::ListParams::default().labels("app=web")).await else {
        return Vec::new();
    };
    list.items
        .into_iter()
        .filter(|p| {
            p.status.as_ref().is_some_and(|s| {
                s.phase.as_deref() == Some("Running")
                    && s.conditions
                        .iter()
                        .flatten()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .collect()
}

/// A finished command's exit status and output, for assertion messages.
pub fn output_text(o: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `run` until `ok` holds for its output, at most `deadline`, 200 ms apart; panics
/// naming `what` and the last output past it.
pub fn output_until(
    what: &str,
    deadline: Duration,
    run: impl Fn() -> std::process::Output,
    ok: impl Fn(&std::process::Output) -> bool,
) {
    let until = std::time::Instant::now() + deadline;
    loop {
        let o = run();
        if ok(&o) {
            return;
        }
        assert!(
            std::time::Instant::now() < until,
            "{what}: not within {deadline:?}; last: {}",
            output_text(&o)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
