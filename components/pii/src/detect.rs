//! Finding personal data in text: built-in entities (with their checksums) and custom patterns.

use regex_lite::Regex;

/// A built-in kind of personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Builtin {
    Email,
    /// International (`+44 20 7946 0958`) and common national formats (`(555) 123-4567`,
    /// `555-123-4567`, `06 12 34 56 78`): 8 to 15 digits.
    Phone,
    /// 13 to 19 digits, optionally grouped by spaces or dashes, Luhn-checked.
    CreditCard,
    /// Country code, check digits and BBAN (optionally in groups of four), mod-97 checked.
    Iban,
    /// `AAA-GG-SSSS` with the SSA's rules (no 000, 666 or 9xx area, no 00 group, no 0000 serial).
    UsSsn,
    Ipv4,
    Ipv6,
}

impl Builtin {
    pub const ALL: [Builtin; 7] = [
        Builtin::Email,
        Builtin::Iban,
        Builtin::CreditCard,
        Builtin::UsSsn,
        Builtin::Ipv6,
        Builtin::Ipv4,
        Builtin::Phone,
    ];

    /// The name in configuration, metrics and flags.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Email => "email",
            Builtin::Phone => "phone",
            Builtin::CreditCard => "credit-card",
            Builtin::Iban => "iban",
            Builtin::UsSsn => "us-ssn",
            Builtin::Ipv4 => "ipv4",
            Builtin::Ipv6 => "ipv6",
        }
    }

    fn pattern(self) -> &'static str {
        match self {
            Builtin::Email => {
                r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}"
            }
            Builtin::Phone => {
                r"\+[0-9]{1,3}(?:[ .\-]?\(?[0-9]{1,4}\)?)(?:[ .\-]?[0-9]{2,4}){1,5}|\([0-9]{3}\)[ .\-]?[0-9]{3}[ .\-][0-9]{4}|\b[0-9]{3}[.\-][0-9]{3}[.\-][0-9]{4}\b|\b0[0-9](?:[ .\-][0-9]{2}){4}\b"
            }
            Builtin::CreditCard => r"\b[0-9](?:[ \-]?[0-9]){12,18}\b",
            Builtin::Iban => r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}\b",
            Builtin::UsSsn => r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b",
            Builtin::Ipv4 => r"\b[0-9]{1,3}(?:\.[0-9]{1,3}){3}\b",
            Builtin::Ipv6 => r"[0-9A-Fa-f:]*:[0-9A-Fa-f:]*:[0-9A-Fa-f:]*",
        }
    }

    /// Whether every match of the pattern is made of digits and [`NUMBER_PUNCTUATION`] alone
    /// (its `\b` assertions aside).
    fn numeric(self) -> bool {
        matches!(
            self,
            Builtin::Phone | Builtin::CreditCard | Builtin::UsSsn | Builtin::Ipv4
        )
    }

    /// Whether a pattern match really is this entity (checksums, ranges, boundaries).
    fn accepts(self, text: &str, start: usize, end: usize) -> bool {
        let m = &text[start..end];
        match self {
            Builtin::Email => true,
            Builtin::Phone => (8..=15).contains(&digits(m).len()),
            Builtin::CreditCard => {
                let d = digits(m);
                (13..=19).contains(&d.len()) && luhn(&d)
            }
            Builtin::Iban => iban_valid(m),
            Builtin::UsSsn => ssn_valid(m),
            Builtin::Ipv4 => m.split('.').all(|o| o.parse::<u8>().is_ok()),
            Builtin::Ipv6 => {
                let before = text[..start].chars().next_back();
                let mut rest = text[end..].chars();
                let after = rest.next();
                let boundary = |c: Option<char>| {
                    c.is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':' || c == '.'))
                };
                // A full stop may end the sentence, but not start an IPv4 tail (`::ffff:1.2.3.4`).
                let after_ok = boundary(after)
                    || (after == Some('.') && rest.next().is_none_or(|c| !c.is_ascii_digit()));
                let groups = m.split(':').filter(|g| !g.is_empty()).count();
                boundary(before)
                    && after_ok
                    && m.parse::<std::net::Ipv6Addr>().is_ok()
                    && (groups >= 3 || (m.contains("::") && groups >= 2))
            }
        }
    }
}

/// The digits of `s`.
pub fn digits(s: &str) -> Vec<u8> {
    s.bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect()
}

/// The Luhn check of a card number's digits.
pub fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// ISO 13616: length 15–34, letters as 10–35, the number mod 97 is 1.
pub fn iban_valid(s: &str) -> bool {
    let compact: Vec<u8> = s.bytes().filter(|b| *b != b' ').collect();
    if !(15..=34).contains(&compact.len())
        || !compact[..2].iter().all(u8::is_ascii_uppercase)
        || !compact[2..4].iter().all(u8::is_ascii_digit)
    {
        return false;
    }
    let mut rem: u32 = 0;
    for &b in compact[4..].iter().chain(&compact[..4]) {
        let v = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// The SSA's rules for an `AAA-GG-SSSS` number.
pub fn ssn_valid(s: &str) -> bool {
    let mut parts = s.split('-');
    let (Some(area), Some(group), Some(serial)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

/// An entity type the policy looks for: a built-in or a named custom pattern.
#[derive(Debug)]
pub struct Detector {
    /// `email`, or the custom entity's name.
    pub name: String,
    builtin: Option<Builtin>,
    regex: Regex,
}

impl Detector {
    pub fn builtin(b: Builtin) -> Self {
        Self {
            name: b.name().to_owned(),
            builtin: Some(b),
            // The built-in patterns are constants covered by the tests.
            regex: if b == Builtin::Ipv6 {
                never()
            } else {
                Regex::new(b.pattern()).unwrap_or_else(|_| never())
            },
        }
    }

    pub fn custom(name: &str, pattern: &str) -> Result<Self, regex_lite::Error> {
        Ok(Self {
            name: name.to_owned(),
            builtin: None,
            regex: Regex::new(pattern)?,
        })
    }
}

/// Maximal runs of hex digits and colons with at least two colons: the IPv6 candidates (a scan,
/// where a pattern starting with `[0-9a-f:]*` would be tried at every letter a–f of the text).
fn ipv6_runs(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_hexdigit() || bytes[i] == b':' {
            let start = i;
            let mut colons = 0;
            while i < bytes.len() && (bytes[i].is_ascii_hexdigit() || bytes[i] == b':') {
                colons += usize::from(bytes[i] == b':');
                i += 1;
            }
            if colons >= 2 {
                out.push((start, i));
            }
        } else {
            i += 1;
        }
    }
    out
}

/// What `regex.find_iter` (the e-mail pattern) finds in `text`, searched only around each `@`:
/// every match has exactly one `@`, a run of local-part characters before it and of domain
/// characters after it, so the pattern runs on that window alone instead of on the whole text
/// (regex-lite tries a pattern that starts with `[A-Za-z0-9._%+-]+` at nearly every byte).
fn email_spans(regex: &Regex, text: &str) -> Vec<(usize, usize)> {
    let local = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-');
    let domain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-');
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    // Where the last match ended: like `find_iter`, the next one starts there or later.
    let mut done = 0;
    for at in (0..bytes.len()).filter(|i| bytes[*i] == b'@') {
        if at < done {
            continue;
        }
        let mut start = at;
        while start > done && local(bytes[start - 1]) {
            start -= 1;
        }
        let mut end = at + 1;
        while end < bytes.len() && domain(bytes[end]) {
            end += 1;
        }
        if let Some(m) = regex.find(&text[start..end]) {
            out.push((start + m.start(), start + m.end()));
            done = start + m.end();
        }
    }
    out
}

/// What may be in a number besides digits: the characters of the numeric patterns.
const NUMBER_PUNCTUATION: &[u8] = b" .-()+";

/// What `regex.find_iter` (a [`Builtin::numeric`] pattern) finds in `text`, searched only in
/// the runs of digits and [`NUMBER_PUNCTUATION`] that hold a digit, each with one character of
/// context on either side for `\b`: a match cannot reach beyond its run, so the pattern runs on
/// a few short windows instead of the whole text (a year and a full stop are enough to make the
/// IPv4 detector run, and regex-lite tries the pattern at every byte it runs over).
fn number_spans(regex: &Regex, text: &str) -> Vec<(usize, usize)> {
    let member = |b: u8| b.is_ascii_digit() || NUMBER_PUNCTUATION.contains(&b);
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !member(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        let mut digits = false;
        while i < bytes.len() && member(bytes[i]) {
            digits |= bytes[i].is_ascii_digit();
            i += 1;
        }
        if !digits {
            continue;
        }
        let from = text[..start]
            .char_indices()
            .next_back()
            .map_or(0, |(at, _)| at);
        let to = text[i..].chars().next().map_or(i, |c| i + c.len_utf8());
        out.extend(
            regex
                .find_iter(&text[from..to])
                .map(|m| (from + m.start(), from + m.end())),
        );
    }
    out
}

fn never() -> Regex {
    #[allow(clippy::unwrap_used)]
    Regex::new(r"[^\s\S]").unwrap()
}

/// What a text has of the characters the built-in entities need: a detector whose entity
/// cannot be in the text is not run (most prompts have no `@`, few digits and no colons).
struct Clues {
    /// The most digits in one run of digits and number punctuation (` .-()+/`).
    cluster_digits: usize,
    at: bool,
    colons: usize,
    dashes: bool,
    dots: bool,
    /// Two capital letters then two digits somewhere (an IBAN's start).
    iban_start: bool,
}

impl Clues {
    fn of(text: &str) -> Self {
        let bytes = text.as_bytes();
        let mut c = Clues {
            cluster_digits: 0,
            at: false,
            colons: 0,
            dashes: false,
            dots: false,
            iban_start: bytes.windows(4).any(|w| {
                w[0].is_ascii_uppercase()
                    && w[1].is_ascii_uppercase()
                    && w[2].is_ascii_digit()
                    && w[3].is_ascii_digit()
            }),
        };
        let mut run = 0;
        for &b in bytes {
            match b {
                b'0'..=b'9' => {
                    run += 1;
                    c.cluster_digits = c.cluster_digits.max(run);
                }
                b' ' | b'(' | b')' | b'+' | b'/' => {}
                b'-' => c.dashes = true,
                b'.' => c.dots = true,
                b'@' => {
                    c.at = true;
                    run = 0;
                }
                b':' => {
                    c.colons += 1;
                    run = 0;
                }
                _ => run = 0,
            }
        }
        c
    }

    fn may_hold(&self, b: Builtin) -> bool {
        match b {
            Builtin::Email => self.at,
            Builtin::Phone => self.cluster_digits >= 8,
            Builtin::CreditCard => self.cluster_digits >= 13,
            Builtin::Iban => self.iban_start,
            Builtin::UsSsn => self.cluster_digits >= 9 && self.dashes,
            Builtin::Ipv4 => self.cluster_digits >= 4 && self.dots,
            Builtin::Ipv6 => self.colons >= 2,
        }
    }
}

/// One entity found in a text: `detector` indexes the detector list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub start: usize,
    pub end: usize,
    pub detector: usize,
}

/// The entities of `text`, in order and without overlaps: where two overlap, the one that starts
/// first wins, then the detector listed first (built-ins are listed with the stricter ones
/// first: e-mail, IBAN, card, SSN, IPv6, IPv4, phone).
pub fn find(detectors: &[&Detector], text: &str) -> Vec<Found> {
    let mut all = Vec::new();
    let clues = Clues::of(text);
    for (i, d) in detectors.iter().enumerate() {
        if d.builtin.is_some_and(|b| !clues.may_hold(b)) {
            continue;
        }
        let spans: Vec<(usize, usize)> = match d.builtin {
            Some(Builtin::Ipv6) => ipv6_runs(text),
            Some(Builtin::Email) => email_spans(&d.regex, text),
            Some(b) if b.numeric() => number_spans(&d.regex, text),
            _ => d
                .regex
                .find_iter(text)
                .map(|m| (m.start(), m.end()))
                .collect(),
        };
        for (start, end) in spans {
            if start < end && d.builtin.is_none_or(|b| b.accepts(text, start, end)) {
                all.push(Found {
                    start,
                    end,
                    detector: i,
                });
            }
        }
    }
    all.sort_by_key(|f| (f.start, f.detector, std::cmp::Reverse(f.end)));
    let mut out: Vec<Found> = Vec::with_capacity(all.len());
    for f in all {
        if out.last().is_none_or(|last| f.start >= last.end) {
            out.push(f);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtins() -> Vec<Detector> {
        Builtin::ALL.iter().map(|b| Detector::builtin(*b)).collect()
    }

    fn kinds(text: &str) -> Vec<(String, String)> {
        let d = builtins();
        let refs: Vec<&Detector> = d.iter().collect();
        find(&refs, text)
            .into_iter()
            .map(|f| (d[f.detector].name.clone(), text[f.start..f.end].to_owned()))
            .collect()
    }

    #[test]
    fn luhn_and_iban_checksums() {
        assert!(luhn(&digits("4111 1111 1111 1111")));
        assert!(!luhn(&digits("4111 1111 1111 1112")));
        assert!(luhn(&digits("378282246310005")));
        assert!(iban_valid("DE89370400440532013000"));
        assert!(iban_valid("GB82 WEST 1234 5698 7654 32"));
        assert!(!iban_valid("GB82 WEST 1234 5698 7654 33"));
        assert!(!iban_valid("DE89"));
        assert!(ssn_valid("123-45-6789"));
        assert!(!ssn_valid("666-45-6789") && !ssn_valid("923-45-6789"));
        assert!(!ssn_valid("123-00-6789") && !ssn_valid("123-45-0000"));
    }

    #[test]
    fn finds_every_builtin() {
        let text = "Mail jane.doe+x@example.co.uk or call +44 20 7946 0958 / (555) 123-4567; \
                    card 4111-1111-1111-1111, IBAN DE89 3704 0044 0532 0130 00, SSN 123-45-6789, \
                    hosts 192.168.1.20 and 2001:db8::8a2e:370:7334.";
        let found = kinds(text);
        let names: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "email",
                "phone",
                "phone",
                "credit-card",
                "iban",
                "us-ssn",
                "ipv4",
                "ipv6"
            ],
            "{found:?}"
        );
        assert_eq!(found[0].1, "jane.doe+x@example.co.uk");
        assert_eq!(found[3].1, "4111-1111-1111-1111");
        assert_eq!(found[4].1, "DE89 3704 0044 0532 0130 00");
        assert_eq!(found[7].1, "2001:db8::8a2e:370:7334");
    }

    #[test]
    fn checksums_and_boundaries_keep_false_positives_out() {
        for benign in [
            "order 4111 1111 1111 1112 shipped",    // fails Luhn
            "version 1.2.3.4000 and 300.1.1.1",     // not IPv4
            "use std::vec::Vec; at 12:30:45",       // not IPv6
            "SSN-like 666-12-3456 and 000-12-3456", // invalid areas
            "call me at 12",
            "ISBN 978-3-16-148410-0",
        ] {
            assert_eq!(kinds(benign), Vec::<(String, String)>::new(), "{benign}");
        }
    }

    #[test]
    fn email_windows_find_what_the_pattern_finds() {
        let email = Detector::builtin(Builtin::Email);
        for text in [
            "write to jane.doe+x@example.co.uk today",
            "a@b.com@c.org and x@y.z and @@ and @ alone",
            "first.last@sub-domain.example.com, second@example.org.",
            "no e-mail here",
            "é@example.com, ünï@exämple.com, mail:bob@example.com;alice@example.net",
            "trailing dot name@example.c and name@-bad-.com and n@e.xyz.",
            "@start.com x@ a@b c@d.e f@g.hi",
            "jane@example.com@example.org@x.io",
            "....@...com a.b.c.d@e.f.gh%@x.io +1@2.ab",
        ] {
            let whole: Vec<(usize, usize)> = email
                .regex
                .find_iter(text)
                .map(|m| (m.start(), m.end()))
                .collect();
            assert_eq!(email_spans(&email.regex, text), whole, "{text}");
        }
    }

    /// Texts of digits, number punctuation, letters and other characters, from a fixed seed.
    fn number_texts(n: usize) -> Vec<String> {
        let alphabet: Vec<char> = "0123456789 .-()+ax,é\n".chars().collect();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        (0..n)
            .map(|_| {
                let len = (next() % 40) as usize;
                (0..len)
                    .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                    .collect()
            })
            .collect()
    }

    #[test]
    fn number_windows_find_what_the_patterns_find() {
        let fixed = [
            "call +44 20 7946 0958 or (555) 123-4567, card 4111-1111-1111-1111.",
            "SSN 123-45-6789; hosts 192.168.1.20, 10.0.0.1. and 1.2.3.4000",
            "in 2026. 06 12 34 56 78 x555-123-4567y 555.123.4567",
            "é4111 1111 1111 1111é 123-45-6789é",
            // Context that a window without its neighbours would get wrong (`\b`).
            "call 555-123-4567y or 1.2.3.4a or z123-45-6789 or 4111 1111 1111 1111x",
        ];
        for b in Builtin::ALL.into_iter().filter(|b| b.numeric()) {
            let d = Detector::builtin(b);
            let texts = fixed
                .iter()
                .map(|t| (*t).to_owned())
                .chain(number_texts(3000));
            for text in texts {
                let whole: Vec<(usize, usize)> = d
                    .regex
                    .find_iter(&text)
                    .map(|m| (m.start(), m.end()))
                    .collect();
                assert_eq!(number_spans(&d.regex, &text), whole, "{}: {text:?}", d.name);
            }
        }
    }

    #[test]
    fn custom_patterns() {
        let d = vec![
            Detector::custom("employee-id", r"\bEMP-[0-9]{6}\b")
                .unwrap_or_else(|_| never_detector()),
        ];
        let found = find(&[&d[0]], "ids EMP-123456 and EMP-12");
        assert_eq!(found.len(), 1);
        assert!(Detector::custom("x", "(").is_err());
    }

    fn never_detector() -> Detector {
        Detector::builtin(Builtin::Email)
    }
}
