//! What the workloads share: loopback-only endpoints, connections, deadlines, latency
//! summaries, process memory and a small JSON writer.

use std::fmt::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tonic::transport::{Channel, Endpoint};

/// Errors end the run with a message; the tool has no recovery to choose between.
pub type BenchError = String;
pub type BenchResult<T> = Result<T, BenchError>;

/// Parses `--endpoints` (`host:port[,host:port...]`, an optional `http://` prefix) and
/// refuses anything that is not a loopback address: this tool generates load and must
/// never be pointed at another machine by accident.
pub fn parse_endpoints(spec: &str) -> BenchResult<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if part.starts_with("https://") {
            return Err(format!("{part}: TLS endpoints are not supported"));
        }
        let hostport = part.strip_prefix("http://").unwrap_or(part);
        let hostport = hostport.trim_end_matches('/');
        let addrs: Vec<SocketAddr> = hostport
            .to_socket_addrs()
            .map_err(|e| format!("{part}: {e}"))?
            .collect();
        let Some(first) = addrs.first().copied() else {
            return Err(format!("{part}: resolves to no address"));
        };
        if let Some(bad) = addrs.iter().find(|a| !a.ip().is_loopback()) {
            return Err(format!(
                "{part}: resolves to {bad}, which is not a loopback address; \
                 capstan-bench only targets 127.0.0.0/8 or ::1"
            ));
        }
        out.push(first);
    }
    if out.is_empty() {
        return Err("no endpoint given".into());
    }
    Ok(out)
}

/// A fixed point in time the whole run must end by.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(Instant);

impl Deadline {
    pub fn after(d: Duration) -> Deadline {
        Deadline(Instant::now() + d)
    }

    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    pub fn passed(&self) -> bool {
        Instant::now() >= self.0
    }

    /// The earlier of the deadline and `now + d`.
    pub fn min_after(&self, d: Duration) -> Duration {
        self.remaining().min(d)
    }
}

/// Opens `n` HTTP/2 connections, spread round-robin over `endpoints`.
pub async fn connect_all(endpoints: &[SocketAddr], n: usize, deadline: Deadline) -> BenchResult<Vec<Channel>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let addr = endpoints[i % endpoints.len()];
        out.push(connect(addr, deadline).await?);
    }
    Ok(out)
}

pub async fn connect(addr: SocketAddr, deadline: Deadline) -> BenchResult<Channel> {
    let ep = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("{addr}: {e}"))?
        .tcp_nodelay(true)
        .connect_timeout(deadline.min_after(Duration::from_secs(10)));
    match tokio::time::timeout(deadline.min_after(Duration::from_secs(10)), ep.connect()).await {
        Ok(Ok(ch)) => Ok(ch),
        Ok(Err(e)) => Err(format!("connecting to {addr}: {e}")),
        Err(_) => Err(format!("connecting to {addr}: timed out")),
    }
}

/// Latency histogram in microseconds, 1 µs to 10 minutes, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("static histogram bounds are valid")
}

pub fn record_us(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_micros() as u64).max(1));
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct LatencySummary {
    pub count: u64,
    pub min_us: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: h.len(),
            min_us: h.min(),
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }

    /// One human-readable line: `p50 1.234 ms  p99 ...`.
    pub fn line(&self) -> String {
        format!(
            "n {}  min {}  mean {}  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            self.count,
            fmt_us(self.min_us as f64),
            fmt_us(self.mean_us),
            fmt_us(self.p50_us as f64),
            fmt_us(self.p90_us as f64),
            fmt_us(self.p99_us as f64),
            fmt_us(self.p999_us as f64),
            fmt_us(self.max_us as f64),
        )
    }

    pub fn json(&self) -> Json {
        let mut j = Json::new();
        j.int("count", self.count as i64)
            .int("min_us", self.min_us as i64)
            .num("mean_us", self.mean_us)
            .int("p50_us", self.p50_us as i64)
            .int("p90_us", self.p90_us as i64)
            .int("p99_us", self.p99_us as i64)
            .int("p999_us", self.p999_us as i64)
            .int("max_us", self.max_us as i64);
        j
    }
}

pub fn fmt_us(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.3} s", us / 1_000_000.0)
    } else if us >= 1_000.0 {
        format!("{:.3} ms", us / 1_000.0)
    } else {
        format!("{us:.0} µs")
    }
}

/// Resident set size of a process, from `/proc/<pid>/status` (VmRSS, kB).
pub fn rss_bytes(pid: u32) -> BenchResult<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            let kb: u64 = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{path}: cannot parse {line:?}"))?;
            return Ok(kb * 1024);
        }
    }
    Err(format!("{path}: no VmRSS line"))
}

/// A tiny deterministic PRNG (xorshift64*), so key choice costs nothing and needs no crate.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// A JSON object with fields in insertion order; enough for flat results.
#[derive(Clone, Debug, Default)]
pub struct Json {
    fields: Vec<(String, JsonValue)>,
}

#[derive(Clone, Debug)]
enum JsonValue {
    Num(f64),
    Int(i64),
    Str(String),
    Bool(bool),
    Null,
    Obj(Json),
}

impl Json {
    pub fn new() -> Json {
        Json::default()
    }

    pub fn num(&mut self, k: &str, v: f64) -> &mut Json {
        let v = if v.is_finite() {
            JsonValue::Num(v)
        } else {
            JsonValue::Null
        };
        self.fields.push((k.into(), v));
        self
    }

    pub fn int(&mut self, k: &str, v: i64) -> &mut Json {
        self.fields.push((k.into(), JsonValue::Int(v)));
        self
    }

    pub fn opt_int(&mut self, k: &str, v: Option<i64>) -> &mut Json {
        self.fields.push((k.into(), v.map_or(JsonValue::Null, JsonValue::Int)));
        self
    }

    pub fn str(&mut self, k: &str, v: &str) -> &mut Json {
        self.fields.push((k.into(), JsonValue::Str(v.into())));
        self
    }

    pub fn bool(&mut self, k: &str, v: bool) -> &mut Json {
        self.fields.push((k.into(), JsonValue::Bool(v)));
        self
    }

    pub fn obj(&mut self, k: &str, v: Json) -> &mut Json {
        self.fields.push((k.into(), JsonValue::Obj(v)));
        self
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        self.write(&mut s);
        s
    }

    fn write(&self, s: &mut String) {
        s.push('{');
        for (i, (k, v)) in self.fields.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            write_str(s, k);
            s.push(':');
            match v {
                JsonValue::Num(n) => {
                    let _ = write!(s, "{n}");
                }
                JsonValue::Int(n) => {
                    let _ = write!(s, "{n}");
                }
                JsonValue::Str(v) => write_str(s, v),
                JsonValue::Bool(b) => s.push_str(if *b { "true" } else { "false" }),
                JsonValue::Null => s.push_str("null"),
                JsonValue::Obj(o) => o.write(s),
            }
        }
        s.push('}');
    }
}

fn write_str(s: &mut String, v: &str) {
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_loopback() {
        assert!(parse_endpoints("127.0.0.1:2379").is_ok());
        assert!(parse_endpoints("http://127.0.0.1:2379,[::1]:2380").is_ok());
        assert!(parse_endpoints("10.0.0.1:2379").is_err());
        assert!(parse_endpoints("https://127.0.0.1:2379").is_err());
        assert!(parse_endpoints("").is_err());
    }

    #[test]
    fn json_renders_and_escapes() {
        let mut inner = Json::new();
        inner.int("a", 1);
        let mut j = Json::new();
        j.str("s", "q\"\n").num("x", 1.5).num("nan", f64::NAN).obj("o", inner);
        assert_eq!(j.render(), r#"{"s":"q\"\n","x":1.5,"nan":null,"o":{"a":1}}"#);
    }
}
