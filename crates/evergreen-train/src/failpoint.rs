//! Crash points for restart tests: `EVERGREEN_FAILPOINT=<name>` aborts the process there, as a
//! SIGKILL would (no destructor runs, nothing is flushed).

use std::sync::OnceLock;

/// Aborts the process if `EVERGREEN_FAILPOINT` names this point. Points in the cycle, in order:
/// `after_read`, `after_publish`, `after_lineage`, `after_state`.
pub fn failpoint(name: &str) {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| std::env::var("EVERGREEN_FAILPOINT").ok());
    if armed.as_deref() == Some(name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}
