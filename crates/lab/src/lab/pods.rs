//! Pods: network configurations, CNI calls, pods added and deleted, and
//! conflists run the way libcni runs them.

use super::*;

impl Lab {
    /// The network configuration a runtime on node 1 would hand weft-cni.
    pub fn net_conf(&self, cni_version: &str) -> serde_json::Value {
        self.net_conf_on(0, cni_version)
    }

    /// The network configuration a runtime on node `i` would hand weft-cni.
    /// Panics when the lab has no node `i`.
    pub fn net_conf_on(&self, i: usize, cni_version: &str) -> serde_json::Value {
        let n = &self.nodes[i];
        serde_json::json!({
            "cniVersion": cni_version,
            "name": NETWORK,
            "type": "weft-cni",
            "agentSocket": n.socket,
            "spoolDir": n.spool_dir(),
        })
    }

    /// Runs one CNI verb of weft-cni on node 1 for `pod` as a runtime would.
    pub fn cni(
        &self,
        command: &str,
        container_id: &str,
        netns: &str,
        pod_name: &str,
        conf: &serde_json::Value,
    ) -> anyhow::Result<CniOutcome> {
        self.cni_on(0, command, container_id, netns, pod_name, conf)
    }

    /// Runs one CNI verb of weft-cni on node `i` (in its namespace).
    pub fn cni_on(
        &self,
        i: usize,
        command: &str,
        container_id: &str,
        netns: &str,
        pod_name: &str,
        conf: &serde_json::Value,
    ) -> anyhow::Result<CniOutcome> {
        cni_exec(
            &self.cni_plugin(),
            &self.bin_dir,
            &self.node(i)?.netns,
            command,
            container_id,
            netns,
            "eth0",
            &format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod_name}"),
            &serde_json::to_vec(conf)?,
        )
    }

    /// Creates a pod namespace on node 1 and ADDs it through weft-cni.
    pub fn add_pod(&mut self, name: &str) -> anyhow::Result<Pod> {
        self.add_pod_on(name, 0)
    }

    /// Creates a pod namespace and ADDs it through node `node`'s weft-cni.
    pub fn add_pod_on(&mut self, name: &str, node: usize) -> anyhow::Result<Pod> {
        check_pod_name(name)?;
        self.node(node)?;
        if self.pods.iter().any(|p| p.name == name) {
            bail!("pod {name} exists already in lab {}", self.name);
        }
        let ns = format!("{}-{name}", self.name);
        ip(&["netns", "add", &ns])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        let netns = netns_path(&ns);
        let container_id = format!("{}-{name}", self.name);
        let out = self.cni_on(
            node,
            "ADD",
            &container_id,
            &netns.to_string_lossy(),
            name,
            &self.net_conf_on(node, "1.0.0"),
        );
        let out = match out {
            Ok(o) if o.success => o,
            Ok(o) => {
                let _ = ip(&["netns", "del", &ns]);
                bail!(
                    "weft-cni ADD for pod {name} failed: {}{}",
                    o.stdout.trim(),
                    o.stderr.trim()
                );
            }
            Err(e) => {
                let _ = ip(&["netns", "del", &ns]);
                return Err(e);
            }
        };
        let result = out.json()?;
        let ips = result["ips"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|ip| ip["address"].as_str())
                    .filter_map(|s| s.split('/').next()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let pod = Pod {
            name: name.to_string(),
            netns,
            container_id,
            ips,
            node,
        };
        self.pods.push(pod.clone());
        self.save()?;
        Ok(pod)
    }

    /// DELs a pod through its node's weft-cni and removes its namespace.
    pub fn del_pod(&mut self, name: &str) -> anyhow::Result<()> {
        let Some(i) = self.pods.iter().position(|p| p.name == name) else {
            bail!("no pod {name} in lab {}", self.name);
        };
        let pod = self.pods[i].clone();
        let out = self.cni_on(
            pod.node,
            "DEL",
            &pod.container_id,
            &pod.netns.to_string_lossy(),
            name,
            &self.net_conf_on(pod.node, "1.0.0"),
        )?;
        if !out.success {
            bail!("weft-cni DEL for pod {name} failed: {}", out.stdout.trim());
        }
        let _ = ip(&["netns", "del", &format!("{}-{name}", self.name)]);
        self.pods.remove(i);
        self.save()
    }

    /// Runs a plugin chain the way libcni runs a conflist: ADD goes through
    /// the plugins in order, each given the previous result as `prevResult`
    /// and the `runtimeConfig` of the capabilities it declares; DEL goes in
    /// reverse with the chain's final result. Returns the final ADD result
    /// (`Value::Null` for DEL). Plugins other than weft-cni come from
    /// `/usr/lib/cni` (the reference plugins).
    #[expect(
        clippy::too_many_arguments,
        reason = "mirrors the CNI call: verb, ids, netns, config, runtime config, cached result"
    )]
    pub fn run_chain(
        &self,
        command: &str,
        container_id: &str,
        netns: &str,
        pod_name: &str,
        conflist: &serde_json::Value,
        runtime_config: &serde_json::Value,
        prev_result: Option<&serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let plugins = conflist["plugins"]
            .as_array()
            .context("conflist has no plugins array")?;
        let order: Vec<&serde_json::Value> = if command == "DEL" {
            plugins.iter().rev().collect()
        } else {
            plugins.iter().collect()
        };
        let mut prev = prev_result.cloned();
        let cni_path = format!("{}:{}", self.bin_dir.display(), crate::REFERENCE_PLUGINS);
        for plugin in order {
            let mut conf = plugin.clone();
            conf["name"] = conflist["name"].clone();
            conf["cniVersion"] = conflist["cniVersion"].clone();
            if let Some(caps) = plugin["capabilities"].as_object() {
                let mut rc = serde_json::Map::new();
                for (cap, on) in caps {
                    if on == true {
                        if let Some(v) = runtime_config.get(cap) {
                            rc.insert(cap.clone(), v.clone());
                        }
                    }
                }
                if !rc.is_empty() {
                    conf["runtimeConfig"] = serde_json::Value::Object(rc);
                }
            }
            if let Some(p) = &prev {
                conf["prevResult"] = p.clone();
            }
            let kind = conf["type"]
                .as_str()
                .context("plugin without type")?
                .to_string();
            let binary = if kind == "weft-cni" {
                self.cni_plugin()
            } else {
                Path::new(crate::REFERENCE_PLUGINS).join(&kind)
            };
            let out = cni_exec(
                &binary,
                Path::new(&cni_path),
                &self.node_netns,
                command,
                container_id,
                netns,
                "eth0",
                &format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod_name}"),
                &serde_json::to_vec(&conf)?,
            )?;
            if !out.success {
                bail!(
                    "{kind} {command} failed: {}{}",
                    out.stdout.trim(),
                    out.stderr.trim()
                );
            }
            if command == "ADD" {
                prev = Some(out.json()?);
            }
        }
        Ok(if command == "ADD" {
            prev.unwrap_or_default()
        } else {
            serde_json::Value::Null
        })
    }
}
