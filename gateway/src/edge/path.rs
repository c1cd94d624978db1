//! One path for everyone: the request path normalised once, before routing,
//! so routes, `{param}` captures, rewrites, plugins and the upstream all see
//! the same one. `/x/../admin` is `/admin`, with `/admin`'s route and
//! plugins; a `{param}` can never be `..` nor hold a `/`.
//!
//! - unreserved percent-escapes (`A-Z a-z 0-9 - . _ ~`) are decoded, others
//!   kept as sent (with upper-case hex);
//! - `.` and `..` segments are resolved; a `..` above the root is refused;
//! - runs of `/` become one;
//! - `%2F` and `%5C` (an encoded slash or backslash) are refused by default
//!   (`server.escaped_slashes: reject`), or kept encoded as data (`keep`);
//!   a raw `\` and `%00` are always refused;
//! - `;` parameters are data like any other byte, except on a dot segment:
//!   `..;x` is refused, since Java servers resolve it as `..`.

use std::borrow::Cow;

/// What to do with `%2F` and `%5C` in a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashes {
    /// `400`: a backend that decodes them would see other segments.
    #[default]
    Reject,
    /// Passed on encoded, as part of one segment.
    Keep,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path must start with /")]
    NotAbsolute,
    #[error("the path has an invalid percent-escape")]
    BadEscape,
    #[error("the path has an encoded slash or backslash (%2F, %5C)")]
    EscapedSlash,
    #[error("the path has a backslash or a NUL byte")]
    Forbidden,
    #[error("the path climbs above the root with ..")]
    AboveRoot,
    #[error("the path has a dot segment with parameters (..;)")]
    DotParameters,
}

/// The normalised form of `path` (borrowed when already normal, which is
/// the common case and costs one scan).
pub fn normalize(path: &str, escaped_slashes: EscapedSlashes) -> Result<Cow<'_, str>, PathError> {
    if path == "*" {
        return Ok(Cow::Borrowed(path));
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if has_dot_parameters(path.as_bytes()) {
        return Err(PathError::DotParameters);
    }
    if is_normal(path.as_bytes()) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path.as_bytes(), escaped_slashes)?;
    if has_dot_parameters(&decoded) {
        return Err(PathError::DotParameters);
    }
    resolve_segments(&decoded).map(Cow::Owned)
}

/// A `.;…` or `..;…` segment (checked again after decoding, for `%2e%2e;`).
fn has_dot_parameters(bytes: &[u8]) -> bool {
    bytes
        .split(|&b| b == b'/')
        .any(|segment| segment.starts_with(b".;") || segment.starts_with(b"..;"))
}

/// True when nothing needs doing: no escapes, no backslash or NUL, no
/// empty or dot segment.
fn is_normal(bytes: &[u8]) -> bool {
    if bytes.iter().any(|&b| matches!(b, b'%' | b'\\' | 0)) {
        return false;
    }
    let mut segments = bytes.split(|&b| b == b'/').skip(1).peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            b"." | b".." => return false,
            b"" if !last => return false,
            _ => {}
        }
    }
    true
}

fn decode_unreserved(bytes: &[u8], escaped_slashes: EscapedSlashes) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' | 0 => return Err(PathError::Forbidden),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
                let value = hex_value(hex[0])
                    .zip(hex_value(hex[1]))
                    .map(|(hi, lo)| hi * 16 + lo)
                    .ok_or(PathError::BadEscape)?;
                match value {
                    0 => return Err(PathError::Forbidden),
                    b'/' | b'\\' if escaped_slashes == EscapedSlashes::Reject => {
                        return Err(PathError::EscapedSlash);
                    }
                    v if is_unreserved(v) => out.push(v),
                    v => {
                        out.push(b'%');
                        out.push(HEX[usize::from(v >> 4)]);
                        out.push(HEX[usize::from(v & 15)]);
                    }
                }
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// RFC 3986 §5.2.4 on whole segments, with empty segments dropped.
fn resolve_segments(path: &[u8]) -> Result<String, PathError> {
    let mut segments: Vec<&[u8]> = Vec::new();
    let mut pieces = path.split(|&b| b == b'/').skip(1).peekable();
    let mut trailing_slash = false;
    while let Some(segment) = pieces.next() {
        let last = pieces.peek().is_none();
        match segment {
            b"" => trailing_slash = last,
            b"." => trailing_slash = true,
            b".." => {
                segments.pop().ok_or(PathError::AboveRoot)?;
                trailing_slash = true;
            }
            segment => {
                segments.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for segment in &segments {
        out.push(b'/');
        out.extend_from_slice(segment);
    }
    if trailing_slash || segments.is_empty() {
        out.push(b'/');
    }
    // Only ASCII went in unescaped from a valid `&str`, and escapes stay escaped.
    String::from_utf8(out).map_err(|_| PathError::BadEscape)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(path: &str) -> Result<String, PathError> {
        normalize(path, EscapedSlashes::Reject).map(Cow::into_owned)
    }

    #[test]
    fn normal_paths_are_borrowed_unchanged() {
        for path in [
            "/",
            "/a",
            "/a/b/",
            "/a.b/c..d/.e",
            "/a;v=1/b",
            "/~user/x-y_z",
            "*",
        ] {
            assert!(
                matches!(normalize(path, EscapedSlashes::Reject), Ok(Cow::Borrowed(p)) if p == path),
                "{path}"
            );
        }
    }

    #[test]
    fn dot_segments_and_slash_runs_resolve() {
        assert_eq!(norm("/x/../admin").as_deref(), Ok("/admin"));
        assert_eq!(norm("/a/./b").as_deref(), Ok("/a/b"));
        assert_eq!(norm("//a///b//").as_deref(), Ok("/a/b/"));
        assert_eq!(norm("/a/b/..").as_deref(), Ok("/a/"));
        assert_eq!(norm("/a/.").as_deref(), Ok("/a/"));
        assert_eq!(norm("/..").as_deref(), Err(&PathError::AboveRoot));
        assert_eq!(norm("/a/../..").as_deref(), Err(&PathError::AboveRoot));
        assert_eq!(norm("/.").as_deref(), Ok("/"));
    }

    #[test]
    fn unreserved_escapes_decode_before_dots_resolve() {
        assert_eq!(norm("/%61dmin").as_deref(), Ok("/admin"));
        assert_eq!(norm("/x/%2e%2E/admin").as_deref(), Ok("/admin"));
        assert_eq!(norm("/a%20b/%c3%a9").as_deref(), Ok("/a%20b/%C3%A9"));
        assert_eq!(norm("/a%zz").as_deref(), Err(&PathError::BadEscape));
        assert_eq!(norm("/a%2").as_deref(), Err(&PathError::BadEscape));
    }

    #[test]
    fn encoded_slashes_backslashes_and_nul_follow_the_policy() {
        assert_eq!(norm("/a%2Fb").as_deref(), Err(&PathError::EscapedSlash));
        assert_eq!(norm("/a%5cb").as_deref(), Err(&PathError::EscapedSlash));
        assert_eq!(norm("/a\\b").as_deref(), Err(&PathError::Forbidden));
        assert_eq!(norm("/a%00").as_deref(), Err(&PathError::Forbidden));
        let keep = |p| normalize(p, EscapedSlashes::Keep).map(Cow::into_owned);
        assert_eq!(keep("/a%2fb/../c").as_deref(), Ok("/c"));
        assert_eq!(keep("/a/%2f/").as_deref(), Ok("/a/%2F/"));
    }

    #[test]
    fn dot_segments_with_parameters_are_refused() {
        assert_eq!(norm("/public/..;/admin"), Err(PathError::DotParameters));
        assert_eq!(
            norm("/public/%2e%2e;x/admin"),
            Err(PathError::DotParameters)
        );
        assert_eq!(norm("/a/.;/b"), Err(PathError::DotParameters));
        assert_eq!(norm("/a;v=1/..b;c").as_deref(), Ok("/a;v=1/..b;c"));
    }

    #[test]
    fn must_be_origin_form() {
        assert_eq!(norm("a/b"), Err(PathError::NotAbsolute));
        assert_eq!(norm(""), Err(PathError::NotAbsolute));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Paths made mostly of the characters that matter here.
        fn tricky_path() -> impl Strategy<Value = String> {
            proptest::collection::vec(
                prop_oneof![
                    Just("/"),
                    Just("."),
                    Just(".."),
                    Just("%"),
                    Just("%2e"),
                    Just("%2E"),
                    Just("%2f"),
                    Just("%5C"),
                    Just("%00"),
                    Just("%41"),
                    Just("%zz"),
                    Just(";"),
                    Just("\\"),
                    Just("a"),
                    Just("é"),
                    Just("~"),
                    Just("%c3%a9"),
                ],
                0..24,
            )
            .prop_map(|parts| format!("/{}", parts.concat()))
        }

        fn check_normal(path: &str, escaped_slashes: EscapedSlashes) {
            assert!(path.starts_with('/'), "{path}");
            for bad in ["//", "/./", "/../", "\\"] {
                assert!(!path.contains(bad), "{path}");
            }
            assert!(!path.ends_with("/.") && !path.ends_with("/.."), "{path}");
            let bytes = path.as_bytes();
            for (i, &b) in bytes.iter().enumerate() {
                if b == b'%' {
                    let hex = &bytes[i + 1..i + 3];
                    assert!(
                        hex.iter()
                            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()),
                        "{path}"
                    );
                    let value = u8::from_str_radix(std::str::from_utf8(hex).unwrap_or("zz"), 16);
                    let value = value.unwrap_or(0);
                    assert!(!is_unreserved(value), "decodable escape left in {path}");
                    if escaped_slashes == EscapedSlashes::Reject {
                        assert!(value != b'/' && value != b'\\', "{path}");
                    }
                }
            }
            // Normal means normalising again changes nothing.
            assert_eq!(normalize(path, escaped_slashes), Ok(Cow::Borrowed(path)));
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn any_path_is_refused_or_comes_out_normal(path in tricky_path()) {
                for policy in [EscapedSlashes::Reject, EscapedSlashes::Keep] {
                    if let Ok(normal) = normalize(&path, policy) {
                        check_normal(&normal, policy);
                    }
                }
            }

            #[test]
            fn arbitrary_text_never_panics(path in "\\PC*") {
                let _ = normalize(&path, EscapedSlashes::Reject);
                let _ = normalize(&format!("/{path}"), EscapedSlashes::Keep);
            }
        }
    }
}
