//! The validator against scripts of schemas and documents.

#![allow(clippy::unwrap_used, clippy::panic)]

use super::Schema;
use serde_json::{Value, json};

/// Runs a script of lines: `schema <json>` compiles the schema the next lines use;
/// `ok [<documents>]` expects each to be valid, `<document> => <error>` expects that error,
/// `bad <schema> => <error>` a compile error. An expected error ending with `*` is a prefix.
fn run(script: &str) {
    let mut schema: Option<Schema> = None;
    let parse =
        |s: &str| -> Value { serde_json::from_str(s).unwrap_or_else(|e| panic!("{s}: {e}")) };
    for line in script.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(docs) = line.strip_prefix("ok ") {
            for doc in parse(docs).as_array().unwrap() {
                assert_eq!(schema.as_ref().unwrap().validate(doc), Ok(()), "{doc}");
            }
            continue;
        }
        if let Some(s) = line.strip_prefix("schema ") {
            schema = Some(Schema::compile(&parse(s)).unwrap_or_else(|e| panic!("{s}: {e}")));
            continue;
        }
        let (left, want) = line
            .split_once(" => ")
            .unwrap_or_else(|| panic!("bad line {line}"));
        let got = match left.strip_prefix("bad ") {
            Some(s) => Schema::compile(&parse(s)).map(|_| ()).unwrap_err(),
            None => schema
                .as_ref()
                .unwrap()
                .validate(&parse(left))
                .err()
                .unwrap_or("ok".into()),
        };
        match want.strip_suffix('*') {
            Some(prefix) => assert!(got.starts_with(prefix), "{line}\n  got: {got}"),
            None => assert_eq!(got, want, "{line}"),
        }
    }
}

fn check(schema: &Value, doc: &Value) -> String {
    let s = Schema::compile(schema).unwrap_or_else(|e| panic!("{e}"));
    s.validate(doc).err().unwrap_or("ok".into())
}

#[test]
fn type_single_and_union() {
    run(r##"
        schema {"type": "string"}
        ok ["x"]
        5 => at /: expected a string, found a number
        null => at /: expected a string, found null
        schema {"type": ["integer", "null"]}
        ok [null, -3]
        [] => at /: expected null or an integer, found an array
        schema {"type": ["object", "boolean"]}
        ok [{}, false]
        "true" => at /: expected a boolean or an object, found a string
    "##);
}

#[test]
fn integer_accepts_integral_numbers() {
    run(r##"
        schema {"type": "integer"}
        ok [1, 1.0, 1e2, 18446744073709551615]
        1.5 => at /: expected an integer, found a number
        schema {"type": "number"}
        ok [3, 0.5]
    "##);
}

#[test]
fn enum_and_const_use_json_equality() {
    run(r##"
        schema {"enum": [1, "a", {"k": [1, 2]}, null]}
        ok [1.0, "a", {"k": [1.0, 2]}, null]
        "b" => at /: value is not one of the 4 allowed by enum
        "1" => at /: value is not one of the 4 allowed by enum
        {"k": [2, 1]} => at /: value is not one of the 4 allowed by enum
        schema {"const": {"a": 1, "b": [true, "x"]}}
        ok [{"b": [true, "x"], "a": 1.0}]
        {"a": 1} => at /: value does not equal the const value
    "##);
}

#[test]
fn properties_and_required() {
    run(r##"
        schema {"required": ["name", "age"], "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}
        ok [{"name": "x", "age": 3, "extra": 1}]
        {"age": 3} => at /: missing required property 'name'
        {"name": "x", "age": "3"} => at /age: expected an integer, found a string
        ok ["not an object"]
    "##);
}

#[test]
fn additional_properties() {
    run(r##"
        schema {"properties": {"a": {}}, "additionalProperties": false}
        ok [{"a": 1}]
        {"a": 1, "b": 2} => at /: property 'b' is not allowed (additionalProperties: false)
        schema {"properties": {"a": {}}, "additionalProperties": {"type": "number"}}
        ok [{"a": "s", "b": 2}]
        {"b": "s"} => at /b: expected a number, found a string
    "##);
}

#[test]
fn property_counts() {
    run(r##"
        schema {"minProperties": 1, "maxProperties": 2}
        ok [{"a": 1}]
        {} => at /: object has 0 properties, fewer than minProperties 1
        {"a": 1, "b": 2, "c": 3} => at /: object has 3 properties, more than maxProperties 2
    "##);
}

#[test]
fn items_and_prefix_items() {
    run(r##"
        schema {"properties": {"items": {"items": {"properties": {"name": {"type": "string"}}}}}}
        ok [{"items": [{"name": "a"}, {}]}]
        {"items": [{"name": "a"}, {}, {"name": 5}]} => at /items/2/name: expected a string, found a number
        schema {"prefixItems": [{"type": "string"}, {"type": "integer"}], "items": {"type": "boolean"}}
        ok [["a", 1, true, false], ["a"]]
        ["a", 1, 2] => at /2: expected a boolean, found a number
        [1] => at /0: expected a string, found a number
        schema {"prefixItems": [{}], "items": false}
        ok [[1]]
        [1, 2] => at /1: no value is allowed here
    "##);
}

#[test]
fn item_counts_and_uniqueness() {
    run(r##"
        schema {"minItems": 1, "maxItems": 3, "uniqueItems": true}
        ok [[1, "1", {"a": 1}]]
        [] => at /: array has 0 items, fewer than minItems 1
        [1, 2, 3, 4] => at /: array has 4 items, more than maxItems 3
        [1, 2, 1.0] => at /: items 0 and 2 are equal, but uniqueItems is set
        [{"a": 1, "b": [2]}, {"b": [2.0], "a": 1.0}] => at /: items 0 and 1 are equal*
        schema {"uniqueItems": false}
        ok [[1, 1]]
    "##);
}

#[test]
fn string_lengths_count_unicode_scalar_values() {
    run(r##"
        schema {"minLength": 2, "maxLength": 3}
        ok ["日本語", "é!", 12345]
        "日本語!" => at /: string has 4 characters, more than maxLength 3
        "é" => at /: string has 1 character, fewer than minLength 2
        schema {"pattern": "^[A-Z]{2}-[0-9]+$"}
        ok ["AB-12", 7]
        "ab-12" => at /: string does not match the pattern
    "##);
}

#[test]
fn numeric_bounds() {
    run(r##"
        schema {"minimum": 1, "maximum": 10.5}
        ok [1, 10.5]
        0.5 => at /: number must be >= 1 (minimum)
        11 => at /: number must be <= 10.5 (maximum)
        schema {"exclusiveMinimum": 0, "exclusiveMaximum": 1}
        ok [0.5, "x"]
        0 => at /: number must be > 0 (exclusiveMinimum)
        1.0 => at /: number must be < 1 (exclusiveMaximum)
        schema {"maximum": 18446744073709551614}
        ok [-1]
        18446744073709551615 => at /: number must be <= 18446744073709551614 (maximum)
    "##);
}

#[test]
fn multiple_of() {
    run(r##"
        schema {"multipleOf": 0.1}
        ok [0.3, 7]
        0.35 => at /: number is not a multiple of 0.1
        schema {"multipleOf": 5}
        ok [-10, 15.0]
        7 => at /: number is not a multiple of 5
        7.5 => at /: number is not a multiple of 5
    "##);
}

#[test]
fn combinators() {
    run(r##"
        schema {"allOf": [{"type": "integer"}, {"minimum": 2}]}
        ok [3]
        1 => at /: number must be >= 2 (minimum)
        schema {"anyOf": [{"type": "string"}, {"type": "null"}]}
        ok [null]
        1 => at /: no anyOf alternative matches: [0] at /: expected a string, found a number; [1] at /: expected null, found a number
        schema {"oneOf": [{"type": "integer"}, {"minimum": 0}]}
        ok [-1, 0.5]
        1 => at /: oneOf alternatives 0 and 1 both match
        -0.5 => at /: no oneOf alternative matches*
        schema {"not": {"type": "string"}}
        ok [1]
        "x" => at /: value must not match the schema of 'not'
    "##);
}

#[test]
fn boolean_schemas() {
    run(r##"
        schema true
        ok [{"any": "thing"}]
        schema false
        1 => at /: no value is allowed here
        schema {"properties": {"a": false}}
        {"a": 1} => at /a: no value is allowed here
    "##);
}

#[test]
fn refs_to_defs_definitions_and_pointers() {
    run(r##"
        schema {"$defs": {"name": {"type": "string"}, "a/b": {"type": "integer"}, "p%q": {"const": 1}}, "definitions": {"age": {"minimum": 0}}, "allOf": [{"type": "object"}], "properties": {"n": {"$ref": "#/$defs/name"}, "age": {"$ref": "#/definitions/age"}, "x": {"$ref": "#/$defs/a~1b"}, "y": {"$ref": "#/$defs/p%25q"}, "z": {"$ref": "#/properties/x"}, "first": {"$ref": "#/allOf/0"}}}
        ok [{"n": "a", "age": 1, "x": 1, "y": 1.0, "z": 2, "first": {}}]
        {"n": 1} => at /n: expected a string, found a number
        {"age": -1} => at /age: number must be >= 0 (minimum)
        {"z": 1.5} => at /z: expected an integer, found a number
        {"y": 2} => at /y: value does not equal the const value
        {"first": 1} => at /first: expected an object, found a number
    "##);
}

#[test]
fn recursive_tree_via_ref() {
    run(r##"
        schema {"$defs": {"node": {"type": "object", "required": ["value"], "additionalProperties": false, "properties": {"value": {"type": "integer"}, "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}}, "$ref": "#/$defs/node"}
        ok [{"value": 1, "children": [{"value": 2, "children": [{"value": 3}]}, {"value": 4}]}]
        {"value": 1, "children": [{"value": 2, "children": [{"value": "x"}]}]} => at /children/0/children/0/value: expected an integer, found a string
        {"value": 1, "children": [{"value": 2, "children": [{"value": 3, "x": 1}]}]} => at /children/0/children/0: property 'x' is not allowed*
        schema {"type": ["array", "integer"], "items": {"$ref": "#"}}
        ok [[1, [2, [3, []]]]]
        [1, [2, [3, ["x"]]]] => at /1/1/1/0: expected an array or an integer, found a string
    "##);
}

#[test]
fn depth_is_capped() {
    run(r##"
        schema {"$ref": "#"}
        1 => at /: validation depth exceeds 64 (a $ref cycle?)
        schema {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"allOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"}
        1 => at /: validation depth exceeds 64 (a $ref cycle?)
        schema {"not": {"$ref": "#"}}
        1 => at /: validation depth exceeds 64 (a $ref cycle?)
        schema {"anyOf": [{"$ref": "#"}, true]}
        1 => at /: validation depth exceeds 64 (a $ref cycle?)
    "##);
    let (mut deep, mut nested) = (json!([]), json!(true));
    for _ in 0..100 {
        (deep, nested) = (json!([deep]), json!({"not": nested}));
    }
    let e = check(&json!({"items": {"$ref": "#"}}), &deep);
    assert!(
        e.starts_with("at /0/0/0/") && e.ends_with("validation depth exceeds 64 (a $ref cycle?)")
    );
    let e = Schema::compile(&nested).unwrap_err();
    assert!(e.starts_with("at /not/not/") && e.ends_with(": schema nesting exceeds 64 levels"));
}

#[test]
fn work_is_bounded() {
    let alt = json!({"allOf": [{"properties": {"a": {"$ref": "#"}}}, {"type": "integer"}]});
    let mut doc = json!("x");
    for _ in 0..15 {
        doc = json!({"a": doc});
    }
    let schema = json!({"anyOf": [alt, alt, alt, alt, alt, alt, alt, alt, {"type": "integer"}]});
    let e = "at /a/a/a/a/a/a/a/a/a/a/a/a/a/a/a: validation exceeds 1000000 steps";
    assert_eq!(check(&schema, &doc), e);
}

#[test]
fn schema_errors_name_the_pointer() {
    run(r##"
        bad {"type": "strnig"} => at /type: unknown type 'strnig' (expected null, boolean, object, array, number, integer or string)
        bad {"properties": {"age": {"type": ["integer", "nul"]}}} => at /properties/age/type/1: unknown type 'nul'*
        bad {"minimum": "x"} => at /minimum: must be a number
        bad {"minLength": -1} => at /minLength: must be a non-negative integer
        bad {"maxItems": 1.5} => at /maxItems: must be a non-negative integer
        bad {"multipleOf": 0} => at /multipleOf: must be a number above 0
        bad {"required": "a"} => at /required: must be an array of strings
        bad {"anyOf": []} => at /anyOf: must be a non-empty array of schemas
        bad {"items": {"not": 5}} => at /items/not: a schema must be an object or a boolean
        bad {"uniqueItems": "yes"} => at /uniqueItems: must be a boolean
        bad {"enum": 1} => at /enum: must be an array
        bad {"$defs": {"a~b": {"type": 1}}} => at /$defs/a~0b/type: a type must be a string
        bad 3 => at /: a schema must be an object or a boolean
        bad {"type": []} => at /type: must not be an empty array
        bad {"type": ["null", "null"]} => at /type/1: duplicate type
        bad {"items": [{}]} => at /items: must be a schema (tuples: prefixItems)
        bad {"properties": []} => at /properties: must be an object of schemas
    "##);
}

#[test]
fn unsupported_keywords_are_rejected() {
    run(r##"
        bad {"properties": {"email": {"type": "string", "pattern": "(?<=a)b"}}} => at /properties/email/pattern: not a regular expression*
        bad {"patternProperties": {"^x": {}}} => at /patternProperties: keyword 'patternProperties' is not supported by this validator
        bad {"anyOf": [{"if": {}, "then": {}}]} => at /anyOf/0/if: keyword 'if' is not supported*
        bad {"$dynamicRef": "#meta"} => at /$dynamicRef: keyword '$dynamicRef' is not supported*
        bad {"unevaluatedProperties": false} => at /unevaluatedProperties: keyword*
        bad {"items": {"contains": {}}} => at /items/contains: keyword 'contains' is not supported*
        bad {"items": {"$id": "x"}} => at /items/$id: keyword '$id' is not supported*
    "##);
}

#[test]
fn bad_refs_are_rejected() {
    run(r##"
        bad {"properties": {"a": {"$ref": "http://example.com/s.json"}}} => at /properties/a/$ref: remote $ref 'http://example.com/s.json' is not supported*
        bad {"$ref": 1} => at /$ref: must be a string
        bad {"not": {"$ref": "other.json#/a"}} => at /not/$ref: $ref 'other.json#/a' is not supported*
        bad {"not": {"$ref": "#anchor"}} => at /not/$ref: $ref '#anchor' names an anchor*
        bad {"not": {"$ref": "#/$defs/missing"}} => at /not/$ref: $ref '#/$defs/missing' does not resolve in this schema
        bad {"$defs": {"a": {}}, "not": {"$ref": "#/$defs/a~2"}} => at /not/$ref: $ref '#/$defs/a~2' contains an invalid '~' escape
        bad {"not": {"$ref": "#/$defs/%zz"}} => at /not/$ref: $ref '#/$defs/%zz' has invalid percent-encoding
        bad {"prefixItems": [{}], "not": {"$ref": "#/prefixItems/01"}} => at /not/$ref: $ref '#/prefixItems/01' does not resolve*
    "##);
}

#[test]
fn annotations_and_unknown_keywords_are_ignored() {
    run(r##"
        schema {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "https://example.com/a", "$comment": "c", "title": "t", "description": "d", "examples": [1], "default": 1, "deprecated": false, "readOnly": true, "writeOnly": false, "format": "email", "x-vendor": {"pattern": "["}, "type": "string"}
        ok ["not an email"]
        1 => at /: expected a string, found a number
    "##);
}

#[test]
fn document_values_are_never_echoed() {
    let secret = "SECRET-4111";
    let props = json!({"card": {"type": "number"}});
    for schema in [
        json!({"type": "integer"}),
        json!({"enum": ["a", "b"]}),
        json!({"const": "a"}),
        json!({"maxLength": 3}),
        json!({"not": {"type": "string"}}),
        json!({"anyOf": [{"type": "number"}, {"enum": ["x"]}]}),
        json!({"oneOf": [{}, {}]}),
        json!({"properties": props, "uniqueItems": true, "additionalProperties": {"maxLength": 1}}),
    ] {
        for doc in [
            json!(secret),
            json!({"card": secret, "note": secret}),
            json!([secret, secret]),
        ] {
            let e = check(&schema, &doc);
            assert!(!e.contains("SECRET") && !e.contains("4111"), "{e}");
        }
    }
}

#[test]
fn document_pointer_is_escaped() {
    run(r##"
        schema {"additionalProperties": {"type": "string"}}
        {"a/b~c": 1} => at /a~1b~0c: expected a string, found a number
    "##);
}

#[test]
fn openai_strict_mode_schema() {
    let step = r#"{"type": "object", "additionalProperties": false, "required": ["explanation", "output"], "properties": {"explanation": {"type": "string"}, "output": {"type": "string"}}}"#;
    let unit = r#"{"anyOf": [{"type": "string", "enum": ["kg", "lb"]}, {"type": "null"}]}"#;
    let meta = format!(
        r#"{{"type": "object", "additionalProperties": false, "required": ["confidence", "tags", "unit"], "properties": {{"confidence": {{"type": "number", "minimum": 0, "maximum": 1}}, "tags": {{"type": "array", "items": {{"type": "string"}}}}, "unit": {unit}}}}}"#
    );
    run(&format!(
        r#"
        schema {{"type": "object", "additionalProperties": false, "required": ["steps", "final_answer", "meta"], "properties": {{"steps": {{"type": "array", "items": {step}}}, "final_answer": {{"type": "string"}}, "meta": {meta}}}}}
        {{"steps": [{{"explanation": "e", "output": "o"}}], "final_answer": "42", "meta": {{"confidence": 0.9, "tags": ["a"], "unit": null}}}} => ok
        {{"steps": [{{"explanation": "e", "output": "o", "extra": 1}}], "final_answer": "42", "meta": {{"confidence": 0.9, "tags": ["a"], "unit": null}}}} => at /steps/0: property 'extra' is not allowed (additionalProperties: false)
        {{"steps": [], "final_answer": "42", "meta": {{"confidence": 1.5, "tags": ["a"], "unit": null}}}} => at /meta/confidence: number must be <= 1 (maximum)
        {{"steps": [], "final_answer": "42", "meta": {{"confidence": 1, "tags": ["a"], "unit": "g"}}}} => at /meta/unit: no anyOf alternative matches*
        {{"steps": [], "final_answer": "42", "meta": {{"confidence": 1, "unit": "kg"}}}} => at /meta: missing required property 'tags'
        {{"steps": [{{"output": "o"}}], "final_answer": "42", "meta": {{"confidence": 0, "tags": [], "unit": "kg"}}}} => at /steps/0: missing required property 'explanation'
        {{"steps": [], "final_answer": ["4", "2"], "meta": {{"confidence": 0, "tags": [], "unit": "kg"}}}} => at /final_answer: expected a string, found an array
    "#
    ));
}

#[test]
fn compiled_schema_is_reusable() {
    let s = Schema::compile(&json!({"properties": {"a": {"type": "integer"}}})).unwrap();
    let copy = s.clone();
    for n in 0..3 {
        assert!(copy.validate(&json!({"a": n})).is_ok() && s.validate(&json!({"a": "x"})).is_err());
    }
    assert!(format!("{s:?}").starts_with("Schema"));
}
