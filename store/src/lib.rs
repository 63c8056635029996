//! Capstan's store: the cluster's database, an etcd v3 compatible key-value store.
//!
//! Layers, bottom up (each usable alone):
//!
//! - [`keys`]: the RocksDB key layout.
//! - [`mvcc`]: the deterministic MVCC state machine (`apply(command) -> response`):
//!   revisions, ranges, transactions, leases as data, compaction. No clock, no I/O but
//!   its RocksDB storage.
//! - [`lease`]: the lessor, which decides expiry from a time it is given.
//! - [`watch`]: the watch hub, fanning events out to watchers without ever blocking the
//!   writer.
//! - [`raftlog`]: the Raft log and hard state in RocksDB (raft-rs's `Storage`).
//! - [`replica`]: the Raft core of one member, driven by ticks and messages, no I/O but
//!   its log; the deterministic test harness drives it directly.
//! - [`node`]: a member's threads: the raft loop (group commit), the apply loop, the
//!   lease clock, linearizable reads.
//! - [`transport`] and [`peer`]: the peer service members speak to each other.
//! - [`server`] and [`snapshot`]: the etcd v3 gRPC services; [`watch_service`]: Watch on
//!   the wire, encoding a revision's events once for all its watchers.
//! - [`restore`]: a new member's data directory from a snapshot file (`capstan snapshot
//!   restore`), and what a snapshot file holds.
//! - [`metrics`]: Prometheus metrics under etcd's names, counted in the I/O layers
//!   (`node`, `raftlog`) or read from the member at scrape, and the endpoint serving them.
//!
//! `store` knows nothing about Kubernetes.

pub mod error;
pub mod failpoint;
pub mod header;
pub mod keys;
pub mod latest;
pub mod lease;
pub mod metrics;
pub mod mvcc;
pub mod node;
pub mod peer;
pub mod raftlog;
pub mod replica;
pub mod restore;
pub mod server;
pub mod snapshot;
pub mod transport;
pub mod watch;
pub mod watch_service;

pub use error::StoreError;
pub use metrics::StoreMetrics;
pub use mvcc::{CommandResponse, Mvcc};
pub use node::{Node, NodeConfig, TlsIdentity};
pub use watch::{HubConfig, WatchHub};
