// Weir at the edge: the Cloudflare Worker around the composed gateway component.
//
// `weir build --target cloudflare` writes this file next to:
//   gen/         the gateway component transpiled by jco (JSPI: platform calls may await)
//   modules.js   `export default { '<core wasm file name>': <WebAssembly.Module>, ... }`
//   plan.json    the gateway plan (routes, policies, providers); `secrets` lists the names of
//                the Worker secrets/variables the gateway needs (provider API keys)
//   wasi.js      the small WASI the component imports
//
// Per request the Worker instantiates the gateway afresh (no state of one request can reach
// another, and JSPI instances must never serve two requests at once), serves
// `weir:edge/platform` with the platform's own APIs, and calls `weir:edge/handler.handle`:
//   kv-get / kv-set / kv-delete  Workers KV, binding WEIR_KV (eventually consistent)
//   kv-increment                 Durable Object WeirCounter, one per key (exact under concurrency)
//   fetch / read-body            global fetch with a timeout; bodies are read piece by piece
//   log                          console
// A streamed answer goes out as a ReadableStream fed by `handler.next`; if the client goes away,
// `handler.abandon` reads the upstream to its end (ctx.waitUntil) so its usage is recorded.
// If a policy traps, the instance is gone: a fresh one renders the error naming the policy
// (`handler.trapped`), from the last policy the gateway said it was entering.
//
// Counters and values are separate spaces here: a `kv-get` does not see a counter made by
// `kv-increment` (the self-hosted store has one space). Policies use a key for one or the other.

import { DurableObject } from 'cloudflare:workers';
import { instantiate } from './gen/gateway.js';
import coreModules from './modules.js';
import planText from './plan.json';
import { strictImports, wasiImports } from './wasi.js';

const PLAN = parsePlan(planText);
const HANDLER = 'weir:edge/handler@0.2.0';

function parsePlan(text) {
  const plan = JSON.parse(text);
  const secrets = plan.secrets ?? [];
  if (!Array.isArray(secrets) || !secrets.every((s) => typeof s === 'string')) {
    throw new Error('plan.json: `secrets` must be a list of variable names');
  }
  return { text, secrets };
}

/** A gateway instance for one request, with its platform. */
async function gatewayFor(env) {
  const wasi = wasiImports();
  const platform = makePlatform(env);
  const imports = strictImports({ ...wasi.imports, 'weir:edge/platform': platform });
  const gateway = await instantiate(coreModule, imports);
  return { handler: gateway[HANDLER], wasi, platform };
}

export default {
  async fetch(request, env, ctx) {
    const secrets = readSecrets(env);
    let instance;
    let handlerRequest;
    try {
      handlerRequest = await toHandlerRequest(request);
      instance = await gatewayFor(env);
      const response = await instance.handler.handle(PLAN.text, secrets, handlerRequest);
      if (response.stream === undefined) {
        instance.wasi.drain();
        return toResponse(response, response.body);
      }
      return toResponse(response, streamBody(instance, response.stream, ctx, env, handlerRequest, secrets));
    } catch (error) {
      instance?.wasi.drain();
      return await failed(error, instance, env, handlerRequest, secrets);
    }
  },
};

/** The body of a streamed answer: each `next` of the gateway as it comes. */
function streamBody(instance, stream, ctx, env, handlerRequest, secrets) {
  let finished = false;
  return new ReadableStream({
    async pull(controller) {
      try {
        // A `next` can yield nothing (every event of that read held back by a policy): read on,
        // since a pull that enqueues nothing is not called again and the response would hang.
        for (;;) {
          const chunk = await instance.handler.next(stream);
          if (chunk === undefined) {
            finished = true;
            instance.wasi.drain();
            controller.close();
            return;
          }
          if (chunk.length > 0) {
            controller.enqueue(chunk);
            return;
          }
        }
      } catch (error) {
        finished = true;
        instance.wasi.drain();
        reportFailure(error, instance, secrets);
        controller.error(error);
      }
    },
    cancel() {
      if (finished) return;
      // The client went away: read the rest for the usage, send nothing.
      ctx.waitUntil(
        instance.handler
          .abandon(stream)
          .catch((error) => reportFailure(error, instance, secrets))
          .finally(() => instance.wasi.drain()),
      );
    },
  });
}

function coreModule(name) {
  const module = coreModules[name];
  if (!module) throw new Error(`core module ${name} is missing from src/modules.js (rebuild with \`weir build\`)`);
  return module;
}

// === secrets ===

const warnedMissing = new Set();

/** `[[name, value]]` for every secret the plan names that the Worker has. */
function readSecrets(env) {
  const out = [];
  for (const name of PLAN.secrets) {
    const value = env[name];
    if (typeof value === 'string') out.push([name, value]);
    else if (!warnedMissing.has(name)) {
      warnedMissing.add(name);
      console.warn(`weir: secret ${name} is not set (wrangler secret put ${name}); requests that need it will fail`);
    }
  }
  return out;
}

// === HTTP ⇄ handler records ===

async function toHandlerRequest(request) {
  const url = new URL(request.url);
  const headers = [];
  for (const [name, value] of request.headers) headers.push([name.toLowerCase(), value]);
  const body = request.body ? new Uint8Array(await request.arrayBuffer()) : new Uint8Array(0);
  return { method: request.method, path: url.pathname + url.search, headers, body };
}

// Set by the runtime from the body; a copy from the component could contradict it.
const RUNTIME_HEADERS = new Set(['content-length', 'transfer-encoding', 'connection', 'keep-alive']);
const NULL_BODY_STATUS = new Set([101, 204, 205, 304]);

function toResponse({ status, headers }, body) {
  const out = new Headers();
  for (const [name, value] of headers) {
    if (!RUNTIME_HEADERS.has(name.toLowerCase())) out.append(name, value);
  }
  return new Response(NULL_BODY_STATUS.has(status) ? null : body, { status, headers: out });
}

/** Logs a failure with secrets removed. */
function reportFailure(error, instance, secrets) {
  let detail = error instanceof Error ? `${error.name}: ${error.message}\n${error.stack ?? ''}` : String(error);
  for (const [, value] of secrets) {
    if (value) detail = detail.replaceAll(value, '[redacted]');
  }
  const where = instance?.platform.entered;
  console.error(`weir: the gateway failed${where ? ` in ${where.phase} of policy ${where.instance}` : ''}: ${detail}`);
}

/**
 * The answer when the gateway failed: if a policy trapped, a fresh instance renders the error
 * naming it in the client's format; otherwise a 500 in the OpenAI error format. Details go to
 * the log only, with secrets removed.
 */
async function failed(error, instance, env, handlerRequest, secrets) {
  reportFailure(error, instance, secrets);
  const where = instance?.platform.entered;
  if (where && handlerRequest && error instanceof WebAssembly.RuntimeError) {
    try {
      const fresh = await gatewayFor(env);
      const response = await fresh.handler.trapped(PLAN.text, handlerRequest, where.instance, where.phase, error.message);
      fresh.wasi.drain();
      return toResponse(response, response.body);
    } catch (again) {
      reportFailure(again, undefined, secrets);
    }
  }
  const requestId = `req_edge_${hex(crypto.getRandomValues(new Uint8Array(12)))}`;
  const body = {
    error: {
      message: `The gateway failed to handle the request (request id ${requestId}).`,
      type: 'server_error',
      param: null,
      code: 'edge_internal_error',
    },
  };
  return new Response(JSON.stringify(body), {
    status: 500,
    headers: { 'content-type': 'application/json', 'x-request-id': requestId },
  });
}

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

// === weir:edge/platform ===

const KV_MIN_TTL_S = 60; // Workers KV refuses a shorter expirationTtl
const KV_MAX_KEY_BYTES = 512;
const LOG = [console.debug, console.debug, console.info, console.warn, console.error];

const kvError = (tag, message) => ({ tag: 'err', val: { tag, val: message } });
const describe = (e) => (e instanceof Error ? e.message : String(e));

/** The platform imports for one request. A failure is returned as the WIT error, never thrown. */
function makePlatform(env) {
  const kv = env.WEIR_KV;
  const counters = env.WEIR_COUNTERS;
  const bodies = new Map();
  let nextBody = 1;
  const platform = {
    /** The policy the gateway last said it was entering (named if the composition traps). */
    entered: undefined,
    async kvGet(key) {
      if (!kv) return kvError('unavailable', 'the WEIR_KV binding is missing (wrangler.toml)');
      try {
        const value = await kv.get(await kvKey(key), 'arrayBuffer');
        return value === null ? undefined : new Uint8Array(value);
      } catch (e) {
        return kvError('unavailable', `Workers KV get failed: ${describe(e)}`);
      }
    },
    async kvSet(key, value, ttlMs) {
      if (!kv) return kvError('unavailable', 'the WEIR_KV binding is missing (wrangler.toml)');
      const options = ttlMs === undefined ? {} : { expirationTtl: Math.max(KV_MIN_TTL_S, Math.ceil(Number(ttlMs) / 1000)) };
      try {
        await kv.put(await kvKey(key), value.slice(), options);
        return { tag: 'ok', val: undefined };
      } catch (e) {
        return kvError('unavailable', `Workers KV put failed: ${describe(e)}`);
      }
    },
    async kvDelete(key) {
      if (!kv) return kvError('unavailable', 'the WEIR_KV binding is missing (wrangler.toml)');
      try {
        await kv.delete(await kvKey(key));
        return { tag: 'ok', val: undefined };
      } catch (e) {
        return kvError('unavailable', `Workers KV delete failed: ${describe(e)}`);
      }
    },
    async kvIncrement(key, delta, ttlMs) {
      if (!counters) return kvError('unavailable', 'the WEIR_COUNTERS binding is missing (wrangler.toml)');
      try {
        const stub = counters.get(counters.idFromName(key));
        const out = await stub.increment(delta.toString(), ttlMs === undefined ? null : Number(ttlMs));
        return 'value' in out ? BigInt(out.value) : kvError('invalid', out.invalid);
      } catch (e) {
        return kvError('unavailable', `counter ${JSON.stringify(key)} (Durable Object) failed: ${describe(e)}`);
      }
    },
    log(level, message) {
      (LOG[level] ?? console.log)(`weir: ${message}`);
    },
    async fetch(request) {
      try {
        const response = await fetch(request.url, {
          method: request.method,
          headers: outboundHeaders(request.headers),
          body: request.body,
          redirect: 'manual',
          signal: AbortSignal.timeout(Math.max(1, request.timeoutMs)),
        });
        const id = nextBody++;
        bodies.set(id, response.body ? response.body.getReader() : null);
        return { status: response.status, headers: [...response.headers], body: id };
      } catch (e) {
        if (e?.name === 'TimeoutError' || e?.name === 'AbortError') return { tag: 'err', val: { tag: 'timeout' } };
        return { tag: 'err', val: { tag: 'failed', val: describe(e) } };
      }
    },
    async readBody(id, timeoutMs) {
      const reader = bodies.get(id);
      if (reader === undefined) return { tag: 'err', val: { tag: 'failed', val: `no response body ${id}` } };
      if (reader === null) {
        bodies.delete(id);
        return undefined;
      }
      let timer;
      const timeout = new Promise((resolve) => {
        timer = setTimeout(() => resolve('timeout'), Math.max(1, timeoutMs));
      });
      try {
        const read = await Promise.race([reader.read(), timeout]);
        if (read === 'timeout') {
          bodies.delete(id);
          reader.cancel().catch(() => {});
          return { tag: 'err', val: { tag: 'timeout' } };
        }
        if (read.done) {
          bodies.delete(id);
          return undefined;
        }
        return read.value;
      } catch (e) {
        bodies.delete(id);
        return { tag: 'err', val: { tag: 'failed', val: describe(e) } };
      } finally {
        clearTimeout(timer);
      }
    },
    closeBody(id) {
      const reader = bodies.get(id);
      bodies.delete(id);
      reader?.cancel().catch(() => {});
    },
    entering(instance, phase) {
      platform.entered = { instance, phase };
    },
    nowMs() {
      return BigInt(Date.now());
    },
    async sleep(ms) {
      await new Promise((resolve) => setTimeout(resolve, ms));
    },
  };
  return platform;
}

const OUTBOUND_SKIP = new Set(['host', ...RUNTIME_HEADERS]);

function outboundHeaders(pairs) {
  const headers = new Headers();
  for (const [name, value] of pairs) {
    if (!OUTBOUND_SKIP.has(name.toLowerCase())) headers.append(name, value);
  }
  return headers;
}

/** Workers KV keys are at most 512 bytes: longer ones are replaced by their SHA-256. */
async function kvKey(key) {
  if (new TextEncoder().encode(key).length <= KV_MAX_KEY_BYTES) return key;
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(key));
  return `weir-sha256:${hex(new Uint8Array(digest))}`;
}

// === counters ===

const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;

/**
 * One counter per key (`idFromName(key)`): an atomic add, because a Durable Object handles one
 * event at a time and its storage calls close the input gate. A counter created with a TTL
 * expires then (counts as 0 after), and an alarm deletes its storage.
 */
export class WeirCounter extends DurableObject {
  /**
   * @param {string} delta  a decimal s64
   * @param {number | null} ttlMs  applies only when this call creates the counter
   * @returns {Promise<{ value: string } | { invalid: string }>}
   */
  async increment(delta, ttlMs) {
    const storage = this.ctx.storage;
    const now = Date.now();
    const current = await storage.get('counter');
    let value;
    let expiresAt;
    if (current === undefined || (current.expiresAt !== null && current.expiresAt <= now)) {
      value = BigInt(delta);
      expiresAt = ttlMs === null ? null : now + ttlMs;
      if (expiresAt !== null) await storage.setAlarm(expiresAt);
    } else {
      value = BigInt(current.value) + BigInt(delta);
      expiresAt = current.expiresAt;
    }
    if (value < I64_MIN || value > I64_MAX) return { invalid: 'the counter would overflow a 64-bit integer' };
    await storage.put('counter', { value: value.toString(), expiresAt });
    return { value: value.toString() };
  }

  async alarm() {
    const current = await this.ctx.storage.get('counter');
    if (current?.expiresAt != null && current.expiresAt > Date.now()) {
      await this.ctx.storage.setAlarm(current.expiresAt);
    } else {
      await this.ctx.storage.deleteAll();
    }
  }
}
