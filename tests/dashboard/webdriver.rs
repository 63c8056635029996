//! Just enough of the W3C WebDriver protocol to drive headless Chromium through Debian's
//! `chromedriver`: a session, navigation, elements (find, click, type), scripts and
//! screenshots. JSON over HTTP/1.1 on loopback, one connection per command.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The key of an element reference in WebDriver's JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// The longest a single command may take (a page load included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest answer read (screenshots are the big ones).
const RESPONSE_BYTES_MAX: usize = 64 << 20;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A running chromedriver and one browser session of it; both end when dropped.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on `port` and a headless Chromium session that accepts the
    /// test cluster's self-signed certificates.
    pub fn start(port: u16, log: &Path) -> Browser {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: run scripts/install-deps.sh test (Debian's chromium and chromium-driver)"
            );
        }
        let log_file = std::fs::File::create(log).expect("chromedriver log");
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start chromedriver");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        let profile = tempfile::tempdir().expect("a browser profile");
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
            profile,
        };
        let until = Instant::now() + Duration::from_secs(30);
        while !browser
            .call("GET", "/status", None)
            .is_ok_and(|v| v["value"]["ready"] == true)
        {
            assert!(Instant::now() < until, "chromedriver not ready within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        // The flags Chromium needs on a machine with no outside network and no display.
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,1000",
            &format!("--user-data-dir={}", browser.profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let created = browser
            .call("POST", "/session", Some(&caps))
            .expect("a browser session");
        browser.session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {created}"))
            .to_owned();
        browser
    }

    /// A session command: `path` is below `/session/<id>`.
    pub fn cmd(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let full = format!("/session/{}{path}", self.session);
        match self.call(method, &full, body) {
            Ok(v) => v["value"].clone(),
            Err(e) => panic!("WebDriver {method} {path}: {e}"),
        }
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(&json!({ "url": url })));
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub fn script(&self, script: &str, args: Value) -> Value {
        self.cmd("POST", "/execute/sync", Some(&json!({"script": script, "args": args})))
    }

    /// The element `css` selects, if any now. Any failure but WebDriver's "no such
    /// element" is the test's failure.
    pub fn find(&self, css: &str) -> Option<String> {
        let full = format!("/session/{}/element", self.session);
        match self.call("POST", &full, Some(&json!({"using": "css selector", "value": css}))) {
            Ok(v) => Some(
                v["value"][ELEMENT]
                    .as_str()
                    .unwrap_or_else(|| panic!("no element reference in {v}"))
                    .to_owned(),
            ),
            Err(e) if e.starts_with("\"no such element\"") => None,
            Err(e) => panic!("WebDriver: finding {css}: {e}"),
        }
    }

    /// Waits for `css` to select an element, at most `deadline`.
    pub fn wait_for(&self, css: &str, deadline: Duration) -> String {
        self.until(&format!("an element {css}"), deadline, || self.find(css))
    }

    pub fn click(&self, css: &str) {
        let e = self.wait_for(css, Duration::from_secs(30));
        self.cmd("POST", &format!("/element/{e}/click"), Some(&json!({})));
    }

    /// Clears the input `css` selects and types `text` into it.
    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.wait_for(css, Duration::from_secs(30));
        self.cmd("POST", &format!("/element/{e}/clear"), Some(&json!({})));
        self.cmd("POST", &format!("/element/{e}/value"), Some(&json!({ "text": text })));
    }

    /// The text of the element `css` selects, if there is one.
    pub fn text(&self, css: &str) -> Option<String> {
        self.script(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
            json!([css]),
        )
        .as_str()
        .map(|s| s.trim().to_owned())
    }

    /// Polls `f` every 200 ms until it gives `Some`, at most `deadline`; past it, panics
    /// naming `what`, with a screenshot of the page beside the test's artefacts.
    pub fn until<T>(&self, what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
        let until = Instant::now() + deadline;
        loop {
            if let Some(v) = f() {
                return v;
            }
            if Instant::now() > until {
                let shot = artefact("dashboard-failure.png");
                let saved = self.try_screenshot(&shot);
                panic!("{what}: not within {deadline:?} (screenshot: {saved})");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A PNG of the page.
    pub fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let b64 = self.cmd("GET", "/screenshot", None);
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().expect("a base64 screenshot"))
            .expect("base64 screenshot")
    }

    fn try_screenshot(&self, to: &Path) -> String {
        let full = format!("/session/{}/screenshot", self.session);
        let Ok(v) = self.call("GET", &full, None) else {
            return "none".into();
        };
        use base64::Engine;
        match v["value"]
            .as_str()
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        {
            Some(png) if std::fs::write(to, &png).is_ok() => to.display().to_string(),
            _ => "none".into(),
        }
    }

    /// One WebDriver request; an error answer (`value.error`) is an `Err`.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(COMMAND_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
        let payload = read_answer(&mut stream)?;
        let v: Value =
            serde_json::from_slice(&payload).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&payload)))?;
        if v["value"]["error"].is_string() {
            return Err(format!("{}: {}", v["value"]["error"], v["value"]["message"]));
        }
        Ok(v)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The body of an HTTP/1.1 answer. chromedriver keeps connections open whatever the
/// request says, so the body ends where its length says, not at the connection's end.
fn read_answer(stream: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 << 10];
    let complete = |raw: &[u8]| -> Option<Result<Vec<u8>, String>> {
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
        let body = &raw[split + 4..];
        let length = head.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            (name.trim() == "content-length").then(|| value.trim().parse::<usize>().ok())?
        });
        if let Some(length) = length {
            return (body.len() >= length).then(|| Ok(body[..length].to_vec()));
        }
        if head.contains("transfer-encoding: chunked") {
            return body.ends_with(b"0\r\n\r\n").then(|| dechunk(body));
        }
        None
    };
    loop {
        if let Some(done) = complete(&raw) {
            return done;
        }
        let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            // Closed: what came is the whole body, if it has a head.
            let split = raw
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .ok_or_else(|| format!("not an HTTP answer: {}", String::from_utf8_lossy(&raw)))?;
            return Ok(raw[split + 4..].to_vec());
        }
        raw.extend_from_slice(&buf[..n]);
        if raw.len() > RESPONSE_BYTES_MAX {
            return Err(format!("an answer over {RESPONSE_BYTES_MAX} bytes"));
        }
    }
}

/// A chunked HTTP body, joined.
fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk without its size line")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|e| format!("chunk size {size_text:?}: {e}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size {
            return Err("a truncated chunk".into());
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

/// Where a test keeps what it made for people to look at: `<target>/test-artefacts/`.
pub fn artefact(name: &str) -> PathBuf {
    // CARGO_TARGET_TMPDIR is <target>/tmp; the artefacts go beside it, where CI can
    // collect them.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf)
        .join("test-artefacts");
    std::fs::create_dir_all(&dir).expect("the artefacts directory");
    dir.join(name)
}

#[test]
fn chunked_bodies_are_joined() {
    assert_eq!(dechunk(b"3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n").expect("ok"), b"abcde");
    assert!(dechunk(b"5\r\nab").is_err());
}
