// Unit tests of template/src/wasi.js in Node (the shapes jco 1.35 expects).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InputStream, IoError, OutputStream, Pollable, strictImports, WasiExit, wasiImports } from '../template/src/wasi.js';

const enc = new TextEncoder();

test('stdout and stderr are emitted one line at a time, the rest on drain', () => {
  const out = [];
  const err = [];
  const { imports, drain } = wasiImports({ stdout: (l) => out.push(l), stderr: (l) => err.push(l) });
  const stdout = imports['wasi:cli/stdout'].getStdout();
  const stderr = imports['wasi:cli/stderr'].getStderr();
  assert.ok(stdout instanceof OutputStream);
  assert.equal(typeof stdout.checkWrite(), 'bigint');
  stdout.blockingWriteAndFlush(enc.encode('hel'));
  stdout.write(enc.encode('lo\nwor'));
  stdout.blockingFlush();
  stderr.blockingWriteAndFlush(enc.encode('é'));
  // A character split across two writes.
  const bytes = enc.encode('ü\n');
  stderr.write(bytes.subarray(0, 1));
  stderr.write(bytes.subarray(1));
  assert.deepEqual(out, ['hello']);
  assert.deepEqual(err, ['éü']);
  drain();
  assert.deepEqual(out, ['hello', 'wor']);
  assert.ok(stdout.subscribe() instanceof Pollable);
});

test('stdin is closed', () => {
  const { imports } = wasiImports();
  const stdin = imports['wasi:cli/stdin'].getStdin();
  assert.ok(stdin instanceof InputStream);
  assert.throws(() => stdin.read(10n), (e) => e.tag === 'closed');
  assert.throws(() => stdin.blockingRead(10n), (e) => e.tag === 'closed');
});

test('clocks are BigInt nanoseconds and a wall-clock datetime', () => {
  const { imports } = wasiImports();
  const mono = imports['wasi:clocks/monotonic-clock'];
  const a = mono.now();
  const b = mono.now();
  assert.equal(typeof a, 'bigint');
  assert.ok(b >= a);
  assert.equal(typeof mono.resolution(), 'bigint');
  assert.ok(mono.subscribeDuration(5n).ready());
  const wall = imports['wasi:clocks/wall-clock'].now();
  assert.equal(typeof wall.seconds, 'bigint');
  assert.ok(Number.isInteger(wall.nanoseconds) && wall.nanoseconds >= 0 && wall.nanoseconds < 1e9);
  assert.ok(Math.abs(Number(wall.seconds) - Date.now() / 1000) < 5);
});

test('random: bytes of the asked length (also above 64 KiB), u64, insecure seed', () => {
  const { imports } = wasiImports();
  const r = imports['wasi:random/random'];
  assert.equal(r.getRandomBytes(100_000n).length, 100_000);
  assert.equal(typeof r.getRandomU64(), 'bigint');
  const [s1, s2] = imports['wasi:random/insecure-seed'].insecureSeed();
  assert.equal(typeof s1, 'bigint');
  assert.equal(typeof s2, 'bigint');
  assert.equal(imports['wasi:random/insecure'].getInsecureRandomBytes(3n).length, 3);
});

test('no environment, no arguments, no preopens; poll says all ready', () => {
  const { imports } = wasiImports();
  assert.deepEqual(imports['wasi:cli/environment'].getEnvironment(), []);
  assert.deepEqual(imports['wasi:cli/environment'].getArguments(), []);
  assert.deepEqual(imports['wasi:filesystem/preopens'].getDirectories(), []);
  assert.deepEqual([...imports['wasi:io/poll'].poll([new Pollable(), new Pollable()])], [0, 1]);
  assert.equal(imports['wasi:cli/terminal-stdout'].getTerminalStdout(), undefined);
  assert.equal(new IoError('x').toDebugString(), 'x');
});

test('exit traps', () => {
  const { imports } = wasiImports();
  assert.throws(() => imports['wasi:cli/exit'].exit({ tag: 'err' }), (e) => e instanceof WasiExit && e.code === 1);
});

test('strictImports names a missing interface or function', () => {
  const imports = strictImports({ 'wasi:cli/stdout': { getStdout() {} } });
  assert.equal(typeof imports['wasi:cli/stdout'].getStdout, 'function');
  assert.throws(() => imports['wasi:sockets/tcp'], /imports the interface `wasi:sockets\/tcp`/);
  assert.throws(() => {
    const { getStderr } = imports['wasi:cli/stdout'];
    return getStderr;
  }, /imports `wasi:cli\/stdout#getStderr`/);
  assert.equal(imports.then, undefined); // not mistaken for a thenable
});
