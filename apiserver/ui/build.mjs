// Bundles the dashboard into <outdir>: index.html, app.js and app.css, nothing else.
// Usage: node build.mjs <outdir>
// The API server's build script runs this in a scratch copy of this folder after
// `npm ci --ignore-scripts`, so it must not depend on the working directory or on
// anything outside this folder.
import { build } from 'esbuild';
import { copyFile, mkdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const outArg = process.argv[2];
if (!outArg) {
  console.error('usage: node build.mjs <outdir>');
  process.exit(2);
}
const outdir = resolve(outArg);
await mkdir(outdir, { recursive: true });

await build({
  absWorkingDir: here,
  // Naming the entry "app" makes esbuild write app.js and, for the CSS the entry
  // imports, app.css.
  entryPoints: { app: join(here, 'src/main.jsx') },
  outdir,
  bundle: true,
  minify: true,
  format: 'iife',
  target: 'es2020',
  platform: 'browser',
  jsx: 'automatic',
  jsxImportSource: 'preact',
  sourcemap: false,
  // Everything is bundled; a stray asset import should fail the build, not emit a file.
  loader: { '.js': 'jsx', '.jsx': 'jsx', '.css': 'css' },
  logLevel: 'warning',
});
await copyFile(join(here, 'index.html'), join(outdir, 'index.html'));
