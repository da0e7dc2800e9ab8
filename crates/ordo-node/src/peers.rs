//! Which of this node's groups need each peer, so that the one transport every group shares
//! keeps a peer while any of them does.
//!
//! Groups have replica sets of their own: a peer leaving one group's configuration may still
//! be a member of another (a partition on nodes 1, 2, 4 and another on 2, 4, 5), so no single
//! group may remove it from the transport. Each peer carries the set of groups that need it;
//! the peers the node was configured with (`NodeConfig::peers`) are needed by the node itself
//! and are never removed. The decisions are in [`PeerRefs`], which does no I/O; [`PeerNeeds`]
//! carries them out on the transport.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::group::{lock, GroupId};
use crate::transport::{NodeId, PeerError, Transport};

/// The groups that need each peer, and the peers the node needs regardless.
#[derive(Debug, Default)]
pub(crate) struct PeerRefs {
    /// Peers of the node's configuration: needed while the node runs.
    configured: BTreeSet<NodeId>,
    /// Per peer, the groups that have it as a member; never an empty set.
    groups: BTreeMap<NodeId, BTreeSet<GroupId>>,
    /// The newest address of every needed peer.
    addrs: BTreeMap<NodeId, SocketAddr>,
}

impl PeerRefs {
    /// The node's own needs: its configured peers (without itself).
    pub(crate) fn new(node_id: NodeId, configured: &BTreeMap<NodeId, SocketAddr>) -> PeerRefs {
        let configured: BTreeMap<NodeId, SocketAddr> = configured
            .iter()
            .filter(|(id, _)| **id != node_id)
            .map(|(id, addr)| (*id, *addr))
            .collect();
        PeerRefs {
            configured: configured.keys().copied().collect(),
            groups: BTreeMap::new(),
            addrs: configured,
        }
    }

    /// Whether any group, or the node itself, needs `peer`.
    pub(crate) fn is_needed(&self, peer: NodeId) -> bool {
        self.configured.contains(&peer) || self.groups.contains_key(&peer)
    }

    /// Where `peer` is, while it is needed.
    pub(crate) fn addr(&self, peer: NodeId) -> Option<SocketAddr> {
        self.addrs.get(&peer).copied()
    }

    /// `group` needs `peer` at `addr`.
    pub(crate) fn add(&mut self, group: GroupId, peer: NodeId, addr: SocketAddr) {
        self.groups.entry(peer).or_default().insert(group);
        self.addrs.insert(peer, addr);
        self.assert_invariants();
    }

    /// `group` no longer needs `peer`; true if nothing needs it any more.
    pub(crate) fn release(&mut self, group: GroupId, peer: NodeId) -> bool {
        if let Some(groups) = self.groups.get_mut(&peer) {
            groups.remove(&group);
            if groups.is_empty() {
                self.groups.remove(&peer);
            }
        }
        let unneeded = !self.is_needed(peer);
        if unneeded {
            self.addrs.remove(&peer);
        }
        self.assert_invariants();
        unneeded
    }

    /// `group` is gone: it needs none of its peers. Returns those nothing needs any more.
    pub(crate) fn release_group(&mut self, group: GroupId) -> Vec<NodeId> {
        let peers: Vec<NodeId> = self
            .groups
            .iter()
            .filter(|(_, groups)| groups.contains(&group))
            .map(|(peer, _)| *peer)
            .collect();
        peers
            .into_iter()
            .filter(|&peer| self.release(group, peer))
            .collect()
    }

    fn assert_invariants(&self) {
        assert!(
            self.groups.values().all(|g| !g.is_empty()),
            "a peer is kept with no group needing it"
        );
        for peer in self.configured.iter().chain(self.groups.keys()) {
            assert!(
                self.addrs.contains_key(peer),
                "needed peer {peer} has no address"
            );
        }
        assert!(
            self.addrs.keys().all(|p| self.is_needed(*p)),
            "an address is kept for a peer nothing needs"
        );
    }
}

/// Keeps the transport's peers in line with what the node's groups need (see the module
/// documentation).
pub(crate) struct PeerNeeds {
    transport: Arc<Transport>,
    refs: Mutex<PeerRefs>,
}

impl PeerNeeds {
    /// Adds the configured peers to the transport: the node needs them while it runs.
    pub(crate) fn new(
        transport: Arc<Transport>,
        node_id: NodeId,
        configured: &BTreeMap<NodeId, SocketAddr>,
    ) -> Result<PeerNeeds, PeerError> {
        let refs = PeerRefs::new(node_id, configured);
        for &peer in &refs.configured {
            let addr = refs.addr(peer).expect("a configured peer has its address");
            transport.add_peer(peer, addr)?;
        }
        Ok(PeerNeeds {
            transport,
            refs: Mutex::new(refs),
        })
    }

    /// The transport the peers are kept on.
    pub(crate) fn transport(&self) -> &Arc<Transport> {
        &self.transport
    }

    /// `group` needs `peer` at `addr`: the transport dials it unless it does already. A
    /// peer the transport knows at another address keeps that one.
    pub(crate) fn need(&self, group: GroupId, peer: NodeId, addr: SocketAddr) {
        let mut refs = lock(&self.refs);
        refs.add(group, peer, addr);
        self.ensure_added(&refs, peer);
    }

    /// `group` no longer needs `peer`; the transport lets it go if nothing else needs it.
    pub(crate) fn release(self: &Arc<Self>, group: GroupId, peer: NodeId) {
        if lock(&self.refs).release(group, peer) {
            self.remove_unneeded(peer);
        }
    }

    /// `group` was removed from this node: it needs none of its peers any more.
    pub(crate) fn release_group(self: &Arc<Self>, group: GroupId) {
        let unneeded = lock(&self.refs).release_group(group);
        for peer in unneeded {
            self.remove_unneeded(peer);
        }
    }

    /// Adds `peer` to the transport if it is needed and the transport lacks it. Called with
    /// the bookkeeping locked, so a removal finishing meanwhile cannot be missed.
    fn ensure_added(&self, refs: &PeerRefs, peer: NodeId) {
        let Some(addr) = refs.addr(peer) else { return };
        if !refs.is_needed(peer) {
            return;
        }
        match self.transport.add_peer(peer, addr) {
            // Already known: dialled, or being removed (the removal adds it back once done).
            Ok(()) | Err(PeerError::AlreadyPeer(_)) => {}
            // The node is stopping.
            Err(PeerError::ShutDown) => {}
            Err(error) => tracing::warn!(peer, %addr, %error, "adding peer failed"),
        }
    }

    /// Removes `peer` from the transport, then adds it back if a group came to need it
    /// while the removal ran: removal awaits the peer's writer, and a group may need the
    /// peer again before it is done (a learner removed from one group and added to
    /// another).
    fn remove_unneeded(self: &Arc<Self>, peer: NodeId) {
        let needs = Arc::clone(self);
        tokio::spawn(async move {
            // Unknown: removed already by an earlier release.
            let _ = needs.transport.remove_peer(peer).await;
            let refs = lock(&needs.refs);
            needs.ensure_added(&refs, peer);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn configured() -> BTreeMap<NodeId, SocketAddr> {
        [(1, addr(1)), (2, addr(2)), (3, addr(3))].into()
    }

    #[test]
    fn a_peer_is_needed_while_any_group_has_it() {
        let mut refs = PeerRefs::new(1, &configured());
        refs.add(GroupId(7), 4, addr(4));
        refs.add(GroupId(8), 4, addr(4));
        assert!(!refs.release(GroupId(7), 4), "group 8 still needs node 4");
        assert!(refs.is_needed(4));
        assert!(!refs.release(GroupId(7), 4), "group 7 no longer needed it");
        assert!(refs.release(GroupId(8), 4));
        assert!(!refs.is_needed(4));
        assert_eq!(refs.addr(4), None);
    }

    #[test]
    fn a_configured_peer_is_needed_with_no_group_and_the_node_is_not_its_own_peer() {
        let mut refs = PeerRefs::new(1, &configured());
        assert!(!refs.is_needed(1));
        refs.add(GroupId(7), 2, addr(2));
        assert!(!refs.release(GroupId(7), 2));
        assert!(refs.is_needed(2));
        assert_eq!(refs.addr(2), Some(addr(2)));
        assert!(!refs.release(GroupId(9), 3), "a group that never needed it");
    }

    #[test]
    fn releasing_a_group_reports_only_the_peers_nothing_else_needs() {
        let mut refs = PeerRefs::new(1, &configured());
        for peer in [2, 4, 5] {
            refs.add(GroupId(7), peer, addr(peer as u16));
        }
        refs.add(GroupId(8), 5, addr(5));
        assert_eq!(refs.release_group(GroupId(7)), vec![4]);
        assert!(refs.is_needed(2) && refs.is_needed(5) && !refs.is_needed(4));
        assert_eq!(refs.release_group(GroupId(7)), Vec::<NodeId>::new());
    }

    #[test]
    fn the_newest_address_of_a_peer_is_kept() {
        let mut refs = PeerRefs::new(1, &configured());
        refs.add(GroupId(7), 4, addr(4));
        refs.add(GroupId(8), 4, addr(44));
        assert_eq!(refs.addr(4), Some(addr(44)));
    }
}
