//! `capstan chaos` as a user runs it: a short run against three masters with every kind
//! of fault must pass every check and write its report, and so must one with two nodes
//! (Deployments and a Service) while agents, proxies and the leader are killed; bad
//! arguments are refused with exit status 2 before anything starts.
//!
//! The run is a process group of its own (it starts the members as its children), so
//! that a test that fails or times out takes the whole group down with it.

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One chaos run at a time: each starts a whole cluster on a 2-core machine.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Kills a process group when dropped: the chaos run and the members it started.
struct GroupKiller(u32);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.0)])
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs `capstan chaos` with `args`, output into files in `dir`; returns the exit code
/// and what it printed on stdout and stderr.
fn capstan_chaos(dir: &Path, args: &[&str], deadline: Duration) -> (Option<i32>, String, String) {
    let stdout = dir.join("stdout");
    let stderr = dir.join("stderr");
    let file = |path: &Path| std::fs::File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_capstan"))
        .arg("chaos")
        .args(args)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(file(&stdout))
        .stderr(file(&stderr))
        .spawn()
        .expect("spawn capstan chaos");
    let _killer = GroupKiller(child.id());
    let until = Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for capstan chaos") {
            break Some(status);
        }
        if Instant::now() >= until {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
    let (out, err) = (read(&stdout), read(&stderr));
    let status = status
        .unwrap_or_else(|| panic!("capstan chaos still running after {deadline:?}\nstdout:\n{out}\nstderr:\n{err}"));
    (status.code(), out, err)
}

#[test]
fn a_short_chaos_run_passes_and_reports() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("temp dir");
    let out_dir = dir.path().join("report");
    let out_arg = out_dir.display().to_string();
    let args = [
        "--masters",
        "3",
        "--duration",
        "20s",
        "--seed",
        "7",
        "--faults",
        "all",
        "--out",
        &out_arg,
    ];
    let (code, stdout, stderr) = capstan_chaos(dir.path(), &args, Duration::from_secs(300));
    let context = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(code, Some(0), "the run failed\n{context}");
    assert!(stdout.contains("verdict: PASS"), "{context}");
    // Progress: each fault as it happened.
    assert!(stderr.contains("#1 "), "no fault printed as it happened\n{context}");

    let json = std::fs::read_to_string(out_dir.join("report.json")).expect("report.json");
    let report: serde_json::Value = serde_json::from_str(&json).expect("report.json is JSON");
    assert_eq!(report["seed"], 7);
    // `all` draws network faults too: the report says how they were made.
    assert!(
        report["network_faults"]
            .as_str()
            .is_some_and(|n| n.contains("link proxies")),
        "{json}"
    );
    assert!(
        report["replay"].as_str().is_some_and(|r| r.contains("--seed 7")),
        "{json}"
    );
    let checks = report["checks"].as_array().expect("checks");
    let names: Vec<&str> = checks.iter().filter_map(|c| c["name"].as_str()).collect();
    assert!(
        names.contains(&"linearizability") && names.contains(&"recovery"),
        "{names:?}"
    );
    assert!(checks.iter().all(|c| c["verdict"] == "pass"), "{checks:#?}");
    let faults = report["faults"].as_array().expect("faults");
    assert!(faults.len() >= 3, "only {} faults in 20 s\n{context}", faults.len());
    // Every fault was healed and the cluster was healthy again.
    assert!(
        faults
            .iter()
            .all(|f| f["recovered_ms"].is_number() && f["error"].is_null()),
        "{faults:#?}"
    );
    // Clients kept being served: writes were acknowledged after faults.
    assert!(
        report["operations"]["acknowledged"].as_u64().unwrap_or(0) > 100,
        "{json}"
    );
    assert!(
        report["recovery"]["first_write_after_fault_ms"]["count"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "{json}"
    );
    assert!(!report["timeline"].as_array().expect("timeline").is_empty());

    let svg = std::fs::read_to_string(out_dir.join("timeline.svg")).expect("timeline.svg");
    assert!(svg.starts_with("<svg") && svg.contains("<path") && svg.trim_end().ends_with("</svg>"));
    let text = std::fs::read_to_string(out_dir.join("report.txt")).expect("report.txt");
    assert!(text.contains("verdict: PASS"), "{text}");
    assert!(
        out_dir.join("n1.log").is_file(),
        "the members' logs are kept with the report"
    );
}

/// With nodes: Deployments and a Service through the node proxies while the leader, an
/// agent and a proxy are killed; the Kubernetes check passes and the Service's figures
/// are reported.
#[test]
fn a_short_chaos_run_with_nodes_passes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("temp dir");
    let out_dir = dir.path().join("report");
    let out_arg = out_dir.display().to_string();
    let args = [
        "--masters",
        "3",
        "--nodes",
        "2",
        "--duration",
        "15s",
        "--seed",
        "9",
        "--faults",
        "kill-leader,kill-agent,kill-proxy",
        "--out",
        &out_arg,
    ];
    let (code, stdout, stderr) = capstan_chaos(dir.path(), &args, Duration::from_secs(400));
    let context = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(code, Some(0), "the run failed\n{context}");
    let json = std::fs::read_to_string(out_dir.join("report.json")).expect("report.json");
    let report: serde_json::Value = serde_json::from_str(&json).expect("report.json is JSON");
    let checks = report["checks"].as_array().expect("checks");
    assert!(
        checks
            .iter()
            .any(|c| c["name"] == "kubernetes" && c["verdict"] == "pass"),
        "{checks:#?}"
    );
    assert!(checks.iter().all(|c| c["verdict"] == "pass"), "{checks:#?}");
    let service = &report["recovery"]["service"];
    assert!(service["requests"].as_u64().unwrap_or(0) > 0, "{json}");
    assert!(service["successes"].as_u64().unwrap_or(0) > 0, "{json}");
    assert!(stdout.contains("Service through the node proxies"), "{context}");
}

#[test]
fn bad_arguments_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (code, _, stderr) = capstan_chaos(dir.path(), &["--faults", "kill-everything"], Duration::from_secs(30));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("unknown fault \"kill-everything\""), "{stderr}");
    let (code, _, stderr) = capstan_chaos(dir.path(), &["--masters", "0"], Duration::from_secs(30));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("masters must be"), "{stderr}");
    let (code, _, stderr) = capstan_chaos(dir.path(), &["--faults", "kill-agent"], Duration::from_secs(30));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("the fault kill-agent needs nodes"), "{stderr}");
}
