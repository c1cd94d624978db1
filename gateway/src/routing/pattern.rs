//! Host and path patterns as written in route `match` blocks, parsed once.

use std::fmt;

/// `api.example.com` (exact) or `*.example.com` (any subdomain, at any depth).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    Exact(String),
    /// The suffix including its leading dot: `.example.com`.
    Wildcard(String),
}

impl HostPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let lower = text.trim().to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if name.is_empty() || !name.split('.').all(valid_label) {
            return Err(format!(
                "`{text}` is not a host pattern; write `api.example.com` or `*.example.com` (no port, `*` only as the first label)"
            ));
        }
        Ok(if wildcard {
            Self::Wildcard(format!(".{name}"))
        } else {
            Self::Exact(name.to_string())
        })
    }

    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(name) => name == host,
            Self::Wildcard(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Wildcard(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// One `/`-separated piece of a path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Param(String),
}

/// A path such as `/api/users/{id}`; `{name}` captures one whole segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    text: String,
    segments: Vec<Segment>,
}

/// Values captured by `{name}` segments, in pattern order.
pub type Params = Vec<(String, String)>;

impl PathPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!("`{text}` must start with `/`"));
        };
        let mut segments = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for piece in rest.split('/') {
            if let Some(name) = piece.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                let valid =
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    return Err(format!(
                        "`{{{name}}}` in `{text}` is not a parameter name (letters, digits, `_`)"
                    ));
                }
                if names.contains(&name) {
                    return Err(format!("parameter `{{{name}}}` appears twice in `{text}`"));
                }
                names.push(name);
                segments.push(Segment::Param(name.to_string()));
            } else if piece.contains(['{', '}']) {
                return Err(format!(
                    "`{piece}` in `{text}`: a `{{param}}` must be a whole path segment"
                ));
            } else {
                segments.push(Segment::Literal(piece.to_string()));
            }
        }
        Ok(Self {
            text: text.to_string(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn has_params(&self) -> bool {
        self.segments.iter().any(|s| matches!(s, Segment::Param(_)))
    }

    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(name) => Some(name.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// How many segments are fixed text: more literal text is more specific.
    pub fn literal_segments(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(l) if !l.is_empty()))
            .count()
    }

    pub fn segment_count(&self) -> usize {
        self.prefix_segments().len()
    }

    /// The segments a prefix must match: a trailing `/` adds nothing.
    fn prefix_segments(&self) -> &[Segment] {
        match self.segments.split_last() {
            Some((Segment::Literal(last), init)) if last.is_empty() => init,
            _ => &self.segments,
        }
    }

    /// Whole-path match; `Some(params)` on success.
    pub fn match_exact(&self, path: &str) -> Option<Params> {
        if !self.has_params() {
            return (self.text == path).then(Vec::new);
        }
        let mut pieces = path.strip_prefix('/')?.split('/');
        let params = match_segments(&self.segments, &mut pieces)?;
        pieces.next().is_none().then_some(params)
    }

    /// Matches whole leading segments: `/api/users` matches `/api/users`,
    /// `/api/users/` and `/api/users/7`, but not `/api/usersx`.
    pub fn match_prefix(&self, path: &str) -> Option<Params> {
        if !self.has_params() {
            let prefix = self.text.trim_end_matches('/');
            let rest = path.strip_prefix(prefix)?;
            return (rest.is_empty() || rest.starts_with('/')).then(Vec::new);
        }
        let mut pieces = path.strip_prefix('/')?.split('/');
        match_segments(self.prefix_segments(), &mut pieces)
    }
}

fn match_segments<'p>(
    segments: &[Segment],
    pieces: &mut impl Iterator<Item = &'p str>,
) -> Option<Params> {
    let mut params = Vec::new();
    for segment in segments {
        let piece = pieces.next()?;
        match segment {
            Segment::Literal(literal) if literal == piece => {}
            Segment::Literal(_) => return None,
            Segment::Param(_) if piece.is_empty() => return None,
            Segment::Param(name) => params.push((name.clone(), piece.to_string())),
        }
    }
    Some(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> PathPattern {
        PathPattern::parse(text).expect("valid pattern")
    }

    #[test]
    fn host_patterns_match_exact_and_any_depth_wildcards() {
        let exact = HostPattern::parse("API.example.com").expect("valid");
        assert!(exact.matches("api.example.com"));
        assert!(!exact.matches("x.api.example.com"));
        let wild = HostPattern::parse("*.example.com").expect("valid");
        assert!(wild.matches("a.example.com"));
        assert!(wild.matches("a.b.example.com"));
        assert!(!wild.matches("example.com"));
        assert!(!wild.matches("badexample.com"));
        for bad in ["", "*", "a.*.com", "api.example.com:80", "*example.com"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefixes_match_whole_segments_only() {
        let p = path("/api/users");
        assert!(p.match_prefix("/api/users").is_some());
        assert!(p.match_prefix("/api/users/").is_some());
        assert!(p.match_prefix("/api/users/7").is_some());
        assert!(p.match_prefix("/api/usersx").is_none());
        assert!(path("/").match_prefix("/anything").is_some());
        assert!(path("/api/").match_prefix("/api/x").is_some());
    }

    #[test]
    fn params_capture_one_segment() {
        let p = path("/users/{id}/orders/{order}");
        assert_eq!(
            p.match_exact("/users/7/orders/9"),
            Some(vec![
                ("id".into(), "7".into()),
                ("order".into(), "9".into())
            ])
        );
        assert_eq!(p.match_exact("/users/7/orders"), None);
        assert_eq!(p.match_exact("/users//orders/9"), None);
        assert_eq!(p.match_exact("/users/7/orders/9/x"), None);
        let prefix = path("/tenants/{t}/");
        assert_eq!(
            prefix.match_prefix("/tenants/acme/items"),
            Some(vec![("t".into(), "acme".into())])
        );
    }

    #[test]
    fn rejects_malformed_paths() {
        for bad in ["api", "/a/{", "/a/x{id}", "/a/{}", "/{id}/{id}", "/{a-b}"] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
