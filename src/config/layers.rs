//! Raw configuration layers (file, environment, flags): flattened to dotted
//! keys, checked against the key table, each value tagged with its source.

use std::collections::BTreeMap;
use std::fmt;

use serde_yaml_ng::Value as Yaml;

use super::{hint, keys, ConfigError, Problem};

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Default,
    File,
    Env,
    Flag,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Default => "default",
            Source::File => "config file",
            Source::Env => "environment",
            Source::Flag => "command line",
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Raw {
    Scalar(String),
    List(Vec<String>),
}

impl fmt::Display for Raw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Raw::Scalar(s) => f.write_str(s),
            Raw::List(l) => f.write_str(&l.join(",")),
        }
    }
}

/// `IARNET_*` variables read elsewhere (the binary), not configuration keys.
const OTHER_ENV: &[&str] = &[
    "IARNET_CONFIG",
    "IARNET_LOG_FORMAT",
    "IARNET_ADDR",
    "IARNET_TOKEN",
];

/// Raw values by key, each with the layer that set it last.
#[derive(Debug, Default, Clone)]
pub struct Layers {
    values: BTreeMap<String, (Raw, Source)>,
    problems: Vec<Problem>,
}

impl Layers {
    /// Adds a YAML document; unknown keys and wrong shapes become problems.
    pub fn file(&mut self, yaml: &str, source: Source) -> Result<(), ConfigError> {
        let doc: Yaml = match serde_yaml_ng::from_str(yaml) {
            Ok(doc) => doc,
            Err(e) => {
                return Err(ConfigError {
                    problems: vec![problem(
                        "(file)",
                        "",
                        source,
                        format!("not valid YAML: {e}"),
                    )],
                })
            }
        };
        match doc {
            Yaml::Null => {}
            Yaml::Mapping(map) => self.flatten("", &map, source),
            other => self.problems.push(problem(
                "(file)",
                &scalar_text(&other).unwrap_or_default(),
                source,
                "the configuration must be a mapping of keys to values".into(),
            )),
        }
        Ok(())
    }

    fn flatten(&mut self, prefix: &str, map: &serde_yaml_ng::Mapping, source: Source) {
        for (k, v) in map {
            let Some(k) = k.as_str() else {
                self.problems
                    .push(problem(prefix, "", source, "keys must be strings".into()));
                continue;
            };
            let key = if prefix.is_empty() {
                k.to_string()
            } else {
                format!("{prefix}.{k}")
            };
            let spec = keys::by_name(&key);
            let is_section = keys::is_section(&key);
            match (v, spec) {
                (Yaml::Null, _) if spec.is_some() || is_section => {}
                (Yaml::Mapping(inner), None) if is_section => self.flatten(&key, inner, source),
                (Yaml::Sequence(items), Some(spec)) if spec.list => {
                    let mut list = Vec::new();
                    for item in items {
                        match scalar_text(item) {
                            Some(s) => list.push(s),
                            None => self.problems.push(problem(
                                &key,
                                "",
                                source,
                                "list items must be plain values".into(),
                            )),
                        }
                    }
                    self.values.insert(key, (Raw::List(list), source));
                }
                (v, Some(spec)) => match scalar_text(v) {
                    Some(s) if spec.list => {
                        self.values.insert(key, (Raw::List(split_list(&s)), source));
                    }
                    Some(s) => {
                        self.values.insert(key, (Raw::Scalar(s), source));
                    }
                    None => self.problems.push(problem(
                        &key,
                        "",
                        source,
                        "expected a plain value, not a mapping or list".into(),
                    )),
                },
                (v, None) => {
                    let hint = suggest(&key)
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default();
                    self.problems.push(problem(
                        &key,
                        &scalar_text(v).unwrap_or_default(),
                        source,
                        format!("unknown key{hint} (see the configuration reference in README.md)"),
                    ));
                }
            }
        }
    }

    /// Applies `IARNET_*` variables; unknown `IARNET_*` names become problems.
    pub fn env(&mut self, vars: impl IntoIterator<Item = (String, String)>) {
        for (name, value) in vars {
            if !name.starts_with("IARNET_") || OTHER_ENV.contains(&name.as_str()) {
                continue;
            }
            match keys::by_env(&name) {
                Some(key) => {
                    let raw = if key.list {
                        Raw::List(split_list(&value))
                    } else {
                        Raw::Scalar(value)
                    };
                    self.values.insert(key.name.to_string(), (raw, Source::Env));
                }
                None => {
                    let known: Vec<&str> = keys::keys().filter_map(|k| k.env).collect();
                    self.problems.push(problem(
                        &name,
                        &value,
                        Source::Env,
                        format!(
                            "unknown environment variable; known ones: {}",
                            known.join(", ")
                        ),
                    ));
                }
            }
        }
    }

    /// Applies one command-line flag to `key` (lists are comma-separated).
    pub fn flag(&mut self, key: &str, value: &str) {
        let is_list = keys::by_name(key).is_some_and(|k| k.list);
        let raw = if is_list {
            Raw::List(split_list(value))
        } else {
            Raw::Scalar(value.to_string())
        };
        self.values.insert(key.to_string(), (raw, Source::Flag));
    }

    pub(super) fn get(&self, key: &str) -> Option<(&Raw, Source)> {
        self.values.get(key).map(|(r, s)| (r, *s))
    }

    /// The problems found while layering, before any value is parsed.
    pub(super) fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// Where each set key came from.
    pub(super) fn sources(&self) -> Vec<(String, Source)> {
        self.values
            .iter()
            .map(|(k, (_, s))| (k.clone(), *s))
            .collect()
    }
}

pub(super) fn problem(key: &str, value: &str, source: Source, message: String) -> Problem {
    Problem {
        key: key.to_string(),
        value: value.to_string(),
        source,
        message,
    }
}

fn scalar_text(v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        Yaml::Null => Some(String::new()),
        _ => None,
    }
}

pub(super) fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect()
}

/// The known key whose last segment is nearest to `key`'s.
fn suggest(key: &str) -> Option<&'static str> {
    let last = last_segment(key);
    hint::closest(last, keys::keys(), |k| last_segment(k.name)).map(|k| k.name)
}

fn last_segment(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}
