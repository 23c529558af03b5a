//! Conversions between the gateway's WIT bindings and weir-core's types.

use weir_core as core;
use weir_llm::view;

use crate::bindings::weir::policy::types as g;

pub(crate) fn llm_request(l: &weir_llm::LlmRequestInfo) -> g::LlmRequest {
    g::LlmRequest {
        model: l.model.clone(),
        max_tokens: l.max_tokens,
        stream: l.stream,
        estimated_prompt_tokens: l.estimated_prompt_tokens,
        tools: l.tools.clone(),
        message_count: l.message_count,
    }
}

fn chat_message(m: g::ChatMessage) -> view::ChatMessage {
    view::ChatMessage {
        role: m.role,
        content: m
            .content
            .into_iter()
            .map(|p| match p {
                g::ContentPart::Text(t) => view::ContentPart::Text(t),
                g::ContentPart::Other(o) => view::ContentPart::Other(o),
            })
            .collect(),
        extra: m.extra,
    }
}

fn messages(ms: Vec<g::ChatMessage>) -> Vec<view::ChatMessage> {
    ms.into_iter().map(chat_message).collect()
}

fn llm_edit(e: g::LlmEdit) -> view::LlmEdit {
    match e {
        g::LlmEdit::SetModel(m) => view::LlmEdit::SetModel(m),
        g::LlmEdit::SetMaxTokens(n) => view::LlmEdit::SetMaxTokens(n),
        g::LlmEdit::SetMessages(ms) => view::LlmEdit::SetMessages(messages(ms)),
        g::LlmEdit::PrependMessages(ms) => view::LlmEdit::PrependMessages(messages(ms)),
        g::LlmEdit::AppendMessages(ms) => view::LlmEdit::AppendMessages(messages(ms)),
        g::LlmEdit::ReplaceMessage(m) => view::LlmEdit::ReplaceMessage {
            index: m.index,
            message: chat_message(m.message),
        },
        g::LlmEdit::RemoveMessage(i) => view::LlmEdit::RemoveMessage(i),
        g::LlmEdit::SetParameter(p) => view::LlmEdit::SetParameter {
            name: p.name,
            value: p.value,
        },
        g::LlmEdit::SetAnswerText(a) => view::LlmEdit::SetAnswerText {
            choice: a.choice,
            text: a.text,
        },
    }
}

fn denial(d: g::Denial) -> core::Denial {
    core::Denial {
        status: d.status,
        code: d.code,
        message: d.message,
        headers: d.headers,
    }
}

pub(crate) fn verdict(v: g::Verdict) -> core::Verdict {
    match v {
        g::Verdict::Continue(e) => core::Verdict::Continue(core::Edits {
            set_headers: e.set_headers,
            remove_headers: e.remove_headers,
            body: e.body,
            llm: e.llm.into_iter().map(llm_edit).collect(),
            targets: e
                .targets
                .into_iter()
                .map(|t| core::Target {
                    provider: t.provider,
                    model: t.model,
                })
                .collect(),
        }),
        g::Verdict::Deny(d) => core::Verdict::Deny(denial(d)),
        g::Verdict::Respond(r) => core::Verdict::Respond(core::Reply {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }),
        g::Verdict::Answer(a) => core::Verdict::Answer(core::PolicyAnswer {
            completion: a.completion,
            headers: a.headers,
        }),
    }
}

pub(crate) fn chunk_verdict(v: g::ChunkVerdict) -> core::ChunkVerdict {
    match v {
        g::ChunkVerdict::Pass => core::ChunkVerdict::Pass,
        g::ChunkVerdict::Emit(es) => core::ChunkVerdict::Emit(
            es.into_iter()
                .map(|e| match e {
                    g::Emission::Text(t) => core::Emission::Text(t),
                    g::Emission::Data(d) => core::Emission::Data(d),
                })
                .collect(),
        ),
        g::ChunkVerdict::Abort(d) => core::ChunkVerdict::Abort(denial(d)),
    }
}

pub(crate) fn stream_event(e: &core::StreamEvent) -> g::StreamEvent {
    g::StreamEvent {
        index: e.index,
        data: e.data.clone(),
        text: e.text.clone(),
        finish_reason: e.finish_reason.clone(),
    }
}

pub(crate) fn completion(c: &core::CompletionInfo) -> g::Completion {
    g::Completion {
        status: c.status,
        outcome: match c.outcome {
            core::Outcome::Success => g::Outcome::Success,
            core::Outcome::UpstreamError => g::Outcome::UpstreamError,
            core::Outcome::Denied => g::Outcome::Denied,
            core::Outcome::Answered => g::Outcome::Answered,
            core::Outcome::ClientCancelled => g::Outcome::ClientCancelled,
            core::Outcome::GatewayError => g::Outcome::GatewayError,
        },
        error: c.error.map(str::to_owned),
        model: c.model.clone(),
        usage: c.usage.map(|u| g::Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
            cached_prompt_tokens: u.cached_prompt_tokens,
        }),
        latency_ms: c.latency_ms,
        attempts: c
            .attempts
            .iter()
            .map(|a| g::Attempt {
                provider: a.provider.clone(),
                model: a.model.clone(),
                status: a.status,
                error: a.error.map(str::to_owned),
                latency_ms: a.latency_ms,
                billed: a.billed,
            })
            .collect(),
    }
}
