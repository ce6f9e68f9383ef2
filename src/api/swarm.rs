//! `iarnet.swarm.v1.Swarm` (operators: groups, pools, health checks) and
//! `SwarmPeer` (nodes: a group change forwarded to the node it is about,
//! and the health probe).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tonic::{Request, Response, Status};

use crate::node::shared::Shared;
use crate::node::swarm::{capacity_of, meta_of, read_swarm, with_swarm, HEALTH_TIMEOUT};
use crate::placement::manager::Op as DeploymentOp;
use crate::placement::Manager;
use crate::proto::peer::PoolRecord;
use crate::proto::swarm as pb;
use crate::proto::swarm::peer_op::Op;
use crate::swarm::{check_name, pools, wall_ms, GroupState, SwarmError};

/// A forwarded leave that stops work waits for each container's grace.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub struct SwarmApi {
    shared: Arc<Shared>,
    manager: Arc<Manager>,
}

impl SwarmApi {
    pub fn new(shared: Arc<Shared>, manager: Arc<Manager>) -> SwarmApi {
        SwarmApi { shared, manager }
    }

    fn names(&self) -> HashMap<String, String> {
        self.shared
            .mesh()
            .view()
            .iter()
            .map(|e| (e.info.id.to_string(), e.info.name.clone()))
            .collect()
    }

    fn to_proto(&self, g: &GroupState) -> pb::Group {
        let names = self.names();
        let leader = g.leader.clone().unwrap_or_default();
        pb::Group {
            name: g.name.clone(),
            max_members: g.max_members,
            members: g
                .members
                .iter()
                .map(|m| pb::GroupMember {
                    id: m.id.clone(),
                    name: names.get(&m.id).cloned().unwrap_or_default(),
                    state: m.status.as_str().to_string(),
                    joined_ms: m.joined_ms,
                    is_leader: m.id == leader,
                })
                .collect(),
            leader,
            term: g.term,
            epoch: g.epoch,
            leader_since_ms: g.since_ms,
            quorum: g.quorum,
            reason: g.reason.clone(),
            ..Default::default()
        }
    }

    /// The group as this node sees it now; NOT_FOUND when no member is left.
    fn group(&self, name: &str) -> Result<pb::Group, Status> {
        let state = read_swarm(&self.shared, |s, peers, now| {
            s.groups(peers, now).into_iter().find(|g| g.name == name)
        });
        match state {
            Some(g) => Ok(self.to_proto(&g)),
            None => Ok(pb::Group {
                name: name.to_string(),
                reason: "no live member belongs to it".into(),
                ..Default::default()
            }),
        }
    }

    /// Applies a group change to this node, audited under `who`.
    async fn apply_here(&self, op: Op, who: &str) -> Result<pb::Group, Status> {
        let (action, name) = match &op {
            Op::Create(r) => ("swarm.group.create", r.name.clone()),
            Op::Join(r) => ("swarm.group.join", r.group.clone()),
            Op::Leave(r) => ("swarm.group.leave", r.group.clone()),
        };
        let result = with_swarm(&self.shared, |s, peers, now| match &op {
            Op::Create(r) => s.create_group(&r.name, r.max_members, peers, now),
            Op::Join(r) => s.join_group(&r.group, peers, now).map(|_| ()),
            Op::Leave(r) => s.leave_group(&r.group),
        });
        let outcome = if result.is_ok() { "ok" } else { "refused" };
        self.shared.audit.record(
            action,
            who,
            outcome,
            json!({"group": name, "error": result.as_ref().err().map(|e| e.to_string())}),
        );
        result.map_err(Status::from)?;
        let mut group = self.group(&name)?;
        if matches!(&op, Op::Leave(r) if r.release) {
            (group.stopped, group.not_stopped) = self.release(&name, who).await;
        }
        Ok(group)
    }

    /// Stops what this node's providers run for `group`. Each stop goes
    /// through the deployment's home, so its record says stopped and no
    /// restart or failover places it again.
    async fn release(&self, group: &str, who: &str) -> (Vec<String>, Vec<String>) {
        let running: Vec<String> = self
            .manager
            .list_local()
            .await
            .into_iter()
            .filter(|d| d.group == group && !d.state().is_final())
            .map(|d| d.id)
            .collect();
        let (mut stopped, mut failed) = (Vec::new(), Vec::new());
        for id in running {
            match self.manager.anywhere(DeploymentOp::Stop, &id, who).await {
                Ok(_) => stopped.push(id),
                Err(e) => failed.push(format!("{id}: {e}")),
            }
        }
        self.shared.audit.record(
            "swarm.group.release",
            who,
            if failed.is_empty() { "ok" } else { "partial" },
            json!({"group": group, "stopped": stopped, "not_stopped": failed}),
        );
        (stopped, failed)
    }

    /// Applies a group change on `node` (empty or this node: here).
    async fn route(&self, node: &str, op: Op, who: String) -> Result<pb::Group, Status> {
        let me = self.shared.mesh().id().to_string();
        if node.is_empty() || node == me {
            return self.apply_here(op, &who).await;
        }
        let timeout = match &op {
            Op::Leave(r) if r.release => RELEASE_TIMEOUT,
            _ => HEALTH_TIMEOUT,
        };
        let addr = self.live_addr(node)?;
        let mut client = self.shared.pool.swarm(&addr)?;
        let req = pb::PeerOp {
            op: Some(op),
            on_behalf_of: who,
        };
        let reply = tokio::time::timeout(timeout, client.apply(req))
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!("node {node:?} did not answer in time"))
            })??;
        Ok(reply.into_inner())
    }

    /// The address of a live member, or why it cannot be reached.
    fn live_addr(&self, node: &str) -> Result<String, Status> {
        let mesh = self.shared.mesh();
        match mesh.view().get(node) {
            Some(e) if !e.status.is_tombstone() => Ok(e.info.addr.clone()),
            Some(e) => Err(Status::failed_precondition(format!(
                "node {node:?} is {}; only live members can be changed",
                e.status.as_str()
            ))),
            None => Err(Status::not_found(format!(
                "node: no member with id {node:?}; list members with Admin/ListPeers"
            ))),
        }
    }

    /// This node's own health report.
    fn health_here(&self) -> pb::HealthCheckResponse {
        let (id, name, addr) = {
            let mesh = self.shared.mesh();
            let me = mesh.info();
            (me.id.to_string(), me.name.clone(), me.addr.clone())
        };
        let meta = meta_of(&self.shared, &id).unwrap_or_default();
        let caps: Vec<crate::proto::resource::Capacity> = self
            .manager
            .candidates()
            .into_iter()
            .filter(|c| c.owner_id == id)
            .map(|c| crate::proto::resource::Capacity::from(c.capacity))
            .collect();
        let sum = capacity_of(&caps.iter().collect::<Vec<_>>());
        let (total, reserved) = (
            sum.total.unwrap_or_default(),
            sum.reserved.unwrap_or_default(),
        );
        let ratio = |used: u64, of: u64| {
            if of == 0 {
                0.0
            } else {
                used as f64 / of as f64
            }
        };
        pb::HealthCheckResponse {
            node: id,
            name,
            addr,
            status: "alive".into(),
            active_allocations: sum.deployments,
            cpu_load: ratio(reserved.cpu_millis, total.cpu_millis),
            memory_load: ratio(reserved.memory_bytes, total.memory_bytes),
            models: meta.models,
            groups: meta.groups.into_iter().map(|g| g.group).collect(),
            allow_remote: meta.allow_remote,
            ..Default::default()
        }
    }

    fn pool_to_proto(&self, p: &PoolRecord) -> pb::Pool {
        let mesh = self.shared.mesh();
        let mut members = Vec::new();
        let mut caps = Vec::new();
        for e in mesh.view().iter().filter(|e| !e.status.is_tombstone()) {
            let Some(set) = &e.providers else { continue };
            let inside: Vec<_> = set
                .providers
                .iter()
                .filter(|pr| {
                    pools::contains(p, &e.info.id, |k| pr.labels.get(k).map(String::as_str))
                })
                .collect();
            if !inside.is_empty() {
                members.push(e.info.id.to_string());
                caps.extend(inside.into_iter().filter_map(|pr| pr.capacity));
            }
        }
        pb::Pool {
            name: p.name.clone(),
            nodes: p.nodes.clone(),
            selector: p.selector.clone(),
            description: p.description.clone(),
            created_by: p.created_by.clone(),
            updated_ms: p.updated_ms,
            members,
            providers: caps.len() as u32,
            capacity: Some(capacity_of(&caps.iter().collect::<Vec<_>>())),
        }
    }
}

fn who<T>(request: &Request<T>) -> String {
    crate::security::who(request)
}

#[tonic::async_trait]
impl pb::swarm_server::Swarm for SwarmApi {
    async fn list_groups(
        &self,
        _: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let groups = read_swarm(&self.shared, |s, peers, now| s.groups(peers, now));
        Ok(Response::new(pb::ListGroupsResponse {
            groups: groups.iter().map(|g| self.to_proto(g)).collect(),
        }))
    }

    async fn create_group(
        &self,
        request: Request<pb::CreateGroupRequest>,
    ) -> Result<Response<pb::Group>, Status> {
        let who = who(&request);
        let r = request.into_inner();
        check_name("name", &r.name)?;
        let node = r.node.clone();
        self.route(&node, Op::Create(r), who)
            .await
            .map(Response::new)
    }

    async fn join_group(
        &self,
        request: Request<pb::JoinGroupRequest>,
    ) -> Result<Response<pb::Group>, Status> {
        let who = who(&request);
        let r = request.into_inner();
        check_name("group", &r.group)?;
        let node = r.node.clone();
        self.route(&node, Op::Join(r), who).await.map(Response::new)
    }

    async fn leave_group(
        &self,
        request: Request<pb::LeaveGroupRequest>,
    ) -> Result<Response<pb::Group>, Status> {
        let who = who(&request);
        let r = request.into_inner();
        check_name("group", &r.group)?;
        let node = r.node.clone();
        self.route(&node, Op::Leave(r), who)
            .await
            .map(Response::new)
    }

    async fn list_pools(
        &self,
        _: Request<pb::ListPoolsRequest>,
    ) -> Result<Response<pb::ListPoolsResponse>, Status> {
        let pools = read_swarm(&self.shared, |s, _, _| s.pools());
        Ok(Response::new(pb::ListPoolsResponse {
            pools: pools.iter().map(|p| self.pool_to_proto(p)).collect(),
        }))
    }

    async fn create_pool(
        &self,
        request: Request<pb::CreatePoolRequest>,
    ) -> Result<Response<pb::Pool>, Status> {
        let who = who(&request);
        let r = request.into_inner();
        check_name("name", &r.name)?;
        self.check_pool(&r)?;
        let me = self.shared.mesh().id().to_string();
        let now = wall_ms();
        let record = with_swarm(&self.shared, |s, _, _| {
            // Strictly newer than what this node holds, even with a clock behind.
            let after = s
                .pool_records()
                .find(|p| p.name == r.name)
                .map_or(0, |p| p.updated_ms + 1);
            let created_by = s
                .pool(&r.name)
                .map_or_else(|| me.clone(), |p| p.created_by.clone());
            let record = PoolRecord {
                name: r.name.clone(),
                nodes: r.nodes.clone(),
                selector: r.selector.clone(),
                updated_ms: now.max(after),
                writer: me.clone(),
                deleted: false,
                created_by,
                description: r.description.clone(),
            };
            s.put_pool(record.clone());
            record
        });
        self.shared.audit.record(
            "swarm.pool.create",
            &who,
            "ok",
            json!({"pool": r.name, "nodes": r.nodes, "selector": r.selector}),
        );
        Ok(Response::new(self.pool_to_proto(&record)))
    }

    async fn delete_pool(
        &self,
        request: Request<pb::DeletePoolRequest>,
    ) -> Result<Response<pb::DeletePoolResponse>, Status> {
        let who = who(&request);
        let name = request.into_inner().name;
        let me = self.shared.mesh().id().to_string();
        let deleted = with_swarm(&self.shared, |s, _, now| {
            let held = s.pool(&name).cloned()?;
            s.put_pool(PoolRecord {
                deleted: true,
                updated_ms: now.max(held.updated_ms + 1),
                writer: me,
                ..held
            });
            Some(())
        });
        if deleted.is_none() {
            return Err(SwarmError::NotFound(format!(
                "no pool named {name:?}; list pools to check the name"
            ))
            .into());
        }
        self.shared
            .audit
            .record("swarm.pool.delete", &who, "ok", json!({"pool": name}));
        Ok(Response::new(pb::DeletePoolResponse {}))
    }

    async fn health_check(
        &self,
        request: Request<pb::HealthCheckRequest>,
    ) -> Result<Response<pb::HealthCheckResponse>, Status> {
        let node = request.into_inner().node;
        let me = self.shared.mesh().id().to_string();
        if node.is_empty() || node == me {
            return Ok(Response::new(self.health_here()));
        }
        let (addr, state) = {
            let mesh = self.shared.mesh();
            match mesh.view().get(&node) {
                Some(e) => (e.info.addr.clone(), e.status),
                None => {
                    return Err(Status::not_found(format!(
                        "node: no member with id {node:?}; list members with Admin/ListPeers"
                    )))
                }
            }
        };
        let ms = |d: Option<std::time::Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        let mut report = if state.is_tombstone() {
            pb::HealthCheckResponse {
                node: node.clone(),
                status: state.as_str().into(),
                ..Default::default()
            }
        } else {
            let started = Instant::now();
            let probe = async {
                let mut client = self.shared.pool.swarm(&addr)?;
                client.health(pb::HealthCheckRequest::default()).await
            };
            match tokio::time::timeout(HEALTH_TIMEOUT, probe).await {
                Ok(Ok(r)) => pb::HealthCheckResponse {
                    status: state.as_str().into(),
                    response_ms: started.elapsed().as_secs_f64() * 1000.0,
                    ..r.into_inner()
                },
                Ok(Err(e)) => unreachable_report(&node, e.message()),
                Err(_) => unreachable_report(&node, "no answer within 3s"),
            }
        };
        report.addr = addr.clone();
        report.rtt_ms = ms(self.shared.stats.rtt(&addr));
        report.rtt_p99_ms = ms(self.shared.stats.rtt_p99(&addr));
        Ok(Response::new(report))
    }
}

fn unreachable_report(node: &str, why: &str) -> pb::HealthCheckResponse {
    pb::HealthCheckResponse {
        node: node.to_string(),
        status: "unreachable".into(),
        error: why.to_string(),
        ..Default::default()
    }
}

impl SwarmApi {
    fn check_pool(&self, r: &pb::CreatePoolRequest) -> Result<(), Status> {
        let mesh = self.shared.mesh();
        for (i, n) in r.nodes.iter().enumerate() {
            if mesh.view().get(n).is_none() {
                return Err(Status::invalid_argument(format!(
                    "invalid nodes[{i}]: no member with id {n:?}; list members with Admin/ListPeers"
                )));
            }
        }
        for (k, v) in &r.selector {
            if k.is_empty() || k.len() > 253 || v.len() > 253 {
                return Err(Status::invalid_argument(format!(
                    "invalid selector.{k}: keys must be 1-253 bytes and values at most 253"
                )));
            }
        }
        if r.description.len() > 256 {
            return Err(Status::invalid_argument(
                "invalid description: at most 256 bytes",
            ));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl pb::swarm_peer_server::SwarmPeer for SwarmApi {
    async fn apply(&self, request: Request<pb::PeerOp>) -> Result<Response<pb::Group>, Status> {
        let peer = who(&request);
        let r = request.into_inner();
        let op =
            r.op.ok_or_else(|| Status::invalid_argument("op: give create, join or leave"))?;
        let who = format!("{} via {peer}", r.on_behalf_of);
        self.apply_here(op, &who).await.map(Response::new)
    }

    async fn health(
        &self,
        _: Request<pb::HealthCheckRequest>,
    ) -> Result<Response<pb::HealthCheckResponse>, Status> {
        Ok(Response::new(self.health_here()))
    }
}
