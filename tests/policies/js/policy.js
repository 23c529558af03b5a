// A weir:policy@0.2.0 policy in JavaScript (built with `jco componentize`, componentize-js):
// the conformance policy of tests/python/test_languages.py. Same behaviour as the Python one
// (tests/policies/python/app.py):
// - on-request: refuses with 403 `conformance_denied` when the request has `x-deny`; otherwise
//   counts the request in kv (`count`), keeps the count in an attribute, asks for the model of
//   its configuration (`model`) and adds `x-conformance-lang` to the upstream request;
// - on-response: reports the count in `x-conformance-count`;
// - on-stream-chunk: upper-cases the text of every event.

import { increment } from 'weir:policy/kv@0.2.0';

const PHASES = ['request', 'response', 'stream-chunk'];

function config(ctx) {
  return JSON.parse(ctx.config());
}

export const policy = {
  describe() {
    return { name: 'conformance-js', version: '0.1.0', phases: PHASES };
  },

  validateConfig(text) {
    let value;
    try {
      value = JSON.parse(text);
    } catch (e) {
      throw { path: '', message: `not JSON: ${e.message}` };
    }
    if (typeof value.model !== 'string') {
      throw { path: 'model', message: 'must be a string (the model to ask for)' };
    }
  },

  onRequest(ctx, request) {
    if (request.header('x-deny') !== undefined) {
      return {
        tag: 'deny',
        val: { status: 403, code: 'conformance_denied', message: 'denied by the JavaScript policy', headers: [] },
      };
    }
    const count = increment('count', 1n, undefined);
    ctx.setAttribute('conformance.count', count.toString());
    return {
      tag: 'continue',
      val: {
        setHeaders: [['x-conformance-lang', 'js']],
        removeHeaders: [],
        body: undefined,
        llm: [{ tag: 'set-model', val: config(ctx).model }],
        targets: [],
      },
    };
  },

  onResponse(ctx, _response) {
    return {
      tag: 'continue',
      val: {
        setHeaders: [['x-conformance-count', ctx.attribute('conformance.count') ?? '']],
        removeHeaders: [],
        body: undefined,
        llm: [],
        targets: [],
      },
    };
  },

  onStreamChunk(_ctx, event) {
    if (event.text === undefined) return { tag: 'pass' };
    return { tag: 'emit', val: [{ tag: 'text', val: event.text.toUpperCase() }] };
  },

  onStreamEnd(_ctx) {
    return { tag: 'pass' };
  },

  onComplete(_ctx, _done) {},
};
