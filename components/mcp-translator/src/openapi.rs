//! OpenAPI 3.0 / 3.1 documents to MCP tools: each operation becomes a tool whose input schema
//! gathers the operation's path, query and header parameters and its JSON request body (under
//! `body`), with local `$ref`s resolved.

use serde_json::{Map, Value, json};

/// Where an argument goes in the REST request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum In {
    Path,
    Query,
    Header,
}

/// One parameter of an operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: String,
    pub location: In,
}

/// A REST operation offered as a tool.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    /// The tool's name (from `operationId`, sanitised).
    pub name: String,
    pub description: String,
    /// Upper-case HTTP method.
    pub method: String,
    /// The path template (`/pets/{petId}`), or a whole URL template for declared tools.
    pub path: String,
    pub params: Vec<Param>,
    /// Whether the operation takes a JSON body (the `body` argument).
    pub body: bool,
    /// The tool's input schema.
    pub input_schema: Value,
}

/// Which operations become tools.
#[derive(Debug, Clone, Default)]
pub struct Selection<'a> {
    pub include_tags: &'a [String],
    pub exclude_tags: &'a [String],
    pub include_operations: &'a [String],
    pub exclude_operations: &'a [String],
}

impl Selection<'_> {
    fn keeps(&self, id: &str, name: &str, tags: &[String]) -> bool {
        let named = |list: &[String]| list.iter().any(|o| o == id || o == name);
        let tagged = |list: &[String]| tags.iter().any(|t| list.contains(t));
        if named(self.exclude_operations) || tagged(self.exclude_tags) {
            return false;
        }
        if self.include_operations.is_empty() && self.include_tags.is_empty() {
            return true;
        }
        named(self.include_operations) || tagged(self.include_tags)
    }
}

/// A problem in the document, at a JSON path (`paths./pets/{petId}.get`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub path: String,
    pub message: String,
}

impl SpecError {
    fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The longest tool name MCP allows.
pub const MAX_NAME: usize = 128;

/// A tool name made of the characters MCP allows (`A-Z a-z 0-9 _ - .`), at most 128 of them.
pub fn sanitise(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    // Runs of replaced characters read better as one.
    while out.contains("__") {
        out = out.replace("__", "_");
    }
    let trimmed = out.trim_matches('_');
    let mut name = if trimmed.is_empty() { "tool" } else { trimmed }.to_owned();
    name.truncate(MAX_NAME);
    name
}

/// The tools of `doc` that `selection` keeps, in the document's order.
pub fn operations(doc: &Value, selection: &Selection<'_>) -> Result<Vec<Operation>, SpecError> {
    let version = doc.get("openapi").and_then(Value::as_str);
    match version {
        Some(v) if v.starts_with("3.0") || v.starts_with("3.1") => {}
        Some(v) => {
            return Err(SpecError::at(
                "openapi",
                format!("OpenAPI `{v}` is not supported: give a 3.0 or 3.1 document"),
            ));
        }
        None if doc.get("swagger").is_some() => {
            return Err(SpecError::at(
                "swagger",
                "Swagger 2.0 documents are not supported: convert the document to OpenAPI 3 \
                 (e.g. with swagger2openapi)",
            ));
        }
        None => {
            return Err(SpecError::at(
                "openapi",
                "missing: this is not an OpenAPI 3 document (it has no `openapi: 3.x` field)",
            ));
        }
    }
    let Some(paths) = doc.get("paths").and_then(Value::as_object) else {
        return Err(SpecError::at(
            "paths",
            "missing: the document has no operations",
        ));
    };
    let mut ops: Vec<Operation> = Vec::new();
    for (path, item) in paths {
        let at_path = format!("paths.{path}");
        let item = resolve(doc, item, &at_path)?;
        let shared = item.get("parameters").cloned().unwrap_or(json!([]));
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let at = format!("{at_path}.{method}");
            let id = op.get("operationId").and_then(Value::as_str);
            let name = sanitise(&match id {
                Some(id) => id.to_owned(),
                None => format!("{method}_{path}"),
            });
            let tags: Vec<String> = op
                .get("tags")
                .and_then(Value::as_array)
                .map(|t| {
                    t.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            if !selection.keeps(id.unwrap_or(&name), &name, &tags) {
                continue;
            }
            let operation = operation(doc, &at, &name, method, path, op, &shared)?;
            if let Some(other) = ops.iter().find(|o| o.name == operation.name) {
                return Err(SpecError::at(
                    at,
                    format!(
                        "its tool name `{}` is also the name of `{} {}`: give one of them \
                         another operationId, or exclude one (exclude-operations)",
                        operation.name, other.method, other.path
                    ),
                ));
            }
            ops.push(operation);
        }
    }
    Ok(ops)
}

fn operation(
    doc: &Value,
    at: &str,
    name: &str,
    method: &str,
    path: &str,
    op: &Value,
    shared: &Value,
) -> Result<Operation, SpecError> {
    let description = [op.get("description"), op.get("summary")]
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find(|s| !s.trim().is_empty())
        .unwrap_or_default()
        .trim()
        .to_owned();
    // The operation's parameters override the path item's of the same name and location.
    let mut declared: Vec<(String, Value)> = Vec::new();
    for (list, list_at) in [
        (shared, format!("{at}.parameters")),
        (
            op.get("parameters").unwrap_or(&Value::Null),
            format!("{at}.parameters"),
        ),
    ] {
        let Some(items) = list.as_array() else {
            continue;
        };
        for (k, p) in items.iter().enumerate() {
            let p_at = format!("{list_at}[{k}]");
            let p = resolve(doc, p, &p_at)?;
            let Some(pname) = p.get("name").and_then(Value::as_str) else {
                return Err(SpecError::at(p_at, "a parameter without a `name`"));
            };
            let location = p.get("in").and_then(Value::as_str).unwrap_or_default();
            let key = format!("{location}:{pname}");
            declared.retain(|(k, _)| *k != key);
            declared.push((key, p));
        }
    }
    let mut properties = Map::new();
    let mut required: Vec<Value> = Vec::new();
    let mut params = Vec::new();
    for (_, p) in &declared {
        let pname = p.get("name").and_then(Value::as_str).unwrap_or_default();
        let location = match p.get("in").and_then(Value::as_str) {
            Some("path") => In::Path,
            Some("query") => In::Query,
            Some("header") => In::Header,
            // Cookies are the client's state, not an argument a model should set.
            Some("cookie") => continue,
            other => {
                return Err(SpecError::at(
                    format!("{at}.parameters.{pname}"),
                    format!(
                        "`in: {}` is not a parameter location (path, query, header, cookie)",
                        other.unwrap_or("(missing)")
                    ),
                ));
            }
        };
        if location == In::Path && !path.contains(&format!("{{{pname}}}")) {
            return Err(SpecError::at(
                format!("{at}.parameters.{pname}"),
                format!("path parameter `{pname}` does not appear in the path `{path}`"),
            ));
        }
        if properties.contains_key(pname) || pname == "body" && op.get("requestBody").is_some() {
            return Err(SpecError::at(
                format!("{at}.parameters.{pname}"),
                format!(
                    "two inputs are named `{pname}` (in different locations): the tool could not \
                     tell them apart; exclude the operation or rename one"
                ),
            ));
        }
        let mut schema = match p.get("schema") {
            Some(s) => inline(doc, s, &format!("{at}.parameters.{pname}.schema"), 0)?,
            None => json!({"type": "string"}),
        };
        if let (Some(d), Some(obj)) = (
            p.get("description").and_then(Value::as_str),
            schema.as_object_mut(),
        ) && !obj.contains_key("description")
        {
            obj.insert("description".into(), json!(d));
        }
        if location == In::Path || p.get("required").and_then(Value::as_bool) == Some(true) {
            required.push(json!(pname));
        }
        properties.insert(pname.to_owned(), schema);
        params.push(Param {
            name: pname.to_owned(),
            location,
        });
    }
    for segment in path.split('{').skip(1) {
        let var = segment.split('}').next().unwrap_or_default();
        if !params
            .iter()
            .any(|p| p.location == In::Path && p.name == var)
        {
            return Err(SpecError::at(
                at.to_owned(),
                format!(
                    "the path `{path}` has `{{{var}}}`, which no `in: path` parameter declares"
                ),
            ));
        }
    }
    let mut body = false;
    if let Some(rb) = op.get("requestBody") {
        let rb_at = format!("{at}.requestBody");
        let rb = resolve(doc, rb, &rb_at)?;
        let content = rb.get("content").and_then(Value::as_object);
        let json_media = content.and_then(|c| {
            c.iter()
                .find(|(t, _)| {
                    let t = t.split(';').next().unwrap_or_default().trim();
                    t == "application/json" || t.ends_with("+json")
                })
                .map(|(_, m)| m)
        });
        let Some(media) = json_media else {
            let types: Vec<&str> = content
                .map(|c| c.keys().map(String::as_str).collect())
                .unwrap_or_default();
            return Err(SpecError::at(
                rb_at,
                format!(
                    "the request body is not JSON ({}): the translator sends JSON bodies only; \
                     exclude the operation (exclude-operations: [{name}])",
                    types.join(", ")
                ),
            ));
        };
        let mut schema = match media.get("schema") {
            Some(s) => inline(doc, s, &format!("{rb_at}.schema"), 0)?,
            None => json!({}),
        };
        if let (Some(d), Some(obj)) = (
            rb.get("description").and_then(Value::as_str),
            schema.as_object_mut(),
        ) && !obj.contains_key("description")
        {
            obj.insert("description".into(), json!(d));
        }
        if rb.get("required").and_then(Value::as_bool) == Some(true) {
            required.push(json!("body"));
        }
        properties.insert("body".into(), schema);
        body = true;
    }
    let mut input_schema = json!({"type": "object", "properties": properties});
    if !required.is_empty() {
        input_schema["required"] = Value::Array(required);
    }
    Ok(Operation {
        name: name.to_owned(),
        description,
        method: method.to_ascii_uppercase(),
        path: path.to_owned(),
        params,
        body,
        input_schema,
    })
}

/// `value`, or what its `$ref` points to (one level).
fn resolve(doc: &Value, value: &Value, at: &str) -> Result<Value, SpecError> {
    let mut current = value.clone();
    for _ in 0..16 {
        let Some(r) = current.get("$ref").and_then(Value::as_str) else {
            return Ok(current);
        };
        current = target(doc, r, at)?.clone();
    }
    Err(SpecError::at(at, "too many `$ref`s in a row (a loop?)"))
}

fn target<'a>(doc: &'a Value, r: &str, at: &str) -> Result<&'a Value, SpecError> {
    let Some(pointer) = r.strip_prefix('#') else {
        return Err(SpecError::at(
            at,
            format!(
                "`$ref: {r}` points outside the document: bundle the document into one file \
                 first (e.g. `redocly bundle`)"
            ),
        ));
    };
    let pointer = pointer.replace("%7B", "{").replace("%7D", "}");
    doc.pointer(&pointer)
        .ok_or_else(|| SpecError::at(at, format!("`$ref: {r}` points to nothing in the document")))
}

/// How deep schemas are inlined; deeper (or recursive) parts accept anything.
const MAX_DEPTH: usize = 24;

/// `schema` with every `$ref` replaced by what it points to, and OpenAPI 3.0's `nullable`
/// turned into JSON Schema.
fn inline(doc: &Value, schema: &Value, at: &str, depth: usize) -> Result<Value, SpecError> {
    if depth > MAX_DEPTH {
        return Ok(json!({}));
    }
    match schema {
        Value::Object(map) => {
            if let Some(r) = map.get("$ref").and_then(Value::as_str) {
                let found = target(doc, r, at)?;
                return inline(doc, found, at, depth + 1);
            }
            let mut out = Map::new();
            for (k, v) in map {
                // Keywords holding one schema, maps of schemas or lists of schemas.
                let value = match k.as_str() {
                    "properties" | "patternProperties" | "$defs" | "definitions" => {
                        match v.as_object() {
                            Some(m) => {
                                let mut inner = Map::new();
                                for (name, s) in m {
                                    inner.insert(name.clone(), inline(doc, s, at, depth + 1)?);
                                }
                                Value::Object(inner)
                            }
                            None => v.clone(),
                        }
                    }
                    "items" | "additionalProperties" | "not" | "contains" | "propertyNames"
                        if v.is_object() =>
                    {
                        inline(doc, v, at, depth + 1)?
                    }
                    "allOf" | "anyOf" | "oneOf" | "prefixItems" => match v.as_array() {
                        Some(list) => Value::Array(
                            list.iter()
                                .map(|s| inline(doc, s, at, depth + 1))
                                .collect::<Result<_, _>>()?,
                        ),
                        None => v.clone(),
                    },
                    // OpenAPI-only annotations a JSON Schema validator would not know.
                    "nullable" | "discriminator" | "xml" | "externalDocs" | "example" => continue,
                    _ => v.clone(),
                };
                out.insert(k.clone(), value);
            }
            if map.get("nullable").and_then(Value::as_bool) == Some(true)
                && let Some(Value::String(t)) = out.get("type").cloned()
            {
                out.insert("type".into(), json!([t, "null"]));
            }
            Ok(Value::Object(out))
        }
        other => Ok(other.clone()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn petstore() -> Value {
        json!({
            "openapi": "3.0.3",
            "info": {"title": "Pets", "version": "1"},
            "paths": {
                "/pets": {
                    "get": {
                        "operationId": "listPets",
                        "summary": "List pets",
                        "tags": ["pets"],
                        "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer"}}]
                    },
                    "post": {
                        "operationId": "createPet",
                        "description": "Creates a pet.",
                        "tags": ["pets", "write"],
                        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NewPet"}}}}
                    }
                },
                "/pets/{petId}": {
                    "parameters": [{"$ref": "#/components/parameters/PetId"}],
                    "get": {"operationId": "show pet!", "tags": ["pets"]},
                    "delete": {"tags": ["write"]}
                }
            },
            "components": {
                "parameters": {"PetId": {"name": "petId", "in": "path", "required": true, "schema": {"type": "integer"}}},
                "schemas": {
                    "NewPet": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "tag": {"type": "string", "nullable": true}, "owner": {"$ref": "#/components/schemas/Owner"}}},
                    "Owner": {"type": "object", "properties": {"pets": {"type": "array", "items": {"$ref": "#/components/schemas/NewPet"}}}}
                }
            }
        })
    }

    #[test]
    fn operations_become_tools() {
        let ops = operations(&petstore(), &Selection::default()).unwrap();
        let names: Vec<&str> = ops.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(
            names,
            ["listPets", "createPet", "show_pet", "delete_pets_petId"]
        );
        let create = &ops[1];
        assert_eq!(create.method, "POST");
        assert!(create.body);
        assert_eq!(create.description, "Creates a pet.");
        assert_eq!(create.input_schema["required"], json!(["body"]));
        let body = &create.input_schema["properties"]["body"];
        assert_eq!(body["required"], json!(["name"]));
        assert_eq!(body["properties"]["tag"]["type"], json!(["string", "null"]));
        // Recursive schemas end in "anything" instead of looping.
        assert_eq!(
            body["properties"]["owner"]["properties"]["pets"]["items"]["type"],
            "object"
        );
        let show = &ops[2];
        assert_eq!(
            show.params,
            vec![Param {
                name: "petId".into(),
                location: In::Path
            }]
        );
        assert_eq!(show.input_schema["required"], json!(["petId"]));
        assert_eq!(ops[0].description, "List pets");
    }

    #[test]
    fn tags_and_ids_select_operations() {
        let doc = petstore();
        let tags = ["write".to_owned()];
        let only_write = Selection {
            include_tags: &tags,
            ..Default::default()
        };
        let names: Vec<String> = operations(&doc, &only_write)
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect();
        assert_eq!(names, ["createPet", "delete_pets_petId"]);
        let ids = ["createPet".to_owned()];
        let not_create = Selection {
            exclude_tags: &[],
            exclude_operations: &ids,
            include_tags: &tags,
            include_operations: &[],
        };
        let names: Vec<String> = operations(&doc, &not_create)
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect();
        assert_eq!(names, ["delete_pets_petId"]);
    }

    #[test]
    fn errors_name_the_operation() {
        let mut doc = petstore();
        doc["paths"]["/pets"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"] =
            json!("#/components/schemas/Nope");
        let e = operations(&doc, &Selection::default()).unwrap_err();
        assert_eq!(e.path, "paths./pets.post.requestBody.schema");
        assert!(e.message.contains("#/components/schemas/Nope"), "{e:?}");

        let mut doc = petstore();
        doc["paths"]["/pets/{petId}"]["parameters"] = json!([]);
        let e = operations(&doc, &Selection::default()).unwrap_err();
        assert_eq!(e.path, "paths./pets/{petId}.get");
        assert!(e.message.contains("{petId}"), "{e:?}");

        let mut doc = petstore();
        doc["paths"]["/pets"]["get"]["operationId"] = json!("createPet");
        let e = operations(&doc, &Selection::default()).unwrap_err();
        assert_eq!(e.path, "paths./pets.post");
        assert!(e.message.contains("createPet"), "{e:?}");

        let mut doc = petstore();
        doc["paths"]["/pets"]["post"]["requestBody"]["content"] =
            json!({"multipart/form-data": {}});
        let e = operations(&doc, &Selection::default()).unwrap_err();
        assert!(
            e.message.contains("exclude-operations: [createPet]"),
            "{e:?}"
        );

        let e = operations(&json!({"swagger": "2.0"}), &Selection::default()).unwrap_err();
        assert!(e.message.contains("convert"), "{e:?}");
    }

    #[test]
    fn names_keep_to_the_allowed_characters() {
        assert_eq!(sanitise("get /pets/{id}"), "get_pets_id");
        assert_eq!(sanitise("a.b-c_d"), "a.b-c_d");
        assert_eq!(sanitise("¿?"), "tool");
        assert_eq!(sanitise(&"x".repeat(300)).len(), MAX_NAME);
    }
}
