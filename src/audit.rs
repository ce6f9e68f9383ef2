//! The audit log: one JSON line per placement, admission, refusal, deploy,
//! stop, provider registration and configuration change, naming who asked.
//! Its own file (`audit.path`, default `data_dir/audit.jsonl`), apart from
//! the diagnostic log, so it can be shipped and kept on its own terms.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tracing::warn;

pub struct Audit {
    node: String,
    file: Option<Mutex<File>>,
}

impl Audit {
    /// Records nothing.
    pub fn off() -> Audit {
        Audit {
            node: String::new(),
            file: None,
        }
    }

    /// Appends to `path`, creating it (and its directory) when missing.
    pub fn open(path: &Path, node: &str) -> std::io::Result<Audit> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Audit {
            node: node.to_string(),
            file: Some(Mutex::new(file)),
        })
    }

    /// One record. `who` is the caller as the guard named it (`peer:ID`,
    /// `token:NAME`, `anonymous@ADDR`, or `node` for the node itself).
    pub fn record(&self, event: &str, who: &str, outcome: &str, detail: Value) {
        let Some(file) = &self.file else {
            return;
        };
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let line = json!({
            "ts": ts,
            "node": self.node,
            "event": event,
            "who": who,
            "outcome": outcome,
            "detail": detail,
        });
        let mut text = line.to_string();
        text.push('\n');
        // One write per record: with O_APPEND, lines never interleave.
        let written = file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_all(text.as_bytes());
        if let Err(e) = written {
            warn!(error = %e, event, "cannot write the audit log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_json_lines_naming_who_and_what() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/audit.jsonl");
        let a = Audit::open(&path, "n1").unwrap();
        a.record("deploy", "token:ci", "placed", json!({"request_id": "r1"}));
        a.record("stop", "peer:n2", "ok", json!({"id": "d1"}));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "deploy");
        assert_eq!(lines[0]["who"], "token:ci");
        assert_eq!(lines[0]["node"], "n1");
        assert_eq!(lines[1]["detail"]["id"], "d1");
        Audit::off().record("x", "y", "z", Value::Null);
    }
}
