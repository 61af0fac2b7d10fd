//! Retry and fallback policy, as pure functions of what happened: which group a failed request goes to
//! next, how long a retry waits, whether it still fits the request's deadline, and when the first
//! deployment of the groups tried may take requests again. The request path (`http/proxy/attempts.rs`) asks these
//! instead of deciding itself; what an error means (retry, which fallbacks, against the deployment) is
//! `error::Meaning`.

use crate::config::RouterSettings;
use crate::error::Fallback;
use std::time::Duration;

/// The group names a request goes to after its group `group` failed with an error whose meaning sends it
/// to `fallback`. `from_request` is the request body's own `fallbacks` (it replaces the configured general
/// ones). The caller skips names that are not groups or that the caller may not use.
pub fn fallback_names<'a>(
    fallback: Fallback,
    settings: &'a RouterSettings,
    group: &str,
    from_request: Option<&'a Vec<String>>,
) -> &'a [String] {
    match fallback {
        Fallback::No => &[],
        Fallback::ContextWindow => settings
            .context_window_fallbacks
            .get(group)
            .map_or(&[], Vec::as_slice),
        Fallback::ContentPolicy => settings
            .content_policy_fallbacks
            .get(group)
            .map_or(&[], Vec::as_slice),
        Fallback::General => from_request
            .or_else(|| settings.fallbacks.get(group))
            .unwrap_or(&settings.default_fallbacks)
            .as_slice(),
    }
}

/// How long a retry waits: `router_settings.retry_after`, and when it goes back to a deployment that
/// already failed (no other was available), at least that deployment's own `retry-after` (seconds).
pub fn retry_wait(
    configured: Duration,
    same_deployment: bool,
    upstream_retry_after: Option<u64>,
) -> Duration {
    if same_deployment {
        configured.max(Duration::from_secs(upstream_retry_after.unwrap_or(0)))
    } else {
        configured
    }
}

/// Whether waiting `wait` from `now` still ends before the request's deadline (`router_settings.timeout`).
/// (Any clock: the request path uses the runtime's `Instant`.)
pub fn fits<I>(now: I, wait: Duration, deadline: Option<I>) -> bool
where
    I: Copy + PartialOrd + std::ops::Add<Duration, Output = I>,
{
    deadline.is_none_or(|d| now + wait < d)
}

/// The earliest time (wall clock ms) a deployment of the groups tried may take requests again: the
/// `retry-after` of a "no deployment available" answer.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovery(Option<i64>);

impl Recovery {
    pub fn note(&mut self, until_ms: i64) {
        self.0 = Some(self.0.map_or(until_ms, |t| t.min(until_ms)));
    }

    /// Whole seconds from `now_ms`, at least 1; `None` when nothing was cooling.
    pub fn retry_after_secs(&self, now_ms: i64) -> Option<u64> {
        self.0
            .map(|t| ((t - now_ms).max(0) as u64).div_ceil(1000).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn settings() -> RouterSettings {
        let list = |pairs: &[(&str, &[&str])]| -> BTreeMap<String, Vec<String>> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect()
        };
        RouterSettings {
            routing_strategy: Default::default(),
            num_retries: 2,
            retry_after: Duration::from_millis(100),
            timeout: None,
            allowed_fails: 1,
            cooldown_time: Duration::from_secs(5),
            fallbacks: list(&[("main", &["spare"])]),
            context_window_fallbacks: list(&[("main", &["long"])]),
            content_policy_fallbacks: list(&[("main", &["lenient"])]),
            default_fallbacks: vec!["anything".into()],
        }
    }

    #[test]
    fn each_error_meaning_picks_its_list() {
        let s = settings();
        let mine = vec!["chosen".to_string()];
        assert_eq!(
            fallback_names(Fallback::General, &s, "main", None),
            ["spare"]
        );
        assert_eq!(
            fallback_names(Fallback::General, &s, "main", Some(&mine)),
            ["chosen"]
        );
        assert_eq!(
            fallback_names(Fallback::General, &s, "other", None),
            ["anything"]
        );
        assert_eq!(
            fallback_names(Fallback::ContextWindow, &s, "main", None),
            ["long"]
        );
        assert_eq!(
            fallback_names(Fallback::ContentPolicy, &s, "main", Some(&mine)),
            ["lenient"]
        );
        assert!(fallback_names(Fallback::ContextWindow, &s, "other", None).is_empty());
        assert!(fallback_names(Fallback::No, &s, "main", Some(&mine)).is_empty());
    }

    #[test]
    fn retries_wait_and_respect_the_deadline() {
        use std::time::Instant;
        let base = Duration::from_millis(100);
        assert_eq!(
            retry_wait(base, false, Some(30)),
            base,
            "another deployment: no upstream wait"
        );
        assert_eq!(retry_wait(base, true, Some(2)), Duration::from_secs(2));
        assert_eq!(retry_wait(base, true, None), base);
        let now = Instant::now();
        assert!(fits(now, Duration::from_secs(5), None));
        assert!(fits(
            now,
            Duration::from_secs(1),
            Some(now + Duration::from_secs(2))
        ));
        assert!(!fits(
            now,
            Duration::from_secs(2),
            Some(now + Duration::from_secs(2))
        ));
    }

    #[test]
    fn recovery_is_the_earliest_and_at_least_a_second() {
        let mut r = Recovery::default();
        assert_eq!(r.retry_after_secs(0), None);
        r.note(5_500);
        r.note(9_000);
        assert_eq!(r.retry_after_secs(1_000), Some(5));
        assert_eq!(r.retry_after_secs(6_000), Some(1));
    }
}
