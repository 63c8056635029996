//! The README's walk-through with kubectl and curl (tests/walkthrough.sh) against the
//! whole single-node cluster in one process, as `make up` starts it: store, API,
//! controller-manager, scheduler, node agent, node proxy and cluster DNS.

mod common;

use std::time::Duration;

use common::Server;

/// Rollouts start real processes; this only bounds a hang.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(600);

#[test]
fn the_walkthrough_runs_a_deployment_behind_a_service() {
    let kubectl = common::kubectls_or_fail().remove(0);
    let dir = tempfile::tempdir().expect("temp dir");
    // Declared after `dir`, so dropped before it: the containers go first.
    let _reaper = common::Reaper(dir.path().join("data/node"));
    let (server, kubeconfig) = Server::with_api(
        dir.path(),
        &[
            // As `make up` serves it: HTTPS, the admin's certificate in the kubeconfig.
            common::SECURE,
            "--scheduler",
            "--node-name",
            "walkthrough",
            "--agent-port",
            "0",
            "--dns-listen",
            "127.0.0.1:0",
            // Not the default range: a cluster started by hand (`make up`) on this
            // machine has its ClusterIPs (and the kube-dns one) there.
            "--service-cluster-ip-range",
            "127.66.0.0/16",
        ],
    );
    let kc = kubeconfig.to_str().expect("utf-8 path");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/walkthrough.sh");
    let bin = kubectl.to_str().expect("utf-8 path");
    let result = common::run_script(
        &script,
        &[bin, kc, "127.0.0.1"],
        &dir.path().join("script.out"),
        SCRIPT_DEADLINE,
    );
    common::assert_script(
        &format!("tests/walkthrough.sh with {bin}"),
        result,
        SCRIPT_DEADLINE,
        &server,
    );
}
