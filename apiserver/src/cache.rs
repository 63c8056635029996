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
//! - **Pods by node.** The cache of pods (and only it: other types pay nothing) also
//!   keeps the keys of its pods by the node they are bound to (`spec.nodeName`), so that
//!   the Node authorizer reads the pods of one node ([`WatchCache::pods_on_node`])
//!   instead of scanning every pod of the cluster. The index changes with the objects,
//!   under the same lock, on every applied change (a create, a bind or move by update, a
//!   delete) and is rebuilt on a relist, so it is never out of step with them; it shares
//!   the objects' keys, so a pod costs one set entry. Unbound pods are not in it.
//!
//! Deliberately left out: serving paged lists (`limit`/`continue`) from the cache (they
//! go to the store), and bookmarks driven by the cache (the watch layer sends them).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
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
    /// The keys of `objects` by node; Some for the cache of pods only.
    by_node: Option<NodeIndex>,
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

/// The cached pods by the node they are bound to. Its keys are clones of the keys of
/// `objects` (one allocation, shared), and a key is in it exactly when its object is in
/// `objects` and bound: both change under the one lock.
#[derive(Default)]
struct NodeIndex {
    /// Ordered sets, so that a node's pods come in key order, as a list's do. A node
    /// whose last pod left has no entry (deleted nodes leave nothing behind).
    pods: HashMap<String, BTreeSet<Bytes>>,
}

/// The node a pod is bound to; None while it is not scheduled.
fn node_name(pod: &Value) -> Option<&str> {
    pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty())
}

impl NodeIndex {
    /// The index of `objects` (the pods of a fresh list).
    fn of(objects: &BTreeMap<Bytes, Arc<Value>>) -> NodeIndex {
        let mut index = NodeIndex::default();
        for (key, pod) in objects {
            index.change(key, None, Some(pod));
        }
        index
    }

    /// Follows the pod at `key` from `before` to `after` (None: not cached). `key` is
    /// the one `objects` holds, so that the index shares it.
    fn change(&mut self, key: &Bytes, before: Option<&Value>, after: Option<&Value>) {
        let (from, to) = (before.and_then(node_name), after.and_then(node_name));
        if from == to {
            return;
        }
        if let Some(from) = from {
            if let Some(keys) = self.pods.get_mut(from) {
                keys.remove(key);
                if keys.is_empty() {
                    self.pods.remove(from);
                }
            }
        }
        if let Some(to) = to {
            match self.pods.get_mut(to) {
                Some(keys) => {
                    keys.insert(key.clone());
                }
                None => {
                    self.pods.insert(to.to_owned(), BTreeSet::from([key.clone()]));
                }
            }
        }
    }
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
    /// An empty cache of `rt`, keeping up to `window_max` recent events; nothing feeds it.
    fn new(rt: &'static ResourceType, window_max: usize) -> WatchCache {
        assert!(window_max > 0, "the watch cache window holds at least one event");
        let pods = rt.group.is_empty() && rt.plural == "pods";
        WatchCache {
            rt,
            state: Mutex::new(State {
                window_max,
                rev: 0,
                objects: BTreeMap::new(),
                by_node: pods.then(NodeIndex::default),
                window: VecDeque::new(),
                window_from: i64::MAX,
                watchers: HashMap::new(),
                next_id: 0,
            }),
            moved: Notify::new(),
            want_progress: Notify::new(),
        }
    }

    /// Creates the cache of `rt`, keeping up to `window_max` recent events, and starts
    /// feeding it from `storage`.
    pub fn start(storage: Storage, rt: &'static ResourceType, window_max: usize) -> Arc<WatchCache> {
        let cache = Arc::new(WatchCache::new(rt, window_max));
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
        self.reset(objects, rev, window_from, history)?;
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

    /// Replaces the cache's state with a list's: `objects` at `rev`, and the window of
    /// the `history` after `window_from` up to `rev`.
    fn reset(
        &self,
        objects: BTreeMap<Bytes, Arc<Value>>,
        rev: i64,
        window_from: i64,
        history: Vec<Change>,
    ) -> Result<()> {
        let mut st = self.lock();
        // Watchers of an earlier run cannot continue across a relist.
        st.watchers.clear();
        if st.by_node.is_some() {
            st.by_node = Some(NodeIndex::of(&objects));
        }
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
        Ok(())
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
                    // Borrows the objects and the index apart.
                    let state = &mut *st;
                    let prev = state.objects.insert(kv.key.clone(), obj.clone());
                    if let Some(index) = &mut state.by_node {
                        // The map keeps its own key when the object replaces one; the
                        // index shares that one.
                        let (key, _) = state
                            .objects
                            .get_key_value(&kv.key)
                            .expect("invariant: the object was just inserted");
                        index.change(key, prev.as_deref(), Some(&obj));
                    }
                    let ev = Event::new(kv.mod_revision, kv.key, obj, prev, false);
                    (ev, kv.mod_revision)
                }
                Change::Delete { key, revision, .. } => {
                    let Some(prev) = st.objects.remove(&key) else {
                        st.rev = st.rev.max(revision);
                        continue;
                    };
                    if let Some(index) = &mut st.by_node {
                        index.change(&key, Some(&prev), None);
                    }
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

    /// Waits until the cache reflects every change up to `rev` (asking the store for a
    /// progress notification), for at most [`FRESHNESS_WAIT`].
    pub(crate) async fn wait_for(&self, rev: i64) -> Result<()> {
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

    /// Its watchers now (for the metrics).
    pub fn watchers(&self) -> usize {
        self.lock().watchers.len()
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

    /// The cached pods bound to node `node` (`spec.nodeName`), in key order, and the
    /// revision they are current at: as fresh as [`list`](Self::list) with the same
    /// `min_rev`, read from the index of pods by node instead of every pod. Only the
    /// cache of pods keeps that index; any other answers an internal error.
    pub async fn pods_on_node(&self, node: &str, min_rev: i64) -> Result<(Vec<Arc<Value>>, i64)> {
        self.wait_for(min_rev.max(1)).await?;
        let st = self.lock();
        let Some(index) = &st.by_node else {
            return Err(ApiError::Internal(format!(
                "the cache of {} keeps no index by node",
                self.rt.plural
            )));
        };
        // Every indexed key is cached (both change under this lock).
        let items = index
            .pods
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|key| st.objects.get(key).cloned())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Kv;
    use serde_json::json;

    fn pods_rt() -> &'static ResourceType {
        ResourceType::find("", "v1", "pods").expect("pods are served")
    }

    fn key(name: &str) -> Bytes {
        Bytes::from(pods_rt().key(Some("ns"), name))
    }

    fn kv(name: &str, node: Option<&str>, rev: i64) -> Kv {
        let mut pod =
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ns"}, "spec": {}});
        if let Some(node) = node {
            pod["spec"]["nodeName"] = json!(node);
        }
        Kv {
            key: key(name),
            value: Bytes::from(pod.to_string()),
            create_revision: rev,
            mod_revision: rev,
        }
    }

    fn put(cache: &WatchCache, name: &str, node: Option<&str>, rev: i64) {
        cache
            .apply(vec![Change::Put {
                kv: kv(name, node, rev),
                prev: None,
            }])
            .expect("apply");
    }

    fn delete(cache: &WatchCache, name: &str, rev: i64) {
        cache
            .apply(vec![Change::Delete {
                key: key(name),
                prev: None,
                revision: rev,
            }])
            .expect("apply");
    }

    async fn on(cache: &WatchCache, node: &str) -> Vec<String> {
        let (pods, _) = cache.pods_on_node(node, 0).await.expect("pods on node");
        pods.iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    /// The nodes that have an entry in the index.
    fn indexed_nodes(cache: &WatchCache) -> Vec<String> {
        let st = cache.lock();
        let mut nodes: Vec<String> = st
            .by_node
            .as_ref()
            .expect("a pods cache")
            .pods
            .keys()
            .cloned()
            .collect();
        nodes.sort();
        nodes
    }

    /// Every indexed key is the very allocation the object map holds.
    fn assert_keys_shared(cache: &WatchCache) {
        let st = cache.lock();
        for keys in st.by_node.as_ref().expect("a pods cache").pods.values() {
            for k in keys {
                let (held, _) = st.objects.get_key_value(k).expect("an indexed pod is cached");
                assert_eq!(held.as_ptr(), k.as_ptr(), "the index shares the object map's key");
            }
        }
    }

    #[tokio::test]
    async fn the_index_follows_create_bind_move_and_delete() {
        let cache = WatchCache::new(pods_rt(), 16);
        // Created unbound, and created bound.
        put(&cache, "a", None, 1);
        put(&cache, "b", Some("n1"), 2);
        assert_eq!(on(&cache, "n1").await, ["b"]);
        assert!(on(&cache, "n2").await.is_empty());
        assert_eq!(indexed_nodes(&cache), ["n1"]);
        // Bound by an update that sets nodeName.
        put(&cache, "a", Some("n1"), 3);
        assert_eq!(on(&cache, "n1").await, ["a", "b"]);
        // Moved to another node.
        put(&cache, "b", Some("n2"), 4);
        assert_eq!(on(&cache, "n1").await, ["a"]);
        assert_eq!(on(&cache, "n2").await, ["b"]);
        // An update that keeps the node changes nothing; the newest object is served.
        put(&cache, "a", Some("n1"), 5);
        let (pods, rev) = cache.pods_on_node("n1", 0).await.expect("pods on node");
        assert_eq!(rev, 5);
        assert_eq!(pods[0]["metadata"]["resourceVersion"], "5");
        assert_keys_shared(&cache);
        // Deleted: gone, and a node left without pods leaves no entry.
        delete(&cache, "a", 6);
        assert!(on(&cache, "n1").await.is_empty());
        assert_eq!(indexed_nodes(&cache), ["n2"]);
        // A delete of what the cache does not hold changes nothing.
        delete(&cache, "a", 7);
        assert_eq!(indexed_nodes(&cache), ["n2"]);
        // Unbound again (no node): out of the index, still cached.
        put(&cache, "b", None, 8);
        assert!(indexed_nodes(&cache).is_empty());
        assert!(cache.get(&key("b")).is_some());
    }

    #[tokio::test]
    async fn a_relist_rebuilds_the_index() {
        let cache = WatchCache::new(pods_rt(), 16);
        put(&cache, "a", Some("n1"), 1);
        put(&cache, "b", Some("n2"), 2);
        // The relist sees a moved to n3, b deleted, and c new on n1.
        let objects: BTreeMap<Bytes, Arc<Value>> = [kv("a", Some("n3"), 5), kv("c", Some("n1"), 6)]
            .iter()
            .map(|kv| (kv.key.clone(), Arc::new(from_kv(kv).expect("a pod"))))
            .collect();
        cache.reset(objects, 6, 6, Vec::new()).expect("reset");
        assert_eq!(on(&cache, "n1").await, ["c"]);
        assert!(on(&cache, "n2").await.is_empty());
        assert_eq!(on(&cache, "n3").await, ["a"]);
        assert_eq!(indexed_nodes(&cache), ["n1", "n3"]);
        assert_keys_shared(&cache);
        // Changes after the relist go on from the rebuilt index.
        put(&cache, "c", Some("n3"), 7);
        assert_eq!(on(&cache, "n3").await, ["a", "c"]);
        assert_eq!(indexed_nodes(&cache), ["n3"]);
    }

    #[tokio::test]
    async fn pods_on_node_is_as_fresh_as_a_list() {
        let cache = Arc::new(WatchCache::new(pods_rt(), 16));
        put(&cache, "a", Some("n1"), 1);
        // A read at a revision the cache has not reached waits for it.
        let reader = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.pods_on_node("n1", 2).await })
        };
        tokio::task::yield_now().await;
        put(&cache, "b", Some("n1"), 2);
        cache.moved.notify_waiters();
        let (pods, rev) = reader.await.expect("the reader").expect("pods on node");
        assert_eq!((pods.len(), rev), (2, 2));
        let (listed, list_rev) = cache.list(pods_rt().prefix().as_bytes(), 2).await.expect("list");
        assert_eq!((listed.len(), list_rev), (2, 2));
    }

    #[tokio::test]
    async fn other_types_keep_no_index() {
        let rt = ResourceType::by_kind("ConfigMap").expect("configmaps");
        let cache = WatchCache::new(rt, 16);
        assert!(cache.lock().by_node.is_none());
        cache.apply(vec![Change::Progress { revision: 1 }]).expect("apply");
        assert!(matches!(cache.pods_on_node("n1", 0).await, Err(ApiError::Internal(_))));
    }
}
