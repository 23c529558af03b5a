//! The `classifier` rule: a moderation or guard endpoint called through the host's `http-client`.

use weir_policy_sdk::http_client;

use crate::{ClassifierFormat, Fired, Rule};

pub(crate) fn classify(rule: &Rule, text: &str) -> Result<Option<Fired>, String> {
    let url = rule.url.clone().unwrap_or_default();
    let mut body = serde_json::json!({ "input": text });
    if let Some(model) = &rule.model {
        body["model"] = serde_json::Value::String(model.clone());
    }
    let mut headers: Vec<(String, String)> =
        vec![("content-type".into(), "application/json".into())];
    headers.extend(
        rule.headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone())),
    );
    let response = http_client::send(&http_client::OutgoingRequest {
        method: "POST".into(),
        url,
        headers,
        body: Some(body.to_string().into_bytes()),
        timeout_ms: rule.timeout_ms.unwrap_or(2000),
    })
    .map_err(|e| match e {
        http_client::HttpError::Denied(m) => format!("the gateway does not let this policy reach the classifier ({m}): add its host to the entry's `allow-hosts`"),
        http_client::HttpError::Timeout => "the classifier did not answer in time".into(),
        http_client::HttpError::Failed(m) => format!("the classifier could not be reached: {m}"),
    })?;
    if !(200..300).contains(&response.status) {
        return Err(format!("the classifier answered HTTP {}", response.status));
    }
    let doc: serde_json::Value = serde_json::from_slice(&response.body)
        .map_err(|_| "the classifier's answer is not JSON".to_owned())?;
    match rule.format {
        ClassifierFormat::OpenaiModeration => {
            let result = doc
                .pointer("/results/0")
                .ok_or("the classifier's answer has no `results[0]` (OpenAI moderation format)")?;
            let scores = result.get("category_scores").and_then(|s| s.as_object());
            let categories = result.get("categories").and_then(|s| s.as_object());
            let mut hits: Vec<String> = Vec::new();
            match (&rule.categories, rule.threshold) {
                (wanted, Some(t)) => {
                    for (name, score) in scores.into_iter().flatten() {
                        let counted = wanted.as_ref().is_none_or(|w| w.iter().any(|c| c == name));
                        if counted && score.as_f64().is_some_and(|s| s >= t) {
                            hits.push(name.clone());
                        }
                    }
                }
                (Some(wanted), None) => {
                    for (name, on) in categories.into_iter().flatten() {
                        if on.as_bool() == Some(true) && wanted.iter().any(|c| c == name) {
                            hits.push(name.clone());
                        }
                    }
                }
                (None, None) => {
                    if result.get("flagged").and_then(serde_json::Value::as_bool) == Some(true) {
                        for (name, on) in categories.into_iter().flatten() {
                            if on.as_bool() == Some(true) {
                                hits.push(name.clone());
                            }
                        }
                        if hits.is_empty() {
                            hits.push("flagged".into());
                        }
                    }
                }
            }
            // Category names come from the endpoint: keep only plain ones in messages.
            hits.retain(|h| {
                h.len() <= 64
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"/_-.".contains(&b))
            });
            Ok((!hits.is_empty()).then(|| Fired {
                reason: format!("the moderation endpoint flagged it ({})", hits.join(", ")),
            }))
        }
        ClassifierFormat::JsonPointer => {
            let pointer = rule.flagged_at.as_deref().unwrap_or("/flagged");
            match doc.pointer(pointer) {
                Some(serde_json::Value::Bool(flagged)) => Ok(flagged.then(|| Fired {
                    reason: "the classifier flagged it".into(),
                })),
                _ => Err(format!(
                    "the classifier's answer has no boolean at `{pointer}`"
                )),
            }
        }
    }
}
