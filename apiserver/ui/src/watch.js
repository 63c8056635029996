// List-then-watch for one resource type across all namespaces, the way client-go's
// reflector does it: list (in pages), watch from the list's resourceVersion, re-watch
// from the last version seen when the stream ends, relist when the server says that
// version is gone (410), and back off on network errors.

import { ApiError, getJSON, readLines, request, sleep } from './api.js';

const PAGE = 500;
const WATCH_TIMEOUT_S = 300;
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 30000;
// Forbidden or not served: retrying fast won't help, but permissions can change.
const DENIED_RETRY_MS = 30000;

export const keyOf = (obj) => `${obj.metadata?.namespace || ''}/${obj.metadata?.name || ''}`;

/**
 * `slot` is the store's record for this type: { items: Map, status, message }.
 * status: idle | connecting | live | reconnecting | denied.
 * `changed` is called after every change to the slot; `trim(items)` may drop entries
 * to bound memory (events).
 */
export class Watch {
  constructor(path, slot, { changed, trim }) {
    this.path = path;
    this.slot = slot;
    this.changed = changed;
    this.trim = trim || (() => {});
    this.ac = null;
  }

  get running() {
    return this.ac !== null;
  }

  start() {
    if (this.ac) return;
    this.ac = new AbortController();
    this.run(this.ac.signal);
  }

  stop() {
    if (!this.ac) return;
    this.ac.abort();
    this.ac = null;
    this.setStatus('idle', '');
  }

  setStatus(status, message) {
    if (this.slot.status === status && this.slot.message === message) return;
    this.slot.status = status;
    this.slot.message = message;
    this.changed();
  }

  async run(signal) {
    let rv = null; // null: (re)list first
    let backoff = BACKOFF_MIN_MS;
    // Set by a 410, cleared by the next watch event that applies: a second 410 before
    // then means relisting at once is not helping, so that one backs off.
    let gone = false;
    while (!signal.aborted) {
      try {
        if (rv === null) {
          const st = this.slot.status;
          if (st === 'idle' || st === 'denied') this.setStatus('connecting', '');
          rv = await this.list(signal);
        }
        const started = Date.now();
        let events = 0;
        const q = new URLSearchParams({
          watch: '1',
          resourceVersion: rv,
          allowWatchBookmarks: 'true',
          timeoutSeconds: String(WATCH_TIMEOUT_S),
        });
        const res = await request(`${this.path}?${q}`, { signal });
        if (signal.aborted) return;
        this.setStatus('live', '');
        // After a 410 the watch opening is not enough: it may fail again at once.
        if (!gone) backoff = BACKOFF_MIN_MS;
        await readLines(res, (line) => {
          if (signal.aborted) return;
          events++;
          rv = this.apply(JSON.parse(line), rv);
          if (gone) {
            gone = false;
            backoff = BACKOFF_MIN_MS;
          }
        });
        // The server ended the watch (its timeout): carry on from where we are. A stream
        // that ends at once, empty, again and again would spin, so that one waits.
        if (events === 0 && Date.now() - started < 1000) {
          await sleep(backoff, signal);
          backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
        }
      } catch (e) {
        if (signal.aborted) return;
        if (e instanceof ApiError) {
          if (e.status === 410) {
            rv = null; // too old: relist, right away the first time
            if (!gone) {
              gone = true;
              continue;
            }
            // Gone again with nothing applied in between: back off below.
          }
          // A 401 needs nothing here: request() has already ended the session, which
          // stopped every watch and aborted `signal`. (A 401 watch ERROR event, which
          // request() never saw, retries below; the relist's 401 then ends the session.)
          if (e.status === 403 || e.status === 404) {
            rv = null;
            this.slot.items = new Map();
            this.setStatus('denied', e.message);
            this.changed();
            await sleep(DENIED_RETRY_MS, signal);
            continue;
          }
          if (e.fromEvent) rv = null; // any other watch ERROR: start afresh
        }
        this.setStatus('reconnecting', e.message || String(e));
        await sleep(backoff, signal);
        backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
      }
    }
  }

  // Pages through the collection, then swaps the whole map in at once so that objects
  // deleted while we were away disappear.
  async list(signal) {
    const items = new Map();
    let rv = '';
    let cont = '';
    do {
      const q = new URLSearchParams({ limit: String(PAGE) });
      if (cont) q.set('continue', cont);
      const page = await getJSON(`${this.path}?${q}`, { signal });
      if (!rv) rv = page.metadata?.resourceVersion || '';
      for (const obj of page.items || []) items.set(keyOf(obj), obj);
      cont = page.metadata?.continue || '';
    } while (cont && !signal.aborted);
    if (signal.aborted) throw new DOMException('aborted', 'AbortError');
    this.trim(items);
    this.slot.items = items;
    this.changed();
    return rv;
  }

  // Applies one watch event; returns the resourceVersion to resume from.
  apply(ev, rv) {
    const obj = ev.object || {};
    const next = obj.metadata?.resourceVersion || rv;
    switch (ev.type) {
      case 'ADDED':
      case 'MODIFIED':
        this.slot.items.set(keyOf(obj), obj);
        this.trim(this.slot.items);
        this.changed();
        return next;
      case 'DELETED':
        this.slot.items.delete(keyOf(obj));
        this.changed();
        return next;
      case 'BOOKMARK':
        return next;
      case 'ERROR': {
        const err = new ApiError(obj.code || 500, obj.message || 'watch error', obj.reason || '');
        err.fromEvent = true;
        throw err;
      }
      default:
        return rv;
    }
  }
}
