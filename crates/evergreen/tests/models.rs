//! `evergreen models` (list, rollback, split, promote, pin) on a trained registry, and `evergreen
//! serve` with the admin API: token required, actions effective at once, recorded in lineage.

mod common;

use common::*;
use evergreen_lineage::LineageStore;
use std::path::Path;

/// Trains three versions (three 300-row Elec2 spans, lenient gate) under `root`.
fn trained(root: &Path) -> std::path::PathBuf {
    let config = write_config(root, false, "");
    let (header, rows) = elec2();
    for (i, chunk) in rows.chunks(300).take(3).enumerate() {
        write_span(&root.join("in"), &format!("s{i}.csv"), &header, chunk);
    }
    let mut p = Proc::spawn(
        &["run", "--config", config.to_str().unwrap(), "--once"],
        &[],
    );
    assert!(p.wait_exit().success(), "{:?}", p.seen_err);
    config
}

fn models(config: &Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(bin())
        .args(["models", "--config", config.to_str().unwrap()])
        .args(args)
        .env("USER", "tester")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn models_cli_lists_and_acts_and_records_lineage() {
    let d = tempfile::tempdir().unwrap();
    let config = trained(d.path());
    let (ok, out, err) = models(&config, &["list"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("v3") && out.contains("unversioned requests: newest (v3)"),
        "{out}"
    );

    let (ok, out, err) = models(&config, &["rollback", "--reason", "v3 regressed"]);
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        "rollback: stable rolled back from version 3 to 2"
    );
    let (ok, out, err) = models(&config, &["split", "--canary", "3", "--percent", "25"]);
    assert!(ok, "{err}");
    assert!(out.contains("25% of keys to canary version 3"), "{out}");
    let (ok, out, _) = models(&config, &["--json", "list"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["labels"]["canary"], 3);
    assert_eq!(v["labels"]["stable"], 2);
    assert_eq!(v["traffic"]["canary_percent"], 25.0);
    let (ok, out, err) = models(&config, &["promote", "--actor", "bob"]);
    assert!(ok, "{err}");
    assert!(out.contains("stable is now version 3"), "{out}");
    // Refusals: a missing version, a share out of range; nothing recorded for them.
    let (ok, _, err) = models(&config, &["pin", "9"]);
    assert!(!ok && err.contains("version 9"), "{err}");
    let (ok, _, err) = models(&config, &["split", "--canary", "2", "--percent", "150"]);
    assert!(!ok && err.contains("between 0 and 100"), "{err}");

    let store = LineageStore::open(&d.path().join("state/lineage.sqlite")).unwrap();
    let actions = store.admin_actions("m").unwrap();
    let seen: Vec<(&str, &str, &str)> = actions
        .iter()
        .map(|a| (a.action.as_str(), a.actor.as_str(), a.reason.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("rollback", "tester", "v3 regressed"),
            ("split", "tester", ""),
            ("promote", "bob", ""),
        ]
    );
}

#[test]
fn serve_admin_api_with_a_token_file() {
    let d = tempfile::tempdir().unwrap();
    trained(d.path());
    let token_file = d.path().join("token");
    std::fs::write(&token_file, "  s3cret-token-for-tests-123\n").unwrap();
    let base = d.path().join("models/m");
    let lineage = d.path().join("admin/lineage.sqlite");
    let args = |token: &Path| {
        vec![
            "serve".to_string(),
            "--rest_api_port=0".into(),
            "--model_name=m".into(),
            format!("--model_base_path={}", base.display()),
            format!("--admin_token_file={}", token.display()),
            format!("--lineage_db={}", lineage.display()),
            "--port=0".into(),
        ]
    };
    // A weak token is refused at start.
    let weak = d.path().join("weak");
    std::fs::write(&weak, "short").unwrap();
    let a = args(&weak);
    let mut p = Proc::spawn(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert!(!p.wait_exit().success());
    assert!(
        p.seen_err
            .iter()
            .any(|l| l.contains("at least 16 characters")),
        "{:?}",
        p.seen_err
    );

    let a = args(&token_file);
    let mut s = Proc::spawn(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    let url = s.rest_addr();
    assert!(
        s.seen_out.iter().any(|l| l.starts_with("serving gRPC")),
        "{:?}",
        s.seen_out
    );
    let client = reqwest::blocking::Client::new();
    let version = |c: &reqwest::blocking::Client| {
        let r = c
            .post(format!("{url}/v1/models/m:predict"))
            .body(r#"{"instances": [{"nswprice": 0.05, "nswdemand": 0.4, "vicprice": 0.003, "vicdemand": 0.4, "transfer": 0.4, "period": 0.5}]}"#)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        r.headers()["x-evergreen-model-version"]
            .to_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(version(&client), "3");
    let rollback = |token: &str| {
        client
            .post(format!("{url}/admin/v1/models/m:rollback"))
            .bearer_auth(token)
            .json(&serde_json::json!({"reason": "test"}))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(rollback("s3cret-token-for-tests-124"), 401);
    assert_eq!(version(&client), "3");
    assert_eq!(rollback("s3cret-token-for-tests-123"), 200);
    assert_eq!(version(&client), "2", "effective at once");
    let store = LineageStore::open(&lineage).unwrap();
    let actions = store.admin_actions("m").unwrap();
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].action, "rollback");
    assert_eq!(actions[0].reason, "test");
}

#[test]
fn serve_reads_a_tf_serving_model_config_file() {
    let d = tempfile::tempdir().unwrap();
    trained(d.path());
    let config = d.path().join("models.config");
    std::fs::write(
        &config,
        "model_config_list {\n  config {\n    name: 'elec'\n    base_path: 'models/m'\n    \
         model_platform: 'tensorflow'\n    model_version_policy { specific { versions: 1 versions: 2 } }\n    \
         version_labels { key: 'stable' value: 1 }\n  }\n}\n",
    )
    .unwrap();
    let arg = format!("--model_config_file={}", config.display());
    let mut s = Proc::spawn(&["serve", "--rest_api_port=0", &arg], &[]);
    let url = s.rest_addr();
    let status: serde_json::Value = reqwest::blocking::get(format!("{url}/v1/models/elec"))
        .unwrap()
        .json()
        .unwrap();
    let versions: Vec<&str> = status["model_version_status"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["2", "1"], "{status}");
    let label: serde_json::Value =
        reqwest::blocking::get(format!("{url}/v1/models/elec/labels/stable"))
            .unwrap()
            .json()
            .unwrap();
    assert_eq!(label["model_version_status"][0]["version"], "1");
    // A config that cannot be used stops the server at start with the reason.
    std::fs::write(&config, "model_config_list { config { name: 'x' } }").unwrap();
    let mut p = Proc::spawn(&["serve", "--rest_api_port=0", &arg], &[]);
    assert!(!p.wait_exit().success());
    assert!(
        p.seen_err
            .iter()
            .any(|l| l.contains("base_path is required")),
        "{:?}",
        p.seen_err
    );
}

#[test]
fn serve_batches_requests_with_tf_servings_flags() {
    let d = tempfile::tempdir().unwrap();
    trained(d.path());
    let params = d.path().join("batching.txt");
    std::fs::write(
        &params,
        "max_batch_size { value: 64 }\nbatch_timeout_micros { value: 0 }\n\
         max_enqueued_batches { value: 100 }\nnum_batch_threads { value: 1 }\n",
    )
    .unwrap();
    let base = format!("--model_base_path={}", d.path().join("models/m").display());
    let file = format!("--batching_parameters_file={}", params.display());
    let mut s = Proc::spawn(
        &[
            "serve",
            "--rest_api_port=0",
            "--model_name=elec",
            &base,
            "--enable_batching=true",
            &file,
        ],
        &[],
    );
    let url = s.rest_addr();
    let body =
        r#"{"instances": [{"nswprice": 0.05, "period": 0.2}, {"nswprice": 0.07, "period": 0.6}]}"#;
    let r = reqwest::blocking::Client::new()
        .post(format!("{url}/v1/models/elec:predict"))
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let answer: serde_json::Value = r.json().unwrap();
    assert_eq!(
        answer["predictions"].as_array().unwrap().len(),
        2,
        "{answer}"
    );
    let metrics = reqwest::blocking::get(format!("{url}/metrics"))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("evergreen_serving_batch_size_sum{model=\"elec\"} 2.0"),
        "{metrics}"
    );
    // Parameters that do not parse stop the server at start with the reason.
    std::fs::write(&params, "max_batch_size { value: 0 }").unwrap();
    let mut p = Proc::spawn(
        &[
            "serve",
            "--rest_api_port=0",
            "--model_name=elec",
            &base,
            "--enable_batching",
            &file,
        ],
        &[],
    );
    assert!(!p.wait_exit().success());
    assert!(
        p.seen_err
            .iter()
            .any(|l| l.contains("max_batch_size must be")),
        "{:?}",
        p.seen_err
    );
}

#[test]
fn serve_applies_a_changed_model_config_file() {
    let d = tempfile::tempdir().unwrap();
    trained(d.path());
    let config = d.path().join("models.config");
    let entry = |name: &str| {
        format!(
            "  config {{ name: '{name}' base_path: 'models/m' model_platform: 'tensorflow' }}\n"
        )
    };
    std::fs::write(
        &config,
        format!("model_config_list {{\n{}}}\n", entry("elec")),
    )
    .unwrap();
    let arg = format!("--model_config_file={}", config.display());
    let mut s = Proc::spawn(
        &[
            "serve",
            "--rest_api_port=0",
            &arg,
            "--model_config_file_poll_wait_seconds=1",
        ],
        &[],
    );
    let url = s.rest_addr();
    let code = |model: &str| {
        reqwest::blocking::get(format!("{url}/v1/models/{model}"))
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(code("elec"), 200);
    assert_eq!(code("second"), 404);
    // A model added to the file is served at the next poll, the others keep serving.
    std::fs::write(
        &config,
        format!(
            "model_config_list {{\n{}{}}}\n",
            entry("elec"),
            entry("second")
        ),
    )
    .unwrap();
    eventually("the added model is served", || {
        (code("second") == 200).then_some(())
    });
    assert_eq!(code("elec"), 200);
    // A file that does not parse changes nothing, and says why.
    std::fs::write(&config, "model_config_list { config { name: 'x' } }").unwrap();
    s.wait_err("the refused config", |l| {
        l.contains("model config not applied")
    });
    assert_eq!((code("elec"), code("second")), (200, 200));
    // A model removed from the file stops being served.
    std::fs::write(
        &config,
        format!("model_config_list {{\n{}}}\n", entry("second")),
    )
    .unwrap();
    eventually("the removed model is gone", || {
        (code("elec") == 404).then_some(())
    });
    assert_eq!(code("second"), 200);
}
