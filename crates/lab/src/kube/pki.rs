//! The lab cluster's PKI: one CA per lab, serving certificates for the API
//! server, controller-manager and scheduler, a client certificate per
//! identity (admin, each node's kubelet, kube-proxy, the controllers) and the
//! service-account signing key.
//!
//! Generated in-process with rcgen (ECDSA P-256): no `openssl` runs, no
//! config files to template, and the plan (who gets which subject, SANs and
//! usages) is plain data the unit tests check.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// What one certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    /// File stem under `pki/`: `<stem>.crt` and `<stem>.key`.
    pub stem: String,
    /// Subject CN: the user name the API server sees.
    pub common_name: String,
    /// Subject O: the groups the API server sees.
    pub organizations: Vec<String>,
    /// DNS names and IP addresses it serves (empty for a client-only one).
    pub sans: Vec<String>,
    pub server: bool,
    pub client: bool,
}

impl CertSpec {
    fn client(stem: &str, cn: &str, orgs: &[&str]) -> CertSpec {
        CertSpec {
            stem: stem.into(),
            common_name: cn.into(),
            organizations: orgs.iter().map(|o| o.to_string()).collect(),
            sans: Vec::new(),
            server: false,
            client: true,
        }
    }

    fn server(stem: &str, cn: &str, sans: Vec<String>) -> CertSpec {
        CertSpec {
            stem: stem.into(),
            common_name: cn.into(),
            organizations: Vec::new(),
            sans,
            server: true,
            client: false,
        }
    }
}

/// The names and addresses the certificates must carry.
#[derive(Debug, Clone)]
pub struct PkiInputs {
    pub lab: String,
    /// Where the API server listens (the fabric's lab addresses).
    pub apiserver_addresses: Vec<IpAddr>,
    /// The first address of each service CIDR (the `kubernetes` Service).
    pub service_ips: Vec<IpAddr>,
    /// (node name, its underlay addresses), node 1 first.
    pub nodes: Vec<(String, Vec<IpAddr>)>,
}

/// Every certificate of a lab cluster, the CA excepted.
pub fn plan(inputs: &PkiInputs) -> Vec<CertSpec> {
    let mut apiserver_sans: Vec<String> = inputs
        .apiserver_addresses
        .iter()
        .chain(&inputs.service_ips)
        .map(ToString::to_string)
        .collect();
    apiserver_sans.extend(
        [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "localhost",
            "127.0.0.1",
        ]
        .map(String::from),
    );
    let loopback = || vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let mut certs = vec![
        CertSpec::server("apiserver", "kube-apiserver", apiserver_sans),
        // the API server's identity towards kubelets
        CertSpec::client(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            &["system:masters"],
        ),
        CertSpec::client("admin", "weft-lab-admin", &["system:masters"]),
        CertSpec::client("controller-manager", "system:kube-controller-manager", &[]),
        CertSpec::client("scheduler", "system:kube-scheduler", &[]),
        CertSpec::client("kube-proxy", "system:kube-proxy", &[]),
        CertSpec::server(
            "controller-manager-serving",
            "kube-controller-manager",
            loopback(),
        ),
        CertSpec::server("scheduler-serving", "kube-scheduler", loopback()),
    ];
    for (name, addrs) in &inputs.nodes {
        // a kubelet's client identity (Node authorizer, NodeRestriction),
        // and good for serving on the node's addresses too
        let mut sans = vec![name.clone()];
        sans.extend(addrs.iter().map(ToString::to_string));
        certs.push(CertSpec {
            stem: format!("node-{name}"),
            common_name: format!("system:node:{name}"),
            organizations: vec!["system:nodes".into()],
            sans,
            server: true,
            client: true,
        });
    }
    certs
}

/// A generated certificate and its key, PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The lab's CA, able to sign.
pub struct Authority {
    params: CertificateParams,
    key: KeyPair,
    pub cert_pem: String,
}

fn validity(params: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    // an hour of slack for clocks; labs live hours, not years
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(365);
}

impl Authority {
    pub fn new(lab: &str) -> anyhow::Result<Authority> {
        let key = KeyPair::generate().context("generating the lab CA key")?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("weft-lab-{lab}-ca"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params);
        let cert = params
            .self_signed(&key)
            .context("self-signing the lab CA")?;
        Ok(Authority {
            cert_pem: cert.pem(),
            params,
            key,
        })
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    pub fn issue(&self, spec: &CertSpec) -> anyhow::Result<Issued> {
        let key = KeyPair::generate().context("generating a key")?;
        let mut params = CertificateParams::new(spec.sans.clone())
            .with_context(|| format!("SANs of {}", spec.stem))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, spec.common_name.clone());
        for o in &spec.organizations {
            params
                .distinguished_name
                .push(DnType::OrganizationName, o.clone());
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if spec.server {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if spec.client {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.use_authority_key_identifier_extension = true;
        validity(&mut params);
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params
            .signed_by(&key, &issuer)
            .with_context(|| format!("signing {}", spec.stem))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Writes `contents` to `path` readable by root only (keys and kubeconfigs).
pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

/// The files of a generated PKI.
#[derive(Debug, Clone)]
pub struct PkiFiles {
    pub dir: PathBuf,
}

impl PkiFiles {
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn cert(&self, stem: &str) -> PathBuf {
        self.dir.join(format!("{stem}.crt"))
    }
    pub fn key(&self, stem: &str) -> PathBuf {
        self.dir.join(format!("{stem}.key"))
    }
    /// The service-account token signing key (private) and its public half.
    pub fn sa_key(&self) -> PathBuf {
        self.dir.join("sa.key")
    }
    pub fn sa_pub(&self) -> PathBuf {
        self.dir.join("sa.pub")
    }
}

/// Generates the CA, every certificate of `plan(inputs)` and the
/// service-account key into `dir`.
pub fn generate(inputs: &PkiInputs, dir: &Path) -> anyhow::Result<PkiFiles> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let files = PkiFiles {
        dir: dir.to_path_buf(),
    };
    let ca = Authority::new(&inputs.lab)?;
    fs::write(files.ca(), &ca.cert_pem)?;
    write_private(&dir.join("ca.key"), &ca.key_pem())?;
    for spec in plan(inputs) {
        let issued = ca.issue(&spec)?;
        fs::write(files.cert(&spec.stem), &issued.cert_pem)?;
        write_private(&files.key(&spec.stem), &issued.key_pem)?;
    }
    // service-account tokens are ES256 JWTs signed with this key
    let sa = KeyPair::generate().context("generating the service-account key")?;
    write_private(&files.sa_key(), &sa.serialize_pem())?;
    fs::write(files.sa_pub(), sa.public_key_pem())?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> PkiInputs {
        PkiInputs {
            lab: "p".into(),
            apiserver_addresses: vec!["198.18.0.1".parse().unwrap(), "2001:2::1".parse().unwrap()],
            service_ips: vec![
                "10.96.0.1".parse().unwrap(),
                "fd00:10:96::1".parse().unwrap(),
            ],
            nodes: vec![
                ("p-n1".into(), vec!["198.18.0.10".parse().unwrap()]),
                ("p-n2".into(), vec!["198.18.0.11".parse().unwrap()]),
            ],
        }
    }

    fn find<'a>(plan: &'a [CertSpec], stem: &str) -> &'a CertSpec {
        plan.iter().find(|c| c.stem == stem).expect(stem)
    }

    #[test]
    fn the_api_server_serves_its_lab_address_and_the_kubernetes_service() {
        let plan = plan(&inputs());
        let api = find(&plan, "apiserver");
        for san in [
            "198.18.0.1",
            "2001:2::1",
            "10.96.0.1",
            "fd00:10:96::1",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ] {
            assert!(api.sans.iter().any(|s| s == san), "{san} in {:?}", api.sans);
        }
        assert!(api.server && !api.client);
    }

    #[test]
    fn identities_match_the_default_rbac_and_the_node_authorizer() {
        let plan = plan(&inputs());
        let admin = find(&plan, "admin");
        assert_eq!(admin.organizations, ["system:masters"]);
        assert_eq!(find(&plan, "kube-proxy").common_name, "system:kube-proxy");
        assert_eq!(
            find(&plan, "controller-manager").common_name,
            "system:kube-controller-manager"
        );
        assert_eq!(
            find(&plan, "scheduler").common_name,
            "system:kube-scheduler"
        );
        let n2 = find(&plan, "node-p-n2");
        assert_eq!(n2.common_name, "system:node:p-n2");
        assert_eq!(n2.organizations, ["system:nodes"]);
        assert!(n2.client && n2.sans.contains(&"198.18.0.11".to_string()));
        // every identity is unique
        let mut stems: Vec<&str> = plan.iter().map(|c| c.stem.as_str()).collect();
        stems.sort_unstable();
        stems.dedup();
        assert_eq!(stems.len(), plan.len());
    }

    #[test]
    fn issued_certificates_are_pem_and_signed_by_the_lab_ca() {
        let ca = Authority::new("p").unwrap();
        assert!(ca.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let plan = plan(&inputs());
        let issued = ca.issue(find(&plan, "apiserver")).unwrap();
        assert!(issued.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(issued.key_pem.contains("PRIVATE KEY"));
        // a second issue is another key
        let again = ca.issue(find(&plan, "apiserver")).unwrap();
        assert_ne!(issued.key_pem, again.key_pem);
    }
}
