//! Go duration strings (`90s`, `1m30s`, `1.5h`, `300ms`), as Calico's `metav1.Duration` fields
//! and felix's interval settings are written.

use std::time::Duration;

/// Why a string is not a Go duration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}")]
pub struct DurationError {
    pub input: String,
    pub reason: String,
}

/// Nanoseconds per unit, with every spelling Go's `time.ParseDuration` accepts.
const UNITS: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Go's limit: a `time.Duration` is an int64 of nanoseconds.
const MAX_NANOS: u128 = i64::MAX as u128;

/// Parses a Go duration string: a sequence of decimal numbers, each with an optional fraction
/// and a unit suffix (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`), optionally signed; `0` alone needs
/// no unit (Go `time.ParseDuration`). Negative durations are rejected: no Calico duration field
/// means anything with one.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let err = |reason: &str| DurationError {
        input: input.to_string(),
        reason: reason.to_string(),
    };
    let mut s = input;
    if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    } else if let Some(rest) = s.strip_prefix('-') {
        if rest == "0" {
            return Ok(Duration::ZERO);
        }
        return Err(err("negative durations are not allowed"));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(err("empty"));
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let int_len = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (int_part, rest) = s.split_at(int_len);
        let (frac_part, rest) = match rest.strip_prefix('.') {
            Some(r) => {
                let n = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
                r.split_at(n)
            }
            None => ("", rest),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err("expected a number"));
        }
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let (unit, rest) = rest.split_at(unit_len);
        if unit.is_empty() {
            return Err(err("missing unit (one of ns, us, ms, s, m, h)"));
        }
        let scale = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, n)| *n)
            .ok_or_else(|| {
                err(&format!(
                    "unknown unit {unit:?} (one of ns, us, ms, s, m, h)"
                ))
            })?;
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| err("number too large"))?
        };
        let mut nanos = whole.checked_mul(scale).ok_or_else(|| err("overflows"))?;
        // Go truncates the fraction to nanoseconds; 30 digits are more than enough for that.
        let frac_digits = &frac_part[..frac_part.len().min(30)];
        if !frac_digits.is_empty() {
            let frac: u128 = frac_digits.parse().map_err(|_| err("bad fraction"))?;
            let denom = 10u128.pow(frac_digits.len() as u32);
            nanos += frac.checked_mul(scale).map_or(u128::MAX, |v| v / denom);
        }
        total = total.checked_add(nanos).ok_or_else(|| err("overflows"))?;
        if total > MAX_NANOS {
            return Err(err("overflows"));
        }
        s = rest;
    }
    let secs = (total / 1_000_000_000) as u64;
    let sub = (total % 1_000_000_000) as u32;
    Ok(Duration::new(secs, sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_examples() {
        let cases: &[(&str, Duration)] = &[
            ("0", Duration::ZERO),
            ("90s", Duration::from_secs(90)),
            ("1m30s", Duration::from_secs(90)),
            ("1h", Duration::from_secs(3600)),
            ("1.5h", Duration::from_secs(5400)),
            ("300ms", Duration::from_millis(300)),
            ("2h45m", Duration::from_secs(9900)),
            ("1µs", Duration::from_micros(1)),
            ("1us", Duration::from_micros(1)),
            ("10ns", Duration::from_nanos(10)),
            (".5s", Duration::from_millis(500)),
            ("+5s", Duration::from_secs(5)),
            ("-0", Duration::ZERO),
            ("0s", Duration::ZERO),
        ];
        for (s, want) in cases {
            assert_eq!(parse_duration(s), Ok(*want), "{s}");
        }
    }

    #[test]
    fn rejects() {
        for s in [
            "",
            "90",
            "s",
            "1x",
            "-1s",
            "1.s2",
            ".s",
            "1m30",
            "9999999999999h",
            "1 s",
        ] {
            let res = parse_duration(s);
            assert!(res.is_err(), "{s} parsed as {res:?}");
        }
    }

    proptest::proptest! {
        /// Durations written the way Go's `Duration.String` writes them parse back exactly.
        #[test]
        fn go_formatted_durations_parse(h in 0u64..10_000, m in 0u64..60, s in 0u64..60, ms in 0u64..1000) {
            let mut text = String::new();
            if h > 0 { text += &format!("{h}h"); }
            if h > 0 || m > 0 { text += &format!("{m}m"); }
            text += &format!("{s}.{ms:03}s");
            let want = Duration::from_millis(((h * 60 + m) * 60 + s) * 1000 + ms);
            proptest::prop_assert_eq!(parse_duration(&text), Ok(want), "{}", text);
        }
    }
}
