//! The per-thing data-points-per-hour system limit of seed 003: a sliding window of 60 one-minute
//! slots. A token spent in minute m comes back in minute m + 60. The window holds `limit` tokens
//! plus an overdraft of one slot's share (`limit / 60`), so a thing publishing a little above its
//! average for a short while is not throttled. Time is passed in (ms).

/// Slots in the window (one per minute of the hour).
pub const SLOTS: usize = 60;
const SLOT_MS: u64 = 60_000;

/// One thing's window.
#[derive(Debug, Clone)]
pub struct Window {
    limit: u64,
    slots: [u64; SLOTS],
    /// Minute number (ms / 60 000) of the newest slot.
    head_minute: u64,
}

impl Window {
    /// An empty window for `limit` tokens per hour, at `now_ms`.
    pub fn new(limit: u64, now_ms: u64) -> Self {
        Window {
            limit,
            slots: [0; SLOTS],
            head_minute: now_ms / SLOT_MS,
        }
    }

    /// Tokens usable at once: the hourly limit plus one slot's overdraft.
    pub fn ceiling(&self) -> u64 {
        self.limit + self.limit / SLOTS as u64
    }

    fn advance(&mut self, now_ms: u64) {
        let minute = now_ms / SLOT_MS;
        if minute <= self.head_minute {
            return;
        }
        let steps = (minute - self.head_minute).min(SLOTS as u64);
        for i in 1..=steps {
            self.slots[((self.head_minute + i) % SLOTS as u64) as usize] = 0;
        }
        self.head_minute = minute;
    }

    /// Tokens spent in the last hour.
    pub fn used(&mut self, now_ms: u64) -> u64 {
        self.advance(now_ms);
        self.slots.iter().sum()
    }

    /// Spends `n` tokens if they fit under the ceiling; all or nothing.
    pub fn charge(&mut self, now_ms: u64, n: u64) -> bool {
        if self.used(now_ms) + n > self.ceiling() {
            return false;
        }
        self.slots[(self.head_minute % SLOTS as u64) as usize] += n;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    #[test]
    fn seed_003_example_tokens_come_back_an_hour_later() {
        // 3600 per hour; 600 spent at 18:05 leave 3000 (+60 overdraft) until 19:04.
        let t0 = 18 * 60 * MIN + 5 * MIN;
        let mut w = Window::new(3600, t0);
        assert!(w.charge(t0, 600));
        assert!(
            w.charge(t0 + 10 * MIN, 3000 + 60),
            "the rest of the hour plus the overdraft"
        );
        assert!(!w.charge(t0 + 59 * MIN, 1), "19:04: still full");
        assert!(
            w.charge(t0 + 60 * MIN, 600),
            "19:05: the 600 of 18:05 are back"
        );
        assert!(!w.charge(t0 + 60 * MIN, 1));
    }

    #[test]
    fn an_average_rate_is_never_throttled() {
        let mut w = Window::new(3600, 0);
        for minute in 0..600 {
            assert!(w.charge(minute * MIN, 60), "minute {minute}");
        }
    }

    #[test]
    fn overdraft_is_one_slot_and_refusals_spend_nothing() {
        let mut w = Window::new(3600, 0);
        assert_eq!(w.ceiling(), 3660);
        assert!(!w.charge(0, 3661));
        assert!(w.charge(0, 3660));
        assert_eq!(w.used(0), 3660);
        assert_eq!(
            w.used(2 * 3600 * 1000),
            0,
            "a long silence empties the window"
        );
    }
}
