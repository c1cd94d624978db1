//! The plugin's config, checked as it is read: every refusal comes from the
//! field at fault (`parts[1].path`, `pass_headers[0]`), which the gateway
//! maps to its line in the YAML file.
//!
//! Two checks span fields: part names must differ (refused at the second
//! one's `name`), and no part may wait longer than the whole batch (refused
//! at whichever of `timeout` and `parts[i].timeout` is read second; the
//! gateway passes keys in alphabetical order, so that is `timeout` when it
//! is written, and the config as a whole when the default 2s is meant).

use std::fmt;

use plugin_sdk::DurationRule;
use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};

use crate::json::Pointer;
use crate::template::Template;

/// Most parts: the host sends at most 16 calls per batch.
pub const MAX_PARTS: usize = 16;
/// The longest `timeout`.
pub const MAX_TIMEOUT_MS: u32 = 60 * SECOND_MS;
/// `timeout` when it is left out.
pub const DEFAULT_TIMEOUT_MS: u32 = 2 * SECOND_MS;

const SECOND_MS: u32 = 1000;
const MINUTE_MS: u32 = 60 * SECOND_MS;

/// Request headers never passed on: they describe the client's request
/// (the calls have no body and their own host), are hop-by-hop, would ask
/// for compressed answers (read as plain JSON here), or are added to every
/// call by the gateway itself (`x-request-id` and trace headers).
pub const NEVER_PASSED: &[(&str, &str)] = &[
    ("host", DESCRIBES_THE_REQUEST),
    ("content-length", DESCRIBES_THE_REQUEST),
    ("content-type", DESCRIBES_THE_REQUEST),
    ("transfer-encoding", DESCRIBES_THE_REQUEST),
    ("expect", DESCRIBES_THE_REQUEST),
    (
        "accept-encoding",
        "answers are read as plain JSON, never compressed",
    ),
    ("connection", HOP_BY_HOP),
    ("keep-alive", HOP_BY_HOP),
    ("te", HOP_BY_HOP),
    ("trailer", HOP_BY_HOP),
    ("upgrade", HOP_BY_HOP),
    ("proxy-authorization", HOP_BY_HOP),
    ("proxy-connection", HOP_BY_HOP),
    ("range", CONDITIONAL),
    ("if-range", CONDITIONAL),
    ("if-match", CONDITIONAL),
    ("if-none-match", CONDITIONAL),
    ("if-modified-since", CONDITIONAL),
    ("if-unmodified-since", CONDITIONAL),
    ("cookie", CREDENTIAL),
    ("authorization", CREDENTIAL),
    ("x-request-id", ADDED_BY_THE_GATEWAY),
    ("traceparent", ADDED_BY_THE_GATEWAY),
    ("tracestate", ADDED_BY_THE_GATEWAY),
];

const DESCRIBES_THE_REQUEST: &str =
    "it describes the client's request; the calls have no body and go to their pool's host";
const HOP_BY_HOP: &str = "it is hop-by-hop, meant for the gateway only";
const CREDENTIAL: &str = "it is the client's credential for this gateway, not for the pools behind it; list it in pass_headers to pass it on";
const CONDITIONAL: &str =
    "it asks about the client's copy of one answer; a part answering 304 or 206 would fail";
const ADDED_BY_THE_GATEWAY: &str = "the gateway adds it to every call itself";

/// The route's `config:` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Request methods answered; others get `405`. Default `[GET]`.
    pub methods: Vec<String>,
    /// The longest wait for the whole batch of calls.
    pub timeout_ms: u32,
    /// Which request headers every call carries.
    pub pass_headers: PassHeaders,
    /// The calls, 1 to 16, in the order their keys are written.
    pub parts: Vec<Part>,
}

/// Which request headers go along with every call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassHeaders {
    /// Every one but [`NEVER_PASSED`] (and those the request's `Connection`
    /// header names): the default.
    AllButNeverPassed,
    /// Only these (lower case), in the order the request has them.
    Only(Vec<String>),
}

/// One `parts` entry: one call, and one key of the merged answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub name: String,
    pub pool: String,
    pub method: String,
    pub path: Template,
    pub required: bool,
    /// The batch's timeout unless given.
    pub timeout_ms: u32,
    pub pointer: Option<Pointer>,
}

const CONFIG_FIELDS: &[&str] = &["methods", "timeout", "pass_headers", "parts"];
const PART_FIELDS: &[&str] = &[
    "name", "pool", "method", "path", "required", "timeout", "pointer",
];

impl<'de> Deserialize<'de> for Config {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ConfigVisitor)
    }
}

struct ConfigVisitor;

impl<'de> Visitor<'de> for ConfigVisitor {
    type Value = Config;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map with `parts`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Config, A::Error> {
        let mut methods = None;
        let mut timeout_ms = None;
        let mut pass_headers = None;
        let mut parts: Option<Vec<WrittenPart>> = None;
        while let Some(key) = map.next_key_seed(Field(CONFIG_FIELDS))? {
            match key {
                "methods" => {
                    let list = map.next_value::<Methods>()?.0;
                    set(&mut methods, key, list)?;
                }
                "timeout" => {
                    let seed = BatchTimeout {
                        longest_part: parts.as_deref().and_then(longest_part),
                    };
                    let ms = map.next_value_seed(seed)?;
                    set(&mut timeout_ms, key, ms)?;
                }
                "pass_headers" => {
                    let list = map.next_value::<HeaderList>()?.0;
                    set(&mut pass_headers, key, PassHeaders::Only(list))?;
                }
                _ => {
                    let seed = PartsSeed {
                        batch_ms: timeout_ms,
                    };
                    let list = map.next_value_seed(seed)?;
                    set(&mut parts, key, list)?;
                }
            }
        }
        let parts = parts.ok_or_else(|| A::Error::missing_field("parts"))?;
        let timeout_ms = match timeout_ms {
            Some(ms) => ms,
            None => {
                if let Some((i, ms)) =
                    longest_part(&parts).filter(|(_, ms)| *ms > DEFAULT_TIMEOUT_MS)
                {
                    return Err(A::Error::custom(format!(
                        "parts[{i}].timeout: {} is longer than the whole batch may take (`timeout`, {} when left out): set `timeout` to at least {0}",
                        show_ms(ms),
                        show_ms(DEFAULT_TIMEOUT_MS),
                    )));
                }
                DEFAULT_TIMEOUT_MS
            }
        };
        Ok(Config {
            methods: methods.unwrap_or_else(|| vec!["GET".to_string()]),
            timeout_ms,
            pass_headers: pass_headers.unwrap_or(PassHeaders::AllButNeverPassed),
            parts: parts
                .into_iter()
                .map(|p| Part {
                    name: p.name,
                    pool: p.pool,
                    method: p.method.unwrap_or_else(|| "GET".to_string()),
                    path: p.path,
                    required: p.required.unwrap_or(true),
                    timeout_ms: p.timeout_ms.unwrap_or(timeout_ms),
                    pointer: p.pointer,
                })
                .collect(),
        })
    }
}

/// Fills `slot` with the value of field `key`, which a map has once.
fn set<T, E: serde::de::Error>(slot: &mut Option<T>, key: &'static str, value: T) -> Result<(), E> {
    match slot {
        Some(_) => Err(E::duplicate_field(key)),
        None => {
            *slot = Some(value);
            Ok(())
        }
    }
}

/// The part with the longest timeout of its own, and that timeout.
fn longest_part(parts: &[WrittenPart]) -> Option<(usize, u32)> {
    parts
        .iter()
        .enumerate()
        .filter_map(|(i, p)| Some((i, p.timeout_ms?)))
        .max_by_key(|&(i, ms)| (ms, std::cmp::Reverse(i)))
}

/// A map key that must be one of the fields (refused at that key).
struct Field(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for Field {
    type Value = &'static str;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<&'static str, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl Visitor<'_> for Field {
    type Value = &'static str;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<&'static str, E> {
        self.0
            .iter()
            .find(|field| **field == name)
            .copied()
            .ok_or_else(|| E::unknown_field(name, self.0))
    }
}

/// The batch's `timeout`, refused if a part read before it waits longer.
struct BatchTimeout {
    longest_part: Option<(usize, u32)>,
}

impl<'de> DeserializeSeed<'de> for BatchTimeout {
    type Value = u32;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u32, D::Error> {
        let ms = Duration::deserialize(d)?.0;
        match self.longest_part {
            Some((i, part)) if part > ms => Err(D::Error::custom(format!(
                "{} is shorter than parts[{i}].timeout ({}): the whole batch must wait at least as long as each part",
                show_ms(ms),
                show_ms(part)
            ))),
            _ => Ok(ms),
        }
    }
}

/// The `parts` list; `batch_ms` is the batch timeout if it was read first.
struct PartsSeed {
    batch_ms: Option<u32>,
}

impl<'de> DeserializeSeed<'de> for PartsSeed {
    type Value = Vec<WrittenPart>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<WrittenPart>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for PartsSeed {
    type Value = Vec<WrittenPart>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of parts")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<WrittenPart>, A::Error> {
        let mut parts: Vec<WrittenPart> = Vec::new();
        loop {
            let seed = PartSeed {
                taken: &parts,
                batch_ms: self.batch_ms,
            };
            let Some(part) = seq.next_element_seed(seed)? else {
                break;
            };
            parts.push(part);
        }
        if parts.is_empty() {
            return Err(A::Error::custom(
                "list at least one part, as in `- { name: profile, pool: users, path: \"/users/{id}\" }`",
            ));
        }
        if parts.len() > MAX_PARTS {
            return Err(A::Error::custom(format!(
                "at most {MAX_PARTS} parts, not {}",
                parts.len()
            )));
        }
        Ok(parts)
    }
}

/// A part as written: what was left out is filled in once the whole config
/// is read.
#[derive(Debug)]
struct WrittenPart {
    name: String,
    pool: String,
    method: Option<String>,
    path: Template,
    required: Option<bool>,
    timeout_ms: Option<u32>,
    pointer: Option<Pointer>,
}

/// One part; `taken` are the parts before it.
struct PartSeed<'a> {
    taken: &'a [WrittenPart],
    batch_ms: Option<u32>,
}

impl<'de> DeserializeSeed<'de> for PartSeed<'_> {
    type Value = WrittenPart;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<WrittenPart, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PartSeed<'_> {
    type Value = WrittenPart;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a part: a map with `name`, `pool` and `path`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WrittenPart, A::Error> {
        let mut name = None;
        let mut pool = None;
        let mut method = None;
        let mut path = None;
        let mut required = None;
        let mut timeout_ms = None;
        let mut pointer = None;
        while let Some(key) = map.next_key_seed(Field(PART_FIELDS))? {
            match key {
                "name" => {
                    let seed = PartName { taken: self.taken };
                    let value = map.next_value_seed(seed)?;
                    set(&mut name, key, value)?;
                }
                "pool" => {
                    let value = map.next_value::<Pool>()?.0;
                    set(&mut pool, key, value)?;
                }
                "method" => {
                    let value = map.next_value::<Method>()?.0;
                    set(&mut method, key, value)?;
                }
                "path" => {
                    let value = map.next_value::<Template>()?;
                    set(&mut path, key, value)?;
                }
                "required" => {
                    let value = map.next_value::<bool>()?;
                    set(&mut required, key, value)?;
                }
                "timeout" => {
                    let seed = PartTimeout {
                        batch_ms: self.batch_ms,
                    };
                    let value = map.next_value_seed(seed)?;
                    set(&mut timeout_ms, key, value)?;
                }
                _ => {
                    let value = map.next_value::<Pointer>()?;
                    set(&mut pointer, key, value)?;
                }
            }
        }
        Ok(WrittenPart {
            name: name.ok_or_else(|| A::Error::missing_field("name"))?,
            pool: pool.ok_or_else(|| A::Error::missing_field("pool"))?,
            method,
            path: path.ok_or_else(|| A::Error::missing_field("path"))?,
            required,
            timeout_ms,
            pointer,
        })
    }
}

/// A part's `name`: a key of the merged answer, unlike any other part's.
struct PartName<'a> {
    taken: &'a [WrittenPart],
}

impl<'de> DeserializeSeed<'de> for PartName<'_> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        let name = String::deserialize(d)?;
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(D::Error::custom(format!(
                "`{name}` is not a part name: letters, digits, `_` and `-`"
            )));
        }
        if name.starts_with('_') {
            return Err(D::Error::custom(format!(
                "`{name}`: names starting with `_` are the plugin's own (`_failed`)"
            )));
        }
        if let Some(i) = self.taken.iter().position(|p| p.name == name) {
            return Err(D::Error::custom(format!(
                "`{name}` is already the name of parts[{i}]"
            )));
        }
        Ok(name)
    }
}

/// A part's `timeout`: at most the batch's, when that was read first (else
/// the batch's is checked against it).
struct PartTimeout {
    batch_ms: Option<u32>,
}

impl<'de> DeserializeSeed<'de> for PartTimeout {
    type Value = u32;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u32, D::Error> {
        let ms = Duration::deserialize(d)?.0;
        match self.batch_ms {
            Some(batch) if ms > batch => Err(D::Error::custom(format!(
                "{} is longer than the whole batch may take (`timeout`, {})",
                show_ms(ms),
                show_ms(batch)
            ))),
            _ => Ok(ms),
        }
    }
}

/// An upstream pool this plugin was granted.
struct Pool(String);

impl<'de> Deserialize<'de> for Pool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pool = String::deserialize(d)?;
        if pool.is_empty() {
            return Err(D::Error::custom("name an upstream pool, as in `users`"));
        }
        if !pool_granted(&pool) {
            return Err(D::Error::custom(format!(
                "pool \"{pool}\" is not granted to this plugin: add it to plugins.grants.aggregate.outbound.pools"
            )));
        }
        Ok(Self(pool))
    }
}

/// Whether the gateway lets this plugin call `pool`. Only the gateway can
/// say: in unit tests on the host, every pool is granted but those a test
/// refuses with [`test_grants::refuse`].
fn pool_granted(pool: &str) -> bool {
    #[cfg(target_arch = "wasm32")]
    {
        plugin_sdk::outbound::granted(pool)
    }
    #[cfg(all(not(target_arch = "wasm32"), test))]
    {
        test_grants::granted(pool)
    }
    #[cfg(all(not(target_arch = "wasm32"), not(test)))]
    {
        let _ = pool;
        true
    }
}

#[cfg(all(not(target_arch = "wasm32"), test))]
pub mod test_grants {
    use std::cell::RefCell;

    thread_local! {
        static REFUSED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }

    /// Makes `pool` read as not granted, on this test's thread.
    pub fn refuse(pool: &str) {
        REFUSED.with(|r| r.borrow_mut().push(pool.to_string()));
    }

    pub fn granted(pool: &str) -> bool {
        REFUSED.with(|r| !r.borrow().iter().any(|p| p == pool))
    }
}

/// An HTTP method, as it is sent: upper case by convention, and methods
/// are case-sensitive, so `get` would never match a request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Method(String);

impl<'de> Deserialize<'de> for Method {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let method = String::deserialize(d)?;
        if method.is_empty() || !method.bytes().all(is_token_byte) {
            return Err(D::Error::custom(format!(
                "`{method}` is not an HTTP method, as in `GET`"
            )));
        }
        if method.bytes().any(|b| b.is_ascii_lowercase()) {
            return Err(D::Error::custom(format!(
                "`{method}`: methods are case-sensitive; write `{}`",
                method.to_ascii_uppercase()
            )));
        }
        Ok(Self(method))
    }
}

/// `methods`: at least one, each once.
struct Methods(Vec<String>);

impl<'de> Deserialize<'de> for Methods {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let list: Vec<String> = Vec::<Method>::deserialize(d)?
            .into_iter()
            .map(|m| m.0)
            .collect();
        if list.is_empty() {
            return Err(D::Error::custom(
                "list at least one method, as in `[GET]`, or leave `methods` out",
            ));
        }
        if let Some(twice) = list
            .iter()
            .enumerate()
            .find_map(|(i, m)| list[..i].contains(m).then_some(m))
        {
            return Err(D::Error::custom(format!("`{twice}` is listed twice")));
        }
        Ok(Self(list))
    }
}

/// One `pass_headers` entry, in lower case.
struct HeaderName(String);

impl<'de> Deserialize<'de> for HeaderName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?.to_ascii_lowercase();
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(D::Error::custom(format!("`{name}` is not a header name")));
        }
        if let Some((_, why)) = NEVER_PASSED
            .iter()
            .find(|(never, why)| *never == name && *why != CREDENTIAL)
        {
            return Err(D::Error::custom(format!(
                "`{name}` is never passed on: {why}"
            )));
        }
        Ok(Self(name))
    }
}

/// `pass_headers`: each name once; may be empty (no header is passed).
struct HeaderList(Vec<String>);

impl<'de> Deserialize<'de> for HeaderList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let list: Vec<String> = Vec::<HeaderName>::deserialize(d)?
            .into_iter()
            .map(|h| h.0)
            .collect();
        if let Some(twice) = list
            .iter()
            .enumerate()
            .find_map(|(i, h)| list[..i].contains(h).then_some(h))
        {
            return Err(D::Error::custom(format!("`{twice}` is listed twice")));
        }
        Ok(Self(list))
    }
}

/// A duration in the config, in milliseconds.
struct Duration(u32);

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;

        impl Visitor<'_> for Text {
            type Value = u32;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as `500ms`, `2s` or `1m`")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<u32, E> {
                parse_duration(text).map_err(E::custom)
            }
        }

        d.deserialize_str(Text).map(Self)
    }
}

/// Durations in this plugin's config: `1ms` to `60s`.
const DURATION: DurationRule = DurationRule {
    units: &[("ms", 1), ("s", SECOND_MS as u64), ("m", MINUTE_MS as u64)],
    examples: "`500ms`, `2s` or `1m`",
    max_ms: MAX_TIMEOUT_MS as u64,
    max: "60s",
};

/// Milliseconds in a duration written as a whole number and a unit: `500ms`,
/// `2s`, `1m`. At least 1ms, at most 60s.
pub fn parse_duration(text: &str) -> Result<u32, String> {
    let ms = plugin_sdk::parse_duration(text, &DURATION)?;
    // At most MAX_TIMEOUT_MS, which a u32 holds.
    u32::try_from(ms).map_err(|_| format!("`{text}` is too long: at most 60s"))
}

/// Milliseconds as the config would write them: `2s`, `1m`, `1500ms`.
pub fn show_ms(ms: u32) -> String {
    if ms.is_multiple_of(MINUTE_MS) {
        format!("{}m", ms / MINUTE_MS)
    } else if ms.is_multiple_of(SECOND_MS) {
        format!("{}s", ms / SECOND_MS)
    } else {
        format!("{ms}ms")
    }
}

/// A byte of an RFC 9110 token (method and header names).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(json: &str) -> Result<Config, (String, String)> {
        plugin_sdk::__runtime::parse_config::<Config>(json).map_err(|e| (e.field, e.message))
    }

    fn accepted(config: serde_json::Value) -> Config {
        parse(&config.to_string()).unwrap_or_else(|e| panic!("{config}: {e:?}"))
    }

    fn refused(json: &str) -> (String, String) {
        match parse(json) {
            Ok(config) => panic!("accepted {config:?}"),
            Err(refusal) => refusal,
        }
    }

    fn template(text: &str) -> Template {
        Template::try_from(text.to_string()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn pointer(text: &str) -> Pointer {
        Pointer::try_from(text.to_string()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn durations_are_a_whole_number_and_a_unit() {
        for (text, ms) in [
            ("1ms", 1),
            ("500ms", 500),
            ("2s", 2000),
            ("60s", 60_000),
            ("1m", 60_000),
            ("60000ms", 60_000),
            ("002s", 2000),
        ] {
            assert_eq!(parse_duration(text), Ok(ms), "{text}");
        }
        for (text, why) in [
            ("", "not a duration"),
            ("2", "not a duration"),
            ("2 s", "not a duration"),
            ("1.5s", "not a duration"),
            ("-1s", "not a duration"),
            ("1h", "not a duration"),
            ("1S", "not a duration"),
            ("s", "write a number before the unit"),
            ("0ms", "at least 1ms"),
            ("0m", "at least 1ms"),
            ("61s", "at most 60s"),
            ("2m", "at most 60s"),
            ("60001ms", "at most 60s"),
            ("99999999999999999999ms", "at most 60s"),
            ("4294967296ms", "at most 60s"),
        ] {
            let refused = parse_duration(text).err();
            assert!(
                refused.as_deref().is_some_and(|m| m.contains(why)),
                "{text}: {refused:?}"
            );
        }
        assert_eq!(
            [1, 500, 1500, 2000, 60_000].map(show_ms),
            ["1ms", "500ms", "1500ms", "2s", "1m"]
        );
    }

    #[test]
    fn defaults_fill_in_what_is_left_out() {
        let config = accepted(json!({
            "parts": [{ "name": "profile", "pool": "users", "path": "/users/{id}" }]
        }));
        assert_eq!(
            config,
            Config {
                methods: vec!["GET".into()],
                timeout_ms: 2000,
                pass_headers: PassHeaders::AllButNeverPassed,
                parts: vec![Part {
                    name: "profile".into(),
                    pool: "users".into(),
                    method: "GET".into(),
                    path: template("/users/{id}"),
                    required: true,
                    timeout_ms: 2000,
                    pointer: None,
                }],
            }
        );
    }

    #[test]
    fn every_field_is_read() {
        let config = accepted(json!({
            "methods": ["GET", "HEAD"],
            "timeout": "5s",
            "pass_headers": ["X-User-Id", "authorization"],
            "parts": [
                { "name": "profile", "pool": "users", "path": "/users/{id}", "pointer": "/data",
                  "timeout": "500ms" },
                { "name": "recent-orders", "pool": "orders", "method": "POST",
                  "path": "/orders?limit=5&user={context.consumer}", "required": false },
            ]
        }));
        assert_eq!(config.methods, ["GET", "HEAD"]);
        assert_eq!(config.timeout_ms, 5000);
        assert_eq!(
            config.pass_headers,
            PassHeaders::Only(vec!["x-user-id".into(), "authorization".into()])
        );
        let [profile, orders] = &config.parts[..] else {
            panic!("{config:?}")
        };
        assert_eq!(profile.timeout_ms, 500);
        assert_eq!(profile.pointer, Some(pointer("/data")));
        assert!(profile.required);
        assert_eq!(orders.name, "recent-orders");
        assert_eq!(orders.method, "POST");
        assert_eq!(orders.timeout_ms, 5000, "the batch's");
        assert!(!orders.required);
        assert_eq!(
            orders.path.as_str(),
            "/orders?limit=5&user={context.consumer}"
        );
        // An empty list passes no header at all.
        let none = accepted(json!({
            "pass_headers": [],
            "parts": [{ "name": "a", "pool": "p", "path": "/" }]
        }));
        assert_eq!(none.pass_headers, PassHeaders::Only(Vec::new()));
    }

    #[test]
    fn a_part_may_wait_as_long_as_the_batch_in_either_order() {
        let part = |name: &str, timeout: &str| json!({ "name": name, "pool": "p", "path": "/", "timeout": timeout });
        for (batch, parts) in [
            ("2s", vec![part("a", "2s")]),
            ("1m", vec![part("a", "60s"), part("b", "1ms")]),
        ] {
            // Keys as the gateway sends them (sorted) and batch first too.
            let sorted = json!({ "parts": parts, "timeout": batch }).to_string();
            let batch_first = format!(
                r#"{{"timeout":"{batch}","parts":{}}}"#,
                serde_json::Value::from(parts.clone())
            );
            for text in [sorted, batch_first] {
                assert!(parse(&text).is_ok(), "{text}");
            }
        }
        assert!(parse(&json!({ "parts": [part("a", "2s")] }).to_string()).is_ok());
    }

    #[test]
    fn a_part_waiting_longer_than_the_batch_is_refused_where_it_is_read() {
        let parts = r#"[{"name":"a","pool":"p","path":"/"},{"name":"b","pool":"p","path":"/","timeout":"3s"}]"#;
        let (field, message) = refused(&format!(r#"{{"parts":{parts},"timeout":"1s"}}"#));
        assert_eq!(field, "timeout", "{message}");
        assert!(
            message.contains("1s is shorter than parts[1].timeout (3s)"),
            "{message}"
        );
        let (field, message) = refused(&format!(r#"{{"timeout":"1s","parts":{parts}}}"#));
        assert_eq!(field, "parts[1].timeout", "{message}");
        assert!(
            message.contains("3s is longer than the whole batch may take (`timeout`, 1s)"),
            "{message}"
        );
        let (field, message) = refused(&format!(r#"{{"parts":{parts}}}"#).replace("3s", "2001ms"));
        assert_eq!(field, "", "{message}");
        assert!(
            message.contains("parts[1].timeout: 2001ms is longer than the whole batch may take (`timeout`, 2s when left out)"),
            "{message}"
        );
    }

    #[test]
    fn a_pool_that_is_not_granted_is_refused_at_its_field() {
        test_grants::refuse("billing");
        let (field, message) = refused(
            &json!({ "parts": [
                { "name": "a", "pool": "users", "path": "/" },
                { "name": "b", "pool": "billing", "path": "/" },
            ]})
            .to_string(),
        );
        assert_eq!(field, "parts[1].pool");
        assert_eq!(
            message,
            "invalid config: pool \"billing\" is not granted to this plugin: add it to plugins.grants.aggregate.outbound.pools"
        );
    }

    #[test]
    fn a_refused_config_names_the_field() {
        let one = r#"{"name":"a","pool":"p","path":"/"}"#;
        let with = |fields: &str| {
            format!(r#"{{"parts":[{one},{{"name":"b","pool":"p","path":"/",{fields}}}]}}"#)
        };
        for (json, field, why) in [
            ("{}".to_string(), "", "missing field `parts`"),
            ("[]".into(), "", "invalid type"),
            (r#"{"parts":[]}"#.into(), "parts", "at least one part"),
            (
                format!(
                    r#"{{"parts":[{}]}}"#,
                    (0..17)
                        .map(|i| one.replace(r#""a""#, &format!(r#""p{i}""#)))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                "parts",
                "at most 16 parts, not 17",
            ),
            (r#"{"parts":{}}"#.into(), "parts", "invalid type"),
            (
                format!(r#"{{"parts":[{one}],"part":1}}"#),
                "part",
                "unknown field `part`",
            ),
            (
                format!(r#"{{"parts":[{one}],"methods":[]}}"#),
                "methods",
                "at least one method",
            ),
            (
                format!(r#"{{"parts":[{one}],"methods":["GET","GET"]}}"#),
                "methods",
                "`GET` is listed twice",
            ),
            (
                format!(r#"{{"parts":[{one}],"methods":["GET","get"]}}"#),
                "methods[1]",
                "case-sensitive; write `GET`",
            ),
            (
                format!(r#"{{"parts":[{one}],"methods":["G T"]}}"#),
                "methods[0]",
                "not an HTTP method",
            ),
            (
                format!(r#"{{"parts":[{one}],"methods":"GET"}}"#),
                "methods",
                "invalid type",
            ),
            (
                format!(r#"{{"parts":[{one}],"timeout":"0s"}}"#),
                "timeout",
                "at least 1ms",
            ),
            (
                format!(r#"{{"parts":[{one}],"timeout":"61s"}}"#),
                "timeout",
                "at most 60s",
            ),
            (
                format!(r#"{{"parts":[{one}],"timeout":2}}"#),
                "timeout",
                "expected a duration such as",
            ),
            (
                format!(r#"{{"parts":[{one}],"pass_headers":["x a"]}}"#),
                "pass_headers[0]",
                "not a header name",
            ),
            (
                format!(r#"{{"parts":[{one}],"pass_headers":["x-a","Host"]}}"#),
                "pass_headers[1]",
                "`host` is never passed on: it describes",
            ),
            (
                format!(r#"{{"parts":[{one}],"pass_headers":["connection"]}}"#),
                "pass_headers[0]",
                "hop-by-hop",
            ),
            (
                format!(r#"{{"parts":[{one}],"pass_headers":["accept-encoding"]}}"#),
                "pass_headers[0]",
                "never compressed",
            ),
            (
                format!(r#"{{"parts":[{one}],"pass_headers":["X-Request-Id"]}}"#),
                "pass_headers[0]",
                "the gateway adds it",
            ),
            (
                format!(r#"{{"parts":[{one}],"pass_headers":["x-a","X-A"]}}"#),
                "pass_headers",
                "`x-a` is listed twice",
            ),
            (
                r#"{"parts":[{"pool":"p","path":"/"}]}"#.into(),
                "parts[0]",
                "missing field `name`",
            ),
            (
                r#"{"parts":[{"name":"a","path":"/"}]}"#.into(),
                "parts[0]",
                "missing field `pool`",
            ),
            (
                r#"{"parts":[{"name":"a","pool":"p"}]}"#.into(),
                "parts[0]",
                "missing field `path`",
            ),
            (r#"{"parts":[1]}"#.into(), "parts[0]", "invalid type"),
            (with(r#""url":"/""#), "parts[1].url", "unknown field `url`"),
            (with(r#""name":"c""#), "parts[1]", "duplicate field `name`"),
            (
                r#"{"parts":[{"name":"a b","pool":"p","path":"/"}]}"#.into(),
                "parts[0].name",
                "not a part name",
            ),
            (
                r#"{"parts":[{"name":"","pool":"p","path":"/"}]}"#.into(),
                "parts[0].name",
                "not a part name",
            ),
            (
                r#"{"parts":[{"name":"_failed","pool":"p","path":"/"}]}"#.into(),
                "parts[0].name",
                "starting with `_`",
            ),
            (
                format!(r#"{{"parts":[{one},{one}]}}"#),
                "parts[1].name",
                "`a` is already the name of parts[0]",
            ),
            (
                r#"{"parts":[{"name":"a","pool":"","path":"/"}]}"#.into(),
                "parts[0].pool",
                "name an upstream pool",
            ),
            (
                with(r#""method":"post""#),
                "parts[1].method",
                "write `POST`",
            ),
            (
                with(r#""method":"""#),
                "parts[1].method",
                "not an HTTP method",
            ),
            (
                r#"{"parts":[{"name":"a","pool":"p","path":"users"}]}"#.into(),
                "parts[0].path",
                "must start with `/`",
            ),
            (
                r#"{"parts":[{"name":"a","pool":"p","path":"/u/{id"}]}"#.into(),
                "parts[0].path",
                "never closed",
            ),
            (
                r#"{"parts":[{"name":"a","pool":"p","path":"/u/{x.id}"}]}"#.into(),
                "parts[0].path",
                "is not a placeholder",
            ),
            (
                with(r#""required":"yes""#),
                "parts[1].required",
                "invalid type",
            ),
            (
                with(r#""timeout":"1h""#),
                "parts[1].timeout",
                "not a duration",
            ),
            (
                with(r#""pointer":"data""#),
                "parts[1].pointer",
                "not a JSON pointer",
            ),
            (with(r#""pointer":"/a~2""#), "parts[1].pointer", "`~0`"),
        ] {
            let (at, message) = refused(&json);
            assert_eq!(at, field, "{json}: {message}");
            assert!(message.contains(why), "{json}: {message}");
        }
    }
}
