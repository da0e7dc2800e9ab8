//! The seed's bank account, replicated by Ordo as a user's own state machine.
//!
//! An account holds $1000. Two withdrawals — $800 and $600 — are sent at the same moment
//! to two different nodes of a three-node cluster. Raft puts them in one order; every
//! replica applies that order, so exactly one withdrawal succeeds and every replica ends
//! with the same balance.
//!
//! The cluster runs in this process over real loopback TCP, with real write-ahead logs in
//! a temporary directory that is removed at the end.
//!
//! ```text
//! cargo run -p ordo-node --example bank
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ordo_node::{
    Group, GroupId, Index, Node, NodeConfig, ProposeError, RestoreError, StateMachine, StateRole,
};

/// The replicated account: a balance and the history of what happened to it.
#[derive(Default)]
struct Account {
    balance_dollars: u64,
    history: Vec<String>,
    applied: Index,
}

/// What a client asks for. Commands travel as bytes through the log.
enum Command {
    Deposit(u64),
    Withdraw(u64),
}

impl Command {
    fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(9);
        match self {
            Command::Deposit(n) => {
                buf.put_u8(b'D');
                buf.put_u64(*n);
            }
            Command::Withdraw(n) => {
                buf.put_u8(b'W');
                buf.put_u64(*n);
            }
        }
        buf.freeze()
    }

    fn decode(mut data: &[u8]) -> Option<Command> {
        if data.len() != 9 {
            return None;
        }
        let tag = data.get_u8();
        let amount = data.get_u64();
        match tag {
            b'D' => Some(Command::Deposit(amount)),
            b'W' => Some(Command::Withdraw(amount)),
            _ => None,
        }
    }
}

/// The answer a client gets once its command is applied.
enum Outcome {
    Done { balance_dollars: u64 },
    InsufficientFunds { balance_dollars: u64 },
    Malformed,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Done { balance_dollars } => write!(f, "done, ${balance_dollars} left"),
            Outcome::InsufficientFunds { balance_dollars } => {
                write!(f, "refused, insufficient funds (${balance_dollars} left)")
            }
            Outcome::Malformed => write!(f, "refused, malformed command"),
        }
    }
}

impl StateMachine for Account {
    type Output = Outcome;

    fn apply(&mut self, index: Index, data: &[u8]) -> Outcome {
        self.applied = index;
        let outcome = match Command::decode(data) {
            Some(Command::Deposit(n)) => {
                self.balance_dollars += n;
                self.history.push(format!(
                    "#{index} deposit ${n} -> ${}",
                    self.balance_dollars
                ));
                Outcome::Done {
                    balance_dollars: self.balance_dollars,
                }
            }
            Some(Command::Withdraw(n)) if n <= self.balance_dollars => {
                self.balance_dollars -= n;
                self.history.push(format!(
                    "#{index} withdraw ${n} -> ${}",
                    self.balance_dollars
                ));
                Outcome::Done {
                    balance_dollars: self.balance_dollars,
                }
            }
            Some(Command::Withdraw(n)) => {
                self.history.push(format!(
                    "#{index} withdraw ${n} refused: only ${} left",
                    self.balance_dollars
                ));
                Outcome::InsufficientFunds {
                    balance_dollars: self.balance_dollars,
                }
            }
            None => Outcome::Malformed,
        };
        outcome
    }

    fn note_applied(&mut self, index: Index) {
        self.applied = index;
    }

    fn snapshot(&self) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_u64(self.balance_dollars);
        buf.put_u32(self.history.len() as u32);
        for line in &self.history {
            buf.put_u32(line.len() as u32);
            buf.put_slice(line.as_bytes());
        }
        buf.freeze()
    }

    fn restore(&mut self, index: Index, mut data: &[u8]) -> Result<(), RestoreError> {
        let short = || RestoreError::new("account snapshot is truncated");
        if data.remaining() < 12 {
            return Err(short());
        }
        let balance_dollars = data.get_u64();
        let count = data.get_u32() as usize;
        let mut history = Vec::new();
        for _ in 0..count {
            if data.remaining() < 4 {
                return Err(short());
            }
            let len = data.get_u32() as usize;
            if data.remaining() < len {
                return Err(short());
            }
            let line = std::str::from_utf8(&data[..len])
                .map_err(|_| RestoreError::new("history is not UTF-8"))?;
            history.push(line.to_string());
            data.advance(len);
        }
        *self = Account {
            balance_dollars,
            history,
            applied: index,
        };
        Ok(())
    }

    fn applied_index(&self) -> Index {
        self.applied
    }
}

const ACCOUNT: GroupId = GroupId(1);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    // Bind every node's peer port first, so each node knows the others' addresses.
    let mut listeners = BTreeMap::new();
    for id in 1..=3u64 {
        listeners.insert(id, tokio::net::TcpListener::bind("127.0.0.1:0").await?);
    }
    let peers: BTreeMap<u64, _> = listeners
        .iter()
        .map(|(id, l)| Ok((*id, l.local_addr()?)))
        .collect::<Result<_, std::io::Error>>()?;

    let mut nodes = Vec::new();
    let mut accounts: Vec<Group<Account>> = Vec::new();
    for (id, listener) in listeners {
        let mut config = NodeConfig::new(
            id,
            dir.path().join(format!("node-{id}")),
            peers[&id],
            peers.clone(),
        );
        config.tick_interval_ms = 20;
        let node = Node::start_on(config, listener)?;
        accounts.push(node.start_group(ACCOUNT, Account::default()).await?);
        nodes.push(node);
    }

    let leader = wait_for_leader(&accounts).await?;
    println!("three nodes up; node {leader} leads");

    let first = &accounts[0];
    first.propose(Command::Deposit(1000).encode()).await?;
    println!("deposited $1000");

    // Two withdrawals at the same moment, through two different nodes.
    let (a, b) = (accounts[1].clone(), accounts[2].clone());
    println!("withdrawing $800 through node 2 and $600 through node 3 at the same moment");
    let (r800, r600) = tokio::join!(
        a.propose(Command::Withdraw(800).encode()),
        b.propose(Command::Withdraw(600).encode()),
    );
    println!("  $800 through node 2: {}", r800?);
    println!("  $600 through node 3: {}", r600?);

    // A linearizable read on every node: each replica shows the same history.
    let mut balances = Vec::new();
    for (i, account) in accounts.iter().enumerate() {
        let (balance, history) = account
            .linearizable_read(|a| (a.balance_dollars, a.history.clone()))
            .await?;
        println!("replica {}: balance ${balance}", i + 1);
        for line in &history {
            println!("    {line}");
        }
        balances.push((balance, history));
    }
    let same = balances.windows(2).all(|w| w[0] == w[1]);
    println!(
        "{}",
        if same {
            "every replica applied the same order and holds the same balance"
        } else {
            "REPLICAS DISAGREE"
        }
    );
    for node in nodes {
        node.shutdown().await;
    }
    if !same {
        return Err("replicas disagree".into());
    }
    Ok(())
}

async fn wait_for_leader(groups: &[Group<Account>]) -> Result<u64, Box<dyn std::error::Error>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        for g in groups {
            let status = g.status().await?;
            if status.role == StateRole::Leader {
                return Ok(status.node_id);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(Box::new(ProposeError::NoLeader))
}
