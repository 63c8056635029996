// The dashboard's whole state in one plain object. Watches and polls mutate it in place
// and call changed(); the App re-renders from it at most every FLUSH_MS, so a burst of
// watch events costs one render, not one per event.

import { useEffect, useState } from 'preact/hooks';

const FLUSH_MS = 50;

export const RESOURCES = {
  namespaces: '/api/v1/namespaces',
  nodes: '/api/v1/nodes',
  pods: '/api/v1/pods',
  services: '/api/v1/services',
  endpoints: '/api/v1/endpoints',
  events: '/api/v1/events',
  deployments: '/apis/apps/v1/deployments',
  replicasets: '/apis/apps/v1/replicasets',
  leases: '/apis/coordination.k8s.io/v1/leases',
};

const slot = () => ({ items: new Map(), status: 'idle', message: '' });

export const state = {
  // phase: checking | login | in | offline
  auth: { phase: 'checking', user: '', message: '', usingToken: false },
  res: Object.fromEntries(Object.keys(RESOURCES).map((k) => [k, slot()])),
  // Maps from node name / "ns/name" to { cpu (millicores), mem (Mi) }; null: not available.
  metrics: { nodes: null, pods: null, nodesError: '', podsError: '' },
  // data: the last /ui/api/controlplane answer; status: idle | ok | unavailable | error
  controlplane: { data: null, status: 'idle', message: '' },
  // The pod whose logs are open: { namespace, name, containers } or null.
  logs: null,
};

export function resetData() {
  // In place: each watch holds on to its slot.
  for (const s of Object.values(state.res)) Object.assign(s, slot());
  state.metrics = { nodes: null, pods: null, nodesError: '', podsError: '' };
  state.controlplane = { data: null, status: 'idle', message: '' };
  state.logs = null;
  changed();
}

let version = 0;
let timer = 0;
const subscribers = new Set();

export function changed() {
  if (!timer) timer = setTimeout(flush, FLUSH_MS);
}

function flush() {
  timer = 0;
  version++;
  for (const fn of subscribers) fn(version);
}

/** Re-renders the calling component whenever the state changes. */
export function useStore() {
  const [, setVersion] = useState(version);
  useEffect(() => {
    subscribers.add(setVersion);
    return () => subscribers.delete(setVersion);
  }, []);
  return state;
}

/** The objects of one resource type, optionally only those in namespace `ns`. */
export function list(kind, ns = '') {
  const all = [...state.res[kind].items.values()];
  return ns ? all.filter((o) => o.metadata?.namespace === ns) : all;
}

export const byName = (a, b) => a.metadata.name.localeCompare(b.metadata.name);

export const byNamespaceAndName = (a, b) =>
  (a.metadata.namespace || '').localeCompare(b.metadata.namespace || '') || byName(a, b);
