//! A part's `path`: an origin-form target with placeholders, checked when
//! the config is read and filled for each request.
//!
//! `{NAME}` is the route's path parameter `NAME`, `{query.NAME}` the
//! request's query parameter `NAME` (its first value) and `{context.NAME}`
//! the value an earlier plugin set for `NAME` (`consumer`, from auth). Every
//! value is percent-decoded where it came from (a path parameter or query
//! value as sent; a context value is taken as it is) and percent-encoded for
//! where it lands: every byte but the unreserved `A-Z a-z 0-9 - . _ ~`, so a
//! value is always one path segment or one query value, never a `/`, `?`,
//! `&` or `#`.

use std::fmt;

use plugin_sdk::Request;
use serde::Deserialize;

/// A part's `path`, as written and as pieces to fill.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Template {
    text: String,
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Value(Placeholder, Place),
}

/// Where a value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placeholder {
    /// `{NAME}`: a `{NAME}` capture of the route's path pattern.
    Param(String),
    /// `{query.NAME}`: the first value of the request's query parameter.
    Query(String),
    /// `{context.NAME}`: a per-request context value.
    Context(String),
}

/// Where a value lands, which decides nothing but the error messages today
/// (both are encoded alike) and the dot-segment check (paths only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Path,
    Query,
}

impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Param(name) => write!(f, "{{{name}}}"),
            Self::Query(name) => write!(f, "{{query.{name}}}"),
            Self::Context(name) => write!(f, "{{context.{name}}}"),
        }
    }
}

impl TryFrom<String> for Template {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let pieces = parse(&text)?;
        Ok(Self { text, pieces })
    }
}

fn parse(text: &str) -> Result<Vec<Piece>, String> {
    if !text.starts_with('/') {
        return Err(format!(
            "`{text}` must start with `/`, as in `/users/{{id}}`"
        ));
    }
    let mut pieces = Vec::new();
    let mut place = Place::Path;
    let mut rest = text;
    while !rest.is_empty() {
        let literal_end = rest.find(['{', '}']).unwrap_or(rest.len());
        let (literal, after) = rest.split_at(literal_end);
        if !literal.is_empty() {
            check_literal(text, literal)?;
            if place == Place::Path && literal.contains('?') {
                place = Place::Query;
            }
            pieces.push(Piece::Literal(literal.to_string()));
        }
        rest = after;
        let Some(inside) = rest.strip_prefix('{') else {
            if rest.starts_with('}') {
                return Err(format!("a `}}` in `{text}` closes no `{{`"));
            }
            break;
        };
        let Some(close) = inside
            .find(['{', '}'])
            .filter(|&at| inside[at..].starts_with('}'))
        else {
            return Err(format!("a `{{` in `{text}` is never closed"));
        };
        let placeholder = placeholder(&inside[..close]).ok_or_else(|| {
            format!(
                "`{{{}}}` in `{text}` is not a placeholder: write `{{NAME}}` for a route parameter, `{{query.NAME}}` or `{{context.NAME}}`",
                &inside[..close]
            )
        })?;
        pieces.push(Piece::Value(placeholder, place));
        rest = &inside[close + 1..];
    }
    if let Some(dot) = literal_dot_segment(&pieces) {
        return Err(format!(
            "`{text}` has a `{dot}` segment: write the path it stands for"
        ));
    }
    Ok(pieces)
}

fn placeholder(inside: &str) -> Option<Placeholder> {
    let named = |name: &str| {
        !name.is_empty()
            && name
                .chars()
                .all(|c| !c.is_control() && !c.is_whitespace() && c != '{' && c != '}')
    };
    if let Some(name) = inside.strip_prefix("query.") {
        return named(name).then(|| Placeholder::Query(name.to_string()));
    }
    if let Some(name) = inside.strip_prefix("context.") {
        return named(name).then(|| Placeholder::Context(name.to_string()));
    }
    // The gateway's own rule for `{param}` names in route paths.
    let param = !inside.is_empty()
        && inside
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    param.then(|| Placeholder::Param(inside.to_string()))
}

/// Literal text may hold what a request target may hold as it is, and
/// well-formed percent-escapes.
fn check_literal(text: &str, literal: &str) -> Result<(), String> {
    let bytes = literal.as_bytes();
    for (at, c) in literal.char_indices() {
        let fits = c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/?%".contains(c);
        if !fits {
            let why = match c {
                '#' => "a fragment (`#`) is never sent upstream".to_string(),
                ' ' => "write a space as `%20`".to_string(),
                _ => format!("percent-encode it (`{}`)", encoded(c)),
            };
            return Err(format!(
                "`{c}` cannot be written in a path (`{text}`): {why}"
            ));
        }
        if c == '%'
            && !(bytes.get(at + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(at + 2).is_some_and(u8::is_ascii_hexdigit))
        {
            return Err(format!(
                "a `%` in `{text}` is not a percent-escape: write `%25` for a `%`"
            ));
        }
    }
    Ok(())
}

fn encoded(c: char) -> String {
    let mut buf = [0; 4];
    let mut out = String::new();
    for b in c.encode_utf8(&mut buf).bytes() {
        push_escape(&mut out, b);
    }
    out
}

/// A `.` or `..` segment made of literal text only.
fn literal_dot_segment(pieces: &[Piece]) -> Option<&'static str> {
    // The path as written, with each value as a byte no segment can be alone.
    let mut path = String::new();
    for piece in pieces {
        match piece {
            Piece::Literal(text) => match text.split_once('?') {
                Some((before, _)) => {
                    path.push_str(before);
                    break;
                }
                None => path.push_str(text),
            },
            Piece::Value(_, Place::Path) => path.push('x'),
            Piece::Value(_, Place::Query) => break,
        }
    }
    path.split('/').find_map(dot_segment)
}

/// `.` or `..`, also written with `%2E`.
fn dot_segment(segment: &str) -> Option<&'static str> {
    match percent_decode(segment.as_bytes(), false).as_slice() {
        b"." => Some("."),
        b".." => Some(".."),
        _ => None,
    }
}

impl Template {
    /// The path as written in the config.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The filled path and query, or why it cannot be: `no value for
    /// {query.limit}` when a value is missing or empty, or a `.` or `..`
    /// value in the path (a dot segment).
    pub fn fill(
        &self,
        mut value_of: impl FnMut(&Placeholder) -> Option<Vec<u8>>,
    ) -> Result<String, String> {
        let mut out = String::with_capacity(self.text.len() + 32);
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Value(placeholder, place) => {
                    let value = value_of(placeholder)
                        .filter(|v| !v.is_empty())
                        .ok_or_else(|| format!("no value for {placeholder}"))?;
                    if *place == Place::Path && (value == b"." || value == b"..") {
                        return Err(format!(
                            "the value of {placeholder} is `{}`, which cannot be a path segment",
                            String::from_utf8_lossy(&value)
                        ));
                    }
                    // Encoded, a slash or backslash would still be one to an
                    // upstream that decodes `%2F` before routing (the edge
                    // refuses them in client paths for the same reason).
                    if *place == Place::Path
                        && value
                            .iter()
                            .any(|&b| b == b'/' || b == b'\\' || b.is_ascii_control())
                    {
                        return Err(format!(
                            "the value of {placeholder} holds a slash, backslash or control character, which a path segment may not"
                        ));
                    }
                    encode_into(&mut out, &value);
                }
            }
        }
        // No other value makes a dot segment: a segment of values and
        // literal text is one only if it is all dots, and literal-only dot
        // segments are refused in the config.
        Ok(out)
    }
}

/// The value a placeholder stands for in `request`, decoded: `query` is the
/// request's query (without `?`), read once per request.
pub fn value_of(request: &Request, query: &str, placeholder: &Placeholder) -> Option<Vec<u8>> {
    match placeholder {
        // The gateway hands captures over as they are in the (normalised)
        // path: still percent-encoded.
        Placeholder::Param(name) => request
            .param(name)
            .map(|raw| percent_decode(raw.as_bytes(), false)),
        Placeholder::Query(name) => query_value(query, name),
        Placeholder::Context(name) => request.context().get(name).map(String::into_bytes),
    }
}

/// The first value of query parameter `name`, decoded as HTML forms and
/// most servers do (`%XX` and `+` for a space); `name` is compared with
/// each decoded parameter name. A parameter without `=` has an empty value.
pub fn query_value(query: &str, name: &str) -> Option<Vec<u8>> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(key, _)| percent_decode(key.as_bytes(), true) == name.as_bytes())
        .map(|(_, value)| percent_decode(value.as_bytes(), true))
}

/// `%XX` decoded (a `%` not followed by two hex digits is kept as it is),
/// and `+` as a space when `plus_is_space`.
pub fn percent_decode(text: &[u8], plus_is_space: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        let escaped = (b == b'%')
            .then(|| Some((hex(*text.get(i + 1)?)?, hex(*text.get(i + 2)?)?)))
            .flatten();
        match escaped {
            Some((high, low)) => {
                out.push(high << 4 | low);
                i += 3;
            }
            None => {
                out.push(if plus_is_space && b == b'+' { b' ' } else { b });
                i += 1;
            }
        }
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Appends `value` with every byte but the unreserved ones percent-encoded.
fn encode_into(out: &mut String, value: &[u8]) {
    for &b in value {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            push_escape(out, b);
        }
    }
}

fn push_escape(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0xf)]));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(text: &str) -> Template {
        Template::try_from(text.to_string()).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn refused(text: &str) -> String {
        match Template::try_from(text.to_string()) {
            Ok(t) => panic!("accepted {t:?}"),
            Err(why) => why,
        }
    }

    /// Fills `text` from fixed values: `{NAME}` from `values` by its
    /// display form.
    fn filled(text: &str, values: &[(&str, &str)]) -> Result<String, String> {
        template(text).fill(|p| {
            let key = p.to_string();
            values
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.as_bytes().to_vec())
        })
    }

    #[test]
    fn placeholders_of_each_kind_are_read() {
        let t = template("/users/{id}/orders?user={context.consumer}&limit={query.limit}&x=1");
        assert_eq!(
            t.pieces,
            [
                Piece::Literal("/users/".into()),
                Piece::Value(Placeholder::Param("id".into()), Place::Path),
                Piece::Literal("/orders?user=".into()),
                Piece::Value(Placeholder::Context("consumer".into()), Place::Query),
                Piece::Literal("&limit=".into()),
                Piece::Value(Placeholder::Query("limit".into()), Place::Query),
                Piece::Literal("&x=1".into()),
            ]
        );
        assert_eq!(
            t.as_str(),
            "/users/{id}/orders?user={context.consumer}&limit={query.limit}&x=1"
        );
        assert_eq!(
            template("/a/{x}{y}.json").pieces.len(),
            4,
            "two values may touch"
        );
        assert_eq!(template("/").pieces, [Piece::Literal("/".into())]);
        assert_eq!(
            template("/q?{query.page[size]}").pieces[1],
            Piece::Value(Placeholder::Query("page[size]".into()), Place::Query)
        );
    }

    #[test]
    fn templates_that_cannot_be_filled_are_refused_with_the_reason() {
        for (text, why) in [
            ("", "must start with `/`"),
            ("users/{id}", "must start with `/`"),
            ("{id}", "must start with `/`"),
            ("/users/{id", "never closed"),
            ("/users/{", "never closed"),
            ("/users/{a{b}}", "never closed"),
            ("/users/id}", "closes no `{`"),
            ("/users/{id}}", "closes no `{`"),
            ("/users/{}", "`{}` in `/users/{}` is not a placeholder"),
            ("/users/{user.id}", "`{user.id}` in"),
            ("/users/{user-id}", "is not a placeholder"),
            ("/users/{query.}", "is not a placeholder"),
            ("/users/{context.}", "is not a placeholder"),
            ("/users/{query.a b}", "is not a placeholder"),
            ("/users/{ id }", "is not a placeholder"),
            ("/users/{Query.id}", "is not a placeholder"),
            ("/a b", "write a space as `%20`"),
            ("/a#b", "fragment"),
            ("/é", "percent-encode it (`%C3%A9`)"),
            ("/a\"b", "percent-encode it (`%22`)"),
            ("/a%2", "not a percent-escape"),
            ("/a%zz", "not a percent-escape"),
            ("/a/../b", "has a `..` segment"),
            ("/a/./b", "has a `.` segment"),
            ("/a/%2e%2E", "has a `..` segment"),
            ("/a/..", "has a `..` segment"),
        ] {
            let message = refused(text);
            assert!(message.contains(why), "{text}: {message}");
        }
        // Dots in the query, or next to a value, are not segments.
        template("/a?x=..");
        template("/a/..{x}");
        template("/a/...");
    }

    #[test]
    fn values_are_encoded_for_where_they_land() {
        let values = [
            ("{id}", "a b?d#e"),
            ("{query.q}", "x&y=z+1%/\\"),
            ("{context.consumer}", "ünï"),
        ];
        assert_eq!(
            filled("/users/{id}/x?q={query.q}&c={context.consumer}", &values),
            Ok("/users/a%20b%3Fd%23e/x?q=x%26y%3Dz%2B1%25%2F%5C&c=%C3%BCn%C3%AF".into())
        );
        // In a path, a slash or backslash stays out even encoded.
        for value in ["a/b", "a\\b", "a\u{0}b"] {
            let refused = filled("/users/{id}", &[("{id}", value)]);
            assert!(refused.is_err_and(|why| why.contains("slash")), "{value}");
        }
        assert_eq!(
            filled("/v/{id}", &[("{id}", "Az09-._~")]),
            Ok("/v/Az09-._~".into())
        );
        assert_eq!(
            filled("/orders?limit=5", &[]),
            Ok("/orders?limit=5".into()),
            "a template without values is sent as written"
        );
    }

    #[test]
    fn a_missing_or_empty_value_fails_the_part() {
        assert_eq!(
            filled("/orders?limit={query.limit}", &[]),
            Err("no value for {query.limit}".into())
        );
        assert_eq!(
            filled("/users/{id}", &[("{id}", "")]),
            Err("no value for {id}".into())
        );
        assert_eq!(
            filled("/a/{context.consumer}", &[]),
            Err("no value for {context.consumer}".into())
        );
    }

    #[test]
    fn a_value_never_makes_a_dot_segment() {
        for value in [".", ".."] {
            let refused = filled("/users/{query.id}/x", &[("{query.id}", value)]);
            assert!(
                refused
                    .as_ref()
                    .is_err_and(|why| why.contains("cannot be a path segment")),
                "{value}: {refused:?}"
            );
        }
        assert!(filled("/a/.{x}", &[("{x}", ".")]).is_err());
        assert!(filled("/a/%2E{x}", &[("{x}", ".")]).is_err());
        assert_eq!(filled("/a/{x}", &[("{x}", "...")]), Ok("/a/...".into()));
        assert_eq!(
            filled("/a?q={x}", &[("{x}", "..")]),
            Ok("/a?q=..".into()),
            "a query value may be anything"
        );
    }

    #[test]
    fn values_come_decoded_from_the_request() {
        let req = Request::new(
            "GET",
            "/x?limit=5&q=a+b%20c%2B&flag&q=second&e%78=1&bad=%zz",
        )
        .with_param("id", "a%20b%2Fc");
        req.context().set("consumer", "alice smith");
        let query = req.query();
        let value = |p: Placeholder| {
            value_of(&req, &query, &p).map(|v| String::from_utf8_lossy(&v).into_owned())
        };
        assert_eq!(
            value(Placeholder::Param("id".into())).as_deref(),
            Some("a b/c")
        );
        assert_eq!(value(Placeholder::Param("other".into())), None);
        assert_eq!(
            value(Placeholder::Query("limit".into())).as_deref(),
            Some("5")
        );
        assert_eq!(
            value(Placeholder::Query("q".into())).as_deref(),
            Some("a b c+"),
            "the first value, with + as a space"
        );
        assert_eq!(
            value(Placeholder::Query("flag".into())).as_deref(),
            Some("")
        );
        assert_eq!(value(Placeholder::Query("ex".into())).as_deref(), Some("1"));
        assert_eq!(
            value(Placeholder::Query("bad".into())).as_deref(),
            Some("%zz")
        );
        assert_eq!(value(Placeholder::Query("none".into())), None);
        assert_eq!(
            value(Placeholder::Context("consumer".into())).as_deref(),
            Some("alice smith")
        );
        assert_eq!(value(Placeholder::Context("none".into())), None);

        let path = template("/u/{id}?q={query.q}&by={context.consumer}")
            .fill(|p| value_of(&req, &query, p));
        assert_eq!(
            path,
            Err("the value of {id} holds a slash, backslash or control character, which a path segment may not".into())
        );
    }

    #[test]
    fn decoding_keeps_what_is_not_an_escape() {
        assert_eq!(percent_decode(b"%41%4a%4A+%", false), b"AJJ+%");
        assert_eq!(percent_decode(b"%4", true), b"%4");
        assert_eq!(percent_decode(b"a+b", true), b"a b");
        assert_eq!(percent_decode(b"%FF%00", false), [0xff, 0]);
    }
}
