//! ironhub's benchmarks. `ironhub-bench` (src/bin) is the load generator that runs the same
//! scenarios against ironhub and a reference broker; `benches/hot_paths.rs` holds the criterion
//! micro-benchmarks. The library part measures processes and summarizes samples.

use std::time::Duration;

use serde::Serialize;

/// CPU time and resident memory of a process, read from /proc.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ProcStats {
    /// User + system CPU time.
    pub cpu: Duration,
    /// Resident set size, bytes.
    pub rss: u64,
}

/// Reads /proc/{pid} (`self` for this process). None if the process is gone.
pub fn proc_stats(pid: &str) -> Option<ProcStats> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // The kernel's USER_HZ is 100 on every Linux we run on.
    Some(ProcStats {
        cpu: Duration::from_millis(ticks * 10),
        rss: rss_kb * 1024,
    })
}

/// Latency percentiles of a sample, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
}

/// Percentiles of latencies in microseconds (sorts the sample).
pub fn percentiles(samples: &mut [u64]) -> Percentiles {
    if samples.is_empty() {
        return Percentiles::default();
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    Percentiles {
        p50_us: at(0.5),
        p99_us: at(0.99),
        p999_us: at(0.999),
        max_us: samples[samples.len() - 1],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_sample() {
        let mut s: Vec<u64> = (1..=1000).rev().collect();
        let p = percentiles(&mut s);
        assert_eq!(
            (p.p50_us, p.p99_us, p.p999_us, p.max_us),
            (501, 991, 1000, 1000)
        );
        assert_eq!(percentiles(&mut []), Percentiles::default());
    }

    #[test]
    fn reads_its_own_process() {
        let me = proc_stats("self").expect("/proc/self");
        assert!(me.rss > 0);
    }
}
