//! Where a key is in the configuration's text: the line and column an
//! operator's editor jumps to, from the spans the TOML parser keeps.

use std::fmt;

use toml::de::{DeTable, DeValue};

use super::FieldError;

/// A place in the text, both counted from 1 (columns in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The line.
    pub line: usize,
    /// The column.
    pub column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// A problem in a configuration file, with where its key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The problem, by key.
    pub error: FieldError,
    /// Its value's place in the text; for a key that is missing, its
    /// table's. `None` when the text has no such table either.
    pub at: Option<Position>,
}

impl std::ops::Deref for Located {
    type Target = FieldError;

    fn deref(&self) -> &FieldError {
        &self.error
    }
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some(at) => write!(f, "{} ({at}): {}", self.error.key, self.error.message),
            None => self.error.fmt(f),
        }
    }
}

/// `errors`, each with where its key is in `text`.
pub fn locate(text: &str, errors: Vec<FieldError>) -> Vec<Located> {
    let doc = DeTable::parse(text).ok();
    errors
        .into_iter()
        .map(|error| {
            let at = doc.as_ref().and_then(|d| offset(d.get_ref(), d.span().start, &error.key));
            Located { at: at.map(|o| position(text, o)), error }
        })
        .collect()
}

/// The byte offset of `key` (`channels[2].ingest.uri`) in `table`, whose
/// own offset is `start`: of its value, or of the deepest part found.
fn offset(table: &DeTable<'_>, start: usize, key: &str) -> Option<usize> {
    let mut at = start;
    let mut here: Option<&DeValue<'_>> = None;
    for part in key.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let t = match here {
            None => table,
            Some(DeValue::Table(t)) => t,
            Some(_) => return Some(at),
        };
        let Some((_, v)) = t.iter().find(|(k, _)| &**k.get_ref() == name) else { return Some(at) };
        at = v.span().start;
        here = Some(v.get_ref());
        if let Some(i) = index {
            let Some(DeValue::Array(items)) = here else { return Some(at) };
            let Some(item) = items.get(i) else { return Some(at) };
            at = item.span().start;
            here = Some(item.get_ref());
        }
    }
    Some(at)
}

/// Line and column of byte `offset` in `text`.
fn position(text: &str, offset: usize) -> Position {
    // The parser's spans fall on character boundaries.
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Position { line, column }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str, key: &str) -> Option<(usize, usize)> {
        let e = FieldError { key: key.into(), message: String::new() };
        locate(text, vec![e])[0].at.map(|p| (p.line, p.column))
    }

    #[test]
    fn a_key_is_found_by_its_path_through_tables_and_arrays_of_tables() {
        let text = "[event]\ntitle = \"t\"\n\n[[channels]]\nid = \"a\"\n\n[[channels]]\nid = \"b\"\n\
                    ingest = { type = \"udp\", uri = \"udp//x\" }\n";
        assert_eq!(at(text, "event.title"), Some((2, 9)));
        assert_eq!(at(text, "channels[1].id"), Some((8, 6)));
        assert_eq!(at(text, "channels[1].ingest.uri"), Some((9, 32)));
        // A missing key: where its table is.
        assert_eq!(at(text, "channels[0].timezone").map(|p| p.0), Some(4));
        // Not TOML: nowhere.
        assert_eq!(at("[event", "event.title"), None);
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        assert_eq!(at("a = { name = \"Ülke\", k = 1 }\n", "a.k"), Some((1, 26)));
    }
}
