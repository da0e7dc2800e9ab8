//! Servers that exit when the process that started them is gone.
//!
//! A launcher killed with SIGKILL cannot stop the servers it started. So it starts each
//! with [`EXIT_WITH_PARENT_ENV`] set to its own process id, and a server started so calls
//! [`exit_with_parent_if_asked`]: a watchdog thread checks twice a second that its parent is
//! still that process (a process whose parent dies is handed to another parent) and ends
//! the server when it is not.

use std::time::Duration;

/// Set on every server a launcher starts, to the launcher's process id.
pub const EXIT_WITH_PARENT_ENV: &str = "ORDO_EXIT_WITH_PARENT";

/// How often the watchdog looks at the parent process id.
const PARENT_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// Why the watchdog could not be set up; the server should not start.
#[derive(Debug, thiserror::Error)]
pub enum ParentError {
    /// The variable does not hold a process id.
    #[error("{EXIT_WITH_PARENT_ENV} must be a process id, not {0:?}")]
    NotAProcessId(std::ffi::OsString),
    /// The starter is gone already.
    #[error("the process that started this server ({parent}) is gone (parent now {now})")]
    Gone {
        /// The process id the starter gave.
        parent: u32,
        /// The parent process id now.
        now: u32,
    },
    /// The watchdog thread could not be started.
    #[error("cannot start the parent watchdog: {0}")]
    Thread(std::io::Error),
}

/// When [`EXIT_WITH_PARENT_ENV`] is set, starts a watchdog that ends this process (status 1)
/// once its parent is no longer that process; does nothing otherwise.
pub fn exit_with_parent_if_asked() -> Result<(), ParentError> {
    let Some(value) = std::env::var_os(EXIT_WITH_PARENT_ENV) else {
        return Ok(());
    };
    let parent: u32 = value
        .to_str()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ParentError::NotAProcessId(value.clone()))?;
    let now = std::os::unix::process::parent_id();
    if now != parent {
        return Err(ParentError::Gone { parent, now });
    }
    std::thread::Builder::new()
        .name("ordo-parent-watch".into())
        .spawn(move || loop {
            std::thread::sleep(PARENT_CHECK_INTERVAL);
            let now = std::os::unix::process::parent_id();
            if now != parent {
                eprintln!(
                    "ordo server: {}; exiting",
                    ParentError::Gone { parent, now }
                );
                std::process::exit(1);
            }
        })
        .map(drop)
        .map_err(ParentError::Thread)
}
