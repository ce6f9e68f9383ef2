//! Deploys addressed to a swarm group go to the group's leader, which
//! orders them through its own queue (see the design note in `swarm`).

use futures::StreamExt;
use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

use crate::node::shared::Shared;
use crate::node::swarm::read_swarm;
use crate::proto::resource as pb;

/// Set on a deploy a member forwarded to its group's leader: the leader
/// places it whatever its own view says, so a deploy never bounces.
pub const FORWARDED: &str = "x-iarnet-forwarded";

/// Where a group deploy is placed.
pub enum Route {
    /// This node leads the group (or the deploy was forwarded here).
    Here,
    Leader {
        id: String,
        addr: String,
    },
}

/// Finds the leader of `group`: NOT_FOUND for a group nobody is in,
/// UNAVAILABLE while it has no leader (its majority is out of reach).
pub fn route(shared: &Shared, group: &str, forwarded: bool) -> Result<Route, Status> {
    if forwarded {
        return Ok(Route::Here);
    }
    let state = read_swarm(shared, |s, peers, now| {
        s.groups(peers, now).into_iter().find(|g| g.name == group)
    });
    let Some(state) = state else {
        return Err(Status::not_found(format!(
            "group: no live member belongs to group {group:?}; create it or check the name with ListGroups"
        )));
    };
    let Some(leader) = state.leader else {
        return Err(Status::unavailable(format!(
            "group {group:?} has no leader now ({}); retry once its members are reachable",
            state.reason
        )));
    };
    let mesh = shared.mesh();
    if leader == mesh.id() {
        return Ok(Route::Here);
    }
    let addr = mesh
        .view()
        .get(&leader)
        .map(|e| e.info.addr.clone())
        .ok_or_else(|| {
            Status::unavailable(format!(
                "the leader {leader:?} of group {group:?} just left; retry"
            ))
        })?;
    Ok(Route::Leader { id: leader, addr })
}

/// Sends the deploy to the leader and relays its events.
pub async fn forward(
    shared: &Shared,
    addr: &str,
    spec: pb::DeploySpec,
    authorization: Option<MetadataValue<tonic::metadata::Ascii>>,
) -> Result<super::resources::EventStream<pb::DeployEvent>, Status> {
    let mut client = shared.pool.resources(addr)?;
    let mut req = Request::new(spec);
    req.metadata_mut()
        .insert(FORWARDED, MetadataValue::from_static("1"));
    if let Some(a) = authorization {
        req.metadata_mut().insert("authorization", a);
    }
    let stream = client.deploy(req).await?.into_inner();
    Ok(stream.boxed())
}
