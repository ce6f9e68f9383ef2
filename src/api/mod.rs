//! The surfaces of a node: gRPC [`peer`] and [`directory`] for other nodes, [`admin`] and
//! [`resources`] for operators and services, and [`http`] (JSON, metrics, probes).

pub mod admin;
pub mod apps;
pub mod build;
pub mod codec;
pub mod directory;
pub mod group_deploy;
pub mod http;
pub mod peer;
pub mod resources;
pub mod services;
pub mod swarm;
