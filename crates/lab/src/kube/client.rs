//! Clients of a lab cluster: kubectl as admin, as a node or as a service
//! account, always inside the lab's fabric namespace.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};

use anyhow::{bail, Context};

use super::{kubeconfig, pki, KubeCluster, PATH};
use crate::lab::Lab;

impl Lab {
    /// The lab's Kubernetes cluster, if it runs one.
    pub fn kube(&self) -> Option<&KubeCluster> {
        self.kube.as_ref()
    }

    pub(crate) fn kube_required(&self) -> anyhow::Result<&KubeCluster> {
        self.kube.as_ref().with_context(|| {
            format!(
                "lab {} runs no Kubernetes; build it with `weft lab up --kubernetes`",
                self.name
            )
        })
    }

    /// A kubectl command as `kubeconfig`'s user; run it in the fabric
    /// namespace (where the API server's address is).
    fn kubectl_command(&self, kubeconfig: &Path, args: &[&str]) -> anyhow::Result<Command> {
        let kube = self.kube_required()?;
        let mut cmd = Command::new(kube.kubectl_bin());
        // the discovery cache stays in the lab (not ~/.kube)
        cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--cache-dir={}", kube.dir.join("cache").display()))
            .args(args)
            .env("PATH", PATH)
            .env_remove("KUBECONFIG");
        Ok(cmd)
    }

    /// Runs kubectl as the lab's admin (`system:masters`); returns its output.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<Output> {
        let kube = self.kube_required()?;
        self.kubectl_as(&kube.admin_kubeconfig.clone(), args, None)
    }

    /// Runs kubectl with another identity's kubeconfig (a node's, a
    /// service account's), optionally feeding `stdin` (`apply -f -`).
    pub fn kubectl_as(
        &self,
        kubeconfig: &Path,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> anyhow::Result<Output> {
        let mut cmd = self.kubectl_command(kubeconfig, args)?;
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = weft_datapath::netns::spawn_in(&mut cmd, &self.fabric_netns)
            .context("running kubectl in the lab's fabric namespace")?;
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().context("kubectl stdin")?;
            // fed from a thread: kubectl may write before it has read it all
            let input = input.to_vec();
            std::thread::spawn(move || pipe.write_all(&input));
        }
        Ok(child.wait_with_output()?)
    }

    /// kubectl as admin with the caller's terminal (`weft lab kubectl`).
    pub fn kubectl_interactive(&self, args: &[&str]) -> anyhow::Result<ExitStatus> {
        let kube = self.kube_required()?;
        let mut cmd = self.kubectl_command(&kube.admin_kubeconfig.clone(), args)?;
        let mut child = weft_datapath::netns::spawn_in(&mut cmd, &self.fabric_netns)
            .context("running kubectl in the lab's fabric namespace")?;
        Ok(child.wait()?)
    }

    /// Writes a kubeconfig that authenticates with `token` (e.g. a
    /// service account's, from `kubectl create token`) to
    /// `<lab>/kube/<name>.kubeconfig` and returns its path: a client that
    /// must run with exactly that account's rights (weftd's RBAC tests).
    pub fn write_token_kubeconfig(&self, name: &str, token: &str) -> anyhow::Result<PathBuf> {
        let kube = self.kube_required()?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            bail!("kubeconfig name {name:?}: use letters, digits and '-'");
        }
        let path = kube.layout().kubeconfig(name);
        let ca = fs::read_to_string(&kube.ca)?;
        let text = kubeconfig::render_token(&kube.cluster, &kube.server, &ca, name, token.trim());
        pki::write_private(&path, &text)?;
        Ok(path)
    }
}
