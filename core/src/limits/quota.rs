//! Monthly API limits (seed 001): usage is counted per calendar month (UTC); crossing 80 % raises a
//! warning event once, reaching 100 % disables the component for the tenant until the month ends.

/// Share of the limit at which the warning is raised, in percent.
pub const WARNING_PERCENT: u64 = 80;

/// The calendar month (UTC) of a time, as `year * 12 + month0`, and its first and next first day
/// in ms. Uses the days-to-civil algorithm of H. Hinnant (proleptic Gregorian calendar).
pub fn month_of(now_ms: u64) -> u32 {
    let (y, m, _) = civil_from_days((now_ms / 86_400_000) as i64);
    (y * 12 + (m - 1) as i64) as u32
}

/// `(year, month 1..=12, day 1..=31)` of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Thresholds a charge crossed (both can be crossed at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Crossed {
    /// 80 % reached for the first time this month: raise the warning event.
    pub warning: bool,
    /// 100 % reached: the component is disabled for the tenant until the month ends.
    pub exhausted: bool,
}

/// One tenant's monthly usage of one metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthlyQuota {
    month: u32,
    used: u64,
    warned: bool,
}

impl MonthlyQuota {
    /// Usage `used` so far in the month of `now_ms`.
    pub fn new(now_ms: u64, used: u64) -> Self {
        MonthlyQuota {
            month: month_of(now_ms),
            used,
            warned: false,
        }
    }

    /// Usage this month.
    pub fn used(&self) -> u64 {
        self.used
    }

    fn roll(&mut self, now_ms: u64) {
        let month = month_of(now_ms);
        if month != self.month {
            *self = MonthlyQuota {
                month,
                used: 0,
                warned: false,
            };
        }
    }

    /// Sets the usage this month to `used` when it is more (another node's share became known).
    pub fn set_used(&mut self, used: u64, now_ms: u64) {
        self.roll(now_ms);
        self.used = self.used.max(used);
    }

    /// Whether the limit (0 = unlimited) is reached now.
    pub fn exhausted(&mut self, limit: u64, now_ms: u64) -> bool {
        self.roll(now_ms);
        limit > 0 && self.used >= limit
    }

    /// Adds `n` (already admitted) and reports the thresholds of `limit` (0 = unlimited) it
    /// crossed.
    pub fn charge(&mut self, limit: u64, n: u64, now_ms: u64) -> Crossed {
        self.roll(now_ms);
        let before = self.used;
        self.used = self.used.saturating_add(n);
        if limit == 0 {
            return Crossed::default();
        }
        let warning =
            !self.warned && self.used.saturating_mul(100) >= limit.saturating_mul(WARNING_PERCENT);
        self.warned |= warning;
        Crossed {
            warning,
            exhausted: before < limit && self.used >= limit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400_000;

    #[test]
    fn calendar_months_are_utc_civil_months() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_415), (2025, 11, 23));
        // 2026-11-30 23:59:59.999 and 2026-12-01 00:00 are different months.
        let dec1 = 20_788 * DAY;
        assert_eq!(civil_from_days(20_788), (2026, 12, 1));
        assert_eq!(month_of(dec1) - month_of(dec1 - 1), 1);
    }

    #[test]
    fn warning_at_80_percent_once_then_disabled_at_100_and_reset_next_month() {
        let now = 20_780 * DAY; // 2026-11-23
        let mut q = MonthlyQuota::new(now, 0);
        let none = Crossed::default();
        assert_eq!(q.charge(10, 7, now), none);
        assert_eq!(
            q.charge(10, 1, now),
            Crossed {
                warning: true,
                exhausted: false
            }
        );
        assert_eq!(q.charge(10, 1, now), none, "the warning is raised once");
        assert!(!q.exhausted(10, now));
        assert_eq!(
            q.charge(10, 1, now),
            Crossed {
                warning: false,
                exhausted: true
            }
        );
        assert!(q.exhausted(10, now));
        assert_eq!(q.charge(10, 1, now), none, "disabled is raised once");
        let next_month = 20_788 * DAY;
        assert!(!q.exhausted(10, next_month), "a new month starts from zero");
        assert_eq!(q.used(), 0);
        assert_eq!(
            q.charge(10, 8, next_month),
            Crossed {
                warning: true,
                exhausted: false
            },
            "and warns again"
        );
        let mut jump = MonthlyQuota::new(now, 0);
        assert_eq!(
            jump.charge(10, 12, now),
            Crossed {
                warning: true,
                exhausted: true
            },
            "one charge can cross both"
        );
        assert_eq!(jump.charge(0, 1_000, now), none, "0 is unlimited");
    }
}
