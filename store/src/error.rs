//! The store's one error type, and its mapping onto the gRPC status codes and messages
//! etcd uses (clients such as etcdctl and kube-apiserver match on the message text).

use tonic::{Code, Status};

/// Everything that can go wrong in the store. Variants that mirror an etcd error carry
/// etcd's exact message in their `Display`.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    #[error("etcdserver: not leader")]
    NotLeader,
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    #[error("etcdserver: member ID already exist")]
    MemberExists,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("storage: {0}")]
    Storage(String),
    #[error("corrupt store data: {0}")]
    Corrupt(String),
    /// A snapshot file refused (not a snapshot, truncated, corrupt) or a restore refused
    /// (its data directory in the way), by `capstan snapshot`; the message names the file
    /// or directory and says why.
    #[error("{0}")]
    Snapshot(String),
}

impl StoreError {
    /// The gRPC code etcd answers with for this error.
    pub fn code(&self) -> Code {
        match self {
            StoreError::Compacted | StoreError::FutureRevision | StoreError::LeaseTtlTooLarge => Code::OutOfRange,
            StoreError::EmptyKey
            | StoreError::KeyNotFound
            | StoreError::ValueProvided
            | StoreError::LeaseProvided
            | StoreError::TooManyOps
            | StoreError::DuplicateKey
            | StoreError::RequestTooLarge
            | StoreError::InvalidRequest(_) => Code::InvalidArgument,
            StoreError::LeaseNotFound => Code::NotFound,
            StoreError::LeaseExists
            | StoreError::NotLeader
            | StoreError::BadLeaderTransferee
            | StoreError::MemberExists
            | StoreError::PeerUrlExists
            | StoreError::MemberNotLearner
            | StoreError::LearnerNotReady
            | StoreError::NotEnoughStartedMembers
            | StoreError::Snapshot(_) => Code::FailedPrecondition,
            StoreError::MemberNotFound => Code::NotFound,
            StoreError::NoLeader | StoreError::LeaderChanged => Code::Unavailable,
            StoreError::NoSpace | StoreError::TooManyRequests => Code::ResourceExhausted,
            StoreError::Timeout | StoreError::Stopped => Code::Unavailable,
            StoreError::Storage(_) | StoreError::Corrupt(_) => Code::Internal,
        }
    }
}

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

impl From<rocksdb::Error> for StoreError {
    fn from(e: rocksdb::Error) -> Self {
        StoreError::Storage(e.into_string())
    }
}

impl From<prost::DecodeError> for StoreError {
    fn from(e: prost::DecodeError) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
