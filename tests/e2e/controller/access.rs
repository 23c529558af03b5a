//! API keys on the data plane (shown once, working until revoked) and the controller's
//! credentials and roles.

use serde_json::json;
use weir_tests::{ConfigBuilder, TestEnv};

use super::{chat_body, env};

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
