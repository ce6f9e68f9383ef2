//! iarnet: a decentralized compute-resource mesh.
//!
//! Every node runs the same binary, gossips with a few random peers each
//! round, and so learns who is alive and which resource providers exist
//! anywhere in the mesh; any node places containers on any of them.
//!
//! # Layout
//! - [`mesh`]: the sans-IO gossip core (membership, failure detection,
//!   provider records) and its deterministic simulator.
//! - [`node`]: a running node: the async loop that drives the core over
//!   tonic, connection pooling, startup and graceful shutdown.
//! - [`resource`]: providers (Docker, Kubernetes, the in-memory twin), their
//!   capacity ledgers, GPU inventory and assignment, Kubernetes-style
//!   quantities and the label keys iarnet gives meaning to.
//! - [`placement`]: ranking, the resource manager, and proxies that operate
//!   other nodes' providers over `CallProvider`.
//! - [`api`]: the gRPC services: `peer.PeerService` for nodes,
//!   `iarnet.admin.v1.Admin` for operators, `iarnet.resource.v1.ResourceService`
//!   for deployments.
//! - [`security`]: mutual TLS, tokens, access lists, rate limits;
//!   [`audit`]: who asked for what, in its own file.
//! - [`sync`]: one async lock per key, and a token bucket, shared by the
//!   layers above.
//! - [`store`]: what a node must not forget across a crash (identity,
//!   deployments, registered providers, peers): redb on disk, or in memory.
//! - [`config`]: layered configuration (file, env, flags) and its validation;
//!   it speaks the resource and placement vocabulary (quantities, strategies).
//! - [`cli`]: the binary's flags; [`signal`]: SIGTERM/SIGINT handling.
//! - [`proto`]: generated protobuf code and the reflection descriptor set.
//! - `fuzz`: harnesses shared by the `fuzz/` targets and the regression replay.
#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod cli;
pub mod config;
#[doc(hidden)]
pub mod fuzz;
pub mod mesh;
pub mod metrics;
pub mod node;
pub mod placement;
pub mod proto;
pub mod resource;
pub mod security;
pub mod signal;
pub mod store;
pub mod sync;
