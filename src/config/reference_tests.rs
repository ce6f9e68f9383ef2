//! The key table against the two places that document it for operators:
//! the shipped `config.yaml` and the README's configuration reference.

use std::collections::BTreeSet;

use super::layers::{split_list, Raw};
use super::{keys, Key, Layers, Source, DEFAULT_CONFIG_YAML};

const README: &str = include_str!("../../README.md");

/// A key named on a `config.yaml` line, live (`key: value`) or commented
/// out as an example (`# key: value`).
struct YamlKey {
    name: String,
    line: usize,
}

/// Finds keys by indentation: an indented line belongs to the last
/// top-level section. Comment lines that merely look like `Word:` give
/// names outside the table and are ignored by the callers.
fn yaml_keys(text: &str) -> Vec<YamlKey> {
    let mut out = Vec::new();
    let mut section = String::new();
    for (line, text) in text.lines().enumerate() {
        let body = text.trim_start();
        let indent = text.len() - body.len();
        let (commented, body) = match body.strip_prefix('#') {
            Some(rest) => (true, rest.trim_start()),
            None => (false, body),
        };
        let name: String = body
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() || !body[name.len()..].starts_with(':') {
            continue;
        }
        if indent == 0 && !commented {
            section = name.clone();
        }
        let name = if indent == 0 {
            name
        } else {
            format!("{section}.{name}")
        };
        out.push(YamlKey { name, line });
    }
    out
}

fn env_names(text: &str) -> Vec<&str> {
    text.match_indices("IARNET_")
        .map(|(at, _)| {
            let rest = &text[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        // `IARNET_*` alone is the family, not a variable.
        .filter(|name| name.len() > "IARNET_".len())
        .collect()
}

#[test]
fn every_key_appears_in_config_yaml_with_its_default() {
    let mut layers = Layers::default();
    layers
        .file(DEFAULT_CONFIG_YAML, Source::Default)
        .expect("config.yaml parses");
    let found = yaml_keys(DEFAULT_CONFIG_YAML);
    let mut drift = Vec::new();
    for key in keys() {
        if !found.iter().any(|e| e.name == key.name) {
            drift.push(format!("{}: not in config.yaml", key.name));
            continue;
        }
        let stated = match layers.get(key.name) {
            Some((Raw::Scalar(s), _)) => Some(s.clone()),
            Some((Raw::List(l), _)) => Some(l.join(",")),
            // `key:` with no value, or only a commented example: unset.
            None => None,
        };
        let default = if key.list {
            split_list(key.default).join(",")
        } else {
            key.default.to_string()
        };
        match stated {
            Some(s) if s != default => drift.push(format!(
                "{}: config.yaml states {s:?}, the table's default is {default:?}",
                key.name
            )),
            None if !key.default.is_empty() => drift.push(format!(
                "{}: config.yaml leaves it unset, the table's default is {default:?}",
                key.name
            )),
            _ => {}
        }
    }
    assert!(
        drift.is_empty(),
        "config.yaml drifted:\n{}",
        drift.join("\n")
    );
}

/// The comment block a key line documents itself with: the line and the
/// comment lines right above it, up to a blank line, a value or another key.
fn comment_block<'a>(lines: &[&'a str], at: usize, key_lines: &BTreeSet<usize>) -> Vec<&'a str> {
    let mut block = vec![lines[at]];
    let mut i = at;
    while i > 0 {
        i -= 1;
        if !lines[i].trim_start().starts_with('#') || key_lines.contains(&i) {
            break;
        }
        block.push(lines[i]);
    }
    block
}

#[test]
fn config_yaml_names_each_environment_variable_beside_its_key() {
    let lines: Vec<&str> = DEFAULT_CONFIG_YAML.lines().collect();
    let found: Vec<YamlKey> = yaml_keys(DEFAULT_CONFIG_YAML)
        .into_iter()
        .filter(|e| super::keys::by_name(&e.name).is_some())
        .collect();
    let key_lines: BTreeSet<usize> = found.iter().map(|e| e.line).collect();
    let mut drift = Vec::new();
    for key in keys() {
        let mut named = BTreeSet::new();
        for entry in found.iter().filter(|e| e.name == key.name) {
            for line in comment_block(&lines, entry.line, &key_lines) {
                named.extend(env_names(line));
            }
        }
        let expected: BTreeSet<&str> = key.env.into_iter().collect();
        if named != expected {
            drift.push(format!(
                "{}: config.yaml names {named:?} beside it, the table says {expected:?}",
                key.name
            ));
        }
    }
    for env in env_names(DEFAULT_CONFIG_YAML) {
        if super::keys::by_env(env).is_none() {
            drift.push(format!("config.yaml names {env}, which sets no key"));
        }
    }
    assert!(
        drift.is_empty(),
        "config.yaml drifted:\n{}",
        drift.join("\n")
    );
}

/// One README row per key: (env cell, default cell, with backticks removed).
fn readme_rows() -> Vec<(String, String, String)> {
    let start = README
        .find("\n## Configuration\n")
        .expect("README has a configuration section");
    let section = &README[start + 1..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let mut rows = Vec::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (key, env, default) = (cells[1], cells[2], cells[4]);
        let keys: Vec<&str> = key.split(" / ").collect();
        let split = |cell: &str| -> Vec<String> {
            let parts: Vec<&str> = cell.split(" / ").collect();
            let parts = if parts.len() == keys.len() {
                parts
            } else {
                vec![cell; keys.len()]
            };
            parts.iter().map(|p| p.replace('`', "")).collect()
        };
        let comma = env.ends_with(" (comma list)");
        let env = env.trim_end_matches(" (comma list)");
        for ((k, e), d) in keys.iter().zip(split(env)).zip(split(default)) {
            let e = if comma {
                format!("{e} (comma list)")
            } else {
                e
            };
            rows.push((k.replace('`', ""), e, d));
        }
    }
    rows
}

fn readme_default_ok(key: &Key, cell: &str) -> bool {
    let stated = |text: &str| cell == text || cell.starts_with(&format!("{text} "));
    match key.derived {
        Some(derived) => stated(derived),
        None if key.list && key.default.is_empty() => stated("[]"),
        None if key.default.is_empty() => stated("\"\"") || stated("unset"),
        None => stated(key.default),
    }
}

#[test]
fn every_key_appears_in_the_readme_table_with_its_env_and_default() {
    let rows = readme_rows();
    let mut drift = Vec::new();
    for (name, _, _) in &rows {
        if super::keys::by_name(name).is_none() {
            drift.push(format!("README lists `{name}`, which is no key"));
        }
    }
    for key in keys() {
        let mine: Vec<&(String, String, String)> =
            rows.iter().filter(|(n, _, _)| n == key.name).collect();
        let [(_, env, default)] = mine.as_slice() else {
            drift.push(format!(
                "{}: in {} README rows, not one",
                key.name,
                mine.len()
            ));
            continue;
        };
        let expected_env = match key.env {
            Some(e) if key.list => format!("{e} (comma list)"),
            Some(e) => e.to_string(),
            None => String::new(),
        };
        if *env != expected_env {
            drift.push(format!(
                "{}: README says env {env:?}, the table {expected_env:?}",
                key.name
            ));
        }
        if !readme_default_ok(key, default) {
            drift.push(format!(
                "{}: README says default {default:?}, the table {:?}{}",
                key.name,
                key.default,
                key.derived.map(|d| format!(" ({d})")).unwrap_or_default()
            ));
        }
    }
    assert!(drift.is_empty(), "README drifted:\n{}", drift.join("\n"));
}
