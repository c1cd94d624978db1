//! YAML text to a JSON value tree, remembering the line of every field so that
//! errors can say where they are, and expanding `${ENV_VAR}` in values.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A parsed document: the value tree and, for each field path
/// (`routes[2].upstream`), the 1-based line it starts on.
#[derive(Debug)]
pub struct Document {
    pub value: Value,
    pub lines: LineMap,
}

/// Field path to line, with a fallback to the nearest enclosing field.
#[derive(Debug, Default)]
pub struct LineMap(HashMap<String, usize>);

impl LineMap {
    /// The line of `path`, or of the closest parent that has one.
    pub fn line_of(&self, path: &str) -> usize {
        let mut path = path;
        loop {
            if let Some(line) = self.0.get(path) {
                return *line;
            }
            match path.rfind(['.', '[']) {
                Some(cut) => path = &path[..cut],
                None => return self.0.get("").copied().unwrap_or(1),
            }
        }
    }
}

/// A YAML error with the line it was found on.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    pub line: usize,
    pub path: String,
    pub message: String,
}

/// Where to look up `${NAME}`; a parameter so tests need not touch the process env.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

pub fn parse(text: &str, env: EnvLookup) -> Result<Document, YamlError> {
    let mut builder = Builder {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
        built: Budget::default(),
        depth: 0,
        lines: HashMap::new(),
        env,
    };
    builder.expect_start()?;
    let value = match builder.next()? {
        (Event::StreamEnd, _) => Value::Object(Map::new()),
        (Event::DocumentStart, mark) => {
            builder.lines.insert(String::new(), mark.line());
            let value = builder.node(String::new())?;
            match builder.next()? {
                (Event::DocumentEnd, _) => {}
                (_, mark) => return Err(error(mark, "", "unexpected content after the document")),
            }
            if let (Event::DocumentStart, mark) = builder.next()? {
                return Err(error(mark, "", "only one YAML document is allowed"));
            }
            value
        }
        (_, mark) => return Err(error(mark, "", "expected a YAML document")),
    };
    Ok(Document {
        value,
        lines: LineMap(builder.lines),
    })
}

/// Values, and bytes of text (scalars, keys, field paths), a document may
/// expand to, aliases counted at their full size: a "billion laughs" of
/// nested aliases, or a long string repeated by aliases, is refused, not built.
const MAX_VALUES: usize = 100_000;
const MAX_BYTES: usize = 32 << 20;
/// Nesting a document may have; deeper would recurse the stack away.
const MAX_DEPTH: usize = 64;

/// Values and bytes of text built.
#[derive(Debug, Clone, Copy, Default)]
struct Budget {
    values: usize,
    bytes: usize,
}

struct Builder<'t, 'e> {
    parser: Parser<std::str::Chars<'t>>,
    /// Each anchored value with the values and bytes it holds.
    anchors: HashMap<usize, (Value, Budget)>,
    /// What has been built so far, and how deep the current value is.
    built: Budget,
    depth: usize,
    lines: HashMap<String, usize>,
    env: EnvLookup<'e>,
}

impl Builder<'_, '_> {
    fn next(&mut self) -> Result<(Event, Marker), YamlError> {
        self.parser.next_token().map_err(|e| YamlError {
            line: e.marker().line(),
            path: String::new(),
            message: e.info().to_string(),
        })
    }

    fn expect_start(&mut self) -> Result<(), YamlError> {
        match self.next()? {
            (Event::StreamStart, _) => Ok(()),
            (_, mark) => Err(error(mark, "", "not a YAML stream")),
        }
    }

    /// Reads one node (scalar, sequence or mapping) found at `path`.
    fn node(&mut self, path: String) -> Result<Value, YamlError> {
        self.depth += 1;
        let node = self.bounded_node(path);
        self.depth -= 1;
        node
    }

    fn bounded_node(&mut self, path: String) -> Result<Value, YamlError> {
        let (event, mark) = self.next()?;
        if self.depth > MAX_DEPTH {
            return Err(error(
                mark,
                &path,
                &format!("the document nests deeper than {MAX_DEPTH} levels"),
            ));
        }
        let before = self.built;
        self.count(
            Budget {
                values: 1,
                bytes: path.len(),
            },
            mark,
            &path,
        )?;
        self.lines.entry(path.clone()).or_insert(mark.line());
        let (value, anchor) = match event {
            Event::Scalar(text, style, anchor, _) => {
                self.count(
                    Budget {
                        values: 0,
                        bytes: text.len(),
                    },
                    mark,
                    &path,
                )?;
                (self.scalar(&text, style, mark, &path)?, anchor)
            }
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                loop {
                    if let (Event::SequenceEnd, _) = self.peek()? {
                        self.next()?;
                        break;
                    }
                    items.push(self.node(format!("{path}[{}]", items.len()))?);
                }
                (Value::Array(items), anchor)
            }
            Event::MappingStart(anchor, _) => (Value::Object(self.mapping(&path)?), anchor),
            Event::Alias(id) => match self.anchors.get(&id) {
                Some((value, size)) => {
                    let (value, size) = (value.clone(), *size);
                    self.count(size, mark, &path)?;
                    (value, 0)
                }
                None => return Err(error(mark, &path, "alias to an unknown anchor")),
            },
            other => return Err(error(mark, &path, &format!("unexpected YAML {other:?}"))),
        };
        if anchor != 0 {
            let size = Budget {
                values: self.built.values - before.values,
                bytes: self.built.bytes - before.bytes,
            };
            self.anchors.insert(anchor, (value.clone(), size));
        }
        Ok(value)
    }

    /// Counts `more` toward the document's bounds.
    fn count(&mut self, more: Budget, mark: Marker, path: &str) -> Result<(), YamlError> {
        self.built.values = self.built.values.saturating_add(more.values);
        self.built.bytes = self.built.bytes.saturating_add(more.bytes);
        if self.built.values > MAX_VALUES || self.built.bytes > MAX_BYTES {
            return Err(error(
                mark,
                path,
                &format!(
                    "the document expands to more than {MAX_VALUES} values or {} MiB of text (through YAML aliases?)",
                    MAX_BYTES >> 20
                ),
            ));
        }
        Ok(())
    }

    fn mapping(&mut self, path: &str) -> Result<Map<String, Value>, YamlError> {
        let mut map = Map::new();
        loop {
            let (event, mark) = self.next()?;
            let key = match event {
                Event::MappingEnd => return Ok(map),
                Event::Scalar(key, ..) => key,
                _ => return Err(error(mark, path, "mapping keys must be plain text")),
            };
            let child = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            if map.contains_key(&key) {
                return Err(error(mark, &child, "duplicate key"));
            }
            self.lines.insert(child.clone(), mark.line());
            let value = self.node(child)?;
            map.insert(key, value);
        }
    }

    fn peek(&mut self) -> Result<&(Event, Marker), YamlError> {
        self.parser.peek().map_err(|e| YamlError {
            line: e.marker().line(),
            path: String::new(),
            message: e.info().to_string(),
        })
    }

    fn scalar(
        &self,
        text: &str,
        style: TScalarStyle,
        mark: Marker,
        path: &str,
    ) -> Result<Value, YamlError> {
        let text = expand_env(text, self.env).map_err(|m| error(mark, path, &m))?;
        if style != TScalarStyle::Plain {
            return Ok(Value::String(text));
        }
        Ok(resolve_plain(&text))
    }
}

/// YAML 1.2 core schema for unquoted scalars: null, booleans, numbers, else text.
fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(n) = text.parse::<i64>() {
        return Value::Number(n.into());
    }
    if let Ok(n) = text.parse::<u64>() {
        return Value::Number(n.into());
    }
    let looks_numeric = text
        .trim_start_matches(['-', '+'])
        .starts_with(|c: char| c.is_ascii_digit() || c == '.');
    if looks_numeric
        && let Ok(f) = text.parse::<f64>()
        && let Some(n) = Number::from_f64(f)
    {
        return Value::Number(n);
    }
    Value::String(text.to_string())
}

/// Replaces `${NAME}` with the variable's value; `$${` stands for a literal `${`.
pub fn expand_env(text: &str, env: EnvLookup) -> Result<String, String> {
    if !text.contains("${") {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        if rest[..at].ends_with('$') {
            out.push_str(&rest[..at - 1]);
            out.push_str("${");
            rest = &rest[at + 2..];
            continue;
        }
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let Some(end) = after.find('}') else {
            return Err("unclosed `${` in value".to_string());
        };
        let name = &after[..end];
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "`${{{name}}}` is not a valid environment variable name"
            ));
        }
        match env(name) {
            Some(value) => out.push_str(&value),
            None => return Err(format!("environment variable `{name}` is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn error(mark: Marker, path: &str, message: &str) -> YamlError {
    YamlError {
        line: mark.line(),
        path: path.to_string(),
        message: message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn records_the_line_of_every_field() {
        let doc = parse(
            "listen: 1.2.3.4:80\nroutes:\n  - name: a\n    upstream: x\n  - name: b\n    upstream: y\n",
            &no_env,
        )
        .expect("valid yaml");
        assert_eq!(doc.lines.line_of("listen"), 1);
        assert_eq!(doc.lines.line_of("routes[1].upstream"), 6);
        assert_eq!(doc.lines.line_of("routes[1]"), 5);
        // An unknown path falls back to its nearest parent.
        assert_eq!(doc.lines.line_of("routes[1].match.host"), 5);
        assert_eq!(doc.value["routes"][1]["name"], "b");
    }

    #[test]
    fn resolves_plain_scalars_like_yaml_core_schema() {
        let doc = parse("a: 1\nb: '1'\nc: true\nd: ~\ne: 2.5\nf: 1s\n", &no_env).expect("yaml");
        assert_eq!(doc.value["a"], 1);
        assert_eq!(doc.value["b"], "1");
        assert_eq!(doc.value["c"], true);
        assert!(doc.value["d"].is_null());
        assert_eq!(doc.value["e"], 2.5);
        assert_eq!(doc.value["f"], "1s");
    }

    #[test]
    fn expands_environment_variables_in_values() {
        let env = |name: &str| (name == "TOKEN").then(|| "s3cret".to_string());
        let doc = parse("a: \"Bearer ${TOKEN}\"\nb: $${TOKEN}\n", &env).expect("yaml");
        assert_eq!(doc.value["a"], "Bearer s3cret");
        assert_eq!(doc.value["b"], "${TOKEN}");
        let err = parse("x: 1\nb: ${MISSING}\n", &env).expect_err("missing var");
        assert_eq!(err.line, 2);
        assert_eq!(err.message, "environment variable `MISSING` is not set");
    }

    #[test]
    fn rejects_duplicate_keys_and_syntax_errors_with_lines() {
        let err = parse("a: 1\nb: 2\na: 3\n", &no_env).expect_err("duplicate");
        assert_eq!((err.line, err.message.as_str()), (3, "duplicate key"));
        let err = parse("a: [1, 2\nb: 3\n", &no_env).expect_err("syntax");
        assert!(err.line >= 1, "{err:?}");
    }

    #[test]
    fn anchors_and_aliases_copy_values() {
        let doc = parse("t: &t { connect: 1s }\nu: *t\n", &no_env).expect("yaml");
        assert_eq!(doc.value["u"]["connect"], "1s");
    }

    #[test]
    fn billion_laughs_and_deep_nesting_are_refused() {
        let mut laughs = String::from("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for (i, name) in ["b", "c", "d", "e", "f", "g", "h", "i"].iter().enumerate() {
            let prev = ["a", "b", "c", "d", "e", "f", "g", "h"][i];
            let refs = vec![format!("*{prev}"); 10].join(", ");
            laughs.push_str(&format!("{name}: &{name} [{refs}]\n"));
        }
        let err = parse(&laughs, &no_env).expect_err("refused");
        assert!(err.message.contains("more than 100000 values"), "{err:?}");
        let long = format!(
            "a: &a \"{}\"\nb: [{}]\n",
            "x".repeat(1 << 20),
            vec!["*a"; 64].join(", ")
        );
        let err = parse(&long, &no_env).expect_err("refused");
        assert!(err.message.contains("MiB of text"), "{err:?}");
        let deep = format!("a: {}{}\n", "[".repeat(200), "]".repeat(200));
        let err = parse(&deep, &no_env).expect_err("refused");
        assert!(err.message.contains("deeper than 64"), "{err:?}");
        // Ordinary reuse is fine.
        let fine = "t: &t { connect: 1s }\nu: *t\nv: *t\n";
        assert!(parse(fine, &no_env).is_ok());
    }
}
