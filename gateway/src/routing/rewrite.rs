//! The path sent upstream: `strip_prefix`, or `rewrite` with `{param}` captures.

use std::borrow::Cow;

use super::{Params, PathMatch, PathPattern, Route};

/// The upstream path for `path` (without query) on `route`.
///
/// `rewrite` replaces what the route matched: the whole path for `path:`
/// routes, the matched leading segments for `path_prefix:` routes (the rest is
/// kept, as Envoy's `prefix_rewrite`).
pub fn upstream_path<'a>(route: &Route, path: &'a str, params: &Params) -> Cow<'a, str> {
    if let Some(prefix) = &route.strip_prefix {
        return match remainder_after(prefix, path) {
            Some("") => Cow::Borrowed("/"),
            Some(rest) => Cow::Borrowed(rest),
            None => Cow::Borrowed(path),
        };
    }
    let Some(template) = &route.rewrite else {
        return Cow::Borrowed(path);
    };
    let rest = match &route.path {
        PathMatch::Prefix(prefix) => remainder_after(prefix, path).unwrap_or(""),
        PathMatch::Exact(_) | PathMatch::Any => "",
    };
    let mut out = fill(template, params);
    if !rest.is_empty() {
        if out.ends_with('/') {
            out.pop();
        }
        out.push_str(rest);
    }
    Cow::Owned(out)
}

/// What follows the segments `prefix` matches: `/api` on `/api/users?` gives `/users`.
fn remainder_after<'a>(prefix: &PathPattern, path: &'a str) -> Option<&'a str> {
    prefix.match_prefix(path)?;
    let skip = prefix.segment_count();
    if skip == 0 {
        return Some(path);
    }
    // Byte offset of the `/` that follows the `skip`-th segment.
    let end = path
        .match_indices('/')
        .map(|(i, _)| i)
        .nth(skip)
        .unwrap_or(path.len());
    Some(&path[end..])
}

fn fill(template: &PathPattern, params: &Params) -> String {
    let mut out = String::with_capacity(template.as_str().len() + 16);
    let text = template.as_str();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let name = &rest[open + 1..open + close];
        if let Some((_, value)) = params.iter().find(|(n, _)| n == name) {
            out.push_str(value);
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Router;

    fn rewritten(route_yaml: &str, path: &str) -> String {
        let text = format!(
            "upstreams:\n  u:\n    targets: [{{ url: \"http://127.0.0.1:1\" }}]\nroutes:\n  - {route_yaml}\n"
        );
        let config = crate::config::parse(&text, &|_| None).expect("valid config");
        let router = Router::new(
            config
                .routes
                .iter()
                .map(|r| Route::from_config(r, 0, crate::plugin::Chain::default()))
                .collect(),
        );
        let m = router
            .route("h", &http::Method::GET, path, &http::HeaderMap::new())
            .expect("route matches");
        upstream_path(m.route, path, &m.params).into_owned()
    }

    #[test]
    fn strip_prefix_removes_whole_segments() {
        let route =
            "{ name: r, upstream: u, match: { path_prefix: /api/users }, strip_prefix: /api }";
        assert_eq!(rewritten(route, "/api/users/7"), "/users/7");
        let route = "{ name: r, upstream: u, match: { path_prefix: /api }, strip_prefix: /api }";
        assert_eq!(rewritten(route, "/api"), "/");
        assert_eq!(rewritten(route, "/api/"), "/");
        let route = "{ name: r, upstream: u, strip_prefix: '/t/{tenant}' }";
        assert_eq!(rewritten(route, "/t/acme/items"), "/items");
        assert_eq!(rewritten(route, "/other"), "/other");
    }

    #[test]
    fn rewrite_fills_params_and_keeps_the_prefix_remainder() {
        let route =
            "{ name: r, upstream: u, match: { path: '/u/{id}' }, rewrite: '/v2/users/{id}' }";
        assert_eq!(rewritten(route, "/u/42"), "/v2/users/42");
        let route = "{ name: r, upstream: u, match: { path_prefix: /old }, rewrite: /new }";
        assert_eq!(rewritten(route, "/old/a/b"), "/new/a/b");
        assert_eq!(rewritten(route, "/old"), "/new");
        let route = "{ name: r, upstream: u, match: { path_prefix: /old/ }, rewrite: / }";
        assert_eq!(rewritten(route, "/old/a"), "/a");
    }
}
