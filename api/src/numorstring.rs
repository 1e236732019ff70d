//! Fields Calico writes as "number or string" (its `numorstring` package): AS numbers and ports.
//!
//! Calico's `numorstring.ASNumber` accepts `64512`, `"64512"` and the asdot form `"1.10"`
//! (RFC 5396: `high.low` is `high * 65536 + low`); it always writes a plain number. Its
//! `numorstring.Port` is a number or a `"min:max"` range string.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Parses an AS number written as a decimal (`64512`) or in asdot form (`1.10`, RFC 5396).
pub fn parse_as_number(s: &str) -> Result<u32, String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not an AS number (a 32-bit number, or asdot `high.low`)");
    match s.split_once('.') {
        Some((high, low)) => {
            let high: u16 = high.parse().map_err(|_| bad())?;
            let low: u16 = low.parse().map_err(|_| bad())?;
            Ok((u32::from(high) << 16) | u32::from(low))
        }
        None => s.parse::<u32>().map_err(|_| bad()),
    }
}

struct AsNumberVisitor;

impl Visitor<'_> for AsNumberVisitor {
    type Value = u32;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an AS number (0..=4294967295) as a number or a string")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u32, E> {
        u32::try_from(v).map_err(|_| E::custom(format!("AS number {v} does not fit in 32 bits")))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u32, E> {
        u32::try_from(v).map_err(|_| E::custom(format!("AS number {v} does not fit in 32 bits")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u32, E> {
        parse_as_number(v).map_err(E::custom)
    }
}

/// `#[serde(with = …)]` for an `Option<u32>` AS number field.
pub mod opt_as_number {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        struct Opt;
        impl<'de> Visitor<'de> for Opt {
            type Value = Option<u32>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                AsNumberVisitor.expecting(f)
            }

            fn visit_none<E: de::Error>(self) -> Result<Option<u32>, E> {
                Ok(None)
            }

            fn visit_unit<E: de::Error>(self) -> Result<Option<u32>, E> {
                Ok(None)
            }

            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<u32>, D::Error> {
                d.deserialize_any(AsNumberVisitor).map(Some)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<u32>, E> {
                AsNumberVisitor.visit_u64(v).map(Some)
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<u32>, E> {
                AsNumberVisitor.visit_i64(v).map(Some)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<u32>, E> {
                AsNumberVisitor.visit_str(v).map(Some)
            }
        }
        d.deserialize_option(Opt)
    }
}

/// A port or a port range (`numorstring.Port`): `8080`, `"8080"` or `"30000:32767"`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(extend("x-kubernetes-int-or-string" = true))
)]
#[serde(untagged)]
pub enum PortOrRange {
    Number(u16),
    Text(String),
}

impl PortOrRange {
    /// The inclusive range this value names, or why it names none.
    pub fn range(&self) -> Result<(u16, u16), String> {
        match self {
            PortOrRange::Number(p) => Ok((*p, *p)),
            PortOrRange::Text(s) => {
                let port = |p: &str| {
                    p.trim()
                        .parse::<u16>()
                        .map_err(|_| format!("{s:?} is not a port or a port range"))
                };
                let (lo, hi) = match s.split_once(':') {
                    Some((lo, hi)) => (port(lo)?, port(hi)?),
                    None => {
                        let p = port(s)?;
                        (p, p)
                    }
                };
                if lo > hi {
                    return Err(format!(
                        "port range {s:?} has its minimum above its maximum"
                    ));
                }
                Ok((lo, hi))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    struct T {
        #[serde(default, with = "opt_as_number")]
        asn: Option<u32>,
    }

    #[test]
    fn as_number_forms() {
        let t: T = serde_json::from_str(r#"{"asn": 64512}"#).unwrap();
        assert_eq!(t.asn, Some(64512));
        let t: T = serde_json::from_str(r#"{"asn": "64513"}"#).unwrap();
        assert_eq!(t.asn, Some(64513));
        let t: T = serde_json::from_str(r#"{"asn": "1.10"}"#).unwrap();
        assert_eq!(t.asn, Some(65546));
        let t: T = serde_json::from_str(r#"{"asn": null}"#).unwrap();
        assert_eq!(t.asn, None);
        let t: T = serde_json::from_str("{}").unwrap();
        assert_eq!(t.asn, None);
        assert_eq!(
            serde_json::to_string(&T { asn: Some(7) }).unwrap(),
            r#"{"asn":7}"#
        );
    }

    #[test]
    fn as_number_rejects() {
        for bad in [
            r#"{"asn": 4294967296}"#,
            r#"{"asn": -1}"#,
            r#"{"asn": "x"}"#,
            r#"{"asn": "70000.1"}"#,
        ] {
            assert!(serde_json::from_str::<T>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn port_ranges() {
        assert_eq!(PortOrRange::Number(80).range(), Ok((80, 80)));
        assert_eq!(
            PortOrRange::Text("30000:32767".into()).range(),
            Ok((30000, 32767))
        );
        assert!(PortOrRange::Text("9:1".into()).range().is_err());
        assert!(PortOrRange::Text("http".into()).range().is_err());
    }
}
