//! Outside programs the tests drive: etcd's own client, kcat, and Python client libraries.

use std::path::PathBuf;

/// The environment variable that makes a missing `etcdctl` a failure instead of a skip
/// (CI sets it, having installed etcdctl).
pub const REQUIRE_ETCDCTL_ENV: &str = "ORDO_REQUIRE_ETCDCTL";

/// The environment variable that makes a missing `kcat` a failure instead of a skip (CI
/// sets it, having installed kcat).
pub const REQUIRE_KCAT_ENV: &str = "ORDO_REQUIRE_KCAT";

/// The `etcdctl` on the PATH, or `None` after printing "skipped: etcdctl not installed";
/// panics instead when [`REQUIRE_ETCDCTL_ENV`] is `1`.
pub fn etcdctl_or_skip() -> Option<PathBuf> {
    program_or_skip("etcdctl", REQUIRE_ETCDCTL_ENV)
}

/// The `kcat` on the PATH, or `None` after printing "skipped: kcat not installed"; panics
/// instead when [`REQUIRE_KCAT_ENV`] is `1`.
pub fn kcat_or_skip() -> Option<PathBuf> {
    program_or_skip("kcat", REQUIRE_KCAT_ENV)
}

fn program_or_skip(name: &str, require_env: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let required = std::env::var(require_env).is_ok_and(|v| v == "1");
        assert!(!required, "{name} not installed but {require_env}=1");
        println!("skipped: {name} not installed");
    }
    found
}

/// The environment variable naming the Python interpreter of a virtual environment that
/// holds the client libraries the tests drive (`.ci/run` makes it and sets this).
pub const PYTHON_ENV: &str = "ORDO_PYTHON";

/// The environment variable that makes missing Python client libraries a failure instead
/// of a skip (CI sets it, having installed them).
pub const REQUIRE_PYTHON_ENV: &str = "ORDO_REQUIRE_PYTHON";

/// The Python interpreter named by [`PYTHON_ENV`] if it can import every module of
/// `modules`, or `None` after printing what is missing; panics instead when
/// [`REQUIRE_PYTHON_ENV`] is `1`.
pub fn python_with_or_skip(modules: &[&str]) -> Option<PathBuf> {
    let required = std::env::var(REQUIRE_PYTHON_ENV).is_ok_and(|v| v == "1");
    let missing = |why: String| {
        assert!(!required, "{why} but {REQUIRE_PYTHON_ENV}=1");
        println!("skipped: {why}");
        None
    };
    let Some(python) = std::env::var_os(PYTHON_ENV).map(PathBuf::from) else {
        return missing(format!("{PYTHON_ENV} is not set"));
    };
    let imports = modules
        .iter()
        .map(|m| format!("import {m}"))
        .collect::<Vec<_>>()
        .join("; ");
    let checked = std::process::Command::new(&python)
        .args(["-c", &imports])
        .stdin(std::process::Stdio::null())
        .output();
    match checked {
        Ok(out) if out.status.success() => Some(python),
        Ok(out) => missing(format!(
            "{} cannot import {}: {}",
            python.display(),
            modules.join(", "),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(error) => missing(format!("cannot run {}: {error}", python.display())),
    }
}
