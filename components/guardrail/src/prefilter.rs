//! Literal prefilters for `regex` rules.
//!
//! `regex-lite` has no literal optimisations: every pattern is run over the whole text, some
//! 50–100 ns per byte. Most patterns a guardrail is given contain a literal that every match
//! must contain (`sk-` in `sk-[A-Za-z0-9]{20,}`, `password` in `(?i)password\s*[:=]`, one of
//! `darkweb`/`exploit kit` in `\b(?:darkweb|exploit kit)\b`), and most texts contain none of
//! them: a substring search (a few ns per byte) then answers for the regex.
//!
//! The analysis is conservative: any construct it does not fully understand (inline flags
//! other than a leading `(?i)`, verbose mode, non-literal escapes inside the literal, a `{`
//! that is not a repetition) ends the literal or gives no prefilter at all, in which case the
//! regex runs as before. A property test checks that the prefilter never rejects a text the
//! regex matches.

/// Literals of which every match of a pattern contains at least one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Required {
    /// Lower-cased when `case_insensitive`.
    any_of: Vec<String>,
    case_insensitive: bool,
}

/// Shortest literal worth a search.
const MIN_LITERAL: usize = 2;

impl Required {
    /// The prefilter of `pattern`, compiled with `case_insensitive`; `None` when no literal is
    /// certain to be in every match.
    pub fn of(pattern: &str, case_insensitive: bool) -> Option<Self> {
        let (pattern, ci) = match pattern.strip_prefix("(?i)") {
            Some(rest) => (rest, true),
            None => (pattern, case_insensitive),
        };
        let chars: Vec<char> = pattern.chars().collect();
        let mut any_of = alternatives(&chars)?;
        if ci {
            // regex-lite folds ASCII letters only (checked by a test below): a literal with
            // other letters is left to the regex.
            if any_of.iter().any(|l| !l.is_ascii()) {
                return None;
            }
            any_of.iter_mut().for_each(|l| l.make_ascii_lowercase());
        }
        if any_of.iter().any(|l| l.len() < MIN_LITERAL) {
            return None;
        }
        any_of.sort();
        any_of.dedup();
        Some(Self {
            any_of,
            case_insensitive: ci,
        })
    }

    /// False only when no match of the pattern can be in `text`. `lower` is `text` with ASCII
    /// letters lower-cased (computed once by the caller for every rule).
    pub fn may_match(&self, text: &str, lower: &str) -> bool {
        let hay = if self.case_insensitive { lower } else { text };
        self.any_of.iter().any(|l| hay.contains(l.as_str()))
    }
}

/// Splits at top-level `|`: every branch must have its literal, and a match has one of them.
fn alternatives(p: &[char]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '\\' => i += 2,
            '[' => i = class_end(p, i)?,
            '(' => i = group_end(p, i)?,
            '|' => {
                out.extend(branch(&p[start..i])?);
                start = i + 1;
                i += 1;
            }
            _ => i += 1,
        }
    }
    out.extend(branch(&p[start..])?);
    Some(out)
}

/// The best literal set of one branch (a sequence of items): the longest certain run of
/// literal characters, or a group's own set, whichever has the longer shortest literal.
fn branch(p: &[char]) -> Option<Vec<String>> {
    let mut best: Option<Vec<String>> = None;
    let consider = |set: Vec<String>, best: &mut Option<Vec<String>>| {
        let score = |s: &[String]| s.iter().map(String::len).min().unwrap_or(0);
        if score(&set) >= MIN_LITERAL && best.as_ref().is_none_or(|b| score(&set) > score(b)) {
            *best = Some(set);
        }
    };
    let mut run = String::new();
    let mut i = 0;
    while i < p.len() {
        // One item, then its repetition (if any).
        let (item, next): (Item, usize) = match p[i] {
            '\\' => {
                let c = *p.get(i + 1)?;
                let item = match c {
                    'n' => Item::Char('\n'),
                    't' => Item::Char('\t'),
                    c if c.is_ascii_punctuation() => Item::Char(c),
                    _ => Item::Other,
                };
                (item, i + 2)
            }
            '[' => (Item::Other, class_end(p, i)?),
            '(' => {
                let end = group_end(p, i)?;
                let inner = group_inner(&p[i + 1..end - 1])?;
                (Item::Group(inner), end)
            }
            '{' => return None, // a literal `{`, or something this analysis does not know
            ')' | ']' | '}' => return None,
            '.' | '^' | '$' => (Item::Other, i + 1),
            '*' | '+' | '?' => return None, // a repetition of nothing
            c => (Item::Char(c), i + 1),
        };
        let (rep, after) = repetition(p, next)?;
        match item {
            Item::Char(c) => match rep {
                Rep::One => run.push(c),
                Rep::AtLeastOne => {
                    run.push(c);
                    consider(vec![std::mem::take(&mut run)], &mut best);
                }
                Rep::MaybeNone => consider(vec![std::mem::take(&mut run)], &mut best),
            },
            Item::Group(inner) => {
                consider(vec![std::mem::take(&mut run)], &mut best);
                if rep != Rep::MaybeNone
                    && let Some(set) = inner
                {
                    consider(set, &mut best);
                }
            }
            Item::Other => consider(vec![std::mem::take(&mut run)], &mut best),
        }
        i = after;
    }
    consider(vec![run], &mut best);
    // A branch without a literal: the pattern as a whole has no prefilter.
    best
}

enum Item {
    Char(char),
    /// The literal set of the group's content (`None`: it has none).
    Group(Option<Vec<String>>),
    /// Anything that is not one known character: a class, `.`, an assertion, `\d`...
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rep {
    One,
    AtLeastOne,
    MaybeNone,
}

/// The repetition operator at `i` (if any) and where the next item starts.
fn repetition(p: &[char], i: usize) -> Option<(Rep, usize)> {
    let (rep, mut end) = match p.get(i) {
        Some('*' | '?') => (Rep::MaybeNone, i + 1),
        Some('+') => (Rep::AtLeastOne, i + 1),
        Some('{') => {
            let close = i + p[i..].iter().position(|c| *c == '}')?;
            let body: String = p[i + 1..close].iter().collect();
            let min = body.split(',').next()?.trim();
            let min: u32 = min.parse().ok()?;
            let valid = body.split(',').count() <= 2
                && body
                    .split(',')
                    .nth(1)
                    .is_none_or(|m| m.trim().is_empty() || m.trim().parse::<u32>().is_ok());
            if !valid {
                return None;
            }
            let rep = match min {
                0 => Rep::MaybeNone,
                // `a{1}` is `a`; `a{2,}` holds at least one `a` but the run ends there.
                1 if body == "1" => Rep::One,
                _ => Rep::AtLeastOne,
            };
            (rep, close + 1)
        }
        _ => return Some((Rep::One, i)),
    };
    if p.get(end) == Some(&'?') {
        end += 1; // lazy
    }
    Some((rep, end))
}

/// A group's content: `(?:…)`, `(?P<name>…)`, `(?<name>…)` or `(…)`; `None` (no prefilter at
/// all) for flag groups, whose flags this analysis does not follow.
fn group_inner(inner: &[char]) -> Option<Option<Vec<String>>> {
    let body = match inner {
        ['?', ':', rest @ ..] => rest,
        ['?', 'P', '<', ..] | ['?', '<', ..] => {
            let close = inner.iter().position(|c| *c == '>')?;
            &inner[close + 1..]
        }
        ['?', ..] => return None,
        _ => inner,
    };
    Some(alternatives(body))
}

/// The index after the `]` closing the class that opens at `open`.
fn class_end(p: &[char], open: usize) -> Option<usize> {
    let mut i = open + 1;
    if p.get(i) == Some(&'^') {
        i += 1;
    }
    if p.get(i) == Some(&']') {
        i += 1; // a literal `]` first
    }
    let mut depth = 1;
    while i < p.len() {
        match p[i] {
            '\\' => i += 1,
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The index after the `)` closing the group that opens at `open`.
fn group_end(p: &[char], open: usize) -> Option<usize> {
    let mut i = open + 1;
    let mut depth = 1;
    while i < p.len() {
        match p[i] {
            '\\' => i += 1,
            '[' => {
                i = class_end(p, i)?;
                continue;
            }
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use regex_lite::RegexBuilder;

    fn lits(p: &str) -> Option<Vec<String>> {
        Required::of(p, false).map(|r| r.any_of)
    }

    #[test]
    fn literals_of_common_patterns() {
        let v = |s: &[&str]| Some(s.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        assert_eq!(lits("sk-[A-Za-z0-9]{20,}"), v(&["sk-"]));
        assert_eq!(lits("AKIA[0-9A-Z]{16}"), v(&["AKIA"]));
        assert_eq!(lits("(?i)password\\s*[:=]"), v(&["password"]));
        assert_eq!(
            lits("(?i)\\b(?:darkweb|exploit kit)\\b"),
            v(&["darkweb", "exploit kit"])
        );
        assert_eq!(lits("(?i)Forbidden Phrase"), v(&["forbidden phrase"]));
        assert_eq!(lits("colou?r scheme"), v(&["r scheme"]));
        assert_eq!(lits("ab+c"), v(&["ab"]));
        assert_eq!(lits("x(foo|bar)+y"), v(&["bar", "foo"]));
        assert_eq!(
            lits("api[_-]?key"),
            v(&["api"]),
            "the first of equally long literals"
        );
        assert_eq!(lits("a.c|de"), None, "a branch without a 2-byte literal");
        assert_eq!(lits("(foo)?bar"), v(&["bar"]));
        assert_eq!(lits("(?x) foo"), None, "flags are not followed");
        assert_eq!(lits("(?i:foo)bar"), None);
        assert_eq!(lits("."), None);
        assert_eq!(lits("[a-z]+"), None);
        assert_eq!(lits("caf\u{e9}"), v(&["caf\u{e9}"]));
        assert_eq!(
            Required::of("caf\u{e9}", true),
            None,
            "non-ASCII literals under (?i)"
        );
    }

    /// The assumption under the case-insensitive prefilter: regex-lite folds ASCII only.
    #[test]
    fn regex_lite_folds_ascii_only() {
        let re = |p: &str| {
            RegexBuilder::new(p)
                .case_insensitive(true)
                .build()
                .unwrap_or_else(|e| unreachable!("{e}"))
        };
        assert!(re("s").is_match("S"));
        assert!(!re("s").is_match("\u{17f}"), "long s");
        assert!(!re("k").is_match("\u{212a}"), "Kelvin sign");
    }

    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            "[abAB -]{1,4}",
            Just("[ab]".to_owned()),
            Just("[^a]".to_owned()),
            Just(".".to_owned()),
            Just("\\b".to_owned()),
            Just("\\.".to_owned()),
            Just("\\s".to_owned()),
            Just("(?i)".to_owned()),
        ]
    }

    fn pattern() -> impl Strategy<Value = String> {
        let atom = (
            piece(),
            prop_oneof![
                Just(""),
                Just("?"),
                Just("*"),
                Just("+"),
                Just("{2}"),
                Just("{0,2}"),
                Just("{1}"),
                Just("+?"),
            ],
        )
            .prop_map(|(p, q)| format!("{p}{q}"));
        let seq = prop::collection::vec(atom, 1..5).prop_map(|v| v.concat());
        seq.prop_recursive(3, 12, 3, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a}|{b}")),
                (
                    inner.clone(),
                    prop_oneof![Just(""), Just("?"), Just("+"), Just("*")],
                    inner.clone()
                )
                    .prop_map(|(a, q, b)| format!("(?:{a}){q}{b}")),
                (inner.clone(), inner).prop_map(|(a, b)| format!("x({a})y{b}")),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// The prefilter never rejects a text the regex matches.
        #[test]
        fn never_rejects_a_match(p in pattern(), ci in any::<bool>(), text in "[abAB .xy-]{0,24}") {
            let Ok(re) = RegexBuilder::new(&p).case_insensitive(ci).build() else {
                return Ok(());
            };
            if let Some(req) = Required::of(&p, ci) {
                let lower = text.to_ascii_lowercase();
                prop_assert!(
                    req.may_match(&text, &lower) || !re.is_match(&text),
                    "{p:?} (ci {ci}) matches {text:?} but the prefilter {req:?} rejects it"
                );
            }
        }
    }
}
