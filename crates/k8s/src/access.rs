//! Who may read flows from outside the node: the cluster decides. A flow
//! reader presents a bearer token; [`Reviewer::review`] asks the API server
//! whose it is (TokenReview) and whether RBAC lets that user `get` the
//! non-resource URL [`FLOWS_URL`] (SubjectAccessReview). weftd's service
//! account needs `create` on both reviews; readers need a ClusterRole with
//! `nonResourceURLs: ["/weft/flows"], verbs: ["get"]`
//! (deploy/kubernetes/weft.yaml has both).
//!
//! And what `weft observe --cluster` needs: the nodes' InternalIPs and the
//! kubeconfig's bearer token.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Node;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};

use crate::runtime::{client_config, Source};
use crate::K8sError;

/// The non-resource URL RBAC grants flow readers `get` on.
pub const FLOWS_URL: &str = "/weft/flows";

/// Why a reader was turned away.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("the API server did not accept the token{0}; use a current token of this cluster")]
    Unauthenticated(String),
    #[error("{user} may not read flows: grant it get on the non-resource URL {FLOWS_URL} (the ClusterRole weft-flow-reader)")]
    Forbidden { user: String },
    #[error("cannot ask the API server about the token: {0}; try again")]
    Unavailable(String),
}

/// Asks the API server about tokens; one request at a time (readers
/// connect rarely), each bounded by the timeout given.
pub struct Reviewer {
    rt: Mutex<tokio::runtime::Runtime>,
    client: Client,
}

fn runtime() -> Result<tokio::runtime::Runtime, K8sError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| K8sError::Thread(e.to_string()))
}

impl Reviewer {
    pub fn new(source: &Source) -> Result<Reviewer, K8sError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = runtime()?;
        let client = rt.block_on(async {
            let cfg = client_config(source).await?;
            crate::timing::client(cfg)
        })?;
        Ok(Reviewer {
            rt: Mutex::new(rt),
            client,
        })
    }

    /// The user `token` belongs to, when RBAC lets it read flows.
    pub fn review(&self, token: &str, timeout: Duration) -> Result<String, Refusal> {
        let rt = self.rt.lock().unwrap_or_else(|p| p.into_inner());
        rt.block_on(async {
            tokio::time::timeout(timeout, self.ask(token))
                .await
                .unwrap_or_else(|_| Err(Refusal::Unavailable("it did not answer in time".into())))
        })
    }

    async fn ask(&self, token: &str) -> Result<String, Refusal> {
        let unavailable = |e: kube::Error| Refusal::Unavailable(e.to_string());
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: None,
            },
            ..Default::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(unavailable)?;
        let status = answer.status.unwrap_or_default();
        let user = status.user.unwrap_or_default();
        if status.authenticated != Some(true) {
            let why = status.error.map(|e| format!(" ({e})")).unwrap_or_default();
            return Err(Refusal::Unauthenticated(why));
        }
        let name = user.username.clone().unwrap_or_default();
        let sar = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username,
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(FLOWS_URL.into()),
                    verb: Some("get".into()),
                }),
                resource_attributes: None,
            },
            ..Default::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &sar)
            .await
            .map_err(unavailable)?;
        if answer.status.is_some_and(|s| s.allowed) {
            Ok(name)
        } else {
            Err(Refusal::Forbidden { user: name })
        }
    }
}

/// Every Node's name and InternalIP (nodes without one are left out).
pub fn node_addresses(source: &Source) -> Result<Vec<(String, IpAddr)>, K8sError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    runtime()?.block_on(async {
        let client = crate::timing::client(client_config(source).await?)?;
        let nodes = Api::<Node>::all(client)
            .list(&ListParams::default())
            .await
            .map_err(|e| K8sError::Api(e.to_string()))?;
        Ok(nodes
            .items
            .iter()
            .filter_map(|n| {
                let name = n.metadata.name.clone()?;
                let ip = n
                    .status
                    .as_ref()?
                    .addresses
                    .as_ref()?
                    .iter()
                    .find(|a| a.type_ == "InternalIP")?
                    .address
                    .parse()
                    .ok()?;
                Some((name, ip))
            })
            .collect())
    })
}

/// The bearer token `source`'s credentials carry (a kubeconfig's `token`
/// or `tokenFile`, the service account's); None for client certificates
/// or exec plugins, which a flow reader cannot present.
pub fn bearer_token(source: &Source) -> Result<Option<String>, K8sError> {
    use secrecy::ExposeSecret;
    runtime()?.block_on(async {
        let cfg = client_config(source).await?;
        if let Some(t) = cfg.auth_info.token.as_ref() {
            return Ok(Some(t.expose_secret().to_string()));
        }
        Ok(cfg
            .auth_info
            .token_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|t| t.trim().to_string()))
    })
}
