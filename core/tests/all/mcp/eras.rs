//! Sessions and the two protocol eras: the gateway's own session ids bound to the consumer,
//! each era's clients bridged to the other era's servers, and lists of several servers paged.

use super::*;

#[test]
fn sessions_are_the_gateways_own_and_bound_to_the_consumer() {
    // initialize: the server opens `up-7`; the client gets a new id of the gateway's.
    let mut init = rpc(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}));
    init.headers.retain(|(n, _)| n != "mcp-session-id");
    let answer = Up::Headed(
        Box::new(Up::json(
            200,
            json!({"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": "2025-06-18"}}),
        )),
        vec![("mcp-session-id".into(), "up-7".into())],
    );
    let out = serve_mcp(init, vec![answer], vec![]);
    assert_eq!(out.status, 200);
    let sid = header(&out.headers, "mcp-session-id").unwrap().to_owned();
    assert!(
        weir_core::mcp_sessions::well_formed(&sid) && sid != SESSION,
        "{sid}"
    );
    let stored = out
        .platform
        .0
        .borrow()
        .state
        .get(&weir_core::mcp_sessions::key("tools", &sid))
        .cloned()
        .unwrap();
    let stored: weir_core::mcp_sessions::Session = serde_json::from_slice(&stored).unwrap();
    assert_eq!(
        (stored.upstream.as_str(), stored.consumer.as_deref()),
        ("up-7", Some("alice"))
    );
    assert!(!out.text().contains("up-7") && !out.headers.iter().any(|(_, v)| v.contains("up-7")));

    // An id the gateway never gave, or another consumer's, is a 404: the server sees nothing.
    for (sid, owner) in [
        ("ffffffffffffffffffffffffffffffff", None),
        ("00000000000000000000000000000001", Some("bob")),
    ] {
        let mut req = call_tool("add");
        req.headers.retain(|(n, _)| n != "mcp-session-id");
        req.headers.push(("mcp-session-id".into(), sid.into()));
        let platform = FakePlatform::with(vec![]);
        if let Some(owner) = owner {
            seed_session(&platform, "tools", sid, owner);
        }
        let answer = run(weir_core::mcp::serve(
            platform.clone(),
            &mcp_route(),
            req,
            "req_test".into(),
            0,
            |_| FakeChain {
                policies: vec![],
                log: Rc::new(RefCell::new(ChainLog::default())),
            },
        ));
        let out = finish(
            answer,
            Drive::default(),
            platform,
            Rc::new(RefCell::new(ChainLog::default())),
        );
        assert_eq!(out.status, 404, "{sid}");
        assert_eq!(out.json()["error"]["data"]["code"], "session_not_found");
        assert_eq!(out.json()["id"], 7);
        assert!(out.platform.sent().is_empty());
    }

    // DELETE ends the session: the server's id goes upstream, the mapping is forgotten.
    let mut delete = call_tool("add");
    delete.method = "DELETE".into();
    let out = serve_mcp(delete, vec![Up::json(200, json!({}))], vec![]);
    assert_eq!(out.status, 200);
    assert!(
        out.platform.sent()[0]
            .headers
            .iter()
            .any(|(n, v)| n == "mcp-session-id" && v == "s1")
    );
    assert!(
        out.platform.0.borrow().state.is_empty(),
        "the session is forgotten"
    );
}

#[test]
fn a_client_of_the_stateless_era_is_bridged_to_a_server_of_the_initialize_era() {
    let modern = |body: serde_json::Value| {
        let mut r = rpc(body);
        r.headers
            .retain(|(n, _)| n != "mcp-session-id" && n != "mcp-protocol-version");
        r.headers
            .push(("mcp-protocol-version".into(), "2026-07-28".into()));
        r
    };
    let list = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"});
    let out = serve_mcp(
        modern(list.clone()),
        vec![
            // The server refuses a request without a session...
            Up::json(
                400,
                json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32000, "message": "Bad Request: Server not initialized"}}),
            ),
            // ...so the gateway opens one,
            Up::Headed(
                Box::new(Up::json(
                    200,
                    json!({"jsonrpc": "2.0", "id": 0, "result": {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "old"}}}),
                )),
                vec![("mcp-session-id".into(), "up-9".into())],
            ),
            Up::json(202, json!({})),
            // and asks again in it (with an id of its own: the session is shared).
            Up::sse(&[
                r#"{"jsonrpc":"2.0","id":"weir-req_test","result":{"tools":[{"name":"add","inputSchema":{"type":"object"}}]}}"#,
            ]),
        ],
        vec![],
    );
    assert_eq!(out.status, 200, "{}", out.text());
    let body = out.json();
    assert_eq!(body["id"], 3, "the client's id is given back");
    assert_eq!(body["result"]["tools"][0]["name"], "add");
    assert_eq!(body["result"]["resultType"], "complete");
    assert_eq!(body["result"]["cacheScope"], "private");
    let sent = out.platform.sent();
    assert_eq!(sent.len(), 4);
    let init: serde_json::Value = serde_json::from_slice(&sent[1].body).unwrap();
    assert_eq!(init["method"], "initialize");
    let again = &sent[3];
    let asked: serde_json::Value = serde_json::from_slice(&again.body).unwrap();
    assert_eq!(asked["id"], "weir-req_test");
    assert!(
        again
            .headers
            .iter()
            .any(|(n, v)| n == "mcp-session-id" && v == "up-9")
    );
    assert!(
        again
            .headers
            .iter()
            .any(|(n, v)| n == "mcp-protocol-version" && v == "2025-06-18")
    );
    assert!(!again.headers.iter().any(|(n, _)| n == "authorization"));
    // The session and the server's era are remembered: the next request goes straight to it.
    let state = out.platform.0.borrow().state.clone();
    assert!(state.contains_key("gateway:mcp-era|tools"));
    assert!(state.contains_key("gateway:mcp-bridge|tools/alice"));
}

#[test]
fn a_client_of_the_initialize_era_is_served_by_a_stateless_server() {
    let mut init = rpc(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}));
    init.headers.retain(|(n, _)| n != "mcp-session-id");
    let out = serve_mcp(
        init,
        vec![
            Up::json(
                400,
                json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32022, "message": "Unsupported protocol version"}}),
            ),
            Up::json(
                200,
                json!({"jsonrpc": "2.0", "id": 0, "result": {"supportedVersions": ["2026-07-28"],
                "capabilities": {"tools": {}}, "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "new"}}}}),
            ),
        ],
        vec![],
    );
    assert_eq!(out.status, 200, "{}", out.text());
    let body = out.json();
    assert_eq!(body["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(body["result"]["serverInfo"]["name"], "new");
    let sid = header(&out.headers, "mcp-session-id").unwrap().to_owned();
    let discover: serde_json::Value = serde_json::from_slice(&out.platform.sent()[1].body).unwrap();
    assert_eq!(discover["method"], "server/discover");

    // In that session a call goes to the server in the new revision.
    let platform = FakePlatform::with(vec![Up::json(
        200,
        json!({"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": "2"}], "resultType": "complete"}}),
    )]);
    platform.0.borrow_mut().state = out.platform.0.borrow().state.clone();
    let mut call = call_tool("add");
    call.headers.retain(|(n, _)| n != "mcp-session-id");
    call.headers.push(("mcp-session-id".into(), sid));
    let log = Rc::new(RefCell::new(ChainLog::default()));
    let chain_log = log.clone();
    let answer = run(weir_core::mcp::serve(
        platform.clone(),
        &mcp_route(),
        call,
        "req_test".into(),
        0,
        move |_| FakeChain {
            policies: vec![],
            log: chain_log,
        },
    ));
    let out = finish(answer, Drive::default(), platform, log);
    assert_eq!(out.status, 200, "{}", out.text());
    assert_eq!(out.json()["result"]["content"][0]["text"], "2");
    let sent = &out.platform.sent()[0];
    let has = |name: &str, value: &str| sent.headers.iter().any(|(n, v)| n == name && v == value);
    assert!(
        has("mcp-protocol-version", "2026-07-28")
            && has("mcp-method", "tools/call")
            && has("mcp-name", "add")
    );
    assert!(!sent.headers.iter().any(|(n, _)| n == "mcp-session-id"));
    let body: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(
        body["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"],
        "2026-07-28"
    );
    assert_eq!(body["params"]["arguments"]["a"], 1);
}

#[test]
fn lists_of_several_servers_are_paged_with_a_cursor_holding_each_servers() {
    let mut route = mcp_route();
    let server = route.mcp.as_mut().unwrap();
    server.members = ["a", "b"]
        .iter()
        .map(|n| McpMember {
            name: (*n).into(),
            url: format!("http://{n}.test/mcp"),
            timeout_ms: 1000,
            credential: None,
        })
        .collect();
    let seed = |platform: &FakePlatform| {
        for n in ["a", "b"] {
            let up = json!({"session": format!("s-{n}"), "version": "2025-06-18",
                            "capabilities": {}, "server_info": {}});
            platform.0.borrow_mut().state.insert(
                format!("gateway:mcp-members|tools/alice/{n}"),
                serde_json::to_vec(&up).unwrap(),
            );
        }
    };
    let page = |items: &[&str], next: Option<&str>| {
        let mut result = json!({"resources": items.iter().map(|u| json!({"uri": u, "name": u})).collect::<Vec<_>>()});
        if let Some(n) = next {
            result["nextCursor"] = json!(n);
        }
        Up::json(
            200,
            json!({"jsonrpc": "2.0", "id": "weir-req_test", "result": result}),
        )
    };
    let serve = |request: ClientRequest, replies: Vec<Up>| {
        let platform = FakePlatform::with(replies);
        seed_session(&platform, "tools", SESSION, "alice");
        seed(&platform);
        let log = Rc::new(RefCell::new(ChainLog::default()));
        let chain_log = log.clone();
        let answer = run(weir_core::mcp::serve(
            platform.clone(),
            &route,
            request,
            "req_test".into(),
            0,
            move |_| FakeChain {
                policies: vec![],
                log: chain_log,
            },
        ));
        finish(answer, Drive::default(), platform, log)
    };
    let first = serve(
        rpc(json!({"jsonrpc": "2.0", "id": 1, "method": "resources/list"})),
        vec![page(&["a://1"], Some("a-2")), page(&["b://1"], None)],
    );
    let body = first.json();
    assert_eq!(body["id"], 1);
    let uris: Vec<&str> = body["result"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["uri"].as_str().unwrap())
        .collect();
    assert_eq!(uris, ["a://1", "b://1"]);
    let cursor = body["result"]["nextCursor"]
        .as_str()
        .expect("a cursor while a server has more")
        .to_owned();
    assert!(!cursor.contains("a-2"), "opaque to the client: {cursor}");

    // The next page asks only the server that had more, with its own cursor.
    let second = serve(
        rpc(
            json!({"jsonrpc": "2.0", "id": 2, "method": "resources/list", "params": {"cursor": cursor}}),
        ),
        vec![page(&["a://2"], None)],
    );
    let body = second.json();
    assert_eq!(body["result"]["resources"][0]["uri"], "a://2");
    assert!(body["result"].get("nextCursor").is_none(), "{body}");
    let sent = second.platform.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].url, "http://a.test/mcp");
    let asked: serde_json::Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(asked["params"]["cursor"], "a-2");

    // A cursor that is not the gateway's: a JSON-RPC error, nothing sent.
    let bad = serve(
        rpc(
            json!({"jsonrpc": "2.0", "id": 3, "method": "resources/list", "params": {"cursor": "a-2"}}),
        ),
        vec![],
    );
    assert_eq!(bad.json()["error"]["code"], -32602, "{}", bad.text());
    assert!(bad.platform.sent().is_empty());
}
