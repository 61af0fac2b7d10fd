//! Units every layer shares: wall-clock milliseconds, money in micro-dollars, durations as LiteLLM writes them.
//! Nothing here imports anything from the crate.

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
