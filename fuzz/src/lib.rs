//! Fuzz targets for the input Capstan takes from outside: Kubernetes REST bodies, PATCH
//! documents, etcd v3 requests and Raft peer messages.
//!
//! # Design
//!
//! Each target is one function here, `fn(&[u8])`, which must return on every input: no
//! panic, no hang, no allocation the input can make unbounded. Errors are the expected
//! answer to most inputs; only a panic (an assertion of this crate included) is a
//! finding. The functions drive the real code of the server along the path a request
//! takes, minus the network and minus what needs a clock or a random choice (those are
//! fixed, so that an input always does the same):
//!
//! - [`rest_body`]: a create body and an update body, JSON or Kubernetes protobuf
//!   (`apiserver::protobuf::decode`), through the steps of `handlers::create` and
//!   `handlers::update`: `parse_body`, `check_type`, `object::normalize` (decoding as
//!   the k8s-openapi type), `validation::default_object`, `validate_create`,
//!   `merge_for` (main resource, status, scale), `prepare_update`, `validate_update`,
//!   `object::to_stored`.
//! - [`patch`]: JSON merge patch, JSON patch and strategic merge patch documents through
//!   `apiserver::patch` on a target document of the input's own (any JSON), and through
//!   `handlers::patch_object`'s steps on a stored object (`apply_patch`, `merge_for`,
//!   then the update's normalization, defaulting and validation).
//! - [`etcd_request`]: a sequence of etcd requests in protobuf (Range, Put, DeleteRange,
//!   Txn, Compaction, LeaseGrant/Revoke/TimeToLive/Leases, HashKV, a watch's catch-up,
//!   raw log entries) through `Node::propose`'s checks (`mvcc::check_command`, the lease
//!   decisions, the size bound) and the apply step (`node::apply_committed_all`) on a
//!   real `Mvcc` in a temporary directory, opened once per process and replaced by an
//!   empty one every 20,000 entries, so a long run stays bounded. The store is shared
//!   by the inputs of a process, so an input that fails only after others is possible;
//!   libFuzzer then reports the one that failed, and the run's earlier inputs are what
//!   reproduces it.
//! - [`raft_message`]: the peer service's decoding (`RaftBatch` and `SnapshotChunk` in
//!   prost, `replica::decode_message` in raft-rs's protobuf, `snapshot::verify`), the
//!   service's rules (snapshot messages only on the snapshot stream, a snapshot file
//!   checked before its message is stepped), `transport::split_append` against its
//!   promise, and raft-rs stepping the messages into a fresh member (follower or
//!   leader) of a three-member cluster over in-memory storage, configured as
//!   `replica::Replica` configures it, behind the check `Replica::step` makes first
//!   (`replica::check_message`, which this target's findings added). raft-rs trusts its
//!   peers: a few messages that are well formed but that no member of a healthy cluster
//!   sends still make it panic on purpose (a heartbeat committing past the end of the
//!   receiver's log, a snapshot with a configuration it cannot restore); the target
//!   leaves those out (`peer::trusted` lists them) so that fuzzing goes on past them.
//!
//! # Layout
//!
//! - `fuzz_targets/<target>.rs`: the libFuzzer binaries, one line each around these
//!   functions. They need the `libfuzzer` feature (libfuzzer-sys, an optional
//!   dependency), so the workspace build and `make test` never compile libFuzzer;
//!   `cargo fuzz` (nightly) builds them: `make fuzz` runs each for `FUZZ_SECONDS`, or
//!   `cargo +nightly fuzz run --fuzz-dir fuzz --features libfuzzer <target>` one.
//! - `corpus/<target>/`: the corpus, kept in git and small (a few dozen files of at most
//!   4 KiB): the seeds of [`seeds::corpus`] (`seed-*`: realistic objects, kubectl's
//!   protobuf bodies, each patch format, etcd requests encoded with prost, Raft messages
//!   and a snapshot file), and the inputs of local fuzzing runs that added the most
//!   coverage to them (`found-*`, picked from the runs' corpus merged as `cargo fuzz
//!   cmin` merges it, which is thousands of files). `make fuzz` reads it and puts what it
//!   finds in `target/fuzz-corpus/<target>/`, which later runs go on from.
//! - `regressions/<target>/`: inputs that once failed, each fixed since.
//! - `tests/replay.rs` (stable, in `make test`): runs every corpus and regression file
//!   and a fixed-seed series of mutations of the corpus through each target, and fails
//!   naming the input that panicked. That is the part that runs in CI: nightly and
//!   libFuzzer are not needed there, and the replay takes seconds.

mod api;
mod etcd;
mod input;
mod patches;
mod peer;
mod rest;
pub mod seeds;

pub use etcd::{etcd_request, Op as EtcdOp};
pub use input::{frame, Frames};
pub use patches::patch;
pub use peer::raft_message;
pub use rest::{rest_body, SEPARATOR as REST_BODY_SEPARATOR};

/// A target's entry function.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz_targets/` and the corpus directories name them.
pub const TARGETS: &[(&str, Target)] = &[
    ("rest_body", rest_body),
    ("patch", patch),
    ("etcd_request", etcd_request),
    ("raft_message", raft_message),
];
