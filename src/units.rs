//! Units every layer shares: wall-clock milliseconds, money in micro-dollars, durations as LiteLLM writes them.
//! Nothing here imports anything from the crate.
//!
//! [`Clock`]: actors read the time through one, so a test can run them on tokio's paused clock.

use std::time::Duration;

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// USD to micro-dollars, the unit spend is counted and stored in (integers add up exactly).
pub fn micros(usd: f64) -> i64 {
    (usd * 1_000_000.0).round() as i64
}

/// Micro-dollars to USD.
pub fn usd(micros: i64) -> f64 {
    micros as f64 / 1_000_000.0
}

/// `30s`, `30m`, `1h`, `1d`, `30d` (LiteLLM's `budget_duration` / `duration` forms; `mo` is 30 days).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        "w" => n * 7 * 86_400,
        "mo" => n * 30 * 86_400,
        _ => return None,
    };
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// Where an actor reads the time. `System` is the wall clock. `Paused` follows tokio's clock from a fixed
/// start: under `tokio::time::pause` a test moves the actor's clock and its timers together with
/// `tokio::time::advance`, and nothing depends on how fast the machine is. `Manual` reads what a test set
/// (for actors whose work waits on real I/O, where paused time would fire their timeouts).
#[derive(Debug, Clone)]
pub enum Clock {
    System,
    Paused {
        start_ms: i64,
        at: tokio::time::Instant,
    },
    Manual(std::sync::Arc<std::sync::atomic::AtomicI64>),
}

impl Clock {
    /// A clock that reads `start_ms` now and moves with tokio's (paused) time.
    pub fn paused(start_ms: i64) -> Clock {
        Clock::Paused {
            start_ms,
            at: tokio::time::Instant::now(),
        }
    }

    /// A clock that reads `start_ms` until [`Clock::set`] moves it.
    pub fn manual(start_ms: i64) -> Clock {
        Clock::Manual(std::sync::Arc::new(std::sync::atomic::AtomicI64::new(
            start_ms,
        )))
    }

    /// Moves a manual clock to `ms` (other clocks ignore it).
    pub fn set(&self, ms: i64) {
        if let Clock::Manual(t) = self {
            t.store(ms, std::sync::atomic::Ordering::Release);
        }
    }

    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => now_ms(),
            Clock::Paused { start_ms, at } => start_ms + at.elapsed().as_millis() as i64,
            Clock::Manual(t) => t.load(std::sync::atomic::Ordering::Acquire),
        }
    }
}
