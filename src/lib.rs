//! iarnet: a decentralized compute-resource mesh.
//!
//! Every node runs the same binary, gossips with a few random peers each
//! round, and so learns who is alive and which resource providers exist
//! anywhere in the mesh; any node places containers on any of them.
//!
//! # Layout
//! Dependencies run one way, from the surfaces down to the vocabulary:
//! `ui`, `api` and `cli` on top; `node` (which composes everything and serves
//! the surfaces); `app` (applications, over placement); `security`; `config`; `placement`; `store`; `lifecycle`;
//! `resource`; `mesh`; `proto`; and `metrics`, `sync`, `audit` at the ground.
//!
//! - [`mesh`]: the sans-IO gossip core (membership, failure detection,
//!   provider records), the bounds of peer messages, and the simulator.
//! - [`node`]: a running node: start-up in phases, its handle, the async
//!   loop that drives the core over tonic, mDNS discovery of LAN peers (extra
//!   seeds), the providers it attaches.
//! - [`resource`]: providers (Docker, Kubernetes, the in-memory twin), their
//!   capacity ledgers, GPU inventory and assignment, Kubernetes-style
//!   quantities, label keys, provider targets, lease terms and wire conversions.
//! - [`placement`]: split by stage: feasibility, ranking, the registry of
//!   providers and its index, the placement loop, the book of records, and
//!   `CallProvider` (the proxy to other nodes' providers and serving), the
//!   pending queue and its worker, and the leases an owner keeps, with their
//!   worker.
//! - [`app`]: applications from Git: clone and pull, analysis into
//!   components and a checked dependency graph, rollout in dependency order
//!   through the placement manager, the code browser.
//! - [`lifecycle`]: the workload lifecycle, sans-IO: priorities, the order
//!   of a home's pending queue and what to try when capacity grows, leases.
//! - [`api`]: the gRPC services: `peer.PeerService` for nodes,
//!   `iarnet.admin.v1.Admin` for operators, `iarnet.resource.v1.ResourceService`
//!   for deployments; and the HTTP API with its JSON views.
//! - [`ui`]: the web dashboard under `/ui/`: server-rendered pages over
//!   the same service code as the APIs, live updates over Server-Sent
//!   Events, SVG charts from ring buffers, login sessions with CSRF tokens.
//! - [`security`]: mutual TLS, tokens, access lists, rate limits;
//!   [`audit`]: who asked for what, in its own file.
//! - [`metrics`]: Prometheus metrics, the gossip counters, process metrics.
//! - [`sync`]: one async lock per key, a token bucket, a poison-tolerant lock.
//! - [`store`]: what a node must not forget across a crash (identity,
//!   deployments, queued deploys, leases, registered providers, peers): redb on
//!   disk, or in memory.
//! - [`config`]: layered configuration (file, env, flags) and its validation;
//!   it speaks the resource and placement vocabulary (quantities, strategies).
//! - [`cli`]: the binary's flags; [`signal`]: SIGTERM/SIGINT handling.
//! - [`proto`]: generated protobuf code and the reflection descriptor set.
//! - `fuzz`: harnesses shared by the `fuzz/` targets and the regression replay.
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod audit;
pub mod cli;
pub mod config;
#[doc(hidden)]
pub mod fuzz;
pub mod lifecycle;
pub mod mesh;
pub mod metrics;
pub mod node;
pub mod placement;
pub mod proto;
pub mod resource;
pub mod security;
pub mod signal;
pub mod store;
pub mod swarm;
pub mod sync;
pub mod ui;
