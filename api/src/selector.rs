//! Calico's label selector language: `all()`, `has(k)`, `!has(k)`, `k == 'v'`, `k != 'v'`,
//! `k in {'a','b'}`, `k not in {...}`, `&&`, `||`, `!` and parentheses. `!` binds tightest,
//! then `&&`, then `||`, as in Calico's parser. An empty selector selects everything.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use nom::branch::alt;
use nom::bytes::complete::{is_not, tag, take_while1};
use nom::character::complete::{char, multispace0, multispace1};
use nom::combinator::{all_consuming, map, value};
use nom::multi::separated_list0;
use nom::sequence::{delimited, preceded};
use nom::{IResult, Parser};

/// A parsed selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    All,
    Has(String),
    Eq(String, String),
    Ne(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Not(Box<Selector>),
    And(Box<Selector>, Box<Selector>),
    Or(Box<Selector>, Box<Selector>),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector {input:?}: {reason}")]
pub struct SelectorError {
    pub input: String,
    pub reason: String,
}

impl Selector {
    /// Parses a selector; the empty string means `all()`.
    pub fn parse(input: &str) -> Result<Selector, SelectorError> {
        if input.trim().is_empty() {
            return Ok(Selector::All);
        }
        match all_consuming(delimited(multispace0, or_expr, multispace0)).parse(input) {
            Ok((_, sel)) => Ok(sel),
            Err(e) => {
                let rest = match &e {
                    nom::Err::Error(e) | nom::Err::Failure(e) => e.input,
                    nom::Err::Incomplete(_) => "",
                };
                let at = input.len() - rest.len();
                Err(SelectorError {
                    input: input.to_string(),
                    reason: format!("unexpected input at offset {at}: {:?}", truncate(rest)),
                })
            }
        }
    }

    /// Whether a resource with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Selector::All => true,
            Selector::Has(k) => labels.contains_key(k),
            Selector::Eq(k, v) => labels.get(k) == Some(v),
            Selector::Ne(k, v) => labels.get(k) != Some(v),
            Selector::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Selector::NotIn(k, vs) => !labels.get(k).is_some_and(|v| vs.contains(v)),
            Selector::Not(s) => !s.matches(labels),
            Selector::And(a, b) => a.matches(labels) && b.matches(labels),
            Selector::Or(a, b) => a.matches(labels) || b.matches(labels),
        }
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(20) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

fn ws<'a, O, P>(inner: P) -> impl Parser<&'a str, Output = O, Error = nom::error::Error<&'a str>>
where
    P: Parser<&'a str, Output = O, Error = nom::error::Error<&'a str>>,
{
    delimited(multispace0, inner, multispace0)
}

/// Calico label keys: letters, digits and `_ . / -` (a DNS prefix and a name).
fn label(i: &str) -> IResult<&str, String> {
    map(
        take_while1(|c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-')),
        str::to_string,
    )
    .parse(i)
}

fn quoted(i: &str) -> IResult<&str, String> {
    let single = delimited(
        char('\''),
        map(nom::combinator::opt(is_not("'")), |s| s.unwrap_or("")),
        char('\''),
    );
    let double = delimited(
        char('"'),
        map(nom::combinator::opt(is_not("\"")), |s| s.unwrap_or("")),
        char('"'),
    );
    map(alt((single, double)), str::to_string).parse(i)
}

fn value_set(i: &str) -> IResult<&str, BTreeSet<String>> {
    map(
        delimited(
            ws(char('{')),
            separated_list0(ws(char(',')), quoted),
            ws(char('}')),
        ),
        |v| v.into_iter().collect(),
    )
    .parse(i)
}

fn primary(i: &str) -> IResult<&str, Selector> {
    ws(alt((
        value(
            Selector::All,
            (tag("all"), multispace0, char('('), multispace0, char(')')),
        ),
        map(
            preceded(
                (tag("has"), multispace0),
                delimited(ws(char('(')), label, ws(char(')'))),
            ),
            Selector::Has,
        ),
        delimited(char('('), or_expr, ws(char(')'))),
        comparison,
    )))
    .parse(i)
}

fn comparison(i: &str) -> IResult<&str, Selector> {
    let (i, key) = label(i)?;
    let (i, _) = multispace0(i)?;
    alt((
        map(preceded((tag("=="), multispace0), quoted), {
            let key = key.clone();
            move |v| Selector::Eq(key.clone(), v)
        }),
        map(preceded((tag("!="), multispace0), quoted), {
            let key = key.clone();
            move |v| Selector::Ne(key.clone(), v)
        }),
        map(preceded((tag("not"), multispace1, tag("in")), value_set), {
            let key = key.clone();
            move |v| Selector::NotIn(key.clone(), v)
        }),
        map(preceded(tag("in"), value_set), {
            let key = key.clone();
            move |v| Selector::In(key.clone(), v)
        }),
    ))
    .parse(i)
}

fn unary(i: &str) -> IResult<&str, Selector> {
    alt((
        map(preceded(ws(char('!')), unary), |s| {
            Selector::Not(Box::new(s))
        }),
        primary,
    ))
    .parse(i)
}

fn and_expr(i: &str) -> IResult<&str, Selector> {
    let (mut i, mut acc) = unary(i)?;
    while let Ok((rest, rhs)) = preceded(ws(tag("&&")), unary).parse(i) {
        acc = Selector::And(Box::new(acc), Box::new(rhs));
        i = rest;
    }
    Ok((i, acc))
}

fn or_expr(i: &str) -> IResult<&str, Selector> {
    let (mut i, mut acc) = and_expr(i)?;
    while let Ok((rest, rhs)) = preceded(ws(tag("||")), and_expr).parse(i) {
        acc = Selector::Or(Box::new(acc), Box::new(rhs));
        i = rest;
    }
    Ok((i, acc))
}

fn write_set(f: &mut fmt::Formatter<'_>, vs: &BTreeSet<String>) -> fmt::Result {
    f.write_str("{")?;
    for (n, v) in vs.iter().enumerate() {
        if n > 0 {
            f.write_str(", ")?;
        }
        write_quoted(f, v)?;
    }
    f.write_str("}")
}

/// Values print in double quotes unless they contain one.
fn write_quoted(f: &mut fmt::Formatter<'_>, v: &str) -> fmt::Result {
    if v.contains('"') {
        write!(f, "'{v}'")
    } else {
        write!(f, "\"{v}\"")
    }
}

impl fmt::Display for Selector {
    /// The canonical form: minimal parentheses, `&&` and `||` left-associative.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::All => f.write_str("all()"),
            Selector::Has(k) => write!(f, "has({k})"),
            Selector::Eq(k, v) => {
                write!(f, "{k} == ")?;
                write_quoted(f, v)
            }
            Selector::Ne(k, v) => {
                write!(f, "{k} != ")?;
                write_quoted(f, v)
            }
            Selector::In(k, vs) => {
                write!(f, "{k} in ")?;
                write_set(f, vs)
            }
            Selector::NotIn(k, vs) => {
                write!(f, "{k} not in ")?;
                write_set(f, vs)
            }
            Selector::Not(s) => match **s {
                Selector::And(..) | Selector::Or(..) => write!(f, "!({s})"),
                _ => write!(f, "!{s}"),
            },
            Selector::And(a, b) => {
                write_operand(f, a, matches!(**a, Selector::Or(..)))?;
                f.write_str(" && ")?;
                write_operand(f, b, matches!(**b, Selector::Or(..) | Selector::And(..)))
            }
            Selector::Or(a, b) => {
                write!(f, "{a} || ")?;
                write_operand(f, b, matches!(**b, Selector::Or(..)))
            }
        }
    }
}

fn write_operand(f: &mut fmt::Formatter<'_>, s: &Selector, paren: bool) -> fmt::Result {
    if paren {
        write!(f, "({s})")
    } else {
        write!(f, "{s}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn eq(k: &str, v: &str) -> Selector {
        Selector::Eq(k.into(), v.into())
    }
    fn and(a: Selector, b: Selector) -> Selector {
        Selector::And(Box::new(a), Box::new(b))
    }
    fn or(a: Selector, b: Selector) -> Selector {
        Selector::Or(Box::new(a), Box::new(b))
    }
    fn not(a: Selector) -> Selector {
        Selector::Not(Box::new(a))
    }
    fn set(vs: &[&str]) -> BTreeSet<String> {
        vs.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn parses() {
        let cases: Vec<(&str, Selector)> = vec![
            ("", Selector::All),
            ("   ", Selector::All),
            ("all()", Selector::All),
            (" all ( ) ", Selector::All),
            ("has(zone)", Selector::Has("zone".into())),
            (
                "has( topology.kubernetes.io/zone )",
                Selector::Has("topology.kubernetes.io/zone".into()),
            ),
            ("!has(zone)", not(Selector::Has("zone".into()))),
            ("zone == 'a'", eq("zone", "a")),
            ("zone==\"a\"", eq("zone", "a")),
            ("zone != 'a'", Selector::Ne("zone".into(), "a".into())),
            ("zone == ''", eq("zone", "")),
            ("zone == 'say \"hi\"'", eq("zone", "say \"hi\"")),
            ("zone == \"it's\"", eq("zone", "it's")),
            (
                "zone in {'a', \"b\"}",
                Selector::In("zone".into(), set(&["a", "b"])),
            ),
            ("zone in {}", Selector::In("zone".into(), set(&[]))),
            (
                "zone not  in{'a'}",
                Selector::NotIn("zone".into(), set(&["a"])),
            ),
            ("all == 'x'", eq("all", "x")),
            ("has == 'x'", eq("has", "x")),
            // Precedence: `&&` binds tighter than `||`, `!` tightest.
            (
                "a == 'x' || b == 'y' && c == 'z'",
                or(eq("a", "x"), and(eq("b", "y"), eq("c", "z"))),
            ),
            (
                "a == 'x' && b == 'y' || c == 'z'",
                or(and(eq("a", "x"), eq("b", "y")), eq("c", "z")),
            ),
            (
                "!a == 'x' && b == 'y'",
                and(not(eq("a", "x")), eq("b", "y")),
            ),
            (
                "!(a == 'x' && b == 'y')",
                not(and(eq("a", "x"), eq("b", "y"))),
            ),
            ("!!has(a)", not(not(Selector::Has("a".into())))),
            (
                "(a == 'x' || b == 'y') && c == 'z'",
                and(or(eq("a", "x"), eq("b", "y")), eq("c", "z")),
            ),
            // Left-associative chains.
            (
                "a == '1' || b == '2' || c == '3'",
                or(or(eq("a", "1"), eq("b", "2")), eq("c", "3")),
            ),
            (
                "a == '1' && b == '2' && c == '3'",
                and(and(eq("a", "1"), eq("b", "2")), eq("c", "3")),
            ),
            (
                "\n\ta == 'x'\n&&\tb == 'y' ",
                and(eq("a", "x"), eq("b", "y")),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(Selector::parse(input), Ok(want), "{input:?}");
        }
    }

    #[test]
    fn rejects() {
        for bad in [
            "a ==",
            "a = 'x'",
            "a == x",
            "has(a",
            "has()",
            "a in {'x'",
            "a in {x}",
            "&& a == 'x'",
            "a == 'x' &&",
            "a == 'x' b == 'y'",
            "(a == 'x'",
            "a == 'x')",
            "a == 'x",
            "!",
            "all",
        ] {
            let e = Selector::parse(bad).unwrap_err();
            assert_eq!(e.input, bad);
            assert!(e.reason.contains("offset"), "{bad}: {e}");
        }
    }

    #[test]
    fn matching() {
        let labels: BTreeMap<String, String> = [("zone", "a"), ("role", "rr")]
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let yes = [
            "all()",
            "has(zone)",
            "zone == 'a'",
            "zone in {'a','b'}",
            "missing not in {'x'}",
            "!has(missing)",
            "zone != 'b'",
            "missing != 'b'",
            "role == 'rr' && zone == 'a'",
            "zone == 'b' || role == 'rr'",
        ];
        let no = [
            "has(missing)",
            "zone == 'b'",
            "zone not in {'a'}",
            "missing in {'a'}",
            "!all()",
            "zone == 'a' && role == 'x'",
        ];
        for s in yes {
            assert!(Selector::parse(s).unwrap().matches(&labels), "{s}");
        }
        for s in no {
            assert!(!Selector::parse(s).unwrap().matches(&labels), "{s}");
        }
    }

    #[test]
    fn canonical_display() {
        let cases = [
            (
                "a=='x'||b=='y'&&c=='z'",
                "a == \"x\" || b == \"y\" && c == \"z\"",
            ),
            (
                "(a=='x'||b=='y')&&c=='z'",
                "(a == \"x\" || b == \"y\") && c == \"z\"",
            ),
            (
                "a=='x'||(b=='y'||c=='z')",
                "a == \"x\" || (b == \"y\" || c == \"z\")",
            ),
            (
                "a=='x'&&(b=='y'&&c=='z')",
                "a == \"x\" && (b == \"y\" && c == \"z\")",
            ),
            ("!(has(a)||has(b))", "!(has(a) || has(b))"),
            ("k in {'b','a'}", "k in {\"a\", \"b\"}"),
            ("k == 'say \"hi\"'", "k == 'say \"hi\"'"),
        ];
        for (input, want) in cases {
            assert_eq!(Selector::parse(input).unwrap().to_string(), want, "{input}");
        }
    }

    fn key() -> impl Strategy<Value = String> {
        "[a-z0-9][a-z0-9._/-]{0,6}"
    }

    /// Values a selector can quote: anything without both kinds of quote.
    fn val() -> impl Strategy<Value = String> {
        prop_oneof!["[a-zA-Z0-9 ._'-]{0,6}", "[a-zA-Z0-9 ._\"-]{0,6}"]
    }

    fn selector() -> impl Strategy<Value = Selector> {
        let leaf = prop_oneof![
            Just(Selector::All),
            key().prop_map(Selector::Has),
            (key(), val()).prop_map(|(k, v)| Selector::Eq(k, v)),
            (key(), val()).prop_map(|(k, v)| Selector::Ne(k, v)),
            (key(), prop::collection::btree_set(val(), 0..3)).prop_map(|(k, v)| Selector::In(k, v)),
            (key(), prop::collection::btree_set(val(), 0..3))
                .prop_map(|(k, v)| Selector::NotIn(k, v)),
        ];
        leaf.prop_recursive(5, 32, 2, |inner| {
            prop_oneof![
                inner.clone().prop_map(|s| Selector::Not(Box::new(s))),
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| Selector::And(Box::new(a), Box::new(b))),
                (inner.clone(), inner).prop_map(|(a, b)| Selector::Or(Box::new(a), Box::new(b))),
            ]
        })
    }

    proptest! {
        #[test]
        fn print_then_parse_is_identity(sel in selector()) {
            let printed = sel.to_string();
            prop_assert_eq!(Selector::parse(&printed), Ok(sel), "printed as {}", printed);
        }
    }
}
