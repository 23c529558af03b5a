// Builds a Worker app the way `weir build --target cloudflare` lays it out, around a stand-in
// gateway component (fake-gateway.js, made with `jco componentize`) that exposes every
// `weir:edge/platform` function over HTTP. Lets the template (worker.js, wasi.js,
// wrangler.toml) be tested without the Rust build.
//
//   node test/platform/build.mjs OUT_DIR
//
// OUT_DIR/gateway.wasm is cached in test/platform/build/ (componentize takes ~15 s).

import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { transpile } from '../../scripts/transpile.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const APP = dirname(dirname(HERE));
const REPO = dirname(dirname(APP));
const CACHE = join(HERE, 'build');

/** A WIT package with `platform` and `handler` of wit/edge/edge.wit and a world of just those. */
function fakeWit(dir) {
  const src = join(REPO, 'wit/edge/edge.wit');
  const text = readFileSync(src, 'utf8');
  const block = (name) => {
    const start = text.search(new RegExp(`^interface ${name}\\s*\\{`, 'm'));
    if (start < 0) throw new Error(`interface ${name} not found in ${src}`);
    let depth = 0;
    for (let i = text.indexOf('{', start); i < text.length; i++) {
      if (text[i] === '{') depth++;
      else if (text[i] === '}' && --depth === 0) return text.slice(start, i + 1);
    }
    throw new Error(`unbalanced braces in interface ${name}`);
  };
  const pkg = text.match(/^package\s+[^;]+;/m)[0];
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    join(dir, 'fake.wit'),
    `${pkg}\n\n${block('platform')}\n\n${block('handler')}\n\nworld fake-gateway {\n    import platform;\n    export handler;\n}\n`,
  );
}

/** The stand-in component, rebuilt when its source or the WIT changes. */
async function fakeComponent() {
  const out = join(CACHE, 'fake-gateway.wasm');
  const sources = [join(HERE, 'fake-gateway.js'), join(REPO, 'wit/edge/edge.wit')];
  if (existsSync(out) && sources.every((s) => statSync(s).mtimeMs < statSync(out).mtimeMs)) return out;
  const wit = join(CACHE, 'wit');
  fakeWit(wit);
  // jco 1.35's componentize reads the WIT through preview2-shim, which starts with no preopens:
  // run it in a child that preopens `/` first.
  const runner = join(CACHE, 'componentize.mjs');
  const shim = (pkg) => join(APP, `node_modules/@bytecodealliance/${pkg}/node_modules/@bytecodealliance/preview2-shim/dist/nodejs/filesystem.js`);
  writeFileSync(
    runner,
    [
      ...['jco-transpile', 'jco'].map(
        (p) => `(await import(${JSON.stringify(pathToFileURL(shim(p)).href)}))._setPreopens({ '/': '/' });`,
      ),
      `await import(${JSON.stringify(pathToFileURL(join(APP, 'node_modules/@bytecodealliance/jco/dist/jco.js')).href)});`,
      '',
    ].join('\n'),
  );
  execFileSync(
    process.execPath,
    [runner, 'componentize', join(HERE, 'fake-gateway.js'), '--wit', wit, '--world-name', 'fake-gateway',
      '--disable', 'http', 'fetch-event', '-o', out],
    { stdio: 'inherit' },
  );
  return out;
}

export async function buildApp(outDir, { plan, devVars = {} } = {}) {
  mkdirSync(CACHE, { recursive: true });
  const component = await fakeComponent();
  mkdirSync(join(outDir, 'src'), { recursive: true });
  copyFileSync(component, join(outDir, 'gateway.wasm'));
  transpile(outDir);
  for (const f of ['worker.js', 'wasi.js']) copyFileSync(join(APP, 'template/src', f), join(outDir, 'src', f));
  writeFileSync(join(outDir, 'src/plan.json'), JSON.stringify(plan ?? { secrets: [] }));
  const toml = readFileSync(join(APP, 'template/wrangler.toml'), 'utf8')
    .replaceAll('{{name}}', 'weir-platform-test')
    .replaceAll('{{kv_namespace_id}}', 'weir-platform-test-kv');
  writeFileSync(join(outDir, 'wrangler.toml'), toml);
  writeFileSync(
    join(outDir, '.dev.vars'),
    Object.entries(devVars).map(([k, v]) => `${k}=${JSON.stringify(v)}\n`).join(''),
  );
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await buildApp(process.argv[2], { plan: { secrets: ['TEST_SECRET'] }, devVars: { TEST_SECRET: 'shh' } });
}
