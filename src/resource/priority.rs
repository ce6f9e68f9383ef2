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

/// How far below, within one class, work must be to be evicted for a
/// request (Nomad evicts only jobs at least 10 priority points lower).
pub const PREEMPTION_MARGIN: i64 = 10;

impl Priority {
    /// Whether a request of this priority may evict preemptible work of
    /// `victim`'s: a lower class, or at least `PREEMPTION_MARGIN` lower in
    /// the same class.
    pub fn outranks(self, victim: Priority) -> bool {
        self.class > victim.class
            || (self.class == victim.class
                && victim.value.saturating_add(PREEMPTION_MARGIN) <= self.value)
    }

    /// `batch:-5`: how a container or pod label carries it.
    pub fn label(self) -> String {
        format!("{}:{}", self.class.as_str(), self.value)
    }

    /// Reads `label`'s text back; None when it is not one.
    pub fn from_label(text: &str) -> Option<Priority> {
        let (class, value) = text.split_once(':')?;
        Priority::from_parts(class, value.parse().ok()?).ok()
    }
}

/// Whether a request may evict lower-priority preemptible work when
/// nothing has room for it. Off unless asked, as for Nomad's service and
/// batch jobs: eviction is a deliberate choice, and each try costs calls
/// to owners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreemptionPolicy {
    #[default]
    Never,
    LowerPriority,
}

pub const PREEMPTION_POLICIES: &str = "never, lower-priority";

impl PreemptionPolicy {
    pub fn parse(s: &str) -> Result<PreemptionPolicy, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "never" => Ok(PreemptionPolicy::Never),
            "lower-priority" | "lower_priority" => Ok(PreemptionPolicy::LowerPriority),
            other => Err(format!(
                "unknown preemption policy {other:?}: use one of {PREEMPTION_POLICIES}"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PreemptionPolicy::Never => "never",
            PreemptionPolicy::LowerPriority => "lower-priority",
        }
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

    #[test]
    fn a_request_outranks_a_lower_class_or_ten_points_below() {
        let p = |c: &str, v| Priority::from_parts(c, v).unwrap();
        assert!(p("interactive", -100).outranks(p("batch", 100)));
        assert!(p("batch", 10).outranks(p("batch", 0)));
        assert!(!p("batch", 9).outranks(p("batch", 0)));
        assert!(!p("batch", 0).outranks(p("batch", 0)));
        assert!(!p("batch", 100).outranks(p("interactive", 0)));
        for x in [p("batch", -7), p("interactive", 1_000)] {
            assert_eq!(Priority::from_label(&x.label()), Some(x));
        }
        assert_eq!(Priority::from_label("urgent:1"), None);
        assert_eq!(
            PreemptionPolicy::parse("lower-priority"),
            Ok(PreemptionPolicy::LowerPriority)
        );
        assert!(PreemptionPolicy::parse("always")
            .unwrap_err()
            .contains("never, lower-priority"));
    }
}
