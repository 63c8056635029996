//! Protocol definitions for Capstan.
//!
//! - [`etcdserverpb`] and [`mvccpb`]: the etcd v3 API, wire-compatible with etcd (same
//!   packages, services, messages and field numbers), written from the published API.
//! - [`store`]: Capstan's own log command format for the store's state machine.
//! - [`peer`]: the service members of one cluster speak to each other (Raft messages,
//!   snapshots, forwarded lease requests).
//! - [`mesh`]: the gRPC API the cluster's own components (node agents, proxies) use
//!   instead of REST: objects as JSON bytes, watches, node assignment and proxy
//!   configuration streams; served by the apiserver.
//! - [`openapi_v2`]: the part of the OpenAPI v2 document model (gnostic's `openapi.v2`)
//!   in which the Kubernetes API serves `/openapi/v2` to kubectl.
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
    pub mod mesh {
        pub mod v1 {
            tonic::include_proto!("capstan.mesh.v1");
        }
    }
}

/// The OpenAPI v2 document model, as its protobuf package `openapi.v2`.
pub mod openapi {
    pub mod v2 {
        tonic::include_proto!("openapi.v2");
    }
}

pub use capstan::mesh::v1 as mesh;
pub use capstan::peer::v1 as peer;
pub use capstan::store::v1 as store;
pub use openapi::v2 as openapi_v2;
