//! Applications: Git repositories cloned into the workspace, analysed into
//! components and a dependency graph, deployed in dependency order through
//! the placement manager, and browsed and edited file by file.
//!
//! ```text
//! git        clone, pull and status by the `git` program
//! analyze    Compose / Dockerfile / Procfile -> components and a checked DAG
//! record     what the store keeps of an application
//! files      the code browser: a checkout's tree, read and write, confined
//! manager    create, analyse, pull, delete; one lock per application
//! rollout    deploy level by level, waiting on each dependency's condition
//! build      images from source, built on the provider that will run them
//! ```

pub mod analyze;
mod build;
pub mod context;
pub mod files;
pub mod git;
pub mod manager;
pub mod record;
pub mod rollout;

pub use manager::Applications;
pub use record::{AppRecord, AppView, ComponentView};

use tonic::{Code, Status};

use crate::resource::ResourceError;

/// What went wrong with an application request; each names the field or
/// the application it is about and maps to one gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unavailable(String),
    /// The application is not in a state that allows this; says what would.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Analysis(#[from] analyze::AnalysisError),
    #[error("{0}")]
    Deploy(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error(transparent)]
    Resource(#[from] ResourceError),
    #[error("{0}")]
    Internal(String),
}

impl AppError {
    pub fn invalid(field: &str, reason: impl Into<String>) -> AppError {
        AppError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<AppError> for Status {
    fn from(e: AppError) -> Status {
        let code = match &e {
            AppError::Invalid { .. } | AppError::Analysis(_) => Code::InvalidArgument,
            AppError::NotFound(_) => Code::NotFound,
            AppError::AlreadyExists(_) => Code::AlreadyExists,
            AppError::PermissionDenied(_) => Code::PermissionDenied,
            AppError::Unavailable(_) => Code::Unavailable,
            AppError::Conflict(_) => Code::FailedPrecondition,
            AppError::Deploy(_) => Code::Aborted,
            AppError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            AppError::Resource(r) => return Status::from(r.clone()),
            AppError::Internal(_) => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}
