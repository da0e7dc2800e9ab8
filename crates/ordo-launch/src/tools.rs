//! Outside programs the tests drive: etcd's own client.

use std::path::PathBuf;

/// The environment variable that makes a missing `etcdctl` a failure instead of a skip
/// (CI sets it, having installed etcdctl).
pub const REQUIRE_ETCDCTL_ENV: &str = "ORDO_REQUIRE_ETCDCTL";

/// The `etcdctl` on the PATH, or `None` after printing "skipped: etcdctl not installed";
/// panics instead when [`REQUIRE_ETCDCTL_ENV`] is `1`.
pub fn etcdctl_or_skip() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("etcdctl"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let required = std::env::var(REQUIRE_ETCDCTL_ENV).is_ok_and(|v| v == "1");
        assert!(
            !required,
            "etcdctl not installed but {REQUIRE_ETCDCTL_ENV}=1"
        );
        println!("skipped: etcdctl not installed");
    }
    found
}
