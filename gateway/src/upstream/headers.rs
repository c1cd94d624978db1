//! Proxy header rules: hop-by-hop removal and request ids.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Headers that describe one connection and must not be forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 5] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Is this an HTTP/1.1 WebSocket upgrade request or response?
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    // `Upgrade` first: almost no message has one, so this is usually one lookup.
    let websocket = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    websocket && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

/// The comma-separated tokens of every `Connection` header, trimmed.
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// Removes hop-by-hop headers; a WebSocket upgrade keeps `Connection: upgrade`
/// and `Upgrade` so the next hop can switch protocols too.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names, no hashing: most messages carry none of these
    // or only `Connection`, and every map lookup costs a hash (this ran twice
    // per request and was 8% of the proxy's instructions before).
    let (mut connection, mut upgrade) = (false, false);
    let mut doomed: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if name == header::CONNECTION {
            connection = true;
        } else if name == header::UPGRADE {
            upgrade = true;
        } else if HOP_BY_HOP.contains(name) || name.as_str().starts_with("proxy-") {
            doomed.push(name.clone());
        }
    }
    if !connection && !upgrade && doomed.is_empty() {
        return;
    }
    let websocket = connection && upgrade && is_websocket_upgrade(headers);
    if connection {
        // Headers named by Connection are hop-by-hop as well. `close` names
        // no header; `upgrade` and `keep-alive` are dealt with here anyway;
        // the ids the gateway sets itself (request id, trace context) are
        // never a client's to strip.
        let named: Vec<HeaderName> = connection_tokens(headers)
            .filter(|t| {
                ![
                    "close",
                    "keep-alive",
                    "upgrade",
                    "x-request-id",
                    "traceparent",
                    "tracestate",
                ]
                .iter()
                .any(|k| t.eq_ignore_ascii_case(k))
            })
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        doomed.extend(named);
        headers.remove(header::CONNECTION);
    }
    for name in doomed {
        headers.remove(name);
    }
    if websocket {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else if upgrade {
        headers.remove(header::UPGRADE);
    }
}

/// The request's id: the client's `X-Request-Id` if it sent a usable one, else a new UUID v4.
pub fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    match headers.entry(&X_REQUEST_ID) {
        header::Entry::Occupied(given) if !given.get().is_empty() && given.get().len() <= 200 => {
            given.get().clone()
        }
        header::Entry::Occupied(mut unusable) => {
            let id = new_request_id();
            unusable.insert(id.clone());
            id
        }
        header::Entry::Vacant(slot) => slot.insert(new_request_id()).clone(),
    }
}

fn new_request_id() -> HeaderValue {
    let mut bytes = fastrand::u128(..).to_be_bytes();
    // Version 4, variant 1 bits, as RFC 9562 lays out.
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    // Written by hand, a byte at a time: this runs for every request, and
    // both `format!` and a nibble-by-nibble u128 loop showed in profiles.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [b'-'; 36];
    let mut at = 0;
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        text[at] = HEX[usize::from(byte >> 4)];
        text[at + 1] = HEX[usize::from(byte & 0xf)];
        at += 2;
    }
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// A header map from name/value pairs, for tests.
#[cfg(test)]
pub fn test_headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).expect("name"),
            v.parse().expect("value"),
        );
    }
    map
}

#[cfg(test)]
mod tests {
    use super::test_headers as headers;
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = headers(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("x-kept", "yes"),
        ]);
        remove_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-kept"]);
    }

    #[test]
    fn a_client_cannot_strip_the_ids_the_gateway_sets() {
        let mut h = test_headers(&[
            (
                "connection",
                "X-Request-Id, traceparent, tracestate, x-other",
            ),
            ("x-request-id", "r-1"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "a=1"),
            ("x-other", "gone"),
        ]);
        remove_hop_by_hop(&mut h);
        for kept in ["x-request-id", "traceparent", "tracestate"] {
            assert!(h.contains_key(kept), "{kept}");
        }
        assert!(!h.contains_key("x-other"));
    }

    #[test]
    fn connection_tokens_are_case_insensitive_and_close_names_nothing() {
        let mut h = headers(&[
            ("connection", "Close, X-Hop"),
            ("x-hop", "1"),
            ("x-kept", "yes"),
        ]);
        remove_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-kept"]);
        let mut plain = headers(&[("x-kept", "yes")]);
        remove_hop_by_hop(&mut plain);
        assert_eq!(plain.len(), 1);
    }

    #[test]
    fn websocket_upgrades_keep_their_upgrade_headers() {
        let mut h = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("keep-alive", "1"),
        ]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert!(!h.contains_key("keep-alive"));
    }

    #[test]
    fn request_ids_are_kept_or_made() {
        let mut h = headers(&[("x-request-id", "abc")]);
        assert_eq!(ensure_request_id(&mut h), "abc");
        let mut empty = headers(&[("x-request-id", "")]);
        let made = ensure_request_id(&mut empty);
        assert_eq!(made.len(), 36);
        assert_eq!(empty["x-request-id"], made);
        let mut h = HeaderMap::new();
        let id = ensure_request_id(&mut h);
        let text = id.to_str().expect("ascii");
        assert_eq!(text.len(), 36);
        assert_eq!(&text[14..15], "4");
        let dashes: Vec<usize> = text.match_indices('-').map(|(i, _)| i).collect();
        assert_eq!(dashes, vec![8, 13, 18, 23]);
        assert!(
            matches!(&text[19..20], "8" | "9" | "a" | "b"),
            "variant bits: {text}"
        );
        assert!(text.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()));
        assert_eq!(h["x-request-id"], id);
        assert_ne!(ensure_request_id(&mut HeaderMap::new()), id);
    }
}
