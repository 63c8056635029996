//! The container runtime a node agent uses: the process runtime ([`super::process`], each
//! container a local OS process) or the simulated one ([`super::simulated`], hollow nodes
//! for scale tests), behind one type so that the pod workers and the agent's loop do not
//! care which.
//!
//! An enum rather than a trait object: there are two runtimes, both known here, and
//! [`Container::wait`] / [`Runtime::stop`] are async, which a trait would have to box on
//! every call. Each method delegates; a container handed to the runtime that did not make
//! it (which the agent never does: one runtime per node) is refused with an error rather
//! than a panic.
//!
//! Left out: choosing a runtime per pod (upstream's RuntimeClass); a node has one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::process::{self, ContainerSpec, ContainerState, Exit, ProcessRuntime};
use super::simulated::{self, SimulatedRuntime};
use crate::{AgentError, Result};

/// Which runtime a node agent runs its pods with (`--runtime`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RuntimeKind {
    /// Each container a local OS process.
    #[default]
    Process,
    /// Containers that run nothing (hollow nodes, see [`super::simulated`]).
    Simulated,
}

impl std::str::FromStr for RuntimeKind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "process" => Ok(RuntimeKind::Process),
            "simulated" => Ok(RuntimeKind::Simulated),
            other => Err(format!("unknown runtime {other:?}: process or simulated")),
        }
    }
}

impl std::fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RuntimeKind::Process => "process",
            RuntimeKind::Simulated => "simulated",
        })
    }
}

/// A node's container runtime.
#[derive(Debug)]
pub enum Runtime {
    Process(ProcessRuntime),
    Simulated(SimulatedRuntime),
}

/// A handle on a container of either runtime. The process runtime's handle is boxed: it
/// is several times the size of a simulated one, and every simulated container's
/// supervisor would otherwise carry that size.
#[derive(Debug)]
pub enum Container {
    Process(Box<process::Container>),
    Simulated(simulated::Container),
}

impl Container {
    /// Unique per run, with the runtime as its scheme (`process://…`, `simulated://…`).
    pub fn id(&self) -> &str {
        match self {
            Container::Process(c) => c.id(),
            Container::Simulated(c) => c.id(),
        }
    }

    pub fn pod_uid(&self) -> &str {
        match self {
            Container::Process(c) => c.pod_uid(),
            Container::Simulated(c) => c.pod_uid(),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Container::Process(c) => c.name(),
            Container::Simulated(c) => c.name(),
        }
    }

    /// The main process; `None` for a simulated container, which has none.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Container::Process(c) => Some(c.pid()),
            Container::Simulated(_) => None,
        }
    }

    pub fn restart_count(&self) -> u32 {
        match self {
            Container::Process(c) => c.restart_count(),
            Container::Simulated(c) => c.restart_count(),
        }
    }

    /// Whether the kernel killed a process of it for want of memory (valid once `wait`
    /// or a stop returned; never for a simulated container).
    pub fn oom_killed(&self) -> bool {
        match self {
            Container::Process(c) => c.oom_killed(),
            Container::Simulated(_) => false,
        }
    }

    /// Waits for the container to end. Cancel-safe; once ended, returns the same exit.
    pub async fn wait(&mut self) -> Exit {
        match self {
            Container::Process(c) => c.wait().await,
            Container::Simulated(c) => c.wait().await,
        }
    }
}

impl Runtime {
    pub fn kind(&self) -> RuntimeKind {
        match self {
            Runtime::Process(_) => RuntimeKind::Process,
            Runtime::Simulated(_) => RuntimeKind::Simulated,
        }
    }

    pub fn is_simulated(&self) -> bool {
        self.kind() == RuntimeKind::Simulated
    }

    /// The (absolute) directory the runtime keeps its containers' files in, one
    /// directory per pod uid.
    pub fn root(&self) -> &Path {
        match self {
            Runtime::Process(r) => r.root(),
            Runtime::Simulated(r) => r.root(),
        }
    }

    /// Starts a container. `init`: it is an init container (a simulated one completes at
    /// once; the process runtime runs it as any other). The process runtime's start does
    /// blocking work (spawning, files) and runs on the blocking pool, within the tokio
    /// runtime as registering the child with its process driver needs; the simulated one
    /// writes one line and runs here.
    /// Whether containers' memory limits are enforced (never for the simulated runtime).
    pub fn memory_limits_enforced(&self) -> bool {
        match self {
            Runtime::Process(r) => r.memory_limits_enforced(),
            Runtime::Simulated(_) => false,
        }
    }

    pub async fn start(self: &Arc<Self>, spec: ContainerSpec, init: bool) -> Result<Container> {
        // Both write files (a simulated container its one log line), which can wait
        // behind another process's fsync: never on the async workers.
        let runtime = Arc::clone(self);
        tokio::task::spawn_blocking(move || runtime.start_blocking(&spec, init))
            .await
            .map_err(|e| AgentError::Config(format!("starting the container: {e}")))?
    }

    /// [`Runtime::start`] on the calling thread.
    pub fn start_blocking(&self, spec: &ContainerSpec, init: bool) -> Result<Container> {
        match self {
            Runtime::Process(r) => r.start(spec).map(|c| Container::Process(Box::new(c))),
            Runtime::Simulated(r) => r.start(spec, init).map(Container::Simulated),
        }
    }

    /// Stops a container with up to `grace` before it is killed; returns how it ended.
    pub async fn stop(&self, container: &mut Container, grace: Duration) -> Result<Exit> {
        match (self, container) {
            (Runtime::Process(r), Container::Process(c)) => r.stop(c, grace).await,
            (Runtime::Simulated(r), Container::Simulated(c)) => r.stop(c, grace).await,
            (_, c) => Err(AgentError::Config(format!(
                "container {} is not one of the {} runtime's",
                c.id(),
                self.kind()
            ))),
        }
    }

    /// The containers that outlived a previous agent on the same root (never any for the
    /// simulated runtime).
    pub fn adopt(&self) -> Result<Vec<Container>> {
        match self {
            Runtime::Process(r) => Ok(r
                .adopt()?
                .into_iter()
                .map(|c| Container::Process(Box::new(c)))
                .collect()),
            Runtime::Simulated(r) => Ok(r.adopt()?.into_iter().map(Container::Simulated).collect()),
        }
    }

    /// What the runtime remembers of a container's latest run.
    pub fn state(&self, pod_uid: &str, container: &str) -> Result<Option<ContainerState>> {
        match self {
            Runtime::Process(r) => r.state(pod_uid, container),
            Runtime::Simulated(r) => r.state(pod_uid, container),
        }
    }

    /// The log of a container's current run, or of its previous one.
    pub fn log_path(&self, pod_uid: &str, container: &str, previous: bool) -> PathBuf {
        match self {
            Runtime::Process(r) => r.log_path(pod_uid, container, previous),
            Runtime::Simulated(r) => r.log_path(pod_uid, container, previous),
        }
    }

    /// Rotates logs that grew past their limit (blocking work for the process runtime).
    pub fn rotate_logs(&self) -> Result<()> {
        match self {
            Runtime::Process(r) => r.rotate_logs(),
            Runtime::Simulated(r) => r.rotate_logs(),
        }
    }

    /// Deletes a pod's files (refused by the process runtime while a container runs).
    pub fn remove_pod(&self, pod_uid: &str) -> Result<()> {
        match self {
            Runtime::Process(r) => r.remove_pod(pod_uid),
            Runtime::Simulated(r) => r.remove_pod(pod_uid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_print() {
        for kind in [RuntimeKind::Process, RuntimeKind::Simulated] {
            assert_eq!(kind.to_string().parse::<RuntimeKind>(), Ok(kind));
        }
        assert!("docker".parse::<RuntimeKind>().is_err());
    }

    #[tokio::test]
    async fn a_container_of_another_runtime_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let simulated = Arc::new(Runtime::Simulated(
            SimulatedRuntime::new(dir.path().join("a")).expect("runtime"),
        ));
        let spec = ContainerSpec {
            pod_uid: "u".into(),
            container: "c".into(),
            ..ContainerSpec::default()
        };
        let mut c = simulated.start(spec, false).await.expect("start");
        assert_eq!(c.pid(), None);
        let process = Runtime::Process(
            ProcessRuntime::new(dir.path().join("b"), process::LogLimits::default()).expect("runtime"),
        );
        assert!(process.stop(&mut c, Duration::ZERO).await.is_err());
        assert!(simulated.stop(&mut c, Duration::ZERO).await.is_ok());
    }
}
