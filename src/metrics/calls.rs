//! CallProvider latency, recorded by the caller and by the owner.

use std::time::Instant;

use super::{code_label, CallLabels, Metrics};

/// Which end of a CallProvider this node was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// This node called another.
    Client,
    /// This node answered for one of its providers.
    Server,
}

impl Side {
    fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }
}

/// Records one CallProvider's latency. `method` is a fixed label (the
/// operation, or "other"), never what a caller sent, so a hostile caller
/// cannot grow the label set.
pub fn observe_call<T>(
    metrics: &Metrics,
    side: Side,
    method: &'static str,
    result: &Result<T, tonic::Status>,
    started: Instant,
) {
    let code = result
        .as_ref()
        .map_or_else(|s| s.code(), |_| tonic::Code::Ok);
    metrics
        .provider_call_seconds
        .get_or_create(&CallLabels {
            side: side.as_str().to_string(),
            method: method.to_string(),
            code: code_label(code),
        })
        .observe(started.elapsed().as_secs_f64());
}
