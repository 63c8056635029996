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
    let (server, kubeconfig) = Server::with_api(dir.path(), &["--watch-cache-window-events", WINDOW_EVENTS]);
    let kc = kubeconfig.to_str().expect("utf-8 path");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python_client.py");
    let result = common::run_script_with(
        &python,
        &script,
        &[kc, WINDOW_EVENTS],
        &dir.path().join("script.out"),
        SCRIPT_DEADLINE,
    );
    common::assert_script("tests/python_client.py", result, SCRIPT_DEADLINE, &server);
}
