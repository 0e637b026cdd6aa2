//! The hub's time: the one handle every part of the engine asks for "now", so that tests can run
//! the engine in virtual time (timers and "now" both follow tokio's clock, which
//! `tokio::time::pause` stops and `tokio::time::advance` moves).

use tokio::time::Instant;

/// Where "now" comes from.
#[derive(Debug, Clone, Copy)]
pub struct Clock(Source);

#[derive(Debug, Clone, Copy)]
enum Source {
    /// The system's wall clock.
    System,
    /// tokio's clock, read as milliseconds since the epoch from `start_ms` at `start`.
    Tokio { start_ms: u64, start: Instant },
}

impl Clock {
    /// The system's wall clock (what a running hub uses).
    pub fn system() -> Clock {
        Clock(Source::System)
    }

    /// A clock that reads `start_ms` now and then moves with tokio's clock: under
    /// `tokio::time::pause` it moves only when the test advances time (or the runtime idles with
    /// auto-advance), together with every timer the engine waits on.
    pub fn tokio(start_ms: u64) -> Clock {
        Clock(Source::Tokio {
            start_ms,
            start: Instant::now(),
        })
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        match self.0 {
            Source::System => crate::now_ms(),
            Source::Tokio { start_ms, start } => start_ms + start.elapsed().as_millis() as u64,
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_tokio_clock_moves_only_with_tokio_time() {
        let clock = Clock::tokio(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        tokio::time::advance(std::time::Duration::from_millis(2_500)).await;
        assert_eq!(clock.now_ms(), 3_500);
    }
}
