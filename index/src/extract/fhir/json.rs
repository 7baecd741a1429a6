//! Typed access to the JSON elements the FHIR reader uses, each with its JSON path
//! from the document root, so an element of the wrong type is reported where it
//! is (`$.entry[3].resource.billablePeriod`) and never with its value.
//!
//! `null` counts as absent (FHIR JSON forbids it, but primitive arrays use it to
//! line up with their `_element` extensions, as in `"given": ["Jo", null]`).

use serde_json::{Map, Value};

use super::super::{ExtractError, Format};

/// A JSON object.
pub(super) type Obj = Map<String, Value>;

/// The reader's results.
pub(super) type Res<T> = Result<T, ExtractError>;

/// An error at `location` (a JSON path or a line and column).
pub(super) fn error(location: String, problem: &str) -> ExtractError {
    ExtractError {
        format: Format::Fhir,
        location,
        problem: problem.to_owned(),
    }
}

/// A JSON object of the document and its path.
#[derive(Debug, Clone)]
pub(super) struct Node<'v> {
    /// The object.
    pub obj: &'v Obj,
    /// Its JSON path (`$`, `$.contained[0]`, `$.entry[3].resource.item[1]`).
    pub path: String,
}

impl<'v> Node<'v> {
    /// The object `value` at `path`, or an error at `path` when it is not one.
    pub fn at(value: &'v Value, path: String) -> Res<Node<'v>> {
        match value {
            Value::Object(obj) => Ok(Node { obj, path }),
            _ => Err(error(path, "expected an object")),
        }
    }

    fn child(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    fn present(&self, key: &str) -> Option<&'v Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    /// The object under `key`, if present.
    pub fn obj(&self, key: &str) -> Res<Option<Node<'v>>> {
        self.present(key)
            .map(|v| Node::at(v, self.child(key)))
            .transpose()
    }

    /// The objects of the array under `key` (none when absent).
    pub fn objs(&self, key: &str) -> Res<Vec<Node<'v>>> {
        let Some(value) = self.present(key) else {
            return Ok(Vec::new());
        };
        let Value::Array(items) = value else {
            return Err(error(self.child(key), "expected an array"));
        };
        items
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_null())
            .map(|(i, v)| Node::at(v, format!("{}.{key}[{i}]", self.path)))
            .collect()
    }

    /// The string under `key`, if present.
    pub fn str(&self, key: &str) -> Res<Option<&'v str>> {
        match self.present(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(error(self.child(key), "expected a string")),
        }
    }

    /// The strings of the array under `key` (none when absent).
    pub fn strs(&self, key: &str) -> Res<Vec<&'v str>> {
        let Some(value) = self.present(key) else {
            return Ok(Vec::new());
        };
        let Value::Array(items) = value else {
            return Err(error(self.child(key), "expected an array"));
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item {
                Value::Null => {}
                Value::String(s) => out.push(s.as_str()),
                _ => {
                    return Err(error(
                        format!("{}.{key}[{i}]", self.path),
                        "expected a string",
                    ))
                }
            }
        }
        Ok(out)
    }
}
