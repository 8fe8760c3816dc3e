//! What the simulator learns from the machines' events.
//!
//! The membership view is an N x N byte matrix: `seen[i * n + j]` is
//! `life + 1` of the life of member `j` that member `i` lists as live, or 0.
//! It changes only on `Joined`/`Updated` (listed), `Failed`/`Left` (no longer
//! listed) and on crashes and restarts, so two counters kept beside it make
//! "every running member lists exactly the running members" an O(1) test:
//! `good` counts entries naming a running member's current life, `bad`
//! counts the other non-zero entries, both over running observers only. A
//! restart clears the restarted member's row (its new machine knows only
//! itself). At 10,000 members the matrix takes 100 MB.

use gossip_core::{Event, NodeAddr};

use crate::sim::{GEN_BASE, Simulation};

/// How member first saw a tracked write.
#[derive(Debug)]
pub(crate) struct UpdateTrack {
    pub(crate) owner: usize,
    pub(crate) key: String,
    pub(crate) version: u64,
    pub(crate) at: u64,
    /// Per member: 0 not counted (not running at the write, or crashed
    /// since), 1 waiting, 2 has it.
    state: Vec<u8>,
    pub(crate) target: u64,
    pub(crate) reached: u64,
    pub(crate) t50: Option<u64>,
    pub(crate) t99: Option<u64>,
    pub(crate) t100: Option<u64>,
    /// (time since the write, fraction reached), one point per 0.1 %.
    pub(crate) series: Vec<(u64, f64)>,
    bucket: u64,
}

impl UpdateTrack {
    fn progress(&mut self, now: u64) {
        if self.target == 0 {
            return;
        }
        let el = now - self.at;
        if self.t50.is_none() && self.reached * 2 >= self.target {
            self.t50 = Some(el);
        }
        if self.t99.is_none() && self.reached * 100 >= self.target * 99 {
            self.t99 = Some(el);
        }
        if self.t100.is_none() && self.reached >= self.target {
            self.t100 = Some(el);
        }
        let bucket = self.reached * 1000 / self.target;
        if bucket != self.bucket {
            self.bucket = bucket;
            self.series
                .push((el, self.reached as f64 / self.target as f64));
        }
    }
}

/// The aftermath of one crash.
#[derive(Debug)]
pub(crate) struct CrashTrack {
    pub(crate) member: usize,
    pub(crate) life: u8,
    pub(crate) at: u64,
    /// Running members listing the crashed life at the crash.
    pub(crate) listed_at_crash: u64,
    /// Running members still listing it.
    pub(crate) remaining: u64,
    pub(crate) first_suspected: Option<u64>,
    pub(crate) first_failed: Option<u64>,
    pub(crate) removed: Option<u64>,
    pub(crate) failed_events: u64,
    /// Times a member listed it again after having dropped it.
    pub(crate) relisted: u64,
}

/// One partition and its healing.
#[derive(Debug)]
pub(crate) struct PartitionTrack {
    pub(crate) at: u64,
    pub(crate) groups: usize,
    pub(crate) separated: Option<u64>,
    pub(crate) healed: Option<u64>,
    pub(crate) reconverged: Option<u64>,
    /// False deaths after the heal (stale verdicts from the other side).
    pub(crate) false_deaths_after_heal: u64,
}

/// The simulator's books on the machines' events.
pub(crate) struct Observer {
    n: usize,
    seen: Vec<u8>,
    good: u64,
    bad: u64,
    /// Non-zero entries whose observer and member are in different groups
    /// (kept only while partitioned).
    cross: u64,
    pub(crate) converged: bool,
    pub(crate) first_converged: Option<u64>,
    /// (time, share of pairs listed), one point per 0.1 %, until the first
    /// convergence.
    pub(crate) warmup_series: Vec<(u64, f64)>,
    warmup_bucket: u64,
    pub(crate) updates: Vec<UpdateTrack>,
    pub(crate) crashes: Vec<CrashTrack>,
    pub(crate) partitions: Vec<PartitionTrack>,
    /// Per member, the last time it was declared dead while running.
    pub(crate) falsely_dead: Vec<Option<u64>>,
}

impl Observer {
    pub(crate) fn new(n: usize) -> Self {
        Self {
            n,
            seen: vec![0; n * n],
            good: 0,
            bad: 0,
            cross: 0,
            converged: false,
            first_converged: None,
            warmup_series: Vec::new(),
            warmup_bucket: u64::MAX,
            updates: Vec::new(),
            crashes: Vec::new(),
            partitions: Vec::new(),
            falsely_dead: vec![None; n],
        }
    }

    pub(crate) fn pair_fraction(&self, running: usize) -> f64 {
        let r = running as u64;
        if r < 2 {
            return 1.0;
        }
        self.good as f64 / (r * (r - 1)) as f64
    }
}

impl Simulation {
    /// Member index and life of a member id seen in an event.
    fn resolve(&self, addr: &NodeAddr, generation: u64) -> Option<(usize, u8)> {
        let j = self.member_index(addr)?;
        let life = u8::try_from(generation.checked_sub(GEN_BASE)?).ok()?;
        Some((j, life))
    }

    fn is_current(&self, j: usize, life: u8) -> bool {
        self.h.is_up(j) && self.nodes[j].life == life
    }

    /// Adds (`add`) or removes entry value `v` of observer `i` about `j` to
    /// or from the counters.
    fn count(&mut self, i: usize, j: usize, v: u8, add: bool) {
        if v == 0 {
            return;
        }
        let good = self.is_current(j, v - 1);
        let c = if good {
            &mut self.obs.good
        } else {
            &mut self.obs.bad
        };
        if add {
            *c += 1;
        } else {
            *c -= 1;
        }
        if self.partitioned && self.h.group(i) != self.h.group(j) {
            if add {
                self.obs.cross += 1;
            } else {
                self.obs.cross -= 1;
            }
        }
    }

    /// Observer `i` (running) now lists life `v - 1` of member `j`, or
    /// nothing if `v` is 0.
    fn set_seen(&mut self, i: usize, j: usize, v: u8) {
        let idx = i * self.obs.n + j;
        let old = self.obs.seen[idx];
        if old == v {
            return;
        }
        self.obs.seen[idx] = v;
        self.count(i, j, old, false);
        self.count(i, j, v, true);
        let now = self.h.now_ns();
        for t in self.obs.crashes.iter_mut().filter(|t| t.member == j) {
            let tv = t.life + 1;
            if old == tv {
                t.remaining -= 1;
                if t.remaining == 0 && t.removed.is_none() {
                    t.removed = Some(now);
                }
            } else if v == tv {
                t.remaining += 1;
                t.relisted += 1;
            }
        }
        if self.partitioned
            && self.obs.cross == 0
            && let Some(p) = self.obs.partitions.last_mut()
            && p.separated.is_none()
        {
            p.separated = Some(now);
        }
        self.obs_check_converged();
    }

    /// Re-evaluates convergence after any change of the matrix or of the
    /// running set.
    pub(crate) fn obs_check_converged(&mut self) {
        let r = self.running as u64;
        let target = r * r.saturating_sub(1);
        let c = r > 0 && self.obs.good == target && self.obs.bad == 0;
        let now = self.h.now_ns();
        if c && self.started == self.nodes.len() {
            self.obs.first_converged.get_or_insert(now);
        }
        if c && !self.obs.converged {
            for p in &mut self.obs.partitions {
                if p.healed.is_some() && p.reconverged.is_none() {
                    p.reconverged = Some(now);
                }
            }
        }
        self.obs.converged = c;
        if self.obs.first_converged == Some(now) || self.obs.first_converged.is_none() {
            let bucket = (self.obs.good * 1000).checked_div(target).unwrap_or(1000);
            if bucket != self.obs.warmup_bucket {
                self.obs.warmup_bucket = bucket;
                let f = self.obs.pair_fraction(self.running);
                match self.obs.warmup_series.last_mut() {
                    Some(last) if last.0 == now => last.1 = f,
                    _ => self.obs.warmup_series.push((now, f)),
                }
            }
        }
    }

    pub(crate) fn obs_started(&mut self, _i: usize) {
        // The row of a (re)started member is all zero: it was cleared when
        // it crashed, and a first life never had entries.
        self.obs_check_converged();
    }

    /// Member `j` is about to crash (still counted as running).
    pub(crate) fn obs_crash(&mut self, j: usize) {
        let n = self.obs.n;
        let now = self.h.now_ns();
        // Its own view disappears with it.
        for k in 0..n {
            let v = self.obs.seen[j * n + k];
            if v == 0 {
                continue;
            }
            self.count(j, k, v, false);
            self.obs.seen[j * n + k] = 0;
            for t in self.obs.crashes.iter_mut().filter(|t| t.member == k) {
                if v == t.life + 1 {
                    t.remaining -= 1;
                    if t.remaining == 0 && t.removed.is_none() {
                        t.removed = Some(now);
                    }
                }
            }
        }
        // Entries naming it stop being correct.
        let vj = self.nodes[j].life + 1;
        let mut listing = 0;
        for i in 0..n {
            if i != j && self.h.is_up(i) && self.obs.seen[i * n + j] == vj {
                self.obs.good -= 1;
                self.obs.bad += 1;
                listing += 1;
            }
        }
        for t in &mut self.obs.updates {
            match t.state[j] {
                1 => t.target -= 1,
                2 => {
                    t.target -= 1;
                    t.reached -= 1;
                }
                _ => {}
            }
            t.state[j] = 0;
            t.progress(now);
        }
        self.obs.crashes.push(CrashTrack {
            member: j,
            life: vj - 1,
            at: now,
            listed_at_crash: listing,
            remaining: listing,
            first_suspected: None,
            first_failed: None,
            removed: (listing == 0).then_some(now),
            failed_events: 0,
            relisted: 0,
        });
    }

    /// Groups were just assigned.
    pub(crate) fn obs_partition(&mut self, groups: usize) {
        let n = self.obs.n;
        let mut cross = 0;
        for i in (0..n).filter(|&i| self.h.is_up(i)) {
            let gi = self.h.group(i);
            let row = &self.obs.seen[i * n..(i + 1) * n];
            cross += row
                .iter()
                .enumerate()
                .filter(|&(k, v)| *v != 0 && self.h.group(k) != gi)
                .count() as u64;
        }
        self.obs.cross = cross;
        let now = self.h.now_ns();
        self.obs.partitions.push(PartitionTrack {
            at: now,
            groups: groups + 1,
            separated: (cross == 0).then_some(now),
            healed: None,
            reconverged: None,
            false_deaths_after_heal: 0,
        });
    }

    pub(crate) fn obs_heal(&mut self) {
        self.obs.cross = 0;
        let now = self.h.now_ns();
        let converged = self.obs.converged;
        if let Some(p) = self.obs.partitions.last_mut()
            && p.healed.is_none()
        {
            p.healed = Some(now);
            if converged {
                p.reconverged = Some(now);
            }
        }
    }

    /// Starts tracking a write of `key` (version `version`) by `owner`.
    pub(crate) fn track_update(&mut self, owner: usize, key: String, version: u64) {
        let state: Vec<u8> = (0..self.nodes.len())
            .map(|i| u8::from(self.h.is_up(i)))
            .collect();
        let target = state.iter().filter(|s| **s == 1).count() as u64;
        self.obs.updates.push(UpdateTrack {
            owner,
            key,
            version,
            at: self.h.now_ns(),
            state,
            target,
            reached: 0,
            t50: None,
            t99: None,
            t100: None,
            series: vec![(0, 0.0)],
            bucket: 0,
        });
    }

    /// Books one event of member `i`.
    pub(crate) fn observe(&mut self, i: usize, e: Event) {
        match e {
            Event::Joined(info) | Event::Updated(info) => {
                if let Some((j, life)) = self.resolve(&info.addr, info.generation)
                    && j != i
                    && info.state.is_live()
                {
                    self.set_seen(i, j, life + 1);
                }
            }
            Event::Suspected(id) => {
                let Some((j, life)) = self.resolve(&id.addr, id.generation) else {
                    return;
                };
                if self.is_current(j, life) && self.h.group(i) == self.h.group(j) {
                    self.counters.false_suspicions += 1;
                }
                let now = self.h.now_ns();
                for t in &mut self.obs.crashes {
                    if t.member == j && t.life == life {
                        t.first_suspected.get_or_insert(now);
                    }
                }
            }
            Event::Failed(id) => {
                let Some((j, life)) = self.resolve(&id.addr, id.generation) else {
                    return;
                };
                let now = self.h.now_ns();
                if self.is_current(j, life) {
                    if self.h.group(i) == self.h.group(j) {
                        self.counters.false_deaths += 1;
                        self.obs.falsely_dead[j] = Some(now);
                        if let Some(p) = self.obs.partitions.last_mut()
                            && p.healed.is_some()
                        {
                            p.false_deaths_after_heal += 1;
                        }
                    } else {
                        self.counters.partition_deaths += 1;
                    }
                }
                for t in &mut self.obs.crashes {
                    if t.member == j && t.life == life {
                        t.first_failed.get_or_insert(now);
                        t.failed_events += 1;
                    }
                }
                self.unlist(i, j, life);
            }
            Event::Left(id) => {
                if let Some((j, life)) = self.resolve(&id.addr, id.generation) {
                    self.unlist(i, j, life);
                }
            }
            Event::KeyChanged {
                owner,
                key,
                value,
                version,
            } => {
                if self.obs.updates.is_empty() || value.is_none() {
                    return;
                }
                let Some(o) = self.member_index(&owner) else {
                    return;
                };
                let now = self.h.now_ns();
                for t in &mut self.obs.updates {
                    if t.owner == o && t.version <= version && t.state[i] == 1 && t.key == key {
                        t.state[i] = 2;
                        t.reached += 1;
                        t.progress(now);
                    }
                }
            }
            Event::Broadcast(_) => {}
        }
    }

    fn unlist(&mut self, i: usize, j: usize, life: u8) {
        if j != i && self.obs.seen[i * self.obs.n + j] == life + 1 {
            self.set_seen(i, j, 0);
        }
    }
}
