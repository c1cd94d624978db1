//! Header lines with case-insensitive lookups, held here or in the gateway.

use std::cell::RefCell;

use crate::bindings::gateway::plugin::message as host;

/// Header lines in order. Names are compared case-insensitively and stored
/// in lower case, as the gateway passes them.
///
/// In a hook, the request's or response's headers stay in the gateway:
/// every read and edit is a call into it, so only the headers a plugin
/// touches cross the boundary. Headers a plugin builds itself (for
/// [`Response::new`](crate::Response::new), or in unit tests) live here.
///
/// Edits take `&self`, as they are calls into the gateway rather than
/// changes to this value; so reading something else of the request while
/// editing its headers needs no second borrow:
/// `req.headers().insert("x-id", &req.request_id())`.
///
/// ```
/// use plugin_sdk::Headers;
///
/// let h = Headers::new();
/// h.append("Accept", "text/html");
/// h.append("accept", "application/json");
/// assert_eq!(h.get_all("ACCEPT").len(), 2);
/// h.insert("accept", "*/*");
/// assert_eq!(h.get("accept").as_deref(), Some("*/*"));
/// h.rename("accept", "x-original-accept");
/// assert!(!h.contains("accept"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headers {
    lines: Lines,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Lines {
    Local(RefCell<Vec<(String, String)>>),
    /// The message of the hook in progress, in the gateway.
    Gateway,
}

impl Default for Headers {
    fn default() -> Self {
        Self::new()
    }
}

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self {
            lines: Lines::Local(RefCell::new(Vec::new())),
        }
    }

    pub(crate) fn gateway() -> Self {
        Self {
            lines: Lines::Gateway,
        }
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<String> {
        match &self.lines {
            Lines::Local(lines) => lines
                .borrow()
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone()),
            Lines::Gateway => host::get_header(name),
        }
    }

    /// Every value of `name`, in order.
    pub fn get_all(&self, name: &str) -> Vec<String> {
        match &self.lines {
            Lines::Local(lines) => lines
                .borrow()
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
                .collect(),
            Lines::Gateway => host::get_header_values(name),
        }
    }

    /// Whether `name` has at least one value.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Sets `name` to `value`, replacing every earlier value.
    pub fn insert(&self, name: &str, value: &str) {
        match &self.lines {
            Lines::Local(_) => {
                self.remove(name);
                self.append(name, value);
            }
            Lines::Gateway => host::set_header(name, value),
        }
    }

    /// Adds a line for `name`, keeping earlier values.
    pub fn append(&self, name: &str, value: &str) {
        match &self.lines {
            Lines::Local(lines) => lines
                .borrow_mut()
                .push((name.to_ascii_lowercase(), value.to_string())),
            Lines::Gateway => host::append_header(name, value),
        }
    }

    /// Removes every line of `name`; says whether there was one.
    pub fn remove(&self, name: &str) -> bool {
        match &self.lines {
            Lines::Local(lines) => {
                let mut lines = lines.borrow_mut();
                let before = lines.len();
                lines.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
                lines.len() != before
            }
            Lines::Gateway => host::remove_header(name),
        }
    }

    /// Renames every line of `from` to `to`, keeping values and their order.
    pub fn rename(&self, from: &str, to: &str) {
        let values = self.get_all(from);
        if !values.is_empty() {
            self.remove(from);
            for value in &values {
                self.append(to, value);
            }
        }
    }

    /// Every line as (name, value), in order.
    pub fn lines(&self) -> Vec<(String, String)> {
        match &self.lines {
            Lines::Local(lines) => lines.borrow().clone(),
            Lines::Gateway => host::get_headers()
                .into_iter()
                .map(|h| (h.name, h.value))
                .collect(),
        }
    }

    /// The number of lines.
    pub fn len(&self) -> usize {
        match &self.lines {
            Lines::Local(lines) => lines.borrow().len(),
            Lines::Gateway => host::get_headers().len(),
        }
    }

    /// Whether there are no lines.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_append_keeps_remove_and_rename_cover_all_lines() {
        let h = Headers::new();
        h.append("X-A", "1");
        h.append("x-a", "2");
        assert_eq!(h.get_all("x-a"), vec!["1", "2"]);
        h.insert("x-a", "3");
        assert_eq!(h.get_all("X-A"), vec!["3"]);
        h.append("x-a", "4");
        h.rename("x-a", "X-B");
        assert_eq!(h.get_all("x-b"), vec!["3", "4"]);
        assert!(h.remove("x-b"));
        assert!(!h.remove("x-b"));
        assert!(h.is_empty());
    }
}
