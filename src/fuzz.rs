//! Fuzz harnesses, shared by the `fuzz/` targets and the regression replay
//! in `tests/fuzz_regressions.rs`. Each turns arbitrary bytes into a run of
//! one component and panics only when an invariant breaks.
//!
//! The bytes are read as a script of small operations: compact ones build
//! well-formed messages over a handful of ids (so merges actually collide),
//! raw ones protobuf-decode a slice as a whole message (so every field and
//! malformed value reaches the code too).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tonic::Code;

use crate::mesh::record::entry_hash;
use crate::mesh::{Exchange, Identity, Mesh, MeshConfig, Reply, Target};
use crate::placement::{Candidate, Discovery, Manager, ProviderCaller, Strategy};
use crate::proto::peer::{
    Digest, ExchangeRequest, ExchangeResponse, Member, MemberDigest, ProviderCallRequest,
    ProviderCallResponse, ProviderExchangeRequest, ProviderExchangeResponse, ProviderInfo,
    ProviderSet,
};
use crate::proto::resource as pb;
use crate::resource::memory::MemoryProvider;
use crate::resource::{Resources, Tier};

/// Reads the fuzzer's bytes front to back; past the end everything is zero.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn done(&self) -> bool {
        self.0.is_empty()
    }

    fn u8(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }

    /// A length-prefixed slice (at most 255 bytes).
    fn slice(&mut self) -> &'a [u8] {
        let n = (self.u8() as usize).min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    fn text(&mut self) -> String {
        String::from_utf8_lossy(self.slice()).into_owned()
    }
}

// ----- gossip ------------------------------------------------------------

/// Ids the compact operations draw from: "me" is the node under test.
const IDS: [&str; 6] = ["me", "m1", "m2", "m3", "m4", "m5"];

fn id(b: &mut Bytes) -> String {
    IDS[b.u8() as usize % IDS.len()].to_string()
}

fn member(b: &mut Bytes) -> Member {
    let who = id(b);
    let flags = b.u8();
    Member {
        addr: if flags & 1 == 0 {
            format!("{who}:1")
        } else {
            String::new()
        },
        name: who.clone(),
        id: who,
        generation: u64::from(b.u8() % 4),
        incarnation: u64::from(b.u8() % 4),
        // 0 and 5 are out of range on purpose.
        status: i32::from(b.u8() % 6),
        provider_version: u64::from(b.u8() % 4),
        suspected_by: (0..flags >> 5).map(|_| id(b)).collect(),
    }
}

fn digest(b: &mut Bytes) -> Digest {
    let bucket_count = u32::from(b.u8());
    let buckets = (0..b.u8() % 4).map(|_| u32::from(b.u8())).collect();
    let entries = (0..b.u8() % 6)
        .map(|_| MemberDigest {
            id: id(b),
            generation: u64::from(b.u8() % 4),
            incarnation: u64::from(b.u8() % 4),
            status: i32::from(b.u8() % 6),
            provider_version: u64::from(b.u8() % 4),
            confirmations: u32::from(b.u8() % 5),
        })
        .collect();
    Digest {
        bucket_count,
        buckets,
        entries,
    }
}

fn provider_set(b: &mut Bytes) -> ProviderSet {
    let owner_id = id(b);
    let owner_generation = u64::from(b.u8() % 4);
    let version = u64::from(b.u8() % 4);
    let providers = (0..b.u8() % 3)
        .map(|_| ProviderInfo {
            id: format!("p{}", b.u8() % 4),
            owner_id: if b.u8() & 1 == 0 {
                owner_id.clone()
            } else {
                id(b)
            },
            owner_generation,
            version,
            ..Default::default()
        })
        .collect();
    ProviderSet {
        owner_id,
        owner_generation,
        version,
        providers,
        meta: None,
    }
}

fn gossip_config() -> MeshConfig {
    // Short timers, so that ticks a few seconds apart reach suspicion,
    // tombstone and forgetting deadlines.
    MeshConfig {
        tombstone_grace: 5_000,
        forget_after: 20_000,
        max_message_bytes: 4 * 1024,
        ..MeshConfig::default()
    }
}

/// Feeds one gossip core a script of exchanges, replies, failures and ticks.
pub fn gossip_messages(data: &[u8]) {
    let mut b = Bytes(data);
    let mut now = 1_000_000;
    let me = Identity {
        id: "me".into(),
        name: "me".into(),
        addr: "me:1".into(),
        generation: 1,
    };
    let mut mesh = Mesh::new(me, gossip_config(), 7, now);
    mesh.set_seeds(vec!["seed:1".into(), "me:1".into()]);
    mesh.set_providers(vec![ProviderInfo {
        id: "own".into(),
        ..Default::default()
    }]);
    for (i, id) in IDS[1..4].iter().enumerate() {
        let m = Member {
            id: id.to_string(),
            name: id.to_string(),
            generation: 1,
            addr: format!("{id}:1"),
            incarnation: i as u64,
            status: 1,
            provider_version: 1,
            suspected_by: Vec::new(),
        };
        let _ = mesh.apply_member(now, m, true);
    }
    let mut exchange: Option<Exchange> = None;
    let mut steps = 0;
    while !b.done() && steps < 64 {
        steps += 1;
        match b.u8() % 12 {
            0 => {
                if let Ok(req) = ExchangeRequest::decode(b.slice()) {
                    mesh.handle_exchange(now, req);
                }
            }
            1 => {
                if let Ok(req) = ProviderExchangeRequest::decode(b.slice()) {
                    mesh.handle_providers(req);
                }
            }
            2 => {
                let resp = ExchangeResponse::decode(b.slice());
                if let (Some(ex), Ok(resp)) = (exchange.as_mut(), resp) {
                    mesh.on_reply(now, ex, Reply::Peers(resp));
                }
            }
            3 => {
                let resp = ProviderExchangeResponse::decode(b.slice());
                if let (Some(ex), Ok(resp)) = (exchange.as_mut(), resp) {
                    mesh.on_reply(now, ex, Reply::Providers(resp));
                }
            }
            4 => {
                now += u64::from(b.u8()) * 250;
                let targets = mesh.tick(now);
                if let Some(t) = targets.into_iter().next() {
                    exchange = Some(mesh.open(t).0);
                }
            }
            5 => {
                let who = id(&mut b);
                let (ex, _) = mesh.open(Target {
                    addr: format!("{who}:1"),
                    id: (b.u8() & 1 == 0).then(|| who.as_str().into()),
                });
                exchange = Some(ex);
            }
            6 => {
                if let Some(ex) = exchange.as_mut() {
                    if mesh.on_failure(now, ex).is_none() {
                        exchange = None;
                    }
                }
            }
            7 => {
                let flags = b.u8();
                let req = ExchangeRequest {
                    sender: (flags & 1 == 0).then(|| member(&mut b)),
                    view_hash: if flags & 2 == 0 { 0 } else { 3 },
                    digest: (flags & 4 == 0).then(|| digest(&mut b)),
                    members: (0..flags >> 6).map(|_| member(&mut b)).collect(),
                    refute: None,
                    known_peers: Vec::new(),
                };
                let old_client = req.sender.is_none();
                let resp = mesh.handle_exchange(now, req);
                if !old_client {
                    assert_eq!(resp.view_hash, mesh.view_hash() | 1, "stale hash answered");
                }
            }
            8 => {
                let flags = b.u8();
                let req = ProviderExchangeRequest {
                    sets: (0..flags % 3).map(|_| provider_set(&mut b)).collect(),
                    wants: (0..(flags >> 2) % 3)
                        .map(|_| MemberDigest {
                            id: id(&mut b),
                            generation: u64::from(b.u8() % 4),
                            provider_version: u64::from(b.u8() % 4),
                            ..Default::default()
                        })
                        .collect(),
                    sender_id: if flags & 16 == 0 {
                        id(&mut b)
                    } else {
                        String::new()
                    },
                    providers: Vec::new(),
                };
                mesh.handle_providers(req);
            }
            9 => {
                let flags = b.u8();
                let resp = ExchangeResponse {
                    sender: (flags & 1 == 0).then(|| member(&mut b)),
                    view_hash: if flags & 2 == 0 { 0 } else { 3 },
                    bucket_count: u32::from(b.u8()),
                    bucket_hashes: (0..(flags >> 2) % 4).map(|_| u64::from(b.u8())).collect(),
                    digest: (flags & 16 == 0).then(|| digest(&mut b)),
                    members: (0..flags >> 6).map(|_| member(&mut b)).collect(),
                    refute: None,
                    known_peers: Vec::new(),
                };
                if let Some(ex) = exchange.as_mut() {
                    mesh.on_reply(now, ex, Reply::Peers(resp));
                }
            }
            10 => {
                let direct = b.u8() & 1 == 0;
                let _ = mesh.apply_member(now, member(&mut b), direct);
            }
            _ => match b.u8() % 8 {
                0 => {
                    mesh.leave();
                }
                _ => {
                    let set = provider_set(&mut b);
                    mesh.set_providers(set.providers);
                }
            },
        }
        check_view(&mesh);
    }
}

/// What must hold after every step, whatever came in.
fn check_view(mesh: &Mesh) {
    let scratch = mesh.view().iter().fold(0u64, |h, e| {
        h ^ entry_hash(&e.info.id, &e.stamp(), e.held_version())
    });
    assert_eq!(scratch, mesh.view_hash(), "incremental view hash drifted");
    for k in [1, 2, 16] {
        let folded = mesh.view().bucket_hashes(k).iter().fold(0, |h, x| h ^ x);
        assert_eq!(folded, mesh.view_hash(), "bucket hashes disagree at {k}");
    }
    assert!(mesh.view().get(mesh.id()).is_some(), "own record lost");
}

// ----- CallProvider -------------------------------------------------------

/// A mesh with no other nodes: the manager serves its own providers only.
struct Alone;

struct NoCaller;

#[async_trait::async_trait]
impl ProviderCaller for NoCaller {
    async fn call(
        &self,
        _owner_addr: &str,
        _request: ProviderCallRequest,
        _timeout: Duration,
    ) -> Result<ProviderCallResponse, tonic::Status> {
        Err(tonic::Status::unavailable("no other nodes"))
    }
}

impl Discovery for Alone {
    fn discovered(&self) -> Vec<Candidate> {
        Vec::new()
    }
    fn publish(&self, _providers: Vec<ProviderInfo>) {}
    fn caller(&self) -> Arc<dyn ProviderCaller> {
        Arc::new(NoCaller)
    }
    fn version(&self) -> u64 {
        0
    }
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime with no drivers always builds");
}

const METHODS: [&str; 8] = [
    "capacity",
    "deploy",
    "status",
    "logs",
    "stop",
    "restart",
    "renew_lease",
    "release_lease",
];
/// Lease TTLs a fuzzed deploy asks for: none, valid, and refused ones.
const TTLS: [&str; 5] = ["", "1s", "10m", "-1s", "soon"];

/// Serves a script of `CallProvider` requests from one node's manager.
pub fn call_provider_payload(data: &[u8]) {
    RUNTIME.with(|rt| rt.block_on(serve_script(data)));
}

async fn serve_script(data: &[u8]) {
    let mut b = Bytes(data);
    let remote_access = b.u8() != 0xff;
    let manager = Manager::new("n", Arc::new(Alone), Strategy::Spread, remote_access, 1);
    // Small, so that a few deploys exhaust it.
    let total = Resources {
        cpu_millis: 2_000,
        memory_bytes: 2 << 30,
        gpus: 0,
        storage_bytes: 0,
    };
    let provider = MemoryProvider::new("a", total, BTreeMap::new());
    manager
        .add_provider(Arc::new(provider), Tier::Internal)
        .await
        .expect("the first provider of a fresh manager registers");
    let mut deployed: Vec<String> = Vec::new();
    let mut steps = 0;
    while !b.done() && steps < 32 {
        steps += 1;
        let op = b.u8();
        let provider = if op & 0x80 == 0 { "a" } else { "b" };
        let method = METHODS[(op & 0x7f) as usize % METHODS.len()];
        let payload = match (op >> 4) & 7 {
            // A well-formed call whose text fields are fuzzed.
            1 if method == "deploy" => pb::DeployCall {
                spec: Some(pb::DeploySpec {
                    request_id: format!("r{}", b.u8() % 4),
                    image: b.text(),
                    cpu: b.text(),
                    memory: b.text(),
                    gpu: u32::from(b.u8() % 3),
                    lease_ttl: TTLS[b.u8() as usize % TTLS.len()].to_string(),
                    max_renewals: Some(u32::from(b.u8() % 3)).filter(|_| b.u8() % 2 == 0),
                    ..Default::default()
                }),
            }
            .encode_to_vec(),
            // The id of an earlier deployment.
            2 if !deployed.is_empty() => {
                let id = deployed[b.u8() as usize % deployed.len()].clone();
                match method {
                    "logs" => pb::LogsCall {
                        deployment_id: id,
                        tail: u32::from(b.u8() % 4),
                        skip: u64::from(b.u8()) << (b.u8() % 64),
                    }
                    .encode_to_vec(),
                    "renew_lease" | "release_lease" => pb::LeaseCall {
                        deployment_id: id,
                        epoch: u64::from(b.u8() % 3),
                    }
                    .encode_to_vec(),
                    _ => pb::StatusCall { deployment_id: id }.encode_to_vec(),
                }
            }
            _ => b.slice().to_vec(),
        };
        match manager.serve_call(provider, method, &payload).await {
            Ok(reply) => check_reply(method, &reply, &mut deployed),
            Err(status) => assert!(
                matches!(
                    status.code(),
                    Code::InvalidArgument
                        | Code::NotFound
                        | Code::Unimplemented
                        | Code::ResourceExhausted
                        | Code::PermissionDenied
                        | Code::FailedPrecondition
                ),
                "{method} answered {status:?}"
            ),
        }
    }
}

/// A successful call answers with the message its method promises.
fn check_reply(method: &str, reply: &[u8], deployed: &mut Vec<String>) {
    match method {
        "capacity" => {
            pb::ProviderEntry::decode(reply).expect("capacity answers a ProviderEntry");
        }
        "logs" => {
            pb::LogsReply::decode(reply).expect("logs answer a LogsReply");
        }
        _ => {
            let d = pb::Deployment::decode(reply).expect("answers a Deployment");
            assert!(
                !d.id.is_empty(),
                "{method} answered a deployment without id"
            );
            if method == "deploy" && !deployed.contains(&d.id) {
                deployed.push(d.id);
            }
        }
    }
}
