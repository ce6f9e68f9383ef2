//! The gRPC surfaces of a node: [`peer`] for other nodes, [`admin`] for operators.

pub mod admin;
pub mod peer;
pub mod resources;
