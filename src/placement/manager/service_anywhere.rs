//! Any node answers for any service of the mesh. A service is kept by its
//! home, the node that accepted the deploy with replicas; another node
//! finds that home through the directory entry of the service's first
//! replica and forwards the read or the scale there, one hop.

use super::anywhere::FORWARD_TIMEOUT;
use super::{Manager, ServiceView};
use crate::proto::directory as pb;
use crate::proto::resource as rpb;
use crate::resource::service::replica_request_id;
use crate::resource::ResourceError;

/// A service as a node answers for it: kept here, or as its home sent it.
#[derive(Debug, Clone)]
pub enum ServiceAnswer {
    Here(Box<ServiceView>),
    Home(Box<rpb::Service>),
}

impl Manager {
    /// Service `id` wherever its home is; scaled to `scale_to` when set.
    /// `who` is the caller as this node's guard named it.
    pub async fn service_anywhere(
        &self,
        id: &str,
        scale_to: Option<u32>,
        who: &str,
    ) -> Result<ServiceAnswer, ResourceError> {
        let why = match self.local_service(id, scale_to).await {
            Err(ResourceError::NotFound(why)) => why,
            other => return other.map(|v| ServiceAnswer::Here(Box::new(v))),
        };
        // Replica 0 is the last to go when a service scales down.
        let loc = match self.locate(&replica_request_id(id, 0)).await {
            Ok(loc) => loc,
            Err(ResourceError::NotFound(_)) => {
                return Err(ResourceError::NotFound(format!(
                    "no service {id:?} here or in the mesh: no node knows its replica {:?}; check the id, or ListServices on the node that accepted its deploy",
                    replica_request_id(id, 0)
                )))
            }
            Err(e) => return Err(e),
        };
        let Some(home) = loc.home.filter(|h| h.id != self.node_id) else {
            return Err(ResourceError::NotFound(why));
        };
        if self.ring().member(&home.id).is_none() {
            return Err(ResourceError::Unavailable {
                provider: home.id.clone(),
                reason: format!(
                    "service {id:?} is kept by node {}, which is not a live member as node {} sees the mesh; its replicas run on, and answer GetDeployment from their owners; try again once it is back",
                    home.id, self.node_id
                ),
            });
        }
        let Some(caller) = self.registry.discovery().directory() else {
            return Err(ResourceError::NotFound(why));
        };
        let req = pb::ForwardServiceRequest {
            from: self.node_id.clone(),
            id: id.to_string(),
            scale_to,
            on_behalf_of: who.to_string(),
        };
        caller
            .forward_service(&home.addr, req, FORWARD_TIMEOUT)
            .await
            .map(|s| ServiceAnswer::Home(Box::new(s)))
            .map_err(|s| ResourceError::from_status(&home.id, &s))
    }

    /// The service kept here, read or scaled, never forwarded: the answer
    /// to a forwarded call.
    pub async fn local_service(
        &self,
        id: &str,
        scale_to: Option<u32>,
    ) -> Result<ServiceView, ResourceError> {
        match scale_to {
            Some(n) => self.scale(id, n).await,
            None => self.service(id).await,
        }
    }
}
