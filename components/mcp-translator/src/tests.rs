//! Unit tests of the translator: OpenAPI operations to MCP tools, tool calls to HTTP requests.

#![allow(clippy::unwrap_used)]

use super::*;

fn op(method: &str, path: &str, params: &[(&str, In)], body: bool) -> Operation {
    Operation {
        name: "t".into(),
        description: String::new(),
        method: method.into(),
        path: path.into(),
        params: params
            .iter()
            .map(|(n, l)| openapi::Param {
                name: (*n).into(),
                location: *l,
            })
            .collect(),
        body,
        input_schema: json!({"type": "object"}),
    }
}

#[test]
fn arguments_fill_the_path_query_headers_and_body() {
    let o = op(
        "POST",
        "/pets/{petId}/visits",
        &[
            ("petId", In::Path),
            ("notify", In::Query),
            ("x-trace", In::Header),
        ],
        true,
    );
    let r = rest_request(
        &o,
        Some("http://api.test/v1/"),
        &json!({"petId": "a b/c", "notify": [true, false], "x-trace": "t1", "body": {"vet": "Ann"}}),
    );
    assert_eq!(
        r.url,
        "http://api.test/v1/pets/a%20b%2Fc/visits?notify=true&notify=false"
    );
    assert!(r.headers.contains(&("x-trace".into(), "t1".into())));
    assert!(
        r.headers
            .contains(&("content-type".into(), "application/json".into()))
    );
    assert_eq!(r.body.unwrap(), br#"{"vet":"Ann"}"#);
}

#[test]
fn declared_tools_put_other_arguments_in_the_query_or_body() {
    let get = op(
        "GET",
        "https://other.test/orders/{id}",
        &[("id", In::Path)],
        false,
    );
    let r = rest_request(&get, None, &json!({"id": 7, "expand": "items"}));
    assert_eq!(r.url, "https://other.test/orders/7?expand=items");
    assert_eq!(r.body, None);
    let post = op("POST", "/orders", &[], false);
    let r = rest_request(&post, Some("http://api.test"), &json!({"qty": 2}));
    assert_eq!(r.url, "http://api.test/orders");
    assert_eq!(r.body.unwrap(), br#"{"qty":2}"#);
}

#[test]
fn answers_become_results_and_errors_tool_errors() {
    let ok = call_result(200, Some("application/json"), br#"{"id":1}"#);
    assert_eq!(ok["structuredContent"], json!({"id": 1}));
    assert_eq!(ok["isError"], false);
    let list = call_result(200, Some("application/json; charset=utf-8"), b"[1,2]");
    assert_eq!(list["structuredContent"], json!({"result": [1, 2]}));
    let text = call_result(200, Some("text/plain"), b"hello");
    assert!(text.get("structuredContent").is_none());
    assert_eq!(text["content"][0]["text"], "hello");
    let missing = call_result(404, Some("application/json"), br#"{"error":"no pet 9"}"#);
    assert_eq!(missing["isError"], true);
    let said = missing["content"][0]["text"].as_str().unwrap();
    assert!(said.contains("404") && said.contains("no pet 9"), "{said}");
    let empty = call_result(204, None, b"");
    assert_eq!(empty["isError"], false);
}

#[test]
fn declared_tools_are_checked() {
    let config: Config = serde_json::from_value(json!({
        "base-url": "http://api.test",
        "endpoints": [{"name": "get order", "method": "GET", "url": "/orders/{id}"}]
    }))
    .unwrap();
    let e = config.declared().unwrap_err();
    assert_eq!(e.path, "endpoints[0].name");
    assert!(e.message.contains("get_order"), "{e:?}");
    let config: Config = serde_json::from_value(json!({
        "base-url": "http://api.test",
        "endpoints": [{"name": "get_order", "method": "GET", "url": "/orders/{id}"}]
    }))
    .unwrap();
    let e = config.declared().unwrap_err();
    assert_eq!(e.path, "endpoints[0].input-schema");
    let config: Config = serde_json::from_value(json!({
        "endpoints": [{"name": "get_order", "method": "FETCH", "url": "https://x.test/"}]
    }))
    .unwrap();
    assert_eq!(config.declared().unwrap_err().path, "endpoints[0].method");
}
