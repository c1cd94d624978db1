//! The route table: compiled once per config, then matched per request by host
//! bucket and a short ordered scan, most specific route first.
//!
//! Precedence, highest first:
//! 1. `priority` (higher wins);
//! 2. host: exact, then wildcard (longer suffix first), then no host;
//! 3. path: exact without params, exact with params (more literal segments
//!    first), prefix (more segments first), then no path;
//! 4. more header conditions, then a method list over none;
//! 5. order in the file.

mod pattern;
pub mod rewrite;

use std::collections::HashMap;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::config::RouteConfig;
use crate::plugin::Chain;
pub use pattern::{HostPattern, Params, PathPattern};

/// How a route matches the path.
#[derive(Debug, Clone)]
pub enum PathMatch {
    Any,
    Exact(PathPattern),
    Prefix(PathPattern),
}

/// A compiled route. `upstream` indexes the snapshot's upstream list.
#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub host: Option<HostPattern>,
    pub path: PathMatch,
    pub methods: Vec<Method>,
    pub headers: Vec<(HeaderName, Option<HeaderValue>)>,
    pub priority: i32,
    pub strip_prefix: Option<PathPattern>,
    pub rewrite: Option<PathPattern>,
    pub upstream: usize,
    pub timeout: Option<Duration>,
    pub plugins: Chain,
    /// Its request counters and latency histogram.
    pub metrics: crate::metrics::RouteMetrics,
}

impl Route {
    /// Builds a route from its (already validated) config.
    pub fn from_config(config: &RouteConfig, upstream: usize, plugins: Chain) -> Self {
        let m = &config.matcher;
        let path = match (&m.path, &m.path_prefix) {
            (Some(p), _) => PathMatch::Exact(p.clone()),
            (None, Some(p)) => PathMatch::Prefix(p.clone()),
            (None, None) => PathMatch::Any,
        };
        Self {
            name: config.name.clone(),
            host: m.host.clone(),
            path,
            methods: m.methods.iter().map(|m| m.0.clone()).collect(),
            headers: m
                .headers
                .iter()
                .map(|h| {
                    let value = h
                        .value
                        .as_deref()
                        .and_then(|v| HeaderValue::from_str(v).ok());
                    (h.name.0.clone(), value)
                })
                .collect(),
            priority: config.priority,
            strip_prefix: config.strip_prefix.clone(),
            rewrite: config.rewrite.clone(),
            upstream,
            timeout: config.timeout.map(|t| t.0),
            plugins,
            metrics: crate::metrics::RouteMetrics::new(&config.name),
        }
    }

    /// Checks everything but the host (the table already chose by host).
    fn matches(&self, method: &Method, path: &str, headers: &HeaderMap) -> Option<Params> {
        if !self.methods.is_empty() && !self.methods.contains(method) {
            return None;
        }
        let headers_ok = self.headers.iter().all(|(name, value)| match value {
            None => headers.contains_key(name),
            Some(v) => headers.get_all(name).iter().any(|h| h == v),
        });
        if !headers_ok {
            return None;
        }
        match &self.path {
            PathMatch::Any => Some(Vec::new()),
            PathMatch::Exact(p) => p.match_exact(path),
            PathMatch::Prefix(p) => p.match_prefix(path),
        }
    }

    /// Sort key: larger is more specific (see the module doc).
    fn specificity(&self) -> (i32, usize, usize, usize, usize, usize, bool) {
        let host = match &self.host {
            Some(HostPattern::Exact(_)) => usize::MAX,
            Some(HostPattern::Wildcard(suffix)) => suffix.len(),
            None => 0,
        };
        let (kind, segments, literals) = match &self.path {
            PathMatch::Exact(p) if !p.has_params() => (3, p.segment_count(), p.literal_segments()),
            PathMatch::Exact(p) => (2, p.literal_segments(), p.segment_count()),
            PathMatch::Prefix(p) => (1, p.segment_count(), p.literal_segments()),
            PathMatch::Any => (0, 0, 0),
        };
        let methods = !self.methods.is_empty();
        (
            self.priority,
            host,
            kind,
            segments,
            literals,
            self.headers.len(),
            methods,
        )
    }
}

/// The result of routing one request.
#[derive(Debug)]
pub struct Matched<'a> {
    pub route: &'a Route,
    pub params: Params,
}

/// Routes bucketed by host, each bucket already in precedence order.
#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<Route>,
    exact: HashMap<String, Vec<usize>>,
    /// (suffix like `.example.com`, bucket), longest suffix first.
    wildcard: Vec<(String, Vec<usize>)>,
    any_host: Vec<usize>,
}

impl Router {
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    pub fn new(routes: Vec<Route>) -> Self {
        // A bucket holds every route a host in it can match, in precedence order.
        let bucket = |accepts: &dyn Fn(&Route) -> bool| {
            let mut ids: Vec<usize> = (0..routes.len()).filter(|&i| accepts(&routes[i])).collect();
            // Stable sort: equal specificity keeps file order.
            ids.sort_by(|&a, &b| routes[b].specificity().cmp(&routes[a].specificity()));
            ids
        };
        let mut exact = HashMap::new();
        let mut wildcard = Vec::new();
        for route in &routes {
            match &route.host {
                Some(HostPattern::Exact(name)) if !exact.contains_key(name) => {
                    let ids = bucket(&|r| r.host.as_ref().is_none_or(|h| h.matches(name)));
                    exact.insert(name.clone(), ids);
                }
                Some(HostPattern::Wildcard(suffix))
                    if !wildcard.iter().any(|(s, _)| s == suffix) =>
                {
                    // Any host under this suffix also falls under every shorter wildcard.
                    let ids = bucket(&|r| match &r.host {
                        None => true,
                        Some(HostPattern::Exact(_)) => false,
                        Some(HostPattern::Wildcard(other)) => suffix.ends_with(other.as_str()),
                    });
                    wildcard.push((suffix.clone(), ids));
                }
                _ => {}
            }
        }
        wildcard.sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        let any_host = bucket(&|r| r.host.is_none());
        Self {
            routes,
            exact,
            wildcard,
            any_host,
        }
    }

    /// The most specific route for this request, if any.
    pub fn route(
        &self,
        host: &str,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<Matched<'_>> {
        let bucket = self
            .exact
            .get(host)
            .or_else(|| {
                self.wildcard
                    .iter()
                    .find(|(suffix, _)| {
                        host.len() > suffix.len() && host.ends_with(suffix.as_str())
                    })
                    .map(|(_, ids)| ids)
            })
            .unwrap_or(&self.any_host);
        bucket.iter().find_map(|&i| {
            let route = &self.routes[i];
            route
                .matches(method, path, headers)
                .map(|params| Matched { route, params })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Routes from a YAML list, all pointing at upstream 0.
    fn router(yaml: &str) -> Router {
        let text = format!(
            "upstreams:\n  u:\n    targets: [{{ url: \"http://127.0.0.1:1\" }}]\nroutes:\n{yaml}"
        );
        let config = crate::config::parse(&text, &|_| None).expect("valid config");
        Router::new(
            config
                .routes
                .iter()
                .map(|r| Route::from_config(r, 0, Chain::default()))
                .collect(),
        )
    }

    fn pick(
        router: &Router,
        host: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Option<String> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        router
            .route(host, &method, path, &map)
            .map(|m| m.route.name.clone())
    }

    #[test]
    fn most_specific_path_wins_regardless_of_order() {
        let r = router(concat!(
            "  - { name: catchall, upstream: u }\n",
            "  - { name: prefix, upstream: u, match: { path_prefix: /api } }\n",
            "  - { name: longer, upstream: u, match: { path_prefix: /api/users } }\n",
            "  - { name: param, upstream: u, match: { path: '/api/users/{id}' } }\n",
            "  - { name: exact, upstream: u, match: { path: /api/users/me } }\n",
        ));
        assert_eq!(
            pick(&r, "h", "GET", "/api/users/me", &[]).as_deref(),
            Some("exact")
        );
        assert_eq!(
            pick(&r, "h", "GET", "/api/users/7", &[]).as_deref(),
            Some("param")
        );
        assert_eq!(
            pick(&r, "h", "GET", "/api/users/7/x", &[]).as_deref(),
            Some("longer")
        );
        assert_eq!(
            pick(&r, "h", "GET", "/api/orders", &[]).as_deref(),
            Some("prefix")
        );
        assert_eq!(
            pick(&r, "h", "GET", "/other", &[]).as_deref(),
            Some("catchall")
        );
    }

    #[test]
    fn host_beats_path_and_wildcards_nest() {
        let r = router(concat!(
            "  - { name: any, upstream: u, match: { path: /x } }\n",
            "  - { name: wild, upstream: u, match: { host: '*.example.com' } }\n",
            "  - { name: deeper, upstream: u, match: { host: '*.eu.example.com' } }\n",
            "  - { name: exact, upstream: u, match: { host: api.example.com } }\n",
        ));
        assert_eq!(
            pick(&r, "api.example.com", "GET", "/x", &[]).as_deref(),
            Some("exact")
        );
        assert_eq!(
            pick(&r, "a.example.com", "GET", "/x", &[]).as_deref(),
            Some("wild")
        );
        assert_eq!(
            pick(&r, "a.eu.example.com", "GET", "/x", &[]).as_deref(),
            Some("deeper")
        );
        assert_eq!(
            pick(&r, "other.org", "GET", "/x", &[]).as_deref(),
            Some("any")
        );
        assert_eq!(pick(&r, "other.org", "GET", "/y", &[]), None);
    }

    #[test]
    fn methods_headers_and_priority() {
        let r = router(concat!(
            "  - { name: plain, upstream: u, match: { path_prefix: /a } }\n",
            "  - { name: posts, upstream: u, match: { path_prefix: /a, methods: [post] } }\n",
            "  - { name: canary, upstream: u, match: { path_prefix: /a, headers: [{ name: x-canary }] } }\n",
            "  - { name: v2, upstream: u, match: { path_prefix: /a, headers: [{ name: x-version, value: '2' }] } }\n",
            "  - { name: forced, upstream: u, priority: 10, match: { path: /a/forced-by-priority, methods: [DELETE] } }\n",
        ));
        assert_eq!(pick(&r, "h", "GET", "/a", &[]).as_deref(), Some("plain"));
        assert_eq!(pick(&r, "h", "POST", "/a", &[]).as_deref(), Some("posts"));
        assert_eq!(
            pick(&r, "h", "GET", "/a", &[("x-canary", "")]).as_deref(),
            Some("canary")
        );
        assert_eq!(
            pick(&r, "h", "GET", "/a", &[("x-version", "2")]).as_deref(),
            Some("v2")
        );
        assert_eq!(
            pick(&r, "h", "GET", "/a", &[("x-version", "3")]).as_deref(),
            Some("plain")
        );
        assert_eq!(
            pick(&r, "h", "DELETE", "/a/forced-by-priority", &[]).as_deref(),
            Some("forced")
        );
    }

    #[test]
    fn equal_routes_keep_file_order() {
        let r = router(concat!(
            "  - { name: first, upstream: u, match: { path_prefix: /a } }\n",
            "  - { name: second, upstream: u, match: { path_prefix: /a } }\n",
        ));
        assert_eq!(pick(&r, "h", "GET", "/a", &[]).as_deref(), Some("first"));
    }
}
