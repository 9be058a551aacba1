//! Guarded decoding. kube's watcher decodes a whole list page as one
//! `ObjectList<K>`: a single object that does not fit `K` fails the page, and
//! the watcher relists forever (kube-rs/kube#774). Watching `Guarded<K>`
//! instead decodes every object on its own: one that does not fit becomes
//! [`Guarded::Bad`] with whatever metadata could be read, which the watch
//! logs and skips while the rest flows on.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone)]
pub enum Guarded<K> {
    Ok(K),
    Bad {
        metadata: Box<ObjectMeta>,
        error: String,
    },
}

impl<K: fmt::Debug> fmt::Debug for Guarded<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Guarded::Ok(k) => k.fmt(f),
            Guarded::Bad { metadata, error } => f
                .debug_struct("Bad")
                .field("name", &metadata.name)
                .field("namespace", &metadata.namespace)
                .field("error", error)
                .finish(),
        }
    }
}

impl<'de, K: serde::de::DeserializeOwned> Deserialize<'de> for Guarded<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Anything that is JSON at all becomes a Value; only the typed step
        // below may fail, and it fails for this object alone.
        let mut value = serde_json::Value::deserialize(d)?;
        // managedFields (server-side apply's field ownership, about the
        // size of the object itself) is read by nothing in weft; typed, it
        // would be a deep copy of its JSON tree per object and event
        if let Some(meta) = value
            .get_mut("metadata")
            .and_then(serde_json::Value::as_object_mut)
        {
            meta.remove("managedFields");
        }
        match K::deserialize(&value) {
            Ok(k) => Ok(Guarded::Ok(k)),
            Err(e) => {
                let metadata = value
                    .get("metadata")
                    .and_then(|m| ObjectMeta::deserialize(m).ok())
                    .unwrap_or_else(|| ObjectMeta {
                        // keep what little is readable for the log line
                        name: value
                            .pointer("/metadata/name")
                            .and_then(|n| n.as_str())
                            .map(str::to_string),
                        namespace: value
                            .pointer("/metadata/namespace")
                            .and_then(|n| n.as_str())
                            .map(str::to_string),
                        resource_version: value
                            .pointer("/metadata/resourceVersion")
                            .and_then(|n| n.as_str())
                            .map(str::to_string),
                        ..ObjectMeta::default()
                    });
                Ok(Guarded::Bad {
                    metadata: Box::new(metadata),
                    error: e.to_string(),
                })
            }
        }
    }
}

impl<K: Serialize> Serialize for Guarded<K> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Guarded::Ok(k) => k.serialize(s),
            Guarded::Bad { metadata, .. } => {
                serde_json::json!({ "metadata": metadata }).serialize(s)
            }
        }
    }
}

impl<K: k8s_openapi::Resource> k8s_openapi::Resource for Guarded<K> {
    const API_VERSION: &'static str = K::API_VERSION;
    const GROUP: &'static str = K::GROUP;
    const KIND: &'static str = K::KIND;
    const VERSION: &'static str = K::VERSION;
    const URL_PATH_SEGMENT: &'static str = K::URL_PATH_SEGMENT;
    type Scope = K::Scope;
}

impl<K: k8s_openapi::Metadata<Ty = ObjectMeta>> k8s_openapi::Metadata for Guarded<K> {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        match self {
            Guarded::Ok(k) => k.metadata(),
            Guarded::Bad { metadata, .. } => metadata,
        }
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Guarded::Ok(k) => k.metadata_mut(),
            Guarded::Bad { metadata, .. } => metadata,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    #[test]
    fn a_list_with_one_bad_object_decodes_the_others() {
        let list = r#"[
            {"metadata": {"name": "good", "namespace": "a"}, "spec": {"containers": []}},
            {"metadata": {"name": "bad", "namespace": "a"}, "spec": {"containers": "not a list"}},
            {"metadata": {"name": "also-good", "namespace": "a"}}
        ]"#;
        let items: Vec<Guarded<Pod>> = serde_json::from_str(list).unwrap();
        assert!(matches!(&items[0], Guarded::Ok(p) if p.metadata.name.as_deref() == Some("good")));
        match &items[1] {
            Guarded::Bad { metadata, error } => {
                assert_eq!(metadata.name.as_deref(), Some("bad"));
                assert!(error.contains("sequence"), "{error}");
            }
            other => panic!("expected Bad, got {other:?}"),
        }
        assert!(matches!(&items[2], Guarded::Ok(_)));
    }

    #[test]
    fn unreadable_metadata_keeps_the_name_for_the_log() {
        let v = r#"{"metadata": {"name": "x", "namespace": "n", "labels": ["no"]}}"#;
        match serde_json::from_str::<Guarded<Pod>>(v).unwrap() {
            Guarded::Bad { metadata, .. } => {
                assert_eq!(metadata.name.as_deref(), Some("x"));
                assert_eq!(metadata.namespace.as_deref(), Some("n"));
            }
            Guarded::Ok(_) => panic!("labels as a list must not decode"),
        }
    }

    #[test]
    fn managed_fields_are_dropped_and_the_rest_decodes() {
        let v = r#"{"metadata": {"name": "x", "namespace": "n", "resourceVersion": "7",
            "managedFields": [{"manager": "kubectl", "operation": "Apply",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"containers": []}}"#;
        match serde_json::from_str::<Guarded<Pod>>(v).unwrap() {
            Guarded::Ok(p) => {
                assert_eq!(p.metadata.name.as_deref(), Some("x"));
                assert_eq!(p.metadata.resource_version.as_deref(), Some("7"));
                assert!(p.metadata.managed_fields.is_none());
            }
            other => panic!("expected Ok, got {other:?}"),
        }
    }

    #[test]
    fn guarded_keeps_the_wrapped_kinds_identity() {
        use kube::Resource;
        assert_eq!(Guarded::<Pod>::kind(&()), "Pod");
        assert_eq!(Guarded::<Pod>::plural(&()), "pods");
        assert_eq!(
            Guarded::<Pod>::url_path(&(), Some("ns")),
            "/api/v1/namespaces/ns/pods"
        );
    }
}
