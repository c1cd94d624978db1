//! Answers as JSON text: checked, and cut down to the sub-document a
//! pointer names, without ever being re-serialised, so the merged answer
//! carries each upstream's numbers, strings and key order exactly as they
//! were sent (a `serde_json::Value` would sort keys and could round long
//! numbers).

use serde::Deserialize;
use serde::de::IgnoredAny;

/// An RFC 6901 JSON pointer (`/data/items/0`), as
/// [`serde_json::Value::pointer`] reads one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Pointer {
    text: String,
    /// The reference tokens, unescaped (`~1` is `/`, `~0` is `~`).
    tokens: Vec<String>,
}

impl TryFrom<String> for Pointer {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!(
                "`{text}` is not a JSON pointer: it starts with `/`, as in `/data`; leave `pointer` out to keep the whole answer"
            ));
        }
        let mut tokens = Vec::new();
        for token in text[1..].split('/') {
            let mut rest = token;
            while let Some(at) = rest.find('~') {
                if !matches!(rest.as_bytes().get(at + 1), Some(b'0' | b'1')) {
                    return Err(format!(
                        "`{text}`: in a JSON pointer `~` is written `~0` and `/` in a name `~1`"
                    ));
                }
                rest = &rest[at + 2..];
            }
            tokens.push(token.replace("~1", "/").replace("~0", "~"));
        }
        Ok(Self { text, tokens })
    }
}

impl Pointer {
    /// The pointer as written in the config.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The sub-document of `doc` (JSON text that [`json_text`] accepted)
    /// that the pointer names, as [`serde_json::Value::pointer`] finds it:
    /// an object member by name (the last one, if a name repeats), an array
    /// element by a decimal index without leading zeros.
    pub fn find<'a>(&self, doc: &'a str) -> Option<&'a str> {
        let mut value = doc.trim();
        for token in &self.tokens {
            value = child(value, token)?;
        }
        Some(value)
    }
}

/// The body as JSON text without surrounding whitespace, if it is one JSON
/// value in UTF-8 and nothing else.
pub fn json_text(body: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(body).ok()?;
    serde_json::from_str::<IgnoredAny>(text).ok()?;
    Some(text.trim())
}

/// The member `token` of object `value`, or its element `token` if it is an
/// array. `value` is valid JSON text starting at its first byte.
fn child<'a>(value: &'a str, token: &str) -> Option<&'a str> {
    let bytes = value.as_bytes();
    match bytes.first()? {
        b'{' => {
            let mut found = None;
            let mut at = skip_space(bytes, 1);
            while bytes.get(at) == Some(&b'"') {
                let key_end = end_of_string(bytes, at)?;
                let key = &value[at..key_end];
                let colon = skip_space(bytes, key_end);
                let start = skip_space(bytes, colon + 1);
                let end = end_of_value(bytes, start)?;
                if key_is(key, token) {
                    found = Some(&value[start..end]);
                }
                at = skip_space(bytes, end);
                if bytes.get(at) != Some(&b',') {
                    break;
                }
                at = skip_space(bytes, at + 1);
            }
            found
        }
        b'[' => {
            let index = array_index(token)?;
            let mut at = skip_space(bytes, 1);
            if bytes.get(at) == Some(&b']') {
                return None;
            }
            for _ in 0..index {
                at = skip_space(bytes, end_of_value(bytes, at)?);
                if bytes.get(at) != Some(&b',') {
                    return None;
                }
                at = skip_space(bytes, at + 1);
            }
            Some(&value[at..end_of_value(bytes, at)?])
        }
        _ => None,
    }
}

/// Whether the JSON string `key` (quotes included) is `token`.
fn key_is(key: &str, token: &str) -> bool {
    let inner = &key[1..key.len() - 1];
    if inner.contains('\\') {
        serde_json::from_str::<String>(key).is_ok_and(|key| key == token)
    } else {
        inner == token
    }
}

/// The index `token` names, read as `serde_json::Value::pointer` does.
fn array_index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
        return None;
    }
    token.parse().ok()
}

fn skip_space(bytes: &[u8], mut at: usize) -> usize {
    while bytes
        .get(at)
        .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        at += 1;
    }
    at
}

/// Where the string starting at `at` (its opening quote) ends, past its
/// closing quote.
fn end_of_string(bytes: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    loop {
        match bytes.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
}

/// Where the value starting at `at` ends.
fn end_of_value(bytes: &[u8], at: usize) -> Option<usize> {
    match bytes.get(at)? {
        b'"' => end_of_string(bytes, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            loop {
                match bytes.get(i)? {
                    b'"' => {
                        i = end_of_string(bytes, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let mut i = at;
            while bytes
                .get(i)
                .is_some_and(|b| !matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
            {
                i += 1;
            }
            Some(i)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn pointer(text: &str) -> Pointer {
        Pointer::try_from(text.to_string()).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn only_one_json_value_in_utf8_is_json() {
        for body in [
            &b"{}"[..],
            b" {\"a\": [1, 2.5e3, -0, true, false, null, \"\\u00e9\\\"\"]}\n",
            b"\"text\"",
            b"12",
            b"null",
            b"[]",
        ] {
            assert!(
                json_text(body).is_some(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        for body in [
            &b""[..],
            b" ",
            b"{",
            b"{\"a\":1,}",
            b"[1 2]",
            b"{} {}",
            b"{}x",
            b"tru",
            b"01",
            b"'a'",
            b"\"\\x\"",
            b"\"a\nb\"",
            b"\xff",
            b"\"\xff\"",
            b"<html>",
            b"NaN",
        ] {
            assert!(
                json_text(body).is_none(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(json_text(b"\n [1] \r\n"), Some("[1]"));
    }

    #[test]
    fn pointers_are_read_as_rfc_6901_writes_them() {
        assert_eq!(pointer("/data").tokens, ["data"]);
        assert_eq!(pointer("/a~1b/c~0d/~01").tokens, ["a/b", "c~d", "~1"]);
        assert_eq!(pointer("/").tokens, [""]);
        assert_eq!(pointer("/a//b").tokens, ["a", "", "b"]);
        for (text, why) in [
            ("", "starts with `/`"),
            ("data", "starts with `/`"),
            ("#/data", "starts with `/`"),
            ("/a~2", "`~0`"),
            ("/a~", "`~0`"),
        ] {
            let refused = Pointer::try_from(text.to_string());
            assert!(
                refused.as_ref().is_err_and(|m| m.contains(why)),
                "{text}: {refused:?}"
            );
        }
    }

    #[test]
    fn a_pointer_finds_what_serde_json_finds_and_keeps_the_text() {
        let doc = r#" {
            "data": {"items": [ {"id": 1}, {"id": 2, "tags": ["a", "b,]}"]} , [] ],
                     "n": 12345678901234567890123, "f": 0.30000000000000004,
                     "z": 1, "a": 2 },
            "a/b": "slash", "c~d": "tilde", "": "empty", "e\u0301": "escaped",
            "dup": 1, "dup": 2, "s": "x\"}y", "nested": [[1, [2, 3]], {"k": {}}],
            "t": true, "nul": null
        } "#;
        let value: Value = serde_json::from_str(doc).unwrap_or_default();
        for text in [
            "/data",
            "/data/items",
            "/data/items/0",
            "/data/items/1/tags/1",
            "/data/items/2",
            "/data/items/3",
            "/data/items/01",
            "/data/items/+1",
            "/data/items/-",
            "/data/items/1/id",
            "/data/n",
            "/data/f",
            "/data/missing",
            "/a~1b",
            "/c~0d",
            "/",
            "/e\u{301}",
            "/dup",
            "/s",
            "/nested/0/1/1",
            "/nested/1/k",
            "/nested/1/k/x",
            "/t",
            "/t/x",
            "/nul",
            "/nul/0",
            "/data/items/0/id/x",
        ] {
            let found = pointer(text).find(doc);
            let parsed = found.map(|t| serde_json::from_str::<Value>(t).unwrap_or_default());
            assert_eq!(parsed.as_ref(), value.pointer(text), "{text}: {found:?}");
        }
        assert_eq!(
            pointer("/data/n").find(doc),
            Some("12345678901234567890123")
        );
        assert_eq!(pointer("/data/f").find(doc), Some("0.30000000000000004"));
        assert_eq!(
            pointer("/data/items/1").find(doc),
            Some(r#"{"id": 2, "tags": ["a", "b,]}"]}"#)
        );
        assert_eq!(
            pointer("/dup").find(doc),
            Some("2"),
            "the last one, as serde_json"
        );
    }

    #[test]
    fn a_pointer_into_a_scalar_or_empty_container_finds_nothing() {
        for doc in ["1", "\"s\"", "null", "[]", "{}", "[ ]", "{ }"] {
            assert_eq!(pointer("/0").find(doc), None, "{doc}");
        }
        assert_eq!(pointer("/0").find("[ 7 ]"), Some("7"));
        assert_eq!(pointer("/1").find("[7,8]"), Some("8"));
        assert_eq!(pointer("/2").find("[7,8]"), None);
    }
}
