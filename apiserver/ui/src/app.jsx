// The page: header (tabs, namespace filter, live indicator, user), the current view,
// and the log panel when one is open.

import { useEffect, useState } from 'preact/hooks';
import { showView, liveness, multiplexed } from './live.js';
import { signOut, start } from './session.js';
import { state, useStore } from './store.js';
import { ControlPlaneView } from './views/controlplane.jsx';
import { EventsView } from './views/events.jsx';
import { LogPanel } from './views/logs.jsx';
import { Login } from './views/login.jsx';
import { NodesView } from './views/nodes.jsx';
import { ServicesView } from './views/services.jsx';
import { WorkloadsView } from './views/workloads.jsx';

const TABS = [
  ['nodes', 'Nodes'],
  ['workloads', 'Workloads'],
  ['services', 'Services'],
  ['events', 'Events'],
  ['controlplane', 'Control plane'],
];
const TAB_NAMES = TABS.map(([id]) => id);

// Ages are computed at render time; this re-renders them even when nothing else changes.
const TICK_MS = 5000;

// The tab lives in the URL's fragment, so a bookmark or a reload opens the same view.
function tabFromHash() {
  const h = location.hash.replace(/^#/, '');
  return TAB_NAMES.includes(h) ? h : 'nodes';
}

function useTick() {
  const [, setTick] = useState(0);
  useEffect(() => {
    const t = setInterval(() => setTick((n) => n + 1), TICK_MS);
    return () => clearInterval(t);
  }, []);
}

function NamespacePicker({ ns, setNs }) {
  const names = [...state.res.namespaces.items.values()].map((n) => n.metadata.name);
  // Keep a chosen namespace listed even if it goes away, so the select stays truthful.
  if (ns && !names.includes(ns)) names.push(ns);
  names.sort();
  return (
    <label class="ns">
      <span class="sr-only">Namespace</span>
      <select value={ns} onChange={(e) => setNs(e.currentTarget.value)} data-testid="namespace">
        <option value="">All namespaces</option>
        {names.map((n) => (
          <option key={n} value={n}>
            {n}
          </option>
        ))}
      </select>
    </label>
  );
}

function Live() {
  const { text, detail } = liveness();
  const title = `${detail || ''}${multiplexed ? '' : `${detail ? '\n' : ''}HTTP/1.1: only the open view is watched`}`;
  return (
    <span class={`live ${text}`} data-testid="live" title={title}>
      {text}
    </span>
  );
}

function Dashboard() {
  const [tab, setTab] = useState(tabFromHash);
  const [ns, setNs] = useState('');
  useTick();

  useEffect(() => {
    const onHash = () => setTab(tabFromHash());
    addEventListener('hashchange', onHash);
    return () => removeEventListener('hashchange', onHash);
  }, []);

  useEffect(() => {
    showView(tab);
  }, [tab]);

  const choose = (id) => {
    // replaceState: switching views shouldn't fill the back button's history.
    history.replaceState(null, '', `#${id}`);
    setTab(id);
  };

  const { auth } = state;
  return (
    <div class="shell">
      <header class="top">
        <span class="brand">Capstan</span>
        <nav class="tabs" role="tablist">
          {TABS.map(([id, label]) => (
            <button
              key={id}
              type="button"
              role="tab"
              aria-selected={tab === id}
              class={tab === id ? 'tab active' : 'tab'}
              data-testid={`tab-${id}`}
              onClick={() => choose(id)}
            >
              {label}
            </button>
          ))}
        </nav>
        <span class="spacer" />
        {tab !== 'nodes' && tab !== 'controlplane' && <NamespacePicker ns={ns} setNs={setNs} />}
        <Live />
        {auth.user && (
          <span class="user" data-testid="user" title="signed in as">
            {auth.user}
          </span>
        )}
        {auth.usingToken && (
          <button type="button" class="signout" data-testid="signout" onClick={signOut}>
            Sign out
          </button>
        )}
      </header>
      <main class={state.logs ? 'view with-logs' : 'view'} data-view={tab}>
        {tab === 'nodes' && <NodesView />}
        {tab === 'workloads' && <WorkloadsView ns={ns} />}
        {tab === 'services' && <ServicesView ns={ns} />}
        {tab === 'events' && <EventsView ns={ns} />}
        {tab === 'controlplane' && <ControlPlaneView />}
      </main>
      {state.logs && <LogPanel key={`${state.logs.namespace}/${state.logs.name}`} target={state.logs} />}
    </div>
  );
}

export function App() {
  const { auth } = useStore();
  useEffect(() => {
    start();
  }, []);

  switch (auth.phase) {
    case 'in':
      return <Dashboard />;
    case 'login':
      return <Login message={auth.message} />;
    case 'offline':
      return (
        <main class="login">
          <div class="card login-card">
            <h1>Capstan</h1>
            <p class="login-message" role="alert">
              {auth.message}
            </p>
            <button type="button" class="primary" onClick={start}>
              Retry
            </button>
          </div>
        </main>
      );
    default:
      return <p class="boot">Connecting…</p>;
  }
}
