//! The garbage collector: deletes objects whose owners are gone, and carries out the
//! three propagation policies of a delete, as upstream's `garbage-collector-controller`.
//!
//! - **Background** (the default): the owner goes at once; an object whose owners are
//!   all gone is then deleted, and one some of whose owners are gone loses the references
//!   to those. So deleting a Deployment takes its ReplicaSets, and their pods after them;
//!   deleting a Service its EndpointSlices.
//! - **Foreground**: the API server gives the owner `deletionTimestamp` and the
//!   `foregroundDeletion` finalizer. Its dependents are deleted (with Foreground
//!   themselves when they have dependents of their own, so the cascade waits all the way
//!   down; with Background otherwise); a dependent that also has another, live owner only
//!   loses its reference instead. Once no dependent whose reference has
//!   `blockOwnerDeletion: true` remains, the finalizer is removed and the API server
//!   removes the owner.
//! - **Orphan**: the owner gets the `orphan` finalizer; every dependent loses its
//!   reference to the owner, then the finalizer is removed and the owner goes.
//!
//! An owner is gone when no object of its kind and name exists (in the dependent's
//! namespace, or cluster-wide for cluster-scoped kinds), or one exists with another uid (a
//! new object under the old name is not the owner).
//!
//! Design, after upstream's: one watch per resource type the API serves with the `list`,
//! `watch` and `delete` verbs (found by discovery, so every kind is covered, not only the
//! built-in owners), feeding a dependency graph kept in memory: per object only its
//! identity, its owner references and a few flags, and the uids of its dependents. The
//! graph decides *when* to look at an object: when one of its owners disappears from the
//! graph, when it names an owner the graph has never seen (a "virtual" node, checked with
//! the API), when its owner starts waiting for dependents, or when a blocking dependent of
//! a waiting owner goes. Decisions are then taken on fresh reads from the API (the object,
//! and one GET per owner it names), never on the graph alone, which may lag. So an owner's
//! ordinary updates (a ReplicaSet's status, say) cost nothing, and collecting an object
//! costs O(its owners) requests. A re-list after a broken watch counts objects it no
//! longer lists as deleted.
//!
//! Work goes through two deduplicating queues (objects to check, owners to orphan), each
//! served by a few workers; an object is never handled by two workers at once, and a
//! failure is retried with client-go's per-item backoff ([`Backoff`]). The queues hold
//! each uid at most once, so they are bounded by the number of objects; the watches feed
//! the graph through a bounded channel ([`EVENTS_QUEUE_MAX`]) and wait when it is full.
//!
//! Left out: upstream's cache of owners known to be absent (each check GETs the owner
//! again), its handling of virtual nodes whose coordinates disagree between dependents,
//! periodic re-discovery (the API's types do not change while it runs; an owner of a kind
//! it does not serve is treated as present: the collector never deletes on a guess), and
//! metadata-only watches (`PartialObjectMetadata`): the watches carry whole objects.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::discovery::{verbs, Discovery, Scope};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use crate::error::AgentError;
use crate::runtime::Backoff;

/// The finalizer of an owner whose dependents are being orphaned.
pub const FINALIZER_ORPHAN: &str = "orphan";
/// The finalizer of an owner waiting for its blocking dependents to be deleted.
pub const FINALIZER_FOREGROUND: &str = "foregroundDeletion";

/// Graph changes waiting for the graph builder; the watches wait while it is full.
pub const EVENTS_QUEUE_MAX: usize = 1024;
/// Workers checking objects (upstream runs 20 on bigger machines).
const DELETE_WORKERS: usize = 4;
/// Workers orphaning the dependents of owners.
const ORPHAN_WORKERS: usize = 2;
/// Attempts to remove a finalizer that meet a conflict, each after a fresh read.
const FINALIZER_ATTEMPTS_MAX: usize = 5;
/// The longest wait between two discovery attempts at start.
const DISCOVERY_RETRY_MAX: Duration = Duration::from_secs(30);

/// A served resource type the collector watches.
struct Resource {
    api: ApiResource,
    namespaced: bool,
}

/// Who an object is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    api_version: String,
    kind: String,
    /// None for a cluster-scoped object.
    namespace: Option<String>,
    name: String,
    uid: String,
}

/// One object in the dependency graph.
struct Node {
    identity: Identity,
    /// Index into the watched resources; None for a kind the API does not serve.
    resource: Option<usize>,
    owners: Vec<OwnerReference>,
    /// The uids of the objects that name this one as an owner.
    dependents: HashSet<String>,
    /// Seen by a watch; false for a "virtual" node, known only from a reference to it.
    observed: bool,
    /// Has `deletionTimestamp` (one way: an object never stops being deleted).
    being_deleted: bool,
    /// Waiting for its dependents (deleted in the foreground; one way too).
    deleting_dependents: bool,
    /// Being deleted with the `orphan` finalizer, as last seen.
    orphaning: bool,
}

/// What a watch saw of one object.
#[derive(Debug, Clone)]
struct Seen {
    resource: usize,
    identity: Identity,
    owners: Vec<OwnerReference>,
    deleting: bool,
    orphan: bool,
    foreground: bool,
}

/// A change for the graph builder.
#[derive(Debug)]
enum Change {
    Upsert(Seen),
    Delete(String),
    /// A re-list of one resource ended: these uids exist, its other observed nodes do not.
    Relisted {
        resource: usize,
        uids: HashSet<String>,
    },
}

/// The graph, as upstream's GraphBuilder keeps it: objects by uid.
#[derive(Default)]
struct Graph {
    nodes: HashMap<String, Node>,
}

/// What a worker needs to know of one node, copied out of the graph.
struct Item {
    identity: Identity,
    resource: Option<usize>,
    observed: bool,
    being_deleted: bool,
    deleting_dependents: bool,
    has_dependents: bool,
    /// One of its dependents is itself waiting for its dependents (a possible cycle).
    dependent_deleting_dependents: bool,
}

/// A worker's verdict on one item.
enum Verdict {
    Done,
    /// Look again later (with backoff): the graph has not caught up with it yet.
    Retry,
}

/// Runs the collector until its future is dropped.
pub async fn run(client: Client) {
    let resources = discover(&client).await;
    tracing::info!(resources = resources.len(), "garbage collector watching");
    let gc = Arc::new(Collector {
        client,
        resources,
        graph: Mutex::new(Graph::default()),
        deletes: WorkQueue::default(),
        orphans: WorkQueue::default(),
        delete_backoff: Backoff::default(),
        orphan_backoff: Backoff::default(),
    });
    let (tx, rx) = mpsc::channel(EVENTS_QUEUE_MAX);
    let watches = futures::future::join_all((0..gc.resources.len()).map(|i| watch(gc.clone(), i, tx.clone())));
    drop(tx);
    let delete_workers = futures::future::join_all((0..DELETE_WORKERS).map(|_| delete_worker(gc.clone())));
    let orphan_workers = futures::future::join_all((0..ORPHAN_WORKERS).map(|_| orphan_worker(gc.clone())));
    tokio::join!(
        watches,
        build(gc.clone(), rx),
        delete_workers,
        orphan_workers,
        gc.deletes.run_timers(),
        gc.orphans.run_timers(),
    );
}

/// Every resource type served with the list, watch and delete verbs (upstream's
/// GetDeletableResources), at its group's preferred version; retried until it works.
async fn discover(client: &Client) -> Vec<Resource> {
    let backoff = Backoff::default();
    loop {
        match Discovery::new(client.clone()).run().await {
            Ok(discovery) => {
                let mut found = Vec::new();
                for group in discovery.groups() {
                    for (api, caps) in group.recommended_resources() {
                        if [verbs::LIST, verbs::WATCH, verbs::DELETE]
                            .iter()
                            .all(|v| caps.supports_operation(v))
                        {
                            found.push(Resource {
                                api,
                                namespaced: caps.scope == Scope::Namespaced,
                            });
                        }
                    }
                }
                return found;
            }
            Err(e) => {
                let delay = backoff.failed("discovery").min(DISCOVERY_RETRY_MAX);
                tracing::warn!(error = %e, ?delay, "garbage collector: discovery failed");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// `group` of an apiVersion (`apps/v1` → `apps`, `v1` → ``).
fn group_of(api_version: &str) -> &str {
    api_version.split_once('/').map_or("", |(g, _)| g)
}

struct Collector {
    client: Client,
    resources: Vec<Resource>,
    graph: Mutex<Graph>,
    deletes: WorkQueue,
    orphans: WorkQueue,
    delete_backoff: Backoff,
    orphan_backoff: Backoff,
}

impl Collector {
    fn graph(&self) -> MutexGuard<'_, Graph> {
        self.graph
            .lock()
            .expect("invariant: no panics while the graph is locked")
    }

    /// The watched resource of a kind (any version of its group: references may name an
    /// older one).
    fn resource_for(&self, api_version: &str, kind: &str) -> Option<usize> {
        let group = group_of(api_version);
        self.resources
            .iter()
            .position(|r| r.api.group == group && r.api.kind == kind)
    }

    fn api(&self, resource: usize, namespace: Option<&str>) -> Api<DynamicObject> {
        let r = &self.resources[resource];
        match namespace {
            Some(ns) if r.namespaced => Api::namespaced_with(self.client.clone(), ns, &r.api),
            _ => Api::all_with(self.client.clone(), &r.api),
        }
    }

    fn item(&self, uid: &str) -> Option<Item> {
        let graph = self.graph();
        let node = graph.nodes.get(uid)?;
        Some(Item {
            identity: node.identity.clone(),
            resource: node.resource,
            observed: node.observed,
            being_deleted: node.being_deleted,
            deleting_dependents: node.deleting_dependents,
            has_dependents: !node.dependents.is_empty(),
            dependent_deleting_dependents: node
                .dependents
                .iter()
                .any(|d| graph.nodes.get(d).is_some_and(|d| d.deleting_dependents)),
        })
    }

    /// Upstream's attemptToDeleteItem: decides, on fresh reads, whether the object goes,
    /// loses references, or stays.
    async fn attempt_to_delete(&self, uid: &str) -> Result<Verdict, AgentError> {
        let Some(item) = self.item(uid) else {
            return Ok(Verdict::Done);
        };
        // Being deleted is a one-way trip: its dependents are handled once it is gone.
        if item.being_deleted && !item.deleting_dependents {
            return Ok(Verdict::Done);
        }
        let Some(resource) = item.resource else {
            // A kind the API does not serve: it cannot be checked, so nothing is done.
            return Ok(Verdict::Done);
        };
        let id = &item.identity;
        let api = self.api(resource, id.namespace.as_deref());
        let latest = match api.get_opt(&id.name).await? {
            Some(o) if o.uid().as_deref() == Some(uid) => o,
            // Gone, or another object under its name: it is not in the cluster.
            _ => {
                self.graph().remove(self, uid);
                return Ok(Verdict::Done);
            }
        };
        let observed = if item.observed { Verdict::Done } else { Verdict::Retry };
        if item.deleting_dependents {
            self.process_deleting_dependents(&api, &item).await?;
            return Ok(observed);
        }
        let refs = latest.owner_references().to_vec();
        if refs.is_empty() {
            return Ok(observed);
        }
        let owners = self.classify(id, &refs).await?;
        if !owners.solid.is_empty() {
            if owners.dangling.is_empty() && owners.waiting.is_empty() {
                return Ok(observed);
            }
            // References to owners that are gone, or that wait for their dependents (else
            // they would wait forever on this one), are dropped.
            let dropped: Vec<&str> = owners
                .dangling
                .iter()
                .chain(&owners.waiting)
                .map(String::as_str)
                .collect();
            let patch = json!({"metadata": {"uid": uid, "ownerReferences":
                dropped.iter().map(|u| json!({"$patch": "delete", "uid": u})).collect::<Vec<_>>()}});
            match api
                .patch(&id.name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(kind = %id.kind, namespace = ?id.namespace, name = %id.name, ?dropped,
                        "dropped references to owners that are gone or deleting")
                }
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(e.into()),
            }
            return Ok(observed);
        }
        let policy = if !owners.waiting.is_empty() && item.has_dependents {
            if item.dependent_deleting_dependents {
                // Its owner and one of its dependents both wait: its own references stop
                // blocking, so that a cycle cannot wait forever.
                self.unblock_owner_references(&api, id, &refs).await?;
            }
            PropagationPolicy::Foreground
        } else {
            // No live owner: honour a propagation policy it already has.
            let finalizers = latest.finalizers();
            if finalizers.iter().any(|f| f == FINALIZER_ORPHAN) {
                PropagationPolicy::Orphan
            } else if finalizers.iter().any(|f| f == FINALIZER_FOREGROUND) {
                PropagationPolicy::Foreground
            } else {
                PropagationPolicy::Background
            }
        };
        let params = DeleteParams {
            propagation_policy: Some(policy.clone()),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&id.name, &params).await {
            Ok(_) => tracing::info!(kind = %id.kind, namespace = ?id.namespace, name = %id.name, ?policy,
                "deleted: its owners are gone or deleting"),
            // Gone, or replaced by another object meanwhile.
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(observed)
    }

    /// Sorts an object's owner references: live owners, owners that are gone, and owners
    /// that wait for their dependents (upstream's classifyReferences). An owner of a kind
    /// the API does not serve counts as live.
    async fn classify(&self, id: &Identity, refs: &[OwnerReference]) -> Result<Owners, AgentError> {
        let mut owners = Owners::default();
        for r in refs {
            let Some(resource) = self.resource_for(&r.api_version, &r.kind) else {
                owners.solid.push(r.uid.clone());
                continue;
            };
            if id.namespace.is_none() && self.resources[resource].namespaced {
                // A cluster-scoped object cannot have a namespaced owner: not a guess to act on.
                owners.solid.push(r.uid.clone());
                continue;
            }
            let owner = self.api(resource, id.namespace.as_deref()).get_opt(&r.name).await?;
            match owner {
                Some(o) if o.uid().as_deref() == Some(r.uid.as_str()) => {
                    let waiting = o.metadata.deletion_timestamp.is_some()
                        && o.finalizers().iter().any(|f| f == FINALIZER_FOREGROUND);
                    if waiting {
                        owners.waiting.push(r.uid.clone());
                    } else {
                        owners.solid.push(r.uid.clone());
                    }
                }
                _ => owners.dangling.push(r.uid.clone()),
            }
        }
        Ok(owners)
    }

    /// An owner deleted in the foreground: done once no dependent blocks it; until then
    /// its blocking dependents are (re)checked.
    async fn process_deleting_dependents(&self, api: &Api<DynamicObject>, item: &Item) -> Result<(), AgentError> {
        let uid = item.identity.uid.as_str();
        let blocking: Vec<(String, bool)> = {
            let graph = self.graph();
            let Some(node) = graph.nodes.get(uid) else {
                return Ok(());
            };
            node.dependents
                .iter()
                .filter_map(|d| graph.nodes.get(d).map(|n| (d, n)))
                .filter(|(_, n)| {
                    n.owners
                        .iter()
                        .any(|r| r.uid == uid && r.block_owner_deletion == Some(true))
                })
                .map(|(d, n)| (d.clone(), n.deleting_dependents))
                .collect()
        };
        if blocking.is_empty() {
            remove_finalizer(api, &item.identity, FINALIZER_FOREGROUND).await?;
            return Ok(());
        }
        for (dependent, waiting) in blocking {
            if !waiting {
                self.deletes.add(&dependent);
            }
        }
        Ok(())
    }

    /// Sets `blockOwnerDeletion: false` on every reference of the object that blocks.
    async fn unblock_owner_references(
        &self,
        api: &Api<DynamicObject>,
        id: &Identity,
        refs: &[OwnerReference],
    ) -> Result<(), AgentError> {
        let unblocked: Vec<serde_json::Value> = refs
            .iter()
            .filter(|r| r.block_owner_deletion == Some(true))
            .map(|r| json!({"uid": r.uid, "blockOwnerDeletion": false}))
            .collect();
        if unblocked.is_empty() {
            return Ok(());
        }
        let patch = json!({"metadata": {"uid": id.uid, "ownerReferences": unblocked}});
        match api
            .patch(&id.name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Upstream's attemptToOrphan: every dependent loses its reference to the owner, then
    /// the owner loses its `orphan` finalizer.
    async fn attempt_to_orphan(&self, uid: &str) -> Result<Verdict, AgentError> {
        let (owner, resource, dependents) = {
            let graph = self.graph();
            let Some(node) = graph.nodes.get(uid) else {
                return Ok(Verdict::Done);
            };
            let dependents: Vec<(Identity, Option<usize>)> = node
                .dependents
                .iter()
                .filter_map(|d| graph.nodes.get(d))
                .map(|d| (d.identity.clone(), d.resource))
                .collect();
            (node.identity.clone(), node.resource, dependents)
        };
        let Some(resource) = resource else {
            return Ok(Verdict::Done);
        };
        for (dependent, dependent_resource) in &dependents {
            let Some(r) = dependent_resource else {
                continue;
            };
            let api = self.api(*r, dependent.namespace.as_deref());
            let patch = json!({"metadata": {"uid": dependent.uid,
                "ownerReferences": [{"$patch": "delete", "uid": uid}]}});
            match api
                .patch(&dependent.name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
            {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let api = self.api(resource, owner.namespace.as_deref());
        remove_finalizer(&api, &owner, FINALIZER_ORPHAN).await?;
        tracing::info!(kind = %owner.kind, namespace = ?owner.namespace, name = %owner.name,
            dependents = dependents.len(), "orphaned the dependents");
        Ok(Verdict::Done)
    }
}

/// An object's owners, by uid, sorted by [`Collector::classify`].
#[derive(Default)]
struct Owners {
    solid: Vec<String>,
    dangling: Vec<String>,
    waiting: Vec<String>,
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Removes one finalizer from an object, at the resourceVersion read (a conflict reads
/// again, at most [`FINALIZER_ATTEMPTS_MAX`] times). Nothing to do when the object is
/// gone, replaced, or without that finalizer.
async fn remove_finalizer(api: &Api<DynamicObject>, id: &Identity, finalizer: &str) -> Result<(), AgentError> {
    let mut last = None;
    for _ in 0..FINALIZER_ATTEMPTS_MAX {
        let Some(o) = api.get_opt(&id.name).await? else {
            return Ok(());
        };
        if o.uid().as_deref() != Some(id.uid.as_str()) || !o.finalizers().iter().any(|f| f == finalizer) {
            return Ok(());
        }
        let kept: Vec<&String> = o.finalizers().iter().filter(|f| *f != finalizer).collect();
        let patch = json!({"metadata": {"finalizers": kept, "resourceVersion": o.resource_version()}});
        match api
            .patch(&id.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(kind = %id.kind, namespace = ?id.namespace, name = %id.name, finalizer,
                    "removed the garbage collector's finalizer");
                return Ok(());
            }
            Err(e) if is_status(&e, 404) => return Ok(()),
            Err(e) if is_status(&e, 409) => last = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    Err(last
        .map(AgentError::from)
        .unwrap_or_else(|| AgentError::Config("finalizer removal attempts exhausted".into())))
}

impl Graph {
    fn apply(&mut self, gc: &Collector, change: Change) {
        match change {
            Change::Upsert(seen) => self.upsert(gc, seen),
            Change::Delete(uid) => self.remove(gc, &uid),
            Change::Relisted { resource, uids } => {
                let gone: Vec<String> = self
                    .nodes
                    .iter()
                    .filter(|(uid, n)| n.observed && n.resource == Some(resource) && !uids.contains(*uid))
                    .map(|(uid, _)| uid.clone())
                    .collect();
                for uid in gone {
                    self.remove(gc, &uid);
                }
            }
        }
    }

    /// An object added or changed (upstream's processGraphChanges, add/update).
    fn upsert(&mut self, gc: &Collector, seen: Seen) {
        let uid = seen.identity.uid.clone();
        let (added, removed, unblocked) = match self.nodes.get_mut(&uid) {
            None => {
                self.nodes.insert(
                    uid.clone(),
                    Node {
                        identity: seen.identity.clone(),
                        resource: Some(seen.resource),
                        owners: seen.owners.clone(),
                        dependents: HashSet::new(),
                        observed: true,
                        being_deleted: seen.deleting,
                        deleting_dependents: false,
                        orphaning: false,
                    },
                );
                (seen.owners.clone(), Vec::new(), Vec::new())
            }
            Some(node) => {
                if !node.observed {
                    node.observed = true;
                    node.identity = seen.identity.clone();
                    node.resource = Some(seen.resource);
                }
                if seen.deleting {
                    node.being_deleted = true;
                }
                let old = std::mem::replace(&mut node.owners, seen.owners.clone());
                let added: Vec<OwnerReference> = seen
                    .owners
                    .iter()
                    .filter(|r| !old.iter().any(|o| o.uid == r.uid))
                    .cloned()
                    .collect();
                let removed: Vec<OwnerReference> = old
                    .iter()
                    .filter(|o| !seen.owners.iter().any(|r| r.uid == o.uid))
                    .cloned()
                    .collect();
                // Owners a reference stopped blocking: they may be done waiting.
                let unblocked: Vec<String> = old
                    .iter()
                    .filter(|o| o.block_owner_deletion == Some(true))
                    .filter(|o| {
                        seen.owners
                            .iter()
                            .find(|r| r.uid == o.uid)
                            .is_none_or(|r| r.block_owner_deletion != Some(true))
                    })
                    .map(|o| o.uid.clone())
                    .collect();
                (added, removed, unblocked)
            }
        };
        for owner in unblocked {
            if self.nodes.get(&owner).is_some_and(|n| n.deleting_dependents) {
                gc.deletes.add(&owner);
            }
        }
        for r in &removed {
            if let Some(owner) = self.nodes.get_mut(&r.uid) {
                owner.dependents.remove(&uid);
            }
        }
        self.add_dependent_to_owners(gc, &seen.identity, &added);
        self.transitions(gc, &seen);
    }

    /// Records `dependent` with each owner; an owner not in the graph becomes a virtual
    /// node, checked with the API (it may never have existed).
    fn add_dependent_to_owners(&mut self, gc: &Collector, dependent: &Identity, owners: &[OwnerReference]) {
        for r in owners {
            if let Some(owner) = self.nodes.get_mut(&r.uid) {
                owner.dependents.insert(dependent.uid.clone());
                continue;
            }
            let resource = gc.resource_for(&r.api_version, &r.kind);
            let namespaced = resource.is_none_or(|i| gc.resources[i].namespaced);
            self.nodes.insert(
                r.uid.clone(),
                Node {
                    identity: Identity {
                        api_version: r.api_version.clone(),
                        kind: r.kind.clone(),
                        namespace: dependent.namespace.clone().filter(|_| namespaced),
                        name: r.name.clone(),
                        uid: r.uid.clone(),
                    },
                    resource,
                    owners: Vec::new(),
                    dependents: HashSet::from([dependent.uid.clone()]),
                    observed: false,
                    being_deleted: false,
                    deleting_dependents: false,
                    orphaning: false,
                },
            );
            gc.deletes.add(&r.uid);
        }
    }

    /// Upstream's processTransitions: an owner that starts orphaning goes to the orphan
    /// queue; one that starts waiting for its dependents has them (and itself) checked.
    fn transitions(&mut self, gc: &Collector, seen: &Seen) {
        let Some(node) = self.nodes.get_mut(&seen.identity.uid) else {
            return;
        };
        let orphaning = seen.deleting && seen.orphan;
        if orphaning && !node.orphaning {
            gc.orphans.add(&seen.identity.uid);
        }
        node.orphaning = orphaning;
        if seen.deleting && seen.foreground && !node.deleting_dependents {
            node.deleting_dependents = true;
            for d in &node.dependents {
                gc.deletes.add(d);
            }
            gc.deletes.add(&seen.identity.uid);
        }
    }

    /// An object gone (seen deleted, or found absent by a worker): its dependents are
    /// checked, and so are its owners that wait for their dependents.
    fn remove(&mut self, gc: &Collector, uid: &str) {
        let Some(node) = self.nodes.remove(uid) else {
            return;
        };
        for r in &node.owners {
            if let Some(owner) = self.nodes.get_mut(&r.uid) {
                owner.dependents.remove(uid);
                if owner.deleting_dependents {
                    gc.deletes.add(&r.uid);
                }
            }
        }
        for d in &node.dependents {
            gc.deletes.add(d);
        }
    }
}

/// What the graph needs of a watched object; None without a uid.
fn seen(resource: usize, r: &Resource, o: &DynamicObject) -> Option<Seen> {
    let uid = o.uid()?;
    let finalizers = o.finalizers();
    Some(Seen {
        resource,
        identity: Identity {
            api_version: r.api.api_version.clone(),
            kind: r.api.kind.clone(),
            namespace: o.namespace().filter(|_| r.namespaced),
            name: o.name_any(),
            uid,
        },
        owners: o.owner_references().to_vec(),
        deleting: o.metadata.deletion_timestamp.is_some(),
        orphan: finalizers.iter().any(|f| f == FINALIZER_ORPHAN),
        foreground: finalizers.iter().any(|f| f == FINALIZER_FOREGROUND),
    })
}

/// Watches one resource type, feeding the graph builder; a broken watch is resumed with
/// kube-rs's backoff, and a re-list reports what it no longer lists.
async fn watch(gc: Arc<Collector>, resource: usize, tx: mpsc::Sender<Change>) {
    let r = &gc.resources[resource];
    let api: Api<DynamicObject> = Api::all_with(gc.client.clone(), &r.api);
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    let mut listed: Option<HashSet<String>> = None;
    while let Some(event) = stream.next().await {
        let change = match event {
            Err(e) => {
                tracing::debug!(resource = %r.api.plural, error = %e, "garbage collector watch");
                continue;
            }
            Ok(watcher::Event::Init) => {
                listed = Some(HashSet::new());
                continue;
            }
            Ok(watcher::Event::InitApply(o)) => {
                let Some(s) = seen(resource, r, &o) else { continue };
                if let Some(l) = listed.as_mut() {
                    l.insert(s.identity.uid.clone());
                }
                Change::Upsert(s)
            }
            Ok(watcher::Event::InitDone) => match listed.take() {
                Some(uids) => Change::Relisted { resource, uids },
                None => continue,
            },
            Ok(watcher::Event::Apply(o)) => match seen(resource, r, &o) {
                Some(s) => Change::Upsert(s),
                None => continue,
            },
            Ok(watcher::Event::Delete(o)) => match o.uid() {
                Some(uid) => Change::Delete(uid),
                None => continue,
            },
        };
        if tx.send(change).await.is_err() {
            return;
        }
    }
}

/// The graph builder: applies the watches' changes, one at a time.
async fn build(gc: Arc<Collector>, mut rx: mpsc::Receiver<Change>) {
    while let Some(change) = rx.recv().await {
        gc.graph().apply(&gc, change);
    }
}

async fn delete_worker(gc: Arc<Collector>) {
    loop {
        let uid = gc.deletes.next().await;
        let verdict = gc.attempt_to_delete(&uid).await;
        settle(&gc.deletes, &gc.delete_backoff, &uid, verdict, "checking an object");
    }
}

async fn orphan_worker(gc: Arc<Collector>) {
    loop {
        let uid = gc.orphans.next().await;
        let verdict = gc.attempt_to_orphan(&uid).await;
        settle(&gc.orphans, &gc.orphan_backoff, &uid, verdict, "orphaning dependents");
    }
}

/// Ends one item's processing: forgotten when done, else added again after its backoff.
fn settle(queue: &WorkQueue, backoff: &Backoff, uid: &str, verdict: Result<Verdict, AgentError>, what: &str) {
    match verdict {
        Ok(Verdict::Done) => backoff.succeeded(uid),
        Ok(Verdict::Retry) => queue.add_after(uid, backoff.failed(uid)),
        Err(error) => {
            let delay = backoff.failed(uid);
            tracing::warn!(uid, %error, ?delay, "garbage collector: {what} failed");
            queue.add_after(uid, delay);
        }
    }
    queue.done(uid);
}

/// A work queue of uids with client-go's guarantees: an item queued twice is held once,
/// and an item is never handed to two workers at once (one added while it is processed
/// is handed out again after). Items added with a delay wait in a timer list, also once
/// per item. So it holds at most one entry per object in each part.
#[derive(Default)]
struct WorkQueue {
    state: Mutex<QueueState>,
    ready: Notify,
    timers: Notify,
}

#[derive(Default)]
struct QueueState {
    queue: VecDeque<String>,
    dirty: HashSet<String>,
    processing: HashSet<String>,
    /// Delayed items by due time (and a sequence number, for equal times).
    later: BTreeMap<(Instant, u64), String>,
    /// The one due time that counts for each delayed item.
    waiting: HashMap<String, (Instant, u64)>,
    sequence: u64,
}

impl WorkQueue {
    fn state(&self) -> MutexGuard<'_, QueueState> {
        self.state
            .lock()
            .expect("invariant: no panics while the queue is locked")
    }

    fn add(&self, uid: &str) {
        let mut s = self.state();
        if !s.dirty.insert(uid.to_owned()) {
            return;
        }
        if !s.processing.contains(uid) {
            s.queue.push_back(uid.to_owned());
            self.ready.notify_one();
        }
    }

    fn add_after(&self, uid: &str, delay: Duration) {
        let due = Instant::now() + delay;
        let mut s = self.state();
        if s.waiting.get(uid).is_some_and(|(at, _)| *at <= due) {
            return;
        }
        s.sequence += 1;
        let key = (due, s.sequence);
        s.waiting.insert(uid.to_owned(), key);
        s.later.insert(key, uid.to_owned());
        self.timers.notify_one();
    }

    async fn next(&self) -> String {
        loop {
            {
                let mut s = self.state();
                if let Some(uid) = s.queue.pop_front() {
                    s.dirty.remove(&uid);
                    s.processing.insert(uid.clone());
                    // Another worker may be waiting for what is left.
                    if !s.queue.is_empty() {
                        self.ready.notify_one();
                    }
                    return uid;
                }
            }
            self.ready.notified().await;
        }
    }

    fn done(&self, uid: &str) {
        let mut s = self.state();
        s.processing.remove(uid);
        if s.dirty.contains(uid) {
            s.queue.push_back(uid.to_owned());
            self.ready.notify_one();
        }
    }

    /// Moves delayed items into the queue when they are due, until dropped.
    async fn run_timers(&self) {
        loop {
            let next = {
                let now = Instant::now();
                let mut due = Vec::new();
                let mut s = self.state();
                while let Some((&key, _)) = s.later.first_key_value() {
                    if key.0 > now {
                        break;
                    }
                    let uid = s.later.remove(&key).expect("the first key is there");
                    if s.waiting.get(&uid) == Some(&key) {
                        s.waiting.remove(&uid);
                        due.push(uid);
                    }
                }
                let next = s.later.first_key_value().map(|(k, _)| k.0);
                drop(s);
                for uid in due {
                    self.add(&uid);
                }
                next
            };
            match next {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.timers.notified() => {}
                    }
                }
                None => self.timers.notified().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_queue_holds_an_item_once_and_never_hands_it_out_twice() {
        let q = WorkQueue::default();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.next().await, "a");
        // Added again while processed: handed out again only after it is done.
        q.add("a");
        assert_eq!(q.next().await, "b");
        q.done("b");
        assert!(q.state().queue.is_empty());
        q.done("a");
        assert_eq!(q.next().await, "a");
        q.done("a");
        assert!(q.state().dirty.is_empty() && q.state().processing.is_empty());
    }

    #[tokio::test]
    async fn delayed_items_come_back_when_due_once() {
        let q = Arc::new(WorkQueue::default());
        let timers = tokio::spawn({
            let q = q.clone();
            async move { q.run_timers().await }
        });
        q.add_after("a", Duration::from_millis(40));
        // Later than the due time it has: ignored.
        q.add_after("a", Duration::from_secs(3600));
        q.add_after("b", Duration::from_millis(10));
        let next = || tokio::time::timeout(Duration::from_secs(10), q.next());
        assert_eq!(next().await.expect("b due"), "b");
        q.done("b");
        assert_eq!(next().await.expect("a due"), "a");
        q.done("a");
        let s = q.state();
        assert!(s.queue.is_empty() && s.later.is_empty() && s.waiting.is_empty());
        drop(s);
        timers.abort();
    }

    #[test]
    fn groups_of_api_versions() {
        assert_eq!(group_of("apps/v1"), "apps");
        assert_eq!(group_of("v1"), "");
    }
}
