//! The simulated runtime (`capstan agent --runtime simulated`, "hollow" nodes): containers
//! that run nothing, so that one process can host hundreds of nodes for scale tests of the
//! control plane (the role of upstream's hollow kubelet in kubemark). Everything above the
//! runtime is the real agent: registration, heartbeats, the assignment stream, pod workers,
//! addresses from the node's pod CIDR, volumes, status reports, graceful deletion.
//!
//! # What a simulated container is
//!
//! - **No process, no thread.** A started container is a handle whose
//!   [`Container::wait`] is a future that is never woken: it costs its supervisor task's
//!   few hundred bytes and nothing else. Only [`SimulatedRuntime::stop`] ends it, and that
//!   takes the handle (`&mut`), so no channel between the two is needed.
//! - **Main containers run until stopped**, as upstream's hollow kubelet reports them
//!   Running forever. A stop ends one at once, whatever the grace period, with
//!   [`Exit::Signal`]`(SIGTERM)`, i.e. exit code 143 and `signal: 15`: what the process
//!   runtime reports for a process that does not handle `SIGTERM` (the commonest case, and
//!   the one a `sleep` shows), so that a deleted pod's final status reads the same on
//!   either runtime. Exit 0 would be the other choice; it would make a `restartPolicy:
//!   Never` pod end `Succeeded` on deletion, which no real container does unless it
//!   handles the signal.
//! - **Init containers complete at once** with exit code 0 (the caller says which a
//!   container is): a simulated init container that ran forever would hold its pod in
//!   `Init` for good.
//! - **Container IDs** are `simulated://<pod uid>/<container>/<restart count>`, the process
//!   runtime's form with its own scheme, so that a status tells which runtime ran it.
//! - **Probes are not run** (the pod worker skips them for this runtime): there is nothing
//!   to probe, so a simulated container is reported `started` and `ready` as soon as it
//!   runs. Nor are `preStop` hooks, commands or mounts: a command is not even required (a
//!   pod may rely on its image's entrypoint, as benchmark pods do).
//! - **Logs**: the start writes one line, `simulated container <name> started`, to
//!   `<root>/<pod uid>/<container>/current.log` (the process runtime's layout), so that
//!   `kubectl logs` shows something; a restart moves it to `previous.log`. Rotation is a
//!   no-op: nothing else is ever written.
//!
//! # Nothing survives a restart
//!
//! A simulated container is gone with the agent that ran it: [`SimulatedRuntime::adopt`]
//! returns nothing and [`SimulatedRuntime::state`] knows no earlier runs, so a restarted
//! hollow node starts its pods' containers afresh (restart counts from 0). The files of
//! pods that are gone are removed by the agent as for the process runtime.
//!
//! # Bounds
//!
//! The runtime remembers one restart count per container it started whose pod has not
//! been removed ([`SimulatedRuntime::remove_pod`], which every pod worker calls when it
//! is done): at most the node's pods times their containers. Names become path
//! components and are checked as the process runtime checks them.
//!
//! # Left out, on purpose
//!
//! - Containers that end on their own (a Job's pods never complete on a hollow node), and
//!   crashes, restarts and probe failures: the point is the control plane's load, not the
//!   node's behaviour.
//! - Resource usage: a hollow node reports the capacity it is given and enforces nothing.
//!
//! All methods do a little blocking filesystem work (creating a directory and writing one
//! short line at a start, removing a pod's directory); that is cheap enough to do on the
//! async runtime's threads, so that hundreds of starts take no blocking-pool threads.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use super::process::{validate_names, validate_path_name, ContainerSpec, ContainerState, Exit, POD_UID_BYTES_MAX};
use crate::{AgentError, Result};

/// `SIGTERM`: how a stop ends a simulated container (exit code 143).
pub const STOP_SIGNAL: i32 = 15;
const CURRENT_LOG: &str = "current.log";
const PREVIOUS_LOG: &str = "previous.log";

/// The simulated runtime (see the module doc).
#[derive(Debug)]
pub struct SimulatedRuntime {
    root: PathBuf,
    /// `(pod uid, container)` → starts so far, for restart counts and container IDs.
    starts: Mutex<HashMap<(String, String), u32>>,
}

/// A handle on a simulated container.
#[derive(Debug)]
pub struct Container {
    id: String,
    pod_uid: String,
    name: String,
    restart_count: u32,
    /// Set at start for an init container (it completed), and by a stop.
    exit: Option<Exit>,
}

impl Container {
    /// `simulated://<pod uid>/<container>/<restart count>`.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn pod_uid(&self) -> &str {
        &self.pod_uid
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn restart_count(&self) -> u32 {
        self.restart_count
    }

    /// Returns how the container ended, once it has (an init container: at once); until
    /// then never (see the module doc). Cancel-safe.
    pub async fn wait(&mut self) -> Exit {
        match self.exit {
            Some(exit) => exit,
            None => std::future::pending().await,
        }
    }
}

impl SimulatedRuntime {
    /// A runtime keeping its containers' log files under `root` (created if missing).
    pub fn new(root: PathBuf) -> Result<SimulatedRuntime> {
        fs::create_dir_all(&root).map_err(|e| io_error(format!("creating the runtime root {}", root.display()), e))?;
        let root = fs::canonicalize(&root)
            .map_err(|e| io_error(format!("resolving the runtime root {}", root.display()), e))?;
        Ok(SimulatedRuntime {
            root,
            starts: Mutex::new(HashMap::new()),
        })
    }

    /// The (absolute) root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// "Starts" a container: writes its log line and returns its handle. An `init`
    /// container has completed (exit 0) by the time this returns; any other runs until
    /// stopped. The command, environment and mounts of `spec` are not used.
    pub fn start(&self, spec: &ContainerSpec, init: bool) -> Result<Container> {
        validate_names(&spec.pod_uid, &spec.container)?;
        let dir = self.container_dir(&spec.pod_uid, &spec.container);
        fs::create_dir_all(&dir).map_err(|e| io_error(format!("creating {}", dir.display()), e))?;
        let current = dir.join(CURRENT_LOG);
        let restart_count = {
            let mut starts = self.starts.lock().expect("invariant: no panics while the lock is held");
            let count = starts
                .entry((spec.pod_uid.clone(), spec.container.clone()))
                .or_insert(0);
            let restart_count = *count;
            *count = count.saturating_add(1);
            restart_count
        };
        if restart_count > 0 {
            match fs::rename(&current, dir.join(PREVIOUS_LOG)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(io_error(
                        format!("keeping {} as the previous log", current.display()),
                        e,
                    ))
                }
            }
        }
        fs::write(&current, format!("simulated container {} started\n", spec.container))
            .map_err(|e| io_error(format!("writing {}", current.display()), e))?;
        let id = format!("simulated://{}/{}/{restart_count}", spec.pod_uid, spec.container);
        tracing::debug!(container = %id, "started a simulated container");
        Ok(Container {
            id,
            pod_uid: spec.pod_uid.clone(),
            name: spec.container.clone(),
            restart_count,
            exit: init.then_some(Exit::Code(0)),
        })
    }

    /// Ends a container at once (the grace period is not waited out: nothing runs that
    /// would use it), with [`STOP_SIGNAL`]; returns its earlier end if it had one.
    pub async fn stop(&self, container: &mut Container, grace: Duration) -> Result<Exit> {
        if let Some(exit) = container.exit {
            return Ok(exit);
        }
        tracing::debug!(container = %container.id, ?grace, "stopping a simulated container");
        let exit = Exit::Signal(STOP_SIGNAL);
        container.exit = Some(exit);
        Ok(exit)
    }

    /// Nothing survives a restart (see the module doc): always empty.
    pub fn adopt(&self) -> Result<Vec<Container>> {
        Ok(Vec::new())
    }

    /// No earlier runs are kept (see the module doc): always `None` for valid names.
    pub fn state(&self, pod_uid: &str, container: &str) -> Result<Option<ContainerState>> {
        validate_names(pod_uid, container)?;
        Ok(None)
    }

    /// The log of a container's current run, or of its previous one. The names are not
    /// checked here: they must be ones [`SimulatedRuntime::start`] accepted.
    pub fn log_path(&self, pod_uid: &str, container: &str, previous: bool) -> PathBuf {
        self.container_dir(pod_uid, container)
            .join(if previous { PREVIOUS_LOG } else { CURRENT_LOG })
    }

    /// Nothing to rotate: a simulated container writes one line.
    pub fn rotate_logs(&self) -> Result<()> {
        Ok(())
    }

    /// Deletes a pod's directory and forgets its containers' restart counts.
    pub fn remove_pod(&self, pod_uid: &str) -> Result<()> {
        validate_path_name("pod uid", pod_uid, POD_UID_BYTES_MAX)?;
        self.starts
            .lock()
            .expect("invariant: no panics while the lock is held")
            .retain(|(uid, _), _| uid != pod_uid);
        let dir = self.root.join(pod_uid);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(format!("removing {}", dir.display()), e)),
        }
    }

    fn container_dir(&self, pod_uid: &str, container: &str) -> PathBuf {
        self.root.join(pod_uid).join(container)
    }
}

fn io_error(what: String, e: io::Error) -> AgentError {
    AgentError::Io(what, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(uid: &str, container: &str) -> ContainerSpec {
        ContainerSpec {
            pod_uid: uid.into(),
            container: container.into(),
            ..ContainerSpec::default()
        }
    }

    #[tokio::test]
    async fn a_container_runs_until_stopped_and_logs_its_start() {
        let dir = tempfile::tempdir().expect("temp dir");
        let runtime = SimulatedRuntime::new(dir.path().join("containers")).expect("runtime");
        let mut c = runtime.start(&spec("u1", "web"), false).expect("start");
        assert_eq!(c.id(), "simulated://u1/web/0");
        let log = fs::read_to_string(runtime.log_path("u1", "web", false)).expect("log");
        assert_eq!(log, "simulated container web started\n");
        // Still running: a wait does not return (polled once, no timing involved).
        assert!(futures::poll!(std::pin::pin!(c.wait())).is_pending());
        let exit = runtime.stop(&mut c, Duration::from_secs(30)).await.expect("stop");
        assert_eq!((exit, exit.exit_code()), (Exit::Signal(STOP_SIGNAL), Some(143)));
        assert_eq!(c.wait().await, exit, "the same end once ended");

        let again = runtime.start(&spec("u1", "web"), false).expect("restart");
        assert_eq!((again.id(), again.restart_count()), ("simulated://u1/web/1", 1));
        assert!(runtime.log_path("u1", "web", true).exists(), "the first run's log kept");
        assert!(runtime.adopt().expect("adopt").is_empty());
        assert!(runtime.state("u1", "web").expect("state").is_none());

        runtime.remove_pod("u1").expect("remove");
        assert!(!dir.path().join("containers/u1").exists());
        let fresh = runtime.start(&spec("u1", "web"), false).expect("start after removal");
        assert_eq!(fresh.restart_count(), 0, "counts forgotten with the pod");
    }

    #[tokio::test]
    async fn an_init_container_completes_at_once_and_names_are_checked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let runtime = SimulatedRuntime::new(dir.path().to_path_buf()).expect("runtime");
        let mut c = runtime.start(&spec("u2", "setup"), true).expect("start");
        assert_eq!(c.wait().await, Exit::Code(0));
        for (uid, name) in [("../x", "c"), ("u", ".."), ("", "c"), ("u", "a/b")] {
            assert!(
                runtime.start(&spec(uid, name), false).is_err(),
                "{uid:?} {name:?} refused"
            );
        }
    }
}
