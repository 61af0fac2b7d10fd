//! Sample values in the text exposition format, as the reference's client library prints them.

use std::fmt::Write;

/// Floats as the reference prints them: `1.0`, `0.25`, `+Inf`, `NaN`.
pub fn fmt_f64(v: f64) -> String {
    let mut s = String::new();
    fmt_f64_into(&mut s, v);
    s
}

/// [`fmt_f64`] appended to `out`, without allocating.
pub fn fmt_f64_into(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else if v != 0.0 && !(1e-6..1e15).contains(&v.abs()) {
        let _ = write!(out, "{v:e}");
    } else if v.fract() == 0.0 {
        // Whole numbers below 1e15 fit an i64 exactly.
        out.push_str(itoa::Buffer::new().format(v as i64));
        out.push_str(".0");
    } else if (1e-4..1e15).contains(&v.abs()) {
        // The shortest round-trip digits, as Display prints them, without its formatting machinery (ryu
        // writes this range without an exponent).
        out.push_str(ryu::Buffer::new().format_finite(v));
    } else {
        let _ = write!(out, "{v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_format() {
        assert_eq!(fmt_f64(1.0), "1.0");
        assert_eq!(fmt_f64(0.002), "0.002");
        assert_eq!(fmt_f64(f64::INFINITY), "+Inf");
        assert_eq!(fmt_f64(9.223372036854776e18), "9.223372036854776e18");
        assert_eq!(fmt_f64(0.0), "0.0");
        assert_eq!(fmt_f64(1.5e-7), "1.5e-7");
        // ryu's range agrees with Display.
        for v in [
            1764550000.123456,
            0.000123,
            0.076,
            123456789012345.6,
            2.7,
            -0.5,
        ] {
            assert_eq!(fmt_f64(v), format!("{v}"), "{v}");
        }
    }
}
