//! Finding a credential in a request: a header (`Authorization: Bearer`),
//! a cookie or a query parameter; and removing credentials before the
//! request goes on.
//!
//! Names are compared as upstreams compare them, so that the copy checked
//! here is the only one an upstream can read: header names in any case and
//! with `_` for `-` (CGI-style upstreams read `x_api_key` as `x-api-key`),
//! query names decoded and with PHP's mapping of `.`, ` ` and `[` to `_`,
//! `;` taken as a separator as well as `&`, cookie names trimmed.

use plugin_sdk::Request;

use crate::config::Source;

/// A credential and where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub value: String,
    pub source: Source,
}

/// The first credential among `sources`. One sent more than once, however
/// spelt, is an error: the upstream might read another copy than the one
/// checked.
pub fn find(req: &Request, sources: &[Source]) -> Result<Option<Found>, String> {
    for source in sources {
        let values = match source {
            Source::Header(name) => header_lines(req, name)
                .into_iter()
                .map(|(_, value)| value)
                .collect(),
            Source::Cookie(name) => cookies(&req.headers().get_all("cookie"), name),
            Source::Query(name) => query_values(&req.query(), name),
        };
        if values.len() > 1 {
            return Err(format!("more than one {}", describe(source)));
        }
        let Some(value) = values.into_iter().next() else {
            continue;
        };
        let value = match source {
            Source::Header(name) if normal(name) == "authorization" => match bearer(&value) {
                Some(token) => token.to_string(),
                // Another scheme (Basic, say) is not ours.
                None => continue,
            },
            _ => value.trim().to_string(),
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

fn describe(source: &Source) -> String {
    match source {
        Source::Header(name) => format!("{name} header"),
        Source::Cookie(name) => format!("{name} cookie"),
        Source::Query(name) => format!("{name} query parameter"),
    }
}

/// A header name as upstreams compare it: any case, `_` for `-`.
pub fn normal(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// The request's header lines that are header `name` to an upstream.
fn header_lines(req: &Request, name: &str) -> Vec<(String, String)> {
    let wanted = normal(name);
    req.headers()
        .lines()
        .into_iter()
        .filter(|(line, _)| normal(line) == wanted)
        .collect()
}

/// Removes every line of the headers named (however spelt).
pub fn remove_headers(req: &mut Request, names: &[&str]) {
    let wanted: Vec<String> = names.iter().map(|n| normal(n)).collect();
    let mut spelt: Vec<String> = req
        .headers()
        .lines()
        .into_iter()
        .map(|(line, _)| line)
        .filter(|line| wanted.contains(&normal(line)))
        .collect();
    spelt.sort();
    spelt.dedup();
    for line in spelt {
        req.headers_mut().remove(&line);
    }
}

/// The token of `Bearer <token>` (the scheme in any case).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Every value of cookie `name` among `Cookie` header lines.
fn cookies(lines: &[String], name: &str) -> Vec<String> {
    lines
        .iter()
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.split_once('='))
        .filter(|(n, _)| n.trim() == name)
        .map(|(_, value)| value.trim().trim_matches('"').to_string())
        .collect()
}

/// The pairs of a query, split on `&` and `;`.
fn pairs(query: &str) -> impl Iterator<Item = &str> {
    query.split(['&', ';']).filter(|pair| !pair.is_empty())
}

/// Query name `raw` as upstreams read it: decoded, and with `.`, ` ` and
/// `[` as `_` (PHP's mapping).
fn query_name(raw: &str) -> String {
    decode(raw).replace(['.', ' ', '['], "_")
}

/// Every value of query parameter `name`, decoded.
fn query_values(query: &str, name: &str) -> Vec<String> {
    let wanted = query_name(name);
    pairs(query)
        .filter_map(|pair| {
            let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
            (query_name(n) == wanted).then(|| decode(v))
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
            b'%' if i + 2 < bytes.len()
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit() =>
            {
                let hex = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
                out.push(hex(bytes[i + 1]) << 4 | hex(bytes[i + 2]));
                i += 2;
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Removes every credential `sources` name from the request (all copies,
/// however spelt), so the upstream never sees one this plugin did not
/// check. Cookies stay: other cookies share their header.
pub fn remove_all(req: &mut Request, sources: &[Source]) {
    let headers: Vec<&str> = sources
        .iter()
        .filter_map(|s| match s {
            Source::Header(name) => Some(name.as_str()),
            _ => None,
        })
        .collect();
    if !headers.is_empty() {
        remove_headers(req, &headers);
    }
    let names: Vec<String> = sources
        .iter()
        .filter_map(|s| match s {
            Source::Query(name) => Some(query_name(name)),
            _ => None,
        })
        .collect();
    if names.is_empty() {
        return;
    }
    let query = req.query();
    let kept: Vec<&str> = pairs(&query)
        .filter(|pair| {
            let n = pair.split_once('=').map_or(*pair, |(n, _)| n);
            !names.contains(&query_name(n))
        })
        .collect();
    let rebuilt = kept.join("&");
    if rebuilt != query {
        req.set_query(&rebuilt);
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

    fn found(req: &Request) -> Option<String> {
        find(req, &sources()).ok().flatten().map(|f| f.value)
    }

    #[test]
    fn the_first_source_holding_a_credential_wins() {
        let req = Request::new("GET", "/").with_header("authorization", "bearer abc");
        assert_eq!(found(&req), Some("abc".into()));
        let req = Request::new("GET", "/")
            .with_header("authorization", "Basic dTpw")
            .with_header("cookie", "a=1; session=xyz");
        let first = find(&req, &sources()).ok().flatten();
        assert_eq!(
            first.map(|f| (f.value, f.source)),
            Some(("xyz".into(), Source::Cookie("session".into())))
        );
        let mut req = Request::new("GET", "/");
        req.set_query("x=1&access_token=t0k");
        assert_eq!(found(&req), Some("t0k".into()));
        assert_eq!(find(&Request::new("GET", "/"), &sources()), Ok(None));
    }

    #[test]
    fn query_names_are_read_as_upstreams_read_them_and_every_copy_removed() {
        let mut req = Request::new("GET", "/");
        req.set_query("a=1&access%5Ftoken=t%2E0&b=2");
        assert_eq!(found(&req), Some("t.0".into()));
        remove_all(&mut req, &sources());
        assert_eq!(req.query(), "a=1&b=2");
        for twice in [
            "access_token=a&access%5ftoken=b",
            "access_token=a&x=1;access_token=b",
            "access_token=a&access.token=b",
            "access_token=a&access token=b",
        ] {
            req.set_query(twice);
            assert!(find(&req, &sources()).is_err(), "{twice}");
        }
        req.set_query("x=1;access.token=b&y=2");
        remove_all(&mut req, &sources());
        assert_eq!(req.query(), "x=1&y=2");
        assert_eq!(decode("%zz%4%+5"), "%zz%4% 5", "escapes are two hex digits");
    }

    #[test]
    fn two_copies_of_a_cookie_are_refused_however_spaced() {
        let req = Request::new("GET", "/").with_header("cookie", "session=a; x=1; session =b");
        assert!(find(&req, &sources()).is_err());
    }

    #[test]
    fn headers_are_one_in_every_spelling() {
        let req = Request::new("GET", "/")
            .with_header("x-api-key", "a")
            .with_header("X_Api_Key", "b");
        assert!(find(&req, &[Source::Header("x-api-key".into())]).is_err());
        let mut req = Request::new("GET", "/")
            .with_header("x_auth_user_org_id", "spoof")
            .with_header("x-auth-user-org_id", "spoof")
            .with_header("x-other", "kept");
        remove_headers(&mut req, &["x-auth-user-org-id"]);
        assert_eq!(
            req.headers().lines(),
            [("x-other".to_string(), "kept".to_string())]
        );
    }

    #[test]
    fn two_copies_of_the_header_are_refused() {
        let req = Request::new("GET", "/")
            .with_header("authorization", "Bearer a")
            .with_header("authorization", "Bearer b");
        assert!(find(&req, &sources()).is_err());
    }
}
