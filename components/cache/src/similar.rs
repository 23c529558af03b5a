//! The second check of a semantic hit: after the nearest neighbour is found by cosine
//! similarity, are the two prompts really the same question?
//!
//! Embeddings of a small model put "How do I enable two-factor authentication?" next to "How
//! do I disable two-factor authentication?", and "capital of Australia" next to "capital of
//! Austria", closer than many true paraphrases. What those near misses have in common is that
//! the prompts share their words but for the few that carry the difference. So the check
//! compares words, with no model and in microseconds:
//!
//! - numbers (digits and number words) must be the same;
//! - negation (`not`, `never`, `no`, `without`, `n't`...) must agree;
//! - the content words (stop words and question framing left out, plurals and verb endings
//!   folded) are compared: when each prompt has content words that the other lacks (a
//!   *substitution*: `enable` for `disable`, `Austria` for `Australia`, `sort` for
//!   `reverse`), the question changed unless the embeddings are near-identical
//!   ([`Check::substitution_score`]) and no substituted word is a name, an opposite or a
//!   prefixed negation of the other (`lock` / `unlock`); words added on one side only
//!   ("...capital *city*?") and reworded framing pass.

use std::collections::{BTreeSet, HashMap};

use crate::lexicon::{
    HOW_KINDS, NEGATING_PREFIXES, NEGATIONS, NUMBER_WORDS, OPPOSITES, QUESTION_KINDS, RELATIONS,
    STOP_WORDS, SYNONYMS, TIME_UNITS,
};

/// One prompt, taken apart for the comparison.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Words {
    /// Every word, folded (stop words included), for opposites such as `on` / `off`.
    all: BTreeSet<String>,
    /// (content word before, relation word, content word after).
    relations: BTreeSet<(String, String, String)>,
    /// The kinds of answer asked for (`person`, `time`, `duration`...).
    kinds: BTreeSet<&'static str>,
    /// The content words in order.
    order: Vec<String>,
    /// Numbers, sorted.
    numbers: Vec<String>,
    /// How many negations.
    negations: usize,
    /// Folded content words.
    content: BTreeSet<String>,
    /// Folded content words that look like names (capitalised inside a sentence, or all caps).
    names: BTreeSet<String>,
}

/// Lower-case, without the endings that do not change the question (plural, `-ing`, `-ed`,
/// possessive) and without a final `e` (`close`, `closed`, `closes` and `closing` are one word).
pub fn fold(word: &str) -> String {
    let mut w = word.to_lowercase().replace('\u{2019}', "'");
    if let Some(stem) = w.strip_suffix("'s") {
        w = stem.to_owned();
    }
    w.retain(|c| c != '\'');
    let n = w.len();
    let stem = if n >= 5 && w.ends_with("ies") {
        format!("{}y", &w[..n - 3])
    } else if n >= 5
        && (w.ends_with("sses")
            || w.ends_with("shes")
            || w.ends_with("ches")
            || w.ends_with("xes")
            || w.ends_with("zes"))
    {
        w[..n - 2].to_owned()
    } else if n >= 4
        && w.ends_with('s')
        && !(w.ends_with("ss") || w.ends_with("us") || w.ends_with("is"))
    {
        w[..n - 1].to_owned()
    } else if n >= 6 && w.ends_with("ing") {
        undouble(&w[..n - 3])
    } else if n >= 5 && w.ends_with("ed") {
        undouble(&w[..n - 2])
    } else {
        w
    };
    match stem.strip_suffix('e') {
        Some(s) if s.len() >= 3 => s.to_owned(),
        _ => stem,
    }
}

/// `stopp` (from `stopped`) is `stop`, `runn` is `run`; `install`, `pass`, `buzz` stay.
fn undouble(stem: &str) -> String {
    let b = stem.as_bytes();
    match b {
        [.., x, y] if x == y && x.is_ascii_alphabetic() && !b"lsfzaeiou".contains(x) => {
            stem[..stem.len() - 1].to_owned()
        }
        _ => stem.to_owned(),
    }
}

fn is_digit_at(chars: &[char], i: usize) -> bool {
    chars.get(i).is_some_and(char::is_ascii_digit)
}

impl Words {
    /// Takes a prompt apart.
    pub fn of(text: &str) -> Words {
        let mut out = Words::default();
        let chars: Vec<char> = text.chars().collect();
        let mut sentence_start = true;
        // A question word counts at the start of a clause ("quick question: when...", "...,
        // how"), not as a word talked about ("who versus whom").
        let mut clause_start = true;
        let mut sequence: Vec<Word> = Vec::new();
        let mut plain_words: Vec<String> = Vec::new();
        let mut seen = HashMap::new();
        let mut i = 0;
        while i < chars.len() {
            if !chars[i].is_alphanumeric() {
                if matches!(chars[i], '.' | '?' | '!' | ':' | ';' | '\n') {
                    sentence_start = true;
                }
                if matches!(chars[i], '.' | '?' | '!' | ':' | ';' | '\n' | ',' | '-') {
                    clause_start = true;
                }
                i += 1;
                continue;
            }
            let start = i;
            while i < chars.len() {
                let c = chars[i];
                let inside_number = matches!(c, '.' | ',')
                    && i > 0
                    && is_digit_at(&chars, i - 1)
                    && is_digit_at(&chars, i + 1);
                if c.is_alphanumeric() || c == '\'' || c == '\u{2019}' || inside_number {
                    i += 1;
                } else {
                    break;
                }
            }
            let token: String = chars[start..i].iter().collect();
            let plain: String = token
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric())
                .collect();
            if clause_start
                && let Some((_, kind)) = QUESTION_KINDS.iter().find(|(w, _)| *w == plain)
            {
                out.kinds.insert(kind);
            }
            if let Some(word) = out.add(&token, sentence_start, &mut seen) {
                if let Word::Content(w) = &word {
                    out.order.push(w.clone());
                }
                sequence.push(word);
            }
            plain_words.push(plain);
            sentence_start = false;
            clause_start = false;
        }
        out.numbers.sort();
        // `how much`, `how many`, `how long`...: the kind of amount asked for.
        for w in plain_words
            .windows(3)
            .map(|w| (&w[0], &w[1], w.get(2)))
            .chain(plain_words.windows(2).last().map(|w| (&w[0], &w[1], None)))
        {
            let (how, what, next) = w;
            if how != "how" {
                continue;
            }
            if let Some((_, kind)) = HOW_KINDS.iter().find(|(k, _)| k == what) {
                let timed = next.is_some_and(|n| TIME_UNITS.contains(&n.as_str()));
                out.kinds.insert(if timed && *kind == "count" {
                    "duration"
                } else {
                    kind
                });
            }
        }
        // Each relation word with the nearest content words on either side.
        for (k, w) in sequence.iter().enumerate() {
            let Word::Relation(r) = w else { continue };
            let before = sequence[..k].iter().rev().find_map(Word::content);
            let after = sequence[k + 1..].iter().find_map(Word::content);
            if let (Some(b), Some(a)) = (before, after) {
                out.relations
                    .insert((b.to_owned(), r.clone(), a.to_owned()));
            }
        }
        out
    }

    /// Adds one token; `seen` remembers what the lists said about each word of this prompt
    /// (long prompts repeat their words, and the lists are scanned, not hashed).
    fn add(
        &mut self,
        token: &str,
        sentence_start: bool,
        seen: &mut HashMap<String, (String, Lexical)>,
    ) -> Option<Word> {
        let lower = token.to_lowercase().replace('\u{2019}', "'");
        let (folded, lexical) = match seen.get(&lower) {
            Some(known) => known.clone(),
            None => {
                let known = (fold(token), Lexical::of(token, &lower));
                seen.insert(lower, known.clone());
                known
            }
        };
        self.all.insert(folded);
        // `US`, `UK`, `IT` are names, not the stop words `us`, `it`.
        let all_caps = token.len() > 1 && token.chars().all(|c| c.is_ascii_uppercase());
        let content = match lexical {
            Lexical::Relation(r) => return Some(Word::Relation(r)),
            Lexical::Number(n) => {
                self.numbers.push(n.clone());
                return Some(Word::Content(n));
            }
            Lexical::Negation => {
                self.negations += 1;
                return None;
            }
            Lexical::Stop if all_caps => canonical(fold(token)),
            Lexical::Stop => return None,
            Lexical::Content(c) => c,
        };
        let mut letters = token.chars().filter(|c| c.is_alphabetic());
        let capital = letters.next().is_some_and(char::is_uppercase);
        let inner_capital = letters.any(char::is_uppercase);
        let digits = token.chars().any(|c| c.is_ascii_digit());
        if (capital && !sentence_start) || inner_capital || digits || all_caps {
            self.names.insert(content.clone());
        }
        self.content.insert(content.clone());
        Some(Word::Content(content))
    }
}

/// What the word lists say about a word (whatever its capitals).
#[derive(Debug, Clone)]
enum Lexical {
    Relation(String),
    Number(String),
    Negation,
    /// A stop word (unless written in capitals, as a name).
    Stop,
    /// A content word: folded, as its synonym group's word.
    Content(String),
}

impl Lexical {
    fn of(token: &str, lower: &str) -> Lexical {
        let plain: String = lower.chars().filter(|c| *c != '\'').collect();
        if RELATIONS.contains(&plain.as_str()) {
            return Lexical::Relation(plain);
        }
        if token
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == ',')
        {
            return Lexical::Number(plain.chars().filter(|c| *c != ',').collect());
        }
        if let Some((_, n)) = NUMBER_WORDS.iter().find(|(w, _)| *w == plain) {
            return Lexical::Number(n.to_string());
        }
        if NEGATIONS.contains(&plain.as_str()) || lower.ends_with("n't") {
            return Lexical::Negation;
        }
        if STOP_WORDS.contains(&plain.as_str()) {
            Lexical::Stop
        } else {
            Lexical::Content(canonical(fold(token)))
        }
    }
}

/// A word of the sequence the relations are read from.
enum Word {
    Content(String),
    Relation(String),
}

impl Word {
    fn content(&self) -> Option<&str> {
        match self {
            Word::Content(w) => Some(w),
            Word::Relation(_) => None,
        }
    }
}

/// The settings of the check.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    /// The similarity from which prompts whose content words were substituted may still be the
    /// same question (when no substituted word is a name or an opposite).
    pub substitution_score: f32,
    /// Whether content words added on one side only make another question.
    pub refuse_additions: bool,
}

/// Why a candidate was refused (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Numbers,
    Negation,
    Opposite,
    Direction,
    Object,
    QuestionKind,
    Name,
    Substitution,
    Addition,
}

/// The word that stands for a folded word's synonym group (itself when it has none).
fn canonical(folded: String) -> String {
    // Folding only shortens a word and changes at most its last letter before the cut
    // (`cities` / `city`), so a listed word that does not start with all but the last letter of
    // `folded` cannot fold to it: skip it without folding (this runs for every content word).
    let head = &folded.as_bytes()[..folded.len().saturating_sub(1)];
    let may_fold_to = |w: &str| w.len() >= folded.len() && w.as_bytes().starts_with(head);
    SYNONYMS
        .iter()
        .find(|group| group.iter().any(|w| may_fold_to(w) && fold(w) == folded))
        .map_or(folded, |group| fold(group[0]))
}

/// Opposites from the list (any words, `on` / `off` included).
fn listed_opposite(a: &str, b: &str) -> bool {
    OPPOSITES.iter().any(|(x, y)| {
        let (x, y) = (fold(x), fold(y));
        (x == a && y == b) || (x == b && y == a)
    })
}

/// A content word and its prefixed negation (`lock` / `unlock`; too short a base never counts:
/// `into` is not the negation of `to`).
fn prefixed_opposite(a: &str, b: &str) -> bool {
    let negates = |long: &str, short: &str| {
        short.len() >= 4
            && NEGATING_PREFIXES
                .iter()
                .any(|p| long.strip_prefix(p) == Some(short))
    };
    negates(a, b) || negates(b, a)
}

impl Check {
    /// Whether `query` asks the same as `stored`, given their cosine `score` (which already
    /// passed the threshold).
    pub fn same_question(&self, query: &Words, stored: &Words, score: f32) -> Result<(), Refusal> {
        if query.numbers != stored.numbers {
            return Err(Refusal::Numbers);
        }
        if query.negations % 2 != stored.negations % 2 {
            return Err(Refusal::Negation);
        }
        if !query.kinds.is_empty() && !stored.kinds.is_empty() && query.kinds != stored.kinds {
            return Err(Refusal::QuestionKind);
        }
        let only_query: Vec<&String> = query.all.difference(&stored.all).collect();
        let only_stored: Vec<&String> = stored.all.difference(&query.all).collect();
        if only_query
            .iter()
            .any(|a| only_stored.iter().any(|b| listed_opposite(a, b)))
        {
            return Err(Refusal::Opposite);
        }
        if query.relations.iter().any(|(a, r, b)| {
            a != b
                && stored
                    .relations
                    .contains(&(b.clone(), r.clone(), a.clone()))
        }) {
            return Err(Refusal::Direction);
        }
        // The same words with two of them swapped around a word that stays: "miles in 10 km" /
        // "km in 10 miles" (two neighbours swapped is a rewording: "order refund").
        if query.order.len() == stored.order.len() {
            let differ: Vec<usize> = (0..query.order.len())
                .filter(|&i| query.order[i] != stored.order[i])
                .collect();
            if let [i, j] = differ[..]
                && j > i + 1
                && query.order[i] == stored.order[j]
                && query.order[j] == stored.order[i]
            {
                return Err(Refusal::Direction);
            }
        }
        // The same relation to another object: "shipping to Canada" / "shipping to Mexico",
        // "rate on savings" / "rate on credit cards".
        for (x, r, y) in &query.relations {
            if stored.relations.iter().any(|(x2, r2, z)| {
                x2 == x
                    && r2 == r
                    && z != y
                    && !stored.content.contains(y)
                    && !query.content.contains(z)
            }) {
                return Err(Refusal::Object);
            }
        }
        let only_query: Vec<&String> = query.content.difference(&stored.content).collect();
        let only_stored: Vec<&String> = stored.content.difference(&query.content).collect();
        if only_query
            .iter()
            .any(|a| only_stored.iter().any(|b| prefixed_opposite(a, b)))
        {
            return Err(Refusal::Opposite);
        }
        // A name swapped for another: another entity (Austria for Australia, Rust for Python).
        if only_query.iter().any(|w| query.names.contains(*w))
            && only_stored.iter().any(|w| stored.names.contains(*w))
        {
            return Err(Refusal::Name);
        }
        // One content word swapped for one other, the rest the same: the signature of a near
        // miss (`teaspoons` for `tablespoons`, `worst` for `average`). A rewording changes more.
        if only_query.len() == 1 && only_stored.len() == 1 && score < self.substitution_score {
            return Err(Refusal::Substitution);
        }
        // Strict: content words added on one side only ("cancel my order *and get a refund*").
        // Also refuses rewordings that add a word ("capital *city*"): fewer false hits, fewer
        // hits (see the README for the measured trade-off).
        if self.refuse_additions && (only_query.is_empty() != only_stored.is_empty()) {
            return Err(Refusal::Addition);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(a: &str, b: &str, score: f32) -> Result<(), Refusal> {
        Check {
            substitution_score: 0.95,
            refuse_additions: false,
        }
        .same_question(&Words::of(a), &Words::of(b), score)
    }

    #[test]
    fn rewordings_pass() {
        assert_eq!(
            check(
                "How do I reset my password?",
                "How can I reset my password?",
                0.9
            ),
            Ok(())
        );
        assert_eq!(
            check(
                "What's the capital of France?",
                "What is the capital city of France",
                0.9
            ),
            Ok(())
        );
        assert_eq!(
            check(
                "Please explain how photosynthesis works",
                "how does photosynthesis work",
                0.9
            ),
            Ok(())
        );
    }

    #[test]
    fn near_misses_are_refused() {
        assert_eq!(
            check(
                "How do I enable two-factor authentication?",
                "How do I disable two-factor authentication?",
                0.97
            ),
            Err(Refusal::Opposite)
        );
        assert_eq!(
            check(
                "What is the capital of Australia?",
                "What is the capital of Austria?",
                0.97
            ),
            Err(Refusal::Object)
        );
        assert_eq!(
            check(
                "When does the store open?",
                "When does the store close?",
                0.97
            ),
            Err(Refusal::Opposite)
        );
        assert_eq!(
            check("Convert 5 miles to km", "Convert 10 miles to km", 0.99),
            Err(Refusal::Numbers)
        );
        assert_eq!(
            check(
                "Is it safe to drink tap water?",
                "Is it not safe to drink tap water?",
                0.99
            ),
            Err(Refusal::Negation)
        );
        assert_eq!(
            check(
                "How do I lock my screen?",
                "How do I unlock my screen?",
                0.99
            ),
            Err(Refusal::Opposite)
        );
        assert_eq!(
            check(
                "How to sort a list in python",
                "How to reverse a list in python",
                0.9
            ),
            Err(Refusal::Substitution)
        );
        let cases = [
            (
                "Convert 5 miles to kilometers",
                "Convert 5 kilometers to miles",
                Refusal::Direction,
            ),
            (
                "How many miles is 10 kilometers?",
                "How many kilometers is 10 miles?",
                Refusal::Direction,
            ),
            (
                "How much does shipping to Canada cost?",
                "how long does shipping to canada take",
                Refusal::QuestionKind,
            ),
            (
                "Who wrote Hamlet?",
                "When was Hamlet written?",
                Refusal::QuestionKind,
            ),
            (
                "What is the interest rate on savings accounts?",
                "What is the interest rate on credit cards?",
                Refusal::Object,
            ),
            (
                "How do I stop running containers?",
                "how do i remove stopped containers",
                Refusal::Substitution,
            ),
            (
                "how do i install python on a mac",
                "how do i install rust on a mac",
                Refusal::Substitution,
            ),
            (
                "Price of the Pixel 9",
                "Price of the iPhone 9",
                Refusal::Object,
            ),
        ];
        for (a, b, why) in cases {
            assert_eq!(check(a, b, 0.9), Err(why), "{a} | {b}");
        }
    }

    #[test]
    fn rewordings_that_look_like_near_misses_pass() {
        // Neighbours swapped, a question word talked about, synonyms, number words.
        let cases = [
            (
                "Can I get a refund for my order?",
                "Is it possible to get my order refund",
            ),
            ("When do I use who versus whom?", "rule for who vs whom"),
            (
                "How do I purchase a gift card?",
                "What's the way to buy a gift card?",
            ),
            ("What is 15% of 80?", "what is fifteen percent of eighty"),
            (
                "How long do I boil an egg?",
                "How many minutes do I boil an egg?",
            ),
        ];
        for (a, b) in cases {
            assert_eq!(check(a, b, 0.95), Ok(()), "{a} | {b}");
        }
    }

    #[test]
    fn words_are_folded() {
        assert_eq!(fold("files"), fold("file"));
        assert_eq!(fold("boxes"), fold("box"));
        assert_eq!(fold("countries"), "country");
        assert_eq!(fold("Australia's"), "australia");
        assert_eq!(fold("installed"), "install");
        assert_eq!(fold("stopped"), "stop");
        assert_eq!(fold("running"), "run");
        assert_eq!(fold("closed"), fold("close"));
        assert_eq!(fold("closing"), fold("closes"));
        assert_eq!(fold("class"), "class");
        assert_eq!(fold("classes"), "class");
        let w = Words::of("Is it 2.5 or 3 km to Paris? It is not far.");
        assert_eq!(w.numbers, vec!["2.5".to_owned(), "3".to_owned()]);
        assert_eq!(w.negations, 1);
        assert!(w.names.contains("paris"), "{w:?}");
        assert!(!w.names.contains("is"), "{w:?}");
        assert_eq!(Words::of("1,000 users").numbers, vec!["1000".to_owned()]);
        assert!(Words::of("my iPhone").names.contains(&fold("iphone")));
    }
}
