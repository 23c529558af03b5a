//! Response bodies: a plain full body, a streamed chat completion (server-sent events produced
//! lazily as hyper polls, with `chunk_delay` between events) and a truncated body for `cut-after-N`.
//!
//! Billing happens inside the bodies, when hyper has taken the frame that carries the usage:
//! hyper only polls for the next frame after it has accepted the previous one for writing.

use crate::Shared;
use crate::protocol::{ChatParams, Usage, reply_piece};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::time::Sleep;

type FrameResult = Option<Result<Frame<Bytes>, io::Error>>;

/// The body of every response the mock sends.
#[derive(Debug)]
pub(crate) enum MockBody {
    /// A complete body; `None` once sent.
    Full(Option<Bytes>),
    /// A streamed chat completion.
    Chat(Box<ChatStream>),
    /// A body that announces its full length, sends a prefix and then fails.
    Truncated(Truncated),
    /// Prepared frames of a native stream.
    Frames(Box<crate::native::Frames>),
}

impl MockBody {
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full(Some(bytes.into()))
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<FrameResult> {
        match self.get_mut() {
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Chat(stream) => stream.poll_frame(cx),
            Self::Truncated(t) => t.poll_frame(cx),
            Self::Frames(f) => f.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Self::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(None) => SizeHint::with_exact(0),
            Self::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Self::Truncated(t) => SizeHint::with_exact(t.full_len),
            Self::Chat(_) | Self::Frames(_) => SizeHint::default(),
        }
    }
}

fn cut_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "weir-mock-upstream: injected cut-after fault",
    )
}

/// The next event of a chat stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Role,
    Word(u64),
    Finish,
    Usage,
    Done,
    End,
    /// Yield once (so hyper flushes what it has), then fail the body.
    Cut {
        flushed: bool,
    },
    Finished,
}

/// A streamed `chat.completion.chunk` sequence.
#[derive(Debug)]
pub(crate) struct ChatStream {
    /// `data: {"id":…,"model":…,"choices":` — shared by every chunk.
    prefix: String,
    /// `,"usage":null}\n\n` with `include_usage`, else `}\n\n`.
    suffix: &'static str,
    words: u64,
    echo: Option<std::sync::Arc<[String]>>,
    finish_reason: &'static str,
    include_usage: bool,
    usage: Usage,
    cut_after: Option<u64>,
    delay: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    next: Step,
    shared: Arc<Shared>,
}

impl ChatStream {
    pub(crate) fn new(
        params: &ChatParams<'_>,
        id: &str,
        created: u64,
        cut_after: Option<u64>,
        delay: Duration,
        shared: Arc<Shared>,
    ) -> Self {
        let model = serde_json::to_string(params.model).unwrap_or_else(|_| "\"\"".to_owned());
        let prefix = format!(
            "data: {{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"created\":{created},\"model\":{model},\
             \"system_fingerprint\":\"fp_mock\",\"choices\":"
        );
        Self {
            prefix,
            suffix: if params.include_usage {
                ",\"usage\":null}\n\n"
            } else {
                "}\n\n"
            },
            words: params.completion_tokens,
            echo: params.echo.clone(),
            finish_reason: params.finish_reason(),
            include_usage: params.include_usage,
            usage: params.usage(),
            cut_after,
            delay,
            sleep: None,
            next: Step::Role,
            shared,
        }
    }

    fn chunk(&self, delta: &str, finish_reason: Option<&str>) -> Bytes {
        let finish = finish_reason.map_or_else(|| "null".to_owned(), |r| format!("\"{r}\""));
        let mut s = String::with_capacity(self.prefix.len() + delta.len() + 80);
        s.push_str(&self.prefix);
        s.push_str("[{\"index\":0,\"delta\":");
        s.push_str(delta);
        s.push_str(",\"logprobs\":null,\"finish_reason\":");
        s.push_str(&finish);
        s.push_str("}]");
        s.push_str(self.suffix);
        Bytes::from(s)
    }

    /// The step after `sent` content chunks have gone out.
    fn after_words(&self, sent: u64) -> Step {
        match self.cut_after {
            Some(n) if sent >= n || sent >= self.words => Step::Cut { flushed: false },
            _ if sent < self.words => Step::Word(sent),
            _ => Step::Finish,
        }
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<FrameResult> {
        let step = self.next;
        if matches!(step, Step::Finished) {
            return Poll::Ready(None);
        }
        let delayed = !matches!(step, Step::Role | Step::End | Step::Cut { flushed: true });
        if delayed && !self.delay.is_zero() {
            let delay = self.delay;
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
            ready!(sleep.as_mut().poll(cx));
            self.sleep = None;
        }
        let data = match step {
            Step::Role => {
                self.next = self.after_words(0);
                self.chunk(
                    "{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}",
                    None,
                )
            }
            Step::Word(i) => {
                self.next = self.after_words(i + 1);
                let delta = match &self.echo {
                    Some(pieces) => format!(
                        "{{\"content\":{}}}",
                        serde_json::to_string(pieces.get(i as usize).map_or("", String::as_str))
                            .unwrap_or_default()
                    ),
                    None => format!("{{\"content\":\"{}\"}}", reply_piece(i)),
                };
                self.chunk(&delta, None)
            }
            Step::Finish => {
                self.next = if self.include_usage {
                    Step::Usage
                } else {
                    Step::Done
                };
                self.chunk("{}", Some(self.finish_reason))
            }
            Step::Usage => {
                self.next = Step::Done;
                let usage = serde_json::to_string(&self.usage).unwrap_or_default();
                let mut s = self.prefix.clone();
                s.push_str("[],\"usage\":");
                s.push_str(&usage);
                s.push_str("}\n\n");
                Bytes::from(s)
            }
            Step::Done => {
                if self.include_usage {
                    // hyper has taken the usage chunk: bill it.
                    self.shared
                        .prompt_tokens
                        .fetch_add(self.usage.prompt_tokens, Ordering::Relaxed);
                    self.shared
                        .completion_tokens
                        .fetch_add(self.usage.completion_tokens, Ordering::Relaxed);
                }
                self.next = Step::End;
                Bytes::from_static(b"data: [DONE]\n\n")
            }
            Step::End => {
                self.shared
                    .completed_streams
                    .fetch_add(1, Ordering::Relaxed);
                self.next = Step::Finished;
                return Poll::Ready(None);
            }
            Step::Cut { flushed: false } => {
                // Return Pending once so hyper flushes the chunks already taken before the abort.
                self.next = Step::Cut { flushed: true };
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Step::Cut { flushed: true } => {
                self.shared.cut_streams.fetch_add(1, Ordering::Relaxed);
                self.next = Step::Finished;
                return Poll::Ready(Some(Err(cut_error())));
            }
            Step::Finished => return Poll::Ready(None),
        };
        Poll::Ready(Some(Ok(Frame::data(data))))
    }
}

/// A non-streamed body cut in the middle: announces `full_len`, sends `head`, then fails.
#[derive(Debug)]
pub(crate) struct Truncated {
    head: Option<Bytes>,
    full_len: u64,
    flushed: bool,
    done: bool,
    shared: Arc<Shared>,
}

impl Truncated {
    /// Sends the first half of `full`.
    pub(crate) fn new(full: &Bytes, shared: Arc<Shared>) -> Self {
        Self {
            head: Some(full.slice(..full.len() / 2)),
            full_len: full.len() as u64,
            flushed: false,
            done: false,
            shared,
        }
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<FrameResult> {
        if let Some(head) = self.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        if !self.flushed {
            self.flushed = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.done = true;
        self.shared.cut_streams.fetch_add(1, Ordering::Relaxed);
        Poll::Ready(Some(Err(cut_error())))
    }
}
