//! The Kubernetes API client the Kubernetes load tools share (`kube`, `pods`, `scheduler`): plain
//! HTTP/1.1 keep-alive connections to a loopback server, answers read whole up to
//! [`BODY_MAX_BYTES`].

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::common::BenchResult;

/// Answers are read whole up to this size (a list of all bench pods stays far below).
pub const BODY_MAX_BYTES: usize = 64 << 20;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// The Kubernetes API over plain HTTP/1.1 keep-alive connections.
pub struct Api {
    pub client: HttpClient,
    pub base: String,
}

impl Api {
    pub fn new(server: &str, connections: usize) -> BenchResult<Api> {
        let base = check_loopback(server)?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Ok(Api {
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(connections.max(1))
                .build(connector),
            base,
        })
    }

    pub fn request(&self, method: Method, path: &str, body: Option<String>) -> BenchResult<Request<Full<Bytes>>> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("accept", "application/json");
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        req.body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| format!("request: {e}"))
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<String>) -> BenchResult<(StatusCode, Bytes)> {
        let resp = self
            .client
            .request(self.request(method, path, body)?)
            .await
            .map_err(|e| format!("{path}: {e}"))?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), BODY_MAX_BYTES)
            .collect()
            .await
            .map_err(|e| format!("{path}: reading the answer: {e}"))?
            .to_bytes();
        Ok((status, body))
    }

    /// GET that must succeed, as JSON.
    pub async fn get_json(&self, path: &str) -> BenchResult<Value> {
        let (status, body) = self.call(Method::GET, path, None).await?;
        if !status.is_success() {
            return Err(format!("GET {path}: {status}: {}", String::from_utf8_lossy(&body)));
        }
        parse_json(&body)
    }
}

pub fn parse_json(bytes: &[u8]) -> BenchResult<Value> {
    serde_json::from_slice(bytes).map_err(|e| format!("an answer that is not JSON: {e}"))
}

pub fn check_loopback(server: &str) -> BenchResult<String> {
    let rest = server
        .strip_prefix("http://")
        .ok_or_else(|| format!("the API server {server:?}: only http:// is supported"))?;
    let rest = rest.trim_end_matches('/');
    let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
    if !(host == "127.0.0.1" || host == "localhost" || host == "[::1]") {
        return Err(format!("the API server {server:?}: only loopback servers are measured"));
    }
    Ok(format!("http://{rest}"))
}

/// A run id for labels and names: distinct per run, short, a valid label value.
pub fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}", (nanos as u64 ^ u64::from(std::process::id())) & 0xff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_apis() {
        assert_eq!(
            check_loopback("http://127.0.0.1:6443/").as_deref(),
            Ok("http://127.0.0.1:6443")
        );
        assert!(check_loopback("http://10.0.0.1:6443").is_err());
        assert!(check_loopback("https://127.0.0.1:6443").is_err());
    }
}
