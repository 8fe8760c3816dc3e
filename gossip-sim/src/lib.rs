//! Deterministic discrete-event simulator for `gossip-core`.
//!
//! The simulator drives the real sans-IO [`gossip_core::Machine`], one per
//! member, with no sockets, no tokio and no clock: time is virtual (a base
//! `Instant` plus an offset), and the network is a binary heap of message
//! deliveries with a [latency model](LatencyModel), a loss rate, partitions
//! that open and heal, and crashes and restarts (a new generation on the same
//! address) at scripted times. A run is a function of its seed: one ChaCha8
//! RNG draws every delay, every loss and every machine's RNG seed, and ties
//! in time are broken by insertion order.
//!
//! One caveat on reproducibility, from `gossip-core`: a machine that has
//! several suspicions time out at the same instant declares them dead in the
//! iteration order of a `std::collections::HashMap`, which differs between
//! processes (typical after a partition, when one message brings many
//! suspicions at once). Such runs can differ between processes; sorting the
//! due suspicions in `Detector::expired_suspicions` makes them identical.
//! The same holds for seeds retried at the same instant, which is why the
//! simulator hands a member its seeds 1 us apart.
//!
//! It is built to be practical at thousands of members: the cost of one
//! delivery or timer wake-up does not grow with the cluster (no scan of all
//! machines per step; timer wake-ups are heap entries invalidated lazily by
//! a per-member generation counter). Whatever grows with the cluster is the
//! machines' own work and memory, which the report lets one measure.
//!
//! What it measures ([`Report`]): membership convergence from a cold start
//! (the warm-up), the traffic per member per second (total and by message
//! kind), the spread of a write (rounds to 50, 99 and 100 % of the live
//! members, compared with the push-pull bound of [`karp_bound_rounds`]),
//! crash detection (first suspicion, removal by every live member), false
//! suspicions and false deaths (live members declared dead), and partition
//! separation and healing.
//!
//! Entry points: [`run_scenario`] runs a [`SimConfig`] end to end; the
//! [`Simulation`] type gives step-by-step control.
//!
//! ```
//! use std::time::Duration;
//! use gossip_sim::{Scenario, SimConfig, run_scenario};
//!
//! let mut cfg = SimConfig::new(40, 9);
//! cfg.duration = Duration::from_secs(20);
//! cfg.scenario = Scenario::Crash { at: Duration::from_secs(1) };
//! let report = run_scenario(&cfg, &mut |_| {}).unwrap();
//! assert!(report.warmup.as_ref().unwrap().done);
//! let crash = &report.crashes[0];
//! assert!(crash.removed_by_all_after_ms.is_some());
//! assert_eq!(report.false_deaths, 0);
//! ```
#![deny(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod config;
mod error;
mod observe;
mod report;
mod sim;

pub use config::{
    Action, Bootstrap, LatencyModel, MAX_NODES, Scenario, Scheduled, SimConfig, UPDATE_KEY,
};
pub use error::SimError;
pub use report::{
    CrashReport, DropReport, EndReport, KindRate, Milestone, PartitionReport, PhaseReport, Report,
    SeriesPoint, TrafficReport, UpdateReport, karp_bound_rounds, run_scenario,
};
pub use sim::{Simulation, member_addr};
