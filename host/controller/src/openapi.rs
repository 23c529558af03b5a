//! The OpenAPI 3.1 description of the API, generated from the code: the route table below and
//! the JSON Schemas of the resource types (schemars, the same types the handlers parse and
//! write). Served at `/api/v1/openapi.json`; CI runs schemathesis against the running server
//! with it, so the two cannot drift.

use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Value, json};
use weir_config::{GatewayConfig, McpProxy, Provider, ProviderTemplate, Proxy};

use crate::api::BASE;

/// What the API shows of an API key.
#[derive(JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[expect(
    dead_code,
    reason = "only its schema is used; the handlers write the same fields"
)]
struct ApiKeyView {
    id: String,
    consumer: String,
    /// The first characters of the key, to recognise it.
    prefix: String,
    created_at_ms: u64,
    /// The key itself: only in the answer that creates or regenerates it.
    key: Option<String>,
}

/// An error of the API.
#[derive(JsonSchema)]
#[expect(
    dead_code,
    reason = "only its schema is used; error.rs writes the same fields"
)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct ErrorDetail {
    /// Stable code: `not_found`, `exists`, `in_use`, `builtin`, `invalid_config`, ...
    code: String,
    message: String,
    /// The field at fault, relative to the resource sent (`base-url`, `policies[0].config.x`).
    path: Option<String>,
}

struct Spec {
    generator: SchemaGenerator,
    paths: serde_json::Map<String, Value>,
}

fn param(name: &str, location: &str, description: &str) -> Value {
    json!({
        "name": name, "in": location, "required": location == "path",
        "description": description, "schema": { "type": "string" }
    })
}

fn list_params() -> Vec<Value> {
    vec![
        json!({ "name": "limit", "in": "query", "required": false,
                "description": "Items per page (1-1000, default 100).",
                "schema": { "type": "integer", "minimum": 1, "maximum": 1000 } }),
        param("cursor", "query", "The `next-cursor` of the previous page."),
    ]
}

fn page_of(item: &Value) -> Value {
    json!({
        "type": "object",
        "required": ["items", "next-cursor"],
        "properties": {
            "items": { "type": "array", "items": item },
            "next-cursor": { "type": ["string", "null"] }
        }
    })
}

fn body(schema: &Value) -> Value {
    json!({
        "required": true,
        "content": {
            "application/json": { "schema": schema },
            "application/yaml": { "schema": schema }
        }
    })
}

impl Spec {
    fn schema<T: JsonSchema>(&mut self) -> Value {
        self.generator.subschema_for::<T>().to_value()
    }

    /// Adds an operation; every operation also documents the error responses.
    #[expect(clippy::too_many_arguments, reason = "one row of the route table")]
    fn op(
        &mut self,
        path: &str,
        method: &str,
        id: &str,
        summary: &str,
        parameters: Vec<Value>,
        request: Option<Value>,
        responses: &[(&str, &str, Option<Value>)],
    ) {
        let error = json!({ "$ref": "#/components/schemas/ErrorBody" });
        let mut out = serde_json::Map::new();
        for (code, description, schema) in responses {
            let mut r = json!({ "description": description });
            if let Some(s) = schema {
                r["content"] = json!({ "application/json": { "schema": s } });
            }
            out.insert((*code).to_owned(), r);
        }
        out.insert(
            "default".into(),
            json!({
                "description": "An error: 400 bad input, 401 no or wrong credentials, 403 read-only \
                                credential, 404 not found, 405 method, 409 conflict (exists, in use, \
                                built in), 412 If-Match mismatch, 413 too large, 415 media type, \
                                422 invalid field (with its path).",
                "content": { "application/json": { "schema": error } }
            }),
        );
        let mut operation = json!({
            "operationId": id,
            "summary": summary,
            "parameters": Value::Array(parameters),
            "responses": out,
        });
        if let Some(r) = request {
            operation["requestBody"] = r;
        }
        let entry = self
            .paths
            .entry(format!("{BASE}{path}"))
            .or_insert_with(|| json!({}));
        entry[method] = operation;
    }

    fn kind<T: JsonSchema>(&mut self, kind: &str, noun: &str, plural: &str) {
        let item = self.schema::<T>();
        let base = format!("/{kind}");
        let one = format!("/{kind}/{{name}}");
        let id = kind.replace('-', "_");
        let name = || param("name", "path", &format!("The {noun}'s name."));
        self.op(
            &base,
            "get",
            &format!("list_{id}"),
            &format!("List {plural}"),
            list_params(),
            None,
            &[(
                "200",
                "A page of items, sorted by name.",
                Some(page_of(&item)),
            )],
        );
        self.op(
            &base,
            "post",
            &format!("create_{id}"),
            &format!("Create a {noun}"),
            vec![],
            Some(body(&item)),
            &[(
                "201",
                "Created (ETag and Location headers).",
                Some(item.clone()),
            )],
        );
        self.op(
            &one,
            "get",
            &format!("get_{id}"),
            &format!("Read a {noun}"),
            vec![name()],
            None,
            &[("200", "The resource (ETag header).", Some(item.clone()))],
        );
        let if_match = json!({ "name": "If-Match", "in": "header", "required": false,
            "description": "The ETag read; the change is refused with 412 if the resource changed since.",
            "schema": { "type": "string" } });
        self.op(
            &one,
            "put",
            &format!("update_{id}"),
            &format!("Replace a {noun}"),
            vec![name(), if_match.clone()],
            Some(body(&item)),
            &[("200", "Replaced (new ETag header).", Some(item.clone()))],
        );
        self.op(
            &one,
            "delete",
            &format!("delete_{id}"),
            &format!("Delete a {noun}"),
            vec![name(), if_match],
            None,
            &[("204", "Deleted.", None)],
        );
    }
}

/// The OpenAPI document.
pub fn document() -> Value {
    let generator = SchemaSettings::openapi3()
        .with(|s| s.meta_schema = None)
        .into_generator();
    let mut spec = Spec {
        generator,
        paths: serde_json::Map::new(),
    };
    spec.schema::<ErrorBody>();
    spec.kind::<ProviderTemplate>(
        "llm-provider-templates",
        "provider template",
        "provider templates (built-in and custom)",
    );
    spec.kind::<Provider>(
        "llm-providers",
        "provider",
        "providers (`api-key` is write-only: read back as `***`)",
    );
    spec.kind::<Proxy>(
        "llm-proxies",
        "proxy",
        "proxies (their `api-keys` are managed under /api-keys)",
    );
    spec.kind::<McpProxy>("mcp-proxies", "MCP proxy", "MCP proxies");
    let tools = json!({
        "type": "object",
        "required": ["tools"],
        "properties": {"tools": {"type": "array", "items": {"type": "object"},
            "description": "The proxy's tools as MCP `tools/list` gives them (name, description, inputSchema...), whoever may call them."}}
    });
    spec.op(
        "/mcp-proxies/{name}/tools",
        "get",
        "list_mcp_proxy_tools",
        "List the tools an MCP proxy offers (asked of its server, or of its mcp-translator)",
        vec![param("name", "path", "The MCP proxy's name.")],
        None,
        &[
            ("200", "The tools.", Some(tools)),
            (
                "502",
                "The proxy's server could not be asked.",
                Some(json!({ "$ref": "#/components/schemas/ErrorBody" })),
            ),
        ],
    );

    let key = spec.schema::<ApiKeyView>();
    let new_key = spec.schema::<crate::api::NewKeyBody>();
    let proxy = || param("name", "path", "The proxy's name.");
    let id = || param("id", "path", "The key's id.");
    spec.op(
        "/llm-proxies/{name}/api-keys",
        "get",
        "list_api_keys",
        "List a proxy's API keys (prefixes only)",
        [vec![proxy()], list_params()].concat(),
        None,
        &[("200", "A page of keys.", Some(page_of(&key)))],
    );
    spec.op(
        "/llm-proxies/{name}/api-keys",
        "post",
        "create_api_key",
        "Issue an API key (shown once, in this answer)",
        vec![proxy()],
        Some(body(&new_key)),
        &[("201", "The key, with `key` set.", Some(key.clone()))],
    );
    spec.op(
        "/llm-proxies/{name}/api-keys/{id}",
        "delete",
        "revoke_api_key",
        "Revoke an API key",
        vec![proxy(), id()],
        None,
        &[("204", "Revoked.", None)],
    );
    spec.op(
        "/llm-proxies/{name}/api-keys/{id}/regenerate",
        "post",
        "regenerate_api_key",
        "Replace an API key by a new one (same id and consumer)",
        vec![proxy(), id()],
        None,
        &[("200", "The new key, with `key` set.", Some(key))],
    );

    let policy = spec.schema::<weir_server::PolicySummary>();
    spec.op(
        "/policies",
        "get",
        "list_policies",
        "The policy catalogue: built-in and uploaded components",
        list_params(),
        None,
        &[("200", "A page of policies.", Some(page_of(&policy)))],
    );
    let name = || param("name", "path", "The policy's name.");
    spec.op(
        "/policies/{name}",
        "get",
        "get_policy",
        "Read a policy component's description",
        vec![name()],
        None,
        &[("200", "The policy.", Some(policy.clone()))],
    );
    spec.op(
        "/policies/{name}",
        "put",
        "upload_policy",
        "Upload a policy component (it must target weir:policy/policy-component)",
        vec![name()],
        Some(json!({ "required": true, "content": {
            "application/wasm": { "schema": { "type": "string", "format": "binary" } },
            "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } } })),
        &[
            ("201", "Uploaded.", Some(policy.clone())),
            ("200", "Replaced.", Some(policy)),
        ],
    );
    spec.op(
        "/policies/{name}",
        "delete",
        "delete_policy",
        "Delete an uploaded policy component (not while used)",
        vec![name()],
        None,
        &[("204", "Deleted.", None)],
    );

    let config = spec.schema::<GatewayConfig>();
    let format = json!({ "name": "format", "in": "query", "required": false,
        "description": "`yaml` for YAML (also `Accept: application/yaml`).",
        "schema": { "type": "string", "enum": ["json", "yaml"] } });
    spec.op(
        "/config",
        "get",
        "export_config",
        "Export the configuration (secrets as `***`)",
        vec![format.clone()],
        None,
        &[("200", "The document.", Some(config.clone()))],
    );
    spec.op(
        "/config",
        "put",
        "import_config",
        "Import a configuration: replaces every resource (`***` keeps a stored provider key)",
        vec![format],
        Some(body(&config)),
        &[("200", "The document now served.", Some(config))],
    );

    // The document is also served as YAML.
    for method in ["get", "put"] {
        let content =
            &mut spec.paths[&format!("{BASE}/config")][method]["responses"]["200"]["content"];
        content["application/yaml"] = content["application/json"].clone();
    }
    let schemas = spec.generator.take_definitions(true);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Weir Gateway-Controller API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Manage the gateway's providers, proxies, API keys, provider templates, \
                            MCP proxies and policy components. Every change is stored durably and \
                            applied to the data plane without a restart before it is answered."
        },
        "security": [{ "basic": [] }, { "bearer": [] }],
        "paths": spec.paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "basic": { "type": "http", "scheme": "basic" },
                "bearer": { "type": "http", "scheme": "bearer" }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_route_is_described_with_resolvable_schemas() {
        let doc = super::document();
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/api/v1/llm-providers",
            "/api/v1/llm-providers/{name}",
            "/api/v1/llm-proxies/{name}/api-keys",
            "/api/v1/policies/{name}",
            "/api/v1/config",
        ] {
            assert!(paths.contains_key(p), "{p}");
        }
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = r.split('"').next().unwrap();
            assert!(schemas.contains_key(name), "unresolved $ref {name}");
        }
    }
}
