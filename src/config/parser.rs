//! The typed readers every section builder uses. Each takes a [`Key`] and
//! falls back to the table's default; a bad value becomes a [`Problem`]
//! naming the key, and reading goes on so that all problems are reported.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::layers::{problem, split_list, Raw};
use super::{hint, ConfigError, Key, Layers, Problem, Quantity, Source};

pub(super) struct Parser<'a> {
    layers: &'a Layers,
    problems: Vec<Problem>,
    /// Keys a builder asked for: a key in the table that no builder reads
    /// would be accepted and silently ignored.
    read: BTreeSet<&'static str>,
}

impl<'a> Parser<'a> {
    pub(super) fn new(layers: &'a Layers) -> Parser<'a> {
        Parser {
            layers,
            problems: layers.problems().to_vec(),
            read: BTreeSet::new(),
        }
    }

    /// `value` when nothing was wrong, else every problem found.
    pub(super) fn finish<T>(self, value: T) -> Result<T, ConfigError> {
        if self.problems.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError {
                problems: self.problems,
            })
        }
    }

    /// Table keys no builder has read so far.
    #[cfg(test)]
    pub(super) fn unread(&self) -> Vec<&'static str> {
        super::keys::keys()
            .map(|k| k.name)
            .filter(|name| !self.read.contains(name))
            .collect()
    }

    fn raw(&mut self, key: &Key) -> Option<&'a Raw> {
        self.read.insert(key.name);
        let layers: &'a Layers = self.layers;
        layers.get(key.name).map(|(raw, _)| raw)
    }

    pub(super) fn fail(&mut self, key: &str, value: &str, message: impl Into<String>) {
        let source = self.layers.get(key).map_or(Source::Default, |(_, s)| s);
        self.problems
            .push(problem(key, value, source, message.into()));
    }

    /// The trimmed value, or `None` when unset or blank (the default is not used).
    pub(super) fn opt_scalar(&mut self, key: &Key) -> Option<String> {
        match self.raw(key)? {
            Raw::Scalar(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            _ => None,
        }
    }

    pub(super) fn scalar(&mut self, key: &Key) -> String {
        self.opt_scalar(key)
            .unwrap_or_else(|| key.default.to_string())
    }

    /// A list key given as a YAML list or a comma-separated string.
    pub(super) fn list(&mut self, key: &Key) -> Vec<String> {
        match self.raw(key) {
            Some(Raw::List(l)) => l.clone(),
            Some(Raw::Scalar(s)) => split_list(s),
            None => split_list(key.default),
        }
    }

    pub(super) fn boolean(&mut self, key: &Key) -> bool {
        let text = self.scalar(key);
        let lower = text.to_ascii_lowercase();
        match lower.as_str() {
            "true" | "yes" | "on" | "1" => true,
            "false" | "no" | "off" | "0" => false,
            _ => {
                let hint = hint::did_you_mean(&lower, ["true", "false"]);
                self.fail(key.name, &text, format!("expected true or false{hint}"));
                false
            }
        }
    }

    /// `IP:PORT`, or `:PORT` for every interface.
    pub(super) fn listen(&mut self, key: &Key) -> SocketAddr {
        let text = self.scalar(key);
        let parsed = match text.strip_prefix(':') {
            Some(port) => port
                .parse::<u16>()
                .ok()
                .map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), p)),
            None => text.parse::<SocketAddr>().ok(),
        };
        parsed.unwrap_or_else(|| {
            self.fail(
                key.name,
                &text,
                "expected IP:PORT or :PORT, e.g. \"0.0.0.0:50051\" or \":50051\"",
            );
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
        })
    }

    /// An optional `HOST:PORT` another node can dial.
    pub(super) fn host_port(&mut self, key: &Key) -> Option<String> {
        let text = self.opt_scalar(key)?;
        if valid_host_port(&text) {
            Some(text)
        } else {
            self.fail(key.name, &text, "expected HOST:PORT with a port from 1 to 65535, e.g. \"node1.example:50051\" or \"10.0.0.5:50051\"");
            None
        }
    }

    /// An optional Kubernetes quantity (`"500m"`, `"16Gi"`).
    pub(super) fn quantity(&mut self, key: &Key) -> Option<Quantity> {
        let text = self.opt_scalar(key)?;
        match Quantity::parse(&text) {
            Ok(q) => Some(q),
            Err(e) => {
                self.fail(key.name, &text, e.to_string());
                None
            }
        }
    }

    /// A size in bytes written as a quantity (`"512Ki"`).
    pub(super) fn bytes(&mut self, key: &Key, min: usize, max: usize) -> usize {
        let text = self.scalar(key);
        match Quantity::parse(&text) {
            Ok(q) if (min as u128..=max as u128).contains(&q.units_ceil()) => {
                q.units_ceil() as usize
            }
            Ok(_) => {
                self.fail(
                    key.name,
                    &text,
                    format!("must be between {min} and {max} bytes (e.g. \"64Ki\")"),
                );
                min
            }
            Err(e) => {
                self.fail(key.name, &text, e.to_string());
                min
            }
        }
    }

    pub(super) fn duration(&mut self, key: &Key, min: Duration, max: Duration) -> Duration {
        let text = self.scalar(key);
        match humantime::parse_duration(&text) {
            Ok(d) if d >= min && d <= max => d,
            Ok(_) => {
                self.fail(
                    key.name,
                    &text,
                    format!(
                        "must be between {} and {}",
                        humantime::format_duration(min),
                        humantime::format_duration(max)
                    ),
                );
                min
            }
            Err(e) => {
                self.fail(
                    key.name,
                    &text,
                    format!("{e}: expected a duration such as \"1s\", \"500ms\" or \"2m\""),
                );
                min
            }
        }
    }

    pub(super) fn int(&mut self, key: &Key, min: u64, max: u64) -> u64 {
        let text = self.scalar(key);
        match text.parse::<u64>() {
            Ok(v) if (min..=max).contains(&v) => v,
            _ => {
                self.fail(
                    key.name,
                    &text,
                    format!("expected a whole number from {min} to {max}"),
                );
                min
            }
        }
    }

    pub(super) fn float(&mut self, key: &Key, min: f64, max: f64) -> f64 {
        let text = self.scalar(key);
        match text.parse::<f64>() {
            Ok(v) if (min..=max).contains(&v) => v,
            _ => {
                self.fail(
                    key.name,
                    &text,
                    format!("expected a number from {min} to {max}"),
                );
                min
            }
        }
    }
}

/// `host:port` with a non-empty host (IP, `[v6]` or DNS name) and a non-zero port.
pub fn valid_host_port(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
    };
    port_ok && host_ok
}
