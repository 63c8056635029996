//! `report`: docs/BENCHMARKS.md and its plots, written from the results of one
//! `make bench` run (`scripts/bench.sh`).
//!
//! # Input
//!
//! A results directory (`--results`, default `target/bench`) that `scripts/bench.sh`
//! fills, one file per stage, each run one JSON line as the stage's script wrote it:
//!
//! | file | written by | lines |
//! |---|---|---|
//! | `run.json` | bench.sh | the run: profile, commit, machine, stages with their commands and durations |
//! | `store-1.jsonl` | `scripts/compare-etcd.sh` | one member each: puts, reads, compaction |
//! | `fanout.jsonl` | `scripts/compare-etcd.sh` (fan-out only) | watch fan-out at several watcher counts |
//! | `store-3.jsonl` | `scripts/compare-etcd-cluster.sh` | three members each: puts, reads, compaction, failover |
//! | `apiserver.jsonl` | `scripts/compare-apiserver.sh` | the Kubernetes API over Capstan and over etcd |
//! | `scheduler.jsonl` | `scripts/bench-scheduler.sh` | scheduling throughput on fake nodes |
//! | `pods.jsonl` | `scripts/bench-pods.sh` | pod startup on hollow nodes (1 and 3 masters), memory per master |
//! | `criterion/` | `cargo bench -p capstan-bench` (`CRITERION_HOME`) | criterion's estimates |
//! | `criterion.log` | bench.sh | that stage's output (the raft suite's proposals per fsync) |
//!
//! A missing file leaves its section saying so; the report never invents a figure.
//!
//! # Output
//!
//! The Markdown file (`--out`) and PNG plots beside it (`--plots`, default `docs/bench`).
//! Every cell is the median of the runs and, in brackets, the smallest and largest.
//! Ratios are Capstan / etcd per pair of runs (the i-th run of each; the stage scripts
//! alternate the servers, so a pair ran at nearly the same time), shown as the median
//! ratio and its range over the pairs. Every section names the command that produced it.
//!
//! # Left out
//!
//! Statistics beyond median and range (runs are few; the range says how much they
//! disagree); figures from earlier runs (docs/benchmarks-history.md keeps those by
//! hand).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::BenchResult;

mod plot;

/// Where the results are and where the report goes.
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// The results directory `scripts/bench.sh` filled.
    #[arg(long, default_value = "target/bench")]
    pub results: PathBuf,
    /// The Markdown file to write.
    #[arg(long, default_value = "docs/BENCHMARKS.md")]
    pub out: PathBuf,
    /// The directory for the PNG plots (linked relative to `--out`).
    #[arg(long, default_value = "docs/bench")]
    pub plots: PathBuf,
    /// The TrueType font for the plots' text.
    #[arg(long, default_value = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")]
    pub font: PathBuf,
}

/// Lines of a results file at most (a run is a few dozen lines; this bounds a mistake).
const LINES_MAX: usize = 100_000;

pub fn run(a: ReportArgs) -> BenchResult<()> {
    plot::register_font(&a.font)?;
    std::fs::create_dir_all(&a.plots).map_err(|e| format!("{}: {e}", a.plots.display()))?;
    let results = Results::load(&a.results)?;
    let plots_rel = relative_to(&a.plots, a.out.parent().unwrap_or(Path::new(".")));
    let mut doc = Doc {
        md: String::new(),
        plots_dir: a.plots.clone(),
        plots_rel,
        targets: Vec::new(),
    };
    doc.write(&results)?;
    std::fs::write(&a.out, &doc.md).map_err(|e| format!("{}: {e}", a.out.display()))?;
    println!("wrote {} and plots in {}", a.out.display(), a.plots.display());
    Ok(())
}

/// The path of `path` seen from `base`, when `path` lies under `base`'s parent tree
/// (both relative to the working directory, as the defaults are); else `path` itself.
fn relative_to(path: &Path, base: &Path) -> String {
    match path.strip_prefix(base) {
        Ok(rel) => rel.display().to_string(),
        Err(_) => path.display().to_string(),
    }
}

/// Every stage's lines, by file.
struct Results {
    dir: PathBuf,
    run: Option<Value>,
    files: BTreeMap<&'static str, Vec<Value>>,
}

const FILES: [&str; 6] = ["store-1", "fanout", "store-3", "apiserver", "scheduler", "pods"];

impl Results {
    fn load(dir: &Path) -> BenchResult<Results> {
        if !dir.is_dir() {
            return Err(format!(
                "{}: no results directory (run `make bench` first)",
                dir.display()
            ));
        }
        let run = match std::fs::read_to_string(dir.join("run.json")) {
            Ok(s) => Some(serde_json::from_str(&s).map_err(|e| format!("run.json: {e}"))?),
            Err(_) => None,
        };
        let mut files = BTreeMap::new();
        for name in FILES {
            let path = dir.join(format!("{name}.jsonl"));
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let mut lines = Vec::new();
            for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
                if i >= LINES_MAX {
                    return Err(format!("{}: more than {LINES_MAX} lines", path.display()));
                }
                let v: Value = serde_json::from_str(line).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
                lines.push(v);
            }
            files.insert(name, lines);
        }
        Ok(Results {
            dir: dir.to_path_buf(),
            run,
            files,
        })
    }

    fn lines(&self, file: &str) -> &[Value] {
        self.files.get(file).map_or(&[], Vec::as_slice)
    }

    /// The stage's command from run.json, if recorded.
    fn command(&self, stage: &str) -> Option<String> {
        self.run.as_ref()?["stages"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == stage)
            .and_then(|s| s["command"].as_str())
            .map(str::to_string)
    }
}

/// A number at a JSON pointer (`/result/latency/p99_us`).
fn num(v: &Value, pointer: &str) -> Option<f64> {
    v.pointer(pointer).and_then(Value::as_f64).filter(|x| x.is_finite())
}

/// A figure of the first run of workload `wl` (a setting all its runs share).
fn first_num(lines: &[Value], wl: &str, pointer: &str) -> Option<f64> {
    lines.iter().find(|v| workload(v) == wl).and_then(|v| num(v, pointer))
}

/// The workload name, with `_` and `-` treated alike.
fn workload(v: &Value) -> String {
    v["workload"].as_str().unwrap_or("").replace('_', "-")
}

/// Runs of `server` for `wl`, in file order, kept by `keep`.
fn runs<'a>(lines: &'a [Value], server: &str, wl: &str, keep: &dyn Fn(&Value) -> bool) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|v| v["server"] == server && workload(v) == wl && keep(v))
        .collect()
}

/// The median of `xs` (which must not be empty).
fn median(xs: &[f64]) -> f64 {
    assert!(!xs.is_empty(), "median of no values");
    let mut s = xs.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn min_max(xs: &[f64]) -> (f64, f64) {
    xs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
        (lo.min(x), hi.max(x))
    })
}

/// How a figure is written.
#[derive(Clone, Copy)]
enum Unit {
    /// Per second, as an integer with thousands separators.
    Rate,
    /// Microseconds, written as milliseconds (or seconds past 10 s).
    Us,
    /// Milliseconds.
    Ms,
    /// Bytes.
    Bytes,
    /// Mebibytes from bytes.
    Mib,
}

fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 {
        format!("-{out}")
    } else {
        out
    }
}

fn fmt(x: f64, unit: Unit) -> String {
    match unit {
        Unit::Rate => thousands(x),
        Unit::Us if x >= 10_000_000.0 => format!("{:.2} s", x / 1e6),
        Unit::Us => format!("{:.2} ms", x / 1e3),
        Unit::Ms => format!("{x:.1} ms"),
        Unit::Bytes => format!("{} B", thousands(x)),
        Unit::Mib => format!("{:.1} MiB", x / (1024.0 * 1024.0)),
    }
}

/// `median [min–max]`, or the one value, or `n/a`.
fn cell(xs: &[f64], unit: Unit) -> String {
    match xs.len() {
        0 => "n/a".into(),
        1 => fmt(xs[0], unit),
        _ => {
            let (lo, hi) = min_max(xs);
            format!("{} [{}–{}]", fmt(median(xs), unit), fmt(lo, unit), fmt(hi, unit))
        }
    }
}

/// Per-pair ratios `c[i] / e[i]`.
fn ratios(c: &[f64], e: &[f64]) -> Vec<f64> {
    c.iter().zip(e).filter(|(_, &e)| e != 0.0).map(|(c, e)| c / e).collect()
}

fn ratio_cell(r: &[f64]) -> String {
    match r.len() {
        0 => "n/a".into(),
        1 => format!("{:.2}×", r[0]),
        _ => {
            let (lo, hi) = min_max(r);
            format!("{:.2}× [{lo:.2}–{hi:.2}]", median(r))
        }
    }
}

/// A row of a side-by-side table: a label, the workload, the figure's pointer.
struct Row {
    label: String,
    wl: &'static str,
    pointer: &'static str,
    unit: Unit,
}

fn row(label: &str, wl: &'static str, pointer: &'static str, unit: Unit) -> Row {
    Row {
        label: label.to_string(),
        wl,
        pointer,
        unit,
    }
}

/// A target of issue 9 and how it came out.
struct Target {
    what: String,
    measured: String,
    met: Option<bool>,
}

struct Doc {
    md: String,
    plots_dir: PathBuf,
    plots_rel: String,
    targets: Vec<Target>,
}

impl Doc {
    fn line(&mut self, s: &str) {
        self.md.push_str(s);
        self.md.push('\n');
    }

    fn image(&mut self, file: &str, alt: &str) {
        let rel = if self.plots_rel.is_empty() {
            file.to_string()
        } else {
            format!("{}/{file}", self.plots_rel)
        };
        self.line(&format!("\n![{alt}]({rel})\n"));
    }

    fn plot_path(&self, file: &str) -> PathBuf {
        self.plots_dir.join(file)
    }

    fn target(&mut self, what: &str, measured: String, met: Option<bool>) {
        self.targets.push(Target {
            what: what.to_string(),
            measured,
            met,
        });
    }

    fn write(&mut self, r: &Results) -> BenchResult<()> {
        let mut body = std::mem::take(&mut self.md);
        // Sections first (they collect the targets), then the header with the targets.
        self.store_section(r, "store-1", "one member each", "1")?;
        self.fanout_section(r)?;
        self.store_section(r, "store-3", "three members each", "3")?;
        self.apiserver_section(r);
        self.cluster_section(r)?;
        self.criterion_section(r)?;
        let sections = std::mem::take(&mut self.md);
        self.header(r);
        self.targets_table();
        body.push_str(&self.md);
        body.push_str(&sections);
        self.md = body;
        self.footer();
        Ok(())
    }

    fn header(&mut self, r: &Results) {
        self.line("# Benchmarks");
        self.line("");
        self.line(
            "Written by `capstan-bench report` from one run of `make bench` (or `make bench-full`); \
             do not edit by hand: run it again. Earlier measurements, with the investigations \
             behind them, are in [benchmarks-history.md](benchmarks-history.md).",
        );
        self.line("");
        self.line(
            "Cells: the median of the runs and, in brackets, the smallest and largest. \
             Capstan/etcd: the ratio per pair of runs (the scripts alternate the two servers, so \
             a pair ran at nearly the same time), median and range over the pairs. For rates a \
             ratio above 1 favours Capstan; for latencies and memory, below 1.",
        );
        self.line("");
        let Some(run) = &r.run else {
            self.line(&format!(
                "No `run.json` in {}: how the run was made is unknown.",
                r.dir.display()
            ));
            self.line("");
            return;
        };
        self.line("## The run");
        self.line("");
        self.line("| | |");
        self.line("|---|---|");
        let m = &run["machine"];
        let s = |v: &Value| v.as_str().unwrap_or("?").to_string();
        let rows = [
            (
                "profile",
                format!(
                    "`make {}`",
                    if run["profile"] == "full" {
                        "bench-full"
                    } else {
                        "bench"
                    }
                ),
            ),
            ("started (UTC)", s(&run["started"])),
            ("Capstan commit", format!("`{}`", s(&run["commit"]))),
            ("CPU", format!("{} cores, {}", m["cores"], s(&m["cpu"]))),
            ("memory", s(&m["memory"])),
            ("kernel", s(&m["kernel"])),
            ("disk of the data", s(&m["disk"])),
            ("rustc", s(&m["rustc"])),
            ("etcd", s(&m["etcd"])),
            (
                "1-minute load average",
                format!(
                    "{} at the start, {} at the end",
                    s(&run["loadavg_start"]),
                    s(&run["loadavg_end"])
                ),
            ),
        ];
        for (k, v) in rows {
            self.line(&format!("| {k} | {v} |"));
        }
        self.line("");
        if let Some(stages) = run["stages"].as_array() {
            self.line("Stages, in the order they ran (the release build before them is not counted):");
            self.line("");
            self.line("| stage | command | time | status |");
            self.line("|---|---|---|---|");
            let mut total = 0.0;
            for st in stages {
                let secs = st["seconds"].as_f64().unwrap_or(0.0);
                total += secs;
                self.line(&format!(
                    "| {} | `{}` | {:.0} s | {} |",
                    s(&st["name"]),
                    s(&st["command"]),
                    secs,
                    s(&st["status"])
                ));
            }
            self.line(&format!("| all | | {:.0} s ({:.1} min) | |", total, total / 60.0));
            self.line("");
            if run["profile"] != "full" {
                self.target(
                    "`make bench` finishes in under 15 minutes on 2 cores (measurement, after the build)",
                    format!("{:.1} min", total / 60.0),
                    Some(total < 15.0 * 60.0),
                );
            }
        }
    }

    fn targets_table(&mut self) {
        self.line("## Against the targets (issue 9)");
        self.line("");
        self.line("| target | measured | met |");
        self.line("|---|---|---|");
        let targets = std::mem::take(&mut self.targets);
        for t in &targets {
            let met = match t.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "not measured",
            };
            self.line(&format!("| {} | {} | {met} |", t.what, t.measured));
        }
        self.line("");
    }

    fn footer(&mut self) {
        self.line("## Reproducing");
        self.line("");
        self.line("```sh");
        self.line("make bench         # the bounded run: release build, then every stage; writes this file");
        self.line("make bench-full    # the large sizes too (100,000 watchers, 10,000 pods, longer runs)");
        self.line("target/release/capstan-bench report   # this file again from target/bench");
        self.line("```");
        self.line("");
        self.line(
            "Each stage is one of the scripts in `scripts/` with the settings in the stage table; \
             each script's header says what it measures and how. The load tool shares the two \
             cores with the servers it measures, so every figure is \"server plus client on this \
             machine\".",
        );
    }

    /// A side-by-side table of `rows` from `file`; returns nothing, writes the rows.
    fn side_by_side(&mut self, lines: &[Value], rows: &[Row]) {
        self.line("| | Capstan | etcd | Capstan/etcd |");
        self.line("|---|---|---|---|");
        for row in rows {
            let c: Vec<f64> = runs(lines, "capstan", row.wl, &|_| true)
                .iter()
                .filter_map(|v| num(v, row.pointer))
                .collect();
            let e: Vec<f64> = runs(lines, "etcd", row.wl, &|_| true)
                .iter()
                .filter_map(|v| num(v, row.pointer))
                .collect();
            if c.is_empty() && e.is_empty() {
                continue;
            }
            self.line(&format!(
                "| {} | {} | {} | {} |",
                row.label,
                cell(&c, row.unit),
                cell(&e, row.unit),
                ratio_cell(&ratios(&c, &e))
            ));
        }
        self.line("");
    }

    fn incomplete_note(&mut self, lines: &[Value]) {
        let bad = lines
            .iter()
            .filter(|v| v["result"]["timed_out"] == true || num(v, "/result/errors").is_some_and(|e| e > 0.0))
            .count();
        if bad > 0 {
            self.line(&format!(
                "**{bad} run(s) timed out or had errors**; their figures are included above as measured."
            ));
            self.line("");
        }
    }

    fn store_section(&mut self, r: &Results, file: &str, what: &str, members: &str) -> BenchResult<()> {
        let title = format!("## The store against etcd 3.4: {what}");
        self.line(&title);
        self.line("");
        let lines = r.lines(file);
        let stage = if members == "1" { "store-1" } else { "store-3" };
        if lines.is_empty() {
            self.line(&format!("Not measured in this run (no `{file}.jsonl`)."));
            self.line("");
            return Ok(());
        }
        if let Some(cmd) = r.command(stage) {
            self.line(&format!("`{cmd}`"));
            self.line("");
        }
        let mut rows = Vec::new();
        for (wl, clients) in [("put1", 1), ("put64", 64), ("put256", 256)] {
            let who = if members == "3" && clients == 1 {
                " (to the leader)"
            } else {
                ""
            };
            let c = if clients == 1 { "client" } else { "clients" };
            rows.push(row(
                &format!("put, {clients} {c}{who}: ops/s"),
                wl,
                "/result/ops_per_s",
                Unit::Rate,
            ));
            rows.push(row(
                &format!("put, {clients} {c}: p50"),
                wl,
                "/result/latency/p50_us",
                Unit::Us,
            ));
            rows.push(row(
                &format!("put, {clients} {c}: p99"),
                wl,
                "/result/latency/p99_us",
                Unit::Us,
            ));
        }
        for (wl, kind) in [("range-l", "linearizable"), ("range-s", "serializable")] {
            rows.push(row(
                &format!("range, {kind}: ops/s"),
                wl,
                "/result/ops_per_s",
                Unit::Rate,
            ));
            rows.push(row(
                &format!("range, {kind}: p50"),
                wl,
                "/result/latency/p50_us",
                Unit::Us,
            ));
            rows.push(row(
                &format!("range, {kind}: p99"),
                wl,
                "/result/latency/p99_us",
                Unit::Us,
            ));
        }
        rows.push(row(
            "failover: kill → first acknowledged put",
            "failover",
            "/result/failover_ms",
            Unit::Ms,
        ));
        rows.push(row(
            "failover: kill → new leader in Status",
            "failover",
            "/result/new_leader_seen_ms",
            Unit::Ms,
        ));
        self.side_by_side(lines, &rows);
        if lines.iter().any(|v| workload(v) == "range-l") {
            let clients = first_num(lines, "range-l", "/result/clients").unwrap_or(0.0);
            self.line(&format!(
                "Reads: {clients:.0} clients, single-key gets of keys written before."
            ));
            self.line("");
        }
        self.compaction_rows(lines, members)?;
        self.incomplete_note(lines);
        self.put_plots(lines, members)?;
        if members == "3" {
            let c: Vec<f64> = values(lines, "capstan", "put256", "/result/ops_per_s");
            let e: Vec<f64> = values(lines, "etcd", "put256", "/result/ops_per_s");
            let rt = ratios(&c, &e);
            let cp: Vec<f64> = values(lines, "capstan", "put256", "/result/latency/p99_us");
            let ep: Vec<f64> = values(lines, "etcd", "put256", "/result/latency/p99_us");
            if !rt.is_empty() {
                let med = median(&rt);
                self.target(
                    "3-member put throughput at 256 clients ≥ 2× etcd",
                    ratio_cell(&rt),
                    Some(med >= 2.0),
                );
            } else {
                self.target("3-member put throughput at 256 clients ≥ 2× etcd", "n/a".into(), None);
            }
            if !cp.is_empty() && !ep.is_empty() {
                self.target(
                    "3-member put p99 at 256 clients ≤ etcd's",
                    format!("{} against {}", cell(&cp, Unit::Us), cell(&ep, Unit::Us)),
                    Some(median(&cp) <= median(&ep)),
                );
            }
        }
        Ok(())
    }

    fn compaction_rows(&mut self, lines: &[Value], members: &str) -> BenchResult<()> {
        if !lines.iter().any(|v| workload(v) == "compaction") {
            return Ok(());
        }
        let history = first_num(lines, "compaction", "/result/history").unwrap_or(0.0);
        self.line(&format!(
            "**Throughput during compaction**: puts at 64 clients while the history of {} revisions \
             is compacted (one Compact request, physical). *Before*: from the load's start to the \
             request; *during*: from the request to 1 s after its answer.",
            thousands(history)
        ));
        self.line("");
        let rows = [
            row("ops/s before", "compaction", "/result/before/ops_per_s", Unit::Rate),
            row("ops/s during", "compaction", "/result/during/ops_per_s", Unit::Rate),
            row("p99 before", "compaction", "/result/before/p99_us", Unit::Us),
            row("p99 during", "compaction", "/result/during/p99_us", Unit::Us),
            row("max latency during", "compaction", "/result/during/max_us", Unit::Us),
            row(
                "slowest 100 ms window: ops/s",
                "compaction",
                "/result/min_window_ops_per_s",
                Unit::Rate,
            ),
            row(
                "compaction request: sent → answered",
                "compaction",
                "/result/compact_ms",
                Unit::Ms,
            ),
        ];
        self.side_by_side(lines, &rows);
        // A timeline of the first run of each server.
        let mut series = Vec::new();
        for server in ["capstan", "etcd"] {
            let Some(v) = runs(lines, server, "compaction", &|_| true).into_iter().next() else {
                continue;
            };
            let Some(windows) = v["result"]["windows"].as_array() else {
                continue;
            };
            let pts: Vec<(f64, f64)> = windows
                .iter()
                .enumerate()
                .filter_map(|(i, w)| w.as_f64().map(|x| (i as f64 * 0.1, x * 10.0)))
                .collect();
            let mark = num(v, "/result/compact_sent_s");
            series.push(plot::Series {
                name: server_name(server).into(),
                color: plot::color(server),
                points: pts,
                band: Vec::new(),
                mark_x: mark,
            });
        }
        if !series.is_empty() {
            let file = format!("compaction-{members}.png");
            plot::timeline(
                &self.plot_path(&file),
                &format!("Puts per second (100 ms windows) while compacting, {members} member(s)"),
                "seconds into the load",
                "puts/s",
                &series,
            )?;
            self.image(&file, "put throughput over time during a compaction");
        }
        Ok(())
    }

    fn put_plots(&mut self, lines: &[Value], members: &str) -> BenchResult<()> {
        let mut lat = Vec::new();
        let mut thr = Vec::new();
        for server in ["capstan", "etcd"] {
            for (pct, pointer) in [("p50", "/result/latency/p50_us"), ("p99", "/result/latency/p99_us")] {
                let s = client_series(lines, server, pointer, 1e-3);
                if !s.points.is_empty() {
                    lat.push(plot::Series {
                        name: format!("{} {pct}", server_name(server)),
                        ..s
                    });
                }
            }
            let s = client_series(lines, server, "/result/ops_per_s", 1.0);
            if !s.points.is_empty() {
                thr.push(plot::Series {
                    name: server_name(server).into(),
                    ..s
                });
            }
        }
        if lat.is_empty() {
            return Ok(());
        }
        let file = format!("put-latency-{members}.png");
        plot::log_log(
            &self.plot_path(&file),
            &format!("Put latency against clients, {members} member(s)"),
            "clients",
            "latency (ms)",
            &lat,
        )?;
        self.image(&file, "put latency against clients");
        let file = format!("put-throughput-{members}.png");
        plot::log_log(
            &self.plot_path(&file),
            &format!("Put throughput against clients, {members} member(s)"),
            "clients",
            "puts/s",
            &thr,
        )?;
        self.image(&file, "put throughput against clients");
        Ok(())
    }

    fn fanout_section(&mut self, r: &Results) -> BenchResult<()> {
        self.line("## Watch fan-out against etcd 3.4: one member each");
        self.line("");
        let lines = r.lines("fanout");
        if lines.is_empty() {
            self.line("Not measured in this run (no `fanout.jsonl`).");
            self.line("");
            self.target(
                "Watch: 100,000 watchers on one member, delivery p99 ≤ 100 ms at 100 events/s",
                "n/a".into(),
                None,
            );
            self.target("Watch: memory per watcher ≤ etcd's", "n/a".into(), None);
            return Ok(());
        }
        if let Some(cmd) = r.command("fanout") {
            self.line(&format!("`{cmd}`"));
            self.line("");
        }
        let first = &lines[0]["result"];
        self.line(&format!(
            "Watchers of one key over {} streams, {} events per run {}; a fresh server for every run. \
             Delivery latency: the put sent → a watcher has the event, over every (watcher, event). \
             Memory: the server's RSS after the watchers were created minus before, per watcher.",
            first["streams"],
            first["events"],
            match first["rate"].as_f64() {
                Some(r) if r > 0.0 => format!("sent at {r} per second"),
                _ => "sent one at a time (the next when every watcher has the last)".into(),
            }
        ));
        self.line("");
        let mut sizes: Vec<i64> = lines.iter().filter_map(|v| v["result"]["watchers"].as_i64()).collect();
        sizes.sort_unstable();
        sizes.dedup();
        self.line("| watchers | | Capstan | etcd | Capstan/etcd |");
        self.line("|---|---|---|---|---|");
        let figures = [
            ("delivery p50", "/result/delivery_from_send/p50_us", Unit::Us),
            ("delivery p99", "/result/delivery_from_send/p99_us", Unit::Us),
            ("deliveries/s", "/result/deliveries_per_s", Unit::Rate),
            ("bytes per idle watcher", "/result/bytes_per_idle_watcher", Unit::Bytes),
            ("server RSS at the end", "/result/rss_end_bytes", Unit::Mib),
        ];
        for &n in &sizes {
            let of = |server: &str, pointer: &str| -> Vec<f64> {
                runs(lines, server, "fanout", &|v| {
                    v["result"]["watchers"].as_i64() == Some(n)
                })
                .iter()
                .filter_map(|v| num(v, pointer))
                .collect()
            };
            for (label, pointer, unit) in figures {
                let (c, e) = (of("capstan", pointer), of("etcd", pointer));
                if c.is_empty() && e.is_empty() {
                    continue;
                }
                self.line(&format!(
                    "| {} | {label} | {} | {} | {} |",
                    thousands(n as f64),
                    cell(&c, unit),
                    cell(&e, unit),
                    ratio_cell(&ratios(&c, &e))
                ));
            }
            if n == 100_000 {
                let c = of("capstan", "/result/delivery_from_send/p99_us");
                let rate = first["rate"].as_f64().unwrap_or(0.0);
                if !c.is_empty() {
                    let (_, worst) = min_max(&c);
                    self.target(
                        "Watch: 100,000 watchers on one member, delivery p99 ≤ 100 ms at 100 events/s",
                        format!("{} (events {})", cell(&c, Unit::Us), rate_words(rate)),
                        (rate == 100.0).then_some(worst <= 100_000.0),
                    );
                }
                let (cb, eb) = (
                    of("capstan", "/result/bytes_per_idle_watcher"),
                    of("etcd", "/result/bytes_per_idle_watcher"),
                );
                if !cb.is_empty() && !eb.is_empty() {
                    self.target(
                        "Watch: memory per watcher ≤ etcd's (100,000 watchers)",
                        format!("{} against {}", cell(&cb, Unit::Bytes), cell(&eb, Unit::Bytes)),
                        Some(median(&cb) <= median(&eb)),
                    );
                }
            }
        }
        self.line("");
        if !sizes.contains(&100_000) {
            self.target(
                "Watch: 100,000 watchers on one member, delivery p99 ≤ 100 ms at 100 events/s",
                "not in this run (`make bench-full` runs it)".into(),
                None,
            );
            self.target(
                "Watch: memory per watcher ≤ etcd's (100,000 watchers)",
                "not in this run".into(),
                None,
            );
        }
        self.incomplete_note(lines);
        // Plots: delivery latency and memory against watchers.
        let mut lat = Vec::new();
        let mut mem = Vec::new();
        for server in ["capstan", "etcd"] {
            for (pct, pointer) in [
                ("p50", "/result/delivery_from_send/p50_us"),
                ("p99", "/result/delivery_from_send/p99_us"),
            ] {
                let s = watcher_series(lines, server, pointer, 1e-3);
                if !s.points.is_empty() {
                    lat.push(plot::Series {
                        name: format!("{} {pct}", server_name(server)),
                        ..s
                    });
                }
            }
            let s = watcher_series(lines, server, "/result/rss_after_create_bytes", 1.0 / (1024.0 * 1024.0));
            if !s.points.is_empty() {
                mem.push(plot::Series {
                    name: server_name(server).into(),
                    ..s
                });
            }
        }
        if !lat.is_empty() {
            plot::log_log(
                &self.plot_path("watch-latency.png"),
                "Watch delivery latency against watchers, one member",
                "watchers",
                "delivery latency (ms)",
                &lat,
            )?;
            self.image("watch-latency.png", "watch delivery latency against watchers");
        }
        if !mem.is_empty() {
            plot::log_log(
                &self.plot_path("watch-memory.png"),
                "Server memory (RSS) with the watchers created, one member",
                "watchers",
                "RSS (MiB)",
                &mem,
            )?;
            self.image("watch-memory.png", "server memory against watchers");
        }
        Ok(())
    }

    fn apiserver_section(&mut self, r: &Results) {
        self.line("## The Kubernetes API on Capstan's store and on etcd");
        self.line("");
        let lines = r.lines("apiserver");
        if lines.is_empty() {
            self.line("Not measured in this run (no `apiserver.jsonl`).");
            self.line("");
            return;
        }
        if let Some(cmd) = r.command("apiserver") {
            self.line(&format!("`{cmd}`"));
            self.line("");
        }
        let clients = num(&lines[0], "/result/clients").unwrap_or(0.0);
        self.line(&format!(
            "`capstan-bench kube`: {clients:.0} clients, each doing rounds of create, get, update and \
             list of ConfigMaps. `capstan-N`: the API in a Capstan master's process over N store \
             members; `etcd-N`: `capstan apiserver` over N etcd members. Ratios: capstan-N / etcd-N."
        ));
        self.line("");
        self.line("| members | figure | Capstan | etcd | Capstan/etcd |");
        self.line("|---|---|---|---|---|");
        let mut figures = vec![("requests/s", "/result/requests_per_s".to_string(), Unit::Rate)];
        for verb in ["create", "get", "update", "list"] {
            for p in ["p50", "p99"] {
                figures.push(("", format!("/result/{verb}/{p}_us"), Unit::Us));
            }
        }
        for n in ["1", "3"] {
            let of = |setup: String, pointer: &str| -> Vec<f64> {
                lines
                    .iter()
                    .filter(|v| v["setup"].as_str() == Some(setup.as_str()))
                    .filter_map(|v| num(v, pointer))
                    .collect()
            };
            for (label, pointer, unit) in &figures {
                let label = if label.is_empty() {
                    let mut parts = pointer.trim_start_matches("/result/").split('/');
                    let verb = parts.next().unwrap_or("");
                    let p = parts.next().unwrap_or("").trim_end_matches("_us");
                    format!("{verb} {p}")
                } else {
                    label.to_string()
                };
                let (c, e) = (of(format!("capstan-{n}"), pointer), of(format!("etcd-{n}"), pointer));
                if c.is_empty() && e.is_empty() {
                    continue;
                }
                self.line(&format!(
                    "| {n} | {label} | {} | {} | {} |",
                    cell(&c, *unit),
                    cell(&e, *unit),
                    ratio_cell(&ratios(&c, &e))
                ));
            }
        }
        self.line("");
    }

    fn cluster_section(&mut self, r: &Results) -> BenchResult<()> {
        self.line("## Scheduling and pod startup on hollow nodes");
        self.line("");
        let sched = r.lines("scheduler");
        let tp: Vec<&Value> = sched.iter().filter(|v| v["bench"] == "throughput").collect();
        if tp.is_empty() {
            self.line("Scheduling: not measured in this run (no `scheduler.jsonl`).");
            self.target("Scheduling ≥ 1,000 pods/s", "n/a".into(), None);
        } else {
            if let Some(cmd) = r.command("scheduler") {
                self.line(&format!("`{cmd}`"));
                self.line("");
            }
            let nodes = num(tp[0], "/result/nodes").unwrap_or(0.0);
            let pods = num(tp[0], "/result/pods").unwrap_or(0.0);
            let rate: Vec<f64> = tp.iter().filter_map(|v| num(v, "/result/pods_per_s")).collect();
            let p50: Vec<f64> = tp.iter().filter_map(|v| num(v, "/result/latency/p50_us")).collect();
            let p99: Vec<f64> = tp.iter().filter_map(|v| num(v, "/result/latency/p99_us")).collect();
            self.line(&format!(
                "Scheduler throughput: {} pods onto {} fake nodes (API objects, no agents); pods bound \
                 per second from the first create to the last binding seen; latency from a create's \
                 answer to its binding seen in a watch.",
                thousands(pods),
                thousands(nodes)
            ));
            self.line("");
            self.line("| | value |");
            self.line("|---|---|");
            self.line(&format!("| pods bound per second | {} |", cell(&rate, Unit::Rate)));
            self.line(&format!("| create answered → bound, p50 | {} |", cell(&p50, Unit::Us)));
            self.line(&format!("| create answered → bound, p99 | {} |", cell(&p99, Unit::Us)));
            self.line("");
            if !rate.is_empty() {
                self.target(
                    "Scheduling ≥ 1,000 pods/s",
                    format!("{} pods/s", cell(&rate, Unit::Rate)),
                    Some(median(&rate) >= 1000.0),
                );
            }
        }
        let pods = r.lines("pods");
        if pods.is_empty() {
            self.line("Pod startup: not measured in this run (no `pods.jsonl`).");
            self.line("");
            self.target("Pod startup p99 ≤ 1 s on hollow nodes", "n/a".into(), None);
            return Ok(());
        }
        if let Some(cmd) = r.command("pods") {
            self.line(&format!("`{cmd}`"));
            self.line("");
        }
        let hollow = pods.iter().find_map(|v| num(v, "/hollow_nodes")).unwrap_or(0.0);
        self.line(&format!(
            "Pod startup: bare pods created (unpaced unless a rate is shown) onto {hollow:.0} hollow \
             nodes (one `capstan agent --runtime simulated`, containers simulated), timed from the \
             create sent to Running and Ready seen in a watch. Masters: 1 is one process (`capstan \
             store --apiserver-listen ... --scheduler`: store, API, controllers and scheduler); N > 1 \
             is `capstan up --masters N --nodes 0`, N processes each with a store member, the API, \
             and controller-manager and scheduler replicas, the benchmark's connections spread over \
             their APIs by up's forwarder. Memory per master: every master's RSS read once every pod is running; per \
             run the largest master and the mean over the masters, then the median [min–max] of \
             those over the runs (per run, not per master name: which master leads the store, the \
             scheduler and the controllers changes from run to run)."
        ));
        self.line("");
        self.line(
            "| masters | pods | creates/s at most | create → running+ready p50 | p99 | pods/s \
             | RSS, largest master | RSS, mean per master | agent RSS |",
        );
        self.line("|---|---|---|---|---|---|---|---|---|");
        let mut groups: BTreeMap<(i64, i64, i64), Vec<&Value>> = BTreeMap::new();
        for v in pods {
            let n = v["result"]["pods"].as_i64().unwrap_or(0);
            let rate = v["result"]["creates_per_second_max"].as_i64().unwrap_or(0);
            groups.entry((masters_of(v), n, rate)).or_default().push(v);
        }
        let mut p99_curve = Vec::new();
        let mut p50_curve = Vec::new();
        // Unpaced runs' p99 by master count, for the targets.
        let mut unpaced_p99: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
        // Paced runs' p99 by (masters, pods, creates per second): the SLO-style measure,
        // creates spread out below what the cluster completes per second.
        let mut paced_p99: Vec<(i64, i64, i64, Vec<f64>)> = Vec::new();
        for ((masters, n, rate), vs) in &groups {
            let get = |p: &str| -> Vec<f64> { vs.iter().filter_map(|v| num(v, p)).collect() };
            let p50 = get("/result/create_to_ready/p50_us");
            let p99 = get("/result/create_to_ready/p99_us");
            let per_master: Vec<Vec<f64>> = vs.iter().filter_map(|v| master_rss(v)).collect();
            let largest: Vec<f64> = per_master.iter().map(|m| min_max(m).1).collect();
            let mean: Vec<f64> = per_master
                .iter()
                .map(|m| m.iter().sum::<f64>() / m.len() as f64)
                .collect();
            self.line(&format!(
                "| {masters} | {} | {} | {} | {} | {} | {} | {} | {} |",
                thousands(*n as f64),
                if *rate == 0 {
                    "unpaced".to_string()
                } else {
                    thousands(*rate as f64)
                },
                cell(&p50, Unit::Us),
                cell(&p99, Unit::Us),
                cell(&get("/result/pods_per_s"), Unit::Rate),
                cell(&largest, Unit::Mib),
                cell(&mean, Unit::Mib),
                cell(&get("/result/rss_bytes/agent"), Unit::Mib),
            ));
            if *rate == 0 && !p99.is_empty() {
                // The curve against pods: one master (the other shapes run at one size).
                if *masters == 1 {
                    let (lo99, hi99) = min_max(&p99);
                    let (lo50, hi50) = min_max(&p50);
                    p99_curve.push((*n as f64, median(&p99) / 1e3, lo99 / 1e3, hi99 / 1e3));
                    p50_curve.push((*n as f64, median(&p50) / 1e3, lo50 / 1e3, hi50 / 1e3));
                }
                unpaced_p99.entry(*masters).or_default().extend(p99.iter().copied());
            }
            if *rate > 0 && !p99.is_empty() {
                paced_p99.push((*masters, *n, *rate, p99.clone()));
            }
        }
        self.line("");
        let incomplete = pods.iter().filter(|v| v["result"]["complete"] == false).count();
        if incomplete > 0 {
            self.line(&format!(
                "**{incomplete} run(s) did not complete** (figures as measured)."
            ));
            self.line("");
        }
        if unpaced_p99.is_empty() {
            self.target(
                "Pod startup p99 ≤ 1 s on hollow nodes",
                "n/a (no unpaced run)".into(),
                None,
            );
        }
        for (masters, p99) in &unpaced_p99 {
            let (_, worst) = min_max(p99);
            self.target(
                &format!(
                    "Pod startup p99 ≤ 1 s on hollow nodes (unpaced bursts, every run), {}",
                    masters_words(*masters)
                ),
                cell(p99, Unit::Us),
                Some(worst <= 1_000_000.0),
            );
        }
        for (masters, n, rate, p99) in &paced_p99 {
            let (_, worst) = min_max(p99);
            self.target(
                &format!(
                    "Pod startup p99 ≤ 1 s on hollow nodes ({} pods, creates paced at {rate}/s, every run), {}",
                    thousands(*n as f64),
                    masters_words(*masters)
                ),
                cell(p99, Unit::Us),
                Some(worst <= 1_000_000.0),
            );
        }
        if p99_curve.len() > 1 {
            let mk = |name: &str, curve: &[(f64, f64, f64, f64)], color| plot::Series {
                name: name.into(),
                color,
                points: curve.iter().map(|&(x, m, _, _)| (x, m)).collect(),
                band: curve.iter().map(|&(x, _, lo, hi)| (x, lo, hi)).collect(),
                mark_x: None,
            };
            let series = [
                mk("p50", &p50_curve, plot::color("capstan")),
                mk("p99", &p99_curve, plot::color("capstan-alt")),
            ];
            plot::log_log(
                &self.plot_path("pod-startup.png"),
                "Pod startup (create → running and ready) against pods, hollow nodes, one master",
                "pods",
                "latency (ms)",
                &series,
            )?;
            self.image("pod-startup.png", "pod startup latency against pods");
        }
        Ok(())
    }

    fn criterion_section(&mut self, r: &Results) -> BenchResult<()> {
        self.line("## Criterion suites (`bench/benches/`)");
        self.line("");
        let dir = r.dir.join("criterion");
        let benches = criterion::read(&dir)?;
        if benches.is_empty() {
            self.line(&format!("Not measured in this run (nothing in {}).", dir.display()));
            self.line("");
            return Ok(());
        }
        if let Some(cmd) = r.command("criterion") {
            self.line(&format!("`{cmd}`"));
            self.line("");
        }
        self.line(
            "Each row: criterion's median time per iteration with its 95 % confidence interval, \
             and the throughput at that median (per the suite's unit: deliveries, puts, ...). See \
             each suite's module documentation for what one iteration is.",
        );
        self.line("");
        self.line("| group | parameter | time per iteration | throughput |");
        self.line("|---|---|---|---|");
        let per_fsync = criterion::per_fsync(&std::fs::read_to_string(r.dir.join("criterion.log")).unwrap_or_default());
        for b in &benches {
            let mut tp = match b.elements {
                Some(n) if b.median_ns > 0.0 => format!("{}/s", thousands(n * 1e9 / b.median_ns)),
                _ => String::new(),
            };
            if let Some(line) = per_fsync.get(&format!("{}/{}", b.group, b.param)) {
                tp.push_str(&format!("; {line}"));
            }
            self.line(&format!(
                "| {} | {} | {} [{}–{}] | {tp} |",
                b.group,
                b.param,
                fmt_ns(b.median_ns),
                fmt_ns(b.lower_ns),
                fmt_ns(b.upper_ns)
            ));
        }
        self.line("");
        // Watch fan-out per layer: time for one event to reach N watchers.
        let mut series = Vec::new();
        for (i, layer) in ["hub", "cache", "grpc", "http"].iter().enumerate() {
            let group = format!("fanout_{layer}");
            let points: Vec<(f64, f64)> = benches
                .iter()
                .filter(|b| b.group == group)
                .filter_map(|b| b.param.parse::<f64>().ok().map(|n| (n, b.median_ns / 1e6)))
                .collect();
            if !points.is_empty() {
                series.push(plot::Series {
                    name: (*layer).into(),
                    color: plot::palette(i),
                    points,
                    band: Vec::new(),
                    mark_x: None,
                });
            }
        }
        if !series.is_empty() {
            plot::log_log(
                &self.plot_path("fanout-layers.png"),
                "One event to N watchers, by layer (criterion)",
                "watchers",
                "time (ms)",
                &series,
            )?;
            self.image("fanout-layers.png", "watch fan-out time by layer against watchers");
        }
        Ok(())
    }
}

/// "one master", "3 masters".
fn masters_words(masters: i64) -> String {
    if masters == 1 {
        "one master".to_string()
    } else {
        format!("{masters} masters")
    }
}

/// The masters of a pod startup run (lines written before the field existed: one).
fn masters_of(v: &Value) -> i64 {
    v["masters"].as_i64().unwrap_or(1)
}

/// Every master's RSS with the pods running, in bytes: `store` for one master, `master-1`
/// .. `master-N` for more; `None` unless all of them were read.
fn master_rss(v: &Value) -> Option<Vec<f64>> {
    match masters_of(v) {
        1 => num(v, "/result/rss_bytes/store").map(|b| vec![b]),
        n if n > 1 => (1..=n)
            .map(|i| num(v, &format!("/result/rss_bytes/master-{i}")))
            .collect(),
        _ => None,
    }
}

fn rate_words(rate: f64) -> String {
    if rate > 0.0 {
        format!("at {rate} per second")
    } else {
        "one at a time".into()
    }
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.3} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.3} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.3} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn server_name(server: &str) -> &'static str {
    if server == "etcd" {
        "etcd"
    } else {
        "Capstan"
    }
}

fn values(lines: &[Value], server: &str, wl: &str, pointer: &str) -> Vec<f64> {
    runs(lines, server, wl, &|_| true)
        .iter()
        .filter_map(|v| num(v, pointer))
        .collect()
}

/// A figure against clients (1, 64, 256) from the put workloads: median and range.
fn client_series(lines: &[Value], server: &str, pointer: &str, scale: f64) -> plot::Series {
    let mut points = Vec::new();
    let mut band = Vec::new();
    for (wl, clients) in [("put1", 1.0), ("put64", 64.0), ("put256", 256.0)] {
        let xs: Vec<f64> = values(lines, server, wl, pointer).iter().map(|x| x * scale).collect();
        if xs.is_empty() {
            continue;
        }
        let (lo, hi) = min_max(&xs);
        points.push((clients, median(&xs)));
        band.push((clients, lo, hi));
    }
    plot::Series {
        name: String::new(),
        color: plot::color(server),
        points,
        band,
        mark_x: None,
    }
}

/// A figure against watchers from the fan-out runs: median and range.
fn watcher_series(lines: &[Value], server: &str, pointer: &str, scale: f64) -> plot::Series {
    let mut by_n: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for v in runs(lines, server, "fanout", &|_| true) {
        if let (Some(n), Some(x)) = (v["result"]["watchers"].as_i64(), num(v, pointer)) {
            by_n.entry(n).or_default().push(x * scale);
        }
    }
    let mut points = Vec::new();
    let mut band = Vec::new();
    for (n, xs) in by_n {
        let (lo, hi) = min_max(&xs);
        points.push((n as f64, median(&xs)));
        band.push((n as f64, lo, hi));
    }
    plot::Series {
        name: String::new(),
        color: plot::color(server),
        points,
        band,
        mark_x: None,
    }
}

/// Criterion's output directory, read back.
mod criterion {
    use std::path::Path;

    use serde_json::Value;

    use crate::common::BenchResult;

    /// One benchmark's estimates.
    pub struct Bench {
        pub group: String,
        pub param: String,
        pub median_ns: f64,
        pub lower_ns: f64,
        pub upper_ns: f64,
        /// Elements per iteration, when the benchmark declared a throughput.
        pub elements: Option<f64>,
    }

    /// The raft suite's own lines in the criterion stage's output
    /// (`raft_proposals/64: 165885 proposals in 5202 fsyncs (31.89 per fsync)`), by
    /// benchmark id; the last line of an id wins.
    pub fn per_fsync(log: &str) -> std::collections::BTreeMap<String, String> {
        let mut out = std::collections::BTreeMap::new();
        for line in log.lines() {
            let Some((id, rest)) = line.split_once(": ") else {
                continue;
            };
            if id.contains(char::is_whitespace) || !rest.ends_with(" per fsync)") {
                continue;
            }
            out.insert(
                id.to_string(),
                rest.replace(" (", ", ").trim_end_matches(')').to_string(),
            );
        }
        out
    }

    /// Every `<group>/<id>/new/` under `dir` (criterion's layout), sorted by group and
    /// by numeric parameter.
    pub fn read(dir: &Path) -> BenchResult<Vec<Bench>> {
        let mut out = Vec::new();
        let Ok(groups) = std::fs::read_dir(dir) else {
            return Ok(out);
        };
        for g in groups.flatten() {
            let Ok(ids) = std::fs::read_dir(g.path()) else { continue };
            for id in ids.flatten() {
                let new = id.path().join("new");
                let (Ok(est), Ok(meta)) = (
                    std::fs::read_to_string(new.join("estimates.json")),
                    std::fs::read_to_string(new.join("benchmark.json")),
                ) else {
                    continue;
                };
                let est: Value = serde_json::from_str(&est).map_err(|e| format!("{}: {e}", new.display()))?;
                let meta: Value = serde_json::from_str(&meta).map_err(|e| format!("{}: {e}", new.display()))?;
                let m = &est["median"];
                let f = |p: &str| m.pointer(p).and_then(Value::as_f64).unwrap_or(f64::NAN);
                out.push(Bench {
                    group: meta["group_id"].as_str().unwrap_or("?").to_string(),
                    param: meta["value_str"]
                        .as_str()
                        .or_else(|| meta["function_id"].as_str())
                        .unwrap_or("")
                        .to_string(),
                    median_ns: f("/point_estimate"),
                    lower_ns: f("/confidence_interval/lower_bound"),
                    upper_ns: f("/confidence_interval/upper_bound"),
                    elements: meta["throughput"]["Elements"].as_f64(),
                });
            }
        }
        out.sort_by(|a, b| {
            a.group
                .cmp(&b.group)
                .then_with(|| match (a.param.parse::<f64>(), b.param.parse::<f64>()) {
                    (Ok(x), Ok(y)) => x.total_cmp(&y),
                    _ => a.param.cmp(&b.param),
                })
        });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_ratios_and_numbers() {
        assert_eq!(cell(&[], Unit::Rate), "n/a");
        assert_eq!(cell(&[1234.4], Unit::Rate), "1,234");
        assert_eq!(cell(&[3.0, 1.0, 2.0], Unit::Rate), "2 [1–3]");
        assert_eq!(cell(&[1500.0, 2500.0], Unit::Us), "2.00 ms [1.50 ms–2.50 ms]");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
        assert_eq!(thousands(-1000.0), "-1,000");
        assert_eq!(
            ratio_cell(&ratios(&[2.0, 4.0, 3.0], &[1.0, 2.0, 1.0])),
            "2.00× [2.00–3.00]"
        );
        assert_eq!(ratio_cell(&ratios(&[1.0], &[0.0])), "n/a");
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn proposals_per_fsync_lines_are_read_from_the_log() {
        let log = "raft_proposals/64       time:   [17.609 µs 19.836 µs 23.054 µs]\n\
                   raft_proposals/64: 165885 proposals in 5202 fsyncs (31.89 per fsync)\n";
        let m = criterion::per_fsync(log);
        assert_eq!(m.len(), 1);
        assert_eq!(
            m["raft_proposals/64"],
            "165885 proposals in 5202 fsyncs, 31.89 per fsync"
        );
    }

    #[test]
    fn rows_pick_their_server_and_workload() {
        let lines: Vec<Value> = [
            r#"{"server":"capstan","workload":"range_l","result":{"ops_per_s":10}}"#,
            r#"{"server":"etcd","workload":"range-l","result":{"ops_per_s":5}}"#,
            r#"{"server":"capstan","workload":"put64","result":{"ops_per_s":99}}"#,
        ]
        .iter()
        .map(|s| serde_json::from_str(s).expect("json"))
        .collect();
        assert_eq!(values(&lines, "capstan", "range-l", "/result/ops_per_s"), vec![10.0]);
        assert_eq!(values(&lines, "etcd", "range-l", "/result/ops_per_s"), vec![5.0]);
        assert!(values(&lines, "etcd", "put64", "/result/ops_per_s").is_empty());
    }

    #[test]
    fn a_report_from_partial_results_names_what_is_missing() {
        let dir = tempfile_dir("partial");
        std::fs::write(
            dir.join("store-3.jsonl"),
            concat!(
                r#"{"server":"capstan","workload":"put256","result":{"ops_per_s":300,"latency":{"p50_us":900,"p99_us":2000}}}"#,
                "\n",
                r#"{"server":"etcd","workload":"put256","result":{"ops_per_s":100,"latency":{"p50_us":1000,"p99_us":3000}}}"#,
                "\n"
            ),
        )
        .expect("write");
        let out = dir.join("BENCHMARKS.md");
        let font = PathBuf::from("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf");
        if !font.exists() {
            eprintln!("skipped: no DejaVu font (scripts/install-deps.sh bench installs it)");
            return;
        }
        run(ReportArgs {
            results: dir.clone(),
            out: out.clone(),
            plots: dir.join("plots"),
            font,
        })
        .expect("report");
        let md = std::fs::read_to_string(&out).expect("read");
        assert!(md.contains("| put, 256 clients: ops/s | 300 | 100 | 3.00× |"), "{md}");
        assert!(
            md.contains("| 3-member put throughput at 256 clients ≥ 2× etcd | 3.00× | yes |"),
            "{md}"
        );
        assert!(md.contains("Not measured in this run (no `store-1.jsonl`)"), "{md}");
        assert!(dir.join("plots/put-latency-3.png").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn pod_startup_rows_per_master_count_show_memory_per_master() {
        const MIB: i64 = 1024 * 1024;
        let result = |p50: i64, p99: i64, rss: &str| {
            format!(
                concat!(
                    r#"{{"pods":1000,"creates_per_second_max":0,"complete":true,"pods_per_s":500,"#,
                    r#""create_to_ready":{{"p50_us":{},"p99_us":{}}},"rss_bytes":{{{}}}}}"#
                ),
                p50, p99, rss
            )
        };
        // A results line; `masters` is the field as written (empty for the oldest lines).
        let line = |masters: &str, result: String| {
            format!(r#"{{"bench":"pods"{masters},"hollow_nodes":100,"result":{result}}}"#)
        };
        let three = |m: [i64; 3], agent: i64| {
            format!(
                r#""master-1":{},"master-2":{},"master-3":{},"agent":{}"#,
                m[0] * MIB,
                m[1] * MIB,
                m[2] * MIB,
                agent * MIB
            )
        };
        let lines = [
            // A line from before the "masters" field: one master.
            format!(
                r#"{{"bench":"pods","hollow_nodes":100,"result":{}}}"#,
                result(
                    400_000,
                    700_000,
                    &format!(r#""store":{},"agent":{}"#, 160 * MIB, 100 * MIB)
                )
            ),
            format!(
                r#"{{"bench":"pods","masters":1,"hollow_nodes":100,"result":{}}}"#,
                result(
                    300_000,
                    600_000,
                    &format!(r#""store":{},"agent":{}"#, 170 * MIB, 100 * MIB)
                )
            ),
            // Three masters: the largest is another master in each run.
            line(
                r#","masters":3"#,
                result(500_000, 900_000, &three([180, 120, 150], 110)),
            ),
            line(
                r#","masters":3"#,
                result(600_000, 800_000, &three([130, 200, 120], 130)),
            ),
            // A master that was gone: no memory figures from this run, its latencies count.
            format!(
                r#"{{"bench":"pods","masters":3,"hollow_nodes":100,"result":{}}}"#,
                result(
                    700_000,
                    1_000_000,
                    &format!(r#""master-1":{},"master-2":null,"agent":{}"#, 999 * MIB, 120 * MIB)
                )
            ),
            // Paced creates: a target row of its own.
            line(
                r#","masters":3"#,
                result(20_000, 1_200_000, &three([1, 1, 1], 1))
                    .replace(r#""creates_per_second_max":0"#, r#""creates_per_second_max":400"#),
            ),
        ];
        let values: Vec<Value> = lines.iter().map(|s| serde_json::from_str(s).expect("json")).collect();
        assert_eq!(masters_of(&values[0]), 1);
        assert_eq!(master_rss(&values[0]), Some(vec![160.0 * MIB as f64]));
        assert_eq!(masters_of(&values[2]), 3);
        assert_eq!(
            master_rss(&values[2]),
            Some(vec![180.0 * MIB as f64, 120.0 * MIB as f64, 150.0 * MIB as f64])
        );
        assert_eq!(master_rss(&values[4]), None);

        let dir = tempfile_dir("pods");
        std::fs::write(dir.join("pods.jsonl"), lines.join("\n") + "\n").expect("write");
        let font = PathBuf::from("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf");
        if !font.exists() {
            eprintln!("skipped: no DejaVu font (scripts/install-deps.sh bench installs it)");
            return;
        }
        let out = dir.join("BENCHMARKS.md");
        run(ReportArgs {
            results: dir.clone(),
            out: out.clone(),
            plots: dir.join("plots"),
            font,
        })
        .expect("report");
        let md = std::fs::read_to_string(&out).expect("read");
        assert!(
            md.contains(
                "| 1 | 1,000 | unpaced | 350.00 ms [300.00 ms–400.00 ms] | 650.00 ms [600.00 ms–700.00 ms] \
                 | 500 [500–500] | 165.0 MiB [160.0 MiB–170.0 MiB] | 165.0 MiB [160.0 MiB–170.0 MiB] \
                 | 100.0 MiB [100.0 MiB–100.0 MiB] |"
            ),
            "{md}"
        );
        // Largest per run 180 and 200 MiB; mean per run 150 and 150 MiB.
        assert!(
            md.contains(
                "| 3 | 1,000 | unpaced | 600.00 ms [500.00 ms–700.00 ms] | 900.00 ms [800.00 ms–1000.00 ms] \
                 | 500 [500–500] | 190.0 MiB [180.0 MiB–200.0 MiB] | 150.0 MiB [150.0 MiB–150.0 MiB] \
                 | 120.0 MiB [110.0 MiB–130.0 MiB] |"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| Pod startup p99 ≤ 1 s on hollow nodes (unpaced bursts, every run), one master \
                 | 650.00 ms [600.00 ms–700.00 ms] | yes |"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| Pod startup p99 ≤ 1 s on hollow nodes (unpaced bursts, every run), 3 masters \
                 | 900.00 ms [800.00 ms–1000.00 ms] | yes |"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| Pod startup p99 ≤ 1 s on hollow nodes (1,000 pods, creates paced at 400/s, every run), \
                 3 masters | 1200.00 ms | **no** |"
            ),
            "{md}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("capstan-report-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }
}
