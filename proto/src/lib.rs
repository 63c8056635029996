//! Protocol definitions for Capstan.
//!
//! - [`etcdserverpb`] and [`mvccpb`]: the etcd v3 API, wire-compatible with etcd (same
//!   packages, services, messages and field numbers), written from the published API.
//! - [`store`]: Capstan's own log command format for the store's state machine.
//! - [`peer`]: the service members of one cluster speak to each other (Raft messages,
//!   snapshots, forwarded lease requests).
//!
//! The generated code is produced by `build.rs` at build time and never committed.
#![allow(clippy::all, missing_docs)]

pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// Capstan's own messages, nested as their protobuf package so generated paths resolve.
pub mod capstan {
    pub mod store {
        pub mod v1 {
            tonic::include_proto!("capstan.store.v1");
        }
    }
    pub mod peer {
        pub mod v1 {
            tonic::include_proto!("capstan.peer.v1");
        }
    }
}

pub use capstan::peer::v1 as peer;
pub use capstan::store::v1 as store;
