//! Services: N replica deployments of one spec, kept apart by a spread
//! constraint (Kubernetes `topologySpreadConstraints`, Nomad
//! `distinct_hosts`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a replica belongs to; its deployment id is derived from the
/// service's request id and its index, so a retry stays idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaOf {
    /// The service's id (the request id of the deploy that made it).
    pub service: String,
    /// 0-based.
    pub index: u32,
}

/// The most replicas one service may ask for.
pub const MAX_REPLICAS: u32 = 1_000;

/// The request id of replica `index` of service `service`.
pub fn replica_request_id(service: &str, index: u32) -> String {
    format!("{service}-{index}")
}

/// What replicas are spread over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpreadKey {
    /// Distinct nodes (owners).
    Node,
    /// Distinct providers.
    Provider,
    /// Distinct values of a provider label, e.g. `region`.
    Label(String),
}

impl SpreadKey {
    pub fn parse(text: &str) -> Result<SpreadKey, String> {
        match text.trim() {
            "" => Err("empty: use node, provider or a provider label key such as region".into()),
            "node" => Ok(SpreadKey::Node),
            "provider" => Ok(SpreadKey::Provider),
            k if k.len() > 253 || k.chars().any(char::is_whitespace) => Err(format!(
                "{k:?} is not a label key: use node, provider or a label key such as region"
            )),
            k => Ok(SpreadKey::Label(k.to_string())),
        }
    }
}

impl fmt::Display for SpreadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpreadKey::Node => f.write_str("node"),
            SpreadKey::Provider => f.write_str("provider"),
            SpreadKey::Label(k) => f.write_str(k),
        }
    }
}

/// Replicas go to distinct values of `key` where possible: no value may
/// hold more than `max_skew` replicas above the emptiest eligible one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spread {
    pub key: SpreadKey,
    pub max_skew: u32,
    /// `DoNotSchedule`: a replica waits (or fails) rather than break the
    /// skew; otherwise (`ScheduleAnyway`) the skew is a preference.
    pub strict: bool,
}

impl Spread {
    /// From the wire: `key` ("" for none), `max_skew` (0 means 1) and
    /// `when_unsatisfiable` ("" or `schedule-anyway`, `do-not-schedule`).
    pub fn parse(
        key: &str,
        max_skew: u32,
        when_unsatisfiable: &str,
    ) -> Result<Option<Spread>, (&'static str, String)> {
        if key.trim().is_empty() {
            if !when_unsatisfiable.trim().is_empty() || max_skew > 0 {
                return Err((
                    "spread",
                    "max_skew and when_unsatisfiable need a spread key: node, provider or a label key".into(),
                ));
            }
            return Ok(None);
        }
        let key = SpreadKey::parse(key).map_err(|e| ("spread", e))?;
        let strict = match when_unsatisfiable.trim().to_ascii_lowercase().as_str() {
            "" | "schedule-anyway" | "scheduleanyway" => false,
            "do-not-schedule" | "donotschedule" => true,
            other => {
                return Err((
                    "when_unsatisfiable",
                    format!("{other:?}: use schedule-anyway or do-not-schedule"),
                ))
            }
        };
        Ok(Some(Spread {
            key,
            max_skew: max_skew.max(1),
            strict,
        }))
    }

    pub fn when_unsatisfiable(&self) -> &'static str {
        if self.strict {
            "do-not-schedule"
        } else {
            "schedule-anyway"
        }
    }
}

impl fmt::Display for Spread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spread {} (max skew {}, {})",
            self.key,
            self.max_skew,
            self.when_unsatisfiable()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_and_modes() {
        assert_eq!(Spread::parse("", 0, ""), Ok(None));
        let s = Spread::parse("region", 0, "do-not-schedule")
            .unwrap()
            .unwrap();
        assert_eq!(s.key, SpreadKey::Label("region".into()));
        assert_eq!((s.max_skew, s.strict), (1, true));
        let s = Spread::parse("node", 2, "").unwrap().unwrap();
        assert_eq!((s.key, s.max_skew, s.strict), (SpreadKey::Node, 2, false));
        assert_eq!(
            Spread::parse("node", 1, "never").unwrap_err().0,
            "when_unsatisfiable"
        );
        assert_eq!(Spread::parse("", 2, "").unwrap_err().0, "spread");
        assert_eq!(Spread::parse("a b", 1, "").unwrap_err().0, "spread");
        assert_eq!(replica_request_id("web", 2), "web-2");
    }
}
