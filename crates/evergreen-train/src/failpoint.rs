//! Crash points for restart tests: `EVERGREEN_FAILPOINT=<name>[:<n>]` aborts the process the
//! n-th time (default: first) execution reaches that point, as a SIGKILL would (no destructor
//! runs, nothing is flushed).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Aborts the process if `EVERGREEN_FAILPOINT` names this point and its hit count is reached.
/// Points in a cycle, in order: `mid_read` (after each batch the pipeline delivers, so in the
/// middle of a shard), `mid_window` (a window of a span cut, before it is trained: see
/// `data.window_records`), `after_read`, `after_publish`, `after_lineage`, `after_state`.
pub fn failpoint(name: &str) {
    static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    let armed = ARMED.get_or_init(|| {
        let v = std::env::var("EVERGREEN_FAILPOINT").ok()?;
        match v.split_once(':') {
            Some((n, k)) => Some((n.to_string(), k.parse().unwrap_or(1))),
            None => Some((v, 1)),
        }
    });
    if let Some((point, nth)) = armed
        && point == name
        && HITS.fetch_add(1, Ordering::SeqCst) + 1 >= *nth
    {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}
