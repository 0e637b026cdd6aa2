//! Multi-interval token buckets for rate limits written as `"100:1,1000:60"` (seed 001): "bursts of
//! 100 per second but no more than 1000 per 60 seconds". Every bucket is checked and debited
//! together, so a refusal by one bucket costs nothing in the others. Time is passed in (ms).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One `capacity:period` pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Tokens the bucket holds (the burst).
    pub capacity: u64,
    /// Seconds in which a full bucket refills.
    pub period_secs: u64,
}

/// A rate-limit definition: several `capacity:period` buckets, all of which must allow.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RateSpec(pub Vec<Rate>);

/// Why a rate-limit definition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid rate limit {text:?}: {reason} (expected \"capacity:seconds[,capacity:seconds...]\", e.g. \"100:1,1000:60\")"
)]
pub struct RateSpecError {
    text: String,
    reason: &'static str,
}

impl FromStr for RateSpec {
    type Err = RateSpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |reason| RateSpecError {
            text: text.to_owned(),
            reason,
        };
        if text.trim().is_empty() {
            return Ok(RateSpec::default());
        }
        let mut rates = Vec::new();
        for part in text.split(',') {
            let (cap, period) = part
                .trim()
                .split_once(':')
                .ok_or_else(|| err("missing ':'"))?;
            let capacity: u64 = cap
                .trim()
                .parse()
                .map_err(|_| err("capacity is not a whole number"))?;
            let period_secs: u64 = period
                .trim()
                .parse()
                .map_err(|_| err("period is not a whole number of seconds"))?;
            if capacity == 0 || period_secs == 0 {
                return Err(err("capacity and period must be positive"));
            }
            rates.push(Rate {
                capacity,
                period_secs,
            });
        }
        Ok(RateSpec(rates))
    }
}

impl fmt::Display for RateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|r| format!("{}:{}", r.capacity, r.period_secs))
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl Serialize for RateSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for RateSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// On the wire a spec is its text; the pattern is what [`RateSpec::from_str`] accepts
/// (whole numbers from 1, at most 18 digits so they fit).
impl schemars::JsonSchema for RateSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RateSpec".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "capacity:seconds[,capacity:seconds...]; empty for no limit",
            "pattern": "^$|^[1-9][0-9]{0,17}:[1-9][0-9]{0,17}(,[1-9][0-9]{0,17}:[1-9][0-9]{0,17})*$",
            "examples": ["100:1,1000:60"],
        })
    }
}

impl RateSpec {
    /// One node's share of the spec in a cluster of `nodes`: each bucket's capacity divided
    /// (rounded down, at least 1), so the nodes together never allow more than the spec.
    pub fn share(&self, nodes: u64) -> RateSpec {
        RateSpec(
            self.0
                .iter()
                .map(|r| Rate {
                    capacity: (r.capacity / nodes.max(1)).max(1),
                    period_secs: r.period_secs,
                })
                .collect(),
        )
    }

    /// Whether the spec limits anything.
    pub fn is_unlimited(&self) -> bool {
        self.0.is_empty()
    }

    /// The longest period, in ms: state idle longer than this is back to full and can be dropped.
    pub fn longest_period_ms(&self) -> u64 {
        self.0
            .iter()
            .map(|r| r.period_secs * 1000)
            .max()
            .unwrap_or(0)
    }
}

/// One bucket in exact integer arithmetic: the level is kept in units of 1/period_ms of a token,
/// so a millisecond refills exactly `capacity` units and no rounding ever drifts.
#[derive(Debug, Clone)]
struct Bucket {
    capacity: u128,
    period_ms: u128,
    level: u128,
}

impl Bucket {
    fn full(&self) -> u128 {
        self.capacity * self.period_ms
    }
}

/// The state of one key's buckets (a device, a tenant).
#[derive(Debug, Clone)]
pub struct Buckets {
    buckets: Vec<Bucket>,
    last_ms: u64,
}

impl Buckets {
    /// Full buckets for `spec` at time `now_ms`.
    pub fn new(spec: &RateSpec, now_ms: u64) -> Self {
        Buckets {
            buckets: spec
                .0
                .iter()
                .map(|r| {
                    let (capacity, period_ms) =
                        (u128::from(r.capacity), u128::from(r.period_secs) * 1000);
                    Bucket {
                        capacity,
                        period_ms,
                        level: capacity * period_ms,
                    }
                })
                .collect(),
            last_ms: now_ms,
        }
    }

    fn refill(&mut self, now_ms: u64) {
        let elapsed = u128::from(now_ms.saturating_sub(self.last_ms));
        for b in &mut self.buckets {
            b.level = (b.level + elapsed * b.capacity).min(b.full());
        }
        self.last_ms = self.last_ms.max(now_ms);
    }

    /// Whether every bucket is full again at `now_ms` (the state is then the same as a new one).
    pub fn full_at(&self, now_ms: u64) -> bool {
        let elapsed = u128::from(now_ms.saturating_sub(self.last_ms));
        self.buckets
            .iter()
            .all(|b| b.level + elapsed * b.capacity >= b.full())
    }

    /// Takes `cost` tokens from every bucket, or none. On refusal returns how long until the cost
    /// would fit (ms); a cost larger than some bucket's capacity never fits (`u64::MAX`).
    pub fn try_take(&mut self, now_ms: u64, cost: u64) -> Result<(), u64> {
        self.refill(now_ms);
        let cost = u128::from(cost);
        if self.buckets.iter().all(|b| b.level >= cost * b.period_ms) {
            for b in &mut self.buckets {
                b.level -= cost * b.period_ms;
            }
            return Ok(());
        }
        let wait = self
            .buckets
            .iter()
            .map(|b| {
                if cost > b.capacity {
                    u64::MAX
                } else {
                    let missing = (cost * b.period_ms).saturating_sub(b.level);
                    u64::try_from(missing.div_ceil(b.capacity)).unwrap_or(u64::MAX)
                }
            })
            .max()
            .unwrap_or(0);
        Err(wait)
    }
}

/// A byte-rate allowance that may go into debt: reads already made are charged in full, and the
/// reader pauses until the debt is paid back. Holds one second of burst.
#[derive(Debug, Clone)]
pub struct ByteRate {
    per_sec: u64,
    allowance: i128,
    last_ms: u64,
}

impl ByteRate {
    /// `per_sec` bytes per second, starting with a full second of allowance.
    pub fn new(per_sec: u64, now_ms: u64) -> Self {
        ByteRate {
            per_sec,
            allowance: i128::from(per_sec),
            last_ms: now_ms,
        }
    }

    /// Charges `bytes`; returns how long to pause (ms) before reading again.
    pub fn charge(&mut self, bytes: u64, now_ms: u64) -> u64 {
        let per_sec = i128::from(self.per_sec);
        let refill = i128::from(now_ms.saturating_sub(self.last_ms)) * per_sec / 1000;
        self.last_ms = self.last_ms.max(now_ms);
        self.allowance = (self.allowance + refill).min(per_sec) - i128::from(bytes);
        if self.allowance >= 0 {
            0
        } else {
            u64::try_from((-self.allowance * 1000 + per_sec - 1) / per_sec).unwrap_or(u64::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> RateSpec {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_prints_the_seed_syntax() {
        let s = spec("100:1,1000:60");
        assert_eq!(
            s.0,
            vec![
                Rate {
                    capacity: 100,
                    period_secs: 1
                },
                Rate {
                    capacity: 1000,
                    period_secs: 60
                }
            ]
        );
        assert_eq!(s.to_string(), "100:1,1000:60");
        assert!(spec("").is_unlimited());
        assert!("100".parse::<RateSpec>().is_err());
        assert!("0:1".parse::<RateSpec>().is_err());
        assert!("10:x".parse::<RateSpec>().is_err());
    }

    #[test]
    fn burst_then_refill() {
        let mut b = Buckets::new(&spec("10:1"), 0);
        for _ in 0..10 {
            b.try_take(0, 1).unwrap();
        }
        assert_eq!(b.try_take(0, 1), Err(100), "one token returns after 100 ms");
        assert_eq!(b.try_take(99, 1), Err(1));
        b.try_take(100, 1).unwrap();
        b.try_take(1100, 10).unwrap();
    }

    #[test]
    fn every_interval_must_allow_and_refusals_cost_nothing() {
        // Bursts of 100 per second, at most 150 per minute.
        let mut b = Buckets::new(&spec("100:1,150:60"), 0);
        let taken = (0..150).filter(|_| b.try_take(0, 1).is_ok()).count();
        assert_eq!(taken, 100, "the per-second bucket caps the burst");
        let later = (0..150).filter(|_| b.try_take(1000, 1).is_ok()).count();
        // 50 left in the minute bucket, plus 2.5 refilled during that second.
        assert_eq!(later, 52, "then the per-minute bucket caps the total");
        // The refused attempts did not drain the per-second bucket.
        let mut c = Buckets::new(&spec("100:1,150:60"), 0);
        c.try_take(0, 100).unwrap();
        assert!(c.try_take(0, 1).is_err());
        assert!(c.try_take(1000, 50).is_ok());
    }

    #[test]
    fn byte_rate_pauses_until_the_debt_is_paid() {
        let mut r = ByteRate::new(1000, 0);
        assert_eq!(r.charge(1000, 0), 0, "one second of burst");
        assert_eq!(r.charge(500, 0), 500, "500 bytes of debt: half a second");
        assert_eq!(r.charge(0, 500), 0, "paid back after the pause");
        assert_eq!(
            r.charge(2000, 10_000),
            1000,
            "the burst never exceeds one second"
        );
    }

    #[test]
    fn cost_larger_than_capacity_never_fits() {
        let mut b = Buckets::new(&spec("5:1"), 0);
        assert_eq!(b.try_take(0, 6), Err(u64::MAX));
        b.try_take(0, 5).unwrap();
    }
}
