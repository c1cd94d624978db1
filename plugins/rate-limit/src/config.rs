//! The plugin's config, checked as it is read: every refusal comes from the
//! field at fault (`limits[1].per`, `key[0]`), which the gateway maps to its
//! line in the YAML file.

use std::fmt;

use plugin_sdk::DurationRule;
use serde::Deserialize;
use serde::de::{Deserializer, Error as _, Visitor};

/// Limits one call to the host may decide.
pub const MAX_LIMITS: usize = 16;
/// Parts one key may have.
pub const MAX_KEY_PARTS: usize = 8;
/// The longest `per`: 366 days, in milliseconds.
pub const MAX_PERIOD_MS: u64 = 366 * DAY_MS;

const SECOND_MS: u64 = 1000;
const MINUTE_MS: u64 = 60 * SECOND_MS;
const HOUR_MS: u64 = 60 * MINUTE_MS;
const DAY_MS: u64 = 24 * HOUR_MS;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The budgets, 1 to 16; a request must fit every one.
    #[serde(deserialize_with = "limit_list")]
    pub limits: Vec<LimitRule>,
    /// What a request is counted under, 1 to 8 parts; default `[client_ip]`.
    #[serde(default = "default_key", deserialize_with = "key_parts")]
    pub key: Vec<KeyPart>,
    /// What to do when the store cannot decide.
    #[serde(default)]
    pub policy: Policy,
    /// Send `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`.
    #[serde(default = "yes")]
    pub headers: bool,
}

/// One `limits` entry: `requests` per `per` on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitRule {
    pub requests: u64,
    pub period_ms: u64,
    /// `requests` unless given.
    pub burst: u64,
}

impl LimitRule {
    /// What this limit adds to a request's key, so that two limits (or two
    /// routes with different limits) never share a counter. At most
    /// [`crate::key::MAX_SUFFIX_BYTES`] long.
    pub fn key_suffix(&self) -> String {
        format!("|{}/{}/{}", self.requests, self.period_ms, self.burst)
    }
}

impl<'de> Deserialize<'de> for LimitRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Written {
            #[serde(deserialize_with = "at_least_one")]
            requests: u64,
            #[serde(deserialize_with = "duration")]
            per: u64,
            #[serde(default, deserialize_with = "some_at_least_one")]
            burst: Option<u64>,
        }
        let written = Written::deserialize(d)?;
        Ok(Self {
            requests: written.requests,
            period_ms: written.per,
            burst: written.burst.unwrap_or(written.requests),
        })
    }
}

/// One part of the key a request is counted under.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum KeyPart {
    /// `client_ip`: the client's address.
    ClientIp,
    /// `route`: the route's name.
    Route,
    /// `header:NAME`: the first value of a request header (name in lower case).
    Header(String),
    /// `context:NAME`: a value an earlier plugin set (`consumer`, from auth).
    Context(String),
}

impl TryFrom<String> for KeyPart {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        match text.split_once(':') {
            None if text == "client_ip" => Ok(Self::ClientIp),
            None if text == "route" => Ok(Self::Route),
            Some(("header", name)) if is_header_name(name) => {
                Ok(Self::Header(name.to_ascii_lowercase()))
            }
            Some(("header", "")) => {
                Err("`header:` needs a header name, as in `header:x-api-key`".into())
            }
            Some(("header", _)) => Err(format!("`{text}`: not a header name")),
            Some(("context", "")) => {
                Err("`context:` needs a context key, as in `context:consumer`".into())
            }
            Some(("context", name)) => Ok(Self::Context(name.to_string())),
            _ => Err(format!(
                "`{text}` is not a key part: client_ip, route, header:NAME or context:NAME"
            )),
        }
    }
}

/// What happens when the store cannot decide (not reachable in time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Let the request through, without rate-limit headers.
    #[default]
    FailOpen,
    /// Answer `503 rate_limit_unavailable`.
    FailClosed,
}

/// Durations in this plugin's config: `500ms` to `366d`.
const DURATION: DurationRule = DurationRule {
    units: &[
        ("ms", 1),
        ("s", SECOND_MS),
        ("m", MINUTE_MS),
        ("h", HOUR_MS),
        ("d", DAY_MS),
    ],
    examples: "`500ms`, `10s` or `1m`",
    max_ms: MAX_PERIOD_MS,
    max: "366d",
};

/// Milliseconds in a duration written as a whole number and a unit: `500ms`,
/// `10s`, `1m`, `1h`, `1d`. At least 1ms, at most 366 days.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    plugin_sdk::parse_duration(text, &DURATION)
}

fn default_key() -> Vec<KeyPart> {
    vec![KeyPart::ClientIp]
}

fn yes() -> bool {
    true
}

fn limit_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<LimitRule>, D::Error> {
    let list = Vec::<LimitRule>::deserialize(d)?;
    if list.is_empty() {
        return Err(D::Error::custom(
            "list at least one limit, as in `- { requests: 100, per: 1m }`",
        ));
    }
    if list.len() > MAX_LIMITS {
        return Err(D::Error::custom(format!(
            "at most {MAX_LIMITS} limits, not {}",
            list.len()
        )));
    }
    for (i, rule) in list.iter().enumerate() {
        if let Some(first) = list[..i].iter().position(|other| other == rule) {
            return Err(D::Error::custom(format!(
                "limits[{i}] is the same limit as limits[{first}] ({} per {}ms, burst {}): requests would be counted twice",
                rule.requests, rule.period_ms, rule.burst
            )));
        }
    }
    Ok(list)
}

fn key_parts<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<KeyPart>, D::Error> {
    let parts = Vec::<KeyPart>::deserialize(d)?;
    if parts.is_empty() {
        return Err(D::Error::custom(
            "name at least one part, as in `[client_ip]`, or leave `key` out",
        ));
    }
    if parts.len() > MAX_KEY_PARTS {
        return Err(D::Error::custom(format!(
            "at most {MAX_KEY_PARTS} parts, not {}",
            parts.len()
        )));
    }
    Ok(parts)
}

/// Largest `requests` or `burst`: the host's bound on a burst.
pub const MAX_COUNT: u64 = 1_000_000_000;

fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match u64::deserialize(d)? {
        0 => Err(D::Error::custom("must be at least 1")),
        n if n > MAX_COUNT => Err(D::Error::custom(format!("must be at most {MAX_COUNT}"))),
        n => Ok(n),
    }
}

fn some_at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    at_least_one(d).map(Some)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct Duration;

    impl Visitor<'_> for Duration {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration such as `500ms`, `10s`, `1m`, `1h` or `1d`")
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<u64, E> {
            parse_duration(text).map_err(E::custom)
        }
    }

    d.deserialize_str(Duration)
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_a_whole_number_and_a_unit() {
        for (text, ms) in [
            ("500ms", 500),
            ("1ms", 1),
            ("1s", 1000),
            ("10s", 10_000),
            ("1m", 60_000),
            ("90m", 5_400_000),
            ("1h", 3_600_000),
            ("1d", 86_400_000),
            ("366d", 31_622_400_000),
            ("0010s", 10_000),
        ] {
            assert_eq!(parse_duration(text), Ok(ms), "{text}");
        }
    }

    #[test]
    fn other_durations_are_refused_with_the_reason() {
        for (text, why) in [
            ("", "not a duration"),
            ("10", "not a duration"),
            ("1 m", "not a duration"),
            ("1.5s", "not a duration"),
            ("-1s", "not a duration"),
            ("1M", "not a duration"),
            ("1min", "not a duration"),
            ("1sec", "not a duration"),
            (" 1s", "not a duration"),
            ("1s ", "not a duration"),
            ("m", "write a number before the unit"),
            ("0ms", "at least 1ms"),
            ("0d", "at least 1ms"),
            ("367d", "at most 366d"),
            ("8785h", "at most 366d"),
            ("99999999999999999999999s", "at most 366d"),
            ("18446744073709551615d", "at most 366d"),
        ] {
            let refused = parse_duration(text).err();
            assert!(
                refused.as_deref().is_some_and(|m| m.contains(why)),
                "{text}: {refused:?}"
            );
        }
    }

    fn parse(json: &str) -> Result<Config, (String, String)> {
        plugin_sdk::__runtime::parse_config::<Config>(json).map_err(|e| (e.field, e.message))
    }

    fn refused(json: &str) -> (String, String) {
        match parse(json) {
            Ok(config) => panic!("accepted {config:?}"),
            Err(refusal) => refusal,
        }
    }

    #[test]
    fn defaults_fill_in_what_is_left_out() {
        let config = parse(
            r#"{"limits":[{"requests":100,"per":"1m","burst":20},{"requests":10000,"per":"1d"}]}"#,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            config.limits,
            [
                LimitRule {
                    requests: 100,
                    period_ms: 60_000,
                    burst: 20
                },
                LimitRule {
                    requests: 10_000,
                    period_ms: 86_400_000,
                    burst: 10_000
                },
            ]
        );
        assert_eq!(config.key, [KeyPart::ClientIp]);
        assert_eq!(config.policy, Policy::FailOpen);
        assert!(config.headers);
    }

    #[test]
    fn key_parts_are_read_with_header_names_in_lower_case() {
        let config = parse(
            r#"{"limits":[{"requests":1,"per":"1s"}],
                "key":["client_ip","route","header:X-Api-Key","context:claims.sub"],
                "policy":"fail_closed","headers":false}"#,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            config.key,
            [
                KeyPart::ClientIp,
                KeyPart::Route,
                KeyPart::Header("x-api-key".into()),
                KeyPart::Context("claims.sub".into()),
            ]
        );
        assert_eq!(config.policy, Policy::FailClosed);
        assert!(!config.headers);
    }

    #[test]
    fn a_refused_config_names_the_field() {
        let one = r#"{"requests":1,"per":"1s"}"#;
        for (json, field, why) in [
            (r#"{}"#.to_string(), "", "missing field `limits`"),
            (r#"{"limits":[]}"#.into(), "limits", "at least one limit"),
            (
                format!(r#"{{"limits":[{}]}}"#, [one; 17].join(",")),
                "limits",
                "at most 16",
            ),
            (
                format!(r#"{{"limits":[{one},{{"requests":1,"per":"1000ms"}}]}}"#),
                "limits",
                "limits[1] is the same limit as limits[0]",
            ),
            (
                r#"{"limits":[{"requests":0,"per":"1s"}]}"#.into(),
                "limits[0].requests",
                "at least 1",
            ),
            (
                r#"{"limits":[{"requests":-1,"per":"1s"}]}"#.into(),
                "limits[0].requests",
                "invalid value",
            ),
            (
                format!(r#"{{"limits":[{one},{{"requests":5,"per":"1s","burst":0}}]}}"#),
                "limits[1].burst",
                "at least 1",
            ),
            (
                format!(r#"{{"limits":[{one},{{"requests":1000000001,"per":"1s"}}]}}"#),
                "limits[1].requests",
                "at most 1000000000",
            ),
            (
                r#"{"limits":[{"requests":1,"per":"1x"}]}"#.into(),
                "limits[0].per",
                "`1x` is not a duration",
            ),
            (
                r#"{"limits":[{"requests":1,"per":60}]}"#.into(),
                "limits[0].per",
                "expected a duration such as",
            ),
            (
                r#"{"limits":[{"requests":1}]}"#.into(),
                "limits[0]",
                "missing field `per`",
            ),
            (
                r#"{"limits":[{"requests":1,"per":"1s","rate":2}]}"#.into(),
                "limits[0].rate",
                "unknown field",
            ),
            (
                format!(r#"{{"limits":[{one}],"key":[]}}"#),
                "key",
                "at least one part",
            ),
            (
                format!(
                    r#"{{"limits":[{one}],"key":[{}]}}"#,
                    [r#""route""#; 9].join(",")
                ),
                "key",
                "at most 8 parts",
            ),
            (
                format!(r#"{{"limits":[{one}],"key":["route","ip"]}}"#),
                "key[1]",
                "not a key part",
            ),
            (
                format!(r#"{{"limits":[{one}],"key":["header:"]}}"#),
                "key[0]",
                "needs a header name",
            ),
            (
                format!(r#"{{"limits":[{one}],"key":["header:x y"]}}"#),
                "key[0]",
                "not a header name",
            ),
            (
                format!(r#"{{"limits":[{one}],"key":["context:"]}}"#),
                "key[0]",
                "needs a context key",
            ),
            (
                format!(r#"{{"limits":[{one}],"policy":"open"}}"#),
                "policy",
                "fail_open",
            ),
            (
                format!(r#"{{"limits":[{one}],"headers":"yes"}}"#),
                "headers",
                "invalid type",
            ),
            (
                format!(r#"{{"limits":[{one}],"limit":[]}}"#),
                "limit",
                "unknown field",
            ),
        ] {
            let (at, message) = refused(&json);
            assert_eq!(at, field, "{json}: {message}");
            assert!(message.contains(why), "{json}: {message}");
        }
    }

    #[test]
    fn the_suffix_names_the_whole_limit() {
        let rule = LimitRule {
            requests: 100,
            period_ms: 60_000,
            burst: 20,
        };
        assert_eq!(rule.key_suffix(), "|100/60000/20");
    }
}
