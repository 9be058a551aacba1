//! Rendering a [`NeutralResult`] as the result JSON of a given CNI version,
//! and merging it into a `prevResult` when weft-cni is not first in a chain.
//!
//! Shapes (containernetworking/cni `pkg/types/040` and `pkg/types/100`):
//!
//! * 0.3.0, 0.3.1, 0.4.0: ips carry `"version": "4"|"6"`; interfaces are
//!   `{name, mac, sandbox}`;
//! * 1.0.0: no `"version"` in ips;
//! * 1.1.0: as 1.0.0, and interfaces may carry `mtu`.
//!
//! Empty lists and empty optional fields are omitted. `dns` is omitted when
//! weft has none (libcni's own 1.x marshalling drops an empty `dns`, and
//! parsers accept its absence in every version); a `prevResult`'s `dns` is
//! carried over as is.

use serde_json::{json, Map, Value};

use crate::error::CniError;
use crate::result::{parse_result, Interface, IpConfig, NeutralResult, Route};
use crate::version::CniVersion;

fn render_interface(i: &Interface, version: CniVersion) -> Value {
    let mut o = Map::new();
    o.insert("name".into(), json!(i.name));
    if !i.mac.is_empty() {
        o.insert("mac".into(), json!(i.mac));
    }
    if let (Some(mtu), true) = (i.mtu, version.interfaces_carry_mtu()) {
        o.insert("mtu".into(), json!(mtu));
    }
    if let Some(sb) = i.sandbox.as_deref().filter(|s| !s.is_empty()) {
        o.insert("sandbox".into(), json!(sb));
    }
    Value::Object(o)
}

fn render_ip(ip: &IpConfig, version: CniVersion, shift: usize) -> Value {
    let mut o = Map::new();
    if version.ips_carry_version() {
        let v = if ip.address.addr().is_ipv4() {
            "4"
        } else {
            "6"
        };
        o.insert("version".into(), json!(v));
    }
    o.insert("address".into(), json!(ip.address.to_string()));
    if let Some(gw) = ip.gateway {
        o.insert("gateway".into(), json!(gw.to_string()));
    }
    if let Some(ix) = ip.interface {
        o.insert("interface".into(), json!(ix + shift));
    }
    Value::Object(o)
}

fn render_route(r: &Route) -> Value {
    let mut o = Map::new();
    o.insert("dst".into(), json!(r.dst.to_string()));
    if let Some(gw) = r.gw {
        o.insert("gw".into(), json!(gw.to_string()));
    }
    Value::Object(o)
}

fn put_list(out: &mut Map<String, Value>, key: &str, items: Vec<Value>) {
    if !items.is_empty() {
        out.insert(key.into(), Value::Array(items));
    }
}

/// Renders `result` as the ADD result of `version`, `cniVersion` included.
pub fn render_result(result: &NeutralResult, version: CniVersion) -> Value {
    let mut out = Map::new();
    out.insert("cniVersion".into(), json!(version.as_str()));
    put_list(
        &mut out,
        "interfaces",
        result
            .interfaces
            .iter()
            .map(|i| render_interface(i, version))
            .collect(),
    );
    put_list(
        &mut out,
        "ips",
        result
            .ips
            .iter()
            .map(|ip| render_ip(ip, version, 0))
            .collect(),
    );
    put_list(
        &mut out,
        "routes",
        result.routes.iter().map(render_route).collect(),
    );
    Value::Object(out)
}

/// The ADD result when the config carries `prevResult` (weft-cni is not
/// first in its chain): the previous result's interfaces, ips and routes
/// (kept verbatim, except that the ips' `"version"` key is added or dropped
/// to fit `version`), then weft's, with weft's interface indices shifted
/// past the previous interfaces. The previous `dns` is kept. A malformed
/// `prevResult` is code 7 naming the field.
pub fn render_merged(
    prev: &Value,
    ours: &NeutralResult,
    version: CniVersion,
) -> Result<Value, CniError> {
    let parsed = parse_result(prev, "prevResult")?;
    let prev_obj = prev.as_object().cloned().unwrap_or_default();
    let list = |k: &str| -> Vec<Value> {
        match prev_obj.get(k) {
            Some(Value::Array(items)) => items.clone(),
            _ => Vec::new(),
        }
    };
    let shift = parsed.interfaces.len();

    let mut interfaces = list("interfaces");
    interfaces.extend(ours.interfaces.iter().map(|i| render_interface(i, version)));

    let mut ips: Vec<Value> = list("ips")
        .into_iter()
        .zip(&parsed.ips)
        .map(|(mut raw, p)| {
            if let Value::Object(o) = &mut raw {
                if version.ips_carry_version() {
                    let v = if p.address.addr().is_ipv4() { "4" } else { "6" };
                    o.insert("version".into(), json!(v));
                } else {
                    o.remove("version");
                }
            }
            raw
        })
        .collect();
    ips.extend(ours.ips.iter().map(|ip| render_ip(ip, version, shift)));

    let mut routes = list("routes");
    routes.extend(ours.routes.iter().map(render_route));

    let mut out = Map::new();
    out.insert("cniVersion".into(), json!(version.as_str()));
    put_list(&mut out, "interfaces", interfaces);
    put_list(&mut out, "ips", ips);
    put_list(&mut out, "routes", routes);
    match prev_obj.get("dns") {
        Some(Value::Object(d)) if !d.is_empty() => {
            out.insert("dns".into(), Value::Object(d.clone()));
        }
        _ => {}
    }
    Ok(Value::Object(out))
}

/// The ADD output: [`render_merged`] when there is a `prevResult`, else
/// [`render_result`].
pub fn render_add(
    ours: &NeutralResult,
    version: CniVersion,
    prev: Option<&Value>,
) -> Result<Value, CniError> {
    match prev {
        Some(p) => render_merged(p, ours, version),
        None => Ok(render_result(ours, version)),
    }
}
