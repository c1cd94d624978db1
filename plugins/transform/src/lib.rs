//! The transform plugin: rewrites requests and responses as its config says.
//!
//! ```yaml
//! plugins:
//!   - name: transform
//!     config:
//!       request:
//!         remove_headers: [x-internal]
//!         rename_headers: { x-old: x-new }
//!         set_headers: { x-gateway: demo }
//!         add_headers: { x-trace: a }
//!         path: "/v2/users/{id}"          # {param}s from the route's match path
//!         remove_query: [debug]
//!         add_query: { source: gateway }
//!       response:
//!         remove_headers: [server]
//!         set_headers: { x-served-by: gateway }
//!         status: 200
//! ```
//! Header rules apply in the order remove, rename, set, add (as Kong's
//! request transformer does).

use std::collections::BTreeMap;

use plugin_sdk::prelude::*;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub request: RequestRules,
    #[serde(default)]
    pub response: ResponseRules,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderRules {
    #[serde(default)]
    pub remove_headers: Vec<String>,
    #[serde(default)]
    pub rename_headers: BTreeMap<String, String>,
    #[serde(default)]
    pub set_headers: BTreeMap<String, String>,
    #[serde(default)]
    pub add_headers: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestRules {
    #[serde(flatten)]
    pub headers: HeaderRules,
    /// The new path; `{name}` is replaced by the route's capture `name`.
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub remove_query: Vec<String>,
    #[serde(default)]
    pub add_query: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseRules {
    #[serde(flatten)]
    pub headers: HeaderRules,
    #[serde(default)]
    pub status: Option<u16>,
}

pub struct Transform {
    config: Config,
}

impl Plugin for Transform {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        check(&config)?;
        Ok(Self { config })
    }

    fn on_request(&self, request: &mut Request) -> Action {
        if let Err(missing) = transform_request(&self.config.request, request) {
            log::warn(&format!(
                "path not rewritten: the route captures no `{{{missing}}}`"
            ));
        }
        Action::Continue
    }

    fn on_response(&self, response: &mut Response) {
        transform_response(&self.config.response, response);
    }
}

export_plugin!(Transform);

/// Refuses configs that could only fail later.
fn check(config: &Config) -> Result<(), String> {
    if let Some(status) = config.response.status
        && !(100..=999).contains(&status)
    {
        return Err(format!("response.status {status} is not an HTTP status"));
    }
    if let Some(path) = &config.request.path {
        if !path.starts_with('/') {
            return Err(format!("request.path `{path}` must start with `/`"));
        }
        if path.matches('{').count() != path.matches('}').count() {
            return Err(format!("request.path `{path}` has an unclosed `{{`"));
        }
    }
    Ok(())
}

fn apply_headers(rules: &HeaderRules, headers: &Headers) {
    for name in &rules.remove_headers {
        headers.remove(name);
    }
    for (from, to) in &rules.rename_headers {
        headers.rename(from, to);
    }
    for (name, value) in &rules.set_headers {
        headers.insert(name, value);
    }
    for (name, value) in &rules.add_headers {
        headers.append(name, value);
    }
}

fn has_header_rules(rules: &HeaderRules) -> bool {
    !(rules.remove_headers.is_empty()
        && rules.rename_headers.is_empty()
        && rules.set_headers.is_empty()
        && rules.add_headers.is_empty())
}

/// Applies the request rules; `Err(param)` when the path names a capture the
/// route does not have (the path is then left as it was).
pub fn transform_request(rules: &RequestRules, request: &mut Request) -> Result<(), String> {
    if has_header_rules(&rules.headers) {
        apply_headers(&rules.headers, request.headers_mut());
    }
    for name in &rules.remove_query {
        request.remove_query_param(name);
    }
    for (name, value) in &rules.add_query {
        request.set_query_param(name, value);
    }
    if let Some(template) = &rules.path {
        let path = fill_params(template, &request.params())?;
        request.set_path(&path);
    }
    Ok(())
}

pub fn transform_response(rules: &ResponseRules, response: &mut Response) {
    if has_header_rules(&rules.headers) {
        apply_headers(&rules.headers, response.headers_mut());
    }
    if let Some(status) = rules.status {
        response.set_status(status);
    }
}

/// `/v2/users/{id}` with `id=7` gives `/v2/users/7`.
fn fill_params(template: &str, params: &[(String, String)]) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| rest[open + 1..].to_string())?
            + open;
        let name = &rest[open + 1..close];
        let value = params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .ok_or_else(|| name.to_string())?;
        out.push_str(value);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses config the way the SDK does.
    fn config(json: &str) -> Config {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("bad test config: {e}"))
    }

    #[test]
    fn header_rules_run_remove_rename_set_add() {
        let c = config(
            r#"{"request":{"remove_headers":["x-drop"],"rename_headers":{"x-old":"x-new"},"set_headers":{"x-set":"1"},"add_headers":{"x-new":"added"}}}"#,
        );
        let mut r = Request::new("GET", "/");
        r.headers_mut().append("x-drop", "1");
        r.headers_mut().append("x-old", "v");
        r.headers_mut().append("x-set", "old");
        transform_request(&c.request, &mut r).expect("no path rule");
        assert!(!r.headers().contains("x-drop"));
        assert_eq!(r.headers().get_all("x-new"), vec!["v", "added"]);
        assert_eq!(r.headers().get_all("x-set"), vec!["1"]);
    }

    #[test]
    fn path_uses_route_captures_and_query_is_edited() {
        let c = config(
            r#"{"request":{"path":"/v2/users/{id}/profile","remove_query":["debug"],"add_query":{"src":"gw"}}}"#,
        );
        let mut r = Request::new("GET", "/u/7?debug=1&keep=2").with_param("id", "7");
        transform_request(&c.request, &mut r).expect("id is captured");
        assert_eq!(r.path(), "/v2/users/7/profile");
        assert_eq!(r.query(), "keep=2&src=gw");
    }

    #[test]
    fn a_missing_capture_leaves_the_path() {
        let c = config(r#"{"request":{"path":"/x/{nope}"}}"#);
        let mut r = Request::new("GET", "/a");
        assert_eq!(
            transform_request(&c.request, &mut r),
            Err("nope".to_string())
        );
        assert_eq!(r.path(), "/a");
    }

    #[test]
    fn response_status_and_headers() {
        let c = config(
            r#"{"response":{"set_headers":{"x-served-by":"gateway"},"remove_headers":["server"],"status":299}}"#,
        );
        let mut r = Response::new(200).with_header("server", "x");
        transform_response(&c.response, &mut r);
        assert_eq!(r.status(), 299);
        assert_eq!(r.headers().get("x-served-by").as_deref(), Some("gateway"));
        assert!(!r.headers().contains("server"));
    }

    #[test]
    fn bad_configs_are_refused() {
        for bad in [
            r#"{"response":{"status":42}}"#,
            r#"{"request":{"path":"v2"}}"#,
            r#"{"request":{"path":"/a/{x"}}"#,
        ] {
            assert!(Transform::new(config(bad)).is_err(), "{bad}");
        }
        assert!(
            serde_json::from_str::<Config>(r#"{"request":{"set_header":{}}}"#).is_err(),
            "unknown keys are refused"
        );
    }
}
