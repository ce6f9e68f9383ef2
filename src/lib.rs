//! iarnet: a decentralized compute-resource mesh.
pub mod mesh;
pub mod proto;
