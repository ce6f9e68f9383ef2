//! Form fields and their errors. The checks themselves are the API's: a
//! refusal's message names its field ("invalid endpoint: …"), and the
//! form shows it next to that field, keeping what was typed.

use std::collections::BTreeMap;

use maud::{html, Markup};

use crate::ui::layout;

#[derive(Debug, Clone, Default)]
pub struct FieldErrors {
    pub fields: BTreeMap<String, String>,
    /// An error that belongs to no one field.
    pub form: Option<String>,
}

impl FieldErrors {
    /// Sorts a refusal onto one of `known` fields when its message names
    /// one; a refusal about reaching something goes to `reach_field` (the
    /// live connection test's result); anything else is the form's.
    pub fn from_status(s: &tonic::Status, known: &[&str], reach_field: Option<&str>) -> Self {
        let msg = s.message().to_string();
        let mut out = FieldErrors::default();
        let named = msg
            .strip_prefix("invalid ")
            .unwrap_or(&msg)
            .split([':', ' ', '.', '['])
            .next()
            .unwrap_or("");
        if let Some(f) = known.iter().find(|f| **f == named) {
            out.fields.insert(f.to_string(), msg);
        } else if let (Some(f), true) = (
            reach_field,
            matches!(
                s.code(),
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::PermissionDenied
                    | tonic::Code::Unauthenticated
            ),
        ) {
            out.fields.insert(f.to_string(), msg);
        } else {
            out.form = Some(msg);
        }
        out
    }

    pub fn one(field: &str, msg: impl Into<String>) -> Self {
        let mut out = FieldErrors::default();
        out.fields.insert(field.to_string(), msg.into());
        out
    }

    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields.get(field).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.form.is_none()
    }

    /// The summary above a form: screen readers hear it first.
    pub fn summary(&self) -> Markup {
        html! {
            @if let Some(e) = &self.form {
                (layout::notice("error", e))
            } @else if !self.fields.is_empty() {
                (layout::notice("error", "The form has errors: see the fields marked below."))
            }
        }
    }
}

/// `key=value` lines (or comma-separated) as a map; a line without `=`
/// is an error naming it.
pub fn pairs(field: &str, text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for item in text
        .split([',', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let Some((k, v)) = item.split_once('=') else {
            return Err(format!(
                "invalid {field}: {item:?} is not KEY=VALUE (write one per line or separate them with commas)"
            ));
        };
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

/// A command line split as a POSIX shell splits words: quotes group,
/// a backslash escapes (nothing is expanded). An open quote is an error.
pub fn words(field: &str, line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => out.extend(word.take()),
            '\'' | '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some('\\') if c == '"' => w.extend(chars.next()),
                        Some(x) => w.push(x),
                        None => return Err(format!("invalid {field}: a {c} quote is not closed")),
                    }
                }
            }
            '\\' => word.get_or_insert_with(String::new).extend(chars.next()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    out.extend(word);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_split_like_a_shell() {
        assert_eq!(
            words("command", "sh -c 'echo a  b; sleep 1' \"x y\" z\\ w").unwrap(),
            ["sh", "-c", "echo a  b; sleep 1", "x y", "z w"]
        );
        assert_eq!(words("command", "  ").unwrap(), Vec::<String>::new());
        assert_eq!(words("command", "''").unwrap(), [""]);
        assert!(words("command", "sh -c 'oops")
            .unwrap_err()
            .contains("invalid command"));
    }

    #[test]
    fn refusals_land_on_their_field() {
        let known = ["endpoint", "name", "type"];
        let e = FieldErrors::from_status(
            &tonic::Status::invalid_argument("invalid endpoint: \"x\" is not a URL"),
            &known,
            Some("endpoint"),
        );
        assert!(e.get("endpoint").unwrap().contains("not a URL"));
        let e = FieldErrors::from_status(
            &tonic::Status::unavailable("provider p is unavailable: connection refused"),
            &known,
            Some("endpoint"),
        );
        assert!(e.get("endpoint").unwrap().contains("connection refused"));
        let e = FieldErrors::from_status(&tonic::Status::internal("boom"), &known, None);
        assert_eq!(e.form.as_deref(), Some("boom"));
    }

    #[test]
    fn pairs_parse_and_name_the_field() {
        let m = pairs("labels", "zone=a, team = ml\nx=").unwrap();
        assert_eq!(m["team"], "ml");
        assert_eq!(m["x"], "");
        assert!(pairs("labels", "oops")
            .unwrap_err()
            .contains("invalid labels"));
    }
}
