//! Deployment choice within a model group.
//!
//! - `simple-shuffle`: a weighted random pick. The weight of a deployment is its `weight`, else its `rpm`,
//!   else its `tpm`, as LiteLLM does; when no deployment of the group sets the chosen field, the pick is
//!   uniform.
//! - `least-busy`: the fewest requests in flight.
//! - `latency-based-routing`: the lowest average latency; deployments not measured yet first.
//! - `usage-based-routing`: the lowest token usage this minute among the deployments with room for the
//!   request under their `rpm` / `tpm` and under the upstream's remaining-requests / remaining-tokens.
//!
//! Ties are broken at random. Every strategy is a pure function of a [`Candidate`] list.

use crate::config::{DeploymentConfig, RoutingStrategy};

/// Pick weights for a group, decided once when the group is built.
pub fn shuffle_weights(deployments: &[&DeploymentConfig]) -> Vec<f64> {
    let by = |f: fn(&DeploymentConfig) -> Option<f64>| -> Option<Vec<f64>> {
        deployments.iter().any(|d| f(d).is_some()).then(|| {
            deployments
                .iter()
                .map(|d| f(d).unwrap_or(0.0).max(0.0))
                .collect()
        })
    };
    by(|d| d.weight)
        .or_else(|| by(|d| d.rpm.map(|v| v as f64)))
        .or_else(|| by(|d| d.tpm.map(|v| v as f64)))
        .filter(|w| w.iter().sum::<f64>() > 0.0)
        .unwrap_or_else(|| vec![1.0; deployments.len()])
}

/// What a strategy knows about one deployment that routing may use now.
#[derive(Debug, Clone, Copy, Default)]
pub struct Candidate {
    /// Index of the deployment in its group.
    pub index: usize,
    pub weight: f64,
    pub in_flight: u32,
    /// Average latency, seconds; `None` before the first answer.
    pub latency: Option<f64>,
    /// Requests and tokens sent this minute.
    pub rpm_used: u64,
    pub tpm_used: u64,
    /// The deployment's configured `rpm` / `tpm`.
    pub rpm_limit: Option<u64>,
    pub tpm_limit: Option<u64>,
    /// The upstream's last remaining-requests / remaining-tokens headers.
    pub remaining_requests: Option<i64>,
    pub remaining_tokens: Option<i64>,
}

/// Among `c`, the one `strategy` picks (an index into `c`). `r` is uniform in [0, 1) and breaks ties;
/// `tokens` is the request's estimated size, for usage-based routing. `None` when `c` is empty, or, for
/// usage-based routing, when no deployment has room for the request.
pub fn choose(strategy: RoutingStrategy, c: &[Candidate], r: f64, tokens: u64) -> Option<usize> {
    match strategy {
        RoutingStrategy::SimpleShuffle => {
            let total: f64 = c.iter().map(|d| d.weight).sum();
            if c.is_empty() {
                return None;
            }
            if total <= 0.0 {
                return Some(((r * c.len() as f64) as usize).min(c.len() - 1));
            }
            let mut target = r * total;
            for (i, d) in c.iter().enumerate() {
                if target < d.weight {
                    return Some(i);
                }
                target -= d.weight;
            }
            c.iter().rposition(|d| d.weight > 0.0)
        }
        RoutingStrategy::LeastBusy => lowest(c, r, |d| Some(d.in_flight as f64)),
        // Deployments never measured come first, so every deployment gets measured.
        RoutingStrategy::LatencyBased => lowest(c, r, |d| Some(d.latency.unwrap_or(-1.0))),
        RoutingStrategy::UsageBased => lowest(c, r, |d| {
            let fits = d.rpm_limit.is_none_or(|l| d.rpm_used < l)
                && d.tpm_limit.is_none_or(|l| d.tpm_used + tokens <= l)
                && d.remaining_requests.is_none_or(|v| v > 0)
                && d.remaining_tokens.is_none_or(|v| v >= tokens as i64);
            fits.then_some(d.tpm_used as f64)
        }),
    }
}

/// The candidate with the lowest score (`None` scores are out); ties broken by `r`.
fn lowest(c: &[Candidate], r: f64, score: impl Fn(&Candidate) -> Option<f64>) -> Option<usize> {
    let mut best = f64::INFINITY;
    let mut ties = 0usize;
    for s in c.iter().filter_map(&score) {
        if s < best {
            best = s;
            ties = 1;
        } else if s == best {
            ties += 1;
        }
    }
    if ties == 0 {
        return None;
    }
    let mut k = ((r * ties as f64) as usize).min(ties - 1);
    for (i, d) in c.iter().enumerate() {
        if score(d) == Some(best) {
            if k == 0 {
                return Some(i);
            }
            k -= 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn deployments(yaml: &str) -> Vec<DeploymentConfig> {
        Config::parse(yaml, Path::new("t.yaml"), &|_| None)
            .unwrap()
            .model_list
    }

    #[test]
    fn weight_then_rpm_then_tpm_then_uniform() {
        let d = deployments(
            "model_list:\n  - {model_name: g, llm_params: {model: mock/a, weight: 3, rpm: 1}}\n  - {model_name: g, llm_params: {model: mock/b, rpm: 100}}\n",
        );
        let refs: Vec<&DeploymentConfig> = d.iter().collect();
        assert_eq!(shuffle_weights(&refs), vec![3.0, 0.0]);
        let d = deployments(
            "model_list:\n  - {model_name: g, llm_params: {model: mock/a, rpm: 10}}\n  - {model_name: g, llm_params: {model: mock/b, tpm: 100, rpm: 30}}\n",
        );
        let refs: Vec<&DeploymentConfig> = d.iter().collect();
        assert_eq!(shuffle_weights(&refs), vec![10.0, 30.0]);
        let d = deployments("model_list:\n  - {model_name: g, llm_params: {model: mock/a}}\n  - {model_name: g, llm_params: {model: mock/b}}\n");
        let refs: Vec<&DeploymentConfig> = d.iter().collect();
        assert_eq!(shuffle_weights(&refs), vec![1.0, 1.0]);
    }

    fn cand(i: usize) -> Candidate {
        Candidate {
            index: i,
            weight: 1.0,
            ..Default::default()
        }
    }

    #[test]
    fn least_busy_latency_and_usage() {
        let mut c = vec![cand(0), cand(1), cand(2)];
        c[0].in_flight = 3;
        c[1].in_flight = 1;
        c[2].in_flight = 2;
        for r in [0.0, 0.5, 0.99] {
            assert_eq!(choose(RoutingStrategy::LeastBusy, &c, r, 0), Some(1));
        }
        c[2].in_flight = 1;
        assert_eq!(choose(RoutingStrategy::LeastBusy, &c, 0.1, 0), Some(1));
        assert_eq!(choose(RoutingStrategy::LeastBusy, &c, 0.9, 0), Some(2));

        c[0].latency = Some(0.5);
        c[1].latency = Some(0.1);
        c[2].latency = Some(0.3);
        assert_eq!(choose(RoutingStrategy::LatencyBased, &c, 0.7, 0), Some(1));
        c[2].latency = None;
        assert_eq!(choose(RoutingStrategy::LatencyBased, &c, 0.7, 0), Some(2));

        c[0].tpm_used = 10;
        c[1].tpm_used = 5;
        c[1].tpm_limit = Some(100);
        c[2].tpm_used = 50;
        assert_eq!(choose(RoutingStrategy::UsageBased, &c, 0.5, 20), Some(1));
        assert_eq!(choose(RoutingStrategy::UsageBased, &c, 0.5, 96), Some(0));
        c[0].rpm_limit = Some(4);
        c[0].rpm_used = 4;
        assert_eq!(choose(RoutingStrategy::UsageBased, &c, 0.5, 96), Some(2));
        c[2].remaining_tokens = Some(95);
        assert_eq!(choose(RoutingStrategy::UsageBased, &c, 0.5, 96), None);
        c[2].remaining_tokens = Some(96);
        c[2].remaining_requests = Some(0);
        assert_eq!(choose(RoutingStrategy::UsageBased, &c, 0.5, 96), None);
        assert_eq!(choose(RoutingStrategy::SimpleShuffle, &[], 0.5, 0), None);
    }

    #[test]
    fn shuffle_over_candidates_follows_weights() {
        let mut c = vec![cand(0), cand(1)];
        c[0].weight = 1.0;
        c[1].weight = 3.0;
        let n = 10_000;
        let mut counts = [0usize; 2];
        for k in 0..n {
            let r = (k as f64 + 0.5) / n as f64;
            counts[choose(RoutingStrategy::SimpleShuffle, &c, r, 0).unwrap()] += 1;
        }
        assert_eq!(counts, [2500, 7500]);
        // Only the candidates given are eligible; all-zero weights pick uniformly.
        assert_eq!(
            choose(RoutingStrategy::SimpleShuffle, &c[1..], 0.1, 0),
            Some(0)
        );
        c[0].weight = 0.0;
        c[1].weight = 0.0;
        assert_eq!(choose(RoutingStrategy::SimpleShuffle, &c, 0.9, 0), Some(1));
    }
}
