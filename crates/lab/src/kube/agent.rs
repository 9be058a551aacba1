//! weftd as the lab cluster's node agent: once the API server is up, every
//! node's weftd is restarted with a kubeconfig holding the token of the
//! ServiceAccount that `deploy/kubernetes/` binds (its RBAC applied from
//! the same files the DaemonSet install uses), never an admin identity. So
//! `weft endpoints` in a lab cluster shows each pod's namespace and labels,
//! and every lab cluster runs weftd under exactly the rights it ships with.

use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::lab::Lab;

/// deploy/kubernetes's RBAC, in apply order.
const RBAC: [(&str, &str); 5] = [
    (
        "namespace.yaml",
        include_str!("../../../../deploy/kubernetes/namespace.yaml"),
    ),
    (
        "serviceaccount.yaml",
        include_str!("../../../../deploy/kubernetes/serviceaccount.yaml"),
    ),
    (
        "clusterrole.yaml",
        include_str!("../../../../deploy/kubernetes/clusterrole.yaml"),
    ),
    (
        "clusterrolebinding.yaml",
        include_str!("../../../../deploy/kubernetes/clusterrolebinding.yaml"),
    ),
    (
        "flow-reader-clusterrole.yaml",
        include_str!("../../../../deploy/kubernetes/flow-reader-clusterrole.yaml"),
    ),
];
/// The store's CRDs and RBAC (`--store kubernetes`), applied after [`RBAC`].
const STORE: [(&str, &str); 7] = [
    (
        "crds/store/weftstores.yaml",
        include_str!("../../../../deploy/kubernetes/crds/store/weftstores.yaml"),
    ),
    (
        "crds/store/ippools.yaml",
        include_str!("../../../../deploy/kubernetes/crds/store/ippools.yaml"),
    ),
    (
        "crds/store/ipamblocks.yaml",
        include_str!("../../../../deploy/kubernetes/crds/store/ipamblocks.yaml"),
    ),
    (
        "crds/store/weftnodes.yaml",
        include_str!("../../../../deploy/kubernetes/crds/store/weftnodes.yaml"),
    ),
    (
        "crds/store/securityidentities.yaml",
        include_str!("../../../../deploy/kubernetes/crds/store/securityidentities.yaml"),
    ),
    (
        "crds/store/weftrecords.yaml",
        include_str!("../../../../deploy/kubernetes/crds/store/weftrecords.yaml"),
    ),
    (
        "crds/store/rbac.yaml",
        include_str!("../../../../deploy/kubernetes/crds/store/rbac.yaml"),
    ),
];
/// The store's CRDs, to wait for.
const STORE_CRDS: [&str; 6] = [
    "crd/weftstores.weft.dev",
    "crd/ippools.weft.dev",
    "crd/ipamblocks.weft.dev",
    "crd/weftnodes.weft.dev",
    "crd/securityidentities.weft.dev",
    "crd/weftrecords.weft.dev",
];
/// Long enough for any lab's life; the API server may cap it.
const TOKEN_DURATION: &str = "720h";
/// The kubeconfig's name under `<lab>/kube/`.
pub const WEFTD_KUBECONFIG: &str = "weftd-sa";

impl Lab {
    /// Makes the next [`Lab::connect_weftd_to_kubernetes`] also move
    /// every weftd's cluster state into the API server: applies the store's
    /// CRD and RBAC and adds `--store kubernetes` (with the lab's routing,
    /// underlay and node addresses) to the weftds' flags. Call before any
    /// pod exists: the embedded stores' allocations are not carried over.
    pub fn use_kubernetes_store(&mut self) -> anyhow::Result<()> {
        let admin = self.kube_required()?.admin_kubeconfig.clone();
        for (file, text) in RBAC[..1].iter().chain(&STORE) {
            let out = self.kubectl_as(&admin, &["apply", "-f", "-"], Some(text.as_bytes()))?;
            if !out.status.success() {
                bail!(
                    "applying deploy/kubernetes/{file}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        let mut wait = vec!["wait", "--for=condition=established", "--timeout=60s"];
        wait.extend(STORE_CRDS);
        let out = self.kubectl(&wait)?;
        if !out.status.success() {
            bail!(
                "the store's CRDs are not served: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        self.weftd_args.extend([
            "--store".to_string(),
            "kubernetes".into(),
            "--routing".into(),
            self.routing.clone(),
            "--underlay-iface".into(),
            "ul0".into(),
        ]);
        self.kube_store = true;
        self.shared_store = false;
        self.save()
    }

    /// Undoes [`Lab::use_kubernetes_store`]: the weftds' next start is on
    /// the lab's etcd again (a lab with etcd members).
    pub fn leave_kubernetes_store(&mut self) -> anyhow::Result<()> {
        let mut kept = Vec::new();
        let mut args = std::mem::take(&mut self.weftd_args).into_iter();
        while let Some(a) = args.next() {
            if ["--store", "--routing", "--underlay-iface"].contains(&a.as_str()) {
                args.next();
            } else {
                kept.push(a);
            }
        }
        self.weftd_args = kept;
        self.kube_store = false;
        self.shared_store = !self.etcd_endpoints().is_empty();
        self.save()
    }

    /// Applies weft's RBAC, makes a token of its ServiceAccount (the
    /// TokenRequest API, as `kubectl create token`), and restarts every
    /// node's weftd with it (`--kubeconfig`); pods keep their network
    /// through the restart. Returns the kubeconfig's path.
    pub fn connect_weftd_to_kubernetes(&mut self) -> anyhow::Result<PathBuf> {
        let admin = self.kube_required()?.admin_kubeconfig.clone();
        for (file, text) in RBAC {
            let out = self.kubectl_as(&admin, &["apply", "-f", "-"], Some(text.as_bytes()))?;
            if !out.status.success() {
                bail!(
                    "applying deploy/kubernetes/{file}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        let out = self.kubectl(&[
            "-n",
            "weft-system",
            "create",
            "token",
            "weft",
            &format!("--duration={TOKEN_DURATION}"),
        ])?;
        if !out.status.success() {
            bail!(
                "creating a token of weft-system/weft: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let token = String::from_utf8(out.stdout).context("the token is not text")?;
        let kubeconfig = self.write_token_kubeconfig(WEFTD_KUBECONFIG, token.trim())?;
        self.weftd_args
            .extend(["--kubeconfig".to_string(), kubeconfig.display().to_string()]);
        if self.service_proxy() == super::ServiceProxy::Weft {
            // each node's --cgroup-root comes with its own flags
            self.weftd_args.extend(["--services".into(), "on".into()]);
        }
        for i in 0..self.nodes().len() {
            self.stop_weftd_on(i)?;
            if let Err(e) = self.start_weftd_on(i) {
                // the lab goes away with its logs: keep the end of this one
                let log = std::fs::read_to_string(self.nodes()[i].log_path()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(8).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(e.context(format!("weftd's log ends:\n{}", tail.join("\n"))));
            }
        }
        self.save()?;
        Ok(kubeconfig)
    }
}
