//! Counting and link finding for the `length` and `url` rules.

/// Characters (Unicode scalar values).
pub fn chars(text: &str) -> u64 {
    Counts::of(text).chars
}

/// Words: runs of letters, digits, `'` or `-` (so `don't` and `state-of-the-art` are one).
pub fn words(text: &str) -> u64 {
    Counts::of(text).words
}

/// Sentences: text up to `.`, `!`, `?` (or `。！？`) followed by whitespace or the end, counting
/// only pieces that have a word; a trailing piece without a full stop counts too.
pub fn sentences(text: &str) -> u64 {
    Counts::of(text).sentences()
}

/// Characters, words and sentences of a text fed in pieces (a streamed answer): feeding the
/// pieces one after the other counts exactly what counting their concatenation would.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub chars: u64,
    pub words: u64,
    /// Sentences ended so far.
    ended: u64,
    /// Inside a word.
    inside: bool,
    /// The current sentence has a word.
    has_word: bool,
    /// The last character ends a sentence if whitespace (or the end) follows.
    stop: bool,
}

impl Counts {
    pub fn of(text: &str) -> Self {
        let mut c = Self::default();
        c.feed(text);
        c
    }

    pub fn feed(&mut self, text: &str) {
        if text.is_ascii() {
            // Most texts: a table lookup per byte instead of decoding characters and asking
            // Unicode's tables (the same answers for ASCII; a test checks both ways agree).
            for &b in text.as_bytes() {
                self.step(ASCII_CLASSES[usize::from(b)]);
            }
        } else {
            for c in text.chars() {
                self.step(class_of(c));
            }
        }
    }

    fn step(&mut self, class: u8) {
        self.chars += 1;
        if self.stop && class & WHITESPACE != 0 && self.has_word {
            self.ended += 1;
            self.has_word = false;
        }
        let alphanumeric = class & ALPHANUMERIC != 0;
        let part = alphanumeric || (self.inside && class & JOINER != 0);
        if part && !self.inside {
            self.words += 1;
        }
        self.inside = part;
        if alphanumeric {
            self.has_word = true;
        }
        self.stop = class & STOP != 0;
    }

    /// Sentences, the one still open included.
    pub fn sentences(&self) -> u64 {
        self.ended + u64::from(self.has_word)
    }
}

/// What a character is to [`Counts`] (bits).
const WHITESPACE: u8 = 1;
const ALPHANUMERIC: u8 = 2;
/// Ends a sentence when whitespace (or the end) follows.
const STOP: u8 = 4;
/// Joins the parts of a word (`don't`, `state-of-the-art`).
const JOINER: u8 = 8;

fn class_of(c: char) -> u8 {
    let mut class = 0;
    if c.is_whitespace() {
        class |= WHITESPACE;
    }
    if c.is_alphanumeric() {
        class |= ALPHANUMERIC;
    }
    if matches!(c, '.' | '!' | '?' | '。' | '！' | '？') {
        class |= STOP;
    }
    if matches!(c, '\'' | '-' | '’') {
        class |= JOINER;
    }
    class
}

/// [`class_of`] for each ASCII byte (`char::is_whitespace` on ASCII: tab, line feed, vertical
/// tab, form feed, carriage return, space).
const ASCII_CLASSES: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        if matches!(c, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ') {
            t[b] |= WHITESPACE;
        }
        if c.is_ascii_alphanumeric() {
            t[b] |= ALPHANUMERIC;
        }
        if matches!(c, b'.' | b'!' | b'?') {
            t[b] |= STOP;
        }
        if matches!(c, b'\'' | b'-') {
            t[b] |= JOINER;
        }
        b += 1;
    }
    t
};

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
    fn the_ascii_table_agrees_with_the_character_classes() {
        for b in 0u8..128 {
            assert_eq!(
                ASCII_CLASSES[usize::from(b)],
                class_of(char::from(b)),
                "byte {b:#04x}"
            );
        }
    }

    proptest::proptest! {
        /// An ASCII text counts the same through the byte table as character by character.
        #[test]
        fn ascii_texts_count_the_same_both_ways(text in "[ -~\\t\\n\\x0b\\x0c\\r]{0,200}") {
            let mut slow = Counts::default();
            text.chars().for_each(|c| slow.step(class_of(c)));
            let fast = Counts::of(&text);
            proptest::prop_assert_eq!(
                (slow.chars, slow.words, slow.sentences()),
                (fast.chars, fast.words, fast.sentences())
            );
        }
    }

    #[test]
    fn counting_in_pieces_is_counting_the_whole() {
        let text = "Version 1.2 is out. Don't wait! state-of-the-art?  Ünïcödé… end";
        let whole = Counts::of(text);
        let cuts: Vec<usize> = (0..=text.len())
            .filter(|i| text.is_char_boundary(*i))
            .collect();
        for &a in &cuts {
            for &b in cuts.iter().filter(|b| **b >= a) {
                let mut c = Counts::default();
                for piece in [&text[..a], &text[a..b], &text[b..]] {
                    c.feed(piece);
                }
                assert_eq!(
                    (c.chars, c.words, c.sentences()),
                    (whole.chars, whole.words, whole.sentences()),
                    "cut at {a} and {b}"
                );
            }
        }
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
