//! The writer's cache of keys' newest versions.
//!
//! Every put looks up its key's newest version first: `create_revision` and `version`
//! carry over, the previous lease is detached, and the event carries the previous value
//! for watchers that asked for it. In RocksDB that lookup walks the memtable's skip list
//! and, for a key not written lately, the files' filters and blocks: on one member under
//! put load it was about a fifth of the apply thread (`MultiGet` in the profile). The
//! cache answers it from memory for keys written or looked up lately.
//!
//! It belongs to the single writer (the state machine's apply step, under its lock) and
//! holds only committed state: a key's entry is what the database holds as its newest
//! version (`None`: no live version). Entries come from the writer's own reads of the
//! database and from the changes of each applied entry once its write batch is written;
//! a snapshot install empties it. Readers never use it: they read a RocksDB snapshot.
//!
//! While it holds every live key (filled when the store opens, if they fit), it is
//! *complete*: a key it does not hold has no live version, and a put of a new key needs
//! no lookup either (in RocksDB, finding that a key has no version is a seek through
//! every level). It stops being complete the first time it has to drop an entry.
//!
//! Bounded by bytes ([`LATEST_CACHE_BYTES_MAX`], counting keys, values and a fixed
//! overhead per entry). When full it drops every other entry, an O(n) pass that comes
//! once per n/2 insertions, so its cost per insertion stays constant; which entries go
//! is arbitrary, not least recently used. Deliberately left out: an LRU order (a list
//! node per entry, touched on every hit), which would cost more than the misses it saves
//! for the uniform and skewed key choices seen so far.

use std::collections::HashMap;

use bytes::Bytes;
use capstan_proto::mvccpb::KeyValue;

/// Bytes the cache may hold: about as much as the state's RocksDB memtable (64 MiB), so
/// that it covers at least the keys written since the last flush.
pub const LATEST_CACHE_BYTES_MAX: usize = 64 << 20;

/// Charged per entry on top of its key and value: the map slot (key and `KeyValue`,
/// about 140 bytes, at the map's load factor), the allocations' own headers and rounding.
/// Measured: 100,000 puts of 256-byte values to 63,000 distinct 16-byte keys grew the
/// server's RSS by about 36 MB more with the cache than without, ~570 bytes a key, of
/// which 272 are key and value.
const ENTRY_OVERHEAD_BYTES: usize = 256;

pub struct LatestCache {
    map: HashMap<Bytes, Option<KeyValue>>,
    bytes: usize,
    bytes_max: usize,
    /// Every live key is in `map`.
    complete: bool,
    /// An entry was dropped (or not taken) since the last `clear`.
    dropped: bool,
}

/// What a complete cache answers for a key it does not hold.
static ABSENT: Option<KeyValue> = None;

fn entry_bytes(key: &Bytes, v: &Option<KeyValue>) -> usize {
    // The value's key is the map key (one allocation, shared), so it is counted once.
    key.len() + v.as_ref().map_or(0, |kv| kv.value.len()) + ENTRY_OVERHEAD_BYTES
}

impl LatestCache {
    pub fn new(bytes_max: usize) -> LatestCache {
        assert!(bytes_max >= ENTRY_OVERHEAD_BYTES, "a cache that cannot hold one entry");
        LatestCache {
            map: HashMap::new(),
            bytes: 0,
            bytes_max,
            complete: false,
            dropped: false,
        }
    }

    /// `Some(v)` when the key's newest version is known (`v` is `None` for no live
    /// version); `None` when the database must be asked.
    pub fn get(&self, key: &[u8]) -> Option<&Option<KeyValue>> {
        match self.map.get(key) {
            Some(v) => Some(v),
            None if self.complete => Some(&ABSENT),
            None => None,
        }
    }

    /// Declares that the cache holds every live key: the caller cleared it, then
    /// inserted every live key of the state. Refused (false) if it had to drop any.
    pub fn mark_complete(&mut self) -> bool {
        self.complete = !self.dropped;
        self.complete
    }

    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Whether an entry was dropped (or not taken) since the last `clear`.
    pub fn dropped(&self) -> bool {
        self.dropped
    }

    /// Records `v` as the key's newest version.
    pub fn insert(&mut self, key: Bytes, v: Option<KeyValue>) {
        let added = entry_bytes(&key, &v);
        if added > self.bytes_max / 4 {
            // One huge value would evict half the cache; leave it to the database.
            if let Some(old) = self.map.remove(&key) {
                self.bytes -= entry_bytes(&key, &old);
            }
            self.complete = false;
            self.dropped = true;
            return;
        }
        if let Some(old) = self.map.insert(key.clone(), v) {
            self.bytes -= entry_bytes(&key, &old);
        }
        self.bytes += added;
        if self.bytes > self.bytes_max {
            self.shed();
        }
        debug_assert!(self.bytes <= self.bytes_max, "the cache is over its bound");
    }

    /// Drops every other entry until the cache is within its bound again.
    fn shed(&mut self) {
        self.complete = false;
        self.dropped = true;
        while self.bytes > self.bytes_max {
            let mut i = 0usize;
            let mut freed = 0usize;
            self.map.retain(|k, v| {
                i += 1;
                let keep = i.is_multiple_of(2);
                if !keep {
                    freed += entry_bytes(k, v);
                }
                keep
            });
            self.bytes -= freed;
        }
    }

    /// Forgets everything (the state was replaced).
    pub fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
        self.complete = false;
        self.dropped = false;
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value_len: usize) -> Option<KeyValue> {
        Some(KeyValue {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::from(vec![7u8; value_len]),
            ..Default::default()
        })
    }

    #[test]
    fn remembers_versions_and_absences() {
        let mut c = LatestCache::new(1 << 20);
        assert!(c.get(b"a").is_none());
        c.insert(Bytes::from_static(b"a"), kv("a", 10));
        c.insert(Bytes::from_static(b"b"), None);
        assert_eq!(c.get(b"a").and_then(|v| v.as_ref()).map(|kv| kv.value.len()), Some(10));
        assert_eq!(c.get(b"b"), Some(&None));
        c.insert(Bytes::from_static(b"a"), None);
        assert_eq!(c.get(b"a"), Some(&None));
        assert_eq!(c.bytes(), 2 * (1 + ENTRY_OVERHEAD_BYTES));
        c.clear();
        assert!(c.is_empty());
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn stays_within_its_bound() {
        let max = 64 * 1024;
        let mut c = LatestCache::new(max);
        for i in 0..10_000 {
            let key = format!("key-{i}");
            c.insert(Bytes::from(key.clone()), kv(&key, 100 + i % 50));
            assert!(c.bytes() <= max);
        }
        let counted: usize = c.map.iter().map(|(k, v)| entry_bytes(k, v)).sum();
        assert_eq!(counted, c.bytes());
        // A shed halves the entries (their sizes vary, so not exactly the bytes).
        assert!(
            c.bytes() > max / 4,
            "shedding removed too much: {} bytes left",
            c.bytes()
        );
    }

    #[test]
    fn only_a_cache_that_dropped_nothing_is_complete() {
        let mut c = LatestCache::new(4096);
        assert!(c.get(b"x").is_none(), "an empty cache knows nothing");
        c.insert(Bytes::from_static(b"a"), kv("a", 10));
        assert!(c.mark_complete());
        assert_eq!(c.get(b"x"), Some(&None), "a complete cache knows absence");
        assert!(c.get(b"a").is_some_and(|v| v.is_some()));
        for i in 0..100 {
            c.insert(Bytes::from(format!("k{i}")), kv("k", 10));
        }
        assert!(!c.is_complete(), "shedding keeps it complete");
        assert!(c.get(b"x").is_none());
        assert!(!c.mark_complete(), "marked complete after dropping entries");
        c.clear();
        assert!(c.mark_complete());
        c.insert(Bytes::from_static(b"big"), kv("big", 4096));
        assert!(!c.is_complete(), "a value left uncached keeps it complete");
    }

    #[test]
    fn a_value_too_large_to_cache_replaces_nothing_stale() {
        let mut c = LatestCache::new(4096);
        c.insert(Bytes::from_static(b"k"), kv("k", 10));
        c.insert(Bytes::from_static(b"k"), kv("k", 4096));
        assert!(
            c.get(b"k").is_none(),
            "a stale version stayed after a larger one was written"
        );
        assert_eq!(c.bytes(), 0);
    }
}
