//! `ordo cert`: writes a development CA, a certificate for each node and client
//! certificates, so a TLS cluster can be tried in three commands (see the README).

use std::path::PathBuf;

use anyhow::Context as _;
use ordo_server::dev_certs::{write_new, DevCa, Usage};

/// The flags of `ordo cert`.
#[derive(Debug, Clone, clap::Args)]
pub struct CertArgs {
    /// Directory to write the files to (created if missing; existing files are never
    /// replaced).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Node certificates to write: `node-1.pem` … `node-N.pem`, each with its key.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Names and addresses every node certificate is valid for, comma-separated.
    #[arg(long, value_name = "HOST,...", default_value = "127.0.0.1,localhost")]
    pub hosts: String,
    /// Client certificates to write, by user name (the certificate's common name),
    /// comma-separated: `client-NAME.pem` and its key.
    #[arg(long, value_name = "NAME,...", default_value = "root")]
    pub clients: String,
}

fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Writes the files and prints what it wrote.
pub fn run(args: &CertArgs) -> anyhow::Result<()> {
    let hosts = list(&args.hosts);
    if hosts.is_empty() {
        anyhow::bail!(
            "--hosts names no host: give the names and addresses the nodes are reached at"
        );
    }
    let clients = list(&args.clients);
    if let Some(bad) = clients.iter().find(|user| {
        !user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    }) {
        anyhow::bail!("--clients: `{bad}` is not a user name of letters, digits, `.`, `_` and `-`");
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    // Everything is made in memory first, and nothing is written if any file exists: a
    // new CA beside certificates of an old one would trust none of them.
    let ca = DevCa::new("Ordo development CA")?;
    let mut files = vec![
        ("ca.pem".to_string(), ca.cert_pem(), false),
        ("ca-key.pem".to_string(), ca.key_pem(), true),
    ];
    let nodes = (1..=args.nodes).map(|id| (format!("node-{id}"), Usage::Node, hosts.clone()));
    let users = clients
        .iter()
        .map(|user| (format!("client-{user}"), Usage::Client, Vec::new()));
    for (name, usage, hosts) in nodes.chain(users) {
        let common_name = name.strip_prefix("client-").unwrap_or(&name);
        let issued = ca.issue(common_name, &hosts, usage)?;
        files.push((format!("{name}.pem"), issued.cert_pem, false));
        files.push((format!("{name}-key.pem"), issued.key_pem, true));
    }
    if let Some((name, _, _)) = files
        .iter()
        .find(|(name, _, _)| args.dir.join(name).exists())
    {
        anyhow::bail!(
            "{} exists already: write the certificates to a new directory (nothing was written)",
            args.dir.join(name).display()
        );
    }
    let mut written = Vec::with_capacity(files.len());
    for (name, contents, secret) in &files {
        written.push(write_new(&args.dir, name, contents, *secret)?);
    }
    for path in &written {
        println!("wrote {}", path.display());
    }
    println!(
        "a development CA: its key is in the same directory and the certificates do not expire; use your own CA in production"
    );
    Ok(())
}
