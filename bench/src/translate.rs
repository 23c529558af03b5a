//! Part C: what provider translation costs per request, in-process: the OpenAI request of part B
//! to the native request, the native answer back to a `chat.completion`, and a 32-event native
//! stream decoded to OpenAI chunks. OpenAI-compatible providers pass bodies through untouched.

use std::time::Instant;

use bytes::Bytes;
use serde_json::json;
use weir_llm::ProviderKind;
use weir_llm::translate::{self, StreamDecoder, Target};

use crate::table::{Table, percentile, us_int};

#[derive(clap::Args, Debug, Clone)]
#[group(id = "translate-options")]
pub struct Options {
    /// Measured samples per dialect and step.
    #[arg(long, default_value_t = 20_000)]
    pub translate_iterations: usize,
}

fn native_answer(dialect: ProviderKind) -> Bytes {
    let text = "mock word ".repeat(32);
    let v = match dialect {
        ProviderKind::Anthropic => {
            json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 500, "output_tokens": 32}})
        }
        ProviderKind::Gemini => {
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 500, "candidatesTokenCount": 32, "totalTokenCount": 532}, "modelVersion": "m"})
        }
        _ => {
            json!({"output": {"message": {"role": "assistant", "content": [{"text": text}]}}, "stopReason": "end_turn",
            "usage": {"inputTokens": 500, "outputTokens": 32, "totalTokens": 532}})
        }
    };
    Bytes::from(v.to_string())
}

fn native_stream(dialect: ProviderKind) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..32 {
        let piece = format!(" mock{i}");
        match dialect {
            ProviderKind::Anthropic => out.extend_from_slice(
                format!("event: content_block_delta\ndata: {}\n\n", json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": piece}}))
                .as_bytes(),
            ),
            ProviderKind::Gemini => out.extend_from_slice(
                format!("data: {}\r\n\r\n", json!({"candidates": [{"content": {"role": "model", "parts": [{"text": piece}]}}]}))
                    .as_bytes(),
            ),
            _ => out.extend(weir_llm::eventstream::encode(
                &[(":event-type", "contentBlockDelta"), (":message-type", "event")],
                json!({"contentBlockIndex": 0, "delta": {"text": piece}}).to_string().as_bytes(),
            )),
        }
    }
    out
}

fn measure(iterations: usize, mut f: impl FnMut()) -> (u64, u64) {
    for _ in 0..iterations / 10 {
        f();
    }
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        f();
        samples.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    samples.sort_unstable();
    (percentile(&samples, 50.0), percentile(&samples, 99.0))
}

pub fn run(options: &Options) -> anyhow::Result<Table> {
    let body = crate::chat_body();
    let n = options.translate_iterations;
    let mut table = Table::new(
        "C. Provider translation per request (in-process)",
        &[
            "dialect",
            "request median µs",
            "answer median µs",
            "32-event stream median µs",
            "stream p99 µs",
        ],
        1,
    );
    for dialect in [
        ProviderKind::Anthropic,
        ProviderKind::Gemini,
        ProviderKind::AwsBedrock,
    ] {
        let check =
            translate::request(dialect, "chat/completions", Target::default(), &body, false);
        anyhow::ensure!(check.is_ok(), "{dialect:?}: {check:?}");
        let (req, _) = measure(n, || {
            let r =
                translate::request(dialect, "chat/completions", Target::default(), &body, false);
            std::hint::black_box(r.is_ok());
        });
        let answer = native_answer(dialect);
        anyhow::ensure!(
            translate::response(dialect, answer.clone(), 0, "m").is_ok(),
            "{dialect:?} answer"
        );
        let (resp, _) = measure(n, || {
            let r = translate::response(dialect, answer.clone(), 0, "m");
            std::hint::black_box(r.is_ok());
        });
        let stream = native_stream(dialect);
        let (s50, s99) = measure(n / 4, || {
            if let Some(mut d) = StreamDecoder::new(dialect, 0, "m") {
                std::hint::black_box(d.push(&stream).len());
            }
        });
        table.row(vec![
            dialect.name().to_owned(),
            us_int(req, 1),
            us_int(resp, 1),
            us_int(s50, 1),
            us_int(s99, 1),
        ]);
    }
    table.note(format!(
        "{n} samples per step ({} for streams) after 10 % warm-up; request = part B's ~2 KB body; `openai`, `azure-*` and `mistral` pass bodies through (no translation cost).",
        n / 4
    ));
    Ok(table)
}
