//! Masking a request's text and restoring the answer's, whole or as a stream of pieces.

use crate::detect::{self, Detector};

/// What happens to an entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// A numbered placeholder (`[EMAIL_1]`), restored in the answer.
    #[default]
    Mask,
    /// A fixed placeholder (`[EMAIL_REDACTED]`): the value is gone for good.
    Redact,
}

/// Longest placeholder the policy makes: `[` + a custom name of at most 32 characters + `_` +
/// up to 10 digits + `]` (45), rounded up. The stream restorer holds back at most this much.
pub const MAX_HOLD: usize = 64;

/// The masks of one request: which placeholder stands for which value.
#[derive(Debug, Default)]
pub struct Masks {
    /// (placeholder, original), in the order they were made.
    pub map: Vec<(String, String)>,
    /// Entities masked or redacted, by detector: (count masked, count redacted).
    pub counts: Vec<(usize, usize)>,
}

fn tag(name: &str) -> String {
    name.to_ascii_uppercase().replace('-', "_")
}

impl Masks {
    /// Masks `text` with `detectors`; `None` when nothing was found. `avoid` is every text of
    /// the request: a placeholder already written there by the client is never issued, so a
    /// client's own `[EMAIL_1]` is not turned into someone's address in the answer.
    pub fn mask(
        &mut self,
        detectors: &[(Detector, Mode)],
        text: &str,
        avoid: &[&str],
    ) -> Option<String> {
        let list: Vec<&Detector> = detectors.iter().map(|(d, _)| d).collect();
        let found = detect::find(&list, text);
        if found.is_empty() {
            return None;
        }
        if self.counts.len() < detectors.len() {
            self.counts.resize(detectors.len(), (0, 0));
        }
        let mut out = String::with_capacity(text.len() + 16 * found.len());
        let mut at = 0;
        for f in found {
            out.push_str(&text[at..f.start]);
            let (detector, mode) = &detectors[f.detector];
            let value = &text[f.start..f.end];
            match mode {
                Mode::Redact => {
                    out.push('[');
                    out.push_str(&tag(&detector.name));
                    out.push_str("_REDACTED]");
                    self.counts[f.detector].1 += 1;
                }
                Mode::Mask => {
                    let placeholder = self.placeholder(&detector.name, value, avoid);
                    out.push_str(&placeholder);
                    self.counts[f.detector].0 += 1;
                }
            }
            at = f.end;
        }
        out.push_str(&text[at..]);
        Some(out)
    }

    fn placeholder(&mut self, name: &str, value: &str, avoid: &[&str]) -> String {
        let prefix = format!("[{}_", tag(name));
        if let Some((p, _)) = self
            .map
            .iter()
            .find(|(p, v)| v == value && p.starts_with(&prefix))
        {
            return p.clone();
        }
        let mut n = self
            .map
            .iter()
            .filter(|(p, _)| p.starts_with(&prefix))
            .count()
            + 1;
        loop {
            let p = format!("{prefix}{n}]");
            if !avoid.iter().any(|t| t.contains(&p)) && !self.map.iter().any(|(q, _)| *q == p) {
                self.map.push((p.clone(), value.to_owned()));
                return p;
            }
            n += 1;
        }
    }

    /// `text` with every placeholder of this request replaced by its value; others (invented
    /// or mangled by the model) stay as they are.
    pub fn restore(&self, text: &str) -> String {
        let mut out = Vec::with_capacity(text.len());
        restore_into(&self.map, text.as_bytes(), &mut out);
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }
}

fn restore_into(map: &[(String, String)], bytes: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'['
            && let Some((p, v)) = map
                .iter()
                .find(|(p, _)| bytes[i..].starts_with(p.as_bytes()))
        {
            out.extend_from_slice(v.as_bytes());
            i += p.len();
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
}

/// Restores placeholders in a stream whose text arrives in pieces split anywhere (inside a
/// placeholder, inside a multi-byte character). It holds back only what could still become a
/// placeholder of this request, or the start of an incomplete character: never more than
/// [`MAX_HOLD`] bytes.
#[derive(Debug, Default)]
pub struct Restorer {
    held: Vec<u8>,
}

impl Restorer {
    /// The restored text that can go out now.
    pub fn push(&mut self, map: &[(String, String)], piece: &[u8]) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.held);
        buf.extend_from_slice(piece);
        let cut = hold_from(map, &buf);
        self.held = buf.split_off(cut);
        let mut out = Vec::with_capacity(buf.len());
        restore_into(map, &buf, &mut out);
        out
    }

    /// The end of the stream: what was held back, as it is.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }

    /// Bytes held back now.
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

/// Where the part of `buf` that must wait for more input begins.
fn hold_from(map: &[(String, String)], buf: &[u8]) -> usize {
    let window = buf.len().saturating_sub(MAX_HOLD - 1);
    if let Some(pos) = buf[window..].iter().rposition(|b| *b == b'[') {
        let pos = window + pos;
        let tail = &buf[pos..];
        if map
            .iter()
            .any(|(p, _)| p.len() > tail.len() && p.as_bytes().starts_with(tail))
        {
            return pos;
        }
    }
    // An incomplete UTF-8 sequence at the end (at most 3 bytes of a 4-byte character).
    let n = buf.len();
    for back in 1..=3.min(n) {
        let b = buf[n - back];
        if b & 0b1100_0000 == 0b1000_0000 {
            continue; // a continuation byte: look further back
        }
        let need = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if need > back { n - back } else { n };
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Builtin;
    use proptest::prelude::*;

    fn detectors() -> Vec<(Detector, Mode)> {
        Builtin::ALL
            .iter()
            .map(|b| (Detector::builtin(*b), Mode::Mask))
            .collect()
    }

    #[test]
    fn the_same_value_gets_the_same_placeholder() {
        let mut m = Masks::default();
        let d = detectors();
        let a = m.mask(&d, "write to ann@example.com and bob@example.org", &[]);
        let b = m.mask(&d, "again: ann@example.com", &[]);
        assert_eq!(a.as_deref(), Some("write to [EMAIL_1] and [EMAIL_2]"));
        assert_eq!(b.as_deref(), Some("again: [EMAIL_1]"));
        assert_eq!(
            m.restore("Hi [EMAIL_2], cc [EMAIL_1] [EMAIL_3] [EMAIL_1"),
            "Hi bob@example.org, cc ann@example.com [EMAIL_3] [EMAIL_1"
        );
        assert_eq!(m.mask(&d, "nothing here", &[]), None);
    }

    #[test]
    fn a_placeholder_the_client_wrote_is_not_issued() {
        let mut m = Masks::default();
        let d = detectors();
        let text = "my template says [EMAIL_1]; mine is ann@example.com";
        assert_eq!(
            m.mask(&d, text, &[text]).as_deref(),
            Some("my template says [EMAIL_1]; mine is [EMAIL_2]")
        );
    }

    #[test]
    fn redaction_is_not_restored() {
        let mut m = Masks::default();
        let d = vec![(Detector::builtin(Builtin::CreditCard), Mode::Redact)];
        let masked = m.mask(&d, "card 4111 1111 1111 1111", &[]);
        assert_eq!(masked.as_deref(), Some("card [CREDIT_CARD_REDACTED]"));
        assert_eq!(
            m.restore("[CREDIT_CARD_REDACTED]"),
            "[CREDIT_CARD_REDACTED]"
        );
        assert_eq!(m.counts[0], (0, 1));
    }

    static SAMPLE: std::sync::LazyLock<(Masks, String, String)> = std::sync::LazyLock::new(|| {
        let mut m = Masks::default();
        let d = detectors();
        let original = "Dear ann@example.com — ☎ +44 20 7946 0958, card 4111 1111 1111 1111 ✓ 🎉 done [EMAIL_9] [EMAIL_";
        let masked = m.mask(&d, original, &[]).unwrap_or_default();
        (m, original.to_owned(), masked)
    });

    fn sample() -> (&'static Masks, &'static str, &'static str) {
        let (m, original, masked) = &*SAMPLE;
        (m, original, masked)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Every split of the masked answer into pieces, at any byte (inside placeholders and
        /// inside multi-byte characters), restores to the original, and the restorer never
        /// holds more than MAX_HOLD bytes.
        #[test]
        fn any_split_restores_everything(cuts in proptest::collection::vec(0usize..200, 0..12)) {
            let (m, original, masked) = sample();
            let bytes = masked.as_bytes();
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut r = Restorer::default();
            let mut out = Vec::new();
            let mut at = 0;
            for p in points.into_iter().chain([bytes.len()]) {
                let piece = r.push(&m.map, &bytes[at..p]);
                prop_assert!(r.held() <= MAX_HOLD);
                // What goes out is always whole characters.
                prop_assert!(std::str::from_utf8(&piece).is_ok());
                out.extend(piece);
                at = p;
            }
            out.extend(r.finish());
            prop_assert_eq!(String::from_utf8(out).unwrap_or_default(), original);
            prop_assert!(masked.contains("[EMAIL_1]") && masked.contains("[CREDIT_CARD_1]"));
        }
    }

    #[test]
    fn one_byte_at_a_time_holds_little() {
        let (m, original, masked) = sample();
        let mut r = Restorer::default();
        let mut out = Vec::new();
        let mut most = 0;
        for b in masked.as_bytes() {
            out.extend(r.push(&m.map, std::slice::from_ref(b)));
            most = most.max(r.held());
        }
        out.extend(r.finish());
        assert_eq!(String::from_utf8(out).unwrap_or_default(), original);
        assert!(most < "[CREDIT_CARD_1]".len(), "held {most} bytes");
    }
}
