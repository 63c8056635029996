//! Response headers: who answered (cluster and member IDs) and at which Raft term.

use std::sync::atomic::{AtomicU64, Ordering};

use capstan_proto::etcdserverpb::ResponseHeader;

/// Fills the identity fields of every response header this member sends.
#[derive(Debug)]
pub struct HeaderSource {
    pub cluster_id: u64,
    pub member_id: u64,
    raft_term: AtomicU64,
}

impl HeaderSource {
    pub fn new(cluster_id: u64, member_id: u64) -> HeaderSource {
        HeaderSource {
            cluster_id,
            member_id,
            raft_term: AtomicU64::new(1),
        }
    }

    pub fn set_term(&self, term: u64) {
        self.raft_term.store(term, Ordering::Release);
    }

    pub fn term(&self) -> u64 {
        self.raft_term.load(Ordering::Acquire)
    }

    pub fn make(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.term(),
        }
    }

    /// Completes a header the state machine produced (it only knows the revision).
    pub fn fill(&self, h: &mut Option<ResponseHeader>) {
        let revision = h.as_ref().map_or(0, |h| h.revision);
        *h = Some(self.make(revision));
    }
}

/// A stable 64-bit ID from a name (FNV-1a), for member and cluster IDs.
pub fn id_from_name(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
