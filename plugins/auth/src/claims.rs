//! What a verified token's claims must say: the route's policy.

use serde_json::{Map, Value};

use crate::config::{JwtConfig, Rule};

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// 401: no credential, or one that does not hold.
    Unauthorized(String),
    /// 403: a valid token whose claims break a rule.
    Forbidden(String),
}

/// Whether `claims` name one of `issuers` (any, when there are none).
pub fn check_issuer(claims: &Map<String, Value>, issuers: &[String]) -> Result<(), String> {
    if issuers.is_empty() {
        return Ok(());
    }
    let iss = claims.get("iss").and_then(Value::as_str);
    if iss.is_some_and(|iss| issuers.iter().any(|ok| ok == iss)) {
        Ok(())
    } else {
        Err("the token's issuer is not accepted".into())
    }
}

/// Checks `claims` against the route's policy at unix time `now` (the
/// issuer is checked with the key set, `check_issuer`).
pub fn check(claims: &Map<String, Value>, jwt: &JwtConfig, now: u64) -> Result<(), Denial> {
    let unauthorized = |why: String| Err(Denial::Unauthorized(why));
    for name in &jwt.required_claims {
        if lookup(claims, name).is_none() {
            return unauthorized(format!("the token has no {name} claim"));
        }
    }
    let leeway = jwt.leeway_seconds as f64;
    let now = now as f64;
    if let Some(exp) = claims.get("exp") {
        let Some(exp) = exp.as_f64() else {
            return unauthorized("exp is not a number".into());
        };
        if now >= exp + leeway {
            return unauthorized("the token has expired".into());
        }
    }
    if let Some(nbf) = claims.get("nbf") {
        let Some(nbf) = nbf.as_f64() else {
            return unauthorized("nbf is not a number".into());
        };
        if now + leeway < nbf {
            return unauthorized("the token is not valid yet".into());
        }
    }
    if !jwt.audience.is_empty() {
        // RFC 7519 4.1.3: a string `aud` is one audience, not a list of words.
        let audiences = items(claims.get("aud"), false);
        if !audiences
            .iter()
            .any(|aud| jwt.audience.iter().any(|ok| ok == aud))
        {
            return unauthorized("the token is not meant for this audience".into());
        }
    }
    for rule in &jwt.rules {
        if !holds(rule, lookup(claims, &rule.claim)) {
            return Err(Denial::Forbidden(describe(rule)));
        }
    }
    Ok(())
}

/// Claim `name`: the key itself first (claim names may hold dots, like
/// `https://example.com/roles`), else a dotted path through objects.
pub fn lookup<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(name) {
        return Some(value);
    }
    let mut parts = name.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// A claim as a list of texts: a list's items; a string as itself, or as
/// its space-separated words with `words` (OAuth's `scope`); a number or
/// boolean as its text.
fn items(value: Option<&Value>, words: bool) -> Vec<String> {
    match value {
        Some(Value::Array(list)) => list.iter().filter_map(text).collect(),
        Some(Value::String(text)) if words => text.split_whitespace().map(String::from).collect(),
        Some(other) => text(other).into_iter().collect(),
        None => Vec::new(),
    }
}

/// A scalar claim as text.
pub fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn holds(rule: &Rule, value: Option<&Value>) -> bool {
    if let Some(wanted) = &rule.contains {
        return items(value, true).iter().any(|item| item == wanted);
    }
    if let Some(wanted) = &rule.equals {
        return value.and_then(text).is_some_and(|v| v == *wanted);
    }
    if let Some(any) = &rule.any_of {
        return items(value, false).iter().any(|item| any.contains(item));
    }
    false
}

fn describe(rule: &Rule) -> String {
    if let Some(wanted) = &rule.contains {
        format!("the token's {} does not include {wanted}", rule.claim)
    } else if let Some(wanted) = &rule.equals {
        format!("the token's {} is not {wanted}", rule.claim)
    } else {
        format!("the token's {} is not one of those allowed", rule.claim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: Value) -> JwtConfig {
        serde_json::from_value(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    fn claims(json: Value) -> Map<String, Value> {
        json.as_object().cloned().unwrap_or_default()
    }

    const NOW: u64 = 1_700_000_000;

    #[test]
    fn expiry_and_not_before_allow_the_leeway_and_no_more() {
        let jwt = policy(serde_json::json!({"key_sets": ["k"], "leeway_seconds": 30}));
        let at = |exp: i64| claims(serde_json::json!({ "exp": NOW as i64 + exp }));
        assert_eq!(check(&at(10), &jwt, NOW), Ok(()));
        assert_eq!(check(&at(-29), &jwt, NOW), Ok(()), "inside the leeway");
        assert!(
            matches!(check(&at(-30), &jwt, NOW), Err(Denial::Unauthorized(m)) if m.contains("expired"))
        );
        let nbf =
            |nbf: i64| claims(serde_json::json!({ "exp": NOW + 100, "nbf": NOW as i64 + nbf }));
        assert_eq!(check(&nbf(30), &jwt, NOW), Ok(()));
        assert!(
            matches!(check(&nbf(31), &jwt, NOW), Err(Denial::Unauthorized(m)) if m.contains("not valid yet"))
        );
        let no_exp = claims(serde_json::json!({ "sub": "ann" }));
        assert!(
            matches!(check(&no_exp, &jwt, NOW), Err(Denial::Unauthorized(m)) if m.contains("no exp"))
        );
    }

    #[test]
    fn issuer_audience_and_rules() {
        let jwt = policy(serde_json::json!({
            "key_sets": ["k"], "issuer": "https://idp", "audience": ["orders", "billing"],
            "required_claims": [],
            "rules": [
                {"claim": "scope", "contains": "orders:read"},
                {"claim": "realm_access.roles", "any_of": ["admin", "ops"]}
            ]
        }));
        let good = serde_json::json!({
            "iss": "https://idp", "aud": ["other", "orders"],
            "scope": "profile orders:read", "realm_access": {"roles": ["ops"]}
        });
        assert_eq!(check(&claims(good.clone()), &jwt, NOW), Ok(()));
        let mut wrong_iss = good.clone();
        wrong_iss["iss"] = "https://evil".into();
        assert!(check_issuer(&claims(wrong_iss.clone()), &jwt.issuer).is_err());
        assert!(check_issuer(&claims(good.clone()), &jwt.issuer).is_ok());
        assert_eq!(
            check(&claims(wrong_iss), &jwt, NOW),
            Ok(()),
            "the issuer is checked with the key set"
        );
        let mut wrong_aud = good.clone();
        wrong_aud["aud"] = "other orders".into();
        assert!(matches!(
            check(&claims(wrong_aud), &jwt, NOW),
            Err(Denial::Unauthorized(_))
        ));
        let mut no_scope = good.clone();
        no_scope["scope"] = "orders:readx".into();
        assert!(
            matches!(check(&claims(no_scope), &jwt, NOW), Err(Denial::Forbidden(m)) if m.contains("orders:read"))
        );
        let mut no_role = good.clone();
        no_role["realm_access"]["roles"] = serde_json::json!(["user"]);
        assert!(matches!(
            check(&claims(no_role), &jwt, NOW),
            Err(Denial::Forbidden(_))
        ));
        let mut worded_role = good;
        worded_role["realm_access"]["roles"] = "user admin".into();
        assert!(
            matches!(
                check(&claims(worded_role), &jwt, NOW),
                Err(Denial::Forbidden(_))
            ),
            "any_of compares a string whole"
        );
    }

    #[test]
    fn claim_names_with_dots_are_found_whole() {
        let c = claims(serde_json::json!({ "https://example.com/roles": ["a"] }));
        assert!(lookup(&c, "https://example.com/roles").is_some());
    }
}
