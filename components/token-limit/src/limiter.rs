//! The limiter arithmetic, independent of the bindings so it is unit-tested natively.
//!
//! Admission is "increment, then check": the reservation is added atomically to every window's
//! counter and, if any counter passes its limit, every increment made is rolled back and the
//! request is refused. So the sum of admitted reservations in a window never exceeds its limit,
//! whatever the concurrency; settlement later replaces each reservation by the real usage.

/// A counter store with an atomic increment (the host KV in the component, a map in tests).
pub trait Counters {
    /// Adds `delta` to `key` (created at 0 with `ttl_ms` if absent) and returns the new value.
    fn increment(&self, key: &str, delta: i64, ttl_ms: u64) -> Result<i64, String>;
}

/// What a window counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Requests,
    Tokens,
    /// Money, counted in micro-US-dollars (a budget).
    MicroUsd,
}

impl Unit {
    /// The suffix used in `x-ratelimit-*-{unit}` headers (OpenAI's names).
    pub fn header_suffix(self) -> &'static str {
        match self {
            Unit::Requests => "requests",
            Unit::Tokens => "tokens",
            Unit::MicroUsd => "usd",
        }
    }

    /// Short tag used in counter keys.
    fn tag(self) -> &'static str {
        match self {
            Unit::Requests => "r",
            Unit::Tokens => "t",
            Unit::MicroUsd => "u",
        }
    }
}

/// A window length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Minute,
    Day,
    Month,
    /// Never resets.
    Total,
}

/// One configured limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub unit: Unit,
    pub period: Period,
    pub max: u64,
}

const MINUTE_MS: u64 = 60_000;
const DAY_MS: u64 = 86_400_000;

impl Period {
    /// Short tag used in counter keys.
    pub fn tag(self) -> &'static str {
        match self {
            Period::Minute => "m",
            Period::Day => "d",
            Period::Month => "mo",
            Period::Total => "all",
        }
    }

    /// The bucket containing `now_ms`: its id and the time it ends.
    pub fn bucket(self, now_ms: u64) -> (u64, u64) {
        match self {
            Period::Minute => (now_ms / MINUTE_MS, (now_ms / MINUTE_MS + 1) * MINUTE_MS),
            Period::Day => (now_ms / DAY_MS, (now_ms / DAY_MS + 1) * DAY_MS),
            Period::Month => {
                let (y, m) = civil_month(now_ms / DAY_MS);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                (y * 12 + (m - 1), days_from_civil(ny, nm, 1) * DAY_MS)
            }
            Period::Total => (0, u64::MAX),
        }
    }
}

/// (year, month 1..=12) of a day number since 1970-01-01 (proleptic Gregorian calendar).
pub fn civil_month(days: u64) -> (u64, u64) {
    // Howard Hinnant's civil_from_days, for dates after 1970.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m)
}

/// Day number since 1970-01-01 of a civil date (inverse of [`civil_month`]).
pub fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A refused admission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub limit: Limit,
    /// What was left in the window before this request.
    pub remaining: u64,
    /// Milliseconds until the window resets.
    pub retry_after_ms: u64,
    /// The request alone is larger than the limit: waiting will not help.
    pub too_large: bool,
}

/// An admitted request: the token and money counters it reserved on and how much.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reservation {
    pub tokens: u64,
    pub keys: Vec<String>,
    pub micro_usd: u64,
    pub usd_keys: Vec<String>,
}

impl Reservation {
    /// Serialised into a context attribute: `tokens,micro_usd;tkey1<LF>tkey2;ukey1`.
    pub fn encode(&self) -> String {
        format!(
            "{},{};{};{}",
            self.tokens,
            self.micro_usd,
            self.keys.join("\n"),
            self.usd_keys.join("\n")
        )
    }

    /// Inverse of [`Reservation::encode`].
    pub fn decode(s: &str) -> Option<Self> {
        let mut parts = s.splitn(3, ';');
        let amounts = parts.next()?;
        let keys = |p: Option<&str>| -> Vec<String> {
            p.unwrap_or("")
                .split('\n')
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let (tokens, micro_usd) = amounts.split_once(',').unwrap_or((amounts, "0"));
        Some(Self {
            tokens: tokens.parse().ok()?,
            micro_usd: micro_usd.parse().ok()?,
            keys: keys(parts.next()),
            usd_keys: keys(parts.next()),
        })
    }
}

/// Why admission could not be decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdmitError {
    Refused(Refusal),
    Store(String),
}

/// Reserves `tokens` (and one request) on every limit for `subject`, or refuses.
pub fn admit(
    store: &impl Counters,
    subject: &str,
    limits: &[Limit],
    tokens: u64,
    now_ms: u64,
) -> Result<Reservation, AdmitError> {
    admit_with_cost(store, subject, limits, tokens, 0, now_ms)
}

/// Reserves `tokens`, `micro_usd` and one request on every limit for `subject`, or refuses.
pub fn admit_with_cost(
    store: &impl Counters,
    subject: &str,
    limits: &[Limit],
    tokens: u64,
    micro_usd: u64,
    now_ms: u64,
) -> Result<Reservation, AdmitError> {
    let mut applied: Vec<(String, i64, u64)> = Vec::with_capacity(limits.len());
    let mut token_keys = Vec::new();
    let mut usd_keys = Vec::new();
    for limit in limits {
        let (bucket, ends_at) = limit.period.bucket(now_ms);
        let key = format!(
            "{subject}|{}{}|{bucket}",
            limit.unit.tag(),
            limit.period.tag()
        );
        let delta = match limit.unit {
            Unit::Requests => 1,
            Unit::Tokens => i64::try_from(tokens).unwrap_or(i64::MAX),
            Unit::MicroUsd => i64::try_from(micro_usd).unwrap_or(i64::MAX),
        };
        // Keep counters a little past their window so late settlements still find them (a
        // total never expires: 0).
        let ttl = match limit.period {
            Period::Total => 0,
            _ => ends_at.saturating_sub(now_ms) + MINUTE_MS,
        };
        let value = match store.increment(&key, delta, ttl) {
            Ok(v) => v,
            Err(e) => {
                rollback(store, &applied);
                return Err(AdmitError::Store(e));
            }
        };
        applied.push((key.clone(), delta, ttl));
        let value = u64::try_from(value).unwrap_or(0);
        if value > limit.max {
            rollback(store, &applied);
            let before = value.saturating_sub(delta.unsigned_abs());
            return Err(AdmitError::Refused(Refusal {
                limit: *limit,
                remaining: limit.max.saturating_sub(before),
                retry_after_ms: ends_at.saturating_sub(now_ms),
                too_large: delta.unsigned_abs() > limit.max,
            }));
        }
        match limit.unit {
            Unit::Tokens => token_keys.push(key),
            Unit::MicroUsd => usd_keys.push(key),
            Unit::Requests => {}
        }
    }
    Ok(Reservation {
        tokens,
        keys: token_keys,
        micro_usd,
        usd_keys,
    })
}

fn rollback(store: &impl Counters, applied: &[(String, i64, u64)]) {
    for (key, delta, ttl) in applied {
        // Best effort: a failed rollback only makes the limit stricter until the window ends.
        let _ = store.increment(key, -delta, *ttl);
    }
}

/// Replaces the reservation by the real usage on every counter it was made on.
pub fn settle(
    store: &impl Counters,
    reservation: &Reservation,
    actual_tokens: u64,
) -> Result<(), String> {
    adjust(store, &reservation.keys, reservation.tokens, actual_tokens)
}

/// Replaces the money reserved by the real cost on every budget it was reserved on.
pub fn settle_cost(
    store: &impl Counters,
    reservation: &Reservation,
    actual_micro_usd: u64,
) -> Result<(), String> {
    adjust(
        store,
        &reservation.usd_keys,
        reservation.micro_usd,
        actual_micro_usd,
    )
}

fn adjust(
    store: &impl Counters,
    keys: &[String],
    reserved: u64,
    actual: u64,
) -> Result<(), String> {
    let delta = i128::from(actual) - i128::from(reserved);
    let delta = i64::try_from(delta).unwrap_or(0);
    if delta == 0 {
        return Ok(());
    }
    for key in keys {
        store.increment(key, delta, DAY_MS * 32)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    #[derive(Default, Clone)]
    struct Map(Arc<Mutex<HashMap<String, i64>>>);

    impl Counters for Map {
        fn increment(&self, key: &str, delta: i64, _ttl: u64) -> Result<i64, String> {
            let mut m = self.0.lock().map_err(|e| e.to_string())?;
            let v = m.entry(key.to_owned()).or_insert(0);
            *v += delta;
            Ok(*v)
        }
    }

    const TPM: Limit = Limit {
        unit: Unit::Tokens,
        period: Period::Minute,
        max: 1000,
    };
    const RPM: Limit = Limit {
        unit: Unit::Requests,
        period: Period::Minute,
        max: 3,
    };

    #[test]
    fn admits_until_the_limit_then_refuses_and_rolls_back() {
        let m = Map::default();
        let now = 1_700_000_000_000;
        for _ in 0..2 {
            admit(&m, "a", &[TPM], 400, now).unwrap();
        }
        let Err(AdmitError::Refused(r)) = admit(&m, "a", &[TPM], 400, now) else {
            panic!()
        };
        assert_eq!(r.remaining, 200);
        assert!(!r.too_large);
        assert_eq!(r.retry_after_ms, 60_000 - now % 60_000);
        // The refused reservation was rolled back: a 200-token request still fits.
        admit(&m, "a", &[TPM], 200, now).unwrap();
    }

    #[test]
    fn refusal_on_a_later_limit_rolls_back_earlier_ones() {
        let m = Map::default();
        let now = 0;
        let limits = [RPM, TPM];
        admit(&m, "a", &limits, 900, now).unwrap();
        assert!(admit(&m, "a", &limits, 200, now).is_err());
        // The request counter was rolled back too: two more small requests fit in RPM=3.
        admit(&m, "a", &limits, 10, now).unwrap();
        admit(&m, "a", &limits, 10, now).unwrap();
        let Err(AdmitError::Refused(r)) = admit(&m, "a", &limits, 10, now) else {
            panic!()
        };
        assert_eq!(r.limit, RPM);
    }

    #[test]
    fn subjects_and_windows_are_separate() {
        let m = Map::default();
        admit(&m, "a", &[TPM], 1000, 0).unwrap();
        admit(&m, "b", &[TPM], 1000, 0).unwrap();
        assert!(admit(&m, "a", &[TPM], 1, 59_999).is_err());
        admit(&m, "a", &[TPM], 1000, 60_000).unwrap();
    }

    #[test]
    fn oversize_request_is_marked_too_large() {
        let m = Map::default();
        let Err(AdmitError::Refused(r)) = admit(&m, "a", &[TPM], 5000, 0) else {
            panic!()
        };
        assert!(r.too_large);
    }

    #[test]
    fn settlement_replaces_the_reservation() {
        let m = Map::default();
        let r = admit(&m, "a", &[TPM], 800, 0).unwrap();
        settle(&m, &r, 100).unwrap();
        // 900 left now.
        admit(&m, "a", &[TPM], 900, 0).unwrap();
        assert!(admit(&m, "a", &[TPM], 1, 0).is_err());
    }

    #[test]
    fn budgets_reserve_money_and_settle_to_the_real_cost() {
        let m = Map::default();
        let budget = Limit {
            unit: Unit::MicroUsd,
            period: Period::Day,
            max: 1000,
        };
        let total = Limit {
            unit: Unit::MicroUsd,
            period: Period::Total,
            max: 5000,
        };
        let r = admit_with_cost(&m, "a", &[budget, total], 10, 600, 0).unwrap();
        assert_eq!(r.usd_keys.len(), 2);
        assert!(r.keys.is_empty());
        // 600 reserved of 1000: a second 600 is refused, until the first settles to 100.
        let Err(AdmitError::Refused(refused)) =
            admit_with_cost(&m, "a", &[budget, total], 10, 600, 0)
        else {
            panic!("expected a refusal")
        };
        assert_eq!((refused.limit, refused.remaining), (budget, 400));
        settle_cost(&m, &r, 100).unwrap();
        admit_with_cost(&m, "a", &[budget, total], 10, 600, 0).unwrap();
        // 700 spent on day 0; 900 a day on days 1 to 4 makes 4300 of the total 5000. On day 5
        // the day's budget would allow 900 more, the total does not: it does not reset.
        let day = 86_400_000;
        for d in 1..=4 {
            admit_with_cost(&m, "a", &[budget, total], 10, 900, d * day).unwrap();
        }
        let Err(AdmitError::Refused(refused)) =
            admit_with_cost(&m, "a", &[budget, total], 10, 900, 5 * day)
        else {
            panic!("expected the total to be spent")
        };
        assert_eq!((refused.limit, refused.remaining), (total, 700));
    }

    #[test]
    fn reservation_round_trips() {
        let r = Reservation {
            tokens: 42,
            keys: vec!["a|tm|1".into(), "a|td|2".into()],
            ..Default::default()
        };
        assert_eq!(Reservation::decode(&r.encode()), Some(r));
        let with_cost = Reservation {
            tokens: 42,
            keys: vec!["a|tm|1".into()],
            micro_usd: 1234,
            usd_keys: vec!["a|ud|2".into(), "a|uall|0".into()],
        };
        assert_eq!(Reservation::decode(&with_cost.encode()), Some(with_cost));
        assert_eq!(Reservation::decode("x"), None);
    }

    #[test]
    fn concurrent_admissions_never_overshoot() {
        let m = Map::default();
        let admitted = Arc::new(Mutex::new(0u64));
        let threads: Vec<_> = (0..64)
            .map(|_| {
                let (m, admitted) = (m.clone(), admitted.clone());
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        if admit(&m, "a", &[TPM], 7, 0).is_ok() {
                            *admitted.lock().unwrap() += 7;
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let total = *admitted.lock().unwrap();
        assert!(
            total <= 1000,
            "admitted {total} tokens with a limit of 1000"
        );
        assert!(total > 1000 - 7, "refused too much: {total}");
    }

    #[test]
    fn month_buckets_follow_the_calendar() {
        // 2024-02-29T12:00:00Z
        let now = 1_709_208_000_000;
        let (bucket, ends) = Period::Month.bucket(now);
        assert_eq!(bucket, 2024 * 12 + 1);
        assert_eq!(ends, 1_709_251_200_000); // 2024-03-01T00:00:00Z
        // 2023-12-31T23:59:59Z rolls into 2024-01-01.
        let (_, ends) = Period::Month.bucket(1_704_067_199_000);
        assert_eq!(ends, 1_704_067_200_000);
        assert_eq!(civil_month(0), (1970, 1));
        assert_eq!(days_from_civil(1970, 1, 1), 0);
    }
}
