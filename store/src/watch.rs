//! The watch hub: delivers every event of the store to every watcher whose range it
//! touches, once, in revision order, all events of one revision in one response.
//!
//! ## Design
//! Each gRPC watch stream owns a bounded outbound queue. A watcher is either *synced*
//! (it has seen everything up to the hub's revision, and [`WatchHub::notify`] pushes new
//! revisions straight into its stream's queue) or *unsynced* (it needs revisions from
//! `next_rev` on). Writers never wait on watchers: `notify` only ever `try_send`s. When a
//! stream's queue is full, the watcher is *parked*: it becomes unsynced at the revision it
//! missed and the syncer thread catches it up later, first from the history on disk and
//! then from a bounded ring of recent revisions kept in memory, and moves it back to the
//! synced set under the hub lock, so no revision is skipped or sent twice. A watcher that
//! falls behind compaction is canceled with `compact_revision` set, as etcd does.
//!
//! New watchers with a start revision in the past start unsynced the same way, which is
//! also how "resume from revision" works.
//!
//! Progress notifications follow etcd: on request (`watch_id` -1, answered once every
//! watcher of the stream is synced, with the hub revision as the progress point) and
//! periodically for watchers created with `progress_notify`.
//!
//! Memory: an idle watcher costs its slot in a table grown in fixed chunks (at most 96 B,
//! asserted by a test), its entry in its stream's ID map and in its key's list, and a
//! copy of its key only when no other synced watcher already holds that key. A busy one
//! costs a 32 B queue slot per revision waiting to be sent: the events themselves are
//! shared by every watcher they go to, and encoded once.
//!
//! Bounds: queue length per stream, watchers per stream and in all, the ring's revisions
//! and bytes, and the events read from disk per catch-up step.
//!
//! Left out for now: `fragment` is accepted but a revision is always sent whole.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use capstan_proto::etcdserverpb::{
    watch_create_request::FilterType, ResponseHeader, WatchCreateRequest, WatchResponse,
};
use capstan_proto::mvccpb::{event::EventType, Event};
use prost::Message;
use tokio::sync::mpsc;

use crate::error::StoreError;
use crate::header::HeaderSource;
use crate::mvcc::Mvcc;

/// A stream's queue. Most of what it carries is [`Outbound::Events`]: one revision's events
/// shared (an `Arc`) with the hub's ring and with every other watcher they go to, so a
/// queued delivery costs one 32 B slot, not a copy of the events per watcher, and the
/// events are encoded once per revision, not once per watcher (see
/// [`crate::watch_service`]).
///
/// Other responses are boxed. tokio allocates a queue in blocks of 32 slots, and a client
/// creating 100 watchers at once gets 100 "created" answers at once: with responses
/// inline (112 B a slot) the blocks and their allocator pages outlived the burst often
/// enough that, measured with `capstan-bench watch-fanout` (10,000 watchers, 100 streams,
/// a fresh server each run), 9 of 39 runs showed ~450 B per idle watcher instead of
/// ~240 B; boxed, none of 24 did.
pub type WatchTx = mpsc::Sender<Outbound>;
pub type WatchRx = mpsc::Receiver<Outbound>;

/// One response waiting on a stream's queue.
#[derive(Debug)]
pub enum Outbound {
    /// Every event of one revision, for one watcher.
    Events(SharedEvents),
    /// Anything else: created, canceled and progress responses, and the part of a
    /// revision's events that a filtered or ranged watcher gets.
    Response(Box<WatchResponse>),
}

/// Every event of one revision for one watcher; the events stay shared until sent.
#[derive(Debug, Clone)]
pub struct SharedEvents {
    pub watch_id: i64,
    /// Whether the watcher asked for each event's previous key-value.
    pub prev_kv: bool,
    pub batch: Arc<RevEvents>,
}

impl Outbound {
    /// The response as the etcd API sends it.
    pub fn into_response(self) -> WatchResponse {
        match self {
            Outbound::Response(r) => *r,
            Outbound::Events(e) => WatchResponse {
                header: Some(e.batch.header),
                watch_id: e.watch_id,
                events: e.batch.events.iter().map(|ev| copy_event(ev, e.prev_kv)).collect(),
                ..Default::default()
            },
        }
    }
}

impl From<WatchResponse> for Outbound {
    fn from(r: WatchResponse) -> Outbound {
        Outbound::Response(Box::new(r))
    }
}

/// An event as a watcher gets it: with its previous key-value only if it asked for it.
/// Cheap: keys and values are shared `Bytes`.
fn copy_event(ev: &Event, prev_kv: bool) -> Event {
    if prev_kv {
        ev.clone()
    } else {
        Event {
            r#type: ev.r#type,
            kv: ev.kv.clone(),
            prev_kv: None,
        }
    }
}

/// Limits and intervals of the hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Responses queued per stream before its watchers are parked.
    pub stream_queue_max: usize,
    pub watchers_per_stream_max: usize,
    pub watchers_max: usize,
    /// Recent revisions kept in memory for catch-up without disk reads.
    pub recent_revisions_max: usize,
    pub recent_bytes_max: usize,
    /// Events read from disk per catch-up step of one watcher.
    pub catchup_events_max: usize,
    /// Period of progress notifications for watchers that asked for them.
    pub progress_interval: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            stream_queue_max: 4096,
            watchers_per_stream_max: 100_000,
            watchers_max: 1_000_000,
            recent_revisions_max: 8192,
            recent_bytes_max: 64 << 20,
            catchup_events_max: 1024,
            progress_interval: Duration::from_secs(600),
        }
    }
}

pub type StreamId = u64;

/// The events of one revision, with the header every response carrying them gets.
#[derive(Debug)]
pub struct RevEvents {
    pub rev: i64,
    pub header: ResponseHeader,
    pub events: Vec<Event>,
    /// The estimate of memory held, for the ring's bound.
    bytes: usize,
    /// The events as `WatchResponse.events` (field 11) on the wire, without and with each
    /// event's previous key-value: encoded once, by the first stream that sends them.
    encoded: [OnceLock<Vec<u8>>; 2],
}

impl RevEvents {
    pub fn new(rev: i64, header: ResponseHeader, events: Vec<Event>) -> RevEvents {
        // The events, and up to two encodings of them.
        let bytes = events.iter().map(|e| 3 * e.encoded_len() + 64).sum();
        RevEvents {
            rev,
            header,
            events,
            bytes,
            encoded: Default::default(),
        }
    }

    /// The events encoded as the `events` field of a `WatchResponse`.
    pub fn encoded(&self, prev_kv: bool) -> &[u8] {
        self.encoded[usize::from(prev_kv)].get_or_init(|| {
            let mut buf = Vec::new();
            for ev in &self.events {
                prost::encoding::message::encode(WATCH_RESPONSE_EVENTS_TAG, &copy_event(ev, prev_kv), &mut buf);
            }
            buf
        })
    }
}

/// The field number of `events` in etcd's `WatchResponse` (rpc.proto), the highest of its
/// fields, so appending the events after the other fields keeps prost's field order.
const WATCH_RESPONSE_EVENTS_TAG: u32 = 11;

/// What a watcher watches. One per watcher, so kept small: the key is shared with the
/// hub's index (and so with every other watcher of that key) where the key is already
/// watched, and an open range end costs no allocation.
struct WatchRange {
    start: Bytes,
    /// None: the single key `start`. Some(empty): every key >= `start` (etcd's range end
    /// "\0"). Otherwise the keys in [`start`, end).
    end: Option<Box<[u8]>>,
}

impl WatchRange {
    fn single(&self) -> bool {
        self.end.is_none()
    }

    fn contains(&self, k: &[u8]) -> bool {
        match &self.end {
            None => k == self.start.as_ref(),
            Some(end) => k >= self.start.as_ref() && (end.is_empty() || k < end.as_ref()),
        }
    }
}

struct Watcher {
    uid: u64,
    stream: StreamId,
    id: i64,
    range: WatchRange,
    next_rev: i64,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
    synced: bool,
    /// Position in `by_key[range.start]` while synced on a single key, so that parking
    /// or canceling one of many watchers of a hot key is O(1), not a scan of the list.
    key_pos: u32,
}

impl Watcher {
    /// Whether this watcher gets the event.
    fn wants(&self, ev: &Event) -> bool {
        let Some(kv) = &ev.kv else { return false };
        if !self.range.contains(&kv.key) {
            return false;
        }
        let is_put = ev.r#type == EventType::Put as i32;
        !((is_put && self.no_put) || (!is_put && self.no_delete))
    }

    /// What this watcher gets of one revision: nothing, all of it (shared, not copied),
    /// or a copy of the events it wants.
    fn select(&self, batch: &Arc<RevEvents>) -> Option<Outbound> {
        let wanted = batch.events.iter().filter(|ev| self.wants(ev)).count();
        if wanted == 0 {
            return None;
        }
        if wanted == batch.events.len() {
            return Some(Outbound::Events(SharedEvents {
                watch_id: self.id,
                prev_kv: self.prev_kv,
                batch: batch.clone(),
            }));
        }
        let events = batch
            .events
            .iter()
            .filter(|ev| self.wants(ev))
            .map(|ev| copy_event(ev, self.prev_kv))
            .collect();
        Some(Outbound::from(WatchResponse {
            header: Some(batch.header),
            watch_id: self.id,
            events,
            ..Default::default()
        }))
    }
}

/// Watchers per chunk of [`Slots`] (96 KiB of `Option<Watcher>`).
const SLOTS_PER_CHUNK: usize = 1024;

/// The watchers by slot number, in chunks that are never moved: the table grows a chunk at
/// a time instead of reallocating one large array (which copies it, and holds the old and
/// the new copy for a moment). Slots are reused through `Inner::free`, never removed.
#[derive(Default)]
struct Slots {
    chunks: Vec<Box<[Option<Watcher>]>>,
    len: usize,
}

impl Slots {
    /// Appends a watcher in a new slot and returns the slot.
    fn push(&mut self, w: Watcher) -> u32 {
        let slot = self.len;
        if slot.is_multiple_of(SLOTS_PER_CHUNK) {
            self.chunks.push((0..SLOTS_PER_CHUNK).map(|_| None).collect());
        }
        self.len += 1;
        self[slot] = Some(w);
        u32::try_from(slot).expect("slots are bounded by watchers_max, far below u32::MAX")
    }

    fn iter(&self) -> impl Iterator<Item = &Option<Watcher>> {
        self.chunks.iter().flat_map(|c| c.iter()).take(self.len)
    }
}

impl std::ops::Index<usize> for Slots {
    type Output = Option<Watcher>;

    fn index(&self, slot: usize) -> &Option<Watcher> {
        assert!(slot < self.len, "slot {slot} is allocated");
        &self.chunks[slot / SLOTS_PER_CHUNK][slot % SLOTS_PER_CHUNK]
    }
}

impl std::ops::IndexMut<usize> for Slots {
    fn index_mut(&mut self, slot: usize) -> &mut Option<Watcher> {
        assert!(slot < self.len, "slot {slot} is allocated");
        &mut self.chunks[slot / SLOTS_PER_CHUNK][slot % SLOTS_PER_CHUNK]
    }
}

struct Stream {
    tx: WatchTx,
    ids: HashMap<i64, u32>,
    next_id: i64,
    /// This stream's watchers that are not synced: the syncer's work, per stream, so that
    /// a full queue's watchers are passed over without a look at each.
    unsynced: HashSet<u32>,
    progress_pending: bool,
    /// Cancel notices that found the queue full.
    pending: VecDeque<Outbound>,
}

struct Inner {
    rev: i64,
    compacted: i64,
    recent: VecDeque<Arc<RevEvents>>,
    recent_bytes: usize,
    slots: Slots,
    free: Vec<u32>,
    by_key: HashMap<Bytes, Vec<u32>>,
    ranges: HashSet<u32>,
    streams: HashMap<StreamId, Stream>,
    next_stream: StreamId,
    watchers: usize,
}

/// The hub. Shared by the apply loop (which calls `notify`), the watch streams and the
/// syncer thread.
pub struct WatchHub {
    inner: Mutex<Inner>,
    mvcc: Arc<Mvcc>,
    header: Arc<HeaderSource>,
    config: HubConfig,
    next_uid: AtomicU64,
    wake: (Mutex<bool>, Condvar),
    stopped: AtomicBool,
    syncer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Why a create request was refused; sent back as a canceled "created" response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    #[error("mvcc: duplicate watch ID provided on the WatchStream")]
    DuplicateId,
    #[error("mvcc: watcher range is empty")]
    EmptyRange,
    #[error("etcdserver: too many watchers")]
    TooMany,
    #[error("watch stream closed")]
    StreamClosed,
}

impl WatchHub {
    /// Creates the hub and starts its syncer thread (which stops when the hub is dropped).
    pub fn start(mvcc: Arc<Mvcc>, header: Arc<HeaderSource>, config: HubConfig) -> Arc<WatchHub> {
        let rev = mvcc.revision();
        let compacted = mvcc.compact_revision();
        let hub = Arc::new(WatchHub {
            inner: Mutex::new(Inner {
                rev,
                compacted,
                recent: VecDeque::new(),
                recent_bytes: 0,
                slots: Slots::default(),
                free: Vec::new(),
                by_key: HashMap::new(),
                ranges: HashSet::new(),
                streams: HashMap::new(),
                next_stream: 1,
                watchers: 0,
            }),
            mvcc,
            header,
            config,
            next_uid: AtomicU64::new(1),
            wake: (Mutex::new(false), Condvar::new()),
            stopped: AtomicBool::new(false),
            syncer: Mutex::new(None),
        });
        let weak = Arc::downgrade(&hub);
        let handle = std::thread::Builder::new()
            .name("watch-syncer".into())
            .spawn(move || syncer_loop(weak))
            .expect("spawning the watch syncer thread");
        *hub.syncer.lock().expect("syncer lock poisoned") = Some(handle);
        hub
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("watch hub lock poisoned")
    }

    /// Stops the syncer thread and waits for it, so that it never outlives its owner
    /// (dropping the store from a thread racing the process's exit aborts in RocksDB).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.kick();
        let handle = self.syncer.lock().expect("syncer lock poisoned").take();
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }

    fn kick(&self) {
        let (m, c) = &self.wake;
        *m.lock().expect("wake lock poisoned") = true;
        c.notify_one();
    }

    /// The revision up to which watchers have been notified.
    pub fn revision(&self) -> i64 {
        self.lock().rev
    }

    /// Number of watchers (synced, unsynced) for tests and metrics.
    pub fn counts(&self) -> (usize, usize) {
        let g = self.lock();
        let unsynced = g.streams.values().map(|s| s.unsynced.len()).sum::<usize>();
        (g.watchers - unsynced, unsynced)
    }

    /// Opens a stream whose responses go to a new bounded queue.
    pub fn open_stream(&self) -> (StreamId, WatchRx) {
        let (tx, rx) = mpsc::channel(self.config.stream_queue_max);
        let mut g = self.lock();
        let id = g.next_stream;
        g.next_stream += 1;
        g.streams.insert(
            id,
            Stream {
                tx,
                ids: HashMap::new(),
                next_id: 0,
                unsynced: HashSet::new(),
                progress_pending: false,
                pending: VecDeque::new(),
            },
        );
        (id, rx)
    }

    /// Removes a stream and all its watchers.
    pub fn close_stream(&self, stream: StreamId) {
        let mut g = self.lock();
        let Some(s) = g.streams.remove(&stream) else { return };
        // Unindex in bulk: one pass per key, not one scan per watcher (a stream may hold
        // 100,000 watchers on one key, and writers wait on this lock).
        let gone: HashSet<u32> = s.ids.values().copied().filter(|slot| *slot != u32::MAX).collect();
        let Inner { by_key, slots, .. } = &mut *g;
        by_key.retain(|_, v| {
            let before = v.len();
            v.retain(|slot| !gone.contains(slot));
            if v.len() != before {
                renumber(slots, v);
            }
            !v.is_empty()
        });
        for slot in &gone {
            g.ranges.remove(slot);
            if g.slots[*slot as usize].take().is_some() {
                g.free.push(*slot);
                g.watchers -= 1;
            }
        }
    }

    /// The sender of a stream's queue, for control responses (created, canceled).
    pub fn stream_tx(&self, stream: StreamId) -> Option<WatchTx> {
        self.lock().streams.get(&stream).map(|s| s.tx.clone())
    }

    /// Picks the watch ID and validates a create request. The caller sends the created
    /// response and then calls [`WatchHub::register`], so that the created response comes
    /// before any event of the watcher.
    pub fn reserve(&self, stream: StreamId, req: &WatchCreateRequest) -> Result<(i64, i64), CreateError> {
        let mut g = self.lock();
        let rev = g.rev;
        let total = g.watchers;
        let s = g.streams.get_mut(&stream).ok_or(CreateError::StreamClosed)?;
        if !req.range_end.is_empty() && req.range_end.as_ref() != [0] && req.key >= req.range_end {
            return Err(CreateError::EmptyRange);
        }
        if s.ids.len() >= self.config.watchers_per_stream_max || total >= self.config.watchers_max {
            return Err(CreateError::TooMany);
        }
        let id = if req.watch_id != 0 {
            if s.ids.contains_key(&req.watch_id) {
                return Err(CreateError::DuplicateId);
            }
            req.watch_id
        } else {
            while s.ids.contains_key(&s.next_id) {
                s.next_id += 1;
            }
            let id = s.next_id;
            s.next_id += 1;
            id
        };
        // Hold the ID until register (u32::MAX marks a reservation).
        s.ids.insert(id, u32::MAX);
        Ok((id, rev))
    }

    /// Starts delivering to a reserved watcher from `start_rev` (0: after `created_rev`).
    pub fn register(&self, stream: StreamId, id: i64, req: &WatchCreateRequest, created_rev: i64) {
        let start = if req.start_revision > 0 {
            req.start_revision
        } else {
            created_rev + 1
        };
        let end = match req.range_end.as_ref() {
            [] => None,
            [0] => Some(Box::default()),
            end => Some(end.into()),
        };
        let mut g = self.lock();
        let Some(s) = g.streams.get_mut(&stream) else {
            return;
        };
        if s.ids.get(&id) != Some(&u32::MAX) {
            return;
        }
        let start_key = match g.by_key.get_key_value(req.key.as_ref()) {
            Some((key, _)) if end.is_none() => key.clone(),
            _ => Bytes::copy_from_slice(&req.key),
        };
        let w = Watcher {
            uid: self.next_uid.fetch_add(1, Ordering::Relaxed),
            stream,
            id,
            range: WatchRange { start: start_key, end },
            next_rev: start,
            prev_kv: req.prev_kv,
            no_put: req.filters.contains(&(FilterType::Noput as i32)),
            no_delete: req.filters.contains(&(FilterType::Nodelete as i32)),
            progress_notify: req.progress_notify,
            synced: false,
            key_pos: 0,
        };
        let slot = match g.free.pop() {
            Some(slot) => {
                g.slots[slot as usize] = Some(w);
                slot
            }
            None => g.slots.push(w),
        };
        g.watchers += 1;
        if let Some(s) = g.streams.get_mut(&stream) {
            s.ids.insert(id, slot);
            s.unsynced.insert(slot);
        }
        // A watcher starting now is synced at once; one starting in the past catches up.
        if start > g.rev {
            mark_synced(&mut g, slot);
        } else {
            drop(g);
            self.kick();
        }
    }

    /// Forgets a reservation whose created response could not be sent.
    pub fn unreserve(&self, stream: StreamId, id: i64) {
        let mut g = self.lock();
        if let Some(s) = g.streams.get_mut(&stream) {
            if s.ids.get(&id) == Some(&u32::MAX) {
                s.ids.remove(&id);
            }
        }
    }

    /// Cancels a watcher; returns whether it existed. The caller sends the canceled response.
    pub fn cancel(&self, stream: StreamId, id: i64) -> bool {
        let mut g = self.lock();
        let Some(slot) = g.streams.get_mut(&stream).and_then(|s| s.ids.remove(&id)) else {
            return false;
        };
        if slot != u32::MAX {
            remove_slot(&mut g, slot);
        }
        true
    }

    /// A client's progress request: answered now if every watcher of the stream is synced,
    /// otherwise as soon as they are.
    pub fn request_progress(&self, stream: StreamId) {
        let mut g = self.lock();
        let rev = g.rev;
        let header = self.header.make(rev);
        let Some(s) = g.streams.get_mut(&stream) else {
            return;
        };
        if s.unsynced.is_empty() && s.pending.is_empty() {
            let resp = WatchResponse {
                header: Some(header),
                watch_id: -1,
                ..Default::default()
            };
            if s.tx.try_send(Outbound::from(resp)).is_ok() {
                return;
            }
        }
        s.progress_pending = true;
        drop(g);
        self.kick();
    }

    /// Called by the apply loop after revision `rev` is applied, with its events in order.
    /// Never blocks on a watcher.
    pub fn notify(&self, rev: i64, events: Vec<Event>, compacted: Option<i64>) {
        let mut g = self.lock();
        if let Some(c) = compacted {
            g.compacted = c;
        }
        if events.is_empty() {
            return;
        }
        debug_assert!(rev > g.rev, "revisions are notified in order");
        g.rev = rev;
        let batch = Arc::new(RevEvents::new(rev, self.header.make(rev), events));
        g.recent_bytes += batch.bytes;
        g.recent.push_back(batch.clone());
        while g.recent.len() > self.config.recent_revisions_max
            || (g.recent_bytes > self.config.recent_bytes_max && g.recent.len() > 1)
        {
            if let Some(old) = g.recent.pop_front() {
                g.recent_bytes -= old.bytes;
            }
        }
        let mut targets: Vec<u32> = g.ranges.iter().copied().collect();
        for ev in &batch.events {
            if let Some(kv) = &ev.kv {
                if let Some(ws) = g.by_key.get(&kv.key) {
                    targets.extend_from_slice(ws);
                }
            }
        }
        if batch.events.len() > 1 {
            targets.sort_unstable();
            targets.dedup();
        }
        let mut parked = false;
        for slot in targets {
            if !deliver(&mut g, slot, &batch) {
                park(&mut g, slot, rev);
                parked = true;
            }
        }
        drop(g);
        if parked {
            self.kick();
        }
    }

    /// The state was replaced by a snapshot at revision `rev`: every watcher continues
    /// from where it was, caught up from the new state's history (or canceled if that
    /// history is compacted past it).
    pub fn restored(&self, rev: i64, compacted: i64) {
        let mut g = self.lock();
        let next = g.rev + 1;
        g.recent.clear();
        g.recent_bytes = 0;
        let synced: Vec<u32> = g
            .slots
            .iter()
            .enumerate()
            .filter(|(_, w)| w.as_ref().is_some_and(|w| w.synced))
            .map(|(i, _)| i as u32)
            .collect();
        for slot in synced {
            park(&mut g, slot, next);
        }
        g.rev = g.rev.max(rev);
        g.compacted = g.compacted.max(compacted);
        drop(g);
        self.kick();
    }

    /// One pass of the syncer: catches up unsynced watchers and answers pending progress
    /// requests. Returns whether work remains (some queue was full).
    fn sync_pass(&self) -> bool {
        // Per stream: a full queue takes nothing, so its watchers (a stream may have
        // 100,000 parked) wait for a later pass without a catch-up attempt each.
        let mut blocked = false;
        let work: Vec<Vec<(u32, u64)>> = {
            let g = self.lock();
            g.streams
                .values()
                .filter(|s| !s.unsynced.is_empty())
                .filter(|s| {
                    let full = s.tx.capacity() == 0;
                    blocked |= full;
                    !full
                })
                .map(|s| {
                    s.unsynced
                        .iter()
                        .filter_map(|&slot| g.slots[slot as usize].as_ref().map(|w| (slot, w.uid)))
                        .collect()
                })
                .collect()
        };
        for slots in work {
            for (slot, uid) in slots {
                if self.stopped.load(Ordering::Acquire) {
                    return false;
                }
                if !self.catch_up(slot, uid) {
                    // The stream's queue is full: the rest of its watchers wait too.
                    blocked = true;
                    break;
                }
            }
        }
        let mut g = self.lock();
        let rev = g.rev;
        let header = self.header.make(rev);
        for s in g.streams.values_mut() {
            while let Some(resp) = s.pending.pop_front() {
                if let Err(mpsc::error::TrySendError::Full(resp)) = s.tx.try_send(resp) {
                    s.pending.push_front(resp);
                    blocked = true;
                    break;
                }
            }
            if s.progress_pending && s.unsynced.is_empty() && s.pending.is_empty() {
                let resp = WatchResponse {
                    header: Some(header),
                    watch_id: -1,
                    ..Default::default()
                };
                match s.tx.try_send(Outbound::from(resp)) {
                    Err(mpsc::error::TrySendError::Full(_)) => blocked = true,
                    _ => s.progress_pending = false,
                }
            }
        }
        blocked
    }

    /// Moves one unsynced watcher forward. Returns false if its queue is full.
    fn catch_up(&self, slot: u32, uid: u64) -> bool {
        loop {
            let (next, upto, prev_kv) = {
                let mut g = self.lock();
                let Some(w) = g.slots[slot as usize].as_ref().filter(|w| w.uid == uid && !w.synced) else {
                    return true;
                };
                let next = w.next_rev;
                let prev_kv = w.prev_kv;
                if next < g.compacted {
                    cancel_compacted(&mut g, &self.header, slot);
                    return true;
                }
                if next > g.rev {
                    mark_synced(&mut g, slot);
                    return true;
                }
                let oldest = g.recent.front().map_or(i64::MAX, |b| b.rev);
                if next >= oldest {
                    // The rest is in memory: finish under the lock so no revision slips by.
                    // One revision at a time: a full queue stops this after the first.
                    let first = g.recent.partition_point(|b| b.rev < next);
                    for i in first..g.recent.len() {
                        let b = g.recent[i].clone();
                        if !deliver(&mut g, slot, &b) {
                            if let Some(w) = g.slots[slot as usize].as_mut() {
                                w.next_rev = b.rev;
                            }
                            return false;
                        }
                        if let Some(w) = g.slots[slot as usize].as_mut() {
                            w.next_rev = b.rev + 1;
                        }
                    }
                    mark_synced(&mut g, slot);
                    return true;
                }
                (next, (oldest - 1).min(g.rev), prev_kv)
            };
            // Older revisions come from disk, read without holding the hub lock.
            let revs = match self.mvcc.events(next, upto, prev_kv, self.config.catchup_events_max) {
                Ok(r) => r,
                Err(StoreError::Compacted) => {
                    let mut g = self.lock();
                    if g.slots[slot as usize].as_ref().is_some_and(|w| w.uid == uid) {
                        g.compacted = g.compacted.max(self.mvcc.compact_revision());
                        cancel_compacted(&mut g, &self.header, slot);
                    }
                    return true;
                }
                Err(e) => {
                    tracing::error!(error = %e, "watch catch-up read failed");
                    return false;
                }
            };
            let mut g = self.lock();
            if g.slots[slot as usize].as_ref().is_none_or(|w| w.uid != uid) {
                return true;
            }
            let read_to = revs.last().map_or(upto, |(r, _)| *r);
            for (rev, events) in revs {
                let b = Arc::new(RevEvents::new(rev, self.header.make(rev), events));
                if !deliver(&mut g, slot, &b) {
                    if let Some(w) = g.slots[slot as usize].as_mut() {
                        w.next_rev = rev;
                    }
                    return false;
                }
            }
            if let Some(w) = g.slots[slot as usize].as_mut() {
                // Revisions without events (lease grants, compactions) leave no history.
                // Stopping at the per-step bound leaves the rest for the next loop turn.
                w.next_rev = read_to.max(next) + 1;
            }
        }
    }

    /// Sends a progress notification to every synced watcher that asked for them.
    fn periodic_progress(&self) {
        let mut g = self.lock();
        let header = self.header.make(g.rev);
        let Inner { slots, streams, .. } = &mut *g;
        for w in slots.iter().flatten() {
            if w.synced && w.progress_notify {
                if let Some(s) = streams.get(&w.stream) {
                    let _ = s.tx.try_send(Outbound::from(WatchResponse {
                        header: Some(header),
                        watch_id: w.id,
                        ..Default::default()
                    }));
                }
            }
        }
    }
}

/// Tries to queue one revision for a watcher; false when its stream's queue is full.
fn deliver(g: &mut Inner, slot: u32, batch: &Arc<RevEvents>) -> bool {
    let Some(w) = g.slots[slot as usize].as_ref() else {
        return true;
    };
    // A watcher that asked for a revision ahead of the hub's is synced at once, but
    // gets nothing before its start revision.
    if batch.rev < w.next_rev {
        return true;
    }
    let Some(out) = w.select(batch) else {
        return true;
    };
    let Some(s) = g.streams.get(&w.stream) else {
        return true;
    };
    match s.tx.try_send(out) {
        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => true,
        Err(mpsc::error::TrySendError::Full(_)) => false,
    }
}

/// Re-records every watcher's position in a key's list after the list was filtered.
fn renumber(slots: &mut Slots, list: &[u32]) {
    for (pos, slot) in list.iter().enumerate() {
        if let Some(w) = slots[*slot as usize].as_mut() {
            w.key_pos = pos as u32;
        }
    }
}

fn unindex(g: &mut Inner, slot: u32) {
    let Some(w) = g.slots[slot as usize].as_ref() else {
        return;
    };
    if !w.range.single() {
        g.ranges.remove(&slot);
        return;
    }
    let pos = w.key_pos as usize;
    let key = w.range.start.clone();
    let Inner { by_key, slots, .. } = &mut *g;
    let Some(v) = by_key.get_mut(&key) else {
        return;
    };
    assert_eq!(v.get(pos), Some(&slot), "a synced watcher's key position is current");
    v.swap_remove(pos);
    if let Some(&moved) = v.get(pos) {
        if let Some(m) = slots[moved as usize].as_mut() {
            m.key_pos = pos as u32;
        }
    }
    if v.is_empty() {
        by_key.remove(&key);
    }
}

fn park(g: &mut Inner, slot: u32, rev: i64) {
    unindex(g, slot);
    let Some(w) = g.slots[slot as usize].as_mut() else {
        return;
    };
    w.synced = false;
    w.next_rev = rev;
    let stream = w.stream;
    if let Some(s) = g.streams.get_mut(&stream) {
        s.unsynced.insert(slot);
    }
}

fn mark_synced(g: &mut Inner, slot: u32) {
    let Some(w) = g.slots[slot as usize].as_mut() else {
        return;
    };
    if w.synced {
        return;
    }
    w.synced = true;
    let stream = w.stream;
    if w.range.single() {
        let list = g.by_key.entry(w.range.start.clone()).or_default();
        w.key_pos = list.len() as u32;
        list.push(slot);
    } else {
        g.ranges.insert(slot);
    }
    if let Some(s) = g.streams.get_mut(&stream) {
        s.unsynced.remove(&slot);
    }
}

fn remove_slot(g: &mut Inner, slot: u32) {
    let synced = match g.slots[slot as usize].as_ref() {
        Some(w) => w.synced,
        None => return,
    };
    if synced {
        unindex(g, slot);
    }
    if let Some(w) = g.slots[slot as usize].take() {
        if !synced {
            if let Some(s) = g.streams.get_mut(&w.stream) {
                s.unsynced.remove(&slot);
            }
        }
    }
    g.free.push(slot);
    g.watchers -= 1;
}

fn cancel_compacted(g: &mut Inner, header: &HeaderSource, slot: u32) {
    let Some(w) = g.slots[slot as usize].as_ref() else {
        return;
    };
    let (stream, id) = (w.stream, w.id);
    let compacted = g.compacted;
    if let Some(s) = g.streams.get_mut(&stream) {
        s.ids.remove(&id);
    }
    remove_slot(g, slot);
    let resp = WatchResponse {
        header: Some(header.make(g.rev)),
        watch_id: id,
        canceled: true,
        compact_revision: compacted,
        cancel_reason: "etcdserver: mvcc: required revision has been compacted".into(),
        ..Default::default()
    };
    if let Some(s) = g.streams.get_mut(&stream) {
        s.pending.push_back(Outbound::from(resp));
    }
}

fn syncer_loop(hub: Weak<WatchHub>) {
    let mut last_progress = Instant::now();
    loop {
        let Some(h) = hub.upgrade() else { return };
        if h.stopped.load(Ordering::Acquire) {
            return;
        }
        let blocked = h.sync_pass();
        if last_progress.elapsed() >= h.config.progress_interval {
            last_progress = Instant::now();
            h.periodic_progress();
        }
        // With full queues, poll again soon; otherwise sleep until kicked. The timeout
        // only bounds how late a retry comes, it never decides correctness.
        let wait = if blocked {
            Duration::from_millis(5)
        } else {
            Duration::from_millis(100)
        };
        let (m, c) = &h.wake;
        let guard = m.lock().expect("wake lock poisoned");
        let (mut guard, _) = c
            .wait_timeout_while(guard, wait, |kicked| !*kicked)
            .expect("wake lock poisoned");
        *guard = false;
        drop(guard);
        drop(h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_proto::mvccpb::KeyValue;

    /// Every synced single-key watcher is listed once, at the position it records.
    fn check_index(g: &Inner) {
        let mut listed = 0;
        for (key, list) in &g.by_key {
            assert!(!list.is_empty(), "empty lists are removed");
            for (pos, slot) in list.iter().enumerate() {
                let w = g.slots[*slot as usize].as_ref().expect("listed watchers exist");
                assert!(w.synced && w.range.single() && w.range.start == *key);
                assert_eq!(w.key_pos as usize, pos);
                listed += 1;
            }
        }
        let single_synced = g
            .slots
            .iter()
            .flatten()
            .filter(|w| w.synced && w.range.single())
            .count();
        assert_eq!(listed, single_synced);
    }

    /// A hub over an empty store in a temporary directory (kept alive by the caller).
    fn test_hub(stream_queue_max: usize) -> (tempfile::TempDir, Arc<WatchHub>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mvcc = Arc::new(Mvcc::open(dir.path()).expect("open"));
        let config = HubConfig {
            stream_queue_max,
            ..HubConfig::default()
        };
        (dir, WatchHub::start(mvcc, Arc::new(HeaderSource::new(1, 1)), config))
    }

    fn put_event(key: &str, rev: i64) -> Vec<Event> {
        vec![Event {
            r#type: EventType::Put as i32,
            kv: Some(KeyValue {
                key: Bytes::copy_from_slice(key.as_bytes()),
                mod_revision: rev,
                ..Default::default()
            }),
            prev_kv: None,
        }]
    }

    #[test]
    fn parking_and_canceling_watchers_of_a_hot_key_keeps_the_index_exact() {
        let (_dir, hub) = test_hub(2);
        let mut streams = Vec::new();
        // 2,400 watchers: the slot table spans three chunks.
        for _ in 0..60 {
            let (id, rx) = hub.open_stream();
            streams.push((id, rx));
            for _ in 0..40 {
                let req = WatchCreateRequest {
                    key: Bytes::from_static(b"hot"),
                    ..Default::default()
                };
                let (wid, rev) = hub.reserve(id, &req).expect("reserve");
                hub.register(id, wid, &req, rev);
            }
        }
        check_index(&hub.lock());
        // Nobody reads: the queues fill and every watcher is parked, in fan-out order.
        for rev in 2..6 {
            hub.notify(rev, put_event("hot", rev), None);
            check_index(&hub.lock());
        }
        // Some watchers synced again, others canceled, some streams closed.
        for (n, (id, _)) in streams.iter().enumerate() {
            if n % 3 == 0 {
                hub.close_stream(*id);
            } else {
                for wid in (0..40).step_by(n % 4 + 1) {
                    hub.cancel(*id, wid);
                }
            }
            check_index(&hub.lock());
        }
        let mut g = hub.lock();
        let parked: Vec<u32> = g.streams.values().flat_map(|s| s.unsynced.iter().copied()).collect();
        for slot in parked.iter().step_by(2) {
            mark_synced(&mut g, *slot);
        }
        check_index(&g);
        for slot in parked.iter().skip(1).step_by(4) {
            remove_slot(&mut g, *slot);
        }
        check_index(&g);
        drop(g);
        hub.stop();
    }

    #[test]
    fn a_watcher_slot_stays_small() {
        // One per watcher: growing it grows every idle watcher's cost.
        assert!(std::mem::size_of::<Option<Watcher>>() <= 96);
        // One per queued response: a revision queued for 100,000 watchers costs this each.
        assert!(std::mem::size_of::<Outbound>() <= 32);
    }

    #[test]
    fn watch_ranges_follow_etcd() {
        let single = WatchRange {
            start: Bytes::from_static(b"b"),
            end: None,
        };
        assert!(single.single() && single.contains(b"b"));
        assert!(!single.contains(b"a") && !single.contains(b"ba") && !single.contains(b""));
        let from = WatchRange {
            start: Bytes::from_static(b"b"),
            end: Some(Box::default()),
        };
        assert!(!from.single() && from.contains(b"b") && from.contains(b"zzz"));
        assert!(!from.contains(b"a") && !from.contains(b""));
        let range = WatchRange {
            start: Bytes::from_static(b"b"),
            end: Some(b"d".as_slice().into()),
        };
        assert!(range.contains(b"b") && range.contains(b"c\xff") && !range.contains(b"d"));
        assert!(!range.contains(b"a") && !range.contains(b"d0"));
    }

    #[test]
    fn watchers_of_one_key_share_it_and_slots_are_reused_across_chunks() {
        let (_dir, hub) = test_hub(HubConfig::default().stream_queue_max);
        let (sid, mut rx) = hub.open_stream();
        let create = |key: &'static [u8], range_end: &'static [u8]| {
            let req = WatchCreateRequest {
                key: Bytes::from_static(key),
                range_end: Bytes::from_static(range_end),
                ..Default::default()
            };
            let (wid, rev) = hub.reserve(sid, &req).expect("reserve");
            hub.register(sid, wid, &req, rev);
            wid
        };
        let hot: Vec<i64> = (0..2_500).map(|_| create(b"hot", b"")).collect();
        let prefix: Vec<i64> = (0..10).map(|_| create(b"h", b"i")).collect();
        {
            let g = hub.lock();
            check_index(&g);
            assert_eq!(g.slots.len, 2_510);
            assert_eq!(g.slots.chunks.len(), 3);
            let ptrs: HashSet<*const u8> = g
                .slots
                .iter()
                .flatten()
                .filter(|w| w.range.single())
                .map(|w| w.range.start.as_ptr())
                .collect();
            assert_eq!(ptrs.len(), 1, "every watcher of one key holds the same copy of it");
        }
        // Freed slots are taken again before the table grows.
        for wid in hot.iter().step_by(10) {
            assert!(hub.cancel(sid, *wid));
        }
        for _ in 0..250 {
            create(b"hot", b"");
        }
        {
            let g = hub.lock();
            check_index(&g);
            assert_eq!(g.slots.len, 2_510);
            assert_eq!(g.watchers, 2_510);
        }
        hub.notify(2, put_event("hot", 2), None);
        let mut got = HashSet::new();
        while let Ok(out) = rx.try_recv() {
            assert!(
                matches!(out, Outbound::Events(_)),
                "a whole revision is shared, not copied"
            );
            let resp = out.into_response();
            assert_eq!(resp.events.len(), 1);
            assert!(got.insert(resp.watch_id), "one response per watcher");
        }
        assert_eq!(got.len(), 2_510);
        assert!(prefix.iter().all(|wid| got.contains(wid)));
        hub.stop();
    }

    #[test]
    fn a_full_stream_does_not_hold_back_another_and_its_parked_watchers_all_catch_up() {
        let (_dir, hub) = test_hub(8);
        let (full, mut full_rx) = hub.open_stream();
        let (other, mut other_rx) = hub.open_stream();
        let watch = |sid: StreamId, n: usize| -> Vec<i64> {
            (0..n)
                .map(|_| {
                    let req = WatchCreateRequest {
                        key: Bytes::from_static(b"k"),
                        ..Default::default()
                    };
                    let (wid, rev) = hub.reserve(sid, &req).expect("reserve");
                    hub.register(sid, wid, &req, rev);
                    wid
                })
                .collect()
        };
        let full_ids = watch(full, 20);
        let other_ids = watch(other, 2);
        let revs = 2..=11_i64;
        // Nobody reads `full`: 8 of its 200 deliveries fit, the rest of its watchers park.
        let mut other_got: HashMap<i64, Vec<i64>> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        for rev in revs.clone() {
            hub.notify(rev, put_event("k", rev), None);
            // `other` is read as it goes; its two watchers never wait on `full`.
            while other_got.values().map(Vec::len).sum::<usize>() < 2 * (rev - 1) as usize {
                assert!(Instant::now() < deadline, "the other stream got every revision");
                match other_rx.try_recv() {
                    Ok(out) => {
                        let r = out.into_response();
                        other_got
                            .entry(r.watch_id)
                            .or_default()
                            .push(r.header.expect("header").revision);
                    }
                    Err(_) => std::thread::yield_now(),
                }
            }
        }
        let want: Vec<i64> = revs.clone().collect();
        assert!(other_ids.iter().all(|id| other_got[id] == want));
        assert!(hub.counts().1 > 0, "watchers of the full stream are parked");
        // Now read `full`: every watcher gets every revision once, in order.
        let mut got: HashMap<i64, Vec<i64>> = HashMap::new();
        while got.values().map(Vec::len).sum::<usize>() < full_ids.len() * want.len() {
            assert!(Instant::now() < deadline, "the full stream's watchers caught up");
            match full_rx.try_recv() {
                Ok(out) => {
                    let r = out.into_response();
                    got.entry(r.watch_id)
                        .or_default()
                        .push(r.events[0].kv.as_ref().expect("kv").mod_revision);
                }
                Err(_) => std::thread::yield_now(),
            }
        }
        assert!(full_ids.iter().all(|id| got[id] == want), "{got:?}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while hub.counts() != (22, 0) {
            assert!(
                Instant::now() < deadline,
                "every watcher synced again: {:?}",
                hub.counts()
            );
            std::thread::yield_now();
        }
        hub.stop();
    }
}
