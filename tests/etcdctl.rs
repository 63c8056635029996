//! etcdctl interoperability: the stock etcdctl (v3 API), driven by tests/etcdctl.sh,
//! against a real `capstan store` process.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::Server;

/// The whole script takes a few seconds; this only bounds a hang.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(300);

fn require_etcdctl() {
    match Command::new("etcdctl").arg("version").env("ETCDCTL_API", "3").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`etcdctl version` failed ({}): {}{}\nthis test needs etcdctl 3.4+: run scripts/install-deps.sh test",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("etcdctl is not installed ({e}); this test needs it: run scripts/install-deps.sh test"),
    }
}

#[test]
fn etcdctl_against_capstan_store() {
    require_etcdctl();
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("data"), &dir.path().join("server.log"));

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/etcdctl.sh");
    let endpoint = server.endpoint();
    let (status, output) = common::run_script(&script, &[&endpoint], &dir.path().join("script.out"), SCRIPT_DEADLINE);
    println!("{output}");
    // etcdctl 3.4 has no --count-only; count_only is checked through etcd-client (before
    // the script's verdict, so that both are checked in one run).
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut c = etcd_client::Client::connect([server.url()], None)
            .await
            .expect("connect");
        for i in 0..3 {
            c.put(format!("count/{i}"), "v", None).await.expect("put");
        }
        c.put("countx", "v", None).await.expect("put");
        let r = c
            .get(
                "count/",
                Some(etcd_client::GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .expect("get count_only");
        assert_eq!(r.count(), 3, "count_only: count of count/*");
        assert!(r.kvs().is_empty(), "count_only returned kvs: {:?}", r.kvs());
        assert!(!r.more(), "count_only: more");
    });

    match status {
        None => panic!("tests/etcdctl.sh did not finish within {SCRIPT_DEADLINE:?}:\n{output}"),
        Some(s) => assert!(
            s.success(),
            "tests/etcdctl.sh {} failed ({s}); the failed checks:\n{}",
            server.endpoint(),
            common::failed_checks(&output)
        ),
    }
}
