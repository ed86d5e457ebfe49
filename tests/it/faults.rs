//! The reliability suite: Celerity's promises (no acknowledged task lost, chord bodies once, bad
//! input never stops a worker) checked together under faults injected into real processes, on
//! one server and on a 3-node cluster, each scenario reported by the lost/duplicate
//! [`checker`].

mod checker;
mod cluster;
mod crashes;
mod duplicates;
mod fuzz;
mod poison;
mod single;
