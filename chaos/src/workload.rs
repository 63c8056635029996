//! A register workload over the etcd v3 API, recorded as a [`History`] for the
//! linearizability checker.
//!
//! `clients` tasks each run `ops_per_client` operations, one at a time, on `keys` keys
//! named `{key_prefix}{k}`:
//! - **Put** of a value unique in the run, `c{client}-{n}`, so a read names the write it
//!   saw (this is what makes a register history checkable in practice);
//! - **Get**, linearizable (etcd-client's default: not `serializable`);
//! - **Cas** as a transaction: if the value equals the expected one (`Compare::value`), or
//!   if the key is absent (`create_revision == 0`) when the expected value is `None`, put
//!   the new value. The expected value is usually the last one this client saw for the
//!   key, sometimes one recently written by anyone, sometimes absence, so that both
//!   outcomes happen.
//!
//! Each request has a deadline (`op_timeout_ms`, enforced both by the client's own
//! timeout and by dropping the future). A write or CAS that errs or times out is recorded
//! with an unknown outcome: the request may have been applied. A read that fails is
//! dropped: it changed nothing and told nothing; so is a write whose connection was
//! refused (the request never left the client). After a failure the client pauses
//! briefly before its next request, as real clients back off. Times are nanoseconds from one
//! `Instant` taken before the first request, taken just before sending and just after
//! the answer arrives, so every recorded interval contains the real one.
//!
//! The model starts from absent keys, so the run first deletes everything under the
//! prefix (before any client starts; an error there fails the run). Choices are seeded
//! (one generator per client, from `seed` and the client's index); timing, and so the
//! interleaving, is not reproducible.
//!
//! For runs under faults: `stop` ends the clients when the run says so (rather than
//! after a fixed number of operations), `origin` puts their times on the run's clock,
//! and `key_rotate_ms` moves them to fresh keys now and then so that each key's history
//! stays short. Each acknowledged write records the revision it created, so the run can
//! look for it in the store's final log.
//!
//! Left out: deletes, multi-key transactions, leases and watches (the checker's model is
//! a register per key), and rate limiting (clients are closed-loop).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, DeleteOptions, Txn, TxnOp};

use crate::linearizability::{History, Op, Operation, Outcome, Output};
use crate::{mix64, ChaosError, Result, SplitMix64};

/// Concurrent clients, at most.
pub const CLIENTS_MAX: usize = 1024;
/// Operations per client, at most.
pub const OPS_PER_CLIENT_MAX: usize = 1_000_000;
/// Keys, at most.
pub const KEYS_MAX: usize = 1024;
/// Pause of a client after a failed request.
const ERROR_BACKOFF_MS: u64 = 50;
/// Recently written values remembered per key for choosing CAS expectations.
const RECENT_VALUES_MAX: usize = 8;

/// How clients reach the members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connect {
    /// Every client gets every endpoint (etcd-client balances across them).
    AllEndpoints,
    /// Client i talks only to endpoint i mod n: a fault on one member then shows up as
    /// errors of its clients only.
    OneEndpointEach,
}

#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    pub clients: usize,
    pub ops_per_client: usize,
    pub keys: usize,
    /// Keys are `{key_prefix}{k}`; must not be empty (the run deletes the prefix first).
    pub key_prefix: String,
    pub seed: u64,
    /// Deadline of each request, connection included.
    pub op_timeout_ms: u64,
    /// Share of gets, in percent; then `cas_percent` of CAS; puts make up the rest.
    pub get_percent: u64,
    pub cas_percent: u64,
    pub connect: Connect,
    /// When set, clients stop (each after its operation in flight) once it reads true;
    /// `ops_per_client` stays an upper bound.
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
    /// The instant operation times count from; `None`: just before the first operation.
    /// A run that also records faults passes its own, so both share one clock.
    pub origin: Option<Instant>,
    /// Clients move to fresh keys every this many milliseconds (0: never): key `k` of
    /// generation `g` is `{key_prefix}{g}-{k}`. Each key's history then stays short,
    /// with few unknown outcomes, which keeps the linearizability search cheap on long
    /// runs with many faults (the search is exponential in concurrent unknowns per key).
    pub key_rotate_ms: u64,
}

impl Default for WorkloadConfig {
    fn default() -> WorkloadConfig {
        WorkloadConfig {
            clients: 8,
            ops_per_client: 200,
            keys: 4,
            key_prefix: "/capstan-chaos/register/".into(),
            seed: 1,
            op_timeout_ms: 5_000,
            get_percent: 40,
            cas_percent: 30,
            connect: Connect::AllEndpoints,
            stop: None,
            origin: None,
            key_rotate_ms: 0,
        }
    }
}

impl WorkloadConfig {
    fn validate(&self, endpoints: &[String]) -> Result<()> {
        let bad = |what: String| Err(ChaosError::InvalidConfig(what));
        if endpoints.is_empty() {
            return bad("no endpoint".into());
        }
        if self.clients == 0 || self.clients > CLIENTS_MAX {
            return bad(format!("clients must be 1..={CLIENTS_MAX}, not {}", self.clients));
        }
        if self.ops_per_client > OPS_PER_CLIENT_MAX {
            return bad(format!(
                "ops_per_client must be at most {OPS_PER_CLIENT_MAX}, not {}",
                self.ops_per_client
            ));
        }
        if self.keys == 0 || self.keys > KEYS_MAX {
            return bad(format!("keys must be 1..={KEYS_MAX}, not {}", self.keys));
        }
        if self.key_prefix.is_empty() {
            return bad("key_prefix must not be empty: the run deletes everything under it".into());
        }
        if self.op_timeout_ms == 0 {
            return bad("op_timeout_ms must be positive".into());
        }
        if self.get_percent + self.cas_percent > 100 {
            return bad(format!(
                "get_percent + cas_percent is {}%",
                self.get_percent + self.cas_percent
            ));
        }
        Ok(())
    }

    /// Key `k` of generation `generation` (see [`WorkloadConfig::key_rotate_ms`]).
    fn key(&self, generation: u64, k: usize) -> String {
        if self.key_rotate_ms == 0 {
            format!("{}{k}", self.key_prefix)
        } else {
            format!("{}{generation}-{k}", self.key_prefix)
        }
    }
}

/// Runs the workload against `endpoints` (`http://host:port`) and returns what the
/// clients saw, ordered by call time.
pub async fn run_register_workload(endpoints: Vec<String>, config: WorkloadConfig) -> Result<History> {
    config.validate(&endpoints)?;
    let timeout = Duration::from_millis(config.op_timeout_ms);
    let options = || {
        ConnectOptions::new()
            .with_timeout(timeout)
            .with_connect_timeout(timeout)
    };

    // Start from absent keys.
    let mut admin = Client::connect(&endpoints, Some(options())).await?;
    let clear = admin.delete(config.key_prefix.as_str(), Some(DeleteOptions::new().with_prefix()));
    match tokio::time::timeout(timeout, clear).await {
        Ok(result) => {
            result?;
        }
        Err(_) => {
            return Err(ChaosError::Timeout(format!(
                "clearing the prefix {:?} took more than {} ms",
                config.key_prefix, config.op_timeout_ms
            )))
        }
    }

    let origin = config.origin.unwrap_or_else(Instant::now);
    let recent: Arc<Mutex<Vec<Recent>>> = Arc::new(Mutex::new(vec![Recent::default(); config.keys]));
    let mut tasks = tokio::task::JoinSet::new();
    for client_id in 0..config.clients {
        let client_endpoints = match config.connect {
            Connect::AllEndpoints => endpoints.clone(),
            Connect::OneEndpointEach => vec![endpoints[client_id % endpoints.len()].clone()],
        };
        let client = Client::connect(&client_endpoints, Some(options())).await?;
        let worker = Worker {
            client,
            client_id,
            config: config.clone(),
            rng: SplitMix64::new(mix64(
                config.seed ^ (client_id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            )),
            origin,
            timeout,
            last_seen: vec![None; config.keys],
            generation: 0,
            recent: recent.clone(),
        };
        tasks.spawn(worker.run());
    }
    let mut operations = Vec::with_capacity(config.clients * config.ops_per_client);
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(ops) => operations.extend(ops),
            Err(e) => return Err(ChaosError::Task(e.to_string())),
        }
    }
    operations.sort_by_key(|o| (o.call_ns, o.client_id));
    tracing::info!(
        operations = operations.len(),
        unknown = operations.iter().filter(|o| o.outcome == Outcome::Unknown).count(),
        elapsed_ms = origin.elapsed().as_millis() as u64,
        "register workload done"
    );
    Ok(History::new(operations))
}

struct Worker {
    client: Client,
    client_id: usize,
    config: WorkloadConfig,
    rng: SplitMix64,
    origin: Instant,
    timeout: Duration,
    /// The last value this client saw per key of the current generation (`None`:
    /// absent, or nothing seen yet).
    last_seen: Vec<Option<Vec<u8>>>,
    /// The key generation this client is on (see [`WorkloadConfig::key_rotate_ms`]).
    generation: u64,
    /// Values recently written (attempted) per key index, by any client.
    recent: Arc<Mutex<Vec<Recent>>>,
}

/// Values recently written to key index k, all of one generation.
#[derive(Clone, Debug, Default)]
struct Recent {
    generation: u64,
    values: VecDeque<Vec<u8>>,
}

impl Worker {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX - 1)
    }

    fn remember(&self, k: usize, value: &[u8]) {
        let mut recent = self
            .recent
            .lock()
            .expect("a workload task panicked while holding the recent values");
        let entry = &mut recent[k];
        if entry.generation != self.generation {
            if entry.generation > self.generation {
                // Another client moved on already; this value is of a retired key.
                return;
            }
            entry.generation = self.generation;
            entry.values.clear();
        }
        let values = &mut entry.values;
        if values.len() == RECENT_VALUES_MAX {
            values.pop_front();
        }
        values.push_back(value.to_vec());
    }

    fn recent_value(&mut self, k: usize) -> Option<Vec<u8>> {
        let recent = self
            .recent
            .lock()
            .expect("a workload task panicked while holding the recent values");
        let entry = &recent[k];
        if entry.generation != self.generation || entry.values.is_empty() {
            return None;
        }
        let values = &entry.values;
        values.get(self.rng.below(values.len() as u64) as usize).cloned()
    }

    async fn run(mut self) -> Vec<Operation> {
        let mut ops = Vec::with_capacity(self.config.ops_per_client);
        for n in 0..self.config.ops_per_client {
            if self.config.stop.as_ref().is_some_and(|stop| *stop.borrow()) {
                break;
            }
            // No rotation when key_rotate_ms is 0.
            if let Some(generation) = (self.now_ns() / 1_000_000).checked_div(self.config.key_rotate_ms) {
                if generation != self.generation {
                    self.generation = generation;
                    self.last_seen.iter_mut().for_each(|v| *v = None);
                }
            }
            let k = self.rng.below(self.config.keys as u64) as usize;
            let key = self.config.key(self.generation, k);
            let roll = self.rng.below(100);
            let op = if roll < self.config.get_percent {
                Op::Get
            } else if roll < self.config.get_percent + self.config.cas_percent {
                let expected = match self.rng.below(10) {
                    0..=5 => self.last_seen[k].clone(),
                    6..=8 => self.recent_value(k),
                    _ => None,
                };
                Op::Cas {
                    expected,
                    new: format!("c{}-{n}", self.client_id).into_bytes(),
                }
            } else {
                Op::Put {
                    value: format!("c{}-{n}", self.client_id).into_bytes(),
                }
            };
            if let Some(operation) = self.execute(key, k, op).await {
                ops.push(operation);
            }
        }
        ops
    }

    /// Issues one operation and records it; `None` for a failed get.
    async fn execute(&mut self, key: String, k: usize, op: Op) -> Option<Operation> {
        let call_ns = self.now_ns();
        // The revision an acknowledged write created.
        let mut revision = None;
        let result: std::result::Result<Output, Failure> = match &op {
            Op::Get => {
                let request = self.client.get(key.as_str(), None);
                match tokio::time::timeout(self.timeout, request).await {
                    Ok(Ok(response)) => Ok(Output::Get(response.kvs().first().map(|kv| kv.value().to_vec()))),
                    Ok(Err(e)) => Err(Failure::of(&e)),
                    Err(_) => Err(Failure::timed_out()),
                }
            }
            Op::Put { value } => {
                self.remember(k, value);
                let request = self.client.put(key.as_str(), value.clone(), None);
                match tokio::time::timeout(self.timeout, request).await {
                    Ok(Ok(response)) => {
                        revision = response.header().map(|h| h.revision());
                        Ok(Output::Put)
                    }
                    Ok(Err(e)) => Err(Failure::of(&e)),
                    Err(_) => Err(Failure::timed_out()),
                }
            }
            Op::Cas { expected, new } => {
                self.remember(k, new);
                let compare = match expected {
                    Some(value) => Compare::value(key.as_str(), CompareOp::Equal, value.clone()),
                    None => Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
                };
                let txn = Txn::new()
                    .when(vec![compare])
                    .and_then(vec![TxnOp::put(key.as_str(), new.clone(), None)]);
                let request = self.client.txn(txn);
                match tokio::time::timeout(self.timeout, request).await {
                    Ok(Ok(response)) => {
                        if response.succeeded() {
                            revision = response.header().map(|h| h.revision());
                        }
                        Ok(Output::Cas(response.succeeded()))
                    }
                    Ok(Err(e)) => Err(Failure::of(&e)),
                    Err(_) => Err(Failure::timed_out()),
                }
            }
        };
        let return_ns = self.now_ns();
        let outcome = match result {
            Ok(output) => {
                match (&op, &output) {
                    (_, Output::Get(read)) => self.last_seen[k] = read.clone(),
                    (Op::Put { value }, _) => self.last_seen[k] = Some(value.clone()),
                    (Op::Cas { new, .. }, Output::Cas(true)) => self.last_seen[k] = Some(new.clone()),
                    _ => {}
                }
                Outcome::Ok(output)
            }
            Err(failure) => {
                tracing::debug!(
                    client = self.client_id,
                    key,
                    ?op,
                    error = failure.message,
                    never_sent = failure.never_sent,
                    "operation failed"
                );
                // Don't hammer a member that is down: real clients back off too, and
                // every failed write would be one more unknown outcome to check.
                tokio::time::sleep(Duration::from_millis(ERROR_BACKOFF_MS)).await;
                // A read that failed, or a request that never left this machine,
                // changed nothing and told nothing.
                if op == Op::Get || failure.never_sent {
                    return None;
                }
                Outcome::Unknown
            }
        };
        Some(Operation {
            client_id: self.client_id as u64,
            key: key.into_bytes(),
            op,
            call_ns,
            return_ns,
            outcome,
            revision,
        })
    }
}

/// Why a request failed.
struct Failure {
    message: String,
    /// The connection was refused: the request never reached a server, so it certainly
    /// was not applied.
    never_sent: bool,
}

impl Failure {
    fn of(error: &etcd_client::Error) -> Failure {
        // The cause chain of the gRPC status ends, for a refused connection, in the
        // io::Error of the connect call (under tonic's and hyper's wrappers).
        // etcd-client's own error does not link to its status as a source.
        let mut never_sent = false;
        let mut cause: Option<&(dyn std::error::Error + 'static)> = match error {
            etcd_client::Error::GRpcStatus(status) => Some(status),
            other => Some(other),
        };
        while let Some(e) = cause {
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
            {
                never_sent = true;
                break;
            }
            cause = e.source();
        }
        Failure {
            message: error.to_string(),
            never_sent,
        }
    }

    fn timed_out() -> Failure {
        Failure {
            message: "timed out".into(),
            never_sent: false,
        }
    }
}
