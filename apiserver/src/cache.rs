//! The watch cache: one store watch per resource type feeds an in-memory copy of the
//! current objects and a window of recent events. Every client watch, and every list
//! that can be answered without paging through the store, is served from it, so the
//! store sees one watch per resource type however many clients watch (upstream's
//! Cacher).
//!
//! - **Freshness.** The cache knows the store revision up to which it has seen every
//!   change of its type (`rev`). A consistent read (no resourceVersion) first asks the
//!   store for its current revision, then waits until the cache has caught up to it
//!   (asking the store for a progress notification, which moves `rev` even when nothing
//!   of this type changed). So a list from the cache is as fresh as a quorum read.
//! - **Window.** The newest events (up to the window size, [`WINDOW_EVENTS_DEFAULT`]
//!   unless configured) stay in memory: a watch from
//!   a resourceVersion inside the window replays from it; one older than the window gets
//!   `410 Expired` and lists again, as clients of the real apiserver do.
//! - **Slow watchers.** Each watcher has a bounded queue; one that fills it is dropped
//!   (its HTTP stream ends, and the client watches again from its last resourceVersion).
//!   Nobody else waits for it.
//! - **Restarts.** If the store watch fails (compaction overtook it, the store went
//!   away), the cache lists again and drops every watcher, which re-watch.
//!
//! Deliberately left out: serving paged lists (`limit`/`continue`) from the cache (they
//! go to the store), and bookmarks driven by the cache (the watch layer sends them).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, Notify};

use crate::error::{ApiError, Result};
use crate::object::{from_kv, set_resource_version};
use crate::resources::{ResourceType, RESOURCES};
use crate::storage::{prefix_end, Change, Storage};

/// Recent events kept per resource type for watches that resume, by default.
pub const WINDOW_EVENTS_DEFAULT: usize = 10_000;
/// Events queued for one watcher before it counts as too slow and is dropped.
pub const WATCHER_QUEUE_MAX: usize = 1_024;
/// Watchers of one resource type.
pub const WATCHERS_MAX: usize = 100_000;
/// How long a read waits for the cache to catch up to the store.
const FRESHNESS_WAIT: Duration = Duration::from_secs(10);
/// Pause before listing again after the store watch failed.
const RESTART_PAUSE: Duration = Duration::from_millis(200);

/// One change of one object.
#[derive(Debug, Clone)]
pub struct Event {
    pub rev: i64,
    pub key: Bytes,
    /// The object after the change; for a delete, the last version (at `rev`).
    pub obj: Arc<Value>,
    /// The object before the change; None for a create.
    pub prev: Option<Arc<Value>>,
    pub deleted: bool,
    /// The JSON watch line `{"type":...,"object":obj}` for ADDED, MODIFIED and DELETED,
    /// encoded once for every watcher that sends it.
    pub lines: [std::sync::OnceLock<Bytes>; 3],
    /// The object alone as JSON, encoded once for every mesh stream that sends it.
    json: std::sync::OnceLock<Bytes>,
}

impl Event {
    pub(crate) fn new(rev: i64, key: Bytes, obj: Arc<Value>, prev: Option<Arc<Value>>, deleted: bool) -> Event {
        Event {
            rev,
            key,
            obj,
            prev,
            deleted,
            lines: Default::default(),
            json: Default::default(),
        }
    }

    /// The object after the change as JSON (for a delete, its last version), encoded
    /// once however many mesh streams send it.
    pub fn object_json(&self) -> Bytes {
        self.json
            .get_or_init(|| Bytes::from(serde_json::to_vec(&*self.obj).unwrap_or_default()))
            .clone()
    }

    /// The encoded watch line of this event as `kind` with its object.
    pub fn line(&self, kind: &str) -> Bytes {
        let slot = match kind {
            "ADDED" => 0,
            "MODIFIED" => 1,
            _ => 2,
        };
        self.lines[slot]
            .get_or_init(|| {
                let mut line =
                    serde_json::to_vec(&serde_json::json!({"type": kind, "object": &*self.obj})).unwrap_or_default();
                line.push(b'\n');
                Bytes::from(line)
            })
            .clone()
    }
}

/// What a watcher receives.
#[derive(Debug, Clone)]
pub enum Message {
    Event(Arc<Event>),
    /// Every change up to this revision has been delivered.
    Progress(i64),
}

struct Watcher {
    prefix: Vec<u8>,
    tx: mpsc::Sender<Message>,
}

struct State {
    /// Events the window holds at most.
    window_max: usize,
    /// Every change up to `rev` is reflected; 0 until the first list.
    rev: i64,
    objects: BTreeMap<Bytes, Arc<Value>>,
    window: VecDeque<Arc<Event>>,
    /// A watch from any revision >= this can be replayed from the window.
    window_from: i64,
    watchers: HashMap<u64, Watcher>,
    next_id: u64,
}

/// The cache of one resource type.
pub struct WatchCache {
    rt: &'static ResourceType,
    state: Mutex<State>,
    /// Wakes readers waiting for `rev` to move.
    moved: Notify,
    /// Asks the feeding task for a progress notification from the store.
    want_progress: Notify,
}

/// A watcher's subscription: what to send first, then the live queue.
pub struct Subscription {
    /// Objects (for a watch without resourceVersion: the current state, as ADDED) or
    /// events (replayed from the window) to send before the queue.
    pub initial: Initial,
    pub rx: mpsc::Receiver<Message>,
    /// The revision the subscription starts after.
    pub rev: i64,
    id: u64,
    cache: Arc<WatchCache>,
}

pub enum Initial {
    Objects(Vec<Arc<Value>>),
    Events(Vec<Arc<Event>>),
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.cache.lock().watchers.remove(&self.id);
    }
}

fn in_prefix(key: &[u8], prefix: &[u8]) -> bool {
    key.starts_with(prefix)
}

/// Appends an event to the window, dropping the oldest beyond its bound.
fn push_window(st: &mut State, event: Event) -> Arc<Event> {
    let ev = Arc::new(event);
    st.window.push_back(ev.clone());
    while st.window.len() > st.window_max {
        if let Some(old) = st.window.pop_front() {
            st.window_from = old.rev;
        }
    }
    ev
}

impl WatchCache {
    /// Creates the cache of `rt`, keeping up to `window_max` recent events, and starts
    /// feeding it from `storage`.
    pub fn start(storage: Storage, rt: &'static ResourceType, window_max: usize) -> Arc<WatchCache> {
        assert!(window_max > 0, "the watch cache window holds at least one event");
        let cache = Arc::new(WatchCache {
            rt,
            state: Mutex::new(State {
                window_max,
                rev: 0,
                objects: BTreeMap::new(),
                window: VecDeque::new(),
                window_from: i64::MAX,
                watchers: HashMap::new(),
                next_id: 0,
            }),
            moved: Notify::new(),
            want_progress: Notify::new(),
        });
        let weak = Arc::downgrade(&cache);
        tokio::spawn(async move {
            loop {
                let Some(cache) = weak.upgrade() else { return };
                if let Err(e) = cache.feed(&storage).await {
                    tracing::warn!(resource = rt.plural, error = %e, "watch cache restarts");
                }
                drop(cache);
                tokio::time::sleep(RESTART_PAUSE).await;
            }
        });
        cache
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("watch cache lock poisoned")
    }

    /// Lists the type, then follows the store's changes until the watch fails.
    async fn feed(self: &Arc<Self>, storage: &Storage) -> Result<()> {
        let prefix = self.rt.prefix();
        let end = prefix_end(prefix.as_bytes());
        let mut objects = BTreeMap::new();
        let mut from = prefix.as_bytes().to_vec();
        let mut rev = 0;
        loop {
            let page = storage.list(&from, &end, 1000, rev, rev == 0).await?;
            rev = page.revision;
            for kv in &page.kvs {
                objects.insert(kv.key.clone(), Arc::new(from_kv(kv)?));
            }
            match page.kvs.last() {
                Some(last) if page.more => {
                    from = last.key.to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        // The window starts with the history before the list, so that a client that
        // listed (from the store, or from this cache before a restart) a little
        // earlier can still watch from its resourceVersion.
        let (mut ws, history, later, window_from) = match self.history(storage, prefix.as_bytes(), &end, rev).await? {
            Some(h) => h,
            None => (
                storage.watch(prefix.as_bytes(), &end, rev).await?,
                Vec::new(),
                Vec::new(),
                rev,
            ),
        };
        {
            let mut st = self.lock();
            // Watchers of an earlier run cannot continue across a relist.
            st.watchers.clear();
            st.objects = objects;
            st.window.clear();
            st.window_from = window_from;
            st.rev = rev;
            for change in history {
                match change {
                    Change::Put { kv, prev } if kv.mod_revision <= rev => {
                        let obj = Arc::new(from_kv(&kv)?);
                        let prev = prev.as_ref().map(from_kv).transpose()?.map(Arc::new);
                        push_window(&mut st, Event::new(kv.mod_revision, kv.key, obj, prev, false));
                    }
                    Change::Delete {
                        key,
                        prev: Some(prev),
                        revision,
                    } if revision <= rev => {
                        let mut last = from_kv(&prev)?;
                        set_resource_version(&mut last, revision);
                        let prev = Some(Arc::new(from_kv(&prev)?));
                        push_window(&mut st, Event::new(revision, key, Arc::new(last), prev, true));
                    }
                    _ => {}
                }
            }
        }
        // What the replay brought beyond the list is applied like any change.
        self.apply(later)?;
        self.moved.notify_waiters();
        loop {
            let changes = tokio::select! {
                c = ws.next() => c,
                _ = self.want_progress.notified() => {
                    ws.request_progress();
                    continue;
                }
            };
            let changes = match changes {
                None => return Err(ApiError::Unavailable("the store ended the watch".into())),
                Some(c) => c?,
            };
            self.apply(changes)?;
            self.moved.notify_waiters();
        }
    }

    /// Watches from up to a window's worth of revisions before `rev` and reads the
    /// replayed history until it passes `rev`. Returns the watch, the changes up to
    /// `rev`, those after it read so far, and the revision after which the history is
    /// complete; None if that history is compacted.
    #[allow(clippy::type_complexity)]
    async fn history(
        &self,
        storage: &Storage,
        start: &[u8],
        end: &[u8],
        rev: i64,
    ) -> Result<Option<(crate::storage::WatchStream, Vec<Change>, Vec<Change>, i64)>> {
        let window_max = self.lock().window_max as i64;
        let from = (rev - window_max).max(1);
        let mut ws = storage.watch(start, end, from - 1).await?;
        ws.request_progress();
        let mut history = Vec::new();
        let mut later = Vec::new();
        loop {
            let batch = match ws.next().await {
                None => return Err(ApiError::Unavailable("the store ended the watch".into())),
                Some(Err(ApiError::Expired(_))) => return Ok(None),
                Some(Err(e)) => return Err(e),
                Some(Ok(b)) => b,
            };
            let mut done = false;
            for c in batch {
                let r = match &c {
                    Change::Put { kv, .. } => kv.mod_revision,
                    Change::Delete { revision, .. } => *revision,
                    Change::Progress { revision } => {
                        done |= *revision >= rev;
                        continue;
                    }
                };
                if r <= rev {
                    history.push(c);
                } else {
                    done = true;
                    later.push(c);
                }
            }
            if done {
                break;
            }
            // Until the store says the replay reached `rev`.
            ws.request_progress();
        }
        Ok(Some((ws, history, later, from - 1)))
    }

    fn apply(&self, changes: Vec<Change>) -> Result<()> {
        let mut st = self.lock();
        for change in changes {
            let (event, rev) = match change {
                Change::Progress { revision } => {
                    st.rev = st.rev.max(revision);
                    let rev = st.rev;
                    for w in st.watchers.values() {
                        let _ = w.tx.try_send(Message::Progress(rev));
                    }
                    continue;
                }
                Change::Put { kv, .. } => {
                    let obj = Arc::new(from_kv(&kv)?);
                    let prev = st.objects.insert(kv.key.clone(), obj.clone());
                    let ev = Event::new(kv.mod_revision, kv.key, obj, prev, false);
                    (ev, kv.mod_revision)
                }
                Change::Delete { key, revision, .. } => {
                    let Some(prev) = st.objects.remove(&key) else {
                        st.rev = st.rev.max(revision);
                        continue;
                    };
                    let mut last = (*prev).clone();
                    set_resource_version(&mut last, revision);
                    let ev = Event::new(revision, key, Arc::new(last), Some(prev), true);
                    (ev, revision)
                }
            };
            st.rev = st.rev.max(rev);
            let ev = push_window(&mut st, event);
            // Deliver; a watcher whose queue is full is dropped (it re-watches).
            let mut slow = Vec::new();
            for (id, w) in &st.watchers {
                if in_prefix(&ev.key, &w.prefix) && w.tx.try_send(Message::Event(ev.clone())).is_err() {
                    slow.push(*id);
                }
            }
            for id in slow {
                st.watchers.remove(&id);
            }
        }
        Ok(())
    }

    /// Waits until the cache reflects every change up to `rev`.
    async fn wait_for(&self, rev: i64) -> Result<()> {
        let deadline = tokio::time::Instant::now() + FRESHNESS_WAIT;
        loop {
            let moved = self.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            if self.lock().rev >= rev {
                return Ok(());
            }
            self.want_progress.notify_one();
            if tokio::time::timeout_at(deadline, moved).await.is_err() {
                return Err(ApiError::Timeout(format!(
                    "Too large resource version: {rev}, current: {}",
                    self.lock().rev
                )));
            }
        }
    }

    /// The revision up to which the cache reflects every change (0 before its first
    /// list).
    pub fn revision(&self) -> i64 {
        self.lock().rev
    }

    /// Waits until the cache is as fresh as a quorum read of the store now.
    pub async fn wait_fresh(&self, storage: &Storage) -> Result<()> {
        // A quorum read of one key (the prefix itself, which holds nothing) tells the
        // store's revision; a range read would also count every key under the prefix.
        let (_, rev) = storage.get(&self.rt.prefix(), true).await?;
        self.wait_for(rev).await
    }

    /// The objects under `prefix` and the revision they are current at. `min_rev`: wait
    /// until the cache is at least that fresh.
    pub async fn list(&self, prefix: &[u8], min_rev: i64) -> Result<(Vec<Arc<Value>>, i64)> {
        self.wait_for(min_rev.max(1)).await?;
        let st = self.lock();
        let end = prefix_end(prefix);
        let items = st
            .objects
            .range(Bytes::copy_from_slice(prefix)..Bytes::from(end))
            .map(|(_, v)| v.clone())
            .collect();
        Ok((items, st.rev))
    }

    /// The cached object at `key`, if the cache has loaded and holds it. It may lag the
    /// store: callers that write use it as a first guess and let the transaction's
    /// revision compare catch a stale one.
    pub fn get(&self, key: &[u8]) -> Option<Arc<Value>> {
        let st = self.lock();
        if st.rev == 0 {
            return None;
        }
        st.objects.get(key).cloned()
    }

    /// Subscribes to changes under `prefix`: after `after` (replayed from the window if
    /// needed), or, with `None`, starting with the current objects.
    pub async fn subscribe(self: &Arc<Self>, prefix: &[u8], after: Option<i64>) -> Result<Subscription> {
        self.wait_for(after.unwrap_or(1).max(1)).await?;
        let (tx, rx) = mpsc::channel(WATCHER_QUEUE_MAX);
        let mut st = self.lock();
        if st.watchers.len() >= WATCHERS_MAX {
            return Err(ApiError::TooManyRequests(format!(
                "too many watchers of {}",
                self.rt.plural
            )));
        }
        let (initial, rev) = match after {
            None => {
                let end = prefix_end(prefix);
                let objs = st
                    .objects
                    .range(Bytes::copy_from_slice(prefix)..Bytes::from(end))
                    .map(|(_, v)| v.clone())
                    .collect();
                (Initial::Objects(objs), st.rev)
            }
            Some(n) => {
                if n < st.window_from {
                    return Err(ApiError::Expired(format!(
                        "too old resource version: {n} ({})",
                        st.window_from
                    )));
                }
                let events = st
                    .window
                    .iter()
                    .filter(|e| e.rev > n && in_prefix(&e.key, prefix))
                    .cloned()
                    .collect();
                (Initial::Events(events), n.max(st.rev))
            }
        };
        let id = st.next_id;
        st.next_id += 1;
        st.watchers.insert(
            id,
            Watcher {
                prefix: prefix.to_vec(),
                tx,
            },
        );
        drop(st);
        Ok(Subscription {
            initial,
            rx,
            rev,
            id,
            cache: self.clone(),
        })
    }
}

/// One cache per served resource type.
pub struct Caches {
    by_plural: HashMap<&'static str, Arc<WatchCache>>,
}

impl Caches {
    /// Starts a cache for every served type, each keeping up to `window_max` events.
    pub fn start(storage: &Storage, window_max: usize) -> Caches {
        Caches {
            by_plural: RESOURCES
                .iter()
                .map(|rt| (rt.plural, WatchCache::start(storage.clone(), rt, window_max)))
                .collect(),
        }
    }

    pub fn get(&self, rt: &ResourceType) -> &Arc<WatchCache> {
        self.by_plural
            .get(rt.plural)
            .expect("a cache is started for every served type")
    }
}
