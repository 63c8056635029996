//! Hostile requests to the Kubernetes API (issue 10): each gets its error or its timeout,
//! and the server keeps serving everyone else.
//!
//! Raw TCP, so that the requests can be as broken as an attacker makes them: deep JSON
//! nesting, invalid UTF-8, a huge label selector, a header bomb, slowloris connections,
//! thousands of idle connections, a watch that is never read, a noisy client against a
//! quiet one (flow control), and more connections than the server takes.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use common::{eventually, Server};

/// How long any one answer may take (the server answers in milliseconds; a deadline, not
/// a measurement).
const ANSWER_DEADLINE: Duration = Duration::from_secs(30);

/// A connection from `from` (any 127/8 address: loopback takes them all; the flow
/// control tells clients apart by address when no one is authenticated).
async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(IpAddr::V4(from), 0))
        .expect("bind a loopback address");
    socket.connect(to).await.expect("connect")
}

/// Reads one HTTP/1.1 response (headers, and a body by Content-Length or chunked to its
/// end) from `stream`; None if the connection ends first.
async fn read_response(stream: &mut TcpStream) -> Option<(u16, String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    let read = async {
        loop {
            if let Some(head_end) = find(&buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let body_start = head_end + 4;
                let code: u16 = head.split(' ').nth(1)?.parse().ok()?;
                let lower = head.to_ascii_lowercase();
                let length = lower
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                let chunked = lower.contains("transfer-encoding: chunked");
                let complete = match length {
                    Some(n) => buf.len() >= body_start + n,
                    None if chunked => find(&buf[body_start..], b"0\r\n\r\n").is_some(),
                    None => code == 101 || code == 304 || code == 204,
                };
                if complete {
                    let body = String::from_utf8_lossy(&buf[body_start..]).to_string();
                    return Some((code, head, body));
                }
            }
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(ANSWER_DEADLINE, read)
        .await
        .expect("an answer or a close in time")
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One request on a new connection from 127.0.0.1: its status, head and body.
async fn request(api: SocketAddr, raw: &[u8]) -> Option<(u16, String, String)> {
    let mut s = TcpStream::connect(api).await.expect("connect");
    s.write_all(raw).await.ok()?;
    read_response(&mut s).await
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: capstan\r\nAccept: application/json\r\n\r\n").into_bytes()
}

fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: capstan\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// Asserts a Kubernetes Status answer with `code` and `reason`.
fn assert_status(what: &str, answer: &Option<(u16, String, String)>, code: u16, reason: &str) {
    let (got, head, body) = answer
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: the connection closed without an answer"));
    assert_eq!(*got, code, "{what}: {head}\n{body}");
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body}"));
    assert_eq!(v["kind"], "Status", "{what}: {body}");
    assert_eq!(v["code"], code, "{what}: {body}");
    assert_eq!(v["reason"], reason, "{what}: {body}");
}

/// The server still serves an ordinary request, from a new connection.
async fn assert_serving(api: SocketAddr, after: &str) {
    let r = request(api, &get("/api/v1/namespaces/default")).await;
    assert_eq!(r.as_ref().map(|r| r.0), Some(200), "after {after}: {r:?}");
}

/// Waits until the server closes `stream` (a read returns end of file or an error),
/// writing `trickle` a byte at a time meanwhile when given (slowloris).
async fn closed_by_server(mut stream: TcpStream, trickle: Option<&[u8]>, what: &str) {
    let deadline = Duration::from_secs(60);
    let mut bytes = trickle.unwrap_or_default().iter().cycle();
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let mut b = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut b)).await {
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(_)) => {} // an answer (a 408, say): read on to the close
            Err(_) => {}
        }
        if let (Some(_), Some(byte)) = (trickle, bytes.next()) {
            if stream.write_all(&[*byte]).await.is_err() {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < until,
            "{what}: still open after {deadline:?}"
        );
    }
}

async fn wait_ready(api: SocketAddr) {
    eventually("the API serving", Duration::from_secs(60), || async move {
        let s = TcpStream::connect(api).await.ok()?;
        drop(s);
        let r = request(api, &get("/api/v1/namespaces/default")).await?;
        (r.0 == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_their_errors_and_others_are_served() {
    let dir = tempfile::tempdir().expect("temp dir");
    let listen = format!("127.0.0.1:{}", common::free_port());
    let _server = Server::start_with(
        &dir.path().join("data"),
        &dir.path().join("server.log"),
        &[
            "--apiserver-listen",
            &listen,
            "--header-read-timeout-ms",
            "2000",
            "--max-requests-inflight",
            "8",
            "--max-requests-inflight-per-client",
            "2",
            "--request-queue-length",
            "100",
            "--request-queue-wait-ms",
            "1000",
        ],
    );
    let api: SocketAddr = listen.parse().expect("address");
    wait_ready(api).await;
    let cms = "/api/v1/namespaces/default/configmaps";

    // Deep JSON nesting: refused by the decoder's depth limit, not by the stack.
    let deep = format!("{}{}", "[".repeat(1 << 20), "]".repeat(1 << 20));
    assert_status(
        "1 MiB of nested arrays",
        &request(api, &post(cms, deep.as_bytes())).await,
        400,
        "BadRequest",
    );
    let mut deep_object =
        String::from(r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"deep","annotations":"#);
    deep_object.push_str(&r#"{"a":"#.repeat(100_000));
    deep_object.push_str(&"}".repeat(100_000));
    deep_object.push_str("}}");
    assert_status(
        "100,000 nested objects",
        &request(api, &post(cms, deep_object.as_bytes())).await,
        400,
        "BadRequest",
    );
    let ok = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"target"},"data":{"k":"v"}}"#;
    assert_eq!(request(api, &post(cms, ok)).await.map(|r| r.0), Some(201));
    let patch = format!("{}{}", r#"{"data":"#.repeat(50_000), "}".repeat(50_000));
    let mut raw = format!(
        "PATCH {cms}/target HTTP/1.1\r\nHost: capstan\r\nContent-Type: application/merge-patch+json\r\nContent-Length: {}\r\n\r\n",
        patch.len()
    )
    .into_bytes();
    raw.extend_from_slice(patch.as_bytes());
    assert_status(
        "a deeply nested merge patch",
        &request(api, &raw).await,
        400,
        "BadRequest",
    );
    assert_serving(api, "deep nesting").await;

    // Invalid UTF-8: in a JSON body, in the path, in a header.
    let bad_utf8 = b"{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"x\xff\xfe\"}}";
    assert_status(
        "invalid UTF-8 in a body",
        &request(api, &post(cms, bad_utf8)).await,
        400,
        "BadRequest",
    );
    let r = request(
        api,
        b"GET /api/v1/namespaces/%ff%fe/configmaps HTTP/1.1\r\nHost: capstan\r\n\r\n",
    )
    .await;
    let code = r.as_ref().map(|r| r.0);
    assert!(matches!(code, Some(400 | 404)), "invalid UTF-8 in the path: {r:?}");
    let r = request(
        api,
        b"GET /api/v1/namespaces HTTP/1.1\r\nHost: capstan\r\nX-Junk: \xff\xfe\xfd\r\n\r\n",
    )
    .await;
    assert!(
        r.as_ref().is_some_and(|r| r.0 == 200 || r.0 == 400),
        "invalid UTF-8 in a header: {r:?}"
    );
    assert_serving(api, "invalid UTF-8").await;

    // A huge label selector: within the server's limits (100 requirements, 8 KiB) it is
    // parsed and answered; past them, and past the URI limit, the request is refused
    // before any work.
    let terms: Vec<String> = (0..100).map(|i| format!("k{i}=v")).collect();
    let r = request(api, &get(&format!("{cms}?labelSelector={}", terms.join(",")))).await;
    let (code, _, body) = r.expect("an answer to a 100-term selector");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("a list");
    assert_eq!(
        v["items"].as_array().map(Vec::len),
        Some(0),
        "no ConfigMap has these 100 labels"
    );
    for n in [101, 5_000] {
        let terms: Vec<String> = (0..n).map(|i| format!("k{i}=v")).collect();
        let r = request(api, &get(&format!("{cms}?labelSelector={}", terms.join(",")))).await;
        assert_status(&format!("a {n}-term selector"), &r, 400, "BadRequest");
    }
    let huge = "a".repeat(4 << 20);
    let r = request(api, &get(&format!("{cms}?labelSelector=x%3D{huge}"))).await;
    assert!(
        r.as_ref().is_none_or(|r| (400..500).contains(&r.0)),
        "a 4 MiB selector is refused: {:?}",
        r.map(|r| r.0)
    );
    assert_serving(api, "huge selectors").await;

    // A header bomb: too many headers, and one header too large.
    let mut bomb = String::from("GET /api/v1/namespaces HTTP/1.1\r\nHost: capstan\r\n");
    for i in 0..10_000 {
        bomb.push_str(&format!("X-H{i}: v\r\n"));
    }
    bomb.push_str("\r\n");
    let r = request(api, bomb.as_bytes()).await;
    assert!(
        r.as_ref().is_none_or(|r| r.0 == 431),
        "10,000 headers: {:?}",
        r.map(|r| r.0)
    );
    let big_header = format!(
        "GET /api/v1/namespaces HTTP/1.1\r\nHost: capstan\r\nX-Big: {}\r\n\r\n",
        "b".repeat(1 << 20)
    );
    let r = request(api, big_header.as_bytes()).await;
    assert!(
        r.as_ref().is_none_or(|r| r.0 == 431),
        "a 1 MiB header: {:?}",
        r.map(|r| r.0)
    );
    assert_serving(api, "header bombs").await;

    // Slowloris: a header trickled a byte at a time, a connection that says nothing, a
    // body that never comes: each is closed by the header timeout (2 s here) or
    // answered, while others are served.
    let trickler = TcpStream::connect(api).await.expect("connect");
    let silent = TcpStream::connect(api).await.expect("connect");
    assert_serving(api, "slowloris connections opened").await;
    let header = b"GET /api/v1/namespaces HTTP/1.1\r\nHost: capstan\r\nX-Slow: ";
    let loris = tokio::spawn(async move { closed_by_server(trickler, Some(header), "a trickled header").await });
    closed_by_server(silent, None, "a connection that sends nothing").await;
    loris.await.expect("slowloris task");
    assert_serving(api, "slowloris").await;

    // Thousands of idle connections: the server keeps serving, then closes them all.
    let mut idle = Vec::new();
    for _ in 0..2_000 {
        idle.push(TcpStream::connect(api).await.expect("connect an idle connection"));
    }
    assert_serving(api, "2,000 idle connections opened").await;
    let closes: Vec<_> = idle
        .into_iter()
        .map(|s| tokio::spawn(async move { closed_by_server(s, None, "an idle connection").await }))
        .collect();
    for c in closes {
        c.await.expect("idle connection task");
    }
    assert_serving(api, "2,000 idle connections closed").await;

    // A watch that is never read while events pile up: the server drops it (its queues
    // are bounded: 1,280 events and the socket's buffers) instead of buffering without
    // bound, and a watch that is read sees every event, undelayed by the other.
    const EVENTS: usize = 2_600;
    let mut unread = TcpStream::connect(api).await.expect("connect");
    unread
        .write_all(&get(&format!("{cms}?watch=true&labelSelector=pile")))
        .await
        .expect("send the watch");
    assert_eq!(read_response_head(&mut unread).await, Some(200));
    let mut reader = TcpStream::connect(api).await.expect("connect");
    reader
        .write_all(&get(&format!("{cms}?watch=true&labelSelector=pile")))
        .await
        .expect("send the watch");
    assert_eq!(read_response_head(&mut reader).await, Some(200));
    let read_all = tokio::spawn(async move { count_events(&mut reader, Some(EVENTS)).await });
    let value = "v".repeat(16 << 10);
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let value = value.clone();
            tokio::spawn(async move {
                for i in (w..EVENTS).step_by(4) {
                    let body = format!(
                        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"pile-{i}","labels":{{"pile":"yes"}}}},"data":{{"k":"{value}"}}}}"#
                    );
                    let r = request(api, &post(cms, body.as_bytes())).await;
                    assert_eq!(r.as_ref().map(|r| r.0), Some(201), "create pile-{i} while a watch is not read");
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    assert_eq!(
        read_all.await.expect("reader"),
        EVENTS,
        "the read watch saw every event"
    );
    let unread_events = count_events(&mut unread, None).await;
    assert!(
        unread_events < EVENTS,
        "the unread watch was ended early ({unread_events} of {EVENTS} events)"
    );
    assert_serving(api, "a watch never read").await;

    // Flow control: a noisy client (127.0.0.2) holds its 2 seats with bodies it never
    // finishes; its next request waits its turn (1 s at most here), then gets 429 and
    // Retry-After, while a quiet client (127.0.0.1) is served. Once the bodies arrive,
    // the noisy client is served again.
    let noisy = Ipv4Addr::new(127, 0, 0, 2);
    let body = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"slow-NN"}}"#;
    let mut holders = Vec::new();
    for i in 0..2 {
        let mut s = connect_from(noisy, api).await;
        let full = String::from_utf8_lossy(body).replace("NN", &i.to_string());
        let head = format!(
            "POST {cms} HTTP/1.1\r\nHost: capstan\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            full.len()
        );
        s.write_all(head.as_bytes()).await.expect("send the head");
        s.write_all(&full.as_bytes()[..10])
            .await
            .expect("send a part of the body");
        holders.push((s, full));
    }
    let refused = eventually("the noisy client refused with 429", ANSWER_DEADLINE, || async move {
        let mut s = connect_from(noisy, api).await;
        s.write_all(&get(cms)).await.ok()?;
        let r = read_response(&mut s).await?;
        (r.0 == 429).then_some(r)
    })
    .await;
    let refused = Some(refused);
    assert_status("the noisy client's third request", &refused, 429, "TooManyRequests");
    let head = refused.as_ref().map(|r| r.1.to_ascii_lowercase()).unwrap_or_default();
    assert!(head.contains("retry-after: 1"), "{head}");
    assert_serving(api, "the noisy client's seats taken").await;
    for (s, full) in &mut holders {
        s.write_all(&full.as_bytes()[10..]).await.expect("finish the body");
        let r = read_response(s).await;
        assert_eq!(r.as_ref().map(|r| r.0), Some(201), "{r:?}");
    }
    let mut s = connect_from(noisy, api).await;
    s.write_all(&get(cms)).await.expect("send");
    assert_eq!(
        read_response(&mut s).await.map(|r| r.0),
        Some(200),
        "the noisy client served again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_closed_and_the_limit_frees() {
    let dir = tempfile::tempdir().expect("temp dir");
    let listen = format!("127.0.0.1:{}", common::free_port());
    let _server = Server::start_with(
        &dir.path().join("data"),
        &dir.path().join("server.log"),
        &["--apiserver-listen", &listen, "--max-connections", "50"],
    );
    let api: SocketAddr = listen.parse().expect("address");
    wait_ready(api).await;
    // Watches take the connections (long-running: no header timeout, no seat) until
    // one is closed unanswered; the server's own components hold a few of the 50.
    let mut watches = Vec::new();
    loop {
        assert!(watches.len() <= 50, "more than 50 connections were served");
        let mut s = TcpStream::connect(api).await.expect("connect");
        s.write_all(&get("/api/v1/namespaces?watch=true"))
            .await
            .expect("send a watch");
        match read_response_head(&mut s).await {
            Some(code) => assert_eq!(code, 200, "a watch is answered"),
            None => break,
        }
        watches.push(s);
    }
    assert!(!watches.is_empty(), "no watch was served");
    let r = request(api, &get("/api/v1/namespaces/default")).await;
    assert!(r.is_none(), "a connection past the limit is closed: {r:?}");
    drop(watches);
    eventually(
        "a connection served once the watches are gone",
        ANSWER_DEADLINE,
        || async move {
            let r = request(api, &get("/api/v1/namespaces/default")).await?;
            (r.0 == 200).then_some(())
        },
    )
    .await;
}

/// Counts the ADDED events a watch's chunked body brings: until `until` of them, or
/// else until the server ends the response (its last chunk, or the connection's end).
async fn count_events(stream: &mut TcpStream, until: Option<usize>) -> usize {
    let needle = b"\"type\":\"ADDED\"";
    let mut count = 0;
    let mut carry: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    let read = async {
        loop {
            if until.is_some_and(|n| count >= n) {
                return;
            }
            let n = match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            carry.extend_from_slice(&chunk[..n]);
            count += carry.windows(needle.len()).filter(|w| w == needle).count();
            let ended = find(&carry, b"\r\n0\r\n\r\n").is_some();
            // Keep a tail that may hold the start of a split needle.
            let keep = carry.len().min(needle.len() - 1);
            carry.drain(..carry.len() - keep);
            if ended {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .expect("the watch's events within 2 minutes");
    count
}

/// The status of a response whose body streams on (a watch): read up to its head.
async fn read_response_head(stream: &mut TcpStream) -> Option<u16> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        while find(&buf, b"\r\n\r\n").is_none() {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(&buf).split(' ').nth(1)?.parse().ok()
    };
    tokio::time::timeout(ANSWER_DEADLINE, read)
        .await
        .expect("a head in time")
}
