//! Typed errors of the resource plane and the gRPC codes they map to.

use tonic::{Code, Status};

use super::types::Resources;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResourceError {
    /// A deploy spec or request field is wrong; names the field.
    #[error("invalid {field}: {reason}")]
    InvalidSpec { field: String, reason: String },
    #[error("{0}")]
    NotFound(String),
    /// Admission refused: the provider cannot hold the request now.
    #[error("provider {provider} cannot admit {need}: only {available} is free")]
    Exhausted {
        provider: String,
        need: Resources,
        available: Resources,
    },
    /// Admission refused: the provider runs its `max_deployments` already.
    #[error("provider {provider} runs {max} deployments, its max_deployments: it admits another when one ends")]
    NoSlot { provider: String, max: u32 },
    #[error("cannot pull image {image:?}: {reason} (is the image name right and the registry reachable? load it with `docker load` otherwise)")]
    PullFailed { image: String, reason: String },
    #[error("provider {provider} is unavailable: {reason}")]
    Unavailable { provider: String, reason: String },
    #[error("{0}")]
    PermissionDenied(String),
    /// No provider anywhere fits; says what was looked at.
    #[error("no provider can place this deployment: {0}")]
    NoPlacement(String),
    #[error("provider backend error: {0}")]
    Backend(String),
    /// No provider in the mesh could hold it even when empty; says why.
    #[error("no provider in the mesh could ever run this deployment: {0} (set wait_for_capacity to wait for a provider that can)")]
    NeverFits(String),
    /// The deployment is not in a state that allows this (queued, ended).
    #[error("{0}")]
    Precondition(String),
}

impl ResourceError {
    pub fn invalid(field: &str, reason: impl Into<String>) -> ResourceError {
        ResourceError::InvalidSpec {
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    pub fn code(&self) -> Code {
        match self {
            ResourceError::InvalidSpec { .. } => Code::InvalidArgument,
            ResourceError::NotFound(_) => Code::NotFound,
            ResourceError::Exhausted { .. }
            | ResourceError::NoSlot { .. }
            | ResourceError::NoPlacement(_) => Code::ResourceExhausted,
            ResourceError::PullFailed { .. }
            | ResourceError::NeverFits(_)
            | ResourceError::Precondition(_) => Code::FailedPrecondition,
            ResourceError::Unavailable { .. } => Code::Unavailable,
            ResourceError::PermissionDenied(_) => Code::PermissionDenied,
            ResourceError::Backend(_) => Code::Internal,
        }
    }

    /// A short, stable name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ResourceError::InvalidSpec { .. } => "invalid_spec",
            ResourceError::NotFound(_) => "not_found",
            ResourceError::Exhausted { .. } => "exhausted",
            ResourceError::NoSlot { .. } => "max_deployments",
            ResourceError::PullFailed { .. } => "pull_failed",
            ResourceError::Unavailable { .. } => "unavailable",
            ResourceError::PermissionDenied(_) => "permission_denied",
            ResourceError::NoPlacement(_) => "no_placement",
            ResourceError::Backend(_) => "backend",
            ResourceError::NeverFits(_) => "never_fits",
            ResourceError::Precondition(_) => "failed_precondition",
        }
    }

    /// Worth trying the next candidate provider after this error.
    pub fn try_elsewhere(&self) -> bool {
        matches!(
            self.code(),
            Code::ResourceExhausted | Code::Unavailable | Code::PermissionDenied | Code::NotFound
        )
    }

    /// Rebuilds an error that crossed the wire as a gRPC status.
    pub fn from_status(provider: &str, status: &Status) -> ResourceError {
        let msg = status.message().to_string();
        match status.code() {
            Code::InvalidArgument => ResourceError::InvalidSpec {
                field: "request".into(),
                reason: msg,
            },
            Code::NotFound => ResourceError::NotFound(msg),
            Code::ResourceExhausted => ResourceError::NoPlacement(msg),
            Code::FailedPrecondition => ResourceError::Precondition(msg),
            Code::PermissionDenied => ResourceError::PermissionDenied(msg),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                ResourceError::Unavailable {
                    provider: provider.to_string(),
                    reason: msg,
                }
            }
            _ => ResourceError::Backend(msg),
        }
    }
}

impl From<ResourceError> for Status {
    fn from(e: ResourceError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}
