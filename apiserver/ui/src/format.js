// Pure helpers that turn Kubernetes objects and quantities into what the tables show.
// Kept free of Preact so they read (and could be tested) on their own.

/**
 * An age the way kubectl prints it: 45s, 3m20s, 3h, 5d, 2y3d. A timestamp slightly
 * ahead of this browser's clock (skew) reads as 0s.
 */
export function age(timestamp, now = Date.now()) {
  const t = typeof timestamp === 'number' ? timestamp : Date.parse(timestamp || '');
  if (Number.isNaN(t)) return '—';
  const secs = Math.max(0, Math.floor((now - t) / 1000));
  if (secs < 120) return `${secs}s`;
  const mins = Math.floor(secs / 60);
  if (mins < 10) return secs % 60 ? `${mins}m${secs % 60}s` : `${mins}m`;
  if (mins < 180) return `${mins}m`;
  const hours = Math.floor(mins / 60);
  if (hours < 8) return mins % 60 ? `${hours}h${mins % 60}m` : `${hours}h`;
  if (hours < 48) return `${hours}h`;
  const days = Math.floor(hours / 24);
  if (hours < 24 * 8) return hours % 24 ? `${days}d${hours % 24}h` : `${days}d`;
  if (days < 365 * 2) return `${days}d`;
  const years = Math.floor(days / 365);
  if (years < 8) return days % 365 ? `${years}y${days % 365}d` : `${years}y`;
  return `${years}y`;
}

/** "45s ago", or "—" when there is no timestamp. */
export function ago(timestamp) {
  return timestamp ? `${age(timestamp)} ago` : '—';
}

const SUFFIX = {
  n: 1e-9, u: 1e-6, m: 1e-3, '': 1, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18,
  Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60,
};

/** A resource.Quantity ("250m", "1.5", "123456Ki", "1e3") as a plain number; NaN if unreadable. */
export function quantity(q) {
  if (q === undefined || q === null) return NaN;
  if (typeof q === 'number') return q;
  const m = /^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)([a-zA-Z]*)$/.exec(String(q).trim());
  if (!m || !(m[2] in SUFFIX)) return NaN;
  return Number(m[1]) * SUFFIX[m[2]];
}

export const milliCPU = (q) => quantity(q) * 1000;
export const mebibytes = (q) => quantity(q) / 2 ** 20;

export function fmtCPU(milli) {
  return Number.isFinite(milli) ? `${Math.round(milli)}m` : '—';
}

export function fmtMi(mi) {
  return Number.isFinite(mi) ? `${Math.round(mi)}Mi` : '—';
}

export function fmtBytes(n) {
  if (!Number.isFinite(n)) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

/** "used / allocatable (pct%)" with the usage part "—" when metrics are missing. */
export function usage(used, total, fmt) {
  const pct = Number.isFinite(used) && total > 0 ? ` (${Math.round((used / total) * 100)}%)` : '';
  return `${fmt(used)} / ${fmt(total)}${pct}`;
}

/** A section's note when its usage columns stay empty: why metrics are missing. */
export function usageNote(metrics, error) {
  return metrics ? '' : error && `usage not available: ${error}`;
}

// --- nodes ---

export function nodeCondition(node, type) {
  return (node.status?.conditions || []).find((c) => c.type === type);
}

/** "True" | "False" | "Unknown", as the Ready condition says. */
export function nodeReady(node) {
  return nodeCondition(node, 'Ready')?.status || 'Unknown';
}

/** Conditions other than Ready that are True: the node is under some pressure. */
export function nodeProblems(node) {
  return (node.status?.conditions || [])
    .filter((c) => c.type !== 'Ready' && c.status === 'True')
    .map((c) => c.type);
}

export function nodeRoles(node) {
  const roles = [];
  for (const [k, v] of Object.entries(node.metadata?.labels || {})) {
    if (k.startsWith('node-role.kubernetes.io/')) roles.push(k.slice('node-role.kubernetes.io/'.length));
    else if (k === 'kubernetes.io/role' && v) roles.push(v);
  }
  return roles.filter(Boolean).sort().join(',') || '<none>';
}

export function nodeAddress(node, type) {
  return (node.status?.addresses || []).find((a) => a.type === type)?.address || '';
}

// --- pods ---

export function podReady(pod) {
  const total = pod.spec?.containers?.length || 0;
  const ready = (pod.status?.containerStatuses || []).filter((c) => c.ready).length;
  return `${ready}/${total}`;
}

export function podRestarts(pod) {
  return (pod.status?.containerStatuses || []).reduce((n, c) => n + (c.restartCount || 0), 0);
}

export function podTerminal(pod) {
  const phase = pod.status?.phase;
  return phase === 'Succeeded' || phase === 'Failed';
}

/** What kubectl's STATUS column would say, as closely as the object allows. */
export function podStatus(pod) {
  const status = pod.status || {};
  let reason = status.reason || status.phase || 'Pending';

  // An init container that hasn't finished decides the status on its own.
  let initializing = false;
  const inits = status.initContainerStatuses || [];
  const initSpecs = pod.spec?.initContainers || [];
  for (let i = 0; i < inits.length; i++) {
    const c = inits[i];
    const spec = initSpecs.find((s) => s.name === c.name);
    const term = c.state?.terminated;
    const wait = c.state?.waiting;
    if (term && term.exitCode === 0) continue;
    if (spec?.restartPolicy === 'Always' && c.started) continue; // a running sidecar
    if (term) reason = term.reason ? `Init:${term.reason}` : term.signal ? `Init:Signal:${term.signal}` : `Init:ExitCode:${term.exitCode}`;
    else if (wait?.reason && wait.reason !== 'PodInitializing') reason = `Init:${wait.reason}`;
    else reason = `Init:${i}/${initSpecs.length || inits.length}`;
    initializing = true;
    break;
  }

  if (!initializing) {
    let running = false;
    const cs = status.containerStatuses || [];
    // Last to first, like kubectl, so the first container's state wins.
    for (let i = cs.length - 1; i >= 0; i--) {
      const st = cs[i].state || {};
      if (st.waiting?.reason) reason = st.waiting.reason;
      else if (st.terminated?.reason) reason = st.terminated.reason;
      else if (st.terminated) reason = st.terminated.signal ? `Signal:${st.terminated.signal}` : `ExitCode:${st.terminated.exitCode}`;
      else if (cs[i].ready && st.running) running = true;
    }
    if (reason === 'Completed' && running) {
      const ready = (status.conditions || []).some((c) => c.type === 'Ready' && c.status === 'True');
      reason = ready ? 'Running' : 'NotReady';
    }
  }

  if (pod.metadata?.deletionTimestamp) reason = status.reason === 'NodeLost' ? 'Unknown' : 'Terminating';
  return reason;
}

/** A coarse colour class for a status word: ok, warn (on its way) or bad. */
export function statusTone(reason) {
  if (reason === 'Running' || reason === 'Completed' || reason === 'Succeeded') return 'ok';
  if (/Err|BackOff|Fail|Error|ExitCode|Signal|OOM|Invalid|Unknown|Evicted|NotReady/.test(reason)) return 'bad';
  return 'warn';
}

// --- services ---

export function servicePorts(svc) {
  const ports = svc.spec?.ports || [];
  if (!ports.length) return '<none>';
  return ports
    .map((p) => `${p.port}${p.nodePort ? `:${p.nodePort}` : ''}/${p.protocol || 'TCP'}`)
    .join(', ');
}

/** Every address × port of an Endpoints object, ready ones first. */
export function endpointAddresses(ep) {
  const out = [];
  for (const subset of ep?.subsets || []) {
    const ports = subset.ports?.length ? subset.ports : [{}];
    // With several ports (dns on UDP and TCP) the protocol tells the entries apart.
    const proto = (p) => (ports.length > 1 ? `/${p.protocol || 'TCP'}` : '');
    for (const [list, ready] of [[subset.addresses, true], [subset.notReadyAddresses, false]]) {
      for (const a of list || []) {
        for (const p of ports) out.push({ addr: p.port ? `${a.ip}:${p.port}${proto(p)}` : a.ip, ready });
      }
    }
  }
  return out.sort((x, y) => Number(y.ready) - Number(x.ready));
}

// --- events ---

/** The moment an event last happened, in ms since the epoch (0 when it doesn't say). */
export function eventTime(ev) {
  const t = ev.lastTimestamp || ev.series?.lastObservedTime || ev.eventTime || ev.firstTimestamp || ev.metadata?.creationTimestamp;
  const ms = Date.parse(t || '');
  return Number.isNaN(ms) ? 0 : ms;
}
