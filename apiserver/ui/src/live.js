// What is kept up to date, and when. Each view names the watches and polls it needs.
//
// Browsers open at most 6 HTTP/1.1 connections to one server, and every watch holds
// one for as long as it runs. Served over HTTP/2 (Capstan's TLS port) all watches share
// one connection, so they all run all the time and switching views is instant. Over
// HTTP/1.1 (kubectl proxy, a plain-HTTP server) only the visible view's watches run, so
// that a poll, a log stream or a Scale click still finds a free connection.

import { ApiError, getJSON, sleep } from './api.js';
import { milliCPU, mebibytes, eventTime } from './format.js';
import { RESOURCES, changed, state } from './store.js';
import { Watch } from './watch.js';

export const EVENTS_MAX = 500;
const UNAVAILABLE_RETRY_MS = 30000;

export const VIEWS = {
  nodes: { watches: ['nodes', 'pods', 'leases'], polls: ['nodeMetrics'] },
  workloads: { watches: ['deployments', 'replicasets', 'pods'], polls: ['podMetrics'] },
  services: { watches: ['services', 'endpoints'], polls: [] },
  events: { watches: ['events'], polls: [] },
  controlplane: { watches: ['leases'], polls: ['controlplane'] },
};

// The header's namespace selector needs this one whatever the view.
const ALWAYS = ['namespaces'];

export const multiplexed = (() => {
  try {
    const proto = performance.getEntriesByType('navigation')[0]?.nextHopProtocol || '';
    return proto === 'h2' || proto.startsWith('h3');
  } catch {
    return false;
  }
})();

// Keeps the newest EVENTS_MAX events; the list may return thousands.
function trimEvents(items) {
  if (items.size <= EVENTS_MAX) return;
  const oldest = [...items.entries()].sort((a, b) => eventTime(a[1]) - eventTime(b[1]));
  for (let i = 0; i < oldest.length - EVENTS_MAX; i++) items.delete(oldest[i][0]);
}

const watches = Object.fromEntries(
  Object.entries(RESOURCES).map(([kind, path]) => [
    kind,
    new Watch(path, state.res[kind], { changed, trim: kind === 'events' ? trimEvents : undefined }),
  ]),
);

// --- polls ---

function usageMap(items, sumContainers) {
  const m = new Map();
  for (const it of items || []) {
    const key = it.metadata.namespace ? `${it.metadata.namespace}/${it.metadata.name}` : it.metadata.name;
    let cpu = 0;
    let mem = 0;
    for (const u of sumContainers ? (it.containers || []).map((c) => c.usage || {}) : [it.usage || {}]) {
      cpu += milliCPU(u.cpu);
      mem += mebibytes(u.memory);
    }
    m.set(key, { cpu, mem });
  }
  return m;
}

async function pollMetrics(which, signal) {
  try {
    const list = await getJSON(`/apis/metrics.k8s.io/v1beta1/${which}`, { signal });
    state.metrics[which] = usageMap(list.items, which === 'pods');
    state.metrics[`${which}Error`] = '';
  } catch (e) {
    if (signal.aborted) return;
    // No metrics-server, or not allowed: the tables show "—" and carry on.
    state.metrics[which] = null;
    state.metrics[`${which}Error`] = e.message || String(e);
  }
  changed();
}

async function pollControlPlane(signal) {
  const cp = state.controlplane;
  try {
    cp.data = await getJSON('/ui/api/controlplane', { signal });
    cp.status = 'ok';
    cp.message = '';
  } catch (e) {
    if (signal.aborted) return;
    if (e instanceof ApiError && e.status === 404) {
      cp.data = null;
      cp.status = 'unavailable';
      cp.message = 'not available: this API server does not serve /ui/api/controlplane';
    } else {
      // Keep the last answer on screen, marked stale by the message.
      cp.status = 'error';
      cp.message = e.message || String(e);
    }
    changed();
    // Not served (an older or non-Capstan server) or not allowed: asking every 2 s
    // won't change that, asking now and then will notice when it does.
    if (e instanceof ApiError && (e.status === 404 || e.status === 403)) return UNAVAILABLE_RETRY_MS;
    return 0;
  }
  changed();
  return 0;
}

class Poll {
  constructor(fn, everyMs) {
    this.fn = fn;
    this.everyMs = everyMs;
    this.ac = null;
  }

  start() {
    if (this.ac) return;
    this.ac = new AbortController();
    this.loop(this.ac.signal);
  }

  stop() {
    this.ac?.abort();
    this.ac = null;
  }

  // One request at a time: the next one is timed from the end of the last, so a slow
  // server is never asked twice at once. `fn` may ask for a longer pause.
  async loop(signal) {
    while (!signal.aborted) {
      const pause = await this.fn(signal);
      await sleep(pause || this.everyMs, signal);
    }
  }
}

const polls = {
  nodeMetrics: new Poll((s) => pollMetrics('nodes', s), 10000),
  podMetrics: new Poll((s) => pollMetrics('pods', s), 10000),
  controlplane: new Poll(pollControlPlane, 2000),
};

/** Runs what `view` needs (and, over HTTP/2, every watch), stops the rest. */
export function showView(view) {
  const need = VIEWS[view] || { watches: [], polls: [] };
  const wanted = new Set(multiplexed ? Object.keys(watches) : [...ALWAYS, ...need.watches]);
  for (const [kind, w] of Object.entries(watches)) {
    if (wanted.has(kind)) w.start();
    else w.stop();
  }
  for (const [name, p] of Object.entries(polls)) {
    if (need.polls.includes(name)) p.start();
    else p.stop();
  }
}

export function stopAll() {
  for (const w of Object.values(watches)) w.stop();
  for (const p of Object.values(polls)) p.stop();
}

/**
 * "live" when every running watch is streaming (one the user may not read counts as
 * settled: it will never connect, and its view says why); "connecting" before the first
 * lists are in; "reconnecting" otherwise.
 */
export function liveness() {
  const running = Object.entries(watches).filter(([, w]) => w.running).map(([k]) => state.res[k]);
  if (!running.length) return { text: 'idle', detail: '' };
  const pending = running.filter((s) => s.status !== 'live' && s.status !== 'denied');
  if (!pending.length) return { text: 'live', detail: '' };
  const detail = pending.map((s) => s.message).filter(Boolean).join('; ');
  return { text: pending.every((s) => s.status === 'connecting') ? 'connecting' : 'reconnecting', detail };
}
