//! MCP routes: JSON-RPC through the chain, refusals as JSON-RPC errors, no client credentials
//! upstream.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;
use serde_json::json;
use weir_core::*;

use crate::fakes::*;

mod eras;

fn mcp_route() -> RouteInfo {
    let mut r = route();
    r.name = "tools".into();
    r.kind = RouteKind::Mcp;
    r.mcp = Some(McpServer {
        url: "http://mcp.test/mcp".into(),
        timeout_ms: 1000,
        tools: Vec::new(),
        credential: None,
        allowed_origins: Vec::new(),
        oauth: None,
        prefix: "/mcp".into(),
        members: Vec::new(),
        prefixed: true,
        fail_open: true,
    });
    r
}

/// The gateway session the test requests carry: alice's (the fake chain's consumer), mapped to
/// the server's session `s1`.
const SESSION: &str = "0123456789abcdef0123456789abcdef";

fn seed_session(platform: &FakePlatform, route: &str, sid: &str, consumer: &str) {
    let session = weir_core::mcp_sessions::Session {
        upstream: "s1".into(),
        consumer: Some(consumer.into()),
        touched_ms: u64::MAX / 2,
    };
    platform.0.borrow_mut().state.insert(
        weir_core::mcp_sessions::key(route, sid),
        serde_json::to_vec(&session).unwrap(),
    );
}

fn rpc(body: serde_json::Value) -> ClientRequest {
    ClientRequest {
        method: "POST".into(),
        path: "/mcp".into(),
        headers: vec![
            ("authorization".into(), "Bearer client-token".into()),
            ("mcp-session-id".into(), SESSION.into()),
            ("mcp-protocol-version".into(), "2025-06-18".into()),
            (
                "accept".into(),
                "application/json, text/event-stream".into(),
            ),
        ],
        body: Bytes::from(serde_json::to_vec(&body).unwrap()),
    }
}

fn serve_mcp(request: ClientRequest, replies: Vec<Up>, policies: Vec<FakePolicy>) -> Served {
    serve_on(&mcp_route(), request, replies, policies)
}

fn serve_on(
    route: &RouteInfo,
    request: ClientRequest,
    replies: Vec<Up>,
    policies: Vec<FakePolicy>,
) -> Served {
    let platform = FakePlatform::with(replies);
    seed_session(&platform, &route.name, SESSION, "alice");
    let log = Rc::new(RefCell::new(ChainLog::default()));
    let chain_log = log.clone();
    let answer = run(weir_core::mcp::serve(
        platform.clone(),
        route,
        request,
        "req_test".into(),
        0,
        move |state| {
            chain_log.borrow_mut().initial = Some(state);
            FakeChain {
                policies,
                log: chain_log,
            }
        },
    ));
    finish(answer, Drive::default(), platform, log)
}

fn call_tool(name: &str) -> ClientRequest {
    rpc(
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": name, "arguments": {"a": 1}}}),
    )
}

#[test]
fn the_rpc_view_reads_calls_batches_and_responses() {
    let m = mcp::rpc_messages(br#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"add","arguments":{"a":1}}}"#);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].id.as_deref(), Some("\"x\""));
    assert_eq!(m[0].tool_name.as_deref(), Some("add"));
    assert_eq!(m[0].tool_arguments.as_deref(), Some("{\"a\":1}"));
    let b = mcp::rpc_messages(br#"[{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no"}}]"#);
    assert_eq!(b.len(), 2);
    assert_eq!(b[0].id, None);
    assert_eq!(b[1].error.as_ref().map(|e| e.code), Some(-32601));
    let sse = mcp::rpc_messages(b"event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\r\n\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"tools\":[]}}\n\n");
    assert_eq!(sse.len(), 2, "an event stream's messages: {sse:?}");
    assert_eq!(sse[1].result.as_deref(), Some("{\"tools\":[]}"));
    assert!(mcp::rpc_messages(b"{\"id\":1}").is_empty());
    assert!(mcp::rpc_messages(b"nope").is_empty());
}

#[test]
fn a_method_filter_denial_is_a_json_rpc_error_with_the_id() {
    let out = serve_mcp(
        call_tool("delete_everything"),
        vec![],
        vec![FakePolicy::new("filter").request(|m| {
            let calls = mcp::rpc_messages(&m.body);
            Ok(match calls[0].tool_name.as_deref() {
                Some("delete_everything") => deny(403, "tool_not_allowed"),
                _ => proceed(),
            })
        })],
    );
    assert_eq!(
        out.status, 200,
        "a refused tool is a JSON-RPC error, not an HTTP one"
    );
    let body = out.json();
    assert_eq!(body["jsonrpc"], "2.0");
    assert_eq!(body["error"]["data"]["status"], 403);
    assert_eq!(body["id"], 7);
    assert_eq!(body["error"]["code"], -32000);
    assert_eq!(body["error"]["data"]["code"], "tool_not_allowed");
    assert_eq!(body["error"]["data"]["request_id"], "req_test");
    let r = out.record();
    assert_eq!((r.outcome, r.endpoint.as_str()), ("denied", "tools/call"));
    assert_eq!(
        out.log.borrow().initial.as_ref().unwrap().route_kind,
        RouteKind::Mcp
    );
    assert!(out.platform.sent().is_empty());
}

#[test]
fn an_allowed_call_is_forwarded_without_client_credentials() {
    let out = serve_mcp(
        call_tool("add"),
        vec![Up::json(
            200,
            json!({"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": "2"}]}}),
        )],
        vec![
            FakePolicy::new("filter")
                .request(|_| Ok(proceed()))
                .response(|m| {
                    assert_eq!(
                        mcp::rpc_messages(&m.body)[0]
                            .result
                            .as_deref()
                            .map(|r| r.contains("\"2\"")),
                        Some(true)
                    );
                    Ok(proceed())
                }),
        ],
    );
    assert_eq!(out.status, 200);
    assert_eq!(out.json()["result"]["content"][0]["text"], "2");
    let sent = &out.platform.sent()[0];
    assert_eq!(sent.url, "http://mcp.test/mcp");
    assert!(!sent.headers.iter().any(|(n, _)| n == "authorization"));
    assert!(
        sent.headers
            .iter()
            .any(|(n, v)| n == "mcp-session-id" && v == "s1")
    );
    assert_eq!(out.record().outcome, "success");
}

#[test]
fn server_streams_are_relayed_and_failures_are_json_rpc_errors() {
    let out = serve_mcp(
        call_tool("add"),
        vec![Up::sse(&[r#"{"jsonrpc":"2.0","id":7,"result":{}}"#])],
        vec![],
    );
    assert!(out.text().contains("\"result\":{}"));
    assert_eq!(out.record().outcome, "success");

    let out = serve_mcp(call_tool("add"), vec![Up::Unreachable], vec![]);
    assert_eq!(out.status, 502);
    assert_eq!(out.json()["id"], 7);
    assert_eq!(out.json()["error"]["data"]["code"], "upstream_unavailable");
    assert_eq!(out.record().error, Some("upstream_unavailable"));

    let mut bad = call_tool("add");
    bad.body = Bytes::from_static(b"{oops");
    let out = serve_mcp(bad, vec![], vec![]);
    assert_eq!(out.status, 400);
    assert_eq!(out.json()["error"]["code"], -32700);
    assert!(out.platform.usage().is_empty());

    let mut put = call_tool("add");
    put.method = "PUT".into();
    let out = serve_mcp(put, vec![], vec![]);
    assert_eq!(out.status, 405);
    assert_eq!(out.json()["jsonrpc"], "2.0");
}

#[test]
fn the_initialize_eras_get_stream_and_delete_are_relayed_through_the_chain() {
    let mut get = call_tool("add");
    get.method = "GET".into();
    get.body = Bytes::new();
    let out = serve_mcp(
        get,
        vec![Up::sse(&[
            r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#,
        ])],
        vec![FakePolicy::new("auth").request(|m| {
            assert_eq!(m.method, "GET");
            Ok(proceed())
        })],
    );
    assert_eq!(out.status, 200);
    assert!(out.text().contains("list_changed"));
    let sent = &out.platform.sent()[0];
    assert_eq!(sent.method, "GET");
    assert!(sent.body.is_empty());
    assert!(
        sent.headers
            .iter()
            .any(|(n, v)| n == "mcp-session-id" && v == "s1")
    );
    assert!(!sent.headers.iter().any(|(n, _)| n == "authorization"));
    assert_eq!(out.record().endpoint, "GET");

    let mut delete = call_tool("add");
    delete.method = "DELETE".into();
    let out = serve_mcp(delete, vec![Up::json(200, json!({}))], vec![]);
    assert_eq!(out.status, 200);
    assert_eq!(out.platform.sent()[0].method, "DELETE");

    // Refused by the chain: the server never sees it.
    let mut get = call_tool("add");
    get.method = "GET".into();
    let out = serve_mcp(
        get,
        vec![],
        vec![FakePolicy::new("auth").request(|_| Ok(deny(401, "invalid_api_key")))],
    );
    assert_eq!(out.status, 401);
    assert!(out.platform.sent().is_empty());
}

/// `add` for alice (the fake chain's consumer), `secret_*` for admins only.
fn guarded_route() -> RouteInfo {
    let rule = |name: &str, allow: &[&str]| mcp_tools::ToolRule {
        name: name.into(),
        allow: allow.iter().map(|s| (*s).to_owned()).collect(),
        deny: Vec::new(),
    };
    let mut r = mcp_route();
    if let Some(m) = r.mcp.as_mut() {
        m.tools = vec![rule("add", &["alice"]), rule("secret_*", &["admin-*"])];
    }
    r
}

#[test]
fn a_tool_the_consumer_may_not_use_is_refused_before_the_server_sees_it() {
    let out = serve_on(&guarded_route(), call_tool("secret_keys"), vec![], vec![]);
    assert_eq!(out.status, 200, "a JSON-RPC error, not an HTTP one");
    let body = out.json();
    assert_eq!(body["id"], 7);
    assert_eq!(body["error"]["data"]["code"], "tool_not_allowed");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("secret_keys"))
    );
    assert!(out.platform.sent().is_empty());
    let r = out.record();
    assert_eq!(r.outcome, "denied");
    assert_eq!(r.tool.as_deref(), Some("secret_keys"));

    let out = serve_on(
        &guarded_route(),
        call_tool("add"),
        vec![Up::json(
            200,
            json!({"jsonrpc": "2.0", "id": 7, "result": {}}),
        )],
        vec![],
    );
    assert_eq!(out.platform.sent().len(), 1);
    assert_eq!(out.record().outcome, "success");
    assert_eq!(out.record().tool.as_deref(), Some("add"));
}

#[test]
fn tool_lists_lose_what_the_consumer_may_not_use_json_or_stream() {
    let list = rpc(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}));
    let answer = json!({"jsonrpc": "2.0", "id": 2, "result": {"tools": [
        {"name": "add", "inputSchema": {"type": "object"}},
        {"name": "secret_keys", "inputSchema": {"type": "object"}},
        {"name": "echo", "inputSchema": {"type": "object"}},
    ]}});
    let names = |v: &serde_json::Value| -> Vec<String> {
        v["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let seen = std::rc::Rc::new(RefCell::new(Vec::new()));
    let saw = seen.clone();
    let out = serve_on(
        &guarded_route(),
        list.clone(),
        vec![Up::json(200, answer.clone())],
        vec![FakePolicy::new("watch").response(move |m| {
            saw.borrow_mut()
                .push(serde_json::from_slice::<serde_json::Value>(&m.body).unwrap());
            Ok(proceed())
        })],
    );
    assert_eq!(names(&out.json()), ["add", "echo"]);
    // Policies see the list the client gets.
    assert_eq!(names(&seen.borrow()[0]), ["add", "echo"]);

    let text = serde_json::to_string(&answer).unwrap();
    let out = serve_on(
        &guarded_route(),
        list.clone(),
        vec![Up::sse(&[&text])],
        vec![],
    );
    assert_eq!(out.status, 200);
    let data = out
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("data: ").map(str::to_owned))
        .unwrap();
    assert_eq!(
        names(&serde_json::from_str(&data).unwrap()),
        ["add", "echo"]
    );

    // Without rules the list passes as it came.
    let out = serve_mcp(list, vec![Up::json(200, answer)], vec![]);
    assert_eq!(names(&out.json()), ["add", "secret_keys", "echo"]);
}

#[test]
fn the_server_gets_the_proxys_credential_never_the_clients() {
    let mut route = mcp_route();
    if let Some(m) = route.mcp.as_mut() {
        m.credential = Some(McpCredential {
            header: "authorization".into(),
            key: Some(Secret::new("server-token".into())),
            missing_env: None,
        });
    }
    let out = serve_on(
        &route,
        call_tool("add"),
        vec![Up::json(
            200,
            json!({"jsonrpc": "2.0", "id": 7, "result": {}}),
        )],
        vec![],
    );
    let sent = &out.platform.sent()[0];
    let auth: Vec<&str> = sent
        .headers
        .iter()
        .filter(|(n, _)| n == "authorization")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(auth, ["Bearer server-token"]);

    if let Some(m) = route.mcp.as_mut() {
        m.credential = Some(McpCredential {
            header: "x-api-key".into(),
            key: Some(Secret::new("k2".into())),
            missing_env: None,
        });
    }
    let out = serve_on(
        &route,
        call_tool("add"),
        vec![Up::json(
            200,
            json!({"jsonrpc": "2.0", "id": 7, "result": {}}),
        )],
        vec![],
    );
    let sent = &out.platform.sent()[0];
    assert!(
        sent.headers
            .iter()
            .any(|(n, v)| n == "x-api-key" && v == "k2")
    );
    assert!(!sent.headers.iter().any(|(n, _)| n == "authorization"));

    if let Some(m) = route.mcp.as_mut() {
        m.credential = Some(McpCredential {
            header: "authorization".into(),
            key: None,
            missing_env: Some("TOOLS_TOKEN".into()),
        });
    }
    let out = serve_on(&route, call_tool("add"), vec![], vec![]);
    assert_eq!(out.status, 503);
    assert_eq!(
        out.json()["error"]["data"]["code"],
        "mcp_server_not_configured"
    );
    assert!(out.text().contains("TOOLS_TOKEN"));
    assert!(out.platform.sent().is_empty());
}

#[test]
fn browsers_from_other_origins_are_refused() {
    let with = |origin: &str, host: &str| {
        let mut r = call_tool("add");
        r.headers.push(("origin".into(), origin.into()));
        r.headers.push(("host".into(), host.into()));
        r
    };
    let ok = || {
        vec![Up::json(
            200,
            json!({"jsonrpc": "2.0", "id": 7, "result": {}}),
        )]
    };
    let out = serve_mcp(
        with("http://evil.example", "gw.example:8080"),
        vec![],
        vec![],
    );
    assert_eq!(out.status, 403);
    assert_eq!(out.json()["error"]["data"]["code"], "origin_not_allowed");
    assert!(out.platform.sent().is_empty());
    // Its own origin, and no origin at all (not a browser).
    let out = serve_mcp(
        with("https://gw.example:8080", "gw.example:8080"),
        ok(),
        vec![],
    );
    assert_eq!(out.status, 200);
    let out = serve_mcp(call_tool("add"), ok(), vec![]);
    assert_eq!(out.status, 200);
    // Listed origins.
    let mut route = mcp_route();
    if let Some(m) = route.mcp.as_mut() {
        m.allowed_origins = vec!["https://*.example.com".into()];
    }
    let out = serve_on(&route, with("https://app.example.com", "gw"), ok(), vec![]);
    assert_eq!(out.status, 200);
    let out = serve_on(&route, with("https://example.org", "gw"), vec![], vec![]);
    assert_eq!(out.status, 403);
}

#[test]
fn oauth_clients_get_protected_resource_metadata_and_a_pointer_to_it() {
    let oauth = mcp::McpOAuth {
        authorization_servers: vec!["https://auth.example.com".into()],
        scopes_supported: vec!["tools.read".into()],
        resource: None,
    };
    let get = |path: &str, host: &str| ClientRequest {
        method: "GET".into(),
        path: path.into(),
        headers: vec![("host".into(), host.into())],
        body: Bytes::new(),
    };
    let proxies = || std::iter::once(("/mcp", &oauth));
    let out = mcp::metadata(
        proxies(),
        &get("/.well-known/oauth-protected-resource/mcp", "gw.example"),
        "r",
    )
    .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(body["resource"], "https://gw.example/mcp");
    assert_eq!(body["authorization_servers"][0], "https://auth.example.com");
    assert_eq!(body["scopes_supported"][0], "tools.read");
    let local = mcp::metadata(
        proxies(),
        &get(
            "/.well-known/oauth-protected-resource/mcp",
            "127.0.0.1:8080",
        ),
        "r",
    )
    .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&local.body).unwrap();
    assert_eq!(body["resource"], "http://127.0.0.1:8080/mcp");
    assert!(
        mcp::metadata(
            proxies(),
            &get("/.well-known/oauth-protected-resource/other", "gw"),
            "r"
        )
        .is_none()
    );

    let mut route = mcp_route();
    if let Some(m) = route.mcp.as_mut() {
        m.oauth = Some(oauth.clone());
    }
    let mut call = call_tool("add");
    call.headers.push(("host".into(), "gw.example".into()));
    let out = serve_on(
        &route,
        call,
        vec![],
        vec![FakePolicy::new("auth").request(|_| {
            Ok(Verdict::Deny(Denial {
                status: 401,
                code: "invalid_token".into(),
                message: "no".into(),
                headers: vec![(
                    "www-authenticate".into(),
                    "Bearer error=\"invalid_token\"".into(),
                )],
            }))
        })],
    );
    assert_eq!(out.status, 401);
    let challenge: Vec<&str> = out
        .headers
        .iter()
        .filter(|(n, _)| n == "www-authenticate")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        challenge,
        [
            "Bearer resource_metadata=\"https://gw.example/.well-known/oauth-protected-resource/mcp\", error=\"invalid_token\""
        ]
    );
}

#[test]
fn routing_headers_that_contradict_the_body_are_refused() {
    let with = |pairs: &[(&str, &str)]| {
        let mut r = call_tool("add");
        for (n, v) in pairs {
            r.headers.push(((*n).into(), (*v).into()));
        }
        r
    };
    let ok = || {
        vec![Up::json(
            200,
            json!({"jsonrpc": "2.0", "id": 7, "result": {}}),
        )]
    };
    let out = serve_mcp(with(&[("mcp-method", "tools/list")]), vec![], vec![]);
    assert_eq!(out.status, 400);
    assert_eq!(out.json()["error"]["code"], -32020);
    assert_eq!(out.json()["id"], 7);
    assert!(out.platform.sent().is_empty());
    let out = serve_mcp(
        with(&[
            ("mcp-method", "tools/call"),
            ("mcp-name", "delete_everything"),
        ]),
        vec![],
        vec![],
    );
    assert_eq!(out.status, 400);
    assert!(out.text().contains("Mcp-Name"));
    let out = serve_mcp(
        with(&[("mcp-method", "tools/call"), ("mcp-name", "add")]),
        ok(),
        vec![],
    );
    assert_eq!(out.status, 200);
    let out = serve_mcp(
        with(&[
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?YWRk?="),
        ]),
        ok(),
        vec![],
    );
    assert_eq!(out.status, 200, "an encoded name is the server's to check");
}
