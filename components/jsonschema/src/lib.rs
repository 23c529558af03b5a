//! A small JSON Schema validator for a documented subset of draft 2020-12, shared by policy
//! components: `guardrail` checks an LLM's JSON answer against the schema of
//! `response_format: {"type":"json_schema",...}` (OpenAI structured outputs) or one configured by
//! the operator; `mcp-guard` checks a tool call's arguments against the tool's input schema.
//!
//! Supported: `type` (string or array; `integer` accepts `1.0`), `enum`, `const` (JSON equality,
//! `1 == 1.0`), `properties`, `required`, `additionalProperties`, `minProperties`/`maxProperties`,
//! `items` (2020-12 meaning), `prefixItems`, `minItems`/`maxItems`, `uniqueItems`,
//! `minLength`/`maxLength` (Unicode scalar values), `minimum`/`maximum`/`exclusiveMinimum`/
//! `exclusiveMaximum`, `multipleOf`, `pattern` (regex-lite syntax), `allOf`/`anyOf`/`oneOf`/`not`, boolean schemas, `$defs`/
//! `definitions` and local `$ref` (`#` or any JSON pointer into the schema, with `~0`/`~1` and
//! percent-decoding; recursion works). Annotations and unknown keywords are ignored; keywords
//! that would change validation but are not implemented (`patternProperties`,
//! `if`/`then`/`else`, `$dynamicRef`, `contains`, `unevaluated*`, `dependent*`, `propertyNames`,
//! nested `$id`, remote or anchor `$ref`, ...) are rejected by [`Schema::compile`].
//!
//! Bounded: schema nesting and validation depth are capped at 64 and the work per document at
//! a million steps, so a hostile schema cannot exhaust the stack or the CPU. Error messages name
//! types, counts, lengths and property names, never string values of the document.

use serde_json::{Map, Number, Value};
use std::cmp::Ordering::{self, Equal, Greater, Less};
use std::collections::{BTreeMap, HashMap};

const MAX_DEPTH: usize = 64;
const MAX_STEPS: u64 = 1_000_000;
/// Type names and how a value of the type is described; the type's bit is `1 << index`.
const TYPES: [(&str, &str); 7] = [
    ("null", "null"),
    ("boolean", "a boolean"),
    ("object", "an object"),
    ("array", "an array"),
    ("number", "a number"),
    ("integer", "an integer"),
    ("string", "a string"),
];
const INTEGER: u8 = 1 << 5;
/// `min*`/`max*` count keywords, in pairs: objects, arrays, strings.
const SIZES: &str = "minProperties maxProperties minItems maxItems minLength maxLength";
/// What [`SIZES`] count, per pair.
const UNITS: [(&str, &str, &str); 3] = [
    ("object", "property", "properties"),
    ("array", "item", "items"),
    ("string", "character", "characters"),
];
/// Bound keywords, the comparison result that fails, and the relation required.
const BOUNDS: [(&str, Ordering, &str); 4] = [
    ("minimum", Less, ">="),
    ("maximum", Greater, "<="),
    ("exclusiveMinimum", Less, ">"),
    ("exclusiveMaximum", Greater, "<"),
];
/// Keywords that would change validation but are not implemented.
const UNSUPPORTED: &str = "patternProperties if then else dependentRequired \
    dependentSchemas dependencies unevaluatedProperties unevaluatedItems contains minContains \
    maxContains propertyNames additionalItems $dynamicRef $recursiveRef nullable";

/// `return Err(at(pointer, format!(...)))`: a schema error.
macro_rules! bail {
    ($p:expr, $($f:tt)+) => { return Err(at($p, format!($($f)+))) };
}
/// The document does not match (not fatal: `not`/`anyOf`/`oneOf` may still accept it).
macro_rules! reject {
    ($s:expr, $($f:tt)+) => {
        return Err(Fail { msg: at(&$s.path, format!($($f)+)), fatal: false })
    };
}

/// A compiled schema (checked once, used for many documents).
#[derive(Debug, Clone)]
pub struct Schema {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone)]
enum Node {
    Bool(bool),
    Rules(Box<Rules>),
}

#[derive(Debug, Clone, Default)]
struct Rules {
    types: u8,
    enum_: Option<Vec<String>>,
    const_: Option<String>,
    properties: BTreeMap<String, usize>,
    required: Vec<String>,
    additional: Option<usize>,
    sizes: [Option<u64>; 6],
    bounds: [Option<Number>; 4],
    multiple_of: Option<Number>,
    prefix_items: Vec<usize>,
    items: Option<usize>,
    unique: bool,
    all_of: Vec<usize>,
    any_of: Vec<usize>,
    one_of: Vec<usize>,
    not: Option<usize>,
    ref_: Option<usize>,
    /// `pattern`: searched anywhere in the string (ECMA-262 semantics, in regex-lite syntax).
    pattern: Option<regex_lite::Regex>,
}

impl Schema {
    /// Checks the schema itself; the error names the JSON pointer in the schema (e.g.
    /// `at /properties/age/type: ...`) and what is wrong there, including unsupported keywords
    /// that would change validation. Annotation keywords are accepted and ignored.
    pub fn compile(schema: &Value) -> Result<Schema, String> {
        let (nodes, index, pending) = (vec![], HashMap::new(), vec![]);
        let mut c = Compiler {
            root: schema,
            nodes,
            index,
            pending,
        };
        c.sub(schema, String::new(), 0)?;
        while let Some((value, ptr, i)) = c.pending.pop() {
            c.nodes[i] = c.node(value, &ptr, 0)?;
        }
        Ok(Schema { nodes: c.nodes })
    }

    /// Validates a document; on failure returns the first error as `at <pointer>: <message>`
    /// (pointer into the document, `/` for the root). String values are never echoed.
    pub fn validate(&self, doc: &Value) -> Result<(), String> {
        let mut run = Run {
            nodes: &self.nodes,
            steps: 0,
            path: String::new(),
        };
        run.check(0, doc, 0).map_err(|f| f.msg)
    }
}

fn at(path: &str, msg: impl std::fmt::Display) -> String {
    format!("at {}: {msg}", if path.is_empty() { "/" } else { path })
}

fn esc(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn kind_index(v: &Value) -> usize {
    match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Object(_) => 2,
        Value::Array(_) => 3,
        Value::Number(_) => 4,
        Value::String(_) => 6,
    }
}

fn kind(v: &Value) -> &'static str {
    TYPES[kind_index(v)].1
}

struct Compiler<'a> {
    root: &'a Value,
    nodes: Vec<Node>,
    /// Schema pointer (escaped) -> node: each subschema is compiled once, `$ref` cycles close.
    index: HashMap<String, usize>,
    /// `$ref` targets reserved but not compiled yet (done in a loop, not by recursion).
    pending: Vec<(&'a Value, String, usize)>,
}

impl<'a> Compiler<'a> {
    fn sub(&mut self, v: &Value, ptr: String, depth: usize) -> Result<usize, String> {
        if let Some(&i) = self.index.get(&ptr) {
            return Ok(i);
        }
        if depth > MAX_DEPTH {
            bail!(&ptr, "schema nesting exceeds {MAX_DEPTH} levels");
        }
        let i = self.nodes.len();
        self.nodes.push(Node::Bool(true));
        self.index.insert(ptr.clone(), i);
        self.nodes[i] = self.node(v, &ptr, depth)?;
        Ok(i)
    }

    fn subs(&mut self, v: &Value, kp: &str, depth: usize) -> Result<Vec<usize>, String> {
        match v {
            Value::Array(a) if !a.is_empty() => {
                let each = a.iter().enumerate();
                each.map(|(n, s)| self.sub(s, format!("{kp}/{n}"), depth + 1))
                    .collect()
            }
            _ => bail!(kp, "must be a non-empty array of schemas"),
        }
    }

    fn node(&mut self, v: &Value, ptr: &str, depth: usize) -> Result<Node, String> {
        let map = match v {
            Value::Bool(b) => return Ok(Node::Bool(*b)),
            Value::Object(m) => m,
            _ => bail!(ptr, "a schema must be an object or a boolean"),
        };
        let mut r = Rules::default();
        for (key, val) in map {
            let (kp, k, d) = (format!("{ptr}/{}", esc(key)), key.as_str(), depth + 1);
            if let Some(i) = SIZES.split(' ').position(|s| s == k) {
                let f = val.as_f64().filter(|f| *f >= 0.0 && f.fract() == 0.0);
                let n = val.as_u64().or(f.map(|f| f as u64));
                r.sizes[i] = Some(need(n, &kp, "must be a non-negative integer")?);
                continue;
            }
            if let Some(i) = BOUNDS.iter().position(|b| b.0 == k) {
                r.bounds[i] = Some(need(val.as_number().cloned(), &kp, "must be a number")?);
                continue;
            }
            match k {
                "type" => r.types = types(val, &kp)?,
                "enum" => match val {
                    Value::Array(a) => r.enum_ = Some(a.iter().map(canon).collect()),
                    _ => bail!(&kp, "must be an array"),
                },
                "const" => r.const_ = Some(canon(val)),
                "properties" | "$defs" | "definitions" => {
                    let props = need(val.as_object(), &kp, "must be an object of schemas")?;
                    for (name, s) in props {
                        let i = self.sub(s, format!("{kp}/{}", esc(name)), d)?;
                        if k == "properties" {
                            r.properties.insert(name.clone(), i);
                        }
                    }
                }
                "required" => {
                    let names = val
                        .as_array()
                        .map(|a| a.iter().map(|n| n.as_str()).collect());
                    let names: Vec<_> = need(names.flatten(), &kp, "must be an array of strings")?;
                    r.required = names.into_iter().map(String::from).collect();
                }
                "additionalProperties" => r.additional = Some(self.sub(val, kp, d)?),
                "not" => r.not = Some(self.sub(val, kp, d)?),
                "items" if val.is_array() => bail!(&kp, "must be a schema (tuples: prefixItems)"),
                "items" => r.items = Some(self.sub(val, kp, d)?),
                "prefixItems" => r.prefix_items = self.subs(val, &kp, depth)?,
                "allOf" => r.all_of = self.subs(val, &kp, depth)?,
                "anyOf" => r.any_of = self.subs(val, &kp, depth)?,
                "oneOf" => r.one_of = self.subs(val, &kp, depth)?,
                "uniqueItems" => {
                    r.unique = need(val.as_bool(), &kp, "must be a boolean")?;
                }
                "multipleOf" => {
                    let n = val
                        .as_number()
                        .filter(|n| n.as_f64().is_some_and(|f| f > 0.0));
                    r.multiple_of = Some(need(n.cloned(), &kp, "must be a number above 0")?);
                }
                "pattern" => {
                    let raw = need(val.as_str(), &kp, "must be a string")?;
                    match regex_lite::RegexBuilder::new(raw)
                        .size_limit(1 << 20)
                        .build()
                    {
                        Ok(re) => r.pattern = Some(re),
                        Err(_) => bail!(
                            &kp,
                            "not a regular expression this validator supports (regex-lite syntax: no look-around or back-references)"
                        ),
                    }
                }
                "$ref" => {
                    let raw = need(val.as_str(), &kp, "must be a string")?;
                    r.ref_ = Some(self.reference(raw, &kp)?);
                }
                _ if UNSUPPORTED.split_whitespace().any(|u| u == k)
                    || (k == "$id" && !ptr.is_empty()) =>
                {
                    bail!(&kp, "keyword '{k}' is not supported by this validator")
                }
                _ => {} // annotations (title, description, format, default, ...), unknown keywords
            }
        }
        Ok(Node::Rules(Box::new(r)))
    }

    fn reference(&mut self, raw: &str, kp: &str) -> Result<usize, String> {
        let tokens = parse_ref(raw).map_err(|m| at(kp, m))?;
        let key: String = tokens.iter().map(|t| format!("/{}", esc(t))).collect();
        if let Some(&i) = self.index.get(&key) {
            return Ok(i);
        }
        let mut cur = self.root;
        for t in &tokens {
            let canonical =
                t.bytes().all(|c| c.is_ascii_digit()) && (t == "0" || !t.starts_with('0'));
            let next = match cur {
                Value::Object(m) => m.get(t),
                Value::Array(a) if canonical => t.parse::<usize>().ok().and_then(|n| a.get(n)),
                _ => None,
            };
            let Some(next) = next else {
                bail!(kp, "$ref '{raw}' does not resolve in this schema")
            };
            cur = next;
        }
        let i = self.nodes.len();
        self.nodes.push(Node::Bool(true));
        self.index.insert(key.clone(), i);
        self.pending.push((cur, key, i));
        Ok(i)
    }
}

fn types(v: &Value, kp: &str) -> Result<u8, String> {
    let bit = |s: &Value, p: &str| -> Result<u8, String> {
        let Some(name) = s.as_str() else {
            bail!(p, "a type must be a string")
        };
        match TYPES.iter().position(|t| t.0 == name) {
            Some(i) => Ok(1 << i),
            None => bail!(
                p,
                "unknown type '{name}' (expected null, boolean, object, array, \
                number, integer or string)"
            ),
        }
    };
    let Value::Array(a) = v else {
        return bit(v, kp);
    };
    if a.is_empty() {
        bail!(kp, "must not be an empty array");
    }
    a.iter().enumerate().try_fold(0, |acc, (n, s)| {
        let b = bit(s, &format!("{kp}/{n}"))?;
        if acc & b != 0 {
            bail!(&format!("{kp}/{n}"), "duplicate type");
        }
        Ok(acc | b)
    })
}

fn parse_ref(r: &str) -> Result<Vec<String>, String> {
    let Some(frag) = r.strip_prefix('#') else {
        if r.contains("://") || r.starts_with("urn:") {
            return Err(format!(
                "remote $ref '{r}' is not supported; only local ones ('#/...') are"
            ));
        }
        return Err(format!(
            "$ref '{r}' is not supported; only local ones ('#/...') are"
        ));
    };
    let Some(frag) = percent_decode(frag) else {
        return Err(format!("$ref '{r}' has invalid percent-encoding"));
    };
    if frag.is_empty() {
        return Ok(vec![]);
    }
    let Some(rest) = frag.strip_prefix('/') else {
        return Err(format!(
            "$ref '{r}' names an anchor, which is not supported (use '#/$defs/...')"
        ));
    };
    let unescape = |t: &str| {
        let bad = t.split('~').skip(1).any(|s| !s.starts_with(['0', '1']));
        (!bad).then(|| t.replace("~1", "/").replace("~0", "~"))
    };
    let tokens: Option<Vec<_>> = rest.split('/').map(unescape).collect();
    tokens.ok_or_else(|| format!("$ref '{r}' contains an invalid '~' escape"))
}

fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        let hex = [bytes.next()?, bytes.next()?];
        let hex = std::str::from_utf8(&hex)
            .ok()
            .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()));
        out.push(u8::from_str_radix(hex?, 16).ok()?);
    }
    String::from_utf8(out).ok()
}

fn as_i128(n: &Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

fn num_cmp(a: &Number, b: &Number) -> Ordering {
    match (as_i128(a), as_i128(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => a.as_f64().partial_cmp(&b.as_f64()).unwrap_or(Equal),
    }
}

fn is_integral(n: &Number) -> bool {
    as_i128(n).is_some()
        || n.as_f64()
            .is_some_and(|f| f.is_finite() && f.fract() == 0.0)
}

fn is_multiple(n: &Number, m: &Number) -> bool {
    if let (Some(x), Some(y)) = (as_i128(n), as_i128(m)) {
        return y != 0 && x % y == 0;
    }
    let q = n.as_f64().unwrap_or(f64::NAN) / m.as_f64().unwrap_or(f64::NAN);
    q.is_finite() && (q - q.round()).abs() <= q.abs().max(1.0) * 1e-12
}

/// A canonical string for JSON equality: `1 == 1.0`, object key order does not matter.
fn canon(v: &Value) -> String {
    match v {
        Value::Number(n) => match (as_i128(n), n.as_f64().unwrap_or(f64::NAN)) {
            (Some(i), _) => format!("#{i}"),
            (None, f) if f.fract() == 0.0 && f.abs() < 1e30 => format!("#{}", f as i128),
            (None, f) => format!("#{f:e}"),
        },
        Value::String(s) => format!("s{}:{s}", s.len()),
        Value::Array(a) => format!("[{}]", a.iter().map(|x| canon(x) + ",").collect::<String>()),
        Value::Object(m) => {
            let mut e: Vec<_> = m
                .iter()
                .map(|(k, x)| format!("{}:{k}{},", k.len(), canon(x)))
                .collect();
            e.sort();
            format!("{{{}}}", e.concat())
        }
        _ => v.to_string(), // null, true, false
    }
}

fn need<T>(v: Option<T>, kp: &str, msg: &str) -> Result<T, String> {
    v.ok_or_else(|| at(kp, msg))
}

struct Fail {
    msg: String,
    /// Depth or work limit reached: passes through `not`/`anyOf`/`oneOf` instead of counting
    /// as a mismatch there.
    fatal: bool,
}

/// At most 150 characters of `s`, so that nested `anyOf`/`oneOf` messages stay short.
fn clip(s: &str) -> String {
    match s.char_indices().nth(150) {
        Some((i, _)) => format!("{}...", s.get(..i).unwrap_or_default()),
        None => s.to_string(),
    }
}

struct Run<'s> {
    nodes: &'s [Node],
    steps: u64,
    /// JSON pointer of the value being checked.
    path: String,
}

impl Run<'_> {
    fn check(&mut self, i: usize, v: &Value, depth: usize) -> Result<(), Fail> {
        self.steps += 1;
        let limit = if depth > MAX_DEPTH {
            Some(format!(
                "validation depth exceeds {MAX_DEPTH} (a $ref cycle?)"
            ))
        } else {
            (self.steps > MAX_STEPS).then(|| format!("validation exceeds {MAX_STEPS} steps"))
        };
        let r = match (limit, self.nodes.get(i)) {
            (Some(msg), _) => {
                return Err(Fail {
                    msg: at(&self.path, msg),
                    fatal: true,
                });
            }
            (None, Some(Node::Rules(r))) => r,
            (None, Some(Node::Bool(false))) => reject!(self, "no value is allowed here"),
            (None, _) => return Ok(()),
        };
        if let Some(target) = r.ref_ {
            self.check(target, v, depth + 1)?;
        }
        let int_ok = matches!(v, Value::Number(n) if r.types & INTEGER != 0 && is_integral(n));
        if r.types != 0 && r.types & (1 << kind_index(v)) == 0 && !int_ok {
            let names = TYPES
                .iter()
                .enumerate()
                .filter(|(i, _)| r.types & (1 << i) != 0);
            let names: Vec<_> = names.map(|(_, t)| t.1).collect();
            reject!(self, "expected {}, found {}", names.join(" or "), kind(v));
        }
        if let Some(e) = r.enum_.as_ref().filter(|e| !e.contains(&canon(v))) {
            reject!(self, "value is not one of the {} allowed by enum", e.len());
        }
        if r.const_.as_ref().is_some_and(|c| *c != canon(v)) {
            reject!(self, "value does not equal the const value");
        }
        match v {
            Value::Number(n) => self.number(r, n)?,
            Value::String(s) => {
                self.sizes(r, 4, s.chars().count())?;
                if r.pattern.as_ref().is_some_and(|p| !p.is_match(s)) {
                    reject!(self, "string does not match the pattern");
                }
            }
            Value::Array(a) => self.array(r, a, depth)?,
            Value::Object(o) => self.object(r, o, depth)?,
            _ => {}
        }
        for &sub in &r.all_of {
            self.check(sub, v, depth + 1)?;
        }
        for (alts, name) in [(&r.any_of, "anyOf"), (&r.one_of, "oneOf")] {
            let (mut hits, mut errs) = (vec![], vec![]);
            for (n, &alt) in alts.iter().enumerate() {
                match self.check(alt, v, depth + 1) {
                    Ok(()) => hits.push(n),
                    Err(f) if f.fatal => return Err(f),
                    Err(f) if errs.len() < 2 => errs.push(format!("[{n}] {}", clip(&f.msg))),
                    Err(_) => {}
                }
                if hits.len() > usize::from(name == "oneOf") {
                    break;
                }
            }
            let errs = errs.join("; ");
            match hits[..] {
                [] if !alts.is_empty() => reject!(self, "no {name} alternative matches: {errs}"),
                [a, b, ..] => reject!(self, "{name} alternatives {a} and {b} both match"),
                _ => {}
            }
        }
        match r.not.map(|not| self.check(not, v, depth + 1)) {
            Some(Ok(())) => reject!(self, "value must not match the schema of 'not'"),
            Some(Err(f)) if f.fatal => Err(f),
            _ => Ok(()),
        }
    }

    /// Checks the `min*`/`max*` pair at `slot`, `slot + 1` of [`SIZES`] against a count.
    fn sizes(&self, r: &Rules, slot: usize, n: usize) -> Result<(), Fail> {
        let (what, one, many) = UNITS[slot / 2];
        let (count, unit) = (n as u64, if n == 1 { one } else { many });
        let mut names = SIZES.split(' ').skip(slot);
        let (min, max) = (
            names.next().unwrap_or_default(),
            names.next().unwrap_or_default(),
        );
        if let Some(m) = r.sizes[slot].filter(|&m| count < m) {
            reject!(self, "{what} has {n} {unit}, fewer than {min} {m}");
        }
        if let Some(m) = r.sizes[slot + 1].filter(|&m| count > m) {
            reject!(self, "{what} has {n} {unit}, more than {max} {m}");
        }
        Ok(())
    }

    fn number(&self, r: &Rules, n: &Number) -> Result<(), Fail> {
        for (bound, (name, bad, relation)) in r.bounds.iter().zip(BOUNDS) {
            if let Some(b) = bound {
                let ord = num_cmp(n, b);
                if ord == bad || (ord == Equal && relation.len() == 1) {
                    reject!(self, "number must be {relation} {b} ({name})");
                }
            }
        }
        match &r.multiple_of {
            Some(m) if !is_multiple(n, m) => reject!(self, "number is not a multiple of {m}"),
            _ => Ok(()),
        }
    }

    /// Checks `v` at `path + "/" + seg`.
    fn child(&mut self, i: usize, v: &Value, seg: &str, depth: usize) -> Result<(), Fail> {
        let len = self.path.len();
        self.path.push('/');
        self.path.push_str(&esc(seg));
        let r = self.check(i, v, depth + 1);
        self.path.truncate(len);
        r
    }

    fn array(&mut self, r: &Rules, a: &[Value], depth: usize) -> Result<(), Fail> {
        self.sizes(r, 2, a.len())?;
        if r.unique {
            self.steps += a.len() as u64;
            let mut seen = HashMap::with_capacity(a.len());
            for (n, item) in a.iter().enumerate() {
                if let Some(first) = seen.insert(canon(item), n) {
                    reject!(
                        self,
                        "items {first} and {n} are equal, but uniqueItems is set"
                    );
                }
            }
        }
        for (n, item) in a.iter().enumerate() {
            if let Some(&sub) = r.prefix_items.get(n).or(r.items.as_ref()) {
                self.child(sub, item, &n.to_string(), depth)?;
            }
        }
        Ok(())
    }

    fn object(&mut self, r: &Rules, o: &Map<String, Value>, depth: usize) -> Result<(), Fail> {
        if let Some(name) = r.required.iter().find(|k| !o.contains_key(k.as_str())) {
            reject!(self, "missing required property '{name}'");
        }
        self.sizes(r, 0, o.len())?;
        for (k, val) in o {
            let sub = match (r.properties.get(k), r.additional) {
                (Some(&s), _) => s,
                (None, Some(s)) if matches!(self.nodes.get(s), Some(Node::Bool(false))) => {
                    reject!(
                        self,
                        "property '{k}' is not allowed (additionalProperties: false)"
                    )
                }
                (None, Some(s)) => s,
                (None, None) => continue,
            };
            self.child(sub, val, k, depth)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
