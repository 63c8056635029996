//! Capstan's agents: everything that acts on watches of the Kubernetes API.
//!
//! Each component runs as several replicas of which one acts, chosen by a Lease
//! ([`leader`]). They reach the API as any client does, over HTTP with kube-rs, whose
//! runtime (watcher → reflector → controller with its work queue and per-key backoff) is
//! the client runtime the control loops are built on; `tests/kube_rs.rs` in the root
//! package checks that its reflector stays correct against Capstan's API across restarts
//! and 410s.
//!
//! The parts: [`leader`] (leader election on `coordination.k8s.io/v1` Leases);
//! [`controller_manager`] (components under one Lease) with the controllers
//! [`serviceaccount`], [`replicaset`], [`deployment`], [`endpoints`], [`nodeipam`],
//! [`namespace`], [`nodelifecycle`], [`gc`] (the garbage collector) and [`rootca`], sharing
//! [`runtime`]; the [`scheduler`] (with [`quantity`] for resource amounts); the node agent
//! ([`node`]), the node proxy ([`proxy`]) and the cluster DNS ([`dns`]); and [`client`],
//! the clients of a component given several API servers, which fail over between them.
//! [`metrics`] has each component's Prometheus metrics, which its caller registers and
//! serves; [`serving`] the components' HTTPS ports with client certificates (the agent's
//! port, metrics ports).
//!
//! `agents` depends on nothing else of Capstan: it sees only the Kubernetes API.

pub mod client;
pub mod controller_manager;
pub mod deployment;
pub mod dns;
pub mod endpoints;
pub mod error;
pub mod events;
pub mod gc;
pub mod leader;
pub mod metrics;
pub mod namespace;
pub mod node;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod proxy;
pub mod quantity;
pub mod replicaset;
pub mod rootca;
pub mod runtime;
pub mod scheduler;
pub mod serviceaccount;
pub mod serving;
pub mod tls;

pub use error::{AgentError, Result};
