//! The agents' one error type.

/// What can go wrong in an agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A request to the Kubernetes API failed (transport, or a `Status` from the server).
    #[error("kubernetes api: {0}")]
    Kube(#[from] kube::Error),
    /// A setting that cannot work (the message says which and why).
    #[error("configuration: {0}")]
    Config(String),
    /// An operating-system operation failed; the string says what was being done.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// A reconcile's task ended without an answer (it panicked).
    #[error("reconcile task: {0}")]
    Task(String),
}

pub type Result<T, E = AgentError> = std::result::Result<T, E>;
