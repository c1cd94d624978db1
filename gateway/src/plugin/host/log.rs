//! `gateway:plugin/log`: plugin lines in the gateway's log, tagged with the
//! plugin and route.

use super::HostState;
use crate::plugin::bindings::{Level, gateway::plugin::log};

/// Longest log line a plugin may write; the rest is cut.
const MAX_LINE: usize = 4096;

/// `message` cut to `MAX_LINE` bytes with control characters escaped, so a
/// plugin can neither flood the log nor forge lines in it.
fn printable(message: &str) -> String {
    let mut end = message.len().min(MAX_LINE);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let mut line = String::with_capacity(end + 8);
    for c in message[..end].chars() {
        if c.is_control() {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    if end < message.len() {
        line.push('…');
    }
    line
}

impl log::Host for HostState {
    fn write(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let message = printable(&message);
        let (plugin, route) = (&*self.plugin, &*self.route);
        match level {
            Level::Trace => tracing::trace!(plugin, route, "{message}"),
            Level::Debug => tracing::debug!(plugin, route, "{message}"),
            Level::Info => tracing::info!(plugin, route, "{message}"),
            Level::Warn => tracing::warn!(plugin, route, "{message}"),
            Level::Error => tracing::error!(plugin, route, "{message}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_escaped_and_cut() {
        assert_eq!(printable("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
        let long = "é".repeat(MAX_LINE);
        let cut = printable(&long);
        assert!(cut.len() <= MAX_LINE + '…'.len_utf8());
        assert!(cut.ends_with('…'));
    }
}
