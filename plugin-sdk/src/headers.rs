//! A list of header lines with case-insensitive lookups.

/// Header lines in order. Names are compared case-insensitively and stored
/// in lower case, as the gateway passes them.
///
/// ```
/// use plugin_sdk::Headers;
///
/// let mut h = Headers::new();
/// h.append("Accept", "text/html");
/// h.append("accept", "application/json");
/// assert_eq!(h.get_all("ACCEPT").count(), 2);
/// h.insert("accept", "*/*");
/// assert_eq!(h.get("accept"), Some("*/*"));
/// h.rename("accept", "x-original-accept");
/// assert!(!h.contains("accept"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    lines: Vec<(String, String)>,
}

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.lines
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.lines
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether `name` has at least one value.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Sets `name` to `value`, replacing every earlier value.
    pub fn insert(&mut self, name: &str, value: &str) {
        self.remove(name);
        self.append(name, value);
    }

    /// Adds a line for `name`, keeping earlier values.
    pub fn append(&mut self, name: &str, value: &str) {
        self.lines
            .push((name.to_ascii_lowercase(), value.to_string()));
    }

    /// Removes every line of `name`; says whether there was one.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.lines.len();
        self.lines.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.lines.len() != before
    }

    /// Renames every line of `from` to `to`, keeping values and order.
    pub fn rename(&mut self, from: &str, to: &str) {
        let to = to.to_ascii_lowercase();
        for (name, _) in &mut self.lines {
            if name.eq_ignore_ascii_case(from) {
                name.clone_from(&to);
            }
        }
    }

    /// Every line as (name, value), in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.lines.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The number of lines.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether there are no lines.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    pub(crate) fn from_lines(lines: Vec<(String, String)>) -> Self {
        Self { lines }
    }

    pub(crate) fn into_lines(self) -> Vec<(String, String)> {
        self.lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_append_keeps_remove_and_rename_cover_all_lines() {
        let mut h = Headers::new();
        h.append("X-A", "1");
        h.append("x-a", "2");
        assert_eq!(h.get_all("x-a").collect::<Vec<_>>(), vec!["1", "2"]);
        h.insert("x-a", "3");
        assert_eq!(h.get_all("X-A").collect::<Vec<_>>(), vec!["3"]);
        h.append("x-a", "4");
        h.rename("x-a", "X-B");
        assert_eq!(h.get_all("x-b").collect::<Vec<_>>(), vec!["3", "4"]);
        assert!(h.remove("x-b"));
        assert!(!h.remove("x-b"));
        assert!(h.is_empty());
    }
}
