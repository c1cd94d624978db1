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

/// The first credential among `sources`. A header sent more than once is an
/// error: the upstream might read another copy than the gateway checked.
pub fn find(req: &Request, sources: &[Source]) -> Result<Option<Found>, String> {
    for source in sources {
        let value = match source {
            Source::Header(name) => {
                let values = req.headers().get_all(name);
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
            Source::Cookie(name) => match cookie(&req.headers().get_all("cookie"), name) {
                Some(value) => value,
                None => continue,
            },
            Source::Query(name) => match req.query_param(name) {
                Some(value) => value,
                None => continue,
            },
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

/// The token of `Bearer <token>` (the scheme in any case).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Cookie `name` among `Cookie` header lines.
fn cookie(lines: &[String], name: &str) -> Option<String> {
    lines
        .iter()
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.trim_matches('"').to_string())
}

/// Removes the credential from the request, so the upstream never sees it.
/// A cookie stays: other cookies share its header.
pub fn remove(req: &mut Request, found: &Found) {
    match &found.source {
        Source::Header(name) => {
            req.headers_mut().remove(name);
        }
        Source::Query(name) => req.remove_query_param(name),
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
    fn two_copies_of_the_header_are_refused() {
        let req = Request::new("GET", "/")
            .with_header("authorization", "Bearer a")
            .with_header("authorization", "Bearer b");
        assert!(find(&req, &sources()).is_err());
    }
}
