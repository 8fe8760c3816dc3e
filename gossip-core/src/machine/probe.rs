//! SWIM glue and the membership rules: the machine's side of probes,
//! indirect probes, suspicion with Lifeguard's dynamic timeout and
//! refutation (the state and its bookkeeping are `crate::swim::Swim`), and
//! the rules that turn a membership fact into table changes and events.

use std::time::{Duration, Instant};

use gossip_proto::v1 as pb;
use gossip_proto::v1::envelope::Body;
use prost::Message;
use tracing::{debug, info, warn};

use super::{Machine, Timer};
use crate::event::{Event, MemberState};
use crate::id::{NodeAddr, NodeId};
use crate::members::{Change, Fact, fact_to_pb};
use crate::swim::AckFor;

/// What a membership update says beyond its fact: who accused the member
/// (for `suspect` and `dead`), and whether a `dead` verdict rests on
/// confirmed refusals.
#[derive(Clone, Debug, Default)]
pub(super) struct Rumor {
    /// The member whose probe failed; `None`: unknown (an older member, or
    /// a fact that is no accusation), the relaying member counts.
    pub(super) accuser: Option<NodeAddr>,
    /// A `dead` verdict of the refusal fast path (issue #10, item 4).
    pub(super) refused: bool,
}

impl Rumor {
    /// The accuser and refusal flag of a received update.
    pub(super) fn of(u: &pb::MemberUpdate) -> Self {
        Self {
            accuser: (!u.accuser.is_empty())
                .then(|| NodeAddr::parse(&u.accuser).ok())
                .flatten(),
            refused: u.refused,
        }
    }
}

/// A relay's nack falls due this long after its ping when the requester
/// did not say otherwise: the relay's own probe timeout.
const NACK_AFTER_TIMEOUTS: u32 = 1;

impl Machine {
    /// Takes the round-trip times of the probes answered since the last
    /// call, oldest first: from a probe's ping to its first ack, direct or
    /// relayed by an indirect probe. The driver feeds them to
    /// [`Stats::record_probe_rtt`](crate::Stats::record_probe_rtt); at most
    /// 1024 samples wait untaken.
    pub fn take_probe_rtts(&mut self) -> impl Iterator<Item = Duration> + '_ {
        self.swim.take_rtts()
    }

    /// Applies one membership fact received from `via` (or decided locally
    /// when `via` is `None`), with what the `rumor` says about it.
    ///
    /// `spread` says whether a change is queued for piggybacking: true for
    /// rumors (piggybacked updates), for what a member says of itself and
    /// for this member's own verdicts; false for third-party facts learned
    /// by anti-entropy, which the push-pull rounds spread anyway. Re-gossiping
    /// those would make every member of a mass join queue a fact about every
    /// other member (N^2 queue entries, each retransmitted O(log N) times).
    pub(super) fn apply_update(
        &mut self,
        now: Instant,
        mut fact: Fact,
        via: Option<&NodeAddr>,
        spread: bool,
        rumor: &Rumor,
    ) {
        if fact.id.addr == self.id.addr {
            self.about_me(now, &fact, via);
            return;
        }
        // Another member's verdict "dead" on a member this one still holds
        // live in the same generation only makes it a suspect here: the
        // member gets a suspicion timeout to refute, and this member's own
        // timer decides (as memberlist does when merging remote state).
        // Without this, a healed partition's death verdicts kill members on
        // both sides before their refutations arrive.
        //
        // Not so a verdict of the refusal fast path: nothing listened at the
        // member's address for its accuser and for an indirect probe; a
        // partition drops messages, it does not refuse them.
        if fact.state == MemberState::Dead
            && via.is_some()
            && !rumor.refused
            && self
                .table
                .get(&fact.id.addr)
                .is_some_and(|n| n.is_live() && n.fact.id.generation == fact.id.generation)
        {
            fact.state = MemberState::Suspect;
        }
        let addr = fact.id.addr.clone();
        match self.table.apply(fact.clone(), now) {
            Change::None => {
                // Lifeguard: an independent suspicion of the same incarnation
                // (another accuser, this member's own failed probe included)
                // shortens the suspicion timeout, and is gossiped in its turn
                // so that the others count it too.
                if fact.state == MemberState::Suspect
                    && self.table.get(&addr).is_some_and(|n| n.fact == fact)
                {
                    let accuser = rumor
                        .accuser
                        .clone()
                        .or_else(|| via.cloned())
                        .unwrap_or_else(|| self.id.addr.clone());
                    let rumor = Rumor {
                        accuser: Some(accuser.clone()),
                        refused: false,
                    };
                    // A counted confirmation (at most K) is gossiped again,
                    // with its accuser, so that every member's timeout
                    // shrinks with it (as memberlist re-broadcasts a
                    // confirmed suspicion). Gossiping only this member's own
                    // accusation was tried: the simulator's crash at 1,000
                    // members took 20.8 s instead of 14.3 s to be removed by
                    // all, with twice the bytes.
                    if self.start_suspicion(now, &fact, accuser) && spread {
                        self.enqueue(&fact, &rumor, false);
                    }
                }
            }
            Change::New { old } => {
                self.learned(now);
                self.swim.clear_suspicion(&addr);
                let old_live = old.as_ref().is_some_and(|o| o.state.is_live());
                if fact.state.is_live() {
                    self.swim.add_member(&mut self.rng, addr.clone());
                    info!(member = %fact.id, "member joined");
                    self.push_info_event(now, &addr, Event::Joined);
                    if fact.state == MemberState::Suspect {
                        let confirmer = rumor
                            .accuser
                            .clone()
                            .or_else(|| via.cloned())
                            .unwrap_or_else(|| self.id.addr.clone());
                        self.start_suspicion(now, &fact, confirmer);
                        self.events.push_back(Event::Suspected(fact.id.clone()));
                    }
                } else if let Some(old) = old.filter(|_| old_live) {
                    self.ended(now, &fact, old.id);
                }
                if spread {
                    self.enqueue(&fact, rumor, via.is_none());
                }
            }
            Change::Updated { old } => {
                self.learned(now);
                match fact.state {
                    MemberState::Alive => {
                        self.swim.clear_suspicion(&addr);
                        if old.state.is_live() {
                            self.push_info_event(now, &addr, Event::Updated);
                        } else {
                            info!(member = %fact.id, "member rejoined");
                            self.swim.add_member(&mut self.rng, addr.clone());
                            self.push_info_event(now, &addr, Event::Joined);
                        }
                    }
                    MemberState::Suspect => {
                        let confirmer = rumor
                            .accuser
                            .clone()
                            .or_else(|| via.cloned())
                            .unwrap_or_else(|| self.id.addr.clone());
                        self.start_suspicion(now, &fact, confirmer);
                        if !old.state.is_live() {
                            self.swim.add_member(&mut self.rng, addr.clone());
                            self.push_info_event(now, &addr, Event::Joined);
                        }
                        info!(member = %fact.id, incarnation = fact.incarnation, "member suspected");
                        self.events.push_back(Event::Suspected(fact.id.clone()));
                    }
                    MemberState::Dead | MemberState::Left => {
                        self.swim.clear_suspicion(&addr);
                        if old.state.is_live() {
                            self.ended(now, &fact, fact.id.clone());
                        }
                    }
                }
                if !spread {
                    return;
                }
                self.enqueue(&fact, rumor, via.is_none());
                if fact.state == MemberState::Left && via.is_some() {
                    // A leave spreads at once, not at the next round.
                    let from = via.cloned();
                    let exclude: Vec<&NodeAddr> =
                        [Some(&addr), from.as_ref()].into_iter().flatten().collect();
                    self.push_gossip(self.cfg.fanout, &exclude);
                }
            }
        }
    }

    /// A live member failed or left; if it was the last live peer, this
    /// member goes back to its seeds.
    fn ended(&mut self, now: Instant, fact: &Fact, id: NodeId) {
        if fact.state == MemberState::Left {
            info!(member = %id, "member left");
            self.events.push_back(Event::Left(id));
        } else {
            info!(member = %id, "member failed");
            self.sync.dead_pool.push(fact.id.addr.clone());
            self.events.push_back(Event::Failed(id));
        }
        self.rejoin_if_isolated(now);
    }

    fn push_info_event(
        &mut self,
        now: Instant,
        addr: &NodeAddr,
        make: fn(crate::MemberInfo) -> Event,
    ) {
        if let Some(n) = self.table.get(addr) {
            let info = self.info(now, n);
            self.events.push_back(make(info));
        }
    }

    /// Queues `fact` for piggybacking, with its accuser (this member for
    /// its own verdicts, `mine`) and refusal flag.
    fn enqueue(&mut self, fact: &Fact, rumor: &Rumor, mine: bool) {
        let mut u = fact_to_pb(fact);
        if matches!(fact.state, MemberState::Suspect | MemberState::Dead) {
            let accuser = if mine {
                Some(&self.id.addr)
            } else {
                rumor.accuser.as_ref()
            };
            u.accuser = accuser.map(|a| a.as_str().to_owned()).unwrap_or_default();
            u.refused = rumor.refused && fact.state == MemberState::Dead;
        }
        let size = u.encoded_len() + 2;
        self.updates.push(fact.id.addr.clone(), u, size);
    }

    /// A fact about this member: refute suspicion or death by raising the
    /// incarnation (SWIM 4.2).
    fn about_me(&mut self, now: Instant, fact: &Fact, via: Option<&NodeAddr>) {
        if fact.id.generation != self.id.generation {
            if fact.id.generation > self.id.generation {
                warn!(claimed = %fact.id, "a newer generation of this member's address is gossiped");
            }
            return;
        }
        let mine = self.table.me().fact.incarnation;
        if fact.state == MemberState::Alive || fact.incarnation < mine {
            return;
        }
        let inc = fact.incarnation + 1;
        // Being suspected hints that this member is the slow one.
        self.swim.health_worse();
        self.learned(now);
        let me = self.id.addr.clone();
        self.table.update(&me, |n| n.fact.incarnation = inc);
        info!(incarnation = inc, rumor = fact.state.as_str(), "refuting");
        let update = self.my_update();
        self.enqueue(&self.table.me().fact.clone(), &Rumor::default(), true);
        if let Some(v) = via {
            self.send_with(v, Body::Gossip(pb::Gossip {}), vec![update]);
        }
        let exclude: Vec<NodeAddr> = via.cloned().into_iter().collect();
        let refs: Vec<&NodeAddr> = exclude.iter().collect();
        self.push_gossip(self.cfg.fanout, &refs);
    }

    /// Starts or confirms the suspicion of `fact`'s member; true if
    /// `confirmer` is a new accuser.
    fn start_suspicion(&mut self, now: Instant, fact: &Fact, confirmer: NodeAddr) -> bool {
        let n = self.table.live_count();
        let k = self
            .cfg
            .suspicion_confirmations
            .min(n.saturating_sub(2) as u32);
        let (min, max) = (self.cfg.suspicion_min(n), self.cfg.suspicion_max(n));
        self.swim
            .suspect(now, &fact.id, fact.incarnation, confirmer, min, max, k)
    }

    /// The transport said nothing listens at `to` (see
    /// `Machine::handle_send_error`).
    pub(super) fn on_refused(&mut self, now: Instant, to: &NodeAddr) {
        let (mine, relays) = self.swim.refused(to);
        debug!(peer = %to, probe = mine, relays = relays.len(), "refused");
        for (requester, seq) in relays {
            self.send(&requester, Body::Nack(pb::Nack { seq, refused: true }));
        }
        if mine {
            // No ack will come: ask the relays at once.
            self.swim.hurry_indirect(now);
            self.probe_indirectly(now);
            self.check_refusal(now);
        } else if self.table.get(to).is_some_and(|n| n.is_live()) {
            // A gossip message or a relayed ping was refused: the member is
            // probed next, so the fast path can confirm it within a period
            // instead of waiting for its turn in the round-robin.
            self.swim.probe_next(to);
        }
    }

    /// A nack from a relay of this member's indirect probe.
    pub(super) fn on_nack(&mut self, now: Instant, n: pb::Nack) {
        self.swim.on_nack(n.seq, n.refused);
        self.check_refusal(now);
    }

    /// The relays whose ping got no ack in time send their nacks.
    pub(super) fn send_due_nacks(&mut self, now: Instant) {
        for (requester, seq) in self.swim.due_nacks(now) {
            self.send(
                &requester,
                Body::Nack(pb::Nack {
                    seq,
                    refused: false,
                }),
            );
        }
    }

    /// The refusal fast path (issue #10, item 4): this member's probe was
    /// refused and an indirect probe's too, so nothing listens at the
    /// target's address: it is declared dead at once (no suspicion
    /// timeout), with a verdict others accept as it is. Not if anything was
    /// heard from the address since the probe began (a restart on the same
    /// address answers), nor if the table holds another life there.
    fn check_refusal(&mut self, now: Instant) {
        let Some(r) = self.swim.confirmed_refusal() else {
            return;
        };
        let Some(n) = self.table.get(&r.target.addr) else {
            return;
        };
        let heard_since = self.table.last_heard(n).is_some_and(|t| t >= r.sent_at);
        if n.fact.id != r.target || !n.is_live() || heard_since {
            return;
        }
        info!(member = %r.target, "refused by its address and an indirect probe: dead");
        let fact = Fact {
            id: r.target.clone(),
            incarnation: n.fact.incarnation,
            state: MemberState::Dead,
        };
        let rumor = Rumor {
            accuser: Some(self.id.addr.clone()),
            refused: true,
        };
        self.apply_update(now, fact, None, true, &rumor);
        // Spread at once, as a leave is.
        let target = r.target.addr.clone();
        self.push_gossip(self.cfg.fanout, &[&target]);
    }

    /// This member's probe timeout: measured round trips (RFC 6298) within
    /// `[probe_timeout, max(probe_timeout, probe_interval / 2)]`.
    fn probe_timeout(&self) -> Duration {
        let floor = self.cfg.probe_timeout;
        let cap = floor.max(self.cfg.probe_interval / 2);
        self.swim.probe_timeout(floor, cap)
    }

    /// This member's loop did not run for `late`: it judges no probe and
    /// expires no suspicion before the answers that came meanwhile are in
    /// (Lifeguard's premise: a slow member must not accuse). The stall
    /// itself does not raise the local health multiplier: on a loaded host
    /// wake-ups are late all the time (2,648 stalls in 20 s of 100 members
    /// in one process), and stretching every probe for each made a crash
    /// take 6.1 s to be removed instead of ~3 s; missed nacks raise it when
    /// the stall really costs this member its answers.
    pub(super) fn on_stall(&mut self, now: Instant, late: Duration) {
        let grace = late.min(self.cfg.probe_timeout);
        let period = self.timers.get(Timer::ProbePeriod).unwrap_or(now);
        let period = self.swim.postpone(now, late, grace, period);
        self.timers.set(Timer::ProbePeriod, period);
        self.stalls += 1;
        debug!(
            late_ms = late.as_millis() as u64,
            "stalled: SWIM deadlines postponed"
        );
    }

    /// No ack within the probe timeout: `indirect_probes` members are asked
    /// to probe the target, and the target is pinged once more (SWIM 4.1;
    /// the second direct try is memberlist's TCP fallback).
    pub(super) fn probe_indirectly(&mut self, now: Instant) {
        let Some((target, seq)) = self.swim.indirect_due(now) else {
            return;
        };
        let helpers =
            self.table
                .random_live(&mut self.rng, self.cfg.indirect_probes, &[&target.addr]);
        debug!(target = %target, helpers = helpers.len(), "probing indirectly");
        self.swim.expect_nacks(helpers.len());
        self.check_refused(&target.addr);
        for h in helpers {
            self.send(
                &h,
                Body::PingReq(pb::PingReq {
                    seq,
                    target: Some(target.to_pb()),
                }),
            );
        }
        self.send(
            &target.addr,
            Body::Ping(pb::Ping {
                seq,
                ..Default::default()
            }),
        );
    }

    /// The end of a protocol period: the last probe's target becomes a
    /// suspect if it never answered, and the next probe starts. The period
    /// is stretched by Lifeguard's local health (4.3).
    pub(super) fn end_probe_period(&mut self, now: Instant) {
        // The next period is stretched by the health before this verdict.
        let next = now + self.cfg.probe_interval * self.swim.stretch();
        self.timers.set(Timer::ProbePeriod, next);
        let missed = self.swim.end_period();
        if let Some(target) = missed {
            self.declare(now, &target, MemberState::Suspect);
        }
        self.start_probe(now);
        self.warm_up();
    }

    /// Suspicions whose timeout passed: the member is declared dead, if
    /// nothing (a refutation, a new generation) changed it meanwhile.
    pub(super) fn expire_suspicions(&mut self, now: Instant) {
        for (addr, s) in self.swim.expired_suspicions(now) {
            let Some(n) = self.table.get(&addr) else {
                continue;
            };
            if n.fact.state == MemberState::Suspect
                && n.fact.id.generation == s.generation
                && n.fact.incarnation == s.incarnation
            {
                let id = n.fact.id.clone();
                self.declare(now, &id, MemberState::Dead);
            }
        }
    }

    fn start_probe(&mut self, now: Instant) {
        let table = &self.table;
        let target = self
            .swim
            .next_target(&mut self.rng, table.live_peers().cloned(), |a| {
                table.get(a).is_some_and(|n| n.is_live())
            });
        let Some(addr) = target else { return };
        let Some(id) = self.table.get(&addr).map(|n| n.fact.id.clone()) else {
            return;
        };
        let timeout = self.probe_timeout() * self.swim.stretch();
        let seq = self.swim.begin_probe(now, id, timeout);
        self.send(
            &addr,
            Body::Ping(pb::Ping {
                seq,
                ..Default::default()
            }),
        );
    }

    /// This member's own verdict on `id`: suspect after a failed probe, dead
    /// after the suspicion timeout.
    fn declare(&mut self, now: Instant, id: &NodeId, state: MemberState) {
        let Some(n) = self.table.get(&id.addr) else {
            return;
        };
        if n.fact.id != *id || !n.is_live() {
            return;
        }
        let fact = Fact {
            id: id.clone(),
            incarnation: n.fact.incarnation,
            state,
        };
        self.apply_update(now, fact, None, true, &Rumor::default());
    }

    pub(super) fn on_ping(&mut self, from: &NodeId, p: pb::Ping) {
        // The fingerprint is filled in by `send_with`; this member does not
        // compare the ping's own (see `on_ack`).
        let ack = pb::Ack {
            seq: p.seq,
            target: Some(self.id.to_pb()),
            ..Default::default()
        };
        self.send(&from.addr, Body::Ack(ack));
    }

    /// An ack: marks the probe answered, or relays it for an indirect
    /// probe; then compares the sender's digest fingerprint with this
    /// member's own.
    ///
    /// Only the receiver of the Ack (the prober, or the helper of an
    /// indirect probe) compares fingerprints; the receiver of a Ping does
    /// not, although the ping carries one too (for old members and for
    /// debugging). One divergence between two members shows on both the ping
    /// and its ack, and reacting to both would start two repairs at once
    /// (two digests or bucket lists, and all their answers). The prober is
    /// the side to react: the repairs a member starts this way are bounded
    /// by its own probe rate (one per probe interval, slower when its local
    /// health is poor), not by how often others happen to ping it; its peer
    /// has just proved it answers; and the ack's fingerprint was taken after
    /// the peer applied the ping's piggybacked updates, so a difference the
    /// piggyback already repaired starts no repair.
    pub(super) fn on_ack(&mut self, now: Instant, from: &NodeId, a: pb::Ack) {
        let hash = a.digest_hash;
        if let AckFor::Relay {
            requester,
            their_seq,
        } = self.swim.on_ack(now, a.seq, &from.addr)
        {
            let ack = pb::Ack {
                seq: their_seq,
                target: a.target,
                ..Default::default()
            };
            self.send(&requester, Body::Ack(ack));
        }
        // Zero: a member of an older version, which sends no fingerprint.
        if hash != 0 {
            self.on_fingerprint(now, from, hash);
        }
    }

    pub(super) fn on_ping_req(&mut self, now: Instant, from: &NodeId, r: pb::PingReq) {
        let Some(target) = r.target.as_ref().and_then(|t| NodeId::from_pb(t).ok()) else {
            return;
        };
        if target.addr == self.id.addr {
            let ack = pb::Ack {
                seq: r.seq,
                target: Some(self.id.to_pb()),
                ..Default::default()
            };
            self.send(&from.addr, Body::Ack(ack));
            return;
        }
        let expires = now + self.cfg.probe_interval;
        let nack_at = now + self.probe_timeout() * NACK_AFTER_TIMEOUTS;
        let seq = self.swim.relay(
            from.addr.clone(),
            r.seq,
            target.addr.clone(),
            nack_at,
            expires,
        );
        let ping = pb::Ping {
            seq,
            on_behalf_of: Some(from.to_pb()),
            ..Default::default()
        };
        self.send(&target.addr, Body::Ping(ping));
        // The requester's own probe went unanswered: whether anything still
        // listens at the target is worth knowing now, in time for the nack.
        self.check_refused(&target.addr);
    }

    /// Asks the driver whether anything listens at `addr`
    /// ([`Machine::poll_refusal_check`]); at most once per address while a
    /// check is pending.
    fn check_refused(&mut self, addr: &NodeAddr) {
        if !self.refusal_checks.contains(addr) {
            self.refusal_checks.push_back(addr.clone());
        }
    }
}
