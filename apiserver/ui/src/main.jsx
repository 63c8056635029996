// Entry point: bundled into app.js (and the CSS it imports into app.css).

import { render } from 'preact';
import { App } from './app.jsx';
import './style.css';

// The browser test checks that this never changes: the page updates from watches and
// is never reloaded.
if (window.__capstanLoadedAt === undefined) window.__capstanLoadedAt = Date.now();

const root = document.getElementById('app');
root.textContent = '';
render(<App />, root);
