//! The Gateway-Controller API: every resource and its error paths, API keys on the data plane,
//! roles, pagination, uploads, import/export, live reload under load, and no secret anywhere.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use weir_mock_upstream::MockOptions;
use weir_tests::{ADMIN_TOKEN, ALICE_KEY, ConfigBuilder, TestEnv, UPSTREAM_KEY};

mod access;
mod components;

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
