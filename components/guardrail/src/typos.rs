//! Typo-tolerant word comparison for the injection heuristics: a bounded optimal string
//! alignment distance on short byte strings, and the letter sets that rule most comparisons out
//! before it runs.

/// Longest word compared with typos allowed (longer ones must match exactly).
const FUZZY_MAX_LEN: usize = 24;

/// Whether the Damerau–Levenshtein (optimal string alignment) distance of two short byte
/// strings is at most `max`: three rows of the table on the stack, given up as soon as a whole
/// row exceeds `max` (the distance only grows from there).
pub(crate) fn within(a: &[u8], b: &[u8], max: u8) -> bool {
    let (n, m) = (a.len(), b.len());
    let mut rows = [[0u8; FUZZY_MAX_LEN + 1]; 3];
    for (j, cell) in rows[1].iter_mut().enumerate().take(m + 1) {
        *cell = j as u8;
    }
    for i in 1..=n {
        // Row i in rows[cur], row i - 1 in rows[one], row i - 2 in rows[two].
        let (two, one, cur) = ((i + 2) % 3, i % 3, (i + 1) % 3);
        rows[cur][0] = i as u8;
        let mut least = rows[cur][0];
        for j in 1..=m {
            let cost = u8::from(a[i - 1] != b[j - 1]);
            let mut v = (rows[one][j] + 1)
                .min(rows[cur][j - 1] + 1)
                .min(rows[one][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(rows[two][j - 2] + 1);
            }
            rows[cur][j] = v;
            least = least.min(v);
        }
        if least > max {
            return false;
        }
    }
    rows[(n + 1) % 3][m] <= max
}

/// `word` is `target` give or take a typo: one edit for targets of 5 to 8 letters, two from 9;
/// the first letter (or the first two, swapped) must be right, as in almost every typo.
pub(crate) fn like(word: &str, target: &str) -> bool {
    if word == target {
        return true;
    }
    let (w, t) = (word.as_bytes(), target.as_bytes());
    let max = match t.len() {
        0..=4 => return false,
        5..=8 => 1,
        _ => 2,
    };
    if w.len().abs_diff(t.len()) > max
        || w.len() > FUZZY_MAX_LEN
        || t.len() > FUZZY_MAX_LEN
        || w.len() < 2
    {
        return false;
    }
    if w[0] != t[0] && !(w[0] == t[1] && w[1] == t[0]) {
        return false;
    }
    within(w, t, max as u8)
}

/// The set of byte values of a word, folded into 64 bits (distinct for the letters).
pub(crate) fn letters(word: &[u8]) -> u64 {
    word.iter().fold(0, |set, b| set | 1 << (b & 63))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_within_the_bounds() {
        for (word, target, expected) in [
            ("ignore", "ignore", true),
            ("ignroe", "ignore", true),  // letters swapped
            ("ignor", "ignore", true),   // one dropped
            ("ignorre", "ignore", true), // one doubled
            ("ingroe", "ignore", false), // two edits on six letters
            ("instrutions", "instructions", true),
            ("instrctons", "instructions", true),
            ("instrcton", "instructions", false), // three edits
            ("rulez", "rules", true),
            ("rulzz", "rules", false),
            ("rule", "role", false),    // four letters: exact only
            ("gnore", "ignore", false), // the first letter must be right
        ] {
            assert_eq!(like(word, target), expected, "{word} ~ {target}");
        }
    }
}
