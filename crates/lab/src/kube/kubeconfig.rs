//! Kubeconfig files for the lab cluster's clients.
//!
//! Certificates are embedded (`*-data`), so a kubeconfig is one
//! self-contained file a person can copy into another lab namespace.

use base64::Engine;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

/// A kubeconfig for `user` (a client certificate) on the lab cluster.
pub fn render(
    cluster: &str,
    server: &str,
    ca_pem: &str,
    user: &str,
    cert_pem: &str,
    key_pem: &str,
) -> String {
    let credentials = format!(
        "    client-certificate-data: {}\n    client-key-data: {}\n",
        b64(cert_pem),
        b64(key_pem)
    );
    with_credentials(cluster, server, ca_pem, user, &credentials)
}

/// A kubeconfig for `user` authenticating with a bearer token (a
/// service account's, from `kubectl create token`).
pub fn render_token(cluster: &str, server: &str, ca_pem: &str, user: &str, token: &str) -> String {
    with_credentials(
        cluster,
        server,
        ca_pem,
        user,
        &format!("    token: {token}\n"),
    )
}

/// The one layout both kinds share; `credentials` are the user's lines.
fn with_credentials(
    cluster: &str,
    server: &str,
    ca_pem: &str,
    user: &str,
    credentials: &str,
) -> String {
    let context = format!("{user}@{cluster}");
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: {cluster}
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {user}
  user:
{credentials}contexts:
- name: {context}
  context:
    cluster: {cluster}
    user: {user}
current-context: {context}
",
        ca = b64(ca_pem),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_kubeconfig_carries_the_token_and_no_certificate() {
        let k = render_token("c", "https://198.18.0.1:6443", "CA", "sa", "abc.def");
        assert!(k.contains("    token: abc.def\n"));
        assert!(!k.contains("client-certificate"));
        assert!(k.contains("certificate-authority-data: Q0E=\n"));
    }

    #[test]
    fn a_kubeconfig_names_its_server_and_embeds_the_pems() {
        let k = render(
            "weft-lab-p",
            "https://198.18.0.1:6443",
            "CA",
            "admin",
            "CERT",
            "KEY",
        );
        assert!(k.contains("    server: https://198.18.0.1:6443\n"));
        // base64 of "CA", "CERT", "KEY"
        assert!(k.contains("certificate-authority-data: Q0E=\n"));
        assert!(k.contains("client-certificate-data: Q0VSVA==\n"));
        assert!(k.contains("client-key-data: S0VZ\n"));
        assert!(k.contains("current-context: admin@weft-lab-p\n"));
    }
}
