//! How the store lays its data out in RocksDB's key space.
//!
//! Keys are separated by a one-byte prefix. The history by revision (`r`) lives in a
//! column family of its own (`history`, see `mvcc`), everything else in the default one:
//!
//! | prefix | key                                   | value                          |
//! |--------|---------------------------------------|--------------------------------|
//! | `m`    | meta name                             | big-endian integer             |
//! | `r`    | revision (8 B) ‖ sub-revision (4 B)   | `mvccpb.Event` (no prev_kv)    |
//! | `k`    | escaped user key ‖ !revision (8 B)     | kind (1 B) ‖ sub-revision (4 B) ‖ `mvccpb.KeyValue` (puts) |
//! | `e`    | lease ID (8 B, order-preserving)      | `LeaseRecord`                  |
//! | `a`    | lease ID (8 B) ‖ user key             | empty (key attached to lease)  |
//! | `m`    | `member` ‖ member ID (8 B)            | `Member` (cluster membership)  |
//! | `m`    | `removed/` ‖ member ID (8 B)          | empty (a member removed)       |
//! | `h`    | Raft's own name                       | hard state, conf state, ...    |
//! | `w`    | log index (8 B)                       | Raft `Entry` (the durable log) |
//!
//! The *state* (what a snapshot carries and replaces) is every prefix but `h` and `w`,
//! which belong to this member's Raft log: they live in the log's own database, `w` in
//! its default column family and `h` in its `raftstate` family (see `raftlog`).
//!
//! `k` is the per-key history, newest first: a key's first entry is its newest version,
//! which reads at the newest revision and the writer's lookups take, and older entries
//! answer historical reads; compaction walks it. `r` is the history in revision order,
//! which watch replay and hashing read. A put writes one entry of each (one revision,
//! two records): the `KeyValue` is in both, so that neither kind of read needs the
//! other. Escaping keeps the user key followed by the revision order-preserving: `0x00`
//! becomes `0x00 0xFF` and the key ends with `0x00 0x00`.
//!
//! Older stores also kept every live key's newest version under `l`, `k` entries of kind
//! and sub-revision only, and `r` in the default column family; opening such a store
//! deletes the `l` records and moves `r` into its family, and an index entry without a
//! `KeyValue` is read through `r`.

pub const META: u8 = b'm';
/// Obsolete: the newest versions that older stores kept (deleted when such a store opens).
pub const OBSOLETE_LATEST: u8 = b'l';
pub const REVS: u8 = b'r';
pub const KEYREVS: u8 = b'k';
pub const LEASE: u8 = b'e';
pub const ATTACH: u8 = b'a';
pub const LOG: u8 = b'w';
pub const RAFT: u8 = b'h';

/// The spans of the key space that hold state (everything but the Raft log): a snapshot
/// streams them and installing one replaces them.
pub const STATE_SPANS: [(&[u8], &[u8]); 2] = [(b"a", b"h"), (b"i", b"w")];

/// Whether a key belongs to the state machine (not to this member's Raft log).
pub fn is_state(k: &[u8]) -> bool {
    !matches!(k.first(), Some(&LOG) | Some(&RAFT))
}

pub const META_APPLIED_TERM: &[u8] = b"mappliedterm";
/// Present while a snapshot is being installed: the state is incomplete.
pub const META_INSTALLING: &[u8] = b"minstalling";
/// The Raft conf state as of the applied index (opaque bytes to the state machine).
pub const META_CONF_STATE: &[u8] = b"mconfstate";
pub const MEMBER_PREFIX: &[u8] = b"mmember/";

pub const RAFT_HARD_STATE: &[u8] = b"hhardstate";
pub const RAFT_CONF_STATE: &[u8] = b"hconfstate";
/// Index and term of the last entry removed from the log.
pub const RAFT_TRUNCATED: &[u8] = b"htruncated";
/// (cluster ID, member ID), decided on first start.
pub const RAFT_IDENTITY: &[u8] = b"hidentity";
/// How many times this member has started.
pub const RAFT_INCARNATION: &[u8] = b"hincarnation";

/// Members removed from the cluster (empty values): their messages are refused, so a
/// removed member that missed its own removal learns of it, as etcd's peers tell it.
pub const REMOVED_PREFIX: &[u8] = b"mremoved/";

pub fn removed(id: u64) -> Vec<u8> {
    let mut k = REMOVED_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub fn member(id: u64) -> Vec<u8> {
    let mut k = MEMBER_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub const META_REVISION: &[u8] = b"mrevision";
/// The compacted revision: reads and watches below it are refused.
pub const META_COMPACT: &[u8] = b"mcompact";
/// The revision up to which the superseded versions are physically deleted; compaction
/// is pending while it is below [`META_COMPACT`]. Absent in stores whose compactions all
/// ran inside their apply (older layouts, or no compaction yet): then it equals
/// [`META_COMPACT`].
pub const META_COMPACT_DONE: &[u8] = b"mcompactdone";
pub const META_APPLIED: &[u8] = b"mapplied";

/// Index value kinds in the `k` family.
pub const KIND_PUT: u8 = b'p';
pub const KIND_DELETE: u8 = b'd';

pub fn rev(rev: i64, sub: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(13);
    k.push(REVS);
    k.extend_from_slice(&(rev as u64).to_be_bytes());
    k.extend_from_slice(&sub.to_be_bytes());
    k
}

/// Decodes the (revision, sub-revision) of an `r` key.
pub fn parse_rev(k: &[u8]) -> Option<(i64, u32)> {
    if k.len() != 13 || k[0] != REVS {
        return None;
    }
    let rev = u64::from_be_bytes(k[1..9].try_into().ok()?) as i64;
    let sub = u32::from_be_bytes(k[9..13].try_into().ok()?);
    Some((rev, sub))
}

/// `k` ‖ escaped key (with terminator): the prefix shared by every index entry of `key`.
pub fn keyrev_prefix(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 12);
    out.push(KEYREVS);
    escape_into(key, &mut out);
    out
}

/// The index entry of `key` at `rev`. Revisions are stored inverted so the newest sorts first.
pub fn keyrev(key: &[u8], rev: i64) -> Vec<u8> {
    let mut out = keyrev_prefix(key);
    out.extend_from_slice(&inv(rev));
    out
}

pub fn inv(rev: i64) -> [u8; 8] {
    (u64::MAX - rev as u64).to_be_bytes()
}

/// The revision of an index key, without decoding its user key.
pub fn keyrev_revision(k: &[u8]) -> Option<i64> {
    if k.len() < 11 || k[0] != KEYREVS {
        return None;
    }
    let r: [u8; 8] = k[k.len() - 8..].try_into().ok()?;
    Some((u64::MAX - u64::from_be_bytes(r)) as i64)
}

/// Splits an index key into (user key, revision).
pub fn parse_keyrev(k: &[u8]) -> Option<(Vec<u8>, i64)> {
    if k.len() < 11 || k[0] != KEYREVS {
        return None;
    }
    let (esc, r) = k[1..].split_at(k.len() - 9);
    let rev = u64::MAX - u64::from_be_bytes(r.try_into().ok()?);
    Some((unescape(esc)?, rev as i64))
}

fn escape_into(key: &[u8], out: &mut Vec<u8>) {
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

fn unescape(esc: &[u8]) -> Option<Vec<u8>> {
    let body = esc.strip_suffix(&[0, 0])?;
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        out.push(body[i]);
        if body[i] == 0 {
            if body.get(i + 1) != Some(&0xFF) {
                return None;
            }
            i += 1;
        }
        i += 1;
    }
    Some(out)
}

/// Lease IDs are signed; flipping the sign bit makes their big-endian bytes sort numerically.
pub fn lease_id_bytes(id: i64) -> [u8; 8] {
    ((id as u64) ^ (1 << 63)).to_be_bytes()
}

pub fn lease(id: i64) -> Vec<u8> {
    let mut k = vec![LEASE];
    k.extend_from_slice(&lease_id_bytes(id));
    k
}

pub fn attach_prefix(id: i64) -> Vec<u8> {
    let mut k = vec![ATTACH];
    k.extend_from_slice(&lease_id_bytes(id));
    k
}

pub fn attach(id: i64, key: &[u8]) -> Vec<u8> {
    let mut k = attach_prefix(id);
    k.extend_from_slice(key);
    k
}

pub fn log(index: u64) -> Vec<u8> {
    let mut k = vec![LOG];
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// The smallest byte string greater than every string with this prefix, or None when
/// there is none (the prefix is all 0xFF).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_keys_keep_order_and_round_trip() {
        let keys: Vec<&[u8]> = vec![
            b"",
            b"\x00",
            b"\x00\x00",
            b"\x00\x01",
            b"a",
            b"a\x00",
            b"a\x00b",
            b"ab",
            b"b",
            b"\xff",
        ];
        let mut enc: Vec<Vec<u8>> = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            for rev in [3i64, 2, 1] {
                let e = keyrev(k, rev);
                assert_eq!(parse_keyrev(&e), Some((k.to_vec(), rev)));
                assert_eq!(keyrev_revision(&e), Some(rev));
                enc.push(e);
            }
            if i > 0 {
                assert!(keyrev(keys[i - 1], 1) < keyrev(k, i64::MAX - 1), "order of {k:?}");
            }
        }
        let mut sorted = enc.clone();
        sorted.sort();
        assert_eq!(sorted, enc);
    }

    #[test]
    fn seeking_past_a_key_never_skips_a_longer_key() {
        let mut past = keyrev_prefix(b"a");
        past.extend_from_slice(&[0xFF; 9]);
        assert!(past < keyrev(b"a\x00", 5));
        assert!(past < keyrev(b"a\x01", 5));
        assert!(past > keyrev(b"a", 0));
    }

    #[test]
    fn lease_ids_sort_numerically() {
        assert!(lease(-5) < lease(0));
        assert!(lease(0) < lease(7));
        assert!(lease(7) < lease(i64::MAX));
    }

    #[test]
    fn state_spans_cover_every_state_prefix_and_no_raft_key() {
        let in_spans = |k: &[u8]| STATE_SPANS.iter().any(|(lo, hi)| k >= *lo && k < *hi);
        for k in [
            vec![OBSOLETE_LATEST, b'x'],
            rev(3, 0),
            keyrev(b"x", 3),
            lease(1),
            attach(1, b"x"),
            member(7),
        ] {
            assert!(is_state(&k) && in_spans(&k), "{k:?}");
        }
        for k in [META_REVISION, META_APPLIED, META_CONF_STATE] {
            assert!(is_state(k) && in_spans(k));
        }
        for k in [log(1), RAFT_HARD_STATE.to_vec(), RAFT_TRUNCATED.to_vec()] {
            assert!(!is_state(&k) && !in_spans(&k), "{k:?}");
        }
    }

    #[test]
    fn prefix_end_works() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }
}
