//! What to simulate: the cluster, the network, the bootstrap and the
//! scripted scenario.

use std::ops::Range;
use std::time::Duration;

use gossip_core::Config;
use rand::Rng;
use serde::Serialize;

use crate::error::SimError;

/// Largest cluster the simulator accepts: member addresses are
/// `10.a.b.c:7946`, so indices must fit in 24 bits.
pub const MAX_NODES: usize = 1 << 24;

/// A simulation: the cluster, the network, how members find each other and
/// what happens once they have.
///
/// # Example
/// ```
/// use std::time::Duration;
/// use gossip_sim::{Scenario, SimConfig};
///
/// let mut cfg = SimConfig::new(50, 7);
/// cfg.loss = 0.01;
/// cfg.duration = Duration::from_secs(10);
/// cfg.scenario = Scenario::Update { at: Duration::from_secs(1) };
/// assert!(cfg.validate().is_ok());
/// ```
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Number of members (indices `0..nodes`). At least 1, at most
    /// [`MAX_NODES`].
    pub nodes: usize,
    /// Seed of the network RNG (latency, loss, seed choice); every machine's
    /// RNG seed is drawn from it, so a run is a function of this seed.
    pub seed: u64,
    /// Probability that a message is lost, in `[0, 1]`. Default 0.
    pub loss: f64,
    /// One-way delay of every message. Default: uniform in 0.5..1.5 ms.
    pub latency: LatencyModel,
    /// Protocol configuration given to every member.
    pub protocol: Config,
    /// How members find each other at start.
    pub bootstrap: Bootstrap,
    /// Longest warm-up: the run waits until every member lists every other
    /// one, or this much virtual time has passed. Default 60 s.
    pub warmup: Duration,
    /// Longest settling time after the warm-up: the run waits until every
    /// member's piggyback queues are empty and no member's gossip rounds run
    /// any more (the cluster is at rest), or this much virtual time has
    /// passed. Default 60 s.
    pub settle: Duration,
    /// Length of the measured period, which starts after settling; the
    /// scenario's times are relative to its start. Default 60 s.
    pub duration: Duration,
    /// What happens during the measured period.
    pub scenario: Scenario,
    /// A crashed member's address refuses messages (a TCP reset, an ICMP
    /// port unreachable: its process died, its host did not), so senders
    /// learn it through `Machine::handle_send_error`. Default false: a
    /// crash is silent, as a host that lost power.
    pub refusals: bool,
}

impl SimConfig {
    /// `nodes` members, network seed `seed`, everything else default: no
    /// loss, 1 ms +- 0.5 ms latency, the default protocol configuration,
    /// three seeds per member, a 60 s measured period running
    /// [`Scenario::UpdateThenCrash`] (update at 5 s, crash at 10 s).
    pub fn new(nodes: usize, seed: u64) -> Self {
        Self {
            nodes,
            seed,
            loss: 0.0,
            latency: LatencyModel::default(),
            protocol: Config::default(),
            bootstrap: Bootstrap::default(),
            warmup: Duration::from_secs(60),
            settle: Duration::from_secs(60),
            duration: Duration::from_secs(60),
            scenario: Scenario::UpdateThenCrash {
                update_at: Duration::from_secs(5),
                crash_at: Duration::from_secs(10),
            },
            refusals: false,
        }
    }

    /// Checks the configuration.
    ///
    /// # Errors
    /// [`SimError::NoMembers`], [`SimError::TooManyMembers`],
    /// [`SimError::InvalidLoss`], [`SimError::InvalidLatency`],
    /// [`SimError::InvalidBootstrap`], [`SimError::Protocol`], and for the
    /// scenario's actions [`SimError::NoSuchMember`] and
    /// [`SimError::InvalidPartition`].
    pub fn validate(&self) -> Result<(), SimError> {
        if self.nodes == 0 {
            return Err(SimError::NoMembers);
        }
        if self.nodes > MAX_NODES {
            return Err(SimError::TooManyMembers(self.nodes));
        }
        check_loss(self.loss)?;
        self.latency.validate()?;
        self.protocol.validate()?;
        if self.bootstrap.converged && !self.bootstrap.stagger.is_zero() {
            return Err(SimError::InvalidBootstrap(
                "a converged start needs every member to start at once (stagger 0)",
            ));
        }
        for s in self.scenario.actions(self.nodes) {
            s.action.validate(self.nodes)?;
        }
        Ok(())
    }
}

impl Default for SimConfig {
    /// [`SimConfig::new`]`(100, 1)`.
    fn default() -> Self {
        Self::new(100, 1)
    }
}

pub(crate) fn check_loss(loss: f64) -> Result<(), SimError> {
    if (0.0..=1.0).contains(&loss) {
        Ok(())
    } else {
        Err(SimError::InvalidLoss(loss))
    }
}

/// One-way message delay.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LatencyModel {
    /// Every message takes exactly this long.
    Constant {
        /// The delay.
        #[serde(serialize_with = "ser_ms")]
        delay: Duration,
    },
    /// Uniform between `min` and `max` (inclusive).
    Uniform {
        /// Shortest delay.
        #[serde(serialize_with = "ser_ms")]
        min: Duration,
        /// Longest delay.
        #[serde(serialize_with = "ser_ms")]
        max: Duration,
    },
    /// Log-normal with the given median and shape `sigma` (the standard
    /// deviation of the delay's logarithm), clamped to `[min, max]`: a long
    /// tail, as measured in data centres.
    LogNormal {
        /// Median delay.
        #[serde(serialize_with = "ser_ms")]
        median: Duration,
        /// Standard deviation of `ln(delay)`; 0.5 gives a p99 about 3.2 times
        /// the median.
        sigma: f64,
        /// Shortest delay.
        #[serde(serialize_with = "ser_ms")]
        min: Duration,
        /// Longest delay.
        #[serde(serialize_with = "ser_ms")]
        max: Duration,
    },
}

impl Default for LatencyModel {
    /// Uniform between 0.5 and 1.5 ms (1 ms +- 0.5 ms).
    fn default() -> Self {
        LatencyModel::Uniform {
            min: Duration::from_micros(500),
            max: Duration::from_micros(1500),
        }
    }
}

impl LatencyModel {
    /// Checks that the bounds are ordered and `sigma` is finite and not
    /// negative.
    ///
    /// # Errors
    /// [`SimError::InvalidLatency`].
    pub fn validate(&self) -> Result<(), SimError> {
        match self {
            LatencyModel::Constant { .. } => Ok(()),
            LatencyModel::Uniform { min, max } if min <= max => Ok(()),
            LatencyModel::Uniform { .. } => Err(SimError::InvalidLatency("min > max")),
            LatencyModel::LogNormal { sigma, .. } if !sigma.is_finite() || *sigma < 0.0 => Err(
                SimError::InvalidLatency("sigma must be finite and not negative"),
            ),
            LatencyModel::LogNormal {
                median, min, max, ..
            } if min <= median && median <= max => Ok(()),
            LatencyModel::LogNormal { .. } => {
                Err(SimError::InvalidLatency("need min <= median <= max"))
            }
        }
    }

    /// Draws one delay, in nanoseconds.
    pub(crate) fn sample_ns(&self, rng: &mut impl Rng) -> u64 {
        match self {
            LatencyModel::Constant { delay } => nanos(*delay),
            LatencyModel::Uniform { min, max } => rng.random_range(nanos(*min)..=nanos(*max)),
            LatencyModel::LogNormal {
                median,
                sigma,
                min,
                max,
            } => {
                // Box-Muller: one standard normal draw from two uniforms.
                let u1: f64 = 1.0 - rng.random::<f64>();
                let u2: f64 = rng.random::<f64>();
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                let d = nanos(*median) as f64 * (sigma * z).exp();
                (d as u64).clamp(nanos(*min), nanos(*max))
            }
        }
    }
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

pub(crate) fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1e3)
}

/// How members find each other.
///
/// Member `i` is started with `min(i, seeds_per_member)` distinct seeds
/// drawn at random among members `0..i` (member 0 has none), so the seed
/// graph is connected and no member is a hot spot, unlike a chain (slow at
/// 10,000) or a single seed (every join lands on one member). Members then
/// learn each other by anti-entropy; the warm-up ends when every member lists
/// every other one.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bootstrap {
    /// Seeds per member. Default 3.
    pub seeds_per_member: usize,
    /// Member `i` starts at `i * stagger` of virtual time. Default 0: every
    /// member starts at once.
    #[serde(serialize_with = "ser_ms")]
    pub stagger: Duration,
    /// Seeds given to a restarted member, drawn at random among the running
    /// members. Default 3.
    pub restart_seeds: usize,
    /// Start from a converged cluster: at time zero every member is handed,
    /// as one anti-entropy delta from another member, the full member list
    /// (every member alive, no keys), then runs normally. Needs `stagger`
    /// zero. Default false (a cold start: members learn each other by
    /// gossip from their seeds). For measurements at sizes where the cold
    /// start's N^2 exchange of member lists would dominate the run time;
    /// the warm-up section then reports that the views were installed.
    pub converged: bool,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Self {
            seeds_per_member: 3,
            stagger: Duration::ZERO,
            restart_seeds: 3,
            converged: false,
        }
    }
}

/// Something that happens to the cluster at a given time.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Member `member` sets `key` to `value`. The simulator measures how
    /// long the write takes to reach the other members (through
    /// `Event::KeyChanged`).
    SetKey {
        /// The writer.
        member: usize,
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
    },
    /// Member `member` crashes: its machine is dropped, messages to it are
    /// lost. The simulator measures how long the others take to suspect and
    /// remove it. Nothing happens if it is not running.
    Crash {
        /// The member.
        member: usize,
    },
    /// Member `member` starts again on the same address with a new
    /// generation and no state, seeded with
    /// [`Bootstrap::restart_seeds`] random running members. Nothing happens
    /// if it is running.
    Restart {
        /// The member.
        member: usize,
    },
    /// Cuts the network: messages pass only between members of the same
    /// group. Group `k + 1` is the range `groups[k]`; members in no range
    /// form group 0. Replaces any partition in force. The simulator measures
    /// how long the sides take to drop each other.
    Partition {
        /// Member index ranges, pairwise disjoint.
        groups: Vec<Range<usize>>,
    },
    /// Ends any partition. The simulator measures how long the cluster takes
    /// to converge again to one view.
    Heal,
    /// Changes the loss rate.
    SetLoss {
        /// The new loss rate, in `[0, 1]`.
        loss: f64,
    },
}

impl Action {
    /// Checks member indices, ranges and rates against a cluster of `nodes`.
    ///
    /// # Errors
    /// [`SimError::NoSuchMember`], [`SimError::InvalidPartition`],
    /// [`SimError::InvalidLoss`].
    pub fn validate(&self, nodes: usize) -> Result<(), SimError> {
        let member = |m: usize| {
            if m < nodes {
                Ok(())
            } else {
                Err(SimError::NoSuchMember { member: m, nodes })
            }
        };
        match self {
            Action::SetKey { member: m, .. }
            | Action::Crash { member: m }
            | Action::Restart { member: m } => member(*m),
            Action::Partition { groups } => {
                let mut sorted: Vec<&Range<usize>> = groups.iter().collect();
                sorted.sort_by_key(|r| r.start);
                let mut end = 0;
                for r in sorted {
                    if r.start > r.end || r.end > nodes || r.start < end {
                        return Err(SimError::InvalidPartition(format!(
                            "{groups:?} for {nodes} members"
                        )));
                    }
                    end = r.end;
                }
                if groups.len() >= usize::from(u16::MAX) {
                    return Err(SimError::InvalidPartition("too many groups".into()));
                }
                Ok(())
            }
            Action::Heal => Ok(()),
            Action::SetLoss { loss } => check_loss(*loss),
        }
    }
}

/// An action and when it happens, relative to the start of the measured
/// period (in [`Scenario`]) or absolute (in
/// [`Simulation::schedule`](crate::Simulation::schedule)).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Scheduled {
    /// When.
    #[serde(serialize_with = "ser_ms", rename = "at_ms")]
    pub at: Duration,
    /// What.
    pub action: Action,
}

/// Key written by the update scenarios.
pub const UPDATE_KEY: &str = "sim/update";

/// What happens during the measured period. The preset scenarios use member
/// 0 as the writer and the last member as the crashed one.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Scenario {
    /// Nothing: measures the cost of the protocol at rest.
    Idle,
    /// Member 0 sets [`UPDATE_KEY`] at `at`.
    Update {
        /// When.
        #[serde(serialize_with = "ser_ms", rename = "at_ms")]
        at: Duration,
    },
    /// The last member crashes at `at`.
    Crash {
        /// When.
        #[serde(serialize_with = "ser_ms", rename = "at_ms")]
        at: Duration,
    },
    /// Member 0 sets [`UPDATE_KEY`] at `update_at`; the last member crashes at
    /// `crash_at`.
    UpdateThenCrash {
        /// When the key is written.
        #[serde(serialize_with = "ser_ms", rename = "update_at_ms")]
        update_at: Duration,
        /// When the last member crashes.
        #[serde(serialize_with = "ser_ms", rename = "crash_at_ms")]
        crash_at: Duration,
    },
    /// At `at`, the first `fraction` of the members (by index) are cut from
    /// the rest; the partition heals `heal_after` later.
    Partition {
        /// When the network splits.
        #[serde(serialize_with = "ser_ms", rename = "at_ms")]
        at: Duration,
        /// How long it stays split.
        #[serde(serialize_with = "ser_ms", rename = "heal_after_ms")]
        heal_after: Duration,
        /// Share of the members on the first side, in `(0, 1)`.
        fraction: f64,
    },
    /// An explicit list of actions.
    Custom {
        /// The actions, at times relative to the start of the measured
        /// period.
        actions: Vec<Scheduled>,
    },
}

impl Scenario {
    /// The scenario's actions for a cluster of `nodes` members, times
    /// relative to the start of the measured period.
    pub fn actions(&self, nodes: usize) -> Vec<Scheduled> {
        let last = nodes.saturating_sub(1);
        let update = |at| Scheduled {
            at,
            action: Action::SetKey {
                member: 0,
                key: UPDATE_KEY.to_owned(),
                value: b"v1".to_vec(),
            },
        };
        let crash = |at| Scheduled {
            at,
            action: Action::Crash { member: last },
        };
        match self {
            Scenario::Idle => Vec::new(),
            Scenario::Update { at } => vec![update(*at)],
            Scenario::Crash { at } => vec![crash(*at)],
            Scenario::UpdateThenCrash {
                update_at,
                crash_at,
            } => vec![update(*update_at), crash(*crash_at)],
            Scenario::Partition {
                at,
                heal_after,
                fraction,
            } => {
                let split = ((nodes as f64 * fraction).round() as usize).clamp(1, last.max(1));
                vec![
                    Scheduled {
                        at: *at,
                        action: Action::Partition {
                            groups: std::iter::once(0..split).collect(),
                        },
                    },
                    Scheduled {
                        at: *at + *heal_after,
                        action: Action::Heal,
                    },
                ]
            }
            Scenario::Custom { actions } => actions.clone(),
        }
    }
}
