//! iarnet: a decentralized compute-resource mesh.
pub mod config;
pub mod mesh;
pub mod proto;
