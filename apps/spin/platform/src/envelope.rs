//! Values with an expiry, in a store that has none.
//!
//! Layout: the tag byte [`TAG`], the expiry as milliseconds since the Unix epoch (big-endian
//! `u64`, 0 = never), then the value. A stored value without the tag (written by something
//! else, e.g. `spin kv`) is read as it is, without expiry. Counters hold their value as decimal
//! ASCII, like the self-hosted store, so `kv-get` reads a counter as the policy expects.

/// First byte of an enveloped value.
pub const TAG: u8 = 0xE1;
const HEADER: usize = 9;

/// `value` with its expiry (`None`: never).
pub fn encode(expires_at_ms: Option<u64>, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + value.len());
    out.push(TAG);
    out.extend_from_slice(&expires_at_ms.unwrap_or(0).to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// The value and its expiry (`None`: never).
pub fn decode(stored: &[u8]) -> (Option<u64>, &[u8]) {
    match stored {
        [TAG, rest @ ..] if rest.len() >= HEADER - 1 => {
            let (at, value) = rest.split_at(HEADER - 1);
            let mut be = [0u8; 8];
            be.copy_from_slice(at);
            let at = u64::from_be_bytes(be);
            ((at != 0).then_some(at), value)
        }
        _ => (None, stored),
    }
}

/// The value if it has not expired at `now_ms`.
pub fn live(stored: &[u8], now_ms: u64) -> Option<&[u8]> {
    match decode(stored) {
        (Some(at), _) if at <= now_ms => None,
        (_, value) => Some(value),
    }
}

/// The counter after adding `delta` to `current` (absent or expired counts as 0 and starts a
/// new expiry of `ttl_ms`; a live counter keeps its expiry), and that expiry.
pub fn incremented(
    current: Option<&[u8]>,
    delta: i64,
    ttl_ms: Option<u64>,
    now_ms: u64,
) -> Result<(i64, Option<u64>), String> {
    match current {
        Some(stored) if live(stored, now_ms).is_some() => {
            let (expires_at, value) = decode(stored);
            let n = std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .ok_or("not an integer")?;
            Ok((n.saturating_add(delta), expires_at))
        }
        _ => Ok((delta, ttl_ms.map(|t| now_ms.saturating_add(t)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_with_and_without_expiry() {
        assert_eq!(decode(&encode(Some(42), b"abc")), (Some(42), &b"abc"[..]));
        assert_eq!(decode(&encode(None, b"")), (None, &b""[..]));
    }

    #[test]
    fn expired_values_read_as_absent() {
        let v = encode(Some(1_000), b"x");
        assert_eq!(live(&v, 999), Some(&b"x"[..]));
        assert_eq!(live(&v, 1_000), None);
        assert_eq!(live(&encode(None, b"x"), u64::MAX), Some(&b"x"[..]));
    }

    #[test]
    fn foreign_values_are_read_as_they_are() {
        assert_eq!(live(b"plain", 5), Some(&b"plain"[..]));
        assert_eq!(decode(&[TAG, 1, 2]), (None, &[TAG, 1, 2][..]));
    }

    #[test]
    fn counters_start_with_their_ttl_and_keep_it() {
        let (n, at) = incremented(None, 5, Some(100), 1_000).unwrap();
        assert_eq!((n, at), (5, Some(1_100)));
        let stored = encode(at, n.to_string().as_bytes());
        assert_eq!(
            incremented(Some(&stored), -2, Some(999), 1_050).unwrap(),
            (3, Some(1_100))
        );
        // Expired: starts again from the delta with a new expiry.
        assert_eq!(
            incremented(Some(&stored), 7, Some(100), 1_100).unwrap(),
            (7, Some(1_200))
        );
    }

    #[test]
    fn a_non_integer_cannot_be_incremented() {
        assert!(incremented(Some(&encode(None, b"abc")), 1, None, 0).is_err());
    }
}
