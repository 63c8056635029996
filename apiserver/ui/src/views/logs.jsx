// A pod's log, followed live. The text goes straight into the <pre> (not through
// Preact state): a megabyte of log re-diffed on every chunk would be slow for nothing.

import { useEffect, useRef, useState } from 'preact/hooks';
import { readText, request } from '../api.js';
import { changed, state } from '../store.js';

const LOG_MAX = 1 << 20; // characters kept; the oldest lines go first
const PAINT_MS = 100;

function close() {
  state.logs = null;
  changed();
}

export function LogPanel({ target }) {
  const { namespace, name, containers } = target;
  const [container, setContainer] = useState(containers[0] || '');
  const [phase, setPhase] = useState('connecting'); // connecting | streaming | ended | error
  const [error, setError] = useState('');
  const pre = useRef(null);

  useEffect(() => {
    const ac = new AbortController();
    const el = pre.current;
    let text = '';
    let timer = 0;
    el.textContent = '';
    setPhase('connecting');
    setError('');

    const paint = () => {
      timer = 0;
      // Follow the tail only if the reader is already at the bottom.
      const atBottom = el.scrollTop + el.clientHeight >= el.scrollHeight - 8;
      el.textContent = text;
      if (atBottom) el.scrollTop = el.scrollHeight;
    };

    const q = new URLSearchParams({ tailLines: '500', follow: 'true' });
    if (container) q.set('container', container);
    const url = `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(name)}/log?${q}`;

    (async () => {
      try {
        const res = await request(url, { signal: ac.signal, headers: { Accept: '*/*' } });
        setPhase('streaming');
        await readText(res, (chunk) => {
          text += chunk;
          if (text.length > LOG_MAX) {
            const cut = text.indexOf('\n', text.length - LOG_MAX);
            text = text.slice(cut >= 0 ? cut + 1 : text.length - LOG_MAX);
          }
          if (!timer) timer = setTimeout(paint, PAINT_MS);
        });
        if (ac.signal.aborted) return;
        clearTimeout(timer);
        paint();
        setPhase('ended');
      } catch (e) {
        if (ac.signal.aborted) return;
        clearTimeout(timer);
        paint();
        setError(e.message || String(e));
        setPhase('error');
      }
    })();

    // Closing the panel or switching container aborts the request, which ends the
    // server's follow too.
    return () => {
      ac.abort();
      clearTimeout(timer);
    };
  }, [namespace, name, container]);

  return (
    <aside class="logs" aria-label={`Logs of ${namespace}/${name}`} data-testid="log-panel">
      <header class="logs-head">
        <strong>
          Logs: {namespace}/{name}
        </strong>
        <label>
          Container{' '}
          <select value={container} onChange={(e) => setContainer(e.currentTarget.value)} data-testid="log-container">
            {containers.map((c) => (
              <option key={c} value={c}>
                {c}
              </option>
            ))}
          </select>
        </label>
        <span class={`log-phase ${phase}`} data-testid="log-phase">
          {phase === 'streaming' ? 'following' : phase}
        </span>
        <span class="spacer" />
        <button type="button" data-testid="log-close" onClick={close}>
          Close
        </button>
      </header>
      {error && (
        <p class="log-error" data-testid="log-error" role="alert">
          {error}
        </p>
      )}
      <pre ref={pre} class="log-text" data-testid="log-text" />
    </aside>
  );
}
