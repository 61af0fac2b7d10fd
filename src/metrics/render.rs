//! Prometheus text exposition (format 0.0.4) in the layout of the reference's client library: counters are
//! exposed as `<name>_total`, and each counter and histogram series also gets a `<name>_created` sample (the
//! unix time the series was created), printed as its own gauge family. Families that have no series yet
//! still print their HELP and TYPE lines.

use super::families::{FamilyDesc, Kind};
use prometheus::proto::{Metric, MetricFamily};
use std::collections::HashMap;
use std::fmt::Write;

/// The key under which a series' creation time is kept: the family name and the label values in the order
/// of their sorted label names (the order the registry reports them in).
pub fn created_key(family: &str, names: &[String], values: &[&str]) -> String {
    let mut pairs: Vec<(&str, &str)> = names
        .iter()
        .map(String::as_str)
        .zip(values.iter().copied())
        .collect();
    pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut key = String::with_capacity(family.len() + 64);
    key.push_str(family);
    for (_, v) in pairs {
        key.push('\u{1}');
        key.push_str(v);
    }
    key
}

fn key_of(family: &str, m: &Metric) -> String {
    let mut key = String::with_capacity(family.len() + 64);
    key.push_str(family);
    for l in m.get_label() {
        key.push('\u{1}');
        key.push_str(l.value());
    }
    key
}

/// Renders every described family, in description order.
pub fn render(
    descs: &[FamilyDesc],
    gathered: &[MetricFamily],
    created: &HashMap<String, f64>,
) -> String {
    let by_name: HashMap<&str, &MetricFamily> = gathered.iter().map(|mf| (mf.name(), mf)).collect();
    let mut out = String::with_capacity(16 * 1024);
    for d in descs {
        let metrics: &[Metric] = by_name.get(d.name).map(|mf| mf.get_metric()).unwrap_or(&[]);
        match d.kind {
            Kind::Counter => {
                let exposed = format!("{}_total", d.name);
                header(&mut out, &exposed, d.help, "counter");
                for m in metrics {
                    sample(&mut out, &exposed, m, None, m.get_counter().get_value());
                }
                created_family(&mut out, d, metrics, created);
            }
            Kind::Gauge => {
                header(&mut out, d.name, d.help, "gauge");
                for m in metrics {
                    sample(&mut out, d.name, m, None, m.get_gauge().get_value());
                }
            }
            Kind::Histogram => {
                header(&mut out, d.name, d.help, "histogram");
                let bucket = format!("{}_bucket", d.name);
                let count = format!("{}_count", d.name);
                let sum = format!("{}_sum", d.name);
                for m in metrics {
                    let h = m.get_histogram();
                    for b in h.get_bucket() {
                        let le = fmt_f64(b.upper_bound());
                        sample(&mut out, &bucket, m, Some(&le), b.cumulative_count() as f64);
                    }
                    sample(
                        &mut out,
                        &bucket,
                        m,
                        Some("+Inf"),
                        h.get_sample_count() as f64,
                    );
                    sample(&mut out, &count, m, None, h.get_sample_count() as f64);
                    sample(&mut out, &sum, m, None, h.get_sample_sum());
                }
                created_family(&mut out, d, metrics, created);
            }
        }
    }
    out
}

fn created_family(
    out: &mut String,
    d: &FamilyDesc,
    metrics: &[Metric],
    created: &HashMap<String, f64>,
) {
    let name = format!("{}_created", d.name);
    header(out, &name, d.help, "gauge");
    for m in metrics {
        if let Some(ts) = created.get(&key_of(d.name, m)) {
            sample(out, &name, m, None, *ts);
        }
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, m: &Metric, le: Option<&str>, value: f64) {
    out.push_str(name);
    let labels = m.get_label();
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        let mut first = true;
        for l in labels {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(l.name());
            out.push_str("=\"");
            escape_into(out, l.value());
            out.push('"');
        }
        if let Some(le) = le {
            if !first {
                out.push(',');
            }
            out.push_str("le=\"");
            out.push_str(le);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(&fmt_f64(value));
    out.push('\n');
}

fn escape_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Floats as the reference prints them: `1.0`, `0.25`, `+Inf`, `NaN`.
pub fn fmt_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else if v != 0.0 && !(1e-6..1e15).contains(&v.abs()) {
        format!("{v:e}")
    } else if v.fract() == 0.0 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{CounterVec, HistogramOpts, HistogramVec, Opts, Registry};

    #[test]
    fn counters_get_total_and_created() {
        let r = Registry::new();
        let c = CounterVec::new(Opts::new("x_metric", "help"), &["b", "a"]).unwrap();
        r.register(Box::new(c.clone())).unwrap();
        c.with_label_values(&["2", "1"]).inc_by(3.0);
        let names = vec!["b".to_string(), "a".to_string()];
        let mut created = HashMap::new();
        created.insert(created_key("x_metric", &names, &["2", "1"]), 1700000000.5);
        let descs = vec![FamilyDesc {
            name: "x_metric",
            help: "help",
            kind: Kind::Counter,
            labels: names,
        }];
        let text = render(&descs, &r.gather(), &created);
        assert_eq!(
            text,
            "# HELP x_metric_total help\n# TYPE x_metric_total counter\nx_metric_total{a=\"1\",b=\"2\"} 3.0\n\
             # HELP x_metric_created help\n# TYPE x_metric_created gauge\nx_metric_created{a=\"1\",b=\"2\"} 1700000000.5\n"
        );
    }

    #[test]
    fn histograms_print_buckets_and_empty_families_print_headers() {
        let r = Registry::new();
        let h = HistogramVec::new(
            HistogramOpts::new("h", "lat").buckets(vec![0.5, 1.0]),
            &["m"],
        )
        .unwrap();
        r.register(Box::new(h.clone())).unwrap();
        h.with_label_values(&["q\"x"]).observe(0.7);
        let descs = vec![
            FamilyDesc {
                name: "h",
                help: "lat",
                kind: Kind::Histogram,
                labels: vec!["m".into()],
            },
            FamilyDesc {
                name: "g",
                help: "gauge",
                kind: Kind::Gauge,
                labels: vec![],
            },
        ];
        let text = render(&descs, &r.gather(), &HashMap::new());
        assert!(
            text.contains("h_bucket{m=\"q\\\"x\",le=\"0.5\"} 0.0\n"),
            "{text}"
        );
        assert!(
            text.contains("h_bucket{m=\"q\\\"x\",le=\"1.0\"} 1.0\n"),
            "{text}"
        );
        assert!(
            text.contains("h_bucket{m=\"q\\\"x\",le=\"+Inf\"} 1.0\n"),
            "{text}"
        );
        assert!(text.contains("h_sum{m=\"q\\\"x\"} 0.7\n"), "{text}");
        assert!(text.contains("# TYPE g gauge\n"), "{text}");
    }

    #[test]
    fn float_format() {
        assert_eq!(fmt_f64(1.0), "1.0");
        assert_eq!(fmt_f64(0.002), "0.002");
        assert_eq!(fmt_f64(f64::INFINITY), "+Inf");
        assert_eq!(fmt_f64(9.223372036854776e18), "9.223372036854776e18");
        assert_eq!(fmt_f64(0.0), "0.0");
        assert_eq!(fmt_f64(1.5e-7), "1.5e-7");
    }
}
