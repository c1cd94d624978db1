//! Finding a credential in a request: a header (`Authorization: Bearer`),
//! a cookie or a query parameter; and removing it before the request goes on.

use plugin_sdk::Request;

use crate::config::Source;

/// A credential and where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub value: String,
    pub source: Source,
}

/// The first credential among `sources`. One sent more than once (a header
/// in any spelling with `_` for `-`, as CGI-style upstreams read them) is an
/// error: the upstream might read another copy than the gateway checked.
pub fn find(req: &Request, sources: &[Source]) -> Result<Option<Found>, String> {
    for source in sources {
        let value = match source {
            Source::Header(name) => {
                let values: Vec<String> = spellings(name)
                    .iter()
                    .flat_map(|spelling| req.headers().get_all(spelling))
                    .collect();
                if values.len() > 1 {
                    return Err(format!("more than one {name} header"));
                }
                let Some(value) = values.into_iter().next() else {
                    continue;
                };
                if name == "authorization" {
                    match bearer(&value) {
                        Some(token) => token.to_string(),
                        // Another scheme (Basic, say) is not ours.
                        None => continue,
                    }
                } else {
                    value.trim().to_string()
                }
            }
            Source::Cookie(name) => {
                match single(
                    cookies(&req.headers().get_all("cookie"), name),
                    "cookie",
                    name,
                )? {
                    Some(value) => value,
                    None => continue,
                }
            }
            Source::Query(name) => {
                match single(query_values(&req.query(), name), "query parameter", name)? {
                    Some(value) => value,
                    None => continue,
                }
            }
        };
        if value.is_empty() {
            continue;
        }
        return Ok(Some(Found {
            value,
            source: source.clone(),
        }));
    }
    Ok(None)
}

/// Header `name` and its spellings with `_` for some of its `-` (at most 3 of
/// them are varied; longer names get the all-`_` spelling too).
pub fn spellings(name: &str) -> Vec<String> {
    let dashes: Vec<usize> = name.match_indices('-').map(|(i, _)| i).collect();
    let varied = dashes.len().min(3);
    let mut out = Vec::with_capacity(1 << varied);
    for mask in 0..(1u32 << varied) {
        let mut spelling = name.as_bytes().to_vec();
        for (bit, at) in dashes.iter().take(varied).enumerate() {
            if mask & (1 << bit) != 0 {
                spelling[*at] = b'_';
            }
        }
        out.push(String::from_utf8_lossy(&spelling).into_owned());
    }
    if dashes.len() > varied {
        out.push(name.replace('-', "_"));
    }
    out
}

/// The token of `Bearer <token>` (the scheme in any case).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The one value in `values`; two are refused, since the upstream might
/// read the other one.
fn single(values: Vec<String>, what: &str, name: &str) -> Result<Option<String>, String> {
    if values.len() > 1 {
        return Err(format!("more than one {name} {what}"));
    }
    Ok(values.into_iter().next())
}

/// Every value of cookie `name` among `Cookie` header lines.
fn cookies(lines: &[String], name: &str) -> Vec<String> {
    lines
        .iter()
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(n, _)| *n == name)
        .map(|(_, value)| value.trim_matches('"').to_string())
        .collect()
}

/// Every value of query parameter `name`, names and values decoded as an
/// upstream would (`access%5Ftoken` is `access_token`).
fn query_values(query: &str, name: &str) -> Vec<String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(n) == name).then(|| decode(v))
        })
        .collect()
}

/// Form decoding: `%XX` escapes and `+` for a space; a bad escape stays as it is.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Removes the credential from the request, so the upstream never sees it.
/// A cookie stays: other cookies share its header.
pub fn remove(req: &mut Request, found: &Found) {
    match &found.source {
        Source::Header(name) => {
            for spelling in spellings(name) {
                req.headers_mut().remove(&spelling);
            }
        }
        Source::Query(name) => {
            let query = req.query();
            let kept: Vec<&str> = query
                .split('&')
                .filter(|pair| {
                    let n = pair.split_once('=').map_or(*pair, |(n, _)| n);
                    decode(n) != *name
                })
                .collect();
            req.set_query(&kept.join("&"));
        }
        Source::Cookie(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources() -> Vec<Source> {
        vec![
            Source::Header("authorization".into()),
            Source::Cookie("session".into()),
            Source::Query("access_token".into()),
        ]
    }

    #[test]
    fn the_first_source_holding_a_credential_wins() {
        let req = Request::new("GET", "/").with_header("authorization", "bearer abc");
        assert_eq!(
            find(&req, &sources()).ok().flatten().map(|f| f.value),
            Some("abc".into())
        );
        let req = Request::new("GET", "/")
            .with_header("authorization", "Basic dTpw")
            .with_header("cookie", "a=1; session=xyz");
        let found = find(&req, &sources()).ok().flatten();
        assert_eq!(
            found.map(|f| (f.value, f.source)),
            Some(("xyz".into(), Source::Cookie("session".into())))
        );
        let mut req = Request::new("GET", "/");
        req.set_query("x=1&access_token=t0k");
        assert_eq!(
            find(&req, &sources()).ok().flatten().map(|f| f.value),
            Some("t0k".into())
        );
        assert_eq!(find(&Request::new("GET", "/"), &sources()), Ok(None));
    }

    #[test]
    fn query_names_are_decoded_and_every_copy_removed() {
        let mut req = Request::new("GET", "/");
        req.set_query("a=1&access%5Ftoken=t%2E0&b=2");
        let found = find(&req, &sources())
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("not found"));
        assert_eq!(found.value, "t.0");
        remove(&mut req, &found);
        assert_eq!(req.query(), "a=1&b=2");
        req.set_query("access_token=a&access%5ftoken=b");
        assert!(find(&req, &sources()).is_err(), "two copies, however spelt");
        assert_eq!(decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn two_copies_of_a_cookie_are_refused() {
        let req = Request::new("GET", "/").with_header("cookie", "session=a; x=1; session=b");
        assert!(find(&req, &sources()).is_err());
    }

    #[test]
    fn headers_are_known_in_every_spelling() {
        assert_eq!(spellings("x-a"), ["x-a", "x_a"]);
        assert_eq!(spellings("x-user-id").len(), 4);
        assert!(spellings("a-b-c-d-e").contains(&"a_b_c_d_e".to_string()));
        let req = Request::new("GET", "/")
            .with_header("x-api-key", "a")
            .with_header("x_api_key", "b");
        assert!(find(&req, &[Source::Header("x-api-key".into())]).is_err());
    }

    #[test]
    fn two_copies_of_the_header_are_refused() {
        let req = Request::new("GET", "/")
            .with_header("authorization", "Bearer a")
            .with_header("authorization", "Bearer b");
        assert!(find(&req, &sources()).is_err());
    }
}
