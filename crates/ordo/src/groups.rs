//! `ordo groups`: every Raft group of each node as a table, from each node's `/groups`.

use std::net::SocketAddr;

use ordo_server::admin::GroupsReport;

/// Flags of `ordo groups`.
#[derive(Debug, Clone, clap::Args)]
pub struct GroupsArgs {
    /// Admin addresses of the nodes, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:9180",
        value_name = "ADDR,..."
    )]
    pub endpoints: Vec<SocketAddr>,
    /// Milliseconds to wait for each node.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
    /// TLS to admin ports that serve it.
    #[command(flatten)]
    pub tls: crate::status::AdminTlsArgs,
}

fn ids(ids: &[u64]) -> String {
    if ids.is_empty() {
        return "-".to_string();
    }
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// Formats the table, one row per group and node; unreachable endpoints get a row saying
/// why, and a stopped group its reason. The group column fits any id (a stream partition's
/// group id is above 2^62).
pub fn table(rows: &[(SocketAddr, Result<GroupsReport, String>)]) -> String {
    let header = format!(
        "{:<22} {:>4} {:>19} {:<13} {:>6} {:>6} {:>10} {:>10} {:<12} {:<12}\n",
        "ENDPOINT",
        "ID",
        "GROUP",
        "ROLE",
        "TERM",
        "LEADER",
        "COMMIT",
        "APPLIED",
        "VOTERS",
        "LEARNERS"
    );
    let mut out = header;
    for (addr, row) in rows {
        let report = match row {
            Ok(report) => report,
            Err(error) => {
                out += &format!("{:<22} unreachable: {error}\n", addr.to_string());
                continue;
            }
        };
        for g in &report.groups {
            out += &format!(
                "{:<22} {:>4} {:>19} {:<13} {:>6} {:>6} {:>10} {:>10} {:<12} {:<12}\n",
                addr.to_string(),
                report.id,
                g.id,
                g.role,
                g.term,
                g.leader,
                g.commit_index,
                g.applied_index,
                ids(&g.voters),
                ids(&g.learners),
            );
            if let Some(failure) = &g.failure {
                out += &format!("{:<22} group {} stopped: {failure}\n", "", g.id);
            }
        }
    }
    out
}

/// Runs `ordo groups`: prints the table; fails when no node answers.
pub async fn run(args: GroupsArgs) -> anyhow::Result<()> {
    let rows = crate::status::fetch::<GroupsReport>(
        &args.endpoints,
        "/groups",
        args.timeout_ms,
        args.tls.config()?,
    )
    .await;
    print!("{}", table(&rows));
    crate::status::any_answered(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordo_server::admin::GroupReport;

    #[test]
    fn every_group_of_every_node_gets_a_row_and_a_stopped_one_says_why() {
        let group = |id, role: &str, failure: Option<&str>| GroupReport {
            id,
            role: role.into(),
            term: 3,
            leader: 2,
            commit_index: 40,
            applied_index: 39,
            voters: vec![1, 2, 3],
            learners: if id == 7 { vec![4] } else { vec![] },
            failure: failure.map(str::to_string),
        };
        let a: SocketAddr = "127.0.0.1:9180".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:9181".parse().unwrap();
        let report = GroupsReport {
            id: 1,
            groups: vec![
                group(0, "follower", None),
                group(7, "learner", None),
                group(9, "stopped", Some("log read failed")),
            ],
        };
        let out = table(&[(a, Ok(report)), (b, Err("refused".into()))]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 6, "{out}");
        assert!(lines[0].starts_with("ENDPOINT") && lines[0].contains("LEARNERS"));
        let words: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            words,
            [
                "127.0.0.1:9180",
                "1",
                "7",
                "learner",
                "3",
                "2",
                "40",
                "39",
                "1,2,3",
                "4"
            ]
        );
        assert!(
            lines[1].trim_end().ends_with('-'),
            "no learners: {}",
            lines[1]
        );
        assert!(
            lines[4].contains("group 9 stopped: log read failed"),
            "{out}"
        );
        assert_eq!(lines[5], "127.0.0.1:9181         unreachable: refused");
    }
}
