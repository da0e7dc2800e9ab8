//! Serves the etcd v3 API from a one-node, in-memory Ordo KV store.
//!
//! `cargo run -p ordo-kv --example single_node -- 127.0.0.1:2379`, then for example
//! `ETCDCTL_API=3 etcdctl --endpoints 127.0.0.1:2379 put greeting hello`.

use std::sync::Arc;
use std::time::Duration;

use ordo_kv::{EtcdApi, KvStore, LocalBackend, LocalConfig, ServiceConfig};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:2379".to_string());
    let addr = addr
        .parse()
        .map_err(|e| format!("bad listen address {addr:?}: {e}"))?;
    let backend = Arc::new(LocalBackend::new(KvStore::new(), LocalConfig::default()));
    let _expiry = backend.spawn_lease_expiry(Duration::from_millis(500));
    let api = EtcdApi::new(backend, ServiceConfig::default());
    let (bound, server) = api
        .spawn(addr, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    println!("serving the etcd v3 API on {bound}");
    server.await??;
    Ok(())
}
