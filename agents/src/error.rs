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
}

pub type Result<T, E = AgentError> = std::result::Result<T, E>;
