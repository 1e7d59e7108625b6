//! Drift detection in the loop: `evergreen train` over a synthetic Elec2-shaped stream of
//! 1000-row windows with an abrupt concept change (the label rule flips at window 4) and a
//! covariate shift (`vicdemand` moves at window 7). The report of each window says what the
//! detectors saw: the loss change is found in the window where it happens, the shifted field
//! in its window, and the calm windows raise nothing.

mod common;

use common::*;

/// Row `i` of the stream: uniform features from a fixed LCG, label `nswprice > 0.5` (flipped
/// from row 3000 on), `vicdemand` shifted by 0.5 from row 6000 on.
fn row(i: usize, s: &mut u64) -> String {
    let mut u = || {
        *s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*s >> 11) as f64 / (1u64 << 53) as f64
    };
    let (period, price, demand, vp, mut vd, transfer) = (u(), u(), u(), u(), u(), u());
    if i >= 6000 {
        vd += 0.5;
    }
    let mut y = price > 0.5;
    if i >= 3000 {
        y = !y;
    }
    format!(
        "{period},{price},{demand},{vp},{vd},{transfer},{}",
        u8::from(y)
    )
}

#[test]
fn the_loop_reports_a_concept_change_and_a_covariate_shift_where_they_happen() {
    let d = tempfile::tempdir().unwrap();
    let config = write_config(d.path(), false, "");
    let mut s = 42u64;
    let rows: Vec<String> = (0..9000).map(|i| row(i, &mut s)).collect();
    let header = "period,nswprice,nswdemand,vicprice,vicdemand,transfer,class";
    write_span(&d.path().join("in"), "s.csv", header, &rows);
    let windows = train_windows(d.path(), &config, &d.path().join("in/s.csv"), 1000, &[]);
    assert_eq!(windows.len(), 9);
    for (w, r) in windows.iter().enumerate() {
        let d = &r["drift"];
        println!(
            "window {w}: progressive logloss {:.3}, loss change {}, drifted {:?}, psi vicdemand {:.3}",
            r["progressive"]["logloss"].as_f64().unwrap(),
            d["loss_change"],
            d["drifted_fields"],
            d["psi"]["vicdemand"].as_f64().unwrap_or(0.0)
        );
    }
    let loss_changes: Vec<usize> = (0..9)
        .filter(|&w| windows[w]["drift"]["loss_change"] == true)
        .collect();
    // The concept flips in window 3 (rows 3000..): found there, and nowhere else (the loss
    // falling while the model learns, before and after, is not drift).
    assert_eq!(
        loss_changes,
        [3],
        "loss changes in windows {loss_changes:?}"
    );
    let drifted = |w: usize| -> Vec<String> {
        windows[w]["drift"]["drifted_fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_string())
            .collect()
    };
    for w in 0..9 {
        let want: Vec<String> = if w == 6 {
            vec!["vicdemand".into()]
        } else {
            vec![]
        };
        assert_eq!(drifted(w), want, "window {w}");
    }
}
