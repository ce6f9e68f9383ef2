//! `CallProvider`, both sides: [`proxy`] operates another node's provider,
//! [`serve`] answers such calls for this node's own providers. Both speak
//! the typed `iarnet.resource.v1` payloads named by [`ProviderMethod`].
//! [`build`] streams build contexts to another node's provider;
//! [`journal`] keeps what deploys served here report, for their callers
//! to poll.

pub mod build;
pub mod journal;
pub mod proxy;
pub mod serve;

use std::fmt;
use std::time::Duration;

use crate::proto::peer::{ProviderCallRequest, ProviderCallResponse};

/// Sends one `CallProvider` request to a node, with a deadline.
#[async_trait::async_trait]
pub trait ProviderCaller: Send + Sync + 'static {
    async fn call(
        &self,
        owner_addr: &str,
        request: ProviderCallRequest,
        timeout: Duration,
    ) -> Result<ProviderCallResponse, tonic::Status>;
}

/// The provider operations `CallProvider` carries (its `method` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderMethod {
    /// `CapacityCall` → `ProviderEntry`.
    Capacity,
    /// `DeployCall` → `Deployment`.
    Deploy,
    /// `StatusCall` → `Deployment`.
    Status,
    /// `LogsCall` → `LogsReply`.
    Logs,
    /// `StopCall` → `Deployment`.
    Stop,
    /// `LeaseCall` → `Deployment`.
    RenewLease,
    /// `LeaseCall` → `Deployment`.
    ReleaseLease,
    /// `PrepareCall` → `PrepareReply`: hold room for a gang's replica.
    Prepare,
    /// `AbortCall` → `AbortReply`: give that room back.
    Abort,
    /// `ProgressCall` → `ProgressReply`: what a deploy in flight reported.
    Progress,
}

impl ProviderMethod {
    pub const ALL: [ProviderMethod; 10] = [
        ProviderMethod::Capacity,
        ProviderMethod::Deploy,
        ProviderMethod::Status,
        ProviderMethod::Logs,
        ProviderMethod::Stop,
        ProviderMethod::RenewLease,
        ProviderMethod::ReleaseLease,
        ProviderMethod::Prepare,
        ProviderMethod::Abort,
        ProviderMethod::Progress,
    ];

    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderMethod::Capacity => "capacity",
            ProviderMethod::Deploy => "deploy",
            ProviderMethod::Status => "status",
            ProviderMethod::Logs => "logs",
            ProviderMethod::Stop => "stop",
            ProviderMethod::RenewLease => "renew_lease",
            ProviderMethod::ReleaseLease => "release_lease",
            ProviderMethod::Prepare => "prepare",
            ProviderMethod::Abort => "abort",
            ProviderMethod::Progress => "progress",
        }
    }

    pub fn parse(name: &str) -> Option<ProviderMethod> {
        ProviderMethod::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// The metric label of a method name: the operation, or "other".
    pub fn label(name: &str) -> &'static str {
        ProviderMethod::parse(name).map_or("other", ProviderMethod::as_str)
    }

    /// Whether the call changes what runs or how long (deploy, stop, a
    /// lease renewed or released): audited on the owner.
    pub fn changes_workloads(self) -> bool {
        matches!(
            self,
            ProviderMethod::Deploy
                | ProviderMethod::Stop
                | ProviderMethod::RenewLease
                | ProviderMethod::ReleaseLease
                | ProviderMethod::Prepare
                | ProviderMethod::Abort
        )
    }
}

impl fmt::Display for ProviderMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_round_trip() {
        for m in ProviderMethod::ALL {
            assert_eq!(ProviderMethod::parse(m.as_str()), Some(m));
        }
        assert_eq!(ProviderMethod::parse("Deploy"), None);
    }
}
