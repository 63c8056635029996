//! The agent's HTTP server for container logs: the kubelet's
//! `GET /containerLogs/{namespace}/{pod}/{container}`, which the API server calls for
//! `kubectl logs` (`pods/{name}/log`) and streams back to the client; and the kubelet's
//! `GET /stats/summary`, the containers' CPU and memory (see [`super::usage`]), under the
//! same TLS and authorization as the logs.
//!
//! # What is read
//!
//! A container's stdout and stderr are one file (see [`super::process`]): `current.log`
//! for the running (or last) run, `previous.log` for the run before. [`PodLogs`] tells
//! the server which files a pod's containers have; the pod manager implements it. Only
//! `current.log` itself is read, never its rotated copies (`current.log.1` …), as the
//! kubelet reads only a container's newest log file.
//!
//! # Query parameters (the kubelet's)
//!
//! - `previous`: the previous run's file; without one, `400` with the kubelet's
//!   `previous terminated container "c" in pod "p" not found`.
//! - `tailLines=N`: the last `N` lines. The file is read **backwards in blocks** of
//!   [`LogLimits::block_bytes`] from its end until `N` line ends are found, so a large
//!   file is never held in memory. A last line without its `\n` counts as a line.
//! - `limitBytes=N`: at most `N` bytes in all (a line may be cut, as upstream).
//! - `sinceSeconds` / `sinceTime` (RFC 3339): **coarse**. The agent keeps no time per
//!   line, so a file whose last write (mtime) is before that time is skipped whole (a
//!   follow then starts at its end); otherwise all of it is sent.
//! - `timestamps`: accepted and **ignored**: there is no time per line to print, and the
//!   time the agent reads a line (all of a file at once, outside a follow) would be a
//!   lie that looks like data.
//! - `follow`: read to the end, then wait for more: the file's size is checked every
//!   [`LogLimits::poll_interval_ms`] (100 ms; a poll rather than inotify: one `fstat` per
//!   follow and tick is cheap, works on every filesystem, and needs no watch descriptors
//!   to bound). A file that got shorter than what was read was truncated by
//!   copytruncate rotation (see [`super::process`]): reading starts again at its
//!   beginning. A follow ends once [`ContainerLog::running`] is false (or its sender is
//!   gone) and the file was read to its end after that was seen, when `limitBytes` is
//!   reached, or when the client goes away (the body is dropped with everything it
//!   holds). A follow of `previous` is a plain read: that run is over.
//!
//! Malformed values are `400` (`invalid value for tailLines: "x"`); values out of range
//! are `422` with upstream's field messages (`tailLines: Invalid value: -1: must be
//! greater than or equal to 0`), as the kubelet answers `422` to what fails validation.
//! Unknown parameters are ignored. Errors are plain text with the kubelet's wording and
//! code: `404` `pod "p" does not exist` and `container "c" not found in pod "p"`; `400`
//! for a file that does not exist yet (`container "c" in pod "p" is waiting to start:
//! ContainerCreating`).
//!
//! # Bounds
//!
//! At most [`LogLimits::follows_max`] follows at once (a follow can last as long as its
//! container): one more gets `503`. A plain read stops at the size the file had when it
//! began, so a container writing faster than the client reads cannot keep it going;
//! every read is one block of [`LogLimits::block_bytes`].
//!
//! # TLS, authentication and authorization
//!
//! The port is served by [`crate::serving::serve`] with [`crate::serving::Policy::Kubelet`]:
//! over TLS, only `system:masters` (the API server's kubelet client certificate) reads
//! logs, and a refusal is the kubelet's
//! `Forbidden (user=<name>, verb=get, resource=nodes, subresource=proxy)`. Without TLS
//! (`capstan agent --insecure`, or a cluster whose API is plain HTTP), the port is plain
//! HTTP and anyone who reaches it reads every log.
//!
//! # Left out, on purpose
//!
//! - Authorization through the API server (see [`crate::serving`]).
//! - Per-line timestamps (above), and so `timestamps=true` and fine-grained `since*`.
//! - The `stream` parameter (stdout or stderr alone): both go to one file.
//! - `exec`, `attach`, `portForward` and the kubelet's other endpoints.
//! - What a copytruncate follower cannot see: if the container writes more after a
//!   truncation than had been read before it, within one poll interval, the file never
//!   looks shorter and the start of the new content is skipped (`tail -F` has the same
//!   blind spot); what is written between the rotation's copy and its truncation is lost
//!   to everyone (see [`super::process`]).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

/// What the pod manager tells the log server about the pods of this node.
pub trait PodLogs: Send + Sync + 'static {
    /// The containers of pod `namespace/name` on this node, or None if the node does not run it.
    fn containers(&self, namespace: &str, name: &str) -> Option<Vec<ContainerLog>>;

    /// The Summary API's answer (`/stats/summary`, see [`super::usage`]), or None where
    /// the node measures nothing (simulated containers): `404`.
    fn summary(&self) -> Option<serde_json::Value> {
        None
    }
}

/// One container's log files.
#[derive(Debug, Clone)]
pub struct ContainerLog {
    pub name: String,
    pub init: bool,
    /// The current run's log file (may not exist yet).
    pub current: PathBuf,
    /// The previous run's, if there was one.
    pub previous: Option<PathBuf>,
    /// true while the current run is running; a follow ends once it turns false and the file is read to its end.
    pub running: watch::Receiver<bool>,
}

/// The log server's bounds and timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Follows served at once; one more is refused with `503`.
    pub follows_max: usize,
    /// How often a follow checks its file for growth or truncation.
    pub poll_interval_ms: u64,
    /// One read: a chunk of the response, and a step of the backwards search for `tailLines`.
    pub block_bytes: usize,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            follows_max: 64,
            poll_interval_ms: 100,
            block_bytes: 64 * 1024,
        }
    }
}

/// The router of the agent's HTTP port with the default [`LogLimits`].
pub fn router(pods: Arc<dyn PodLogs>) -> Router {
    router_with_limits(pods, LogLimits::default())
}

/// The router of the agent's HTTP port: `GET /containerLogs/{namespace}/{pod}/{container}`
/// and `GET /stats/summary`.
pub fn router_with_limits(pods: Arc<dyn PodLogs>, limits: LogLimits) -> Router {
    let shared = Arc::new(Shared {
        pods,
        follows: Arc::new(Semaphore::new(limits.follows_max)),
        limits: LogLimits {
            // A block of 0 would read nothing, forever.
            block_bytes: limits.block_bytes.max(1),
            ..limits
        },
    });
    Router::new()
        .route("/containerLogs/{namespace}/{pod}/{container}", get(container_logs))
        .route("/stats/summary", get(stats_summary))
        .with_state(shared)
}

/// `GET /stats/summary` (query parameters such as `only_cpu_and_memory` change nothing:
/// only CPU and memory are measured).
async fn stats_summary(State(shared): State<Arc<Shared>>) -> Response {
    match shared.pods.summary() {
        Some(summary) => {
            let mut r = Response::new(Body::from(summary.to_string()));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        None => Refusal(StatusCode::NOT_FOUND, "404 page not found".into()).into_response(),
    }
}

struct Shared {
    pods: Arc<dyn PodLogs>,
    limits: LogLimits,
    follows: Arc<Semaphore>,
}

/// An error answer: plain text, as the kubelet writes them.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut r = Response::new(Body::from(self.1));
        *r.status_mut() = self.0;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    }
}

fn bad_request(message: String) -> Refusal {
    Refusal(StatusCode::BAD_REQUEST, message)
}

fn invalid(message: String) -> Refusal {
    Refusal(StatusCode::UNPROCESSABLE_ENTITY, message)
}

/// The query, parsed and checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct LogOptions {
    follow: bool,
    previous: bool,
    tail_lines: Option<u64>,
    limit_bytes: Option<u64>,
    /// Nanoseconds since the epoch.
    since_ns: Option<i128>,
}

/// Go's `strconv.ParseBool`, which the kubelet's query decoding uses; empty is false.
fn parse_bool(query: &HashMap<String, String>, key: &str) -> Result<bool, Refusal> {
    match query.get(key).map(String::as_str) {
        None | Some("") => Ok(false),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        Some(v) => Err(bad_request(format!("invalid value for {key}: {v:?}"))),
    }
}

fn parse_int(query: &HashMap<String, String>, key: &str) -> Result<Option<i64>, Refusal> {
    match query.get(key).map(String::as_str) {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .map(Some)
            .map_err(|_| bad_request(format!("invalid value for {key}: {v:?}"))),
    }
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

fn parse_options(query: &HashMap<String, String>) -> Result<LogOptions, Refusal> {
    let follow = parse_bool(query, "follow")?;
    let previous = parse_bool(query, "previous")?;
    parse_bool(query, "timestamps")?;
    let tail_lines = parse_int(query, "tailLines")?;
    let limit_bytes = parse_int(query, "limitBytes")?;
    let since_seconds = parse_int(query, "sinceSeconds")?;
    let since_time = match query.get("sinceTime").map(String::as_str) {
        None | Some("") => None,
        Some(v) => Some(
            v.parse::<k8s_openapi::jiff::Timestamp>()
                .map_err(|_| bad_request(format!("invalid value for sinceTime: {v:?} (RFC 3339 expected)")))?,
        ),
    };
    if let Some(n) = tail_lines.filter(|n| *n < 0) {
        return Err(invalid(format!(
            "tailLines: Invalid value: {n}: must be greater than or equal to 0"
        )));
    }
    if let Some(n) = limit_bytes.filter(|n| *n < 1) {
        return Err(invalid(format!(
            "limitBytes: Invalid value: {n}: must be greater than 0"
        )));
    }
    let since_ns = match (since_seconds, since_time) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "at most one of `sinceTime` or `sinceSeconds` may be specified".into(),
            ))
        }
        (Some(s), None) if s < 1 => {
            return Err(invalid(format!(
                "sinceSeconds: Invalid value: {s}: must be greater than 0"
            )))
        }
        (Some(s), None) => Some(now_ns() - i128::from(s) * 1_000_000_000),
        (None, Some(t)) => Some(t.as_nanosecond()),
        (None, None) => None,
    };
    Ok(LogOptions {
        follow,
        previous,
        tail_lines: tail_lines.map(|n| n as u64),
        limit_bytes: limit_bytes.map(|n| n as u64),
        since_ns,
    })
}

async fn container_logs(
    State(shared): State<Arc<Shared>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    match serve_logs(&shared, &namespace, &pod, &container, &query).await {
        Ok(r) => r,
        Err(refusal) => {
            if refusal.0.is_server_error() {
                tracing::warn!(%namespace, %pod, %container, error = %refusal.1, "serving a container log failed");
            }
            refusal.into_response()
        }
    }
}

async fn serve_logs(
    shared: &Shared,
    namespace: &str,
    pod: &str,
    container: &str,
    query: &HashMap<String, String>,
) -> Result<Response, Refusal> {
    let options = parse_options(query)?;
    let containers = shared
        .pods
        .containers(namespace, pod)
        .ok_or_else(|| Refusal(StatusCode::NOT_FOUND, format!("pod {pod:?} does not exist")))?;
    let log = containers.into_iter().find(|c| c.name == container).ok_or_else(|| {
        Refusal(
            StatusCode::NOT_FOUND,
            format!("container {container:?} not found in pod {pod:?}"),
        )
    })?;
    let no_previous = || {
        bad_request(format!(
            "previous terminated container {container:?} in pod {pod:?} not found"
        ))
    };
    let path = if options.previous {
        log.previous.clone().ok_or_else(no_previous)?
    } else {
        log.current.clone()
    };
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(if options.previous {
                no_previous()
            } else {
                bad_request(format!(
                    "container {container:?} in pod {pod:?} is waiting to start: ContainerCreating"
                ))
            })
        }
        Err(e) => {
            return Err(Refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("opening the log of container {container:?} in pod {pod:?}: {e}"),
            ))
        }
    };
    let follow = if options.follow && !options.previous {
        let permit = Arc::clone(&shared.follows).try_acquire_owned().map_err(|_| {
            Refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "too many container logs are being followed on this node ({}); try again later",
                    shared.limits.follows_max
                ),
            )
        })?;
        Some(Follow {
            running: log.running.clone(),
            sender_gone: false,
            poll: Duration::from_millis(shared.limits.poll_interval_ms.max(1)),
            _permit: permit,
        })
    } else {
        None
    };
    let block_bytes = shared.limits.block_bytes;
    let internal = |e: io::Error| {
        Refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading the log of container {container:?} in pod {pod:?}: {e}"),
        )
    };
    let file = Arc::new(file);
    let (start, len) = {
        let file = Arc::clone(&file);
        let since_ns = options.since_ns;
        let tail_lines = options.tail_lines;
        tokio::task::spawn_blocking(move || start_of(&file, since_ns, tail_lines, block_bytes))
            .await
            .map_err(|e| internal(io::Error::other(e)))?
            .map_err(internal)?
    };
    let reader = LogReader {
        file,
        pos: start,
        // A plain read stops where the file ended when it began.
        end: if follow.is_some() { None } else { Some(len) },
        remaining: options.limit_bytes,
        block_bytes,
        follow,
        draining: false,
    };
    let body = futures::stream::unfold(reader, |mut reader| async move {
        let item = reader.next().await?;
        if let Err(e) = &item {
            tracing::warn!(error = %e, "reading a container log failed mid-stream");
        }
        Some((item, reader))
    });
    let mut r = Response::new(Body::from_stream(body));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(r)
}

/// Where a read starts (after `since` and `tailLines`), and the file's length then.
fn start_of(
    file: &File,
    since_ns: Option<i128>,
    tail_lines: Option<u64>,
    block_bytes: usize,
) -> io::Result<(u64, u64)> {
    let meta = file.metadata()?;
    let len = meta.len();
    if let Some(since) = since_ns {
        let mtime_ns = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
        if mtime_ns < since {
            return Ok((len, len));
        }
    }
    match tail_lines {
        Some(n) => Ok((tail_start(file, len, n, block_bytes)?, len)),
        None => Ok((0, len)),
    }
}

/// The offset at which the last `lines` lines of the first `len` bytes of `file` begin,
/// found by reading backwards one block at a time. A final `\n` ends the last line; a
/// last line without one counts as a line.
fn tail_start(file: &File, len: u64, lines: u64, block_bytes: usize) -> io::Result<u64> {
    if lines == 0 {
        return Ok(len);
    }
    let mut buf = vec![0u8; block_bytes.max(1)];
    let mut found = 0u64;
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let block = &mut buf[..(end - start) as usize];
        match file.read_exact_at(block, start) {
            Ok(()) => {}
            // Truncated meanwhile (rotation): what was there is gone; read what is.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
            Err(e) => return Err(e),
        }
        for (i, byte) in block.iter().enumerate().rev() {
            let at = start + i as u64;
            if *byte == b'\n' && at + 1 != len {
                found += 1;
                if found == lines {
                    return Ok(at + 1);
                }
            }
        }
        end = start;
    }
    Ok(0)
}

struct Follow {
    running: watch::Receiver<bool>,
    /// The pod manager dropped the sender: taken as the end of the run.
    sender_gone: bool,
    poll: Duration,
    /// Held for as long as the follow lasts (the body holds the reader).
    _permit: OwnedSemaphorePermit,
}

impl Follow {
    fn running(&self) -> bool {
        !self.sender_gone && *self.running.borrow()
    }

    /// Waits one poll interval, or less if `running` changes.
    async fn wait(&mut self) {
        if self.sender_gone {
            tokio::time::sleep(self.poll).await;
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(self.poll) => {}
            changed = self.running.changed() => {
                if changed.is_err() {
                    self.sender_gone = true;
                }
            }
        }
    }
}

/// The state of one response body.
struct LogReader {
    file: Arc<File>,
    pos: u64,
    /// Where a plain read stops.
    end: Option<u64>,
    /// What is left of `limitBytes`.
    remaining: Option<u64>,
    block_bytes: usize,
    follow: Option<Follow>,
    /// The run was seen to be over; the next end of file ends the follow.
    draining: bool,
}

impl LogReader {
    /// The next chunk of the body, or None at its end.
    async fn next(&mut self) -> Option<io::Result<Bytes>> {
        loop {
            let mut want = self.block_bytes as u64;
            if let Some(r) = self.remaining {
                want = want.min(r);
            }
            if let Some(end) = self.end {
                want = want.min(end.saturating_sub(self.pos));
            }
            if want == 0 {
                return None;
            }
            let data = match read_at(Arc::clone(&self.file), self.pos, want as usize).await {
                Ok(d) => d,
                Err(e) => return Some(Err(e)),
            };
            if !data.is_empty() {
                self.pos += data.len() as u64;
                if let Some(r) = &mut self.remaining {
                    *r -= data.len() as u64;
                }
                return Some(Ok(data));
            }
            // At the end of the file.
            let follow = self.follow.as_mut()?;
            if self.draining {
                return None;
            }
            loop {
                if !follow.running() {
                    // Everything the run wrote is in the file now: one more read gets the
                    // rest, and its end of file is the end.
                    self.draining = true;
                    break;
                }
                follow.wait().await;
                let len = match self.file.metadata() {
                    Ok(m) => m.len(),
                    Err(e) => return Some(Err(e)),
                };
                if len < self.pos {
                    // copytruncate: the file starts again.
                    tracing::debug!(
                        read = self.pos,
                        len,
                        "a followed log was truncated; reading from its start"
                    );
                    self.pos = 0;
                    break;
                }
                if len > self.pos {
                    break;
                }
            }
        }
    }
}

async fn read_at(file: Arc<File>, pos: u64, len: usize) -> io::Result<Bytes> {
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; len];
        let n = file.read_at(&mut buf, pos)?;
        buf.truncate(n);
        Ok(Bytes::from(buf))
    })
    .await
    .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(content: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(content).expect("write");
        let file = File::open(f.path()).expect("open");
        (f, file)
    }

    fn tail(content: &[u8], lines: u64, block: usize) -> String {
        let (_keep, file) = file_with(content);
        let start = tail_start(&file, content.len() as u64, lines, block).expect("tail");
        String::from_utf8_lossy(&content[start as usize..]).into_owned()
    }

    #[test]
    fn tails_count_lines_from_the_end_across_blocks() {
        for block in [1, 2, 3, 7, 4096] {
            assert_eq!(tail(b"a\nb\nc\n", 2, block), "b\nc\n", "block {block}");
            assert_eq!(
                tail(b"a\nb\nc", 2, block),
                "b\nc",
                "a last line without its newline, block {block}"
            );
            assert_eq!(tail(b"a\n\nb\n", 2, block), "\nb\n", "empty lines count, block {block}");
            assert_eq!(
                tail(b"a\nb\n", 5, block),
                "a\nb\n",
                "more than there are, block {block}"
            );
            assert_eq!(tail(b"a\nb\n", 0, block), "", "none, block {block}");
            assert_eq!(tail(b"", 3, block), "", "an empty file, block {block}");
            assert_eq!(tail(b"\n", 1, block), "\n", "one empty line, block {block}");
        }
    }

    #[test]
    fn options_are_checked_as_upstream_checks_them() {
        let q = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let code = |pairs: &[(&str, &str)]| parse_options(&q(pairs)).err().map(|r| (r.0.as_u16(), r.1));
        let o = parse_options(&q(&[
            ("follow", "true"),
            ("tailLines", "3"),
            ("limitBytes", "10"),
            ("timestamps", "1"),
        ]))
        .map_err(|r| r.1)
        .expect("valid");
        assert!(o.follow && !o.previous);
        assert_eq!((o.tail_lines, o.limit_bytes), (Some(3), Some(10)));
        assert_eq!(code(&[("tailLines", "x")]).map(|c| c.0), Some(400));
        assert_eq!(code(&[("follow", "yes")]).map(|c| c.0), Some(400));
        assert_eq!(
            code(&[("tailLines", "-1")]),
            Some((
                422,
                "tailLines: Invalid value: -1: must be greater than or equal to 0".into()
            ))
        );
        assert_eq!(code(&[("limitBytes", "0")]).map(|c| c.0), Some(422));
        assert_eq!(code(&[("sinceSeconds", "0")]).map(|c| c.0), Some(422));
        assert_eq!(
            code(&[("sinceSeconds", "5"), ("sinceTime", "2024-01-01T00:00:00Z")]).map(|c| c.0),
            Some(422)
        );
        assert_eq!(code(&[("sinceTime", "yesterday")]).map(|c| c.0), Some(400));
        let o = parse_options(&q(&[("sinceTime", "1970-01-01T00:00:01Z")]))
            .map_err(|r| r.1)
            .expect("valid");
        assert_eq!(o.since_ns, Some(1_000_000_000));
    }
}
