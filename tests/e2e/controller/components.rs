//! Policy components through the controller: upload, attach to a proxy, delete.

use serde_json::{Value, json};
use weir_tests::ADMIN_TOKEN;

use super::{chat_body, env};

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
