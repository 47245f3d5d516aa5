//! Reading JSON request bodies field by field, so every bad value is a 422 naming its field.

use crate::error::{ApiError, ApiResult};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A JSON object body.
pub struct Body(Map<String, Value>);

impl Body {
    /// Parses `bytes` as a JSON object; a NUL character anywhere (PostgreSQL cannot store it in
    /// text) is a 422 naming the field.
    pub fn parse(bytes: &[u8]) -> ApiResult<Self> {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(m)) => {
                for (k, v) in &m {
                    storable(k, v)?;
                }
                Ok(Self(m))
            }
            Ok(_) => Err(ApiError::invalid("body", "the body must be a JSON object")),
            Err(e) => Err(ApiError::invalid("body", format!("the body is not valid JSON: {e}"))),
        }
    }

    /// Fails on keys outside `known` (a typo must not be silently ignored).
    pub fn only(self, known: &[&str]) -> ApiResult<Self> {
        if let Some(k) = self.0.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(ApiError::invalid(k.clone(), format!("unknown field; expected one of: {}", known.join(", "))));
        }
        Ok(self)
    }

    pub fn has(&self, field: &str) -> bool {
        self.0.get(field).is_some_and(|v| !v.is_null())
    }

    pub fn opt_str(&self, field: &str) -> ApiResult<Option<String>> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::invalid(field, "must be a string")),
        }
    }

    /// A non-empty string.
    pub fn str(&self, field: &str) -> ApiResult<String> {
        match self.opt_str(field)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            Some(_) => Err(ApiError::invalid(field, "must not be empty")),
            None => Err(ApiError::invalid(field, "is required")),
        }
    }

    pub fn bool_or(&self, field: &str, default: bool) -> ApiResult<bool> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(ApiError::invalid(field, "must be true or false")),
        }
    }

    pub fn opt_i64(&self, field: &str) -> ApiResult<Option<i64>> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_i64().map(Some).ok_or_else(|| ApiError::invalid(field, "must be an integer")),
        }
    }

    pub fn str_list(&self, field: &str) -> ApiResult<Option<Vec<String>>> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, v)| v.as_str().map(str::to_string).ok_or_else(|| ApiError::invalid(format!("{field}[{i}]"), "must be a string")))
                .collect::<ApiResult<Vec<_>>>()
                .map(Some),
            Some(_) => Err(ApiError::invalid(field, "must be a list of strings")),
        }
    }

    pub fn str_map(&self, field: &str) -> ApiResult<Option<BTreeMap<String, String>>> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| {
                    v.as_str()
                        .map(|s| (k.clone(), s.to_string()))
                        .ok_or_else(|| ApiError::invalid(format!("{field}.{k}"), "must be a string"))
                })
                .collect::<ApiResult<BTreeMap<_, _>>>()
                .map(Some),
            Some(_) => Err(ApiError::invalid(field, "must be an object of strings")),
        }
    }
}

/// Fails with 422 naming `path` (dotted, `[i]` for list items) where a key or string holds NUL.
fn storable(path: &str, v: &Value) -> ApiResult<()> {
    const NUL: &str = "must not contain a NUL character (U+0000)";
    if path.contains('\0') {
        return Err(ApiError::invalid(path.replace('\0', "\\0"), NUL));
    }
    match v {
        Value::String(s) if s.contains('\0') => Err(ApiError::invalid(path, NUL)),
        Value::Array(a) => a.iter().enumerate().try_for_each(|(i, x)| storable(&format!("{path}[{i}]"), x)),
        Value::Object(m) => m.iter().try_for_each(|(k, x)| storable(&format!("{path}.{k}"), x)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nul_anywhere_in_a_body_names_its_field() {
        let e = Body::parse(br#"{"a": {"b": ["x", "y\u0000"]}}"#).err().expect("refused");
        assert_eq!(e.field.as_deref(), Some("a.b[1]"));
        assert!(Body::parse(br#"{"a": {"b": ["x", "y"]}, "n": 1}"#).is_ok());
    }
}
