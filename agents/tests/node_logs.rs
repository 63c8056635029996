//! The node agent's log server (`containerLogs`) on a real loopback listener, over real
//! log files, with a fake pod manager and a minimal HTTP/1.1 client of its own (so that
//! a follow's chunks are seen as they arrive and a client can simply go away).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use capstan_agents::node::logs::{self, ContainerLog, LogLimits, PodLogs};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{timeout, Instant};

const DEADLINE: Duration = Duration::from_secs(30);

/// The pods of the fake node: (namespace, name) → containers.
#[derive(Default)]
struct FakePods {
    pods: Mutex<HashMap<(String, String), Vec<ContainerLog>>>,
}

impl PodLogs for FakePods {
    fn containers(&self, namespace: &str, name: &str) -> Option<Vec<ContainerLog>> {
        self.pods
            .lock()
            .expect("lock")
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }
}

struct Env {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    pods: Arc<FakePods>,
}

async fn start(limits: LogLimits) -> Env {
    let pods = Arc::new(FakePods::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = logs::router_with_limits(pods.clone(), limits);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Env {
        dir: tempfile::tempdir().expect("temp dir"),
        addr,
        pods,
    }
}

impl Env {
    /// Adds container `container` of pod `default/pod`, with a current log (written when
    /// `current` is given) and a previous one; returns the current log's path and the
    /// sender of its `running`.
    fn add(
        &self,
        pod: &str,
        container: &str,
        current: Option<&[u8]>,
        previous: Option<&[u8]>,
        running: bool,
    ) -> (PathBuf, watch::Sender<bool>) {
        let dir = self.dir.path().join(pod).join(container);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let current_path = dir.join("current.log");
        if let Some(content) = current {
            std::fs::write(&current_path, content).expect("write current");
        }
        let previous_path = previous.map(|content| {
            let p = dir.join("previous.log");
            std::fs::write(&p, content).expect("write previous");
            p
        });
        let (tx, rx) = watch::channel(running);
        self.pods
            .pods
            .lock()
            .expect("lock")
            .entry(("default".to_string(), pod.to_string()))
            .or_default()
            .push(ContainerLog {
                name: container.to_string(),
                init: false,
                current: current_path.clone(),
                previous: previous_path,
                running: rx,
            });
        (current_path, tx)
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let (code, mut body) = Http::open(self.addr, path).await;
        (code, String::from_utf8_lossy(&body.rest().await).into_owned())
    }
}

/// One HTTP/1.1 exchange over its own connection, the body read as it comes.
struct Http {
    reader: BufReader<TcpStream>,
    chunked: bool,
    length: Option<usize>,
    done: bool,
}

impl Http {
    async fn open(addr: SocketAddr, path: &str) -> (u16, Http) {
        timeout(DEADLINE, async {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            stream
                .write_all(format!("GET {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n").as_bytes())
                .await
                .expect("send");
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            reader.read_line(&mut line).await.expect("status line");
            let code: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("a status line: {line:?}"));
            let (mut chunked, mut length) = (false, None);
            loop {
                line.clear();
                reader.read_line(&mut line).await.expect("header");
                let header = line.trim_end().to_ascii_lowercase();
                if header.is_empty() {
                    break;
                }
                if let Some(v) = header.strip_prefix("transfer-encoding:") {
                    chunked = v.contains("chunked");
                }
                if let Some(v) = header.strip_prefix("content-length:") {
                    length = v.trim().parse().ok();
                }
            }
            (
                code,
                Http {
                    reader,
                    chunked,
                    length,
                    done: false,
                },
            )
        })
        .await
        .expect("an answer head in time")
    }

    /// The next piece of the body, None at its end.
    async fn chunk(&mut self) -> Option<Vec<u8>> {
        if self.done {
            return None;
        }
        let read = async {
            if self.chunked {
                let mut line = String::new();
                self.reader.read_line(&mut line).await.expect("chunk size");
                let size = usize::from_str_radix(line.trim(), 16).unwrap_or_else(|_| panic!("a chunk size: {line:?}"));
                let mut data = vec![0; size + 2];
                self.reader.read_exact(&mut data).await.expect("chunk");
                data.truncate(size);
                if size == 0 {
                    self.done = true;
                    return None;
                }
                Some(data)
            } else {
                let mut data = Vec::new();
                match self.length {
                    Some(n) => {
                        data.resize(n, 0);
                        self.reader.read_exact(&mut data).await.expect("body");
                    }
                    None => {
                        self.reader.read_to_end(&mut data).await.expect("body");
                    }
                }
                self.done = true;
                Some(data)
            }
        };
        timeout(DEADLINE, read).await.expect("a piece of the body in time")
    }

    async fn rest(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        while let Some(c) = self.chunk().await {
            all.extend(c);
        }
        all
    }

    /// Reads until what was read ends with `want`; returns all of it.
    async fn until(&mut self, want: &str) -> String {
        let mut seen = String::new();
        while !seen.ends_with(want) {
            match self.chunk().await {
                Some(c) => seen.push_str(&String::from_utf8_lossy(&c)),
                None => panic!("the body ended before {want:?}; got {seen:?}"),
            }
        }
        seen
    }
}

fn append(path: &Path, data: &[u8]) {
    let mut f = OpenOptions::new().append(true).open(path).expect("open for append");
    f.write_all(data).expect("append");
}

const URL: &str = "/containerLogs/default";

#[tokio::test]
async fn whole_logs_tails_and_limits() {
    let env = start(LogLimits::default()).await;
    env.add("p", "c", Some(b"l1\nl2\nl3\nl4\nl5\n"), None, true);
    assert_eq!(
        env.get(&format!("{URL}/p/c")).await,
        (200, "l1\nl2\nl3\nl4\nl5\n".into())
    );
    assert_eq!(
        env.get(&format!("{URL}/p/c?tailLines=2")).await,
        (200, "l4\nl5\n".into())
    );
    assert_eq!(env.get(&format!("{URL}/p/c?tailLines=0")).await, (200, "".into()));
    assert_eq!(
        env.get(&format!("{URL}/p/c?tailLines=99")).await.1,
        "l1\nl2\nl3\nl4\nl5\n"
    );
    assert_eq!(env.get(&format!("{URL}/p/c?limitBytes=4")).await, (200, "l1\nl".into()));
    assert_eq!(env.get(&format!("{URL}/p/c?tailLines=2&limitBytes=4")).await.1, "l4\nl");
    // timestamps is accepted (and does nothing: there are no times per line).
    assert_eq!(
        env.get(&format!("{URL}/p/c?timestamps=true")).await.1,
        "l1\nl2\nl3\nl4\nl5\n"
    );
}

#[tokio::test]
async fn a_tail_of_a_file_larger_than_a_read_block() {
    let env = start(LogLimits::default()).await;
    let mut content = String::new();
    for i in 0..30_000 {
        content.push_str(&format!("line {i:05}\n"));
    }
    assert!(content.len() > 4 * LogLimits::default().block_bytes, "several blocks");
    env.add("big", "c", Some(content.as_bytes()), None, true);
    let (code, body) = env.get(&format!("{URL}/big/c?tailLines=25000")).await;
    assert_eq!(code, 200);
    assert_eq!(body.lines().count(), 25_000);
    assert!(body.starts_with("line 05000\n"), "{:?}", &body[..20]);
    assert!(body.ends_with("line 29999\n"));
    let (_, whole) = env.get(&format!("{URL}/big/c")).await;
    assert_eq!(whole, content);
}

#[tokio::test]
async fn previous_runs_and_the_errors_of_the_kubelet() {
    let env = start(LogLimits::default()).await;
    env.add("p", "c", Some(b"now\n"), Some(b"before\n"), true);
    env.add("p", "fresh", Some(b"first run\n"), None, true);
    env.add("p", "starting", None, None, false);
    assert_eq!(
        env.get(&format!("{URL}/p/c?previous=true")).await,
        (200, "before\n".into())
    );
    // A follow of the previous run is a plain read: that run is over.
    assert_eq!(
        env.get(&format!("{URL}/p/c?previous=true&follow=true")).await,
        (200, "before\n".into())
    );
    assert_eq!(
        env.get(&format!("{URL}/p/fresh?previous=true")).await,
        (
            400,
            "previous terminated container \"fresh\" in pod \"p\" not found".into()
        )
    );
    assert_eq!(
        env.get(&format!("{URL}/p/starting")).await,
        (
            400,
            "container \"starting\" in pod \"p\" is waiting to start: ContainerCreating".into()
        )
    );
    assert_eq!(
        env.get(&format!("{URL}/nope/c")).await,
        (404, "pod \"nope\" does not exist".into())
    );
    assert_eq!(
        env.get(&format!("{URL}/p/x")).await,
        (404, "container \"x\" not found in pod \"p\"".into())
    );
    assert_eq!(env.get(&format!("{URL}/p/c?tailLines=x")).await.0, 400);
    assert_eq!(env.get(&format!("{URL}/p/c?tailLines=-1")).await.0, 422);
    assert_eq!(env.get(&format!("{URL}/p/c?limitBytes=0")).await.0, 422);
}

#[tokio::test]
async fn since_skips_a_file_last_written_before_it() {
    let env = start(LogLimits::default()).await;
    let (path, _running) = env.add("p", "c", Some(b"old\n"), None, true);
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_modified(two_hours_ago))
        .expect("set mtime");
    assert_eq!(env.get(&format!("{URL}/p/c?sinceSeconds=60")).await, (200, "".into()));
    assert_eq!(env.get(&format!("{URL}/p/c?sinceSeconds=10800")).await.1, "old\n");
    assert_eq!(
        env.get(&format!("{URL}/p/c?sinceTime=2000-01-01T00:00:00Z")).await.1,
        "old\n"
    );
    assert_eq!(
        env.get(&format!("{URL}/p/c?sinceSeconds=1&sinceTime=2000-01-01T00:00:00Z"))
            .await
            .0,
        422
    );
}

#[tokio::test]
async fn a_follow_sees_appends_survives_copytruncate_and_ends_with_the_run() {
    let env = start(LogLimits::default()).await;
    let (path, running) = env.add("p", "c", Some(b"a\n"), None, true);
    let (code, mut body) = Http::open(env.addr, &format!("{URL}/p/c?follow=true")).await;
    assert_eq!(code, 200);
    assert_eq!(body.until("a\n").await, "a\n");
    append(&path, b"b\n");
    assert_eq!(body.until("b\n").await, "b\n");
    // Rotation by copytruncate: the file starts again, shorter than what was read.
    OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(0))
        .expect("truncate");
    append(&path, b"c\n");
    assert_eq!(body.until("c\n").await, "c\n");
    // The last words of the run, then its end: both reach the client, then the body ends.
    append(&path, b"last\n");
    running.send(false).expect("running");
    assert_eq!(String::from_utf8_lossy(&body.rest().await), "last\n");

    // A follow of a run that is over reads to the end and ends.
    let (code, mut body) = Http::open(env.addr, &format!("{URL}/p/c?follow=true")).await;
    assert_eq!(code, 200);
    assert_eq!(String::from_utf8_lossy(&body.rest().await), "c\nlast\n");
}

#[tokio::test]
async fn a_follow_with_a_tail_or_a_limit() {
    let env = start(LogLimits::default()).await;
    let (path, _running) = env.add("p", "c", Some(b"1\n2\n3\n"), None, true);
    let (_, mut body) = Http::open(env.addr, &format!("{URL}/p/c?follow=true&tailLines=1")).await;
    assert_eq!(body.until("3\n").await, "3\n");
    append(&path, b"4\n");
    assert_eq!(body.until("4\n").await, "4\n");
    // limitBytes ends a follow once it is reached.
    let (_, mut limited) = Http::open(env.addr, &format!("{URL}/p/c?follow=true&limitBytes=9")).await;
    assert_eq!(limited.until("4\n").await, "1\n2\n3\n4\n");
    append(&path, b"56789\n");
    assert_eq!(String::from_utf8_lossy(&limited.rest().await), "5");
}

#[tokio::test]
async fn follows_are_bounded_and_a_client_that_goes_away_frees_its_place() {
    let env = start(LogLimits {
        follows_max: 1,
        ..LogLimits::default()
    })
    .await;
    let (_path, _running) = env.add("p", "c", Some(b"x\n"), None, true);
    let (code, mut first) = Http::open(env.addr, &format!("{URL}/p/c?follow=true")).await;
    assert_eq!(code, 200);
    assert_eq!(first.until("x\n").await, "x\n");
    let (code, body) = env.get(&format!("{URL}/p/c?follow=true")).await;
    assert_eq!(code, 503, "{body}");
    // A plain read is not a follow.
    assert_eq!(env.get(&format!("{URL}/p/c")).await, (200, "x\n".into()));
    drop(first);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (code, mut body) = Http::open(env.addr, &format!("{URL}/p/c?follow=true")).await;
        if code == 200 {
            assert_eq!(body.until("x\n").await, "x\n");
            break;
        }
        assert_eq!(code, 503);
        assert!(
            Instant::now() < deadline,
            "the follow of a client that went away still holds its place"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
