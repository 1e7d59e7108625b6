//! The alert rules (`deploy/prometheus/alerts.yml`) and the Grafana dashboard
//! (`deploy/grafana/evergreen.json`) against the real other side and against our metrics:
//! `promtool check rules` validates the rules and `promtool test rules` runs their unit tests
//! (`alerts_test.yml`: each alert fires, with its labels and rendered annotations, exactly when
//! it should); `promtool check metrics` lints what `/metrics` exports; and every metric a rule
//! or a panel queries must be one evergreen exports (documented in `docs/metrics.md`).
//!
//! promtool comes from Debian's `prometheus` package (`.ci/run` installs it). Without it the
//! promtool checks print why and pass, unless `EVERGREEN_REQUIRE_INTEROP=1`.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn promtool() -> Option<PathBuf> {
    let required = std::env::var("EVERGREEN_REQUIRE_INTEROP").is_ok_and(|v| v == "1");
    match Command::new("promtool").arg("--version").output() {
        Ok(out) if out.status.success() => Some(PathBuf::from("promtool")),
        other => {
            let reason = match other {
                Ok(out) => format!("promtool --version failed: {out:?}"),
                Err(e) => format!("promtool not found ({e}; apt-get install prometheus)"),
            };
            assert!(!required, "EVERGREEN_REQUIRE_INTEROP=1 but {reason}");
            println!("SKIPPED: {reason} (set EVERGREEN_REQUIRE_INTEROP=1 to make this a failure)");
            None
        }
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// The metric names of `docs/metrics.md`'s table.
fn documented() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(root().join("docs/metrics.md")).unwrap();
    doc.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|n| n.starts_with("evergreen_"))
        .map(str::to_string)
        .collect()
}

/// The `evergreen_*` metric names in `text`, with the series suffixes of histograms removed.
fn queried(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("evergreen_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &text[start..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        // (`evergreen_.*` in a regex selects them all: not a name.)
        if base.len() > "evergreen_".len() {
            names.insert(base.to_string());
        }
        i = end;
    }
    names
}

#[test]
fn every_metric_the_rules_and_the_dashboard_query_is_exported() {
    let known = documented();
    assert!(known.len() >= 30, "{known:?}");
    for file in [
        "deploy/prometheus/alerts.yml",
        "deploy/grafana/evergreen.json",
    ] {
        let mut text = std::fs::read_to_string(root().join(file)).unwrap();
        if file.ends_with(".yml") {
            // Only the expressions (a label such as `evergreen_action` is not a metric).
            text = text
                .split("expr:")
                .skip(1)
                .map(|part| part.split("labels:").next().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n");
        }
        let used = queried(&text);
        assert!(used.len() > 8, "{file}: {used:?}");
        let unknown: Vec<_> = used.difference(&known).collect();
        assert!(
            unknown.is_empty(),
            "{file} queries unknown metrics {unknown:?}"
        );
    }
}

#[test]
fn the_grafana_dashboard_is_well_formed() {
    let text = std::fs::read_to_string(root().join("deploy/grafana/evergreen.json")).unwrap();
    let d: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(d["uid"], "evergreen-loop");
    let panels = d["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    let mut titles = Vec::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate id: {p}");
        let g = &p["gridPos"];
        assert!(
            g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
            "{p}"
        );
        if p["type"] == "row" {
            titles.push(p["title"].as_str().unwrap().to_string());
            continue;
        }
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{p}");
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            assert!(
                expr.contains("$model"),
                "panel filters by the model variable: {expr}"
            );
        }
    }
    assert_eq!(titles, ["Training loop", "Serving"]);
}

#[test]
fn promtool_validates_and_unit_tests_the_alert_rules() {
    let Some(promtool) = promtool() else {
        return;
    };
    let dir = root().join("deploy/prometheus");
    let checked = run(Command::new(&promtool)
        .args(["check", "rules"])
        .arg(dir.join("alerts.yml")));
    assert!(checked.contains("SUCCESS: 14 rules found"), "{checked}");
    let tested = run(Command::new(&promtool)
        .args(["test", "rules"])
        .arg(dir.join("alerts_test.yml")));
    assert!(tested.contains("SUCCESS"), "{tested}");
    println!("{checked}{tested}");
}

#[test]
fn promtool_accepts_the_exported_metrics() {
    let Some(promtool) = promtool() else {
        return;
    };
    // Every family with a series, as a running instance exports them.
    let m = evergreen_metrics::Metrics::new();
    let ml = evergreen_metrics::Metrics::model("m");
    m.cycles
        .get_or_create(&evergreen_metrics::Metrics::outcome("m", "published"))
        .inc();
    m.cycle_duration.get_or_create(&ml).observe(1.5);
    m.stage_seconds
        .get_or_create(&evergreen_metrics::StageLabels {
            model: "m".into(),
            stage: "train".into(),
        })
        .inc_by(1.0);
    m.utilization.get_or_create(&ml).set(0.7);
    m.request_duration
        .get_or_create(&evergreen_metrics::ApiLabels {
            model: "m".into(),
            api: "predict".into(),
        })
        .observe(0.001);
    m.gradient_mean_abs
        .get_or_create(&evergreen_metrics::GroupLabels {
            model: "m".into(),
            group: "layer_0/kernel".into(),
        })
        .set(0.01);
    let text = m.render();
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // promtool lints Prometheus' text format, where a counter's HELP names the series
    // (`x_total`); OpenMetrics (what /metrics serves, and what Prometheus asks for) names the
    // family (`x`). That one difference is expected; any other finding fails.
    let problems: Vec<&str> = said
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| {
            let family_help = l
                .strip_suffix("_total no help text")
                .is_some_and(|family| text.contains(&format!("# HELP {family} ")));
            !family_help
        })
        .collect();
    assert!(
        problems.is_empty(),
        "promtool check metrics:\n{said}\n--- input:\n{text}"
    );
    assert!(
        out.status.success() || !said.is_empty(),
        "promtool failed without saying why"
    );
}
