//! Prometheus text exposition (format 0.0.4) in the layout of the reference's client library, for the
//! families kept on a `prometheus` registry (the system-health ones; the others are rendered by the series
//! store): counters are exposed as `<name>_total`; families that have no series yet still print their HELP
//! and TYPE lines.

use super::families::{FamilyDesc, Kind};
use super::text::{fmt_f64, fmt_f64_into};
use prometheus::proto::{Metric, MetricFamily};
use std::collections::HashMap;
use std::fmt::Write;

/// Renders every described family of a `prometheus` registry (the system families), in description order.
pub fn render(descs: &[FamilyDesc], gathered: &[MetricFamily], out: &mut String) {
    let by_name: HashMap<&str, &MetricFamily> = gathered.iter().map(|mf| (mf.name(), mf)).collect();
    for d in descs {
        let metrics: &[Metric] = by_name.get(d.name).map(|mf| mf.get_metric()).unwrap_or(&[]);
        match d.kind {
            Kind::Counter => {
                let exposed = format!("{}_total", d.name);
                header(out, &exposed, d.help, "counter");
                for m in metrics {
                    sample(out, &exposed, m, None, m.get_counter().get_value());
                }
            }
            Kind::Gauge => {
                header(out, d.name, d.help, "gauge");
                for m in metrics {
                    sample(out, d.name, m, None, m.get_gauge().get_value());
                }
            }
            Kind::Histogram => {
                header(out, d.name, d.help, "histogram");
                let bucket = format!("{}_bucket", d.name);
                let count = format!("{}_count", d.name);
                let sum = format!("{}_sum", d.name);
                for m in metrics {
                    let h = m.get_histogram();
                    for b in h.get_bucket() {
                        let le = fmt_f64(b.upper_bound());
                        sample(out, &bucket, m, Some(&le), b.cumulative_count() as f64);
                    }
                    sample(out, &bucket, m, Some("+Inf"), h.get_sample_count() as f64);
                    sample(out, &count, m, None, h.get_sample_count() as f64);
                    sample(out, &sum, m, None, h.get_sample_sum());
                }
            }
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
    fmt_f64_into(out, value);
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

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{HistogramOpts, HistogramVec, Registry};

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
        let mut text = String::new();
        render(&descs, &r.gather(), &mut text);
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
}
