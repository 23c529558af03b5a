//! Counting and link finding for the `length` and `url` rules.

/// Characters (Unicode scalar values).
pub fn chars(text: &str) -> u64 {
    text.chars().count() as u64
}

/// Words: runs of letters, digits, `'` or `-` (so `don't` and `state-of-the-art` are one).
pub fn words(text: &str) -> u64 {
    let mut n = 0;
    let mut inside = false;
    for c in text.chars() {
        let part = c.is_alphanumeric() || (inside && (c == '\'' || c == '-' || c == '’'));
        if part && !inside {
            n += 1;
        }
        inside = part;
    }
    n
}

/// Sentences: text up to `.`, `!`, `?` (or `。！？`) followed by whitespace or the end, counting
/// only pieces that have a word; a trailing piece without a full stop counts too.
pub fn sentences(text: &str) -> u64 {
    let mut n = 0;
    let mut has_word = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() {
            has_word = true;
        }
        let end = matches!(c, '.' | '!' | '?' | '。' | '！' | '？')
            && chars.peek().is_none_or(|n| n.is_whitespace());
        if end && has_word {
            n += 1;
            has_word = false;
        }
    }
    n + u64::from(has_word)
}

/// Where a link is in a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

/// Links: `http://`, `https://` or `ftp://` up to whitespace, a quote or an angle bracket, with
/// trailing punctuation (`.,;:!?)]}'"`) left out.
pub fn urls(text: &str) -> Vec<Span> {
    let mut out = Vec::new();
    let lower = text.to_ascii_lowercase();
    let mut from = 0;
    while let Some(pos) = ["http://", "https://", "ftp://"]
        .iter()
        .filter_map(|s| lower[from..].find(s).map(|p| p + from))
        .min()
    {
        let rest = &text[pos..];
        let len = rest
            .find(|c: char| c.is_whitespace() || "\"'<>`".contains(c))
            .unwrap_or(rest.len());
        let mut end = pos + len;
        while end > pos && text[..end].ends_with(['.', ',', ';', ':', '!', '?', ')', ']', '}']) {
            end -= 1;
        }
        out.push(Span { start: pos, end });
        from = pos + len.max(1);
    }
    out
}

/// The parts of a link the `url` rule looks at.
#[derive(Debug, PartialEq, Eq)]
pub struct Url {
    pub scheme: String,
    pub host: String,
}

/// Parses `scheme://[user@]host[:port][/path…]`; `None` when the host or port is not valid.
pub fn parse_url(s: &str) -> Option<Url> {
    let (scheme, rest) = s.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let hostport = authority.rsplit('@').next().unwrap_or_default();
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (inner, after) = v6.split_once(']')?;
        inner.parse::<std::net::Ipv6Addr>().ok()?;
        (inner.to_owned(), after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (hostport.to_owned(), None),
        }
    };
    if let Some(p) = port
        && p.parse::<u16>().is_err()
    {
        return None;
    }
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let valid = !host.is_empty()
        && host.len() <= 253
        && (host.contains(':')
            || host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_alphanumeric() || c == '-')
            }));
    valid.then(|| Url {
        scheme: scheme.to_ascii_lowercase(),
        host,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        assert_eq!(words("Don't stop — state-of-the-art, 42 times!"), 5);
        assert_eq!(sentences("One. Two! Three? Four"), 4);
        assert_eq!(sentences("Version 1.2 is out. Great"), 2);
        assert_eq!(sentences(""), 0);
        assert_eq!(chars("héllo"), 5);
    }

    #[test]
    fn links() {
        let t = "see (https://a.example/x?y=1), http://b.test. and ftp://c";
        let found: Vec<&str> = urls(t).iter().map(|s| &t[s.start..s.end]).collect();
        assert_eq!(
            found,
            ["https://a.example/x?y=1", "http://b.test", "ftp://c"]
        );
        assert_eq!(
            parse_url("https://user@Docs.Example.com:8443/p").map(|u| u.host),
            Some("docs.example.com".into())
        );
        assert_eq!(
            parse_url("http://[::1]:80/").map(|u| u.host),
            Some("::1".into())
        );
        assert_eq!(parse_url("https://:80/x"), None);
        assert_eq!(parse_url("https://a..b/"), None);
        assert_eq!(parse_url("https://a.b:99999/"), None);
    }
}
