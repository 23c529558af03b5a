"""A weir:policy@0.2.0 policy in Python (built with componentize-py): the conformance policy of
tests/python/test_languages.py, with the same behaviour as the JavaScript one
(tests/policies/js/policy.js):

- on-request: refuses with 403 `conformance_denied` when the request has `x-deny`; otherwise
  counts the request in kv (`count`), keeps the count in an attribute, asks for the model of its
  configuration (`model`) and adds `x-conformance-lang` to the upstream request;
- on-response: reports the count in `x-conformance-count`;
- on-stream-chunk: upper-cases the text of every event.
"""

import json

from wit_world import exports
from wit_world.imports import kv
from wit_world.imports.types import (
    ChunkVerdict_Emit,
    ChunkVerdict_Pass,
    ConfigError,
    Denial,
    Edits,
    Emission_Text,
    LlmEdit_SetModel,
    Phase,
    PolicyInfo,
    Verdict_Continue,
    Verdict_Deny,
)
from componentize_py_types import Err


class Policy(exports.Policy):
    def describe(self) -> PolicyInfo:
        return PolicyInfo("conformance-py", "0.1.0", [Phase.REQUEST, Phase.RESPONSE, Phase.STREAM_CHUNK])

    def validate_config(self, config: str) -> None:
        try:
            value = json.loads(config)
        except ValueError as e:
            raise Err(ConfigError("", f"not JSON: {e}"))
        if not isinstance(value.get("model"), str):
            raise Err(ConfigError("model", "must be a string (the model to ask for)"))

    def on_request(self, ctx, request):
        if request.header("x-deny") is not None:
            return Verdict_Deny(Denial(403, "conformance_denied", "denied by the Python policy", []))
        count = kv.increment("count", 1, None)
        ctx.set_attribute("conformance.count", str(count))
        model = json.loads(ctx.config())["model"]
        return Verdict_Continue(Edits([("x-conformance-lang", "py")], [], None, [LlmEdit_SetModel(model)], []))

    def on_response(self, ctx, response):
        count = ctx.attribute("conformance.count") or ""
        return Verdict_Continue(Edits([("x-conformance-count", count)], [], None, [], []))

    def on_stream_chunk(self, ctx, event):
        if event.text is None:
            return ChunkVerdict_Pass()
        return ChunkVerdict_Emit([Emission_Text(event.text.upper())])

    def on_stream_end(self, ctx):
        return ChunkVerdict_Pass()

    def on_complete(self, ctx, done) -> None:
        pass
