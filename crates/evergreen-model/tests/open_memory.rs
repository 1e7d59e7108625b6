//! Opening a large FTRL model mapped costs no anonymous memory (the point of `open` with a
//! scratch directory: a hot swap does not hold two decoded models), while reading it into
//! memory costs its size. One test in its own binary, so no other test's allocations move the
//! process's resident set while it measures.

use evergreen_core::FeatureVector;
use evergreen_model::{Ftrl, FtrlParams, Model, open, save};

/// A field of `/proc/self/status`, in KiB.
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn a_mapped_model_costs_no_anonymous_memory_and_a_read_one_costs_its_size() {
    if status_kib("RssAnon:").is_none() {
        println!("skipped: no /proc/self/status RssAnon on this system");
        return;
    }
    let dim = 1 << 23; // 64 MiB of z and n
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.bin");
    let mut m = Ftrl::new(FtrlParams::default(), dim);
    let mut x = FeatureVector::default();
    for i in 0..64u32 {
        x.push(i * (dim as u32 / 64) + 7, 1.0);
    }
    for i in 0..10 {
        m.learn(&x, (i % 2) as f32);
    }
    let expected = m.predict(&x);
    std::fs::write(&path, save(&m, 1)).unwrap();
    drop(m);
    let mib = |kib: u64| kib as f64 / 1024.0;

    let before = status_kib("RssAnon:").unwrap();
    let mapped = open(&path, Some(dir.path())).unwrap();
    assert!(mapped.mapped);
    assert_eq!(mapped.model.predict(&x), expected);
    let grown = status_kib("RssAnon:").unwrap().saturating_sub(before);
    println!("mapped: anonymous memory grew by {:.1} MiB", mib(grown));
    assert!(
        grown < 8 << 10,
        "mapped open grew anonymous memory by {} MiB",
        mib(grown)
    );

    let before = status_kib("RssAnon:").unwrap();
    let read = open(&path, None).unwrap();
    assert!(!read.mapped);
    assert_eq!(read.model.predict(&x), expected);
    let grown = status_kib("RssAnon:").unwrap().saturating_sub(before);
    println!(
        "read into memory: anonymous memory grew by {:.1} MiB",
        mib(grown)
    );
    // The decoded tables (64 MiB) stay; the file's bytes were freed.
    assert!(
        grown > 48 << 10,
        "read open grew anonymous memory by only {} MiB",
        mib(grown)
    );
}
