//! The policies of one request ([`Chain`]) and the phases the loop runs over them.
//!
//! A runner (wasmtime in `weir`, the composed components at the edge) only makes single policy
//! calls; the order of the phases, the edits, the answers, the targets and the stream pipeline
//! are decided here, once, so every target behaves the same.

use std::future::Future;

use bytes::Bytes;

use crate::types::*;

/// The policies of one request, in chain order (provider policies first, then the proxy's).
pub trait Chain {
    /// How many policies the chain has.
    fn len(&self) -> usize;

    /// Whether it has none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether policy `i` takes part in `phase`.
    fn wants(&self, i: usize, phase: Phase) -> bool;

    /// The name of policy `i` in denial metrics and logs (`demo/token-limit`).
    fn name(&self, i: usize) -> &str;

    /// on-request of policy `i`. The runner may take `message` while the policy reads it, but
    /// gives it back unchanged; the loop applies the verdict.
    fn on_request(
        &mut self,
        i: usize,
        message: &mut MessageView,
    ) -> impl Future<Output = Result<Verdict, PolicyFault>>;

    /// on-response of policy `i`.
    fn on_response(
        &mut self,
        i: usize,
        message: &mut MessageView,
    ) -> impl Future<Output = Result<Verdict, PolicyFault>>;

    /// on-stream-chunk of policy `i`, for one event.
    fn on_stream_chunk(
        &mut self,
        i: usize,
        event: &StreamEvent,
    ) -> impl Future<Output = Result<ChunkVerdict, PolicyFault>>;

    /// on-stream-end of policy `i`.
    fn on_stream_end(
        &mut self,
        i: usize,
    ) -> impl Future<Output = Result<ChunkVerdict, PolicyFault>>;

    /// on-complete of policy `i`.
    fn on_complete(
        &mut self,
        i: usize,
        info: &CompletionInfo,
    ) -> impl Future<Output = Result<(), PolicyFault>>;

    /// The request's LLM view changed (a policy edited it): the policies after it see this.
    fn set_llm(&mut self, llm: Option<&weir_llm::LlmRequestInfo>);

    /// The consumer set by an authentication policy.
    fn consumer(&self) -> Option<String>;

    /// A request attribute set by a policy.
    fn attribute(&self, key: &str) -> Option<String>;

    /// Whether any policy takes part in `phase`.
    fn has_phase(&self, phase: Phase) -> bool {
        (0..self.len()).any(|i| self.wants(i, phase))
    }
}

/// Why a message phase stopped before the end of the chain.
#[derive(Debug)]
pub enum Stop {
    /// Policy `policy` refused.
    Deny { policy: usize, denial: Denial },
    /// Policy `policy` sent an HTTP response of its own.
    Respond { policy: usize, reply: Reply },
    /// Policy `policy` answered from the gateway.
    Answer { policy: usize, answer: PolicyAnswer },
}

/// What the request phase leaves for the upstream call.
#[derive(Debug, Default)]
pub struct Admission {
    /// The LLM view after every edit (`None`: not an LLM request).
    pub llm: Option<weir_llm::LlmRequestInfo>,
    /// The targets the last policy that chose any chose, with its position.
    pub targets: Option<(usize, Vec<Target>)>,
}

fn fault(chain: &impl Chain, i: usize, phase: Phase, message: &str) -> PolicyFault {
    PolicyFault {
        code: "policy_invalid_edit",
        message: format!(
            "policy `{}` made an edit in {} that cannot be applied: {message}",
            chain.name(i),
            phase.function()
        ),
    }
}

/// Applies a policy's edits to a message; with LLM edits, or a new body on an LLM request,
/// recomputes the LLM view.
fn apply<C: Chain>(
    chain: &mut C,
    i: usize,
    phase: Phase,
    message: &mut MessageView,
    mut edits: Edits,
    llm: Option<&mut Option<weir_llm::LlmRequestInfo>>,
) -> Result<(), PolicyFault> {
    let new_body = edits.body.is_some();
    message.apply(&mut edits);
    // A request without an LLM view (`GET /v1/models`, MCP) has nothing for LLM edits to
    // change: they do not apply to it (so a policy that always sets a model does not break it).
    let llm_view = match &llm {
        Some(l) => l.is_some(),
        None => true,
    };
    if !edits.llm.is_empty() && llm_view {
        let body = weir_llm::view::apply_edits(&message.body, &edits.llm)
            .map_err(|e| fault(chain, i, phase, &e.to_string()))?;
        message.body = Bytes::from(body);
    }
    if let Some(llm) = llm
        && llm.is_some()
        && (new_body || !edits.llm.is_empty())
    {
        let info = weir_llm::inspect::chat_request(&message.body)
            .map_err(|e| fault(chain, i, phase, &e.to_string()))?;
        let was_stream = llm.as_ref().is_some_and(|l| l.stream);
        if info.stream != was_stream {
            return Err(fault(
                chain,
                i,
                phase,
                "`stream` belongs to the client and cannot be changed",
            ));
        }
        chain.set_llm(Some(&info));
        *llm = Some(info);
    }
    Ok(())
}

/// on-request in chain order. Each policy sees the edits of the ones before it.
pub async fn request_phase<C: Chain>(
    chain: &mut C,
    message: &mut MessageView,
    admission: &mut Admission,
) -> Result<Option<Stop>, PolicyFault> {
    for i in 0..chain.len() {
        if !chain.wants(i, Phase::Request) {
            continue;
        }
        match chain.on_request(i, message).await? {
            Verdict::Continue(mut edits) => {
                let targets = std::mem::take(&mut edits.targets);
                apply(
                    chain,
                    i,
                    Phase::Request,
                    message,
                    edits,
                    Some(&mut admission.llm),
                )?;
                if !targets.is_empty() {
                    admission.targets = Some((i, targets));
                }
            }
            Verdict::Deny(denial) => return Ok(Some(Stop::Deny { policy: i, denial })),
            Verdict::Respond(reply) => return Ok(Some(Stop::Respond { policy: i, reply })),
            Verdict::Answer(answer) => return Ok(Some(Stop::Answer { policy: i, answer })),
        }
    }
    Ok(None)
}

/// on-response in reverse chain order, over the policies before `limit` (all of them for an
/// upstream answer; those before the answering policy for a policy's answer).
pub async fn response_phase<C: Chain>(
    chain: &mut C,
    message: &mut MessageView,
    limit: usize,
) -> Result<Option<Stop>, PolicyFault> {
    for i in (0..limit.min(chain.len())).rev() {
        if !chain.wants(i, Phase::Response) {
            continue;
        }
        match chain.on_response(i, message).await? {
            Verdict::Continue(mut edits) => {
                edits.targets.clear();
                apply(chain, i, Phase::Response, message, edits, None)?;
            }
            Verdict::Deny(denial) => return Ok(Some(Stop::Deny { policy: i, denial })),
            Verdict::Respond(reply) => return Ok(Some(Stop::Respond { policy: i, reply })),
            Verdict::Answer(answer) => return Ok(Some(Stop::Answer { policy: i, answer })),
        }
    }
    Ok(None)
}

/// on-complete in reverse chain order; every policy runs even if one fails (failures are
/// returned for the log).
pub async fn complete_phase<C: Chain>(chain: &mut C, info: &CompletionInfo) -> Vec<PolicyFault> {
    let mut faults = Vec::new();
    for i in (0..chain.len()).rev() {
        if chain.wants(i, Phase::Complete)
            && let Err(e) = chain.on_complete(i, info).await
        {
            faults.push(e);
        }
    }
    faults
}
