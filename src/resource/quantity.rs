//! Kubernetes-style quantities: `"8"`, `"500m"`, `"1.5"`, `"16Gi"`, `"512Mi"`, `"1e3"`, `"2k"`.

use std::fmt;

/// A non-negative quantity, held exactly in thousandths of its unit
/// (millicores for CPU, millibytes for memory), like Kubernetes' `MilliValue`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Quantity {
    milli: u128,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QuantityError(String);

const SUFFIXES: &[(&str, u128, u128)] = &[
    // (suffix, multiplier numerator, divisor) applied to the number
    ("Ki", 1 << 10, 1),
    ("Mi", 1 << 20, 1),
    ("Gi", 1 << 30, 1),
    ("Ti", 1 << 40, 1),
    ("Pi", 1 << 50, 1),
    ("Ei", 1 << 60, 1),
    ("m", 1, 1000),
    ("k", 1_000, 1),
    ("M", 1_000_000, 1),
    ("G", 1_000_000_000, 1),
    ("T", 1_000_000_000_000, 1),
    ("P", 1_000_000_000_000_000, 1),
    ("E", 1_000_000_000_000_000_000, 1),
];

impl Quantity {
    pub fn from_units(units: u64) -> Quantity {
        Quantity {
            milli: u128::from(units) * 1000,
        }
    }

    pub fn from_milli(milli: u128) -> Quantity {
        Quantity { milli }
    }

    /// Thousandths of the unit (millicores for CPU).
    pub fn milli(&self) -> u128 {
        self.milli
    }

    /// Whole units, rounded up (bytes for memory, devices for GPUs).
    pub fn units_ceil(&self) -> u128 {
        self.milli.div_ceil(1000)
    }

    pub fn parse(text: &str) -> Result<Quantity, QuantityError> {
        let s = text.trim();
        let bad = |why: &str| {
            QuantityError(format!(
                "{why} in {text:?}: expected a number with an optional suffix such as \"500m\", \"8\", \"1.5\", \"16Gi\" or \"512Mi\""
            ))
        };
        if s.is_empty() {
            return Err(bad("empty quantity"));
        }
        if s.starts_with('-') {
            return Err(bad("negative quantity"));
        }
        let s = s.strip_prefix('+').unwrap_or(s);
        let (number, mul, div) = match SUFFIXES.iter().find(|(suf, _, _)| s.ends_with(suf)) {
            Some((suf, mul, div)) => (&s[..s.len() - suf.len()], *mul, *div),
            None => match s.find(['e', 'E']) {
                Some(at) => {
                    let exp: u32 = s[at + 1..].parse().map_err(|_| bad("bad exponent"))?;
                    if exp > 18 {
                        return Err(bad("exponent too large"));
                    }
                    (&s[..at], 10u128.pow(exp), 1)
                }
                None => (s, 1, 1),
            },
        };
        let (whole, frac) = match number.split_once('.') {
            Some((w, f)) => (w, f),
            None => (number, ""),
        };
        if whole.is_empty() && frac.is_empty() {
            return Err(bad("no digits"));
        }
        if !whole.chars().all(|c| c.is_ascii_digit()) || !frac.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad("not a number"));
        }
        if frac.len() > 9 {
            return Err(bad("too many decimal places"));
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad("number too large"))?
        };
        let frac_scale = 10u128.pow(frac.len() as u32);
        let frac: u128 = if frac.is_empty() {
            0
        } else {
            frac.parse().map_err(|_| bad("not a number"))?
        };
        // value = (whole + frac/frac_scale) * mul / div, in thousandths, rounded up
        let scaled = whole
            .checked_mul(frac_scale)
            .and_then(|v| v.checked_add(frac))
            .and_then(|v| v.checked_mul(mul))
            .and_then(|v| v.checked_mul(1000))
            .ok_or_else(|| bad("quantity too large"))?;
        let milli = scaled.div_ceil(frac_scale * div);
        if milli > u128::from(u64::MAX) * 1000 {
            return Err(bad("quantity too large"));
        }
        Ok(Quantity { milli })
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.milli % 1000 == 0 {
            write!(f, "{}", self.milli / 1000)
        } else {
            write!(f, "{}m", self.milli)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_kubernetes_forms() {
        let q = |s| Quantity::parse(s).expect("valid quantity");
        assert_eq!(q("8").milli(), 8000);
        assert_eq!(q("500m").milli(), 500);
        assert_eq!(q("1.5").milli(), 1500);
        assert_eq!(q("16Gi").units_ceil(), 16 << 30);
        assert_eq!(q("512Mi").units_ceil(), 512 << 20);
        assert_eq!(q("2k").units_ceil(), 2000);
        assert_eq!(q("1e3").units_ceil(), 1000);
        assert_eq!(q(".5").milli(), 500);
        assert_eq!(q("0.1m").milli(), 1, "sub-milli rounds up like Kubernetes");
    }

    #[test]
    fn rejects_garbage_with_a_hint() {
        for bad in [
            "",
            "-1",
            "abc",
            "1.2.3",
            "12Zi",
            "1e99",
            "1..",
            "Gi",
            "99999999999999999999999999Ei",
        ] {
            let err = Quantity::parse(bad).expect_err(bad);
            assert!(err.to_string().contains("16Gi"), "{err}");
        }
    }

    proptest! {
        #[test]
        fn integer_with_suffix_roundtrips(n in 0u64..1_000_000, suffix in 0usize..SUFFIXES.len()) {
            let (suf, mul, div) = SUFFIXES[suffix];
            let expected = (u128::from(n) * mul * 1000).div_ceil(div);
            match Quantity::parse(&format!("{n}{suf}")) {
                Ok(q) => prop_assert_eq!(q.milli(), expected),
                Err(e) => {
                    prop_assert!(expected > u128::from(u64::MAX) * 1000, "{}", e);
                    prop_assert!(e.to_string().contains("too large"));
                }
            }
        }

        #[test]
        fn display_parses_back(milli in 0u128..10_000_000_000) {
            let q = Quantity::from_milli(milli);
            prop_assert_eq!(Quantity::parse(&q.to_string()).expect("display is parseable"), q);
        }

        #[test]
        fn never_panics(s in "\\PC{0,24}") {
            let _ = Quantity::parse(&s);
        }
    }
}
