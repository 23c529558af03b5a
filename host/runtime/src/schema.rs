//! The JSON Schema a policy component may embed for its configuration: a custom section named
//! `weir:config-schema` (in the component or in one of its core modules) holding a JSON Schema
//! document. The SDK's `config_schema!` macro writes it; the controller's catalogue shows it.
//! Optional: a component without one has no schema to show, and `validate-config` stays the
//! authority on what a configuration may contain.

/// The custom section's name.
pub const SECTION: &str = "weir:config-schema";

/// The schema embedded in `bytes`, if any. An embedded section that is not a JSON object is an
/// error naming the section.
pub fn config_schema(bytes: &[u8]) -> Result<Option<serde_json::Value>, String> {
    let Some(data) = custom_section(bytes, SECTION)? else {
        return Ok(None);
    };
    let value: serde_json::Value = serde_json::from_slice(data)
        .map_err(|e| format!("custom section `{SECTION}` is not valid JSON: {e}"))?;
    if !value.is_object() {
        return Err(format!(
            "custom section `{SECTION}` must hold a JSON Schema object"
        ));
    }
    Ok(Some(value))
}

/// The contents of the first custom section called `name`, in the component or one of its
/// core modules.
pub(crate) fn custom_section<'a>(bytes: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, String> {
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| format!("reading the component: {e}"))?;
        if let wasmparser::Payload::CustomSection(section) = payload
            && section.name() == name
        {
            return Ok(Some(section.data()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module_with(section: &[u8]) -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        let name = SECTION.as_bytes();
        let len = 1 + name.len() + section.len();
        assert!(len < 128 && name.len() < 128);
        m.extend([0, len as u8, name.len() as u8]);
        m.extend(name);
        m.extend(section);
        m
    }

    #[test]
    fn reads_the_section_or_nothing() {
        let schema = config_schema(&module_with(br#"{"type":"object"}"#)).unwrap();
        assert_eq!(schema, Some(serde_json::json!({"type": "object"})));
        assert_eq!(config_schema(b"\0asm\x01\0\0\0").unwrap(), None);
        assert!(
            config_schema(&module_with(b"{nope"))
                .unwrap_err()
                .contains("not valid JSON")
        );
        assert!(
            config_schema(&module_with(b"[1]"))
                .unwrap_err()
                .contains("JSON Schema object")
        );
    }

    #[test]
    fn builtin_policies_ship_their_schema() {
        for (name, bytes) in weir_policies::builtins() {
            let schema = config_schema(bytes).unwrap();
            if matches!(
                name,
                "auth"
                    | "token-limit"
                    | "guardrail"
                    | "pii"
                    | "prompt"
                    | "router"
                    | "cache"
                    | "mcp-guard"
                    | "mcp-translator"
            ) {
                let schema = schema.unwrap_or_else(|| panic!("{name} has no config schema"));
                assert_eq!(schema["type"], "object", "{name}");
            }
        }
    }
}
