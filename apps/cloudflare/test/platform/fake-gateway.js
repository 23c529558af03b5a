// A stand-in for the composed gateway component (test only): the same world (imports
// `weir:edge/platform`, exports `weir:edge/handler`), made with `jco componentize`, that maps
// HTTP paths onto the platform functions so the Worker template can be tested without the Rust
// build. Its component imports a broad set of WASI 0.2 (StarlingMonkey), which also exercises
// wasi.js.

import { fetch as platformFetch, kvDelete, kvGet, kvIncrement, kvSet, log, nowMs, readBody } from 'weir:edge/platform@0.2.0';

const enc = new TextEncoder();
const dec = new TextDecoder();

function json(status, value) {
  const text = JSON.stringify(value, (_k, x) => (typeof x === 'bigint' ? x.toString() : x));
  return { status, headers: [['content-type', 'application/json'], ['x-fake', 'yes']], body: enc.encode(text), stream: undefined };
}

const optionalBigInt = (s) => (s ? BigInt(s) : undefined);

function route(plan, secrets, request) {
  const url = new URL(`http://fake${request.path}`);
  const q = (k) => url.searchParams.get(k);
  switch (url.pathname) {
    case '/now':
      return json(200, { now: nowMs() });
    case '/kv/get': {
      const v = kvGet(q('key'));
      return json(200, { value: v === undefined ? null : dec.decode(v) });
    }
    case '/kv/set':
      kvSet(q('key'), enc.encode(q('value')), optionalBigInt(q('ttl')));
      return json(200, { ok: true });
    case '/kv/delete':
      kvDelete(q('key'));
      return json(200, { ok: true });
    case '/incr':
      // Positive deltas only: componentize-js 0.22 traps lowering a negative s64 from JS
      // ("coreabi_from_bigint64 validation"); the Rust gateway's rollbacks cover negatives.
      return json(200, { value: kvIncrement(q('key'), BigInt(q('delta') ?? '1'), optionalBigInt(q('ttl'))) });
    case '/log':
      log(Number(q('level') ?? '2'), `fake says ${q('msg')}`);
      console.log(`stdout line ${q('msg')}`);
      console.error(`stderr line ${q('msg')}`);
      return json(200, { ok: true });
    case '/fetch': {
      const timeoutMs = Number(q('timeout') ?? '5000');
      const r = platformFetch({
        method: request.method,
        url: q('url'),
        headers: [['x-test', '1'], ['content-length', '999']],
        body: request.body.length ? request.body : undefined,
        timeoutMs,
      });
      let body = '';
      for (let chunk = readBody(r.body, timeoutMs); chunk !== undefined; chunk = readBody(r.body, timeoutMs)) {
        body += dec.decode(chunk);
      }
      return json(200, { status: r.status, headers: r.headers, body });
    }
    case '/random': {
      const a = new Uint8Array(16);
      crypto.getRandomValues(a);
      return json(200, { random: Array.from(a), math: Math.random() });
    }
    case '/echo':
      return json(200, {
        plan: JSON.parse(plan),
        secrets: secrets.map(([k, v]) => [k, v.length]),
        method: request.method,
        path: request.path,
        headers: request.headers,
        body: dec.decode(request.body),
      });
    case '/status':
      return { status: Number(q('code')), headers: [['x-status', q('code')]], body: enc.encode(q('body') ?? ''), stream: undefined };
    default:
      return json(404, { error: `no route ${url.pathname}` });
  }
}

export const handler = {
  next(_stream) {
    return undefined;
  },
  abandon(_stream) {},
  trapped(_plan, request, instance, phase, detail) {
    return json(500, { trapped: { instance, phase, detail, path: request.path } });
  },
  handle(plan, secrets, request) {
    if (request.path.startsWith('/trap')) throw new Error('boom'); // an uncaught error traps
    try {
      return route(plan, secrets, request);
    } catch (e) {
      // An import's `result` error arrives as a thrown value with the payload in `.payload`.
      const payload = e && typeof e === 'object' && 'payload' in e ? e.payload : String(e);
      return json(502, { import_error: payload });
    }
  },
};
