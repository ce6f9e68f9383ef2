//! Priorities travel in the deploy spec, so they live with the resource
//! types; the queue and preemption order by them from here.

pub use crate::resource::priority::*;
