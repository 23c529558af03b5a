// A small WASI 0.2 for the gateway component inside a Cloudflare Worker (no npm dependency at
// run time, so a built app deploys without node_modules).
//
// It serves exactly what a gateway needs and nothing else: no environment, no arguments, no
// files (no preopens), empty stdin, stdout/stderr as console lines, clocks and randomness from
// the Workers runtime. Sleeping is not possible inside a Worker without suspending, so every
// pollable is ready at once (a `sleep` returns immediately); the gateway never sleeps.
//
// Shapes follow what jco 1.35 generates for an `--instantiation async` transpile: import keys
// are unversioned (`wasi:cli/stderr`), resources are classes (jco checks `instanceof` on values
// the host returns), u64/s64 are BigInt, `option` is a value or `undefined`, and an error of a
// `result` is returned by throwing its payload (`throw { tag: 'closed' }`). Throwing an `Error`
// is a trap.
//
// `wasiImports()` returns a fresh import object per instance; `strictImports()` wraps a whole
// import object so that an interface or a function the component needs but nobody provides
// fails at instantiation with a message naming it, instead of an obscure TypeError later.

// === wasi:io ===

/** `wasi:io/error.error`. */
export class IoError {
  #message;
  constructor(message) {
    this.#message = String(message);
  }
  toDebugString() {
    return this.#message;
  }
}

/** `wasi:io/poll.pollable`: always ready (see the file comment). */
export class Pollable {
  ready() {
    return true;
  }
  block() {}
}

/** `wasi:io/poll.poll`: every pollable is ready. */
function poll(pollables) {
  return Uint32Array.from(pollables, (_, i) => i);
}

const CLOSED = Object.freeze({ tag: 'closed' });

/** `wasi:io/streams.input-stream`: the only one is stdin, which is empty. */
export class InputStream {
  read(_len) {
    throw CLOSED;
  }
  blockingRead(_len) {
    throw CLOSED;
  }
  skip(_len) {
    throw CLOSED;
  }
  blockingSkip(_len) {
    throw CLOSED;
  }
  subscribe() {
    return new Pollable();
  }
}

const MAX_LINE = 8192;

/**
 * `wasi:io/streams.output-stream`: stdout or stderr, written to the console one line at a time
 * (a line is emitted at its newline, or when it grows past MAX_LINE bytes, or by `drain()`).
 */
export class OutputStream {
  #emit;
  #decoder = new TextDecoder();
  #pending = '';

  constructor(emit) {
    this.#emit = emit;
  }

  #take(bytes) {
    this.#pending += this.#decoder.decode(bytes, { stream: true });
    let nl;
    while ((nl = this.#pending.indexOf('\n')) >= 0) {
      this.#emit(this.#pending.slice(0, nl));
      this.#pending = this.#pending.slice(nl + 1);
    }
    if (this.#pending.length > MAX_LINE) this.drain();
  }

  /** Emits a partial last line (called at the end of each request). */
  drain() {
    this.#pending += this.#decoder.decode();
    if (this.#pending) this.#emit(this.#pending);
    this.#pending = '';
  }

  checkWrite() {
    return 1048576n;
  }
  write(contents) {
    this.#take(contents);
  }
  blockingWriteAndFlush(contents) {
    this.#take(contents);
  }
  flush() {}
  blockingFlush() {}
  writeZeroes(len) {
    this.#take(new Uint8Array(Number(len)));
  }
  blockingWriteZeroesAndFlush(len) {
    this.#take(new Uint8Array(Number(len)));
  }
  splice(_src, _len) {
    throw CLOSED;
  }
  blockingSplice(_src, _len) {
    throw CLOSED;
  }
  subscribe() {
    return new Pollable();
  }
}

// === wasi:cli ===

/** Thrown by `wasi:cli/exit.exit`: ends the request with a trap. */
export class WasiExit extends Error {
  constructor(code) {
    super(`the gateway component called wasi:cli/exit (code ${code})`);
    this.name = 'WasiExit';
    this.code = code;
  }
}

export class TerminalInput {}
export class TerminalOutput {}

// === wasi:clocks ===

const NS_PER_MS = 1_000_000n;
let lastMonotonic = 0n;

/** Nanoseconds on a monotonic clock (Workers advance time only across I/O). */
function monotonicNow() {
  const ms = typeof performance !== 'undefined' ? performance.now() : Date.now();
  const ns = BigInt(Math.round(ms * 1e6));
  if (ns > lastMonotonic) lastMonotonic = ns;
  return lastMonotonic;
}

function wallNow() {
  const ms = Date.now();
  return { seconds: BigInt(Math.floor(ms / 1000)), nanoseconds: (ms % 1000) * 1_000_000 };
}

// === wasi:random ===

function randomBytes(len) {
  const out = new Uint8Array(Number(len));
  // getRandomValues fills at most 65536 bytes per call.
  for (let off = 0; off < out.length; off += 65536) {
    crypto.getRandomValues(out.subarray(off, Math.min(out.length, off + 65536)));
  }
  return out;
}

function randomU64() {
  return new BigUint64Array(randomBytes(8).buffer)[0];
}

// === wasi:filesystem (no preopens: the gateway has no files) ===

export class Descriptor {}
export class DirectoryEntryStream {}

// === the import object ===

/**
 * A fresh WASI import object for one component instance, and `drain()` to emit what is left
 * in stdout/stderr at the end of a request.
 *
 * @param {{ stdout?: (line: string) => void, stderr?: (line: string) => void }} [options]
 */
export function wasiImports(options = {}) {
  const stdout = new OutputStream(options.stdout ?? ((line) => console.log(`gateway stdout: ${line}`)));
  const stderr = new OutputStream(options.stderr ?? ((line) => console.error(`gateway stderr: ${line}`)));
  const stdin = new InputStream();
  const imports = {
    'wasi:cli/environment': {
      getEnvironment: () => [],
      getArguments: () => [],
      initialCwd: () => undefined,
    },
    'wasi:cli/exit': {
      exit(status) {
        throw new WasiExit(status?.tag === 'err' ? 1 : 0);
      },
      exitWithCode(code) {
        throw new WasiExit(code);
      },
    },
    'wasi:cli/stdin': { getStdin: () => stdin },
    'wasi:cli/stdout': { getStdout: () => stdout },
    'wasi:cli/stderr': { getStderr: () => stderr },
    'wasi:cli/terminal-input': { TerminalInput },
    'wasi:cli/terminal-output': { TerminalOutput },
    'wasi:cli/terminal-stdin': { getTerminalStdin: () => undefined },
    'wasi:cli/terminal-stdout': { getTerminalStdout: () => undefined },
    'wasi:cli/terminal-stderr': { getTerminalStderr: () => undefined },
    'wasi:io/error': { Error: IoError },
    'wasi:io/poll': { Pollable, poll },
    'wasi:io/streams': { InputStream, OutputStream },
    'wasi:clocks/monotonic-clock': {
      now: monotonicNow,
      resolution: () => 1000n,
      subscribeInstant: (_when) => new Pollable(),
      subscribeDuration: (_duration) => new Pollable(),
    },
    'wasi:clocks/wall-clock': {
      now: wallNow,
      resolution: () => ({ seconds: 0n, nanoseconds: 1_000_000 }),
    },
    'wasi:random/random': { getRandomBytes: randomBytes, getRandomU64: randomU64 },
    'wasi:random/insecure': { getInsecureRandomBytes: randomBytes, getInsecureRandomU64: randomU64 },
    'wasi:random/insecure-seed': { insecureSeed: () => [randomU64(), randomU64()] },
    'wasi:filesystem/preopens': { getDirectories: () => [] },
    'wasi:filesystem/types': {
      Descriptor,
      DirectoryEntryStream,
      filesystemErrorCode: (_err) => undefined,
    },
  };
  return {
    imports,
    drain() {
      stdout.drain();
      stderr.drain();
    },
  };
}

// Property names a JS runtime may probe on any object (thenables, inspection); never an import.
const PROBES = new Set(['then', 'toJSON', 'constructor', 'inspect']);

function strict(target, describe) {
  return new Proxy(target, {
    get(obj, key, receiver) {
      if (typeof key !== 'string' || key in obj || PROBES.has(key)) return Reflect.get(obj, key, receiver);
      throw new Error(describe(key));
    },
  });
}

/**
 * Wraps a jco import object (`{ 'ns:pkg/iface': { fn, Class } }`) so that a missing interface or
 * function throws at instantiation, naming it.
 */
export function strictImports(imports) {
  const where = 'apps/cloudflare/template/src (wasi.js or worker.js)';
  const wrapped = {};
  for (const [name, iface] of Object.entries(imports)) {
    wrapped[name] = strict(
      iface,
      (fn) => `the gateway component imports \`${name}#${fn}\`, which this Cloudflare app does not provide (${where})`,
    );
  }
  return strict(
    wrapped,
    (name) => `the gateway component imports the interface \`${name}\`, which this Cloudflare app does not provide (${where})`,
  );
}
