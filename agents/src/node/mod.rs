//! The node agent (the kubelet's job): runs the pods bound to its node and reports
//! their status. Being built in pieces (issue 6); so far:
//!
//! - [`registration`]: the Node object, its Lease and its status.
//! - [`spec`]: a container's command line and environment from its pod's spec.
//! - [`volumes`]: a pod's emptyDir, configMap and secret volumes as directories.
//! - [`process`]: the default container runtime, each container a local OS process.
//! - [`simulated`]: containers that run nothing, for hollow nodes in scale tests.
//! - [`runtime`]: either of the two, as the pod workers use it.
//! - [`init`]: `container-init`, which gives a container its mounts and `exec`s its command.
//! - [`probe`]: liveness, readiness and startup probes: one try, and the thresholds.
//! - [`logs`]: the agent's HTTP port for container logs (the kubelet's `containerLogs`)
//!   and usage (its `/stats/summary`).
//! - [`usage`]: the containers' CPU and memory, sampled from cgroups and `/proc`.

pub mod agent;
pub mod init;
pub mod logs;
pub mod pods;
pub mod probe;
pub mod process;
pub mod registration;
pub mod runtime;
pub mod simulated;
pub mod spec;
pub mod usage;
pub mod volumes;
