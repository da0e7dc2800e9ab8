//! The simulated network: per-message delay (and so reordering), loss, duplication, and
//! partitions that block individual directed links.

use std::collections::{BTreeMap, BTreeSet};

use crate::prng::Prng;

/// A node's identifier on the network (the Raft node id).
pub type Address = u64;

/// How the network misbehaves. Probabilities are in parts per thousand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkConfig {
    /// Shortest delivery delay.
    pub delay_ticks_min: u64,
    /// Longest ordinary delivery delay; messages sent together arrive in any order within it.
    pub delay_ticks_max: u64,
    /// Chance that a message is lost.
    pub loss_per_mille: u64,
    /// Chance that a message is delivered twice (each copy with its own delay).
    pub duplicate_per_mille: u64,
    /// Chance that a message is held back far longer than usual, arriving long after messages
    /// sent after it.
    pub spike_per_mille: u64,
    /// Longest delay of a held-back message.
    pub spike_delay_ticks_max: u64,
    /// Messages in flight at once; beyond this the network drops, as a full queue would.
    pub in_flight_max: usize,
}

impl NetworkConfig {
    /// Panics on a configuration no network could have: the simulator's own bug.
    fn validate(&self) {
        assert!(
            self.delay_ticks_min >= 1,
            "a message cannot arrive the tick it is sent"
        );
        assert!(self.delay_ticks_min <= self.delay_ticks_max);
        assert!(self.spike_delay_ticks_max >= self.delay_ticks_min);
        assert!(self.loss_per_mille <= 1000 && self.duplicate_per_mille <= 1000);
        assert!(self.spike_per_mille <= 1000);
        assert!(self.in_flight_max >= 1);
    }

    /// A network that delivers everything, in order of a fixed delay.
    pub fn reliable() -> NetworkConfig {
        NetworkConfig {
            delay_ticks_min: 1,
            delay_ticks_max: 1,
            loss_per_mille: 0,
            duplicate_per_mille: 0,
            spike_per_mille: 0,
            spike_delay_ticks_max: 1,
            in_flight_max: 100_000,
        }
    }
}

/// Counters of what happened to messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetworkStats {
    /// Messages handed to the network.
    pub sent: u64,
    /// Messages delivered (duplicates counted each time).
    pub delivered: u64,
    /// Lost at random.
    pub lost: u64,
    /// Dropped because a link was blocked, at send or at delivery.
    pub blocked: u64,
    /// Extra copies created.
    pub duplicated: u64,
    /// Dropped because too many messages were in flight.
    pub overflowed: u64,
}

#[derive(Debug, Clone)]
struct InFlight<M> {
    from: Address,
    to: Address,
    message: M,
}

/// A network carrying messages of type `M` between addresses.
#[derive(Debug, Clone)]
pub struct Network<M> {
    config: NetworkConfig,
    /// Keyed by (delivery time, sequence number): iteration order is delivery order, and the
    /// sequence number breaks ties deterministically.
    in_flight: BTreeMap<(u64, u64), InFlight<M>>,
    sequence: u64,
    /// Directed links that drop everything: (from, to).
    blocked: BTreeSet<(Address, Address)>,
    stats: NetworkStats,
}

impl<M: Clone> Network<M> {
    /// An empty network with no partitions.
    pub fn new(config: NetworkConfig) -> Network<M> {
        config.validate();
        Network {
            config,
            in_flight: BTreeMap::new(),
            sequence: 0,
            blocked: BTreeSet::new(),
            stats: NetworkStats::default(),
        }
    }

    /// The current configuration.
    pub fn config(&self) -> NetworkConfig {
        self.config
    }

    /// Changes loss, delay and duplication from now on (messages in flight keep their delay).
    pub fn set_config(&mut self, config: NetworkConfig) {
        config.validate();
        self.config = config;
    }

    /// Hands `message` to the network at time `now`; it may be lost, delayed, reordered or
    /// duplicated.
    pub fn send(&mut self, prng: &mut Prng, now: u64, from: Address, to: Address, message: M) {
        self.send_with(prng, now, (from, to), message, true);
    }

    /// Like [`Network::send`], but never duplicated: a client's request over its own
    /// connection, which the server reads at most once.
    pub fn send_at_most_once(
        &mut self,
        prng: &mut Prng,
        now: u64,
        from: Address,
        to: Address,
        message: M,
    ) {
        self.send_with(prng, now, (from, to), message, false);
    }

    fn send_with(
        &mut self,
        prng: &mut Prng,
        now: u64,
        (from, to): (Address, Address),
        message: M,
        duplicable: bool,
    ) {
        self.stats.sent += 1;
        if self.is_blocked(from, to) {
            self.stats.blocked += 1;
            return;
        }
        if prng.chance(self.config.loss_per_mille, 1000) {
            self.stats.lost += 1;
            return;
        }
        let copies = if duplicable && prng.chance(self.config.duplicate_per_mille, 1000) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            if self.in_flight.len() >= self.config.in_flight_max {
                self.stats.overflowed += 1;
                return;
            }
            let delay_ticks = if prng.chance(self.config.spike_per_mille, 1000) {
                prng.range(
                    self.config.delay_ticks_max,
                    self.config.spike_delay_ticks_max,
                )
            } else {
                prng.range(self.config.delay_ticks_min, self.config.delay_ticks_max)
            };
            self.sequence += 1;
            self.in_flight.insert(
                (now + delay_ticks, self.sequence),
                InFlight {
                    from,
                    to,
                    message: message.clone(),
                },
            );
        }
    }

    /// Removes and returns the next message due at or before `now`, as (from, to, message).
    /// Messages whose link was blocked while they were in flight are dropped.
    pub fn next_due(&mut self, now: u64) -> Option<(Address, Address, M)> {
        loop {
            let (&(deliver_at, _), _) = self.in_flight.first_key_value()?;
            if deliver_at > now {
                return None;
            }
            let (_, flight) = self.in_flight.pop_first()?;
            if self.is_blocked(flight.from, flight.to) {
                self.stats.blocked += 1;
                continue;
            }
            self.stats.delivered += 1;
            return Some((flight.from, flight.to, flight.message));
        }
    }

    /// Messages in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Drops every message in flight to or from `address` (a node that crashed loses its
    /// socket buffers; messages to it would be refused).
    pub fn drop_in_flight_of(&mut self, address: Address) {
        let before = self.in_flight.len();
        self.in_flight
            .retain(|_, flight| flight.from != address && flight.to != address);
        self.stats.blocked += (before - self.in_flight.len()) as u64;
    }

    /// Drops every message in flight to `address`: a node that crashed loses its
    /// connections, so what was on its way to it never reaches its next incarnation.
    pub fn drop_in_flight_to(&mut self, address: Address) {
        let before = self.in_flight.len();
        self.in_flight.retain(|_, flight| flight.to != address);
        self.stats.blocked += (before - self.in_flight.len()) as u64;
    }

    /// Whether messages from `from` to `to` are dropped.
    pub fn is_blocked(&self, from: Address, to: Address) -> bool {
        self.blocked.contains(&(from, to))
    }

    /// Blocks the directed link `from` → `to` (a one-way partition).
    pub fn block(&mut self, from: Address, to: Address) {
        assert_ne!(from, to, "a node always reaches itself");
        self.blocked.insert((from, to));
    }

    /// Splits `nodes` into `side` and the rest; no message crosses in either direction.
    pub fn partition(&mut self, side: &[Address], nodes: &[Address]) {
        for &a in side {
            for &b in nodes {
                if !side.contains(&b) {
                    self.block(a, b);
                    self.block(b, a);
                }
            }
        }
    }

    /// Removes every partition.
    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    /// The blocked directed links, for traces.
    pub fn blocked_links(&self) -> impl Iterator<Item = (Address, Address)> + '_ {
        self.blocked.iter().copied()
    }

    /// Counters so far.
    pub fn stats(&self) -> NetworkStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(network: &mut Network<u32>, now: u64) -> Vec<u32> {
        let mut out = Vec::new();
        while let Some((_, _, message)) = network.next_due(now) {
            out.push(message);
        }
        out
    }

    #[test]
    fn reliable_network_delivers_everything_after_the_delay() {
        let mut prng = Prng::new(1);
        let mut network = Network::new(NetworkConfig::reliable());
        for message in 0..10 {
            network.send(&mut prng, 0, 1, 2, message);
        }
        assert!(
            drain(&mut network, 0).is_empty(),
            "nothing arrives instantly"
        );
        assert_eq!(drain(&mut network, 1), (0..10).collect::<Vec<_>>());
        assert_eq!(network.stats().delivered, 10);
    }

    #[test]
    fn random_delays_reorder_messages_but_deliver_all() {
        let mut prng = Prng::new(2);
        let mut network = Network::new(NetworkConfig {
            delay_ticks_max: 20,
            ..NetworkConfig::reliable()
        });
        for message in 0..100 {
            network.send(&mut prng, 0, 1, 2, message);
        }
        let delivered = drain(&mut network, 20);
        assert_eq!(delivered.len(), 100);
        assert_ne!(
            delivered,
            (0..100).collect::<Vec<_>>(),
            "some messages overtake"
        );
    }

    #[test]
    fn lossy_network_loses_about_the_configured_share() {
        let mut prng = Prng::new(3);
        let mut network = Network::new(NetworkConfig {
            loss_per_mille: 300,
            ..NetworkConfig::reliable()
        });
        for message in 0..1000 {
            network.send(&mut prng, 0, 1, 2, message);
        }
        let delivered = drain(&mut network, 1).len();
        assert!((600..800).contains(&delivered), "{delivered} delivered");
        assert_eq!(network.stats().lost as usize, 1000 - delivered);
    }

    #[test]
    fn duplication_delivers_copies() {
        let mut prng = Prng::new(4);
        let mut network = Network::new(NetworkConfig {
            duplicate_per_mille: 1000,
            ..NetworkConfig::reliable()
        });
        network.send(&mut prng, 0, 1, 2, 7);
        assert_eq!(drain(&mut network, 1), vec![7, 7]);
    }

    #[test]
    fn one_way_block_drops_only_that_direction() {
        let mut prng = Prng::new(5);
        let mut network = Network::new(NetworkConfig::reliable());
        network.block(1, 2);
        network.send(&mut prng, 0, 1, 2, 1);
        network.send(&mut prng, 0, 2, 1, 2);
        assert_eq!(drain(&mut network, 1), vec![2]);
    }

    #[test]
    fn partition_blocks_messages_already_in_flight_and_heal_restores() {
        let mut prng = Prng::new(6);
        let mut network = Network::new(NetworkConfig::reliable());
        network.send(&mut prng, 0, 1, 3, 1);
        network.partition(&[1], &[1, 2, 3]);
        network.send(&mut prng, 0, 2, 3, 2);
        network.send(&mut prng, 0, 3, 1, 3);
        assert_eq!(drain(&mut network, 1), vec![2]);
        network.heal();
        network.send(&mut prng, 1, 3, 1, 4);
        assert_eq!(drain(&mut network, 2), vec![4]);
    }

    #[test]
    fn full_network_drops_instead_of_growing() {
        let mut prng = Prng::new(7);
        let mut network = Network::new(NetworkConfig {
            in_flight_max: 3,
            ..NetworkConfig::reliable()
        });
        for message in 0..5 {
            network.send(&mut prng, 0, 1, 2, message);
        }
        assert_eq!(network.in_flight(), 3);
        assert_eq!(network.stats().overflowed, 2);
    }
}
