//! SWIM failure detection and membership updates: probes, indirect probes,
//! suspicion with Lifeguard's dynamic timeout, refutation, and the rules
//! that turn a received membership fact into table changes and events.

use std::time::{Duration, Instant};

use gossip_proto::v1 as pb;
use gossip_proto::v1::envelope::Body;
use prost::Message;
use tracing::{debug, info, warn};

use super::{Machine, fact_from_pb, fact_to_pb};
use crate::detector::{Probe, Relay};
use crate::event::{Event, MemberState};
use crate::id::{NodeAddr, NodeId};
use crate::members::{Change, Fact};

impl Machine {
    /// Takes the round-trip times of the probes answered since the last
    /// call, oldest first: from a probe's ping to its first ack, direct or
    /// relayed by an indirect probe. The driver feeds them to
    /// [`Stats::record_probe_rtt`](crate::Stats::record_probe_rtt); at most
    /// 1024 samples wait untaken.
    pub fn take_probe_rtts(&mut self) -> impl Iterator<Item = Duration> + '_ {
        self.det.take_rtts()
    }

    /// Applies one membership fact received from `via` (or decided locally
    /// when `via` is `None`). Returns true if it changed the table.
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
        u: pb::MemberUpdate,
        via: Option<&NodeAddr>,
        spread: bool,
    ) -> bool {
        let Some(mut fact) = fact_from_pb(&u) else {
            return false;
        };
        if fact.id.addr == self.id.addr {
            self.about_me(now, &fact, via);
            return false;
        }
        // Another member's verdict "dead" on a member this one still holds
        // live in the same generation only makes it a suspect here: the
        // member gets a suspicion timeout to refute, and this member's own
        // timer decides (as memberlist does when merging remote state).
        // Without this, a healed partition's death verdicts kill members on
        // both sides before their refutations arrive.
        if fact.state == MemberState::Dead
            && via.is_some()
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
                // shortens the suspicion timeout.
                if let (MemberState::Suspect, Some(v)) = (fact.state, via)
                    && self.table.get(&addr).is_some_and(|n| n.fact == fact)
                {
                    self.start_suspicion(now, &fact, v.clone());
                }
                false
            }
            Change::New { old } => {
                self.learned(now);
                self.det.clear_suspicion(&addr);
                let old_live = old.as_ref().is_some_and(|o| o.state.is_live());
                if fact.state.is_live() {
                    self.det.add_member(&mut self.rng, addr.clone());
                    info!(member = %fact.id, "member joined");
                    self.push_info_event(now, &addr, Event::Joined);
                    if fact.state == MemberState::Suspect {
                        let confirmer = via.cloned().unwrap_or_else(|| self.id.addr.clone());
                        self.start_suspicion(now, &fact, confirmer);
                        self.events.push_back(Event::Suspected(fact.id.clone()));
                    }
                } else if let Some(old) = old.filter(|_| old_live) {
                    self.ended(&fact, old.id);
                }
                if spread {
                    self.enqueue(&fact);
                }
                true
            }
            Change::Updated { old } => {
                self.learned(now);
                match fact.state {
                    MemberState::Alive => {
                        self.det.clear_suspicion(&addr);
                        if old.state.is_live() {
                            self.push_info_event(now, &addr, Event::Updated);
                        } else {
                            info!(member = %fact.id, "member rejoined");
                            self.det.add_member(&mut self.rng, addr.clone());
                            self.push_info_event(now, &addr, Event::Joined);
                        }
                    }
                    MemberState::Suspect => {
                        let confirmer = via.cloned().unwrap_or_else(|| self.id.addr.clone());
                        self.start_suspicion(now, &fact, confirmer);
                        if !old.state.is_live() {
                            self.det.add_member(&mut self.rng, addr.clone());
                            self.push_info_event(now, &addr, Event::Joined);
                        }
                        info!(member = %fact.id, incarnation = fact.incarnation, "member suspected");
                        self.events.push_back(Event::Suspected(fact.id.clone()));
                    }
                    MemberState::Dead | MemberState::Left => {
                        self.det.clear_suspicion(&addr);
                        if old.state.is_live() {
                            self.ended(&fact, fact.id.clone());
                        }
                    }
                }
                if !spread {
                    return true;
                }
                self.enqueue(&fact);
                if fact.state == MemberState::Left && via.is_some() {
                    // A leave spreads at once, not at the next round.
                    let from = via.cloned();
                    let exclude: Vec<&NodeAddr> =
                        [Some(&addr), from.as_ref()].into_iter().flatten().collect();
                    self.push_gossip(self.cfg.fanout, &exclude);
                }
                true
            }
        }
    }

    fn ended(&mut self, fact: &Fact, id: NodeId) {
        if fact.state == MemberState::Left {
            info!(member = %id, "member left");
            self.events.push_back(Event::Left(id));
        } else {
            info!(member = %id, "member failed");
            self.dead_pool.push(fact.id.addr.clone());
            self.events.push_back(Event::Failed(id));
        }
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

    fn enqueue(&mut self, fact: &Fact) {
        let u = fact_to_pb(fact);
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
        self.health_worse();
        self.learned(now);
        let me = self.id.addr.clone();
        self.table.update(&me, |n| n.fact.incarnation = inc);
        info!(incarnation = inc, rumor = fact.state.as_str(), "refuting");
        let update = self.my_update();
        self.enqueue(&self.table.me().fact.clone());
        if let Some(v) = via {
            self.send_with(v, Body::Gossip(pb::Gossip {}), vec![update]);
        }
        let exclude: Vec<NodeAddr> = via.cloned().into_iter().collect();
        let refs: Vec<&NodeAddr> = exclude.iter().collect();
        self.push_gossip(self.cfg.fanout, &refs);
    }

    fn start_suspicion(&mut self, now: Instant, fact: &Fact, confirmer: NodeAddr) {
        let n = self.table.live_count();
        let k = self
            .cfg
            .suspicion_confirmations
            .min(n.saturating_sub(2) as u32);
        let (min, max) = (self.cfg.suspicion_min(n), self.cfg.suspicion_max(n));
        self.det
            .suspect(now, &fact.id, fact.incarnation, confirmer, min, max, k);
    }

    /// Runs the probe timers: indirect probes after the probe timeout, a new
    /// probe (and the verdict on the last) every probe interval, and
    /// suspicion timeouts.
    pub(super) fn probe_timers(&mut self, now: Instant) {
        let indirect = self.det.probe.as_mut().and_then(|p| {
            (!p.acked && !p.indirect_sent && now >= p.indirect_at).then(|| {
                p.indirect_sent = true;
                (p.target.clone(), p.seq)
            })
        });
        if let Some((target, seq)) = indirect {
            let helpers =
                self.table
                    .random_live(&mut self.rng, self.cfg.indirect_probes, &[&target.addr]);
            debug!(target = %target, helpers = helpers.len(), "probing indirectly");
            for h in helpers {
                self.send(
                    &h,
                    Body::PingReq(pb::PingReq {
                        seq,
                        target: Some(target.to_pb()),
                    }),
                );
            }
            // A second direct try, as memberlist's TCP fallback does.
            self.send(
                &target.addr,
                Body::Ping(pb::Ping {
                    seq,
                    ..Default::default()
                }),
            );
        }
        if now >= self.next_probe {
            self.next_probe = now + self.cfg.probe_interval * (self.local_health + 1);
            if let Some(p) = self.det.probe.take() {
                if p.acked {
                    self.health_better();
                } else {
                    self.health_worse();
                    self.declare(now, &p.target, MemberState::Suspect);
                }
            }
            self.start_probe(now);
        }
        for (addr, s) in self.det.expired_suspicions(now) {
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
            .det
            .next_target(&mut self.rng, table.live_peers().cloned(), |a| {
                table.get(a).is_some_and(|n| n.is_live())
            });
        let Some(addr) = target else { return };
        let Some(id) = self.table.get(&addr).map(|n| n.fact.id.clone()) else {
            return;
        };
        let seq = self.det.next_seq();
        self.det.probe = Some(Probe {
            target: id,
            seq,
            sent_at: now,
            indirect_at: now + self.cfg.probe_timeout * (self.local_health + 1),
            indirect_sent: false,
            acked: false,
        });
        self.send(
            &addr,
            Body::Ping(pb::Ping {
                seq,
                ..Default::default()
            }),
        );
    }

    /// Lifeguard's local health multiplier goes up on a failed probe or a
    /// refutation...
    fn health_worse(&mut self) {
        if self.local_health < self.cfg.max_local_health {
            self.local_health += 1;
            debug!(
                local_health = self.local_health,
                "local health worse: probing more slowly"
            );
        }
    }

    /// ...and down on a successful probe.
    fn health_better(&mut self) {
        self.local_health = self.local_health.saturating_sub(1);
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
        self.apply_update(now, fact_to_pb(&fact), None, true);
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
        if let Some(p) = self.det.probe.as_mut().filter(|p| p.seq == a.seq) {
            if !p.acked {
                p.acked = true;
                let rtt = now.saturating_duration_since(p.sent_at);
                self.det.record_rtt(rtt);
            }
        } else if let Some(relay) = self.det.take_relay(a.seq) {
            let ack = pb::Ack {
                seq: relay.their_seq,
                target: a.target,
                ..Default::default()
            };
            self.send(&relay.requester, Body::Ack(ack));
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
        let seq = self.det.next_seq();
        self.det.add_relay(
            seq,
            Relay {
                requester: from.addr.clone(),
                their_seq: r.seq,
                expires: now + self.cfg.probe_interval,
            },
        );
        let ping = pb::Ping {
            seq,
            on_behalf_of: Some(from.to_pb()),
            ..Default::default()
        };
        self.send(&target.addr, Body::Ping(ping));
    }
}
