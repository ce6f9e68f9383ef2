//! How urgent a deploy is: the seed's classes (`interactive` before
//! `batch`) and, within a class, a number like a Kubernetes PriorityClass
//! value. Order: class, then value, then age (FIFO).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The seed's queue classes; interactive work goes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriorityClass {
    Batch,
    Interactive,
}

/// The largest priority value either way, as Kubernetes bounds user classes.
pub const MAX_PRIORITY_VALUE: i64 = 1_000_000_000;

pub const PRIORITY_CLASSES: &str = "interactive, batch";

impl PriorityClass {
    pub fn parse(s: &str) -> Result<PriorityClass, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "interactive" => Ok(PriorityClass::Interactive),
            "batch" => Ok(PriorityClass::Batch),
            other => Err(format!(
                "unknown priority {other:?}: use one of {PRIORITY_CLASSES}"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PriorityClass::Interactive => "interactive",
            PriorityClass::Batch => "batch",
        }
    }
}

/// A deploy's place in line. The default is `interactive` with value 0: a
/// request nobody marked is somebody waiting for it; mark bulk work `batch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Priority {
    pub class: PriorityClass,
    /// Finer order within the class, higher first (−10⁹ to 10⁹).
    pub value: i64,
}

impl Default for Priority {
    fn default() -> Priority {
        Priority {
            class: PriorityClass::Interactive,
            value: 0,
        }
    }
}

impl Priority {
    /// From the API's fields: an empty class is the default one.
    pub fn from_parts(class: &str, value: i64) -> Result<Priority, String> {
        let class = if class.trim().is_empty() {
            Priority::default().class
        } else {
            PriorityClass::parse(class)?
        };
        if value.abs() > MAX_PRIORITY_VALUE {
            return Err(format!(
                "{value} is out of range: use -{MAX_PRIORITY_VALUE} to {MAX_PRIORITY_VALUE}"
            ));
        }
        Ok(Priority { class, value })
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value == 0 {
            f.write_str(self.class.as_str())
        } else {
            write!(f, "{}{:+}", self.class.as_str(), self.value)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_then_values_order_and_bad_ones_are_named() {
        let p = |c: &str, v| Priority::from_parts(c, v).unwrap();
        assert!(p("interactive", -5) > p("batch", 100));
        assert!(p("batch", 2) > p("batch", 1));
        assert_eq!(p("", 0), Priority::default());
        assert_eq!(p("batch", 3).to_string(), "batch+3");
        assert!(Priority::from_parts("urgent", 0)
            .unwrap_err()
            .contains("interactive, batch"));
        assert!(Priority::from_parts("batch", MAX_PRIORITY_VALUE + 1).is_err());
    }
}
