//! Applications: Git repositories cloned into the workspace, analysed into
//! components and a dependency graph, deployed in dependency order through
//! the placement manager.

pub mod analyze;
