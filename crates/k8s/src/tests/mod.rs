//! Builders of Kubernetes objects for the unit tests, and the tests.

mod cnp;
mod convert;
mod index;
mod watch;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn meta(ns: Option<&str>, name: &str, l: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        namespace: ns.map(str::to_string),
        name: Some(name.to_string()),
        uid: Some(format!("uid-{name}")),
        labels: (!l.is_empty()).then(|| labels(l)),
        ..ObjectMeta::default()
    }
}

pub fn mk_pod(ns: &str, name: &str, l: &[(&str, &str)], ips: &[&str]) -> core::Pod {
    core::Pod {
        metadata: meta(Some(ns), name, l),
        spec: Some(core::PodSpec {
            node_name: Some("node-a".into()),
            containers: vec![core::Container {
                name: "c".into(),
                ports: Some(vec![
                    core::ContainerPort {
                        name: Some("http".into()),
                        container_port: 8080,
                        ..Default::default()
                    },
                    core::ContainerPort {
                        container_port: 9090,
                        ..Default::default()
                    },
                    core::ContainerPort {
                        name: Some("dns".into()),
                        container_port: 53,
                        protocol: Some("UDP".into()),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(core::PodStatus {
            phase: Some("Running".into()),
            pod_ips: Some(
                ips.iter()
                    .map(|ip| core::PodIP { ip: ip.to_string() })
                    .collect(),
            ),
            ..Default::default()
        }),
    }
}

pub fn mk_ns(name: &str, l: &[(&str, &str)]) -> core::Namespace {
    core::Namespace {
        metadata: meta(None, name, l),
        ..Default::default()
    }
}

pub fn mk_service(ns: &str, name: &str, cluster_ip: &str) -> core::Service {
    core::Service {
        metadata: meta(Some(ns), name, &[]),
        spec: Some(core::ServiceSpec {
            cluster_ip: Some(cluster_ip.into()),
            cluster_ips: Some(vec![cluster_ip.into()]),
            ports: Some(vec![core::ServicePort {
                name: Some("web".into()),
                port: 80,
                target_port: Some(
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(
                        "http".into(),
                    ),
                ),
                ..Default::default()
            }]),
            selector: Some(labels(&[("app", "web")])),
            ..Default::default()
        }),
        status: None,
    }
}

/// An endpoint's address and its conditions (ready, serving, terminating).
pub type EndpointSpec<'a> = (&'a str, Option<bool>, Option<bool>, Option<bool>);

/// A slice of `service` with one endpoint per address; `conditions` as the
/// API would send them (ready, serving, terminating; `None` left unset).
pub fn mk_slice(
    ns: &str,
    name: &str,
    service: &str,
    addrs: &[EndpointSpec<'_>],
) -> discovery::EndpointSlice {
    discovery::EndpointSlice {
        metadata: meta(
            Some(ns),
            name,
            &[(crate::convert::SERVICE_NAME_LABEL, service)],
        ),
        address_type: "IPv4".into(),
        endpoints: Some(
            addrs
                .iter()
                .map(|(a, ready, serving, terminating)| discovery::Endpoint {
                    addresses: vec![a.to_string()],
                    conditions: Some(discovery::EndpointConditions {
                        ready: *ready,
                        serving: *serving,
                        terminating: *terminating,
                    }),
                    node_name: Some("node-a".into()),
                    ..Default::default()
                })
                .collect(),
        ),
        ports: Some(vec![discovery::EndpointPort {
            name: Some("web".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    }
}
