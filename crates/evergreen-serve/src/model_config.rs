//! TensorFlow Serving's `--model_config_file`: a text-format `ModelServerConfig` listing the
//! models to serve, each with its base path, version policy (latest N, all, specific) and
//! version labels. Parsed with the descriptors of evergreen's own declaration
//! (`proto/tensorflow_serving/config/model_server_config.proto`).

use crate::grpc::pb::tensorflow::serving as tfs;
use crate::{ModelSource, VersionPolicy};
use prost_reflect::{DescriptorPool, DynamicMessage};
use std::path::Path;

pub(crate) const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));

/// Parses a text-format `ModelServerConfig`; relative base paths are taken from `dir` (the
/// config file's directory). Errors name the problem (and for syntax errors, line and column).
pub fn parse_model_config(text: &str, dir: &Path) -> Result<Vec<ModelSource>, String> {
    let pool = DescriptorPool::decode(DESCRIPTORS).map_err(|e| e.to_string())?;
    let desc = pool
        .get_message_by_name("tensorflow.serving.ModelServerConfig")
        .ok_or("ModelServerConfig descriptor missing")?;
    let msg = DynamicMessage::parse_text_format(desc, text).map_err(|e| e.to_string())?;
    let config: tfs::ModelServerConfig = msg.transcode_to().map_err(|e| e.to_string())?;
    let list = match config.config {
        Some(tfs::model_server_config::Config::ModelConfigList(l)) => l.config,
        None => return Err("no model_config_list: the config serves no model".into()),
    };
    if list.is_empty() {
        return Err("model_config_list has no config: the config serves no model".into());
    }
    let mut out: Vec<ModelSource> = Vec::with_capacity(list.len());
    for c in list {
        if c.name.is_empty()
            || !c
                .name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "_-.".contains(ch))
            || c.name.starts_with('.')
        {
            return Err(format!(
                "model name {:?}: use letters, digits, '_', '-' and '.' (not first)",
                c.name
            ));
        }
        if out.iter().any(|m| m.name == c.name) {
            return Err(format!("model {:?} is listed twice", c.name));
        }
        if c.base_path.is_empty() {
            return Err(format!("model {:?}: base_path is required", c.name));
        }
        if !c.model_platform.is_empty() && c.model_platform != "tensorflow" {
            return Err(format!(
                "model {:?}: model_platform {:?} is not served (evergreen serves its own \
                 registry layout, as platform \"tensorflow\" or unset)",
                c.name, c.model_platform
            ));
        }
        use tfs::file_system_storage_path_source_config::servable_version_policy::PolicyChoice;
        let policy = match c.model_version_policy.and_then(|p| p.policy_choice) {
            None => None,
            Some(PolicyChoice::Latest(l)) => {
                Some(VersionPolicy::Latest(l.num_versions.max(1) as usize))
            }
            Some(PolicyChoice::All(_)) => Some(VersionPolicy::All),
            Some(PolicyChoice::Specific(s)) => {
                let mut vs = Vec::with_capacity(s.versions.len());
                for v in s.versions {
                    vs.push(u64::try_from(v).ok().filter(|v| *v > 0).ok_or_else(|| {
                        format!(
                            "model {:?}: version {v} in specific is not a version",
                            c.name
                        )
                    })?);
                }
                if vs.is_empty() {
                    return Err(format!("model {:?}: specific lists no version", c.name));
                }
                Some(VersionPolicy::Specific(vs))
            }
        };
        let mut labels = std::collections::BTreeMap::new();
        for (label, v) in c.version_labels {
            if label.is_empty()
                || !label
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
            {
                return Err(format!(
                    "model {:?}: label {label:?} must match [a-zA-Z0-9_]+",
                    c.name
                ));
            }
            let v = u64::try_from(v)
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| format!("model {:?}: label {label:?} names version {v}", c.name))?;
            labels.insert(label, v);
        }
        let base = Path::new(&c.base_path);
        out.push(ModelSource {
            name: c.name,
            base_path: if base.is_absolute() {
                base.to_path_buf()
            } else {
                dir.join(base)
            },
            policy,
            labels,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tf_servings_documented_config() {
        let text = r#"
model_config_list {
  config {
    name: 'my_model'
    base_path: '/models/my_model'
    model_platform: 'tensorflow'
    model_version_policy { specific { versions: 42 versions: 43 } }
    version_labels { key: 'stable' value: 42 }
    version_labels { key: 'canary' value: 43 }
  }
  config {
    name: "other"
    base_path: "rel/other"
    model_version_policy { all {} }
  }
  config {
    name: "third"
    base_path: "/x"
    model_version_policy { latest { num_versions: 2 } }
  }
}
"#;
        let m = parse_model_config(text, Path::new("/etc/ev")).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].name, "my_model");
        assert_eq!(m[0].policy, Some(VersionPolicy::Specific(vec![42, 43])));
        assert_eq!(m[0].labels["canary"], 43);
        assert_eq!(m[1].base_path, Path::new("/etc/ev/rel/other"));
        assert_eq!(m[1].policy, Some(VersionPolicy::All));
        assert_eq!(m[2].policy, Some(VersionPolicy::Latest(2)));
    }

    #[test]
    fn bad_configs_are_refused_with_a_reason() {
        let bad = |t: &str| parse_model_config(t, Path::new("/")).unwrap_err();
        assert!(bad("model_config_list { config { name: 'a' } }").contains("base_path"));
        assert!(
            bad("model_config_list { config { name: '../x' base_path: '/b' } }")
                .contains("model name")
        );
        assert!(bad("model_config_list { config { name: 'a' base_path: '/b' } config { name: 'a' base_path: '/c' } }").contains("twice"));
        assert!(bad("model_config_list { config { name: 'a' base_path: '/b' version_labels { key: 'x-y' value: 1 } } }").contains("label"));
        assert!(
            bad("model_config_list { config { name: 'a' base_path: '/b' logging_config {} } }")
                .contains("logging_config")
        );
        assert!(bad("model_config_list { config { name: 'a' base_path: '/b' model_platform: 'pytorch' } }").contains("platform"));
        assert!(!bad("model_config_list {").is_empty());
        assert!(bad("").contains("no model"));
        assert!(bad("model_config_list { config { name: 'a' base_path: '/b' model_version_policy { specific { versions: -1 } } } }").contains("not a version"));
    }
}
