//! Strict JSON for token headers and payloads: a JSON object, valid UTF-8, no lone
//! surrogates, no key twice at any depth.
//!
//! `serde_json` keeps the last of two equal keys, and Microsoft's reader does the same
//! (`claims[name] = value` in `JsonWebToken.ReadPayloadValue`), so a token carrying
//! `tid` twice means one tenant to one reader and another to the next. No crate offers
//! a duplicate-refusing `Value`; this is the visitor that builds one (serde_json still
//! does all the parsing, escapes and surrogate checks included).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// The longest piece of attacker-chosen text (a `kid`, a claim name) put in a message.
pub(crate) const SHOWN_MAX: usize = 64;

/// `s` for a message: quoted, at most [`SHOWN_MAX`] characters, with the full length
/// said when it was cut (a 10 KB `kid` must not land whole in every log line).
pub(crate) fn shown(s: &str) -> String {
    if s.chars().count() <= SHOWN_MAX {
        return format!("{s:?}");
    }
    let head: String = s.chars().take(SHOWN_MAX).collect();
    format!("{head:?}… ({} bytes)", s.len())
}

struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // serde_json never yields a non-finite number; `Null` would only stand for one.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(v) = map.next_value()?;
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "the key {} appears twice",
                    shown(&key)
                )));
            }
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// Parse one decoded token part (`what`: "header" or "payload") into its object.
pub(crate) fn object(bytes: &[u8], what: &str) -> Result<Map<String, Value>, String> {
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(format!(
            "the {what} is not UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        ));
    }
    let Strict(value) = serde_json::from_slice(bytes).map_err(|e| {
        let text = e.to_string();
        if text.contains("surrogate") || text.contains("hex escape") {
            // serde_json's words for `\ud800` with no partner, said plainly.
            format!(
                "the {what} has a \\u escape that is no character (a lone UTF-16 surrogate) at line {} column {}",
                e.line(),
                e.column()
            )
        } else {
            format!("the {what} is not valid JSON: {e}")
        }
    })?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(format!(
            "the {what} is a JSON {}, not an object",
            kind(&other)
        )),
    }
}

/// A JSON value's kind, for messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn refuses_what_a_lenient_reader_would_take() {
        assert!(object(br#"{"a":1}"#, "header").is_ok());
        let e = object(br#"{"tid":"a","x":{"b":1,"b":2}}"#, "payload").unwrap_err();
        assert!(e.contains("the key \"b\" appears twice"), "{e}");
        let e = object(br#"{"tid":"a","tid":"b"}"#, "payload").unwrap_err();
        assert!(e.contains("\"tid\" appears twice"), "{e}");
        let e = object(br#"["RS256","k1"]"#, "header").unwrap_err();
        assert_eq!(e, "the header is a JSON array, not an object");
        let e = object(b"{\"a\":\"\xff\"}", "payload").unwrap_err();
        assert!(e.contains("not UTF-8 (invalid byte at offset 6)"), "{e}");
        let e = object(br#"{"a":"\ud800"}"#, "payload").unwrap_err();
        assert!(e.contains("surrogate"), "{e}");
        // a paired surrogate is a character like any other
        assert!(object(br#"{"a":"\ud83d\ude00"}"#, "payload").is_ok());
    }

    #[test]
    fn long_text_is_cut_in_messages() {
        let s = shown(&"k".repeat(10_000));
        assert!(s.len() < 100, "{s}");
        assert!(s.ends_with("(10000 bytes)"), "{s}");
        assert_eq!(shown("k1"), "\"k1\"");
    }
}
