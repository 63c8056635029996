//! kubectl and the RBAC kinds (`rbac.authorization.k8s.io/v1`): the scenario of
//! tests/kubectl_rbac.sh, run with every kubectl this machine has (Debian's kubectl 1.20
//! unpacked into .tools/ by `scripts/install-deps.sh test`, and the kubectl on PATH),
//! one after the other against one store member serving the API from the same process.

mod common;

use std::path::Path;
use std::time::Duration;

use common::Server;

/// One run takes a few seconds; this only bounds a hang.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(180);

#[test]
fn kubectl_drives_the_rbac_kinds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, kubeconfig) = Server::with_api(dir.path(), &[]);
    let kc = kubeconfig.to_str().expect("utf-8 path");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kubectl_rbac.sh");
    // Each run names its objects after its kubectl's place in the list: the runs share the API.
    for (i, k) in common::kubectls_or_fail().iter().enumerate() {
        let bin = k.to_str().expect("utf-8 path");
        let run = format!("k{i}");
        let result = common::run_script(
            &script,
            &[bin, kc, &run],
            &dir.path().join(format!("script-{run}.out")),
            SCRIPT_DEADLINE,
        );
        common::assert_script(
            &format!("tests/kubectl_rbac.sh with {bin}"),
            result,
            SCRIPT_DEADLINE,
            &server,
        );
    }
}
