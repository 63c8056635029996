//! The lessor: who decides when leases expire.
//!
//! The state machine only knows which leases exist and their granted TTL. Deadlines live
//! here, outside it, in the member that holds the clock (the leader, once there is Raft).
//! Time comes in as a parameter (`now_ms`, milliseconds on a monotonic clock), so this
//! module reads no clock and tests drive it with any time they like. An expired lease is
//! not deleted here: the owner proposes a LeaseRevoke command, and the revoke is applied
//! like any other write.
//!
//! As in etcd, keep-alives are not replicated, and a member that starts (or becomes
//! leader) gives every existing lease a fresh TTL.

use std::collections::{BTreeSet, HashMap};

/// Per-lease deadline bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Deadline {
    ttl_s: i64,
    expires_ms: u64,
}

/// Deadlines of every lease, and the revokes already asked for.
#[derive(Debug, Default)]
pub struct Lessor {
    leases: HashMap<i64, Deadline>,
    /// (expiry, id), to find expired leases without scanning every lease.
    by_expiry: BTreeSet<(u64, i64)>,
    /// Leases whose revoke has been proposed and not yet applied.
    revoking: HashMap<i64, u64>,
}

/// How long a proposed revoke may stay unapplied before it is proposed again.
pub const REVOKE_RETRY_MS: u64 = 3_000;

impl Lessor {
    pub fn new() -> Lessor {
        Lessor::default()
    }

    /// A lease exists (granted, or found at start-up) with a fresh deadline.
    pub fn grant(&mut self, id: i64, ttl_s: i64, now_ms: u64) {
        self.remove(id);
        let expires_ms = now_ms.saturating_add(ttl_s.max(0) as u64 * 1000);
        self.leases.insert(id, Deadline { ttl_s, expires_ms });
        self.by_expiry.insert((expires_ms, id));
    }

    pub fn remove(&mut self, id: i64) {
        if let Some(d) = self.leases.remove(&id) {
            self.by_expiry.remove(&(d.expires_ms, id));
        }
        self.revoking.remove(&id);
    }

    /// A keep-alive: the new TTL, or None if the lease is unknown or already expired.
    pub fn renew(&mut self, id: i64, now_ms: u64) -> Option<i64> {
        let d = *self.leases.get(&id)?;
        if d.expires_ms <= now_ms {
            return None;
        }
        self.grant(id, d.ttl_s, now_ms);
        Some(d.ttl_s)
    }

    /// (granted TTL, remaining seconds) of a lease; remaining is -1 once expired.
    pub fn time_to_live(&self, id: i64, now_ms: u64) -> Option<(i64, i64)> {
        let d = self.leases.get(&id)?;
        let remaining = if d.expires_ms <= now_ms {
            -1
        } else {
            ((d.expires_ms - now_ms) / 1000) as i64
        };
        Some((d.ttl_s, remaining))
    }

    /// Expired leases whose revoke should be proposed now (at most `max`). Each is
    /// returned again only if its revoke was not applied within [`REVOKE_RETRY_MS`].
    pub fn expired(&mut self, now_ms: u64, max: usize) -> Vec<i64> {
        let mut out = Vec::new();
        for &(expires_ms, id) in &self.by_expiry {
            if expires_ms > now_ms || out.len() >= max {
                break;
            }
            match self.revoking.get(&id) {
                Some(&asked) if now_ms < asked.saturating_add(REVOKE_RETRY_MS) => {}
                _ => out.push(id),
            }
        }
        for id in &out {
            self.revoking.insert(*id, now_ms);
        }
        out
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_renewal_and_retry() {
        let mut l = Lessor::new();
        l.grant(1, 5, 0);
        l.grant(2, 10, 0);
        assert_eq!(l.expired(4_999, 10), Vec::<i64>::new());
        assert_eq!(l.renew(1, 4_000), Some(5));
        assert_eq!(l.time_to_live(1, 4_000), Some((5, 5)));
        assert_eq!(l.expired(8_999, 10), Vec::<i64>::new());
        assert_eq!(l.expired(9_000, 10), vec![1]);
        // Asked once; not again until the retry interval passes.
        assert_eq!(l.expired(9_500, 10), Vec::<i64>::new());
        assert_eq!(l.renew(1, 9_500), None, "an expired lease cannot be kept alive");
        assert_eq!(l.expired(12_000, 10), vec![1, 2]);
        l.remove(1);
        l.remove(2);
        assert!(l.is_empty());
        assert_eq!(l.time_to_live(1, 0), None);
    }
}
