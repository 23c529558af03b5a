//! The Gateway-Controller API: every resource and its error paths, API keys on the data plane,
//! roles, pagination, uploads, import/export, live reload under load, and no secret anywhere.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use weir_mock_upstream::MockOptions;
use weir_tests::{ADMIN_TOKEN, ALICE_KEY, ConfigBuilder, TestEnv, UPSTREAM_KEY};

async fn env() -> TestEnv {
    TestEnv::start(ConfigBuilder {
        controller: true,
        ..Default::default()
    })
    .await
    .unwrap()
}

fn chat_body() -> Value {
    json!({"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_crud_etags_and_builtins() {
    let env = env().await;
    let list = env
        .api("GET", "/llm-provider-templates", None)
        .await
        .unwrap();
    assert_eq!(list.status, 200);
    let names: Vec<String> = list.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    for b in [
        "anthropic",
        "aws-bedrock",
        "azure-ai-foundry",
        "azure-openai",
        "gemini",
        "mistral",
        "openai",
    ] {
        assert!(names.contains(&b.to_owned()), "{b} in {names:?}");
    }
    let t = json!({"name": "acme", "prompt-tokens": "u.in", "completion-tokens": "u.out"});
    let created = env
        .api("POST", "/llm-provider-templates", Some(t.clone()))
        .await
        .unwrap();
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(
        created.header("location"),
        Some("/api/v1/llm-provider-templates/acme")
    );
    let etag = created.header("etag").unwrap().to_owned();
    assert_eq!(
        env.api("POST", "/llm-provider-templates", Some(t.clone()))
            .await
            .unwrap()
            .status,
        409
    );

    let auth = format!("Bearer {ADMIN_TOKEN}");
    let mut t2 = t.clone();
    t2["total-tokens"] = json!("u.all");
    let body = serde_json::to_vec(&t2).unwrap();
    let put = |etag: String, body: Vec<u8>| {
        let auth = auth.clone();
        let env = &env;
        async move {
            env.api_raw(
                "PUT",
                "/llm-provider-templates/acme",
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                    ("if-match", &etag),
                ],
                body,
            )
            .await
            .unwrap()
        }
    };
    let ok = put(etag.clone(), body.clone()).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_ne!(
        ok.header("etag").unwrap(),
        etag,
        "a change makes a new ETag"
    );
    // The old ETag is stale now.
    let stale = put(etag, body).await;
    assert_eq!(stale.status, 412);
    assert_eq!(stale.json()["error"]["code"], "precondition_failed");

    let got = env
        .api("GET", "/llm-provider-templates/acme", None)
        .await
        .unwrap();
    assert_eq!(got.json()["total-tokens"], "u.all");
    assert_eq!(
        env.api(
            "PUT",
            "/llm-provider-templates/openai",
            Some(json!({"name": "openai", "prompt-tokens": "a", "completion-tokens": "b"}))
        )
        .await
        .unwrap()
        .status,
        409
    );
    assert_eq!(
        env.api("DELETE", "/llm-provider-templates/openai", None)
            .await
            .unwrap()
            .status,
        409
    );

    // A provider using the template keeps it from being deleted.
    let p = json!({"name": "acme-p", "template": "acme", "base-url": "https://acme.example/v1"});
    assert_eq!(
        env.api("POST", "/llm-providers", Some(p))
            .await
            .unwrap()
            .status,
        201
    );
    let in_use = env
        .api("DELETE", "/llm-provider-templates/acme", None)
        .await
        .unwrap();
    assert_eq!(
        (in_use.status, in_use.json()["error"]["code"].clone()),
        (409, json!("in_use"))
    );
    assert_eq!(
        env.api("DELETE", "/llm-providers/acme-p", None)
            .await
            .unwrap()
            .status,
        204
    );
    assert_eq!(
        env.api("DELETE", "/llm-provider-templates/acme", None)
            .await
            .unwrap()
            .status,
        204
    );
    assert_eq!(
        env.api("GET", "/llm-provider-templates/acme", None)
            .await
            .unwrap()
            .status,
        404
    );
    assert_eq!(
        env.api("DELETE", "/llm-provider-templates/acme", None)
            .await
            .unwrap()
            .status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_names_the_field_and_changes_nothing() {
    let env = env().await;
    let bad_url = env
        .api(
            "POST",
            "/llm-providers",
            Some(json!({"name": "x", "base-url": "ftp://nope"})),
        )
        .await
        .unwrap();
    assert_eq!(bad_url.status, 422);
    assert_eq!(bad_url.json()["error"]["path"], "base-url");
    let unknown = env
        .api(
            "POST",
            "/llm-providers",
            Some(json!({"name": "x", "base-url": "https://x/v1", "colour": 1})),
        )
        .await
        .unwrap();
    assert_eq!(unknown.status, 422, "unknown fields are errors");
    let bad_policy = env
        .api(
            "POST",
            "/llm-proxies",
            Some(json!({"name": "p", "context-path": "/p", "provider": "mock",
                        "policies": [{"policy": "token-limit", "config": {"tokens-per-minute": "many"}}]})),
        )
        .await
        .unwrap();
    assert_eq!(bad_policy.status, 422, "{}", bad_policy.text());
    assert_eq!(
        bad_policy.json()["error"]["path"],
        "policies[0].config.tokens-per-minute"
    );
    let unknown_provider = env
        .api(
            "POST",
            "/llm-proxies",
            Some(json!({"name": "p", "context-path": "/p", "provider": "ghost"})),
        )
        .await
        .unwrap();
    assert_eq!(unknown_provider.json()["error"]["path"], "provider");
    let renamed = env
        .api(
            "PUT",
            "/llm-providers/mock",
            Some(json!({"name": "other", "base-url": "https://x/v1"})),
        )
        .await
        .unwrap();
    assert_eq!(
        (renamed.status, renamed.json()["error"]["path"].clone()),
        (422, json!("name"))
    );
    let not_json = env
        .api_raw(
            "POST",
            "/llm-providers",
            &[
                ("authorization", &format!("Bearer {ADMIN_TOKEN}")),
                ("content-type", "application/json"),
            ],
            "{",
        )
        .await
        .unwrap();
    assert_eq!(not_json.status, 400);
    let wrong_type = env
        .api_raw(
            "POST",
            "/llm-providers",
            &[
                ("authorization", &format!("Bearer {ADMIN_TOKEN}")),
                ("content-type", "text/plain"),
            ],
            "x",
        )
        .await
        .unwrap();
    assert_eq!(wrong_type.status, 415);
    assert_eq!(
        env.api("GET", "/llm-proxies/p", None).await.unwrap().status,
        404,
        "nothing was created"
    );
    assert_eq!(
        env.api("DELETE", "/llm-providers/mock", None)
            .await
            .unwrap()
            .status,
        409,
        "used by `main`"
    );
    assert_eq!(env.api("GET", "/nothing", None).await.unwrap().status, 404);
    assert_eq!(
        env.api("PATCH", "/llm-providers", None)
            .await
            .unwrap()
            .status,
        405
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yaml_bodies_and_yaml_export() {
    let env = env().await;
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let yaml = "name: y\ncontext-path: /y\nprovider: mock\n";
    let r = env
        .api_raw(
            "POST",
            "/llm-proxies",
            &[
                ("authorization", &auth),
                ("content-type", "application/yaml"),
            ],
            yaml,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let export = env
        .api_raw(
            "GET",
            "/config?format=yaml",
            &[("authorization", &auth)],
            "",
        )
        .await
        .unwrap();
    assert_eq!(export.header("content-type"), Some("application/yaml"));
    assert!(
        export.text().contains("context-path: /y"),
        "{}",
        export.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_proxy_serves_at_once_and_a_deleted_one_stops() {
    let env = env().await;
    let proxy = json!({"name": "fresh", "context-path": "/fresh", "provider": "mock",
                       "policies": [serde_json::from_str::<Value>(&weir_tests::auth_policy()).unwrap()]});
    assert_eq!(
        env.chat("/fresh", ALICE_KEY, chat_body())
            .await
            .unwrap()
            .status,
        404
    );
    assert_eq!(
        env.api("POST", "/llm-proxies", Some(proxy))
            .await
            .unwrap()
            .status,
        201
    );
    assert_eq!(
        env.chat("/fresh", ALICE_KEY, chat_body())
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        env.chat("/fresh", "sk-nope", chat_body())
            .await
            .unwrap()
            .status,
        401
    );
    assert_eq!(
        env.api("DELETE", "/llm-proxies/fresh", None)
            .await
            .unwrap()
            .status,
        204
    );
    assert_eq!(
        env.chat("/fresh", ALICE_KEY, chat_body())
            .await
            .unwrap()
            .status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_are_shown_once_and_work_until_revoked() {
    let env = env().await;
    let proxy = json!({"name": "keyed", "context-path": "/keyed", "provider": "mock"});
    assert_eq!(
        env.api("POST", "/llm-proxies", Some(proxy.clone()))
            .await
            .unwrap()
            .status,
        201
    );
    let made = env
        .api(
            "POST",
            "/llm-proxies/keyed/api-keys",
            Some(json!({"consumer": "team-a"})),
        )
        .await
        .unwrap();
    assert_eq!(made.status, 201, "{}", made.text());
    let key = made.json()["key"].as_str().unwrap().to_owned();
    let id = made.json()["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with(made.json()["prefix"].as_str().unwrap()));

    let ok = env.chat("/keyed", &key, chat_body()).await.unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(
        env.chat("/keyed", "wk-guess", chat_body())
            .await
            .unwrap()
            .status,
        401
    );
    let usage = env.wait_usage(2).await;
    assert!(
        usage
            .iter()
            .any(|u| u.consumer.as_deref() == Some("team-a"))
    );

    let list = env
        .api("GET", "/llm-proxies/keyed/api-keys", None)
        .await
        .unwrap();
    let text = list.text();
    assert!(
        !text.contains(&key) && !text.contains("key-sha256"),
        "{text}"
    );
    assert_eq!(list.json()["items"][0]["id"], json!(id));

    // A PUT of the proxy keeps its keys.
    assert_eq!(
        env.api("PUT", "/llm-proxies/keyed", Some(proxy))
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        env.chat("/keyed", &key, chat_body()).await.unwrap().status,
        200
    );

    let again = env
        .api(
            "POST",
            &format!("/llm-proxies/keyed/api-keys/{id}/regenerate"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(again.status, 200);
    let new_key = again.json()["key"].as_str().unwrap().to_owned();
    assert_ne!(new_key, key);
    assert_eq!(
        env.chat("/keyed", &key, chat_body()).await.unwrap().status,
        401
    );
    assert_eq!(
        env.chat("/keyed", &new_key, chat_body())
            .await
            .unwrap()
            .status,
        200
    );

    assert_eq!(
        env.api("DELETE", &format!("/llm-proxies/keyed/api-keys/{id}"), None)
            .await
            .unwrap()
            .status,
        204
    );
    assert_eq!(
        env.api("DELETE", &format!("/llm-proxies/keyed/api-keys/{id}"), None)
            .await
            .unwrap()
            .status,
        404
    );
    // No key left: the proxy has no auth policy of its own, so it is open again. (A proxy that
    // must stay closed lists `auth` in its policies.)
    assert_eq!(
        env.chat("/keyed", &new_key, chat_body())
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        env.api(
            "POST",
            "/llm-proxies/ghost/api-keys",
            Some(json!({"consumer": "x"}))
        )
        .await
        .unwrap()
        .status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_roles() {
    let viewer_sha = weir_tests::sha256_hex("viewer-pw");
    let env = TestEnv::start(ConfigBuilder {
        controller: true,
        controller_yaml: format!(
            "  users:\n    - {{ name: viewer, password-sha256: {viewer_sha}, role: read-only }}\n"
        ),
        ..Default::default()
    })
    .await
    .unwrap();
    let viewer = "Basic dmlld2VyOnZpZXdlci1wdw=="; // viewer:viewer-pw
    let read = env
        .api_raw("GET", "/llm-providers", &[("authorization", viewer)], "")
        .await
        .unwrap();
    assert_eq!(read.status, 200);
    let write = env
        .api_raw(
            "POST",
            "/llm-provider-templates",
            &[
                ("authorization", viewer),
                ("content-type", "application/json"),
            ],
            r#"{"name":"v","prompt-tokens":"a","completion-tokens":"b"}"#,
        )
        .await
        .unwrap();
    assert_eq!(
        (write.status, write.json()["error"]["code"].clone()),
        (403, json!("forbidden"))
    );
    let none = env.api_raw("GET", "/llm-providers", &[], "").await.unwrap();
    assert_eq!(none.status, 401);
    assert!(none.header("www-authenticate").is_some());
    let wrong = env
        .api_raw(
            "GET",
            "/llm-providers",
            &[("authorization", "Bearer wrong")],
            "",
        )
        .await
        .unwrap();
    assert_eq!(wrong.status, 401);
    // The development default is off once a token is configured (the test env sets one).
    let dev = env
        .api_raw(
            "GET",
            "/llm-providers",
            &[("authorization", "Basic YWRtaW46YWRtaW4=")],
            "",
        )
        .await
        .unwrap();
    assert_eq!(dev.status, 401);
    let spec = env.api_raw("GET", "/openapi.json", &[], "").await.unwrap();
    assert_eq!(spec.status, 200);
    assert_eq!(spec.json()["openapi"], "3.1.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_are_paginated() {
    let env = env().await;
    for i in 0..5 {
        let t = json!({"name": format!("t{i}"), "prompt-tokens": "a", "completion-tokens": "b"});
        assert_eq!(
            env.api("POST", "/llm-provider-templates", Some(t))
                .await
                .unwrap()
                .status,
            201
        );
    }
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = env
            .api(
                "GET",
                &format!("/llm-provider-templates?limit=3&cursor={cursor}"),
                None,
            )
            .await
            .unwrap()
            .json();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|i| i["name"].as_str().unwrap().to_owned()));
        match page["next-cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted, "sorted, no duplicates");
    assert_eq!(seen.len(), 7 + 5);
    assert_eq!(
        env.api("GET", "/llm-provider-templates?limit=0", None)
            .await
            .unwrap()
            .status,
        400
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_components_upload_attach_and_delete() {
    let env = env().await;
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let upload = |name: &'static str, bytes: &'static [u8]| {
        let auth = auth.clone();
        let env = &env;
        async move {
            env.api_raw(
                "PUT",
                &format!("/policies/{name}"),
                &[
                    ("authorization", &auth),
                    ("content-type", "application/wasm"),
                ],
                bytes,
            )
            .await
            .unwrap()
        }
    };
    let garbage = upload("junk", b"\0asm not really").await;
    assert_eq!(
        (garbage.status, garbage.json()["error"]["code"].clone()),
        (422, json!("invalid_component"))
    );
    assert_eq!(
        upload("auth", weir_policies::TEST_POLICY).await.status,
        409,
        "built-in names are taken"
    );
    let up = upload("probe", weir_policies::TEST_POLICY).await;
    assert_eq!(up.status, 201, "{}", up.text());
    assert_eq!(up.json()["builtin"], false);
    assert_eq!(
        up.json()["sha256"],
        json!(weir_tests::sha256_hex_bytes(weir_policies::TEST_POLICY))
    );
    let catalogue = env.api("GET", "/policies", None).await.unwrap().json();
    let names: Vec<&str> = catalogue["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "auth",
            "cache",
            "guardrail",
            "mcp-guard",
            "mcp-translator",
            "pii",
            "probe",
            "prompt",
            "router",
            "token-limit"
        ]
    );
    // Built-ins embed the JSON Schema of their configuration; the test policy has none.
    let auth = &catalogue["items"][0];
    assert_eq!(
        auth["config-schema"]["properties"]["consumers"]["type"], "array",
        "{auth}"
    );
    let token_limit = catalogue["items"]
        .as_array()
        .and_then(|items| items.iter().find(|p| p["name"] == "token-limit"))
        .expect("token-limit in the catalogue");
    assert_eq!(
        token_limit["config-schema"]["properties"]["tokens-per-minute"]["minimum"],
        1
    );
    assert_eq!(up.json()["config-schema"], Value::Null);

    // Attached: its config is validated by the component itself.
    let proxy = |config: Value| {
        json!({"name": "probed", "context-path": "/probed", "provider": "mock",
                                         "policies": [{"policy": "probe", "config": config}]})
    };
    let bad = env
        .api(
            "POST",
            "/llm-proxies",
            Some(proxy(json!({"mode": "no-such-mode"}))),
        )
        .await
        .unwrap();
    assert_eq!(bad.status, 422, "{}", bad.text());
    assert!(
        bad.json()["error"]["path"]
            .as_str()
            .unwrap()
            .starts_with("policies[0].config"),
        "{}",
        bad.text()
    );
    let good = env
        .api("POST", "/llm-proxies", Some(proxy(json!({"mode": "noop"}))))
        .await
        .unwrap();
    assert_eq!(good.status, 201, "{}", good.text());
    assert_eq!(
        env.chat("/probed", "", chat_body()).await.unwrap().status,
        200
    );

    assert_eq!(
        env.api("DELETE", "/policies/probe", None)
            .await
            .unwrap()
            .status,
        409,
        "in use"
    );
    assert_eq!(
        env.api("DELETE", "/llm-proxies/probed", None)
            .await
            .unwrap()
            .status,
        204
    );
    assert_eq!(
        env.api("DELETE", "/policies/probe", None)
            .await
            .unwrap()
            .status,
        204
    );
    assert_eq!(
        env.api("GET", "/policies/probe", None)
            .await
            .unwrap()
            .status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_import_round_trip_and_secrets_stay_hidden() {
    let env = env().await;
    // A provider whose key lives only in the controller: the mock requires it.
    let p =
        json!({"name": "vault", "base-url": env.mock.base_url() + "/v1", "api-key": UPSTREAM_KEY});
    let created = env.api("POST", "/llm-providers", Some(p)).await.unwrap();
    assert_eq!(created.status, 201, "{}", created.text());
    let proxy = json!({"name": "v", "context-path": "/v", "provider": "vault"});
    assert_eq!(
        env.api("POST", "/llm-proxies", Some(proxy))
            .await
            .unwrap()
            .status,
        201
    );
    assert_eq!(
        env.chat("/v", "", chat_body()).await.unwrap().status,
        200,
        "the stored key is used"
    );

    let mut outputs = vec![created.text()];
    for path in [
        "/llm-providers",
        "/llm-providers/vault",
        "/config",
        "/config?format=yaml",
    ] {
        let r = env.api("GET", path, None).await.unwrap();
        assert_eq!(r.status, 200);
        outputs.push(r.text());
    }
    outputs.push(env.admin_get("/config").await.unwrap().text());
    outputs.push(env.admin_get("/metrics").await.unwrap().text());
    for o in &outputs {
        assert!(!o.contains(UPSTREAM_KEY), "the provider key leaked: {o}");
    }
    assert!(
        outputs[2].contains("\"api-key\": \"***\""),
        "{}",
        outputs[2]
    );

    let auth = format!("Bearer {ADMIN_TOKEN}");
    let export = env
        .api_raw(
            "GET",
            "/config?format=yaml",
            &[("authorization", &auth)],
            "",
        )
        .await
        .unwrap()
        .text();
    let import = env
        .api_raw(
            "PUT",
            "/config?format=yaml",
            &[
                ("authorization", &auth),
                ("content-type", "application/yaml"),
            ],
            export.clone(),
        )
        .await
        .unwrap();
    assert_eq!(import.status, 200, "{}", import.text());
    assert_eq!(
        import.text(),
        export,
        "export → import → export is identical"
    );
    assert_eq!(
        env.chat("/v", "", chat_body()).await.unwrap().status,
        200,
        "`***` kept the key"
    );

    // Importing a document without the proxy removes it; importing `***` for a provider with no
    // stored key is refused and changes nothing.
    let without = export.replace(
        "- name: v\n  context-path: /v\n  provider: vault\n  policies: []\n",
        "",
    );
    assert_ne!(without, export);
    let r = env
        .api_raw(
            "PUT",
            "/config",
            &[
                ("authorization", &auth),
                ("content-type", "application/yaml"),
            ],
            without,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.chat("/v", "", chat_body()).await.unwrap().status, 404);
    let bogus = export.replace("name: vault", "name: vault2");
    let r = env
        .api_raw(
            "PUT",
            "/config",
            &[
                ("authorization", &auth),
                ("content-type", "application/yaml"),
            ],
            bogus,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        r.json()["error"]["path"]
            .as_str()
            .unwrap()
            .ends_with("api-key")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_fails_no_request_and_streams_finish_on_their_config() {
    let env = Arc::new(
        TestEnv::start_with(
            ConfigBuilder {
                controller: true,
                ..Default::default()
            },
            MockOptions {
                api_key: Some(UPSTREAM_KEY.into()),
                chunk_delay: Duration::from_millis(40),
                ..Default::default()
            },
        )
        .await
        .unwrap(),
    );
    // A stream on a proxy that is about to be deleted.
    let proxy = json!({"name": "doomed", "context-path": "/doomed", "provider": "mock"});
    assert_eq!(
        env.api("POST", "/llm-proxies", Some(proxy))
            .await
            .unwrap()
            .status,
        201
    );
    let streaming = {
        let env = env.clone();
        tokio::spawn(async move {
            let body = json!({"model": "mock-gpt", "stream": true, "max_tokens": 10,
                              "messages": [{"role": "user", "content": "hi"}]});
            env.chat("/doomed", "", body).await.unwrap()
        })
    };

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (env, stop, served) = (env.clone(), stop.clone(), served.clone());
        clients.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let r = env.chat("/", ALICE_KEY, chat_body()).await.unwrap();
                if r.status != 200 {
                    failures.push((r.status, r.text()));
                }
                served.fetch_add(1, Ordering::Relaxed);
            }
            failures
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        env.api("DELETE", "/llm-proxies/doomed", None)
            .await
            .unwrap()
            .status,
        204
    );
    for i in 0..15 {
        let mut main = env
            .api("GET", "/llm-proxies/main", None)
            .await
            .unwrap()
            .json();
        main["policies"][1]["config"]["tokens-per-minute"] = json!(100_000_000 + i);
        let r = env
            .api("PUT", "/llm-proxies/main", Some(main))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let extra = json!({"name": format!("extra{i}"), "context-path": format!("/extra{i}"), "provider": "mock"});
        assert_eq!(
            env.api("POST", "/llm-proxies", Some(extra))
                .await
                .unwrap()
                .status,
            201
        );
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let failures = c.await.unwrap();
        assert!(
            failures.is_empty(),
            "requests failed during reloads: {failures:?}"
        );
    }
    assert!(served.load(Ordering::Relaxed) > 20, "the load ran");

    let stream = streaming.await.unwrap();
    assert_eq!(stream.status, 200);
    let data = stream.sse_data();
    assert_eq!(
        data.last().map(String::as_str),
        Some("[DONE]"),
        "the stream finished on the config it started with"
    );
    assert_eq!(
        env.chat("/doomed", "", chat_body()).await.unwrap().status,
        404
    );
}
