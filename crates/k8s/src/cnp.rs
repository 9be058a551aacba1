//! ClusterNetworkPolicy (`policy.networking.k8s.io/v1alpha2`, a CRD of
//! sigs.k8s.io/network-policy-api, shipped in `deploy/kubernetes/crds/`).
//!
//! The object is decoded guarded like the built-in kinds, its spec read by
//! `weft_policy::cluster_api` (fail closed on fields weft does not know) into
//! `weft_policy::ClusterNetworkPolicy`, which the index keeps as is. A
//! cluster without the CRD answers the list with 404: that is "no
//! ClusterNetworkPolicy", so the kind counts as synced and empty (weftd stays
//! ready) and the watch keeps retrying, picking the CRD up once installed.

use std::collections::HashSet;

use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use weft_policy::cluster_api::{ApiClusterNetworkPolicy, ApiMeta, ApiSpec};

use crate::convert::{Convert, ConvertError};
use crate::guarded::Guarded;
use crate::index::Index;
use crate::model::Kind;
use crate::watch::{drive, WatchBackoff};

pub use weft_policy::ClusterNetworkPolicy;

/// The object as served: metadata and the spec (status is not read).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterNetworkPolicyObject {
    pub metadata: ObjectMeta,
    pub spec: ApiSpec,
}

impl k8s_openapi::Resource for ClusterNetworkPolicyObject {
    const API_VERSION: &'static str = "policy.networking.k8s.io/v1alpha2";
    const GROUP: &'static str = "policy.networking.k8s.io";
    const KIND: &'static str = "ClusterNetworkPolicy";
    const VERSION: &'static str = "v1alpha2";
    const URL_PATH_SEGMENT: &'static str = "clusternetworkpolicies";
    type Scope = k8s_openapi::ClusterResourceScope;
}

impl k8s_openapi::Metadata for ClusterNetworkPolicyObject {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl Convert for ClusterNetworkPolicyObject {
    type Out = ClusterNetworkPolicy;
    const KIND: Kind = Kind::ClusterNetworkPolicy;

    fn convert(&self) -> Result<ClusterNetworkPolicy, ConvertError> {
        let api = ApiClusterNetworkPolicy {
            metadata: ApiMeta {
                name: self.metadata.name.clone().unwrap_or_default(),
            },
            spec: self.spec.clone(),
        };
        api.to_model().map_err(|e| ConvertError {
            field: "spec".into(),
            reason: e.to_string(),
        })
    }
}

/// Whether a watcher error says the API has no such resource (the CRD is
/// not installed).
pub fn not_installed(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code == 404,
        _ => false,
    }
}

type CnpEvent = Result<watcher::Event<Guarded<ClusterNetworkPolicyObject>>, watcher::Error>;

/// The watch's events with "not installed" turned into an empty list: the
/// kind is synced and empty, and nothing is reported as an error.
pub fn absent_is_empty<S>(index: Index, events: S) -> impl Stream<Item = CnpEvent>
where
    S: Stream<Item = CnpEvent>,
{
    let mut said = false;
    events.filter_map(move |ev| {
        let keep = match &ev {
            Err(e) if not_installed(e) => {
                if !said {
                    tracing::info!("no ClusterNetworkPolicy CRD (policy.networking.k8s.io/v1alpha2) in this cluster; none to enforce until it is installed (deploy/kubernetes/crds)");
                    said = true;
                }
                index.reset::<ClusterNetworkPolicy>(Vec::new(), &HashSet::new());
                None
            }
            _ => Some(ev),
        };
        std::future::ready(keep)
    })
}

/// Starts the ClusterNetworkPolicy watch into `index`.
pub fn spawn(client: &Client, index: &Index, backoff: WatchBackoff) {
    let api: Api<Guarded<ClusterNetworkPolicyObject>> = Api::all(client.clone());
    let events = watcher(api, watcher::Config::default()).backoff(backoff);
    let events = absent_is_empty(index.clone(), events);
    tokio::spawn(drive::<ClusterNetworkPolicyObject, _>(
        index.clone(),
        events,
    ));
}
