//! A network configuration list run the way libcni runs it for containerd's
//! CRI: the conflist found first (by file name) in a CNI configuration
//! directory; ADD through the plugins in order, each given the previous
//! result as `prevResult` and the `runtimeConfig` of the capabilities it
//! declares; DEL in reverse with the cached ADD result. Unlike
//! [`crate::Lab::run_chain`] it runs in any node's namespace with any CNI_ARGS.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::cmd::cni_exec;

/// One CNI call of a whole list.
#[derive(Debug, Clone)]
pub struct ListCall<'a> {
    /// ADD, DEL or CHECK.
    pub command: &'a str,
    pub container_id: &'a str,
    /// The pod's netns path (CNI_NETNS).
    pub netns: &'a str,
    pub ifname: &'a str,
    /// CNI_ARGS, `K=V;K=V`.
    pub args: &'a str,
    /// Values for the capabilities plugins declare (`portMappings`, ...).
    pub runtime_config: &'a Value,
    /// The cached ADD result (for DEL and CHECK).
    pub prev_result: Option<&'a Value>,
}

/// The CNI_ARGS containerd's CRI passes for a pod sandbox.
pub fn cri_args(namespace: &str, pod: &str, sandbox_id: &str, uid: &str) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={pod};\
         K8S_POD_INFRA_CONTAINER_ID={sandbox_id};K8S_POD_UID={uid}"
    )
}

/// The network configuration libcni would load from `dir`: the first
/// `*.conflist` or `*.conf` / `*.json` by file name; a single `.conf` is
/// wrapped into a list of one.
pub fn load_conflist(dir: &Path) -> anyhow::Result<Value> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading CNI configuration directory {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "conflist" || x == "conf" || x == "json")
        })
        .collect();
    files.sort();
    let Some(first) = files.first() else {
        bail!(
            "no CNI configuration in {}; the lab writes one at `weft lab up`",
            dir.display()
        );
    };
    let conf: Value = serde_json::from_slice(&fs::read(first)?)
        .with_context(|| format!("parsing {}", first.display()))?;
    Ok(if conf.get("plugins").is_some() {
        conf
    } else {
        serde_json::json!({
            "cniVersion": conf["cniVersion"],
            "name": conf["name"],
            "plugins": [conf],
        })
    })
}

/// The configuration plugin `plugin` of `list` is handed on stdin.
pub fn plugin_conf(
    list: &Value,
    plugin: &Value,
    runtime_config: &Value,
    prev: Option<&Value>,
) -> Value {
    let mut conf = plugin.clone();
    conf["name"] = list["name"].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    if let Some(caps) = plugin["capabilities"].as_object() {
        let rc: serde_json::Map<String, Value> = caps
            .iter()
            .filter(|(_, on)| **on == true)
            .filter_map(|(cap, _)| Some((cap.clone(), runtime_config.get(cap)?.clone())))
            .collect();
        if !rc.is_empty() {
            conf["runtimeConfig"] = Value::Object(rc);
        }
    }
    if let Some(p) = prev {
        conf["prevResult"] = p.clone();
    }
    conf
}

/// Finds plugin `kind` in the CNI_PATH directories.
fn find_plugin(kind: &str, cni_path: &[PathBuf]) -> anyhow::Result<PathBuf> {
    cni_path
        .iter()
        .map(|d| d.join(kind))
        .find(|p| p.exists())
        .with_context(|| {
            format!(
                "CNI plugin {kind} not found in {}",
                cni_path
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":")
            )
        })
}

/// Runs `call` through every plugin of `list` inside `host_netns`; returns
/// the final ADD result (`Value::Null` for DEL and CHECK).
pub fn run_conflist(
    list: &Value,
    cni_path: &[PathBuf],
    host_netns: &Path,
    call: &ListCall<'_>,
) -> anyhow::Result<Value> {
    let plugins = list["plugins"]
        .as_array()
        .context("conflist has no plugins array")?;
    let order: Vec<&Value> = if call.command == "DEL" {
        plugins.iter().rev().collect()
    } else {
        plugins.iter().collect()
    };
    let path = std::env::join_paths(cni_path).context("CNI path")?;
    let mut prev = call.prev_result.cloned();
    for plugin in order {
        let conf = plugin_conf(list, plugin, call.runtime_config, prev.as_ref());
        let kind = conf["type"].as_str().context("plugin without type")?;
        let out = cni_exec(
            &find_plugin(kind, cni_path)?,
            Path::new(&path),
            host_netns,
            call.command,
            call.container_id,
            call.netns,
            call.ifname,
            call.args,
            &serde_json::to_vec(&conf)?,
        )?;
        if !out.success {
            bail!(
                "{kind} {} failed: {}{}",
                call.command,
                out.stdout.trim(),
                out.stderr.trim()
            );
        }
        if call.command == "ADD" {
            prev = Some(out.json()?);
        }
    }
    Ok(if call.command == "ADD" {
        prev.unwrap_or_default()
    } else {
        Value::Null
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cri_args_name_the_pod_as_containerd_does() {
        assert_eq!(
            cri_args("demo", "web-1", "abc", "u-1"),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=web-1;\
             K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1"
        );
    }

    #[test]
    fn each_plugin_gets_the_lists_name_its_capabilities_and_the_previous_result() {
        let list = json!({"cniVersion": "1.0.0", "name": "net", "plugins": [
            {"type": "weft-cni"},
            {"type": "portmap", "capabilities": {"portMappings": true, "bandwidth": false}}]});
        let rc = json!({"portMappings": [{"hostPort": 80}], "bandwidth": {"x": 1}});
        let first = plugin_conf(&list, &list["plugins"][0], &rc, None);
        assert_eq!(
            first,
            json!({"type": "weft-cni", "name": "net", "cniVersion": "1.0.0"})
        );
        let prev = json!({"ips": []});
        let second = plugin_conf(&list, &list["plugins"][1], &rc, Some(&prev));
        assert_eq!(
            second["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 80}]})
        );
        assert_eq!(second["prevResult"], prev);
    }

    #[test]
    fn the_first_file_by_name_wins_and_a_single_conf_becomes_a_list() {
        let dir = std::env::temp_dir().join(format!("weft-conflist-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("20-b.conflist"),
            r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"x"}]}"#,
        )
        .unwrap();
        fs::write(
            dir.join("10-a.conf"),
            r#"{"cniVersion":"1.0.0","name":"a","type":"weft-cni"}"#,
        )
        .unwrap();
        fs::write(dir.join("05-ignored.txt"), "{}").unwrap();
        let l = load_conflist(&dir);
        fs::remove_dir_all(&dir).unwrap();
        let l = l.unwrap();
        assert_eq!(l["name"], "a");
        assert_eq!(l["plugins"][0]["type"], "weft-cni");
    }
}
