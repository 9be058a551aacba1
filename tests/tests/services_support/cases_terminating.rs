//! service.go "should be able to connect to terminating and unready
//! endpoints if PublishNotReadyAddresses is true" and "should not be able
//! to connect to terminating and unready endpoints if
//! PublishNotReadyAddresses is false".
//!
//! Upstream deletes an unready pod that has a long grace period and probes
//! it while it terminates. The lab kubelet cannot keep a deleted pod
//! serving, so the slices are written by hand (`cases::slice_of`) with the
//! conditions the EndpointSlice controller gives such a pod: with
//! `publishNotReadyAddresses` it stays `ready` (serving false, terminating
//! true), without it nothing is ready or serving.

use serde_json::{json, Value};

use super::cases::{slice_of, CLIENT};
use super::Cluster;

pub fn terminating_and_unready_endpoints(c: &Cluster) {
    c.case("terminating, unready endpoints: published or not");
    c.service(
        "term-pnr",
        Value::Null,
        json!({"publishNotReadyAddresses": true}),
    );
    c.apply(&slice_of(c, "term-pnr", &[("web-1", 1, true, false, true)]));
    c.service("term-pnr-off", Value::Null, json!({}));
    c.apply(&slice_of(
        c,
        "term-pnr-off",
        &[("web-1", 1, false, false, true)],
    ));
    let (on, off) = (c.cluster_ip("term-pnr"), c.cluster_ip("term-pnr-off"));
    c.wait_backends(CLIENT, &on, 80, "tcp", &["web-1"]);
    c.wait_outcome(CLIENT, &off, 80, "tcp", "refused");
}
