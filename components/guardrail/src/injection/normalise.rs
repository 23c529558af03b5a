//! The normaliser of the injection heuristics: lower case, leetspeak digits folded to letters,
//! hidden characters dropped, punctuation as spaces, letters spelled out one by one joined
//! again; an ASCII text byte by byte, any other character by character.

/// True for characters that hide text: zero-width, bidirectional controls, invisible
/// operators, the byte-order mark inside text, tag characters.
pub fn hidden(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{2069}'
        | '\u{FEFF}'
        | '\u{E0000}'..='\u{E007F}')
}

fn fold(c: char) -> char {
    match c {
        '0' => 'o',
        '1' | '!' | '|' => 'i',
        '3' => 'e',
        '4' | '@' => 'a',
        '5' | '$' => 's',
        '7' => 't',
        'à' | 'â' | 'á' | 'ä' | 'ã' => 'a',
        'é' | 'è' | 'ê' | 'ë' => 'e',
        'í' | 'ì' | 'î' | 'ï' => 'i',
        'ó' | 'ò' | 'ô' | 'ö' | 'õ' => 'o',
        'ú' | 'ù' | 'û' | 'ü' => 'u',
        'ç' => 'c',
        'ñ' => 'n',
        c => c,
    }
}

/// Lower case, folded, hidden characters dropped, punctuation as spaces, single letters spelled
/// out (`i g n o r e`) joined, whitespace collapsed.
pub fn normalise(text: &str) -> String {
    let (words, longest) = if text.is_ascii() {
        ascii_words(text.as_bytes())
    } else {
        unicode_words(text)
    };
    if longest < 4 {
        return words;
    }
    // Join runs of 4+ single letters: "i g n o r e" -> "ignore".
    let mut out = String::with_capacity(words.len());
    let tokens: Vec<&str> = words.split(' ').filter(|w| !w.is_empty()).collect();
    let single = |w: &str| {
        let mut cs = w.chars();
        cs.next().is_some_and(char::is_alphabetic) && cs.next().is_none()
    };
    let mut i = 0;
    while i < tokens.len() {
        let mut j = i;
        while j < tokens.len() && single(tokens[j]) {
            j += 1;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        if j - i >= 4 {
            tokens[i..j].iter().for_each(|t| out.push_str(t));
            i = j;
        } else {
            out.push_str(tokens[i]);
            i += 1;
        }
    }
    out
}

/// The words of `text` as [`normalise`] writes them (before single letters are joined), and
/// the longest run of single letters among them.
fn unicode_words(text: &str) -> (String, usize) {
    let mut words = String::with_capacity(text.len() + 1);
    let mut current = String::new();
    // Whether `current` has a letter; single letters in a row, and the longest such run.
    let mut letters = false;
    let (mut run, mut longest) = (0usize, 0usize);
    let mut end_word = |words: &mut String, current: &mut String, letters: &mut bool| {
        run = if push_word(words, current, *letters) {
            run + 1
        } else {
            0
        };
        longest = longest.max(run);
        *letters = false;
    };
    let mut chars = text.chars().filter(|c| !hidden(*c)).peekable();
    while let Some(c) = chars.next() {
        let c = if c.is_ascii() {
            c.to_ascii_lowercase()
        } else {
            c.to_lowercase().next().unwrap_or(c)
        };
        // `!|@$` stand for letters only inside a word (`h@ck`), not after one (`now!!!`).
        let inside = matches!(c, '!' | '|' | '@' | '$')
            && !current.is_empty()
            && chars.peek().is_some_and(|n| n.is_alphanumeric());
        if c.is_alphanumeric() || inside {
            letters |= c.is_alphabetic();
            current.push(c);
        } else if !current.is_empty() {
            end_word(&mut words, &mut current, &mut letters);
        }
    }
    if !current.is_empty() {
        end_word(&mut words, &mut current, &mut letters);
    }
    (words, longest)
}

/// What an ASCII byte is to [`ascii_words`]: a letter, a digit, or one of `!|@$` (a letter only
/// inside a word).
const LETTER: u8 = 1;
const DIGIT: u8 = 2;
const INSIDE: u8 = 4;
const BYTE_CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = if c.is_ascii_alphabetic() {
            LETTER
        } else if c.is_ascii_digit() {
            DIGIT
        } else if matches!(c, b'!' | b'|' | b'@' | b'$') {
            INSIDE
        } else {
            0
        };
        b += 1;
    }
    table
};
/// Each ASCII byte lower-cased, and lower-cased then [`fold_ascii`]ed.
const LOWER: [u8; 256] = byte_table(false);
const LOWER_FOLDED: [u8; 256] = byte_table(true);

const fn byte_table(folded: bool) -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = (b as u8).to_ascii_lowercase();
        table[b] = if folded { fold_ascii(c) } else { c };
        b += 1;
    }
    table
}

/// [`unicode_words`] for an ASCII text, byte by byte (no character decoding; a test checks
/// both give the same on ASCII texts). A word is a run of letters and digits, with `!|@$`
/// inside one (after its first character, before a letter or digit).
fn ascii_words(text: &[u8]) -> (String, usize) {
    let class = |i: usize| text.get(i).map_or(0, |b| BYTE_CLASS[usize::from(*b)]);
    let mut words = Vec::with_capacity(text.len() + 1);
    let (mut run, mut longest) = (0usize, 0usize);
    let mut i = 0;
    while i < text.len() {
        let start = i;
        let mut seen = 0;
        loop {
            let c = class(i);
            if c & (LETTER | DIGIT) == 0
                && (c != INSIDE || i == start || class(i + 1) & (LETTER | DIGIT) == 0)
            {
                break;
            }
            seen |= c;
            i += 1;
        }
        if i == start {
            i += 1;
            continue;
        }
        if !words.is_empty() {
            words.push(b' ');
        }
        let at = words.len();
        // Folding keeps a word's bytes letters and digits (`!|@$` become letters): none drops.
        let letters = seen & LETTER != 0;
        let table = if letters { &LOWER_FOLDED } else { &LOWER };
        words.extend(text[start..i].iter().map(|b| table[usize::from(*b)]));
        let single = letters && words.len() == at + 1 && words[at].is_ascii_alphabetic();
        run = if single { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    // Only ASCII bytes were pushed.
    (String::from_utf8(words).unwrap_or_default(), longest)
}

/// [`fold`] on an ASCII byte.
const fn fold_ascii(b: u8) -> u8 {
    match b {
        b'0' => b'o',
        b'1' | b'!' | b'|' => b'i',
        b'3' => b'e',
        b'4' | b'@' => b'a',
        b'5' | b'$' => b's',
        b'7' => b't',
        b => b,
    }
}

/// Appends `current` to `words` (space-separated), folded when it has `letters`: digits and
/// symbols inside a word of letters are leetspeak (`1gn0re`), in a number they stay. Returns
/// whether the word is a single letter.
fn push_word(words: &mut String, current: &mut String, letters: bool) -> bool {
    if !words.is_empty() {
        words.push(' ');
    }
    let start = words.len();
    if letters {
        words.extend(current.chars().map(fold).filter(|c| c.is_alphanumeric()));
    } else {
        words.push_str(current);
    }
    current.clear();
    let mut word = words[start..].chars();
    letters && word.next().is_some_and(char::is_alphabetic) && word.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// ASCII texts split into the same words byte by byte as character by character
        /// (letters, digits, the leetspeak symbols, spaces, punctuation; runs of single letters).
        #[test]
        fn ascii_words_are_the_unicode_words(text in "([a-cA-C0-9!|@$ .,'\\n-]|i g n o r e ){0,60}") {
            proptest::prop_assert_eq!(ascii_words(text.as_bytes()), unicode_words(&text));
        }
    }
}
