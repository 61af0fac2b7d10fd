use super::*;

fn spec(name: &'static str, kind: Kind, labels: &[&str]) -> FamilySpec {
    FamilySpec {
        name,
        help: "help",
        kind,
        labels: labels.iter().map(|s| s.to_string()).collect(),
        buckets: if kind == Kind::Histogram {
            vec![0.5, 1.0]
        } else {
            vec![]
        },
    }
}

fn render(s: &mut Store) -> String {
    let mut out = String::new();
    let mut cur = Some(s.begin_render());
    while let Some(c) = cur {
        let limit = out.len() + 64;
        cur = s.render_chunk(c, &mut out, limit);
    }
    out
}

#[test]
fn counters_histograms_and_gauges_print_like_the_reference() {
    let mut s = Store::new(100);
    let c = s.add(spec("x_metric", Kind::Counter, &["b", "a"]));
    let h = s.add(spec("h", Kind::Histogram, &["m"]));
    let g = s.add(spec("g", Kind::Gauge, &[]));
    let sid = s.series(c, &["2", "1"]).unwrap();
    s.inc(sid, 3.0);
    let hs = s.series(h, &["q\"x"]).unwrap();
    s.observe(hs, 0.7);
    s.observe(hs, 2.0);
    let text = render(&mut s);
    assert!(
            text.starts_with("# HELP x_metric_total help\n# TYPE x_metric_total counter\nx_metric_total{a=\"1\",b=\"2\"} 3.0\n# HELP x_metric_created help\n# TYPE x_metric_created gauge\nx_metric_created{a=\"1\",b=\"2\"} "),
            "{text}"
        );
    for line in [
        "h_bucket{m=\"q\\\"x\",le=\"0.5\"} 0.0\n",
        "h_bucket{m=\"q\\\"x\",le=\"1.0\"} 1.0\n",
        "h_bucket{m=\"q\\\"x\",le=\"+Inf\"} 2.0\n",
        "h_count{m=\"q\\\"x\"} 2.0\n",
        "h_sum{m=\"q\\\"x\"} 2.7\n",
        "# TYPE g gauge\n",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
    assert!(
        !text.contains("g_created"),
        "gauges have no created samples"
    );
    assert!(
        text.ends_with("# TYPE g gauge\n"),
        "an empty family prints its header: {text}"
    );
    let _ = g;
}

#[test]
fn past_the_cap_counters_fold_into_other_and_gauges_are_dropped_and_both_are_counted() {
    let mut s = Store::new(2);
    let c = s.add(spec("c", Kind::Counter, &["k"]));
    let g = s.add(spec("g", Kind::Gauge, &["k"]));
    let d = s.add(spec("dropped", Kind::Counter, &["metric"]));
    s.set_dropped_family(d);
    for k in ["a", "b", "c", "d"] {
        let sid = s.series(c, &[k]).unwrap();
        s.inc(sid, 1.0);
        if let Some(sid) = s.series(g, &[k]) {
            s.set(sid, 1.0);
        }
    }
    assert_eq!(s.len(c), 3, "a, b and other");
    let other = s.series(c, &["other"]).unwrap();
    assert_eq!(s.value(other), 2.0, "totals stay exact");
    assert_eq!(s.len(g), 2);
    for name in ["c", "g"] {
        let sid = s.series(d, &[name]).unwrap();
        assert_eq!(s.value(sid), 2.0, "{name}");
    }
    // An existing series is found whatever the count.
    assert_eq!(s.series(c, &["a"]), s.series(c, &["a"]));
}

#[test]
fn removal_frees_the_slot_and_the_strings_and_a_render_never_prints_a_series_twice() {
    let mut s = Store::new(100);
    let c = s.add(spec("c", Kind::Counter, &["key", "model"]));
    let g = s.add(spec("g", Kind::Gauge, &["key"]));
    for k in ["k1", "k2"] {
        let sid = s.series(c, &[k, "m"]).unwrap();
        s.inc(sid, 1.0);
        let sid = s.series(g, &[k]).unwrap();
        s.set(sid, 5.0);
    }
    let gen = s.generation();
    assert_eq!(s.remove_matching("key", "k1", &[]), 2);
    assert!(s.generation() > gen);
    assert!(
        s.strings.get("k1").is_none(),
        "the value's last series went"
    );
    assert!(s.strings.get("m").is_some());
    assert_eq!(s.len(c), 1);
    // A render has begun and printed the first family; the series removed and made again meanwhile
    // lands in a free slot and waits for the next scrape.
    let mut out = String::new();
    let cur = s.begin_render();
    let cur = s.render_chunk(cur, &mut out, 1).unwrap();
    let sid = s.series(c, &["k1", "m"]).unwrap();
    s.inc(sid, 1.0);
    let mut cur = Some(cur);
    while let Some(c) = cur {
        cur = s.render_chunk(c, &mut out, usize::MAX);
    }
    assert!(!out.contains("k1"), "{out}");
    assert_eq!(render(&mut s).matches("c_total{key=\"k1\"").count(), 1);
}

#[test]
fn idle_series_are_swept() {
    let mut s = Store::new(100);
    let c = s.add(spec("c", Kind::Counter, &["k"]));
    let sid = s.series(c, &["a"]).unwrap();
    s.inc(sid, 1.0);
    let anon = s.series(c, &[""]).unwrap();
    s.inc(anon, 1.0);
    assert_eq!(s.sweep(&[c], 60, None), 0);
    s.started -= std::time::Duration::from_secs(120);
    assert_eq!(
        s.sweep(&[c], 60, Some("k")),
        1,
        "only the series with a value"
    );
    assert_eq!(s.len(c), 1);
    assert_eq!(s.sweep(&[c], 60, None), 1);
    assert_eq!(s.len(c), 0);
    let mut seen = Vec::new();
    s.values_of(&[c], "k", |v| seen.push(v.to_string()));
    assert!(seen.is_empty());
}
