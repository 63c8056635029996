//! What a chaos run found, in three forms: text for the terminal, JSON for machines and
//! an SVG timeline for people.
//!
//! Everything here is computed from two records after the run: the workload's history
//! (every operation with its call and return time) and the nemesis's fault records, on
//! one clock (milliseconds from the run's origin). So the recovery figures are what the
//! clients experienced, not what the servers claim:
//!
//! - *first write after a fault*: from the fault to the return of the first
//!   acknowledged write (put, or a compare-and-set with either answer: both need the
//!   leader) that a client *called* after the fault. Writes called before the fault may
//!   have been committed before it, so they do not count.
//! - *longest write gap*: the longest time between two consecutive acknowledged writes
//!   over the whole run: the worst unavailability any fault caused.
//! - the timeline: per [`BUCKET_MS`] bucket, acknowledged operations per second,
//!   operations with an unknown outcome (timeouts, errors), and latency percentiles of
//!   the acknowledged ones by return time; faults are shaded spans.
//!
//! The SVG is written by hand (a few rectangles, paths and labels): a plotting crate
//! would cost more build time than the plot is worth.

use std::fmt::Write as _;

use serde::Serialize;

use crate::kube::ServiceSummary;
use crate::linearizability::{History, Op, Outcome, Output};
use crate::nemesis::{FaultFamily, FaultKind, FaultRecord};

/// Width of one timeline bucket.
pub const BUCKET_MS: u64 = 250;
/// Buckets in a timeline, at most (a longer run gets wider buckets).
const BUCKETS_MAX: usize = 4_000;

/// Order statistics of a set of measurements (milliseconds).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub min: f64,
    pub median: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    /// `None` for no values. Percentiles by the nearest-rank method.
    pub fn of(values: &[f64]) -> Option<Summary> {
        if values.is_empty() {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = |p: f64| sorted[((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
        Some(Summary {
            count: sorted.len(),
            min: sorted[0],
            median: rank(0.5),
            p99: rank(0.99),
            max: sorted[sorted.len() - 1],
        })
    }

    fn text(summary: &Option<Summary>) -> String {
        match summary {
            None => "none measured".into(),
            Some(s) => format!(
                "median {:.1} ms, p99 {:.1} ms, min {:.1}, max {:.1} (n = {})",
                s.median, s.p99, s.min, s.max, s.count
            ),
        }
    }
}

/// Counts of the register workload's operations.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OpStats {
    pub total: usize,
    pub acknowledged: usize,
    /// Writes whose outcome the client did not learn (reads that failed are not kept).
    pub unknown: usize,
    pub gets: usize,
    pub puts: usize,
    pub cas: usize,
    pub cas_succeeded: usize,
}

impl OpStats {
    pub fn of(history: &History) -> OpStats {
        let mut stats = OpStats {
            total: history.operations.len(),
            ..OpStats::default()
        };
        for op in &history.operations {
            match op.outcome {
                Outcome::Ok(_) => stats.acknowledged += 1,
                Outcome::Unknown => stats.unknown += 1,
            }
            match op.op {
                Op::Get => stats.gets += 1,
                Op::Put { .. } => stats.puts += 1,
                Op::Cas { .. } => stats.cas += 1,
            }
            if op.outcome == Outcome::Ok(Output::Cas(true)) {
                stats.cas_succeeded += 1;
            }
        }
        stats
    }
}

/// One timeline bucket.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bucket {
    /// Start of the bucket, milliseconds from the origin.
    pub start_ms: u64,
    /// Acknowledged operations per second, by return time.
    pub ok_per_s: f64,
    /// Operations per second whose outcome was unknown, by call time.
    pub unknown_per_s: f64,
    /// Latency of the acknowledged operations that returned in the bucket.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// The timeline of `history` from 0 to `end_ms`.
pub fn timeline(history: &History, end_ms: u64) -> Vec<Bucket> {
    let width_ms = BUCKET_MS.max(end_ms.div_ceil(BUCKETS_MAX as u64));
    let buckets = (end_ms.div_ceil(width_ms) as usize).clamp(1, BUCKETS_MAX);
    let mut latencies: Vec<Vec<f64>> = vec![Vec::new(); buckets];
    let mut unknown = vec![0usize; buckets];
    let index = |ns: u64| ((ns / 1_000_000 / width_ms) as usize).min(buckets - 1);
    for op in &history.operations {
        match op.outcome {
            Outcome::Ok(_) => latencies[index(op.return_ns)].push(op.return_ns.saturating_sub(op.call_ns) as f64 / 1e6),
            Outcome::Unknown => unknown[index(op.call_ns)] += 1,
        }
    }
    let per_s = 1000.0 / width_ms as f64;
    latencies
        .into_iter()
        .zip(unknown)
        .enumerate()
        .map(|(i, (latency, unknown))| {
            let summary = Summary::of(&latency);
            Bucket {
                start_ms: i as u64 * width_ms,
                ok_per_s: latency.len() as f64 * per_s,
                unknown_per_s: unknown as f64 * per_s,
                p50_ms: summary.as_ref().map(|s| s.median),
                p99_ms: summary.as_ref().map(|s| s.p99),
            }
        })
        .collect()
}

fn is_acknowledged_write(op: &crate::linearizability::Operation) -> bool {
    matches!(op.outcome, Outcome::Ok(Output::Put) | Outcome::Ok(Output::Cas(_)))
}

/// Fills each record's `first_write_ms` from the history (see the module doc).
pub fn fill_first_writes(records: &mut [FaultRecord], history: &History) {
    for record in records.iter_mut() {
        let start_ns = (record.start_ms * 1e6) as u64;
        record.first_write_ms = history
            .operations
            .iter()
            .filter(|op| is_acknowledged_write(op) && op.call_ns >= start_ns)
            .map(|op| op.return_ns)
            .min()
            .map(|ns| (ns - start_ns) as f64 / 1e6);
    }
}

/// The longest time between consecutive acknowledged writes, and when it began
/// (milliseconds from the origin); `None` with fewer than two writes.
pub fn longest_write_gap(history: &History) -> Option<(f64, f64)> {
    let mut returns: Vec<u64> = history
        .operations
        .iter()
        .filter(|op| is_acknowledged_write(op))
        .map(|op| op.return_ns)
        .collect();
    returns.sort_unstable();
    returns
        .windows(2)
        .map(|w| (w[1] - w[0], w[0]))
        .max()
        .map(|(gap, at)| (gap as f64 / 1e6, at as f64 / 1e6))
}

/// A checker's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    /// The checker could not decide (a search bound was reached): not a pass.
    Unknown,
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub verdict: Verdict,
    /// What was checked, and for a failure the first violating operations.
    pub detail: String,
}

/// The recovery figures of a run (see the module doc).
#[derive(Clone, Debug, Serialize)]
pub struct Recovery {
    /// Faults that took the leader away by a kill.
    pub leader_kills: usize,
    /// Faults that took the leader away by a pause.
    pub leader_pauses: usize,
    /// Faults that cut the leader off from a quorum (isolation, or a partition that
    /// left it in the minority).
    pub leader_cuts: usize,
    /// From the loss of the leader to a new leader agreed by a quorum.
    pub election_ms: Option<Summary>,
    /// From a kill that hit the leader to the first write acknowledged after it.
    pub first_write_after_leader_kill_ms: Option<Summary>,
    /// The same after any fault.
    pub first_write_after_fault_ms: Option<Summary>,
    /// From a heal to the cluster's being healthy again.
    pub heal_to_healthy_ms: Option<Summary>,
    /// The longest time without an acknowledged write, and when it began.
    pub longest_write_gap_ms: Option<f64>,
    pub longest_write_gap_at_ms: Option<f64>,
    /// From the kill of the master holding a Lease to another replica's holding it.
    pub scheduler_takeover_ms: Option<Summary>,
    pub controller_manager_takeover_ms: Option<Summary>,
    /// The Service client's figures (with nodes).
    pub service: Option<ServiceSummary>,
}

impl Recovery {
    pub fn of(records: &[FaultRecord], history: &History) -> Recovery {
        let hit = |family: FaultFamily| move |r: &&FaultRecord| r.hit_leader() && r.kind.family() == family;
        let leader_kill = hit(FaultFamily::Kill);
        let gap = longest_write_gap(history);
        Recovery {
            leader_kills: records.iter().filter(leader_kill).count(),
            leader_pauses: records.iter().filter(hit(FaultFamily::Pause)).count(),
            leader_cuts: records.iter().filter(hit(FaultFamily::Network)).count(),
            election_ms: Summary::of(&records.iter().filter_map(|r| r.election_ms).collect::<Vec<_>>()),
            first_write_after_leader_kill_ms: Summary::of(
                &records
                    .iter()
                    .filter(leader_kill)
                    .filter_map(|r| r.first_write_ms)
                    .collect::<Vec<_>>(),
            ),
            first_write_after_fault_ms: Summary::of(
                &records.iter().filter_map(|r| r.first_write_ms).collect::<Vec<_>>(),
            ),
            heal_to_healthy_ms: Summary::of(
                &records
                    .iter()
                    .filter_map(|r| Some(r.recovered_ms? - r.heal_ms?))
                    .collect::<Vec<_>>(),
            ),
            longest_write_gap_ms: gap.map(|g| g.0),
            longest_write_gap_at_ms: gap.map(|g| g.1),
            scheduler_takeover_ms: Summary::of(
                &records
                    .iter()
                    .filter_map(|r| r.scheduler_takeover_ms)
                    .collect::<Vec<_>>(),
            ),
            controller_manager_takeover_ms: Summary::of(
                &records
                    .iter()
                    .filter_map(|r| r.controller_manager_takeover_ms)
                    .collect::<Vec<_>>(),
            ),
            service: None,
        }
    }
}

/// Everything a run found.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub seed: u64,
    pub masters: usize,
    pub duration_ms: u64,
    /// Wall time of the whole run, start of the cluster to the last check.
    pub elapsed_ms: u64,
    pub fault_kinds: Vec<FaultKind>,
    /// How network faults were injected: through the harness's link proxies, or not at
    /// all (no network fault could be drawn). Network namespaces are not used.
    pub network_faults: String,
    /// The command line that replays the run's choices.
    pub replay: String,
    pub operations: OpStats,
    pub recovery: Recovery,
    pub checks: Vec<Check>,
    pub faults: Vec<FaultRecord>,
    pub timeline: Vec<Bucket>,
}

impl RunReport {
    /// Whether every check passed (an undecided check is not a pass).
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.verdict == Verdict::Pass)
    }

    /// The end-of-run summary for a terminal.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let kinds: Vec<&str> = self.fault_kinds.iter().map(|k| k.name()).collect();
        let _ = writeln!(
            out,
            "capstan chaos: {} masters, {:.1} s of faults ({}), seed {}, {:.1} s in all",
            self.masters,
            self.duration_ms as f64 / 1000.0,
            kinds.join(","),
            self.seed,
            self.elapsed_ms as f64 / 1000.0
        );
        let _ = writeln!(out, "network faults: {}", self.network_faults);
        let o = &self.operations;
        let _ = writeln!(
            out,
            "operations: {} ({} acknowledged, {} unknown outcome): {} gets, {} puts, {} compare-and-sets ({} succeeded)",
            o.total, o.acknowledged, o.unknown, o.gets, o.puts, o.cas, o.cas_succeeded
        );
        let r = &self.recovery;
        let _ = writeln!(
            out,
            "faults: {} ({} killed the leader, {} paused it, {} cut it off)",
            self.faults.len(),
            r.leader_kills,
            r.leader_pauses,
            r.leader_cuts
        );
        let _ = writeln!(
            out,
            "  leader election:                  {}",
            Summary::text(&r.election_ms)
        );
        let _ = writeln!(
            out,
            "  first write after a leader kill:  {}",
            Summary::text(&r.first_write_after_leader_kill_ms)
        );
        let _ = writeln!(
            out,
            "  first write after any fault:      {}",
            Summary::text(&r.first_write_after_fault_ms)
        );
        let _ = writeln!(
            out,
            "  heal to healthy:                  {}",
            Summary::text(&r.heal_to_healthy_ms)
        );
        if let (Some(gap), Some(at)) = (r.longest_write_gap_ms, r.longest_write_gap_at_ms) {
            let _ = writeln!(
                out,
                "  longest time without a write:     {gap:.1} ms (from {:.1} s)",
                at / 1000.0
            );
        }
        if r.scheduler_takeover_ms.is_some() || r.controller_manager_takeover_ms.is_some() {
            let _ = writeln!(
                out,
                "  scheduler Lease taken over:       {}",
                Summary::text(&r.scheduler_takeover_ms)
            );
            let _ = writeln!(
                out,
                "  controller-manager Lease:         {}",
                Summary::text(&r.controller_manager_takeover_ms)
            );
        }
        if let Some(s) = &r.service {
            let _ = writeln!(
                out,
                "  Service through the node proxies: {} of {} requests answered ({:.3}%), longest time without an answer {} ms (from {:.1} s)",
                s.successes,
                s.requests,
                100.0 * s.success_rate,
                s.longest_gap_ms,
                s.longest_gap_from_ms as f64 / 1000.0
            );
        }
        let _ = writeln!(out, "checks:");
        for check in &self.checks {
            let verdict = match check.verdict {
                Verdict::Pass => "PASS",
                Verdict::Fail => "FAIL",
                Verdict::Unknown => "UNKNOWN",
            };
            let _ = writeln!(
                out,
                "  {verdict:<7} {}: {}",
                check.name,
                check.detail.replace('\n', "\n          ")
            );
        }
        let _ = writeln!(
            out,
            "verdict: {}",
            if self.passed() {
                "PASS".to_string()
            } else {
                format!("FAIL (replay: {})", self.replay)
            }
        );
        out
    }

    /// The timeline plot: throughput above, latency below, faults shaded across both.
    pub fn svg(&self) -> String {
        timeline_svg(&self.timeline, &self.faults, &self.title())
    }

    fn title(&self) -> String {
        format!(
            "capstan chaos: {} masters, seed {}, {} faults",
            self.masters,
            self.seed,
            self.faults.len()
        )
    }
}

const SVG_WIDTH: f64 = 1200.0;
const PANEL_HEIGHT: f64 = 220.0;
const MARGIN_LEFT: f64 = 70.0;
const MARGIN_RIGHT: f64 = 20.0;
const MARGIN_TOP: f64 = 40.0;
const PANEL_GAP: f64 = 50.0;

/// Draws `buckets` and `faults` as two stacked panels.
pub fn timeline_svg(buckets: &[Bucket], faults: &[FaultRecord], title: &str) -> String {
    // Buckets start at 0, so the second one's start is the width.
    let width_ms = buckets.get(1).map_or(BUCKET_MS, |b| b.start_ms);
    let end_ms = buckets.last().map_or(BUCKET_MS, |b| b.start_ms + width_ms).max(1) as f64;
    let plot_width = SVG_WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let height = MARGIN_TOP + 2.0 * PANEL_HEIGHT + PANEL_GAP + 40.0;
    let x = |ms: f64| MARGIN_LEFT + plot_width * (ms / end_ms).clamp(0.0, 1.0);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{MARGIN_LEFT}" y="20" font-size="15">{}</text>"#,
        escape(title)
    );
    let panels = [
        (MARGIN_TOP, "acknowledged ops/s (blue), unknown-outcome ops/s (red)"),
        (
            MARGIN_TOP + PANEL_HEIGHT + PANEL_GAP,
            "latency of acknowledged ops, ms: p50 (green), p99 (purple)",
        ),
    ];
    // Faults first, so the lines draw over them.
    for fault in faults {
        let start = fault.start_ms;
        let end = fault.heal_ms.unwrap_or(start + 1.0);
        let colour = match fault.kind.family() {
            FaultFamily::Kill => "#f4a6a6",
            FaultFamily::Pause => "#f7d08a",
            FaultFamily::Network => "#a9c9f0",
            FaultFamily::Node => "#b9dfb0",
        };
        for (top, _) in panels {
            let _ = writeln!(
                svg,
                r#"<rect x="{:.1}" y="{top:.1}" width="{:.1}" height="{PANEL_HEIGHT}" fill="{colour}" fill-opacity="0.6"><title>{}</title></rect>"#,
                x(start),
                (x(end) - x(start)).max(1.0),
                escape(&fault.describe())
            );
        }
    }
    let throughput_max = buckets
        .iter()
        .map(|b| b.ok_per_s.max(b.unknown_per_s))
        .fold(1.0, f64::max);
    let latency_max = buckets.iter().filter_map(|b| b.p99_ms).fold(1.0, f64::max);
    // (panel, colour, value of a bucket, the panel's top value)
    type Series = (usize, &'static str, fn(&Bucket) -> Option<f64>, f64);
    let series: [Series; 4] = [
        (0, "#1f5fbf", |b| Some(b.ok_per_s), throughput_max),
        (0, "#c0392b", |b| Some(b.unknown_per_s), throughput_max),
        (1, "#2e8b57", |b| b.p50_ms, latency_max),
        (1, "#7d3c98", |b| b.p99_ms, latency_max),
    ];
    for (panel, colour, value, max) in &series {
        let top = panels[*panel].0;
        // A bucket without a value (no acknowledged operation) breaks the line.
        let mut path = String::new();
        let mut pen_down = false;
        for b in buckets {
            match value(b) {
                Some(v) => {
                    let _ = write!(
                        path,
                        "{}{:.1},{:.1} ",
                        if pen_down { "L" } else { "M" },
                        x(b.start_ms as f64),
                        top + PANEL_HEIGHT * (1.0 - (v / max).clamp(0.0, 1.0))
                    );
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        let _ = writeln!(
            svg,
            r#"<path fill="none" stroke="{colour}" stroke-width="1.3" d="{}"/>"#,
            path.trim_end()
        );
    }
    for (i, (top, label)) in panels.iter().enumerate() {
        let max = if i == 0 { throughput_max } else { latency_max };
        let _ = writeln!(
            svg,
            r#"<rect x="{MARGIN_LEFT}" y="{top}" width="{plot_width}" height="{PANEL_HEIGHT}" fill="none" stroke="black"/>"#
        );
        let _ = writeln!(svg, r#"<text x="{MARGIN_LEFT}" y="{:.1}">{label}</text>"#, top - 6.0);
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{max:.0}</text>"#,
            MARGIN_LEFT - 6.0,
            top + 12.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">0</text>"#,
            MARGIN_LEFT - 6.0,
            top + PANEL_HEIGHT
        );
    }
    // Time axis under the lower panel: about ten ticks at a round number of seconds.
    let axis_y = MARGIN_TOP + 2.0 * PANEL_HEIGHT + PANEL_GAP;
    let span_s = end_ms / 1000.0;
    let step_s = [1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0]
        .into_iter()
        .find(|step| span_s / step <= 12.0)
        .unwrap_or(1200.0);
    let mut t = 0.0;
    while t <= span_s {
        let tx = x(t * 1000.0);
        let _ = writeln!(
            svg,
            r#"<line x1="{tx:.1}" y1="{axis_y:.1}" x2="{tx:.1}" y2="{:.1}" stroke="black"/><text x="{tx:.1}" y="{:.1}" text-anchor="middle">{t:.0} s</text>"#,
            axis_y + 5.0,
            axis_y + 18.0
        );
        t += step_s;
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}">shaded: faults, from injection to heal (red: kills, amber: pauses, blue: network, green: node processes); hover for details</text>"#,
        MARGIN_LEFT,
        axis_y + 34.0
    );
    svg.push_str("</svg>\n");
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linearizability::Operation;

    fn ms(ms: u64) -> u64 {
        ms * 1_000_000
    }

    fn record(start_ms: f64, kind: FaultKind, leader: &str, targets: &[&str]) -> FaultRecord {
        FaultRecord {
            start_ms,
            heal_ms: Some(start_ms + 2_000.0),
            recovered_ms: Some(start_ms + 2_500.0),
            election_ms: Some(1_100.0),
            leader_after: Some("n2".into()),
            ..FaultRecord::new(
                1,
                kind,
                targets.iter().map(|t| t.to_string()).collect(),
                Some(leader.into()),
            )
        }
    }

    #[test]
    fn summaries_use_the_nearest_rank() {
        assert_eq!(Summary::of(&[]), None);
        let s = Summary::of(&[5.0, 1.0, 3.0, 2.0, 4.0]).expect("values");
        assert_eq!((s.count, s.min, s.median, s.p99, s.max), (5, 1.0, 3.0, 5.0, 5.0));
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Summary::of(&hundred).expect("values");
        assert_eq!((s.median, s.p99), (50.0, 99.0));
    }

    #[test]
    fn the_first_write_after_a_fault_is_one_called_after_it() {
        let history = History::new(vec![
            // Called before the fault at 1000 ms, acknowledged after: does not count.
            Operation::put(1, "k", "a", ms(900), ms(1_200)),
            // A read after the fault is not a write.
            Operation::get(2, "k", Some("a"), ms(1_100), ms(1_300)),
            // Unknown outcomes are not acknowledged.
            Operation::put(3, "k", "b", ms(1_050), ms(1_400)).unknown(),
            // A refused compare-and-set needed the leader as much as a put does.
            Operation::cas(4, "k", Some("x"), "c", false, ms(1_500), ms(2_250)),
            Operation::put(5, "k", "d", ms(1_600), ms(2_500)),
        ]);
        let mut records = vec![record(1_000.0, FaultKind::KillLeader, "n1", &["n1"])];
        fill_first_writes(&mut records, &history);
        assert_eq!(records[0].first_write_ms, Some(1_250.0));
        // No write after a late fault: nothing measured.
        let mut late = vec![record(5_000.0, FaultKind::KillLeader, "n1", &["n1"])];
        fill_first_writes(&mut late, &history);
        assert_eq!(late[0].first_write_ms, None);
        assert_eq!(longest_write_gap(&history), Some((1_050.0, 1_200.0)));
    }

    #[test]
    fn recovery_counts_leader_kills_and_pauses_apart() {
        let mut records = vec![
            record(1_000.0, FaultKind::KillLeader, "n1", &["n1"]),
            // A member kill that hit the leader is a leader kill.
            record(5_000.0, FaultKind::KillMember, "n2", &["n2"]),
            // One that missed it is not.
            record(9_000.0, FaultKind::KillMember, "n2", &["n3"]),
            record(13_000.0, FaultKind::PauseLeader, "n2", &["n2"]),
            record(17_000.0, FaultKind::IsolateLeader, "n2", &["n2"]),
            // Links slowed: no member targeted, the leader not taken away.
            record(21_000.0, FaultKind::SlowLinks, "n2", &[]),
        ];
        let history = History::new(vec![
            Operation::put(1, "k", "a", ms(1_500), ms(1_700)),
            Operation::put(1, "k", "b", ms(5_100), ms(6_000)),
            Operation::put(1, "k", "c", ms(9_000), ms(9_010)),
            Operation::put(1, "k", "d", ms(13_100), ms(14_500)),
            Operation::put(1, "k", "e", ms(17_100), ms(18_000)),
            Operation::put(1, "k", "f", ms(21_000), ms(21_300)),
        ]);
        fill_first_writes(&mut records, &history);
        let recovery = Recovery::of(&records, &history);
        assert_eq!(
            (recovery.leader_kills, recovery.leader_pauses, recovery.leader_cuts),
            (2, 1, 1)
        );
        let kills = recovery.first_write_after_leader_kill_ms.expect("measured");
        assert_eq!((kills.count, kills.min, kills.max), (2, 700.0, 1_000.0));
        assert_eq!(recovery.first_write_after_fault_ms.expect("measured").count, 6);
        assert_eq!(recovery.heal_to_healthy_ms.expect("measured").median, 500.0);
    }

    #[test]
    fn timelines_bucket_by_return_and_unknowns_by_call() {
        let history = History::new(vec![
            Operation::put(1, "k", "a", ms(10), ms(20)),
            Operation::put(1, "k", "b", ms(30), ms(60)),
            Operation::put(2, "k", "c", ms(300), ms(2_000)).unknown(),
            Operation::get(1, "k", Some("b"), ms(600), ms(610)),
        ]);
        let buckets = timeline(&history, 1_000);
        assert_eq!(buckets.len(), 4);
        assert_eq!(buckets[1].start_ms, BUCKET_MS);
        assert_eq!(buckets[0].ok_per_s, 8.0);
        assert_eq!(buckets[0].p99_ms, Some(30.0));
        assert_eq!(buckets[1].unknown_per_s, 4.0);
        assert_eq!(buckets[2].ok_per_s, 4.0);
        assert_eq!(buckets[3].p50_ms, None);
        // A long run gets wider buckets, never more than the bound.
        assert!(timeline(&history, 100 * 3_600_000).len() <= BUCKETS_MAX);
    }

    fn report(checks: Vec<Check>) -> RunReport {
        let records = vec![record(1_000.0, FaultKind::PauseLeader, "n1", &["n1"])];
        let history = History::new(vec![Operation::put(1, "k", "a", ms(10), ms(20))]);
        RunReport {
            seed: 42,
            masters: 3,
            duration_ms: 10_000,
            elapsed_ms: 12_000,
            fault_kinds: vec![FaultKind::PauseLeader],
            network_faults: "none".into(),
            replay: "capstan chaos --seed 42".into(),
            operations: OpStats::of(&history),
            recovery: Recovery::of(&records, &history),
            checks,
            timeline: timeline(&history, 3_000),
            faults: records,
        }
    }

    #[test]
    fn a_report_passes_only_when_every_check_passed() {
        let check = |verdict| Check {
            name: "linearizability".into(),
            verdict,
            detail: "why".into(),
        };
        let passed = report(vec![check(Verdict::Pass)]);
        assert!(passed.passed());
        assert!(passed.text().contains("verdict: PASS"));
        for verdict in [Verdict::Fail, Verdict::Unknown] {
            let failed = report(vec![check(Verdict::Pass), check(verdict)]);
            assert!(!failed.passed(), "{verdict:?}");
            // A failure names the seed to replay it.
            assert!(
                failed.text().contains("FAIL (replay: capstan chaos --seed 42)"),
                "{}",
                failed.text()
            );
        }
        assert!(!report(Vec::new()).passed(), "no check is no pass");

        let svg = passed.svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<path").count(), 4);
        // The pause is shaded in both panels, with its description.
        assert_eq!(svg.matches("#f7d08a").count(), 2);
        assert!(svg.contains("pause-leader"));
        let json = serde_json::to_value(&passed).expect("serializes");
        assert_eq!(json["faults"][0]["kind"], "pause-leader");
        assert_eq!(json["checks"][0]["verdict"], "pass");
    }
}
