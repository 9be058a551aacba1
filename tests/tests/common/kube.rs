//! Shared scaffolding of the lab-cluster tests: a real API server, lab
//! nodes and weftd with the Kubernetes adapter; kubectl as the cluster's
//! admin; the waits every such test needs before it makes pods.

use std::path::Path;
use std::time::{Duration, Instant};

use weft_lab::kube::KubeSpec;
use weft_lab::{Lab, LabSpec};

use super::{bin_dir, lab_name, within, LabGuard};

/// How long a namespace's default ServiceAccount may take to appear (the
/// controller-manager makes it; a safety net for a loaded machine, not a
/// goal of any issue).
pub const SERVICE_ACCOUNT_WAIT: Duration = Duration::from_secs(60);

/// A lab cluster named after `tag`: the control plane may take `patience`
/// to be ready (tens of seconds on a loaded 2-CPU machine); `tweak` sets
/// the rest (nodes, etcd members, the Service proxy). Says on stderr how
/// long it took; removed when the guard drops, pass or fail.
pub fn kube_lab(tag: &str, patience: Duration, tweak: impl FnOnce(&mut LabSpec)) -> LabGuard {
    let mut spec = LabSpec::new(&lab_name(tag), &bin_dir());
    spec.kubernetes = Some(KubeSpec {
        ready_timeout: patience,
        ..KubeSpec::default()
    });
    tweak(&mut spec);
    let started = Instant::now();
    let lab = LabGuard(Lab::up(&spec, &mut |l| eprintln!("{l}")).expect("lab up --kubernetes"));
    eprintln!("lab cluster up in {:.1} s", started.elapsed().as_secs_f64());
    lab
}

/// kubectl as the cluster's admin, `stdin` fed to it (`apply -f -`); its
/// stdout. Fails the test with kubectl's stderr when kubectl fails.
pub fn kubectl(lab: &Lab, args: &[&str], stdin: Option<&[u8]>) -> String {
    let kube = lab.kube().expect("a kubernetes lab");
    let o = lab
        .kubectl_as(&kube.admin_kubeconfig.clone(), args, stdin)
        .expect("kubectl runs");
    assert!(
        o.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `kubectl apply -f -` of `manifest`, as the cluster's admin.
pub fn apply(lab: &Lab, manifest: &serde_json::Value) {
    kubectl(
        lab,
        &["apply", "-f", "-"],
        Some(manifest.to_string().as_bytes()),
    );
}

/// Waits for namespace `ns`'s default ServiceAccount: the API server
/// refuses pods until the controller-manager has made it (a race seen
/// under load).
pub fn wait_default_service_account(lab: &Lab, ns: &str) {
    within(
        SERVICE_ACCOUNT_WAIT,
        &format!("namespace {ns}'s default ServiceAccount"),
        || {
            lab.kubectl(&["-n", ns, "get", "serviceaccount", "default"])
                .is_ok_and(|o| o.status.success())
                .then_some(())
        },
    );
}

/// Installs the ClusterNetworkPolicy CRD of deploy/kubernetes/crds as
/// published and waits until the API server serves it.
pub fn install_cnp_crd(lab: &Lab) {
    let crd = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/kubernetes/crds/policy.networking.k8s.io_clusternetworkpolicies.yaml");
    kubectl(
        lab,
        &["apply", "--server-side", "-f", crd.to_str().unwrap()],
        None,
    );
    kubectl(
        lab,
        &[
            "wait",
            "--for=condition=established",
            "--timeout=60s",
            "crd/clusternetworkpolicies.policy.networking.k8s.io",
        ],
        None,
    );
}
