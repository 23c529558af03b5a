//! What keeps policies apart, decided once for every target: the name of a policy instance,
//! the key-value namespace it writes in, the key layout in the store, and the hosts it may
//! reach. The `weir` runtime, the edge runtime component and `weir build` all call these, so a
//! policy sees the same `instance()` and the same keys in `weir`, on Spin and on Cloudflare.
//!
//! ```
//! use weir_core::isolation::{self, Scope};
//! let instance = isolation::instance(Scope::Proxy("demo"), "token-limit", None);
//! assert_eq!(instance, "proxy:demo/token-limit");
//! assert_eq!(isolation::kv_key(&instance, "rpm"), "proxy:demo/token-limit|rpm");
//! assert!(isolation::check_host("https://[::1]:8443/x", &["::1".into()]).is_ok());
//! ```

/// Where a chain entry is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// In a provider's `policies` (runs for every proxy of the provider).
    Provider(&'a str),
    /// In a proxy's `policies` (or its `api-keys`).
    Proxy(&'a str),
    /// In an MCP proxy's `policies`.
    Mcp(&'a str),
}

/// The instance name of a chain entry: `proxy:demo/token-limit`, `provider:openai/auth`, or
/// with the entry's `id`, `proxy:demo/token-limit@tier2`. It does not depend on the entry's
/// position, so reordering a chain keeps every policy's state; the configuration requires an
/// `id` where a policy appears twice in one list.
pub fn instance(scope: Scope<'_>, policy: &str, id: Option<&str>) -> String {
    let (kind, owner) = match scope {
        Scope::Provider(p) => ("provider", p),
        Scope::Proxy(p) => ("proxy", p),
        Scope::Mcp(p) => ("mcp", p),
    };
    match id {
        Some(id) => format!("{kind}:{owner}/{policy}@{id}"),
        None => format!("{kind}:{owner}/{policy}"),
    }
}

/// The key-value namespace of an instance: its own (its instance name) unless the
/// configuration gives it a shared one (`kv-namespace: name` → `shared:name`).
pub fn namespace(instance: &str, shared: Option<&str>) -> String {
    match shared {
        Some(name) => format!("shared:{name}"),
        None => instance.to_owned(),
    }
}

/// The store key of a policy's `key` in `namespace`. Namespaces never contain `|` (names are
/// `[A-Za-z0-9._-]`), so no two namespaces share a key.
pub fn kv_key(namespace: &str, key: &str) -> String {
    let mut k = String::with_capacity(namespace.len() + 1 + key.len());
    k.push_str(namespace);
    k.push('|');
    k.push_str(key);
    k
}

/// The namespace of the vector indexes of `namespace` (`#` never occurs in a namespace).
pub fn vectors_namespace(namespace: &str) -> String {
    format!("{namespace}#vectors")
}

/// The host of an absolute `http(s)` URL: lower-case, without port, user information or the
/// brackets of an IPv6 address.
pub fn url_host(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split_once(']')?.0
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// Whether a policy whose `allow-hosts` are `allow` may reach `url`; the error says why not and
/// how to allow it.
pub fn check_host(url: &str, allow: &[String]) -> Result<(), String> {
    let Some(host) = url_host(url) else {
        return Err(format!(
            "`{url}` is not an absolute http:// or https:// URL"
        ));
    };
    let allowed = allow.iter().any(|h| {
        let h = h.trim_start_matches('[').trim_end_matches(']');
        h.eq_ignore_ascii_case(&host)
    });
    if allowed {
        Ok(())
    } else {
        Err(format!(
            "host `{host}` is not in this policy's allow-hosts: add it to the policy entry's \
             `allow-hosts` in the gateway configuration"
        ))
    }
}

/// A credential the host adds to a policy's outbound requests to one API (the MCP translator's
/// REST calls): the policy never holds it, and it goes nowhere else.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PolicyCredential {
    /// Requests to URLs under this one get it (`https://api.example.com/v1`).
    pub url_prefix: String,
    /// `authorization` (the key sent as `Bearer <key>`) or another header (the key as it is).
    pub header: String,
    /// The environment variable (at the edge: the platform secret) holding the key.
    pub secret: String,
}

impl PolicyCredential {
    /// Whether a request to `url` gets the credential: `url` is the prefix, or continues it
    /// with a path, query or fragment (so `https://api.example.com` does not cover
    /// `https://api.example.com.evil.test`).
    pub fn applies_to(&self, url: &str) -> bool {
        let prefix = self.url_prefix.as_str();
        match url.strip_prefix(prefix) {
            Some(rest) => {
                prefix.ends_with('/') || rest.is_empty() || rest.starts_with(['/', '?', '#'])
            }
            None => false,
        }
    }

    /// `headers` with the credential `key` in place of any header of the same name the policy
    /// set.
    pub fn apply(&self, headers: &mut Vec<(String, String)>, key: &str) {
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&self.header));
        let value = if self.header == "authorization" {
            format!("Bearer {key}")
        } else {
            key.to_owned()
        };
        headers.push((self.header.clone(), value));
    }
}

/// Whether a policy's metric is acceptable (`weir:policy/metrics`): a name of
/// `[a-z][a-z0-9_]{0,63}`, at most 4 labels named `[a-z][a-z0-9_]{0,31}` with values of at most
/// 128 bytes, none of them `policy` or `proxy` (the host sets those).
pub fn check_metric(name: &str, labels: &[(String, String)]) -> Result<(), String> {
    fn ident(s: &str, max: usize) -> bool {
        let mut chars = s.chars();
        matches!(chars.next(), Some('a'..='z'))
            && s.len() <= max
            && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
    }
    if !ident(name, 64) {
        return Err(format!(
            "metric name `{name}` must match [a-z][a-z0-9_]{{0,63}}"
        ));
    }
    if labels.len() > 4 {
        return Err(format!("metric `{name}` has more than 4 labels"));
    }
    for (k, v) in labels {
        if !ident(k, 32) || k == "policy" || k == "proxy" || k == "le" {
            return Err(format!(
                "metric `{name}`: label `{k}` must match [a-z][a-z0-9_]{{0,31}} and not be policy, proxy or le"
            ));
        }
        if v.len() > 128 {
            return Err(format!(
                "metric `{name}`: the value of label `{k}` is over 128 bytes"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_do_not_depend_on_positions() {
        assert_eq!(
            instance(Scope::Provider("openai"), "auth", None),
            "provider:openai/auth"
        );
        assert_eq!(
            instance(Scope::Proxy("p"), "cache", Some("a")),
            "proxy:p/cache@a"
        );
        assert_eq!(namespace("proxy:p/cache", Some("faq")), "shared:faq");
        assert_eq!(namespace("proxy:p/cache", None), "proxy:p/cache");
    }

    #[test]
    fn hosts_of_urls() {
        assert_eq!(
            url_host("https://API.example.com:443/x?y").as_deref(),
            Some("api.example.com")
        );
        assert_eq!(url_host("http://u:p@h/x").as_deref(), Some("h"));
        assert_eq!(
            url_host("http://[2001:db8::1]:80/").as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(url_host("http://[::1]/").as_deref(), Some("::1"));
        assert_eq!(url_host("file:///etc/passwd"), None);
        assert_eq!(url_host("https://"), None);
        assert_eq!(url_host("https://h@"), None);
    }

    #[test]
    fn metric_names() {
        assert!(check_metric("cache_hits", &[("layer".into(), "exact".into())]).is_ok());
        assert!(check_metric("Cache", &[]).is_err());
        assert!(check_metric("x", &[("policy".into(), "y".into())]).is_err());
        assert!(check_metric(&"a".repeat(65), &[]).is_err());
    }

    #[test]
    fn credentials_go_only_under_their_url() {
        let c = PolicyCredential {
            url_prefix: "https://api.example.com/v1".into(),
            header: "authorization".into(),
            secret: "KEY".into(),
        };
        assert!(c.applies_to("https://api.example.com/v1"));
        assert!(c.applies_to("https://api.example.com/v1/pets?x=1"));
        assert!(!c.applies_to("https://api.example.com/v10/pets"));
        assert!(!c.applies_to("https://api.example.com.evil.test/v1"));
        assert!(!c.applies_to("http://api.example.com/v1/pets"));
        let mut headers = vec![("Authorization".into(), "Bearer forged".into())];
        c.apply(&mut headers, "k1");
        assert_eq!(
            headers,
            [("authorization".to_owned(), "Bearer k1".to_owned())]
        );
    }

    #[test]
    fn allow_hosts() {
        let allow = vec!["api.example.com".to_owned(), "[::1]".to_owned()];
        assert!(check_host("https://api.example.com/v1", &allow).is_ok());
        assert!(check_host("http://[::1]:9000/", &allow).is_ok());
        let e = check_host("https://evil.example.com/", &allow).unwrap_err();
        assert!(
            e.contains("evil.example.com") && e.contains("allow-hosts"),
            "{e}"
        );
        assert!(check_host("https://api.example.com.evil.com/", &allow).is_err());
        assert!(check_host("ftp://api.example.com/", &allow).is_err());
    }
}
