//! Which endpoints a frontend may use: the EndpointSlice conditions with the
//! API's rules for unset ones, KEP-1669's fallback to serving+terminating
//! endpoints, publishNotReadyAddresses, and the verdict when none is left.

mod common;
use common::*;
use weft_lb::*;

const HTTP: &[(&str, Protocol, u16)] = &[("http", TCP, 80)];
const HTTP_EP: &[(&str, Protocol, u16)] = &[("http", TCP, 8080)];

fn one(eps: Vec<Endpoint>) -> Frontend {
    let d = desired(
        &[service("ns/web", &["10.96.0.10"], HTTP)],
        &[slice("ns/web", HTTP_EP, eps)],
    );
    fe(&d, "10.96.0.10:80/TCP", Scope::External).clone()
}

#[test]
fn unset_conditions_mean_ready_serving_not_terminating() {
    let c = EndpointConditions::default();
    assert!(c.is_ready() && c.is_serving() && !c.is_terminating());
    let f = one(vec![cond(ep("10.0.0.1", "n"), None, None, None)]);
    assert_eq!(backends(&f), ["10.0.0.1:8080/TCP"]);
    assert_eq!(f.backends[0].1, BackendState::Active);
}

#[test]
fn unset_serving_defers_to_ready() {
    let c = EndpointConditions {
        ready: Some(false),
        serving: None,
        terminating: Some(true),
    };
    assert!(!c.is_serving(), "serving follows ready when unset");
    // Not ready, serving unknown -> not serving: not even a fallback.
    let f = one(vec![cond(
        ep("10.0.0.1", "n"),
        Some(false),
        None,
        Some(true),
    )]);
    assert_eq!(f.verdict, Verdict::Reject);
}

#[test]
fn not_ready_endpoints_are_not_used() {
    let f = one(vec![ep("10.0.0.1", "n"), not_ready("10.0.0.2", "n")]);
    assert_eq!(backends(&f), ["10.0.0.1:8080/TCP"]);
}

#[test]
fn only_not_ready_endpoints_reject() {
    let f = one(vec![not_ready("10.0.0.2", "n")]);
    assert_eq!(f.verdict, Verdict::Reject);
    assert!(f.backends.is_empty());
}

#[test]
fn ready_endpoints_win_over_terminating_ones() {
    let f = one(vec![draining("10.0.0.1", "n"), ep("10.0.0.2", "n")]);
    assert_eq!(backends(&f), ["10.0.0.2:8080/TCP"]);
}

#[test]
fn serving_terminating_endpoints_serve_when_none_is_ready() {
    // KEP-1669: a Deployment scaled to zero keeps answering while it drains.
    let f = one(vec![
        draining("10.0.0.1", "n"),
        draining("10.0.0.3", "n"),
        not_ready("10.0.0.2", "n"),
        // Terminating and no longer serving: never used.
        cond(ep("10.0.0.4", "n"), Some(false), Some(false), Some(true)),
    ]);
    assert_eq!(backends(&f), ["10.0.0.1:8080/TCP", "10.0.0.3:8080/TCP"]);
    assert!(f.backends.iter().all(|b| b.1 == BackendState::Terminating));
    assert_eq!(f.verdict, Verdict::Forward);
}

#[test]
fn publish_not_ready_addresses_uses_every_endpoint_as_ready() {
    let mut s = service("ns/web", &["10.96.0.10"], HTTP);
    s.publish_not_ready_addresses = true;
    let sl = slice(
        "ns/web",
        HTTP_EP,
        vec![
            not_ready("10.0.0.1", "n"),
            draining("10.0.0.2", "n"),
            ep("10.0.0.3", "n"),
        ],
    );
    let d = desired(&[s], &[sl]);
    let f = fe(&d, "10.96.0.10:80/TCP", Scope::External);
    assert_eq!(
        backends(f),
        [
            "10.0.0.1:8080/TCP",
            "10.0.0.2:8080/TCP",
            "10.0.0.3:8080/TCP"
        ]
    );
    assert!(f.backends.iter().all(|b| b.1 == BackendState::Active));
}

#[test]
fn no_slice_at_all_rejects() {
    let d = desired(&[service("ns/web", &["10.96.0.10"], HTTP)], &[]);
    let f = fe(&d, "10.96.0.10:80/TCP", Scope::External);
    assert_eq!(f.verdict, Verdict::Reject);
    let master = d.maps.services.iter().find(|(k, _)| k.slot == 0).unwrap().1;
    assert_eq!(master.count, 0);
    assert_ne!(master.flags & weft_lb::maps::flags::REJECT, 0);
}

#[test]
fn an_address_in_two_slices_is_one_backend_with_the_better_view() {
    // A slice being replaced by another: the same pod listed twice.
    let a = slice("ns/web", HTTP_EP, vec![not_ready("10.0.0.1", "n")]);
    let b = slice("ns/web", HTTP_EP, vec![ep("10.0.0.1", "n")]);
    let d = desired(&[service("ns/web", &["10.96.0.10"], HTTP)], &[a, b]);
    assert_eq!(
        backends(fe(&d, "10.96.0.10:80/TCP", Scope::External)),
        ["10.0.0.1:8080/TCP"]
    );
}

#[test]
fn fqdn_slices_and_wrong_family_addresses_are_ignored() {
    let mut fqdn = slice("ns/web", HTTP_EP, vec![ep("10.0.0.9", "n")]);
    fqdn.address_type = AddressType::FQDN;
    let mut mixed = slice("ns/web", HTTP_EP, vec![ep("10.0.0.1", "n")]);
    mixed.endpoints[0].addresses.push(ip("fd00::1"));
    let d = desired(&[service("ns/web", &["10.96.0.10"], HTTP)], &[fqdn, mixed]);
    assert_eq!(
        backends(fe(&d, "10.96.0.10:80/TCP", Scope::External)),
        ["10.0.0.1:8080/TCP"]
    );
}

#[test]
fn slices_of_other_services_are_not_mixed_in() {
    let other = slice("ns/other", HTTP_EP, vec![ep("10.0.0.7", "n")]);
    let other_ns = slice("ns2/web", HTTP_EP, vec![ep("10.0.0.8", "n")]);
    let mine = slice("ns/web", HTTP_EP, vec![ep("10.0.0.1", "n")]);
    let d = desired(
        &[service("ns/web", &["10.96.0.10"], HTTP)],
        &[other, other_ns, mine],
    );
    assert_eq!(
        backends(fe(&d, "10.96.0.10:80/TCP", Scope::External)),
        ["10.0.0.1:8080/TCP"]
    );
}

#[test]
fn endpoint_port_without_number_contributes_nothing() {
    let mut sl = slice("ns/web", HTTP_EP, vec![ep("10.0.0.1", "n")]);
    sl.ports[0].port = None;
    let d = desired(&[service("ns/web", &["10.96.0.10"], HTTP)], &[sl]);
    assert_eq!(
        fe(&d, "10.96.0.10:80/TCP", Scope::External).verdict,
        Verdict::Reject
    );
}
