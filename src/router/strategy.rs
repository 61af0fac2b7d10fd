//! Deployment choice within a model group.
//!
//! `simple-shuffle`: a weighted random pick. The weight of a deployment is its `weight`, else its `rpm`, else
//! its `tpm`, as LiteLLM does; when no deployment of the group sets the chosen field, the pick is uniform.

use crate::config::DeploymentConfig;

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

/// Index chosen by a weighted pick among `eligible` (indices into `weights`), `r` uniform in [0, 1).
/// Returns `None` when `eligible` is empty. Zero-weight entries are chosen only if all are zero.
pub fn weighted_pick(weights: &[f64], eligible: &[usize], r: f64) -> Option<usize> {
    let total: f64 = eligible.iter().map(|&i| weights[i]).sum();
    if eligible.is_empty() {
        return None;
    }
    if total <= 0.0 {
        let i = ((r * eligible.len() as f64) as usize).min(eligible.len() - 1);
        return Some(eligible[i]);
    }
    let mut target = r * total;
    for &i in eligible {
        if target < weights[i] {
            return Some(i);
        }
        target -= weights[i];
    }
    eligible.iter().rev().find(|&&i| weights[i] > 0.0).copied()
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

    #[test]
    fn weighted_pick_converges_to_weights() {
        let w = [1.0, 3.0];
        let mut counts = [0usize; 2];
        let n = 10_000;
        for k in 0..n {
            let r = (k as f64 + 0.5) / n as f64;
            counts[weighted_pick(&w, &[0, 1], r).unwrap()] += 1;
        }
        assert_eq!(counts, [2500, 7500]);
        assert_eq!(weighted_pick(&w, &[1], 0.1), Some(1));
        assert_eq!(weighted_pick(&w, &[], 0.1), None);
        assert_eq!(weighted_pick(&[0.0, 0.0], &[0, 1], 0.9), Some(1));
    }
}
