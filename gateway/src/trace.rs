//! W3C Trace Context (https://www.w3.org/TR/trace-context/): the gateway
//! continues the trace a client's `traceparent` names, as a span of its own,
//! or starts one when there is none (or it is malformed), so every request
//! reaches its upstream with a `traceparent` and logs can name its trace.

use http::header::{HeaderMap, HeaderName, HeaderValue};

pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// `tracestate` longer than this is dropped (the spec lets a vendor keep at
/// least 512 characters; longer ones may be truncated or dropped).
const MAX_TRACESTATE: usize = 512;

/// One request's place in its trace, as sent upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    /// The gateway's own span: the parent the upstream sees.
    pub span_id: [u8; 8],
    pub sampled: bool,
    /// The client's span, when its valid `traceparent` is continued.
    pub parent_id: Option<[u8; 8]>,
}

impl TraceContext {
    /// Continues the client's trace or starts one, and rewrites `headers`'
    /// `traceparent` (and drops a `tracestate` without a valid parent, or an
    /// oversized one) for the upstream.
    pub fn propagate(headers: &mut HeaderMap) -> Self {
        // One pass over the names first: most requests carry neither
        // header, and each lookup would cost a hash.
        let (mut given_parent, mut given_state) = (false, false);
        for name in headers.keys() {
            given_parent |= name == TRACEPARENT;
            given_state |= name == TRACESTATE;
        }
        let parent = given_parent
            .then(|| headers.get(&TRACEPARENT))
            .flatten()
            .and_then(|value| parse(value.as_bytes()));
        let context = match parent {
            Some((trace_id, parent_id, sampled)) => Self {
                trace_id,
                span_id: new_span_id(),
                sampled,
                parent_id: Some(parent_id),
            },
            None => Self {
                trace_id: new_trace_id(),
                span_id: new_span_id(),
                // A trace the gateway starts is recorded downstream by default.
                sampled: true,
                parent_id: None,
            },
        };
        // Several `tracestate` lines are one list; kept only with the
        // parent they belong to, and within the size kept.
        if given_state {
            let state: Vec<&[u8]> = headers
                .get_all(&TRACESTATE)
                .iter()
                .map(HeaderValue::as_bytes)
                .collect();
            let joined = (state.len() > 1).then(|| state.join(&b","[..]));
            let length = state.iter().map(|s| s.len() + 1).sum::<usize>();
            if context.parent_id.is_none() || length > MAX_TRACESTATE + 1 {
                headers.remove(&TRACESTATE);
            } else if let Some(joined) = joined
                && let Ok(value) = HeaderValue::from_bytes(&joined)
            {
                headers.insert(&TRACESTATE, value);
            }
        }
        if let Ok(value) = HeaderValue::from_bytes(&context.traceparent()) {
            headers.insert(&TRACEPARENT, value);
        }
        context
    }

    /// `00-TRACE_ID-SPAN_ID-FLAGS`, written on the stack: this runs for
    /// every request.
    pub fn traceparent(&self) -> [u8; 55] {
        let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
        hex_into(&self.trace_id, &mut text[3..35]);
        hex_into(&self.span_id, &mut text[36..52]);
        if self.sampled {
            text[54] = b'1';
        }
        text
    }

    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }
}

/// A valid `traceparent`'s trace id, parent id and sampled flag. Version `00` is read
/// exactly; a later version by its first four fields (as the spec asks);
/// `ff`, all-zero ids, upper-case hex and wrong lengths are invalid.
fn parse(value: &[u8]) -> Option<([u8; 16], [u8; 8], bool)> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let mut fields = text.split('-');
    let version = fields.next()?;
    let trace_id = fields.next()?;
    let parent_id = fields.next()?;
    let flags = fields.next()?;
    let rest = fields.next();
    if version.len() != 2 || version == "ff" || !is_lower_hex(version) {
        return None;
    }
    if version == "00" && (rest.is_some() || text.len() != 55) {
        return None;
    }
    let trace_id: [u8; 16] = unhex(trace_id)?;
    let parent_id: [u8; 8] = unhex(parent_id)?;
    let flags: [u8; 1] = unhex(flags)?;
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some((trace_id, parent_id, flags[0] & 1 == 1))
}

fn is_lower_hex(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !is_lower_hex(text) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

pub fn hex(bytes: &[u8]) -> String {
    let mut out = vec![b'0'; bytes.len() * 2];
    hex_into(bytes, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Writes `bytes` in lower-case hex into `out` (twice as long).
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

/// Random and never all zeros (which the spec reserves as invalid).
fn new_trace_id() -> [u8; 16] {
    fastrand::u128(1..).to_be_bytes()
}

fn new_span_id() -> [u8; 8] {
    fastrand::u64(1..).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        map
    }

    #[test]
    fn a_clients_trace_is_continued_as_a_span_of_the_gateways() {
        let mut h = headers(&[("traceparent", CLIENT), ("tracestate", "vendor=abc")]);
        let context = TraceContext::propagate(&mut h);
        assert!(context.parent_id.is_some() && context.sampled);
        assert_eq!(context.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let sent = h["traceparent"].to_str().expect("text");
        assert!(
            sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{sent}"
        );
        assert!(
            !sent.contains("00f067aa0ba902b7"),
            "a new parent: the gateway's span"
        );
        assert!(sent.ends_with("-01"));
        assert_eq!(h["tracestate"], "vendor=abc");
        let mut unsampled = headers(&[("traceparent", &CLIENT.replace("-01", "-00"))]);
        assert!(!TraceContext::propagate(&mut unsampled).sampled);
    }

    #[test]
    fn a_missing_or_malformed_parent_starts_a_new_trace() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let mut h = headers(&[("traceparent", bad), ("tracestate", "vendor=abc")]);
            let context = TraceContext::propagate(&mut h);
            assert!(context.parent_id.is_none(), "{bad:?}");
            assert_ne!(context.trace_id, [0; 16]);
            assert!(!h.contains_key("tracestate"), "no state without its parent");
            assert_eq!(h["traceparent"].len(), 55);
        }
        let mut none = HeaderMap::new();
        let started = TraceContext::propagate(&mut none);
        assert!(started.parent_id.is_none() && started.sampled);
        assert_eq!(none["traceparent"], &started.traceparent()[..]);
        // A later version is read by its first four fields.
        let mut future = headers(&[("traceparent", &format!("01{}-more", &CLIENT[2..]))]);
        assert!(TraceContext::propagate(&mut future).parent_id.is_some());
    }

    #[test]
    fn tracestate_lines_are_one_list_and_an_oversized_one_is_dropped() {
        let long = format!("v={}", "x".repeat(600));
        let mut h = headers(&[("traceparent", CLIENT), ("tracestate", &long)]);
        TraceContext::propagate(&mut h);
        assert!(!h.contains_key("tracestate"));
        let mut two = headers(&[
            ("traceparent", CLIENT),
            ("tracestate", "a=1"),
            ("tracestate", "b=2"),
        ]);
        TraceContext::propagate(&mut two);
        assert_eq!(two.get_all("tracestate").iter().count(), 1);
        assert_eq!(two["tracestate"], "a=1,b=2");
    }
}
