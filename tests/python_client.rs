//! The official Python `kubernetes` client (PyPI `kubernetes`, installed into
//! .tools/py by `scripts/install-deps.sh test`) against Capstan's Kubernetes API:
//! tests/python_client.py.

mod common;

use std::path::Path;
use std::time::Duration;

use common::Server;

/// The script takes a few seconds; this only bounds a hang.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(300);
/// A small watch cache window, so that the script can push a resourceVersion out of it.
const WINDOW_EVENTS: &str = "40";

#[test]
fn python_kubernetes_client_drives_the_api() {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/py/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-deps.sh test (it installs the kubernetes client there)",
        python.display()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    let kc = kubeconfig.to_str().expect("utf-8 path");
    let server = Server::start_with(
        &dir.path().join("data"),
        &dir.path().join("server.log"),
        &[
            "--apiserver-listen",
            "127.0.0.1:0",
            "--write-kubeconfig",
            kc,
            "--watch-cache-window-events",
            WINDOW_EVENTS,
        ],
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python_client.py");
    let out_path = dir.path().join("script.out");
    let out = std::fs::File::create(&out_path).expect("output file");
    let mut child = std::process::Command::new(&python)
        .arg(&script)
        .arg(kc)
        .arg(WINDOW_EVENTS)
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().expect("clone"))
        .stderr(out)
        .spawn()
        .expect("run python");
    let deadline = std::time::Instant::now() + SCRIPT_DEADLINE;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    println!("{output}");
    match status {
        None => panic!("tests/python_client.py did not finish within {SCRIPT_DEADLINE:?}:\n{output}"),
        Some(s) => assert!(
            s.success(),
            "tests/python_client.py failed ({s}):\n{output}\n--- server log ---\n{}",
            server.log_tail()
        ),
    }
}
