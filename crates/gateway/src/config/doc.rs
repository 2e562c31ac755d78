//! The configuration document before typing: TOML parsed into a tree that keeps the
//! byte span of every key and value, environment references expanded in place, and
//! typed deserialisation of one section at a time that records **every** error with
//! its location instead of stopping at the first.
//!
//! Why hand-written: serde stops at the first error of a struct, and `config check`
//! must report them all. After an error, the offending key is removed from a copy of
//! the section and deserialisation is tried again, so one mistake neither hides the
//! next nor cascades into spurious ones.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::{DeserializeOwned, IntoDeserializer};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::ConfigError;

/// Errors collected while reading one file, with what is needed to locate them.
pub struct Diagnostics<'t> {
    text: &'t str,
    file: Option<PathBuf>,
    /// Every error so far.
    pub errors: Vec<ConfigError>,
}

impl<'t> Diagnostics<'t> {
    /// Collect errors for `text`, read from `file` when it came from one.
    pub fn new(text: &'t str, file: Option<&Path>) -> Self {
        Diagnostics {
            text,
            file: file.map(Path::to_path_buf),
            errors: Vec::new(),
        }
    }

    /// Record an error at a byte span (or at the file's start when unknown).
    pub fn at(
        &mut self,
        span: Option<Range<usize>>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) {
        let (line, column) = span.map_or((1, 1), |s| line_col(self.text, s.start));
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line,
            column,
            path: path.into(),
            message: message.into(),
        });
    }

    /// Record an error at a spanned value.
    pub fn at_value<T>(
        &mut self,
        v: &Spanned<T>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.at(Some(v.span()), path, message);
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

/// Parse TOML, reporting every syntax error.
pub fn parse<'t>(text: &'t str, diags: &mut Diagnostics<'_>) -> Option<Spanned<DeTable<'t>>> {
    let (table, errors) = DeTable::parse_recoverable(text);
    if errors.is_empty() {
        return Some(table);
    }
    for e in errors {
        diags.at(e.span(), "", format!("TOML syntax: {}", e.message().trim()));
    }
    None
}

/// Expand `${VAR}` and `${VAR:-default}` in every string value of the tree (keys are
/// left alone). `$$` stands for a literal `$`.
pub fn expand_env(table: &mut DeTable<'_>, path: &str, diags: &mut Diagnostics<'_>) {
    for (key, value) in table.iter_mut() {
        let p = join(path, key.get_ref());
        expand_value(value, &p, diags);
    }
}

fn expand_value(value: &mut Spanned<DeValue<'_>>, path: &str, diags: &mut Diagnostics<'_>) {
    let span = value.span();
    match value.get_mut() {
        DeValue::String(s) if s.contains('$') => {
            match expand_str(s, |name| std::env::var(name).ok()) {
                Ok(expanded) => *s = expanded.into(),
                Err(message) => diags.at(Some(span), path, message),
            }
        }
        DeValue::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_value(item, &format!("{path}[{i}]"), diags);
            }
        }
        DeValue::Table(t) => expand_env(t, path, diags),
        _ => {}
    }
}

/// Expand the environment references of one string, looking variables up with `get`.
pub fn expand_str(s: &str, get: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or_else(|| {
                format!("unterminated environment reference in {s:?}: expected `}}`")
            })?;
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(format!(
                    "`${{{inner}}}` is not an environment reference: write ${{NAME}} or ${{NAME:-default}}"
                ));
            }
            match (get(name).filter(|v| !v.is_empty()), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set (give a default with ${{{name}:-default}})"
                    ));
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// `a.b` / `a` / `b` when `a` is empty.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Deserialise one section, recording every error. Returns the value when it could be
/// built (possibly after dropping bad keys, whose errors are recorded).
pub fn typed<T: DeserializeOwned>(
    value: &Spanned<DeValue<'_>>,
    path: &str,
    diags: &mut Diagnostics<'_>,
) -> Option<T> {
    let mut v = value.clone();
    let mut removed: Vec<String> = Vec::new();
    // Each round removes one key, so the number of keys bounds the loop.
    for _ in 0..=count_keys(value.get_ref()) {
        match T::deserialize(v.clone().into_deserializer()) {
            Ok(t) => return Some(t),
            Err(e) => {
                let message = e.message().trim().to_string();
                if removed
                    .iter()
                    .any(|k| message == format!("missing field `{k}`"))
                {
                    // Already reported as a bad value of that key.
                    return None;
                }
                let span = e.span();
                let (key_path, span) = match span.clone() {
                    Some(s) => match locate(&v, &s) {
                        Some(found) => (found.0, Some(found.1)),
                        None => (Vec::new(), Some(s)),
                    },
                    None => (Vec::new(), None),
                };
                let full = key_path.iter().fold(path.to_string(), |p, k| join(&p, k));
                diags.at(span.or(Some(value.span())), full, message);
                if key_path.is_empty() || !remove(&mut v, &key_path) {
                    return None;
                }
                if let Some(last) = key_path.last() {
                    removed.push(last.clone());
                }
            }
        }
    }
    None
}

fn count_keys(v: &DeValue<'_>) -> usize {
    match v {
        DeValue::Table(t) => t.len() + t.values().map(|v| count_keys(v.get_ref())).sum::<usize>(),
        DeValue::Array(a) => a.iter().map(|v| count_keys(v.get_ref())).sum(),
        _ => 0,
    }
}

/// The key path (within nested tables) of the deepest key whose key or value span
/// holds `span`, and the span to report (the key's, for a key-level error).
fn locate(v: &Spanned<DeValue<'_>>, span: &Range<usize>) -> Option<(Vec<String>, Range<usize>)> {
    let DeValue::Table(t) = v.get_ref() else {
        return None;
    };
    for (k, val) in t.iter() {
        let ks = k.span();
        let vs = val.span();
        let in_key = ks.start <= span.start && span.start < ks.end.max(ks.start + 1);
        let in_val = vs.start <= span.start && span.start < vs.end.max(vs.start + 1);
        if in_key || in_val {
            let mut path = vec![k.get_ref().to_string()];
            if in_val {
                if let Some((deeper, s)) = locate(val, span) {
                    path.extend(deeper);
                    return Some((path, s));
                }
            }
            return Some((path, if in_key { ks } else { span.clone() }));
        }
    }
    None
}

fn remove(v: &mut Spanned<DeValue<'_>>, key_path: &[String]) -> bool {
    let DeValue::Table(t) = v.get_mut() else {
        return false;
    };
    match key_path {
        [] => false,
        [k] => t.remove(k.as_str()).is_some(),
        [k, rest @ ..] => t
            .get_mut(k.as_str())
            .is_some_and(|inner| remove(inner, rest)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_references() {
        let get = |n: &str| match n {
            "A" => Some("alpha".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        assert_eq!(expand_str("x${A}y", get).as_deref(), Ok("xalphay"));
        assert_eq!(expand_str("${B:-dflt}", get).as_deref(), Ok("dflt"));
        assert_eq!(expand_str("${EMPTY:-d}", get).as_deref(), Ok("d"));
        assert_eq!(expand_str("$$5 and $x", get).as_deref(), Ok("$5 and $x"));
        assert!(expand_str("${B}", get).is_err_and(|e| e.contains("B is not set")));
        assert!(expand_str("${A", get).is_err());
        assert!(expand_str("${1A}", get).is_err());
    }

    #[test]
    fn line_and_column() {
        let t = "a\nbcd\né=1";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 3), (2, 2));
        assert_eq!(line_col(t, t.len() - 1), (3, 3));
    }
}
