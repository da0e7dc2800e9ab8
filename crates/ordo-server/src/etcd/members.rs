//! Membership changes through the etcd Cluster API: MemberAdd, MemberRemove, MemberPromote
//! and a MemberList that follows the replicated configuration.
//!
//! The replicated configuration (voters and learners, by id) is the authority on who is a
//! member; this module adds the addresses etcd tools expect to see, from one
//! [`MemberDirectory`]. Peer addresses come from the runtime's peer set: the configured
//! peers, and every member added later, learnt from the membership change itself. Client
//! URLs come from the members themselves: each presents its own in the handshake of every
//! peer connection it dials, and the acceptor records it. So a member added at run time
//! becomes known, with its client URL, to every member it connects to, and nothing a client
//! sends can change what a member believes about another member.
//!
//! # Member ids
//!
//! Other members keep per-id state (replication progress, votes, the peer address file), so
//! an id must never name two members, not even after the first was removed. A new id is the
//! larger of (the largest current id + 1) and (wall-clock milliseconds × 1024 + 10 random
//! bits). Ids chosen later are therefore larger than every id chosen before them as long
//! as the clocks of the members that choose them do not step back, and two additions in the
//! same millisecond differ in their random bits (and only one membership change is in
//! progress at a time anyway). The ids stay below 2^53, so JSON tools print them exactly.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};

use ordo_kv::backend::{MemberChanged, MemberError};
use ordo_kv::MemberInfo;
use ordo_node::{AskError, ConfState, GroupStatus, MembershipChange, NodeId, ProposeError};

use ordo_node::transport::PeerAdvertised;

use super::questions::{Answer, Question};
use super::{EtcdBackend, CLIENT_URL_ADVERTISED};

/// Most entries a learner may lag behind the leader's log and still be promoted. A learner
/// further behind would, as a voter, hold back commits until it caught up.
pub const LEARNER_READY_LAG_MAX: u64 = 1000;

/// Most peer URLs a member may be added with: the peer transport dials one address.
const PEER_URLS_MAX: usize = 1;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the maps consistent, so a panic elsewhere does not make
    // them unsafe to read.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The addresses of members known to this node, from two sources only: peer addresses from
/// the runtime's peer set (the configured peers, and members added later, learnt from the
/// membership change itself), and other members' client URLs from what each advertised
/// itself when it connected to this node over the peer transport.
#[derive(Debug)]
pub struct MemberDirectory {
    node_id: NodeId,
    /// Where this node's own etcd API listens.
    client_url: String,
    peer_addrs: Mutex<BTreeMap<NodeId, SocketAddr>>,
    peer_advertised: PeerAdvertised,
}

impl MemberDirectory {
    /// The directory of node `node_id`, whose etcd API clients reach at `client_url`, starting
    /// from the configured `peers`, with what peers advertise in `peer_advertised`.
    pub fn new(
        node_id: NodeId,
        client_url: String,
        peers: &BTreeMap<NodeId, SocketAddr>,
        peer_advertised: PeerAdvertised,
    ) -> MemberDirectory {
        MemberDirectory {
            node_id,
            client_url,
            peer_addrs: Mutex::new(peers.clone()),
            peer_advertised,
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Records the runtime's peer set (addresses learnt from membership changes and
    /// snapshots win over configured ones: they are what the node actually dials).
    pub fn learn_peers(&self, peers: &[(NodeId, SocketAddr)]) {
        lock(&self.peer_addrs).extend(peers.iter().copied());
    }

    fn insert_peer(&self, id: NodeId, peer_addr: SocketAddr) {
        self.learn_peers(&[(id, peer_addr)]);
    }

    /// Member `id`'s peer address, if known.
    pub fn peer_addr(&self, id: NodeId) -> Option<SocketAddr> {
        lock(&self.peer_addrs).get(&id).copied()
    }

    /// Member `id`'s client URL: this node's own, or the one the member advertised when it
    /// last connected to this node.
    pub fn client_url(&self, id: NodeId) -> Option<String> {
        if id == self.node_id {
            return Some(self.client_url.clone());
        }
        let advertised = self.peer_advertised.get(id)?;
        advertised.get(CLIENT_URL_ADVERTISED).map(str::to_string)
    }

    /// Every member with a known peer address.
    pub fn ids(&self) -> Vec<NodeId> {
        lock(&self.peer_addrs).keys().copied().collect()
    }
}

/// A new member id, as the module documentation explains: above every id in `existing`, and
/// above every id chosen at an earlier `now_ms`.
pub fn new_member_id(existing: impl IntoIterator<Item = NodeId>, now_ms: u64, salt: u64) -> NodeId {
    let above_current = existing
        .into_iter()
        .max()
        .unwrap_or(0)
        .checked_add(1)
        .expect("member ids exhausted");
    let from_clock = now_ms.saturating_mul(1024) | (salt & 1023);
    let id = above_current.max(from_clock);
    assert!(id != 0, "a member id is never 0");
    id
}

/// Whether a learner whose log matches the leader's up to `match_index`, `lag` entries
/// behind the leader's last entry, may become a voter: it holds at least 90% of the
/// leader's log (etcd's rule) and at most [`LEARNER_READY_LAG_MAX`] entries are missing
/// (a bound that does not grow with the log). A learner that has acknowledged nothing yet
/// is never ready, however short the log.
pub fn learner_ready(match_index: u64, lag: u64) -> bool {
    let leader_last = match_index.saturating_add(lag);
    match_index > 0
        && lag <= LEARNER_READY_LAG_MAX
        && u128::from(match_index) * 10 >= u128::from(leader_last) * 9
}

fn random_salt() -> u64 {
    // The standard library seeds every `RandomState` from the OS; no extra crate needed.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x6f72_646f);
    hasher.finish()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Parses an etcd peer URL (`http://IP:PORT`, a trailing `/` allowed) into the address the
/// peer transport dials.
pub fn parse_peer_url(url: &str) -> Result<SocketAddr, MemberError> {
    let invalid = |problem: &str| MemberError::InvalidPeerUrl {
        url: url.to_string(),
        problem: problem.to_string(),
    };
    let rest = if let Some(rest) = url.strip_prefix("http://") {
        rest
    } else if url.starts_with("https://") {
        return Err(invalid(
            "Ordo's peer links do not use TLS; give an http:// URL",
        ));
    } else {
        return Err(invalid("expected http://IP:PORT"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    rest.parse().map_err(|_| {
        invalid("expected http://IP:PORT with a literal IP address (host names are not resolved)")
    })
}

fn member_ids(conf: &ConfState) -> Vec<NodeId> {
    let mut ids: Vec<NodeId> = conf
        .voters
        .iter()
        .chain(conf.learners.iter())
        .copied()
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

fn change_error(error: ProposeError) -> MemberError {
    match error {
        ProposeError::NotLeader { leader } => {
            MemberError::NoLeader(format!("leadership moved to member {leader:x}; retry"))
        }
        ProposeError::NoLeader => MemberError::NoLeader("an election is in progress".into()),
        ProposeError::Rejected(reason) => MemberError::Rejected(reason),
        ProposeError::TooManyPending { limit } => {
            MemberError::Rejected(format!("too many pending requests (limit {limit})"))
        }
        ProposeError::TooLarge { bytes, max } => {
            MemberError::Rejected(format!("change of {bytes} bytes exceeds {max}"))
        }
        other @ (ProposeError::Dropped
        | ProposeError::OutcomeUnknown
        | ProposeError::LeaderLost
        | ProposeError::Timeout { .. }
        | ProposeError::ShuttingDown) => MemberError::Unknown(other.to_string()),
    }
}

/// Why a promotion asked of the leader got no answer, as this member's error.
fn ask_error(error: AskError) -> MemberError {
    match error {
        AskError::NoLeader | AskError::NotLeader { .. } => {
            MemberError::NoLeader("an election is in progress; retry".into())
        }
        AskError::Refused(reason) => {
            MemberError::NoLeader(format!("the leader answered: {reason}"))
        }
        other @ (AskError::LeaderChanged | AskError::Timeout { .. }) => {
            MemberError::Unknown(other.to_string())
        }
        other => MemberError::NoLeader(other.to_string()),
    }
}

/// A configuration holding only `voters` and `learners`, as a promotion's answer carries.
fn conf_of(voters: Vec<NodeId>, learners: Vec<NodeId>) -> ConfState {
    ConfState {
        voters,
        learners,
        ..ConfState::default()
    }
}

/// The single peer URL of a member to add, as the address the transport dials.
fn one_peer_addr(peer_urls: &[String]) -> Result<SocketAddr, MemberError> {
    if peer_urls.len() > PEER_URLS_MAX {
        return Err(MemberError::InvalidPeerUrl {
            url: peer_urls.join(","),
            problem: "give exactly one peer URL: Ordo dials one address per member".into(),
        });
    }
    let Some(first) = peer_urls.first() else {
        return Err(MemberError::InvalidPeerUrl {
            url: String::new(),
            problem: "a member needs a peer URL (for example http://127.0.0.1:2390)".into(),
        });
    };
    parse_peer_url(first)
}

/// Membership over the replicated configuration.
impl EtcdBackend {
    fn member_info(&self, id: NodeId, is_learner: bool) -> MemberInfo {
        let peer_addr = self.directory.peer_addr(id);
        MemberInfo {
            id,
            name: format!("ordo-{id}"),
            peer_urls: peer_addr.map(|a| vec![url(a)]).unwrap_or_default(),
            client_urls: self.directory.client_url(id).into_iter().collect(),
            is_learner,
        }
    }

    fn members_of(&self, conf: &ConfState) -> Vec<MemberInfo> {
        member_ids(conf)
            .into_iter()
            .map(|id| self.member_info(id, conf.learners.contains(&id)))
            .collect()
    }

    /// The members of the configuration last read, ascending by id: before the first read
    /// (or on a joining node not yet added) the configured members.
    pub(super) fn member_list(&self) -> Vec<MemberInfo> {
        match self.replica.conf_state() {
            Some(conf) if !conf.voters.is_empty() => self.members_of(&conf),
            _ => self
                .directory
                .ids()
                .into_iter()
                .map(|id| self.member_info(id, false))
                .collect(),
        }
    }

    async fn fresh_status(&self) -> Result<GroupStatus, MemberError> {
        self.refresh()
            .await
            .map_err(|e| MemberError::NoLeader(format!("this member cannot report its state: {e}")))
    }

    /// Answers a change with the member it concerned and the configuration after it, after
    /// reading the group's status again so this node's next member list shows the change.
    async fn changed(&self, member: MemberInfo, conf: &ConfState) -> MemberChanged {
        let _ = self.refresh().await;
        MemberChanged {
            member,
            members: self.members_of(conf),
        }
    }

    pub(super) async fn add_member(
        &self,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<MemberChanged, MemberError> {
        let peer_addr = one_peer_addr(&peer_urls)?;
        let status = self.fresh_status().await?;
        let current = member_ids(&status.conf_state);
        for &member in &current {
            if self.directory.peer_addr(member) == Some(peer_addr) {
                return Err(MemberError::PeerUrlExists {
                    url: url(peer_addr),
                });
            }
        }
        let id = new_member_id(current.iter().copied(), now_ms(), random_salt());
        let change = if is_learner {
            MembershipChange::AddLearner {
                id,
                addr: peer_addr,
            }
        } else {
            MembershipChange::AddVoter {
                id,
                addr: peer_addr,
            }
        };
        let conf = self
            .replica
            .group()
            .change_membership(change)
            .await
            .map_err(change_error)?;
        self.directory.insert_peer(id, peer_addr);
        tracing::info!(node = self.replica.node_id(), member = id, %peer_addr, is_learner, "member added");
        Ok(self.changed(self.member_info(id, is_learner), &conf).await)
    }

    pub(super) async fn remove_member(&self, id: NodeId) -> Result<MemberChanged, MemberError> {
        let status = self.fresh_status().await?;
        if !member_ids(&status.conf_state).contains(&id) {
            return Err(MemberError::NotFound { id });
        }
        let removed = self.member_info(id, status.conf_state.learners.contains(&id));
        let conf = self
            .replica
            .group()
            .change_membership(MembershipChange::Remove { id })
            .await
            .map_err(change_error)?;
        tracing::info!(node = self.replica.node_id(), member = id, "member removed");
        Ok(self.changed(removed, &conf).await)
    }

    pub(super) async fn hand_leadership_to(&self, target: NodeId) -> Result<(), MemberError> {
        let status = self.fresh_status().await?;
        if status.conf_state.learners.contains(&target) {
            return Err(MemberError::Rejected(format!(
                "member {target:x} is a learner; promote it before it can lead"
            )));
        }
        if !status.conf_state.voters.contains(&target) {
            return Err(MemberError::NotFound { id: target });
        }
        if status.leader == target {
            return Ok(());
        }
        self.replica
            .group()
            .transfer_leader(target)
            .await
            .map_err(change_error)?;
        // The transfer completes when the target wins its election; wait for this member
        // to see it (the service bounds the wait by its request timeout).
        let mut leadership = self.replica.group().leadership();
        if leadership.wait_for(|l| l.leader == target).await.is_err() {
            return Err(MemberError::Unknown("the group stopped".into()));
        }
        tracing::info!(
            node = self.replica.node_id(),
            leader = target,
            "leadership moved"
        );
        Ok(())
    }

    /// Makes learner `id` a voter: checked here first, then decided by the leader, which
    /// alone knows how far the learner has caught up.
    pub(super) async fn promote_member(&self, id: NodeId) -> Result<MemberChanged, MemberError> {
        let status = self.fresh_status().await?;
        check_learner(id, &status.conf_state)?;
        let question = Question::MemberPromote { id };
        let answer = self
            .replica
            .group()
            .ask_leader(question.encode())
            .await
            .map_err(ask_error)?;
        match Answer::decode(&answer) {
            Ok(Answer::Promoted { voters, learners }) => {
                let conf = conf_of(voters, learners);
                Ok(self.changed(self.member_info(id, false), &conf).await)
            }
            Ok(Answer::PromoteRefused(error)) => Err(error),
            Ok(other) => Err(MemberError::Unknown(format!(
                "the leader answered a promotion with {other:?}"
            ))),
            Err(error) => Err(MemberError::Unknown(format!(
                "the leader's answer does not decode: {error}"
            ))),
        }
    }

    /// On the leader: promotes learner `id` once it has caught up; the configuration after.
    pub(super) async fn promote_here(&self, id: NodeId) -> Result<ConfState, MemberError> {
        let status = self.fresh_status().await?;
        if !self.replica.is_leader() {
            return Err(MemberError::NoLeader(
                "this member no longer leads; retry".into(),
            ));
        }
        check_learner(id, &status.conf_state)?;
        let Some(progress) = status.peers.iter().find(|p| p.id == id) else {
            return Err(MemberError::NoLeader(format!(
                "the leader has no replication progress for member {id:x} yet; retry"
            )));
        };
        if !learner_ready(progress.match_index, progress.lag) {
            return Err(MemberError::LearnerNotReady {
                id,
                match_index: progress.match_index,
                lag: progress.lag,
            });
        }
        let Some(peer_addr) = self.directory.peer_addr(id) else {
            // The runtime's peer set reaches the directory within a refresh interval.
            return Err(MemberError::NoLeader(format!(
                "the leader has not recorded member {id:x}'s peer address yet; retry"
            )));
        };
        let conf = self
            .replica
            .group()
            .change_membership(MembershipChange::AddVoter {
                id,
                addr: peer_addr,
            })
            .await
            .map_err(change_error)?;
        tracing::info!(
            node = self.replica.node_id(),
            member = id,
            "learner promoted to voter"
        );
        Ok(conf)
    }
}

/// Refuses to promote a voter or a member that is not one.
fn check_learner(id: NodeId, conf: &ConfState) -> Result<(), MemberError> {
    if conf.voters.contains(&id) {
        return Err(MemberError::NotLearner { id });
    }
    if !conf.learners.contains(&id) {
        return Err(MemberError::NotFound { id });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_above_every_current_id() {
        assert_eq!(new_member_id([1, 2, 3], 0, 0), 4);
        let big = 5_000_000_000_000_000;
        assert_eq!(new_member_id([1, big], 10, 7), big + 1);
    }

    #[test]
    fn an_id_chosen_later_is_larger_even_after_the_largest_member_left() {
        let first = new_member_id([1, 2, 3], 1_700_000_000_000, 1023);
        // That member was removed: the current ids are small again.
        let second = new_member_id([1, 2, 3], 1_700_000_000_001, 0);
        assert!(second > first, "{second} must exceed {first}");
        assert!(second < 1 << 53, "ids stay exact in JSON");
    }

    #[test]
    fn a_learner_is_ready_only_close_behind_the_leader() {
        assert!(!learner_ready(0, 5), "nothing acknowledged yet");
        assert!(!learner_ready(50, 50), "half the log");
        assert!(learner_ready(95, 5));
        assert!(learner_ready(1_000_000, 999));
        assert!(!learner_ready(1_000_000, 1001), "too far behind in entries");
    }

    #[test]
    fn peer_urls_parse_to_addresses_and_bad_ones_say_why() {
        assert_eq!(
            parse_peer_url("http://127.0.0.1:2390/").unwrap(),
            "127.0.0.1:2390".parse::<SocketAddr>().unwrap()
        );
        let tls = parse_peer_url("https://127.0.0.1:2390")
            .unwrap_err()
            .to_string();
        assert!(tls.contains("TLS"), "{tls}");
        let host = parse_peer_url("http://node4:2390").unwrap_err().to_string();
        assert!(host.contains("host names"), "{host}");
        let bare = parse_peer_url("127.0.0.1:2390").unwrap_err().to_string();
        assert!(bare.contains("http://"), "{bare}");
    }

    #[test]
    fn directory_prefers_the_runtime_peer_address() {
        let configured = BTreeMap::from([(1, "127.0.0.1:1".parse().unwrap())]);
        let directory = MemberDirectory::new(
            1,
            "http://127.0.0.1:2".into(),
            &configured,
            Default::default(),
        );
        directory.learn_peers(&[
            (1, "127.0.0.1:3".parse().unwrap()),
            (9, "127.0.0.1:4".parse().unwrap()),
        ]);
        assert_eq!(directory.peer_addr(1), Some("127.0.0.1:3".parse().unwrap()));
        assert_eq!(directory.peer_addr(9), Some("127.0.0.1:4".parse().unwrap()));
        assert_eq!(directory.ids(), vec![1, 9]);
        assert_eq!(
            directory.client_url(1).as_deref(),
            Some("http://127.0.0.1:2")
        );
        assert_eq!(directory.client_url(9), None, "9 never connected");
    }
}
