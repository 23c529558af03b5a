// Builds a component from a JavaScript module with `jco componentize` (componentize-js, no AOT):
//
//   node scripts/componentize.mjs SOURCE.js WIT_DIR WORLD OUT.wasm
//
// jco reads the WIT through preview2-shim, which starts with no preopens: they are set to `/`
// first, in this process, then jco runs.

import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const APP = dirname(dirname(fileURLToPath(import.meta.url)));
const [source, wit, world, out] = process.argv.slice(2);
if (!out) {
  console.error('usage: node scripts/componentize.mjs SOURCE.js WIT_DIR WORLD OUT.wasm');
  process.exit(2);
}
for (const pkg of ['jco', 'jco-transpile']) {
  const shim = join(APP, `node_modules/@bytecodealliance/${pkg}/node_modules/@bytecodealliance/preview2-shim/dist/nodejs/filesystem.js`);
  (await import(pathToFileURL(shim).href))._setPreopens({ '/': '/' });
}
process.argv = [process.argv[0], 'jco', 'componentize', source, '--wit', wit, '--world-name', world,
  '--disable', 'http', 'fetch-event', '-o', out];
await import(pathToFileURL(join(APP, 'node_modules/@bytecodealliance/jco/dist/jco.js')).href);
