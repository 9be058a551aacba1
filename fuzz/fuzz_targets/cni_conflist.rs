//! A conflist as a runtime turns it into the config each plugin of the chain
//! receives (libcni: the list's `name` and `cniVersion` copied into every
//! plugin's config, the previous plugin's result as `prevResult`), then
//! parsed by weft's config parser wherever weft-cni is in the chain.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use weft_cni_spec::{render_add, Command, NetConf, NeutralResult};

fuzz_target!(|bytes: &[u8]| {
    let Ok(list) = serde_json::from_slice::<Value>(bytes) else {
        return;
    };
    let Some(plugins) = list.get("plugins").and_then(Value::as_array) else {
        // Not a list: a runtime would read it as a single config.
        let _ = NetConf::parse(bytes);
        return;
    };
    let mut prev: Option<Value> = None;
    for plugin in plugins {
        let Value::Object(mut conf) = plugin.clone() else {
            continue;
        };
        for field in ["name", "cniVersion"] {
            if let Some(v) = list.get(field) {
                conf.insert(field.to_string(), v.clone());
            }
        }
        if let Some(p) = &prev {
            conf.insert("prevResult".to_string(), p.clone());
        }
        let Ok(derived) = serde_json::to_vec(&Value::Object(conf)) else {
            continue;
        };
        // Another plugin's config does not parse as weft's: it is taken to
        // pass the result on unchanged, as portmap and bandwidth do.
        let Ok(parsed) = NetConf::parse(&derived) else {
            continue;
        };
        for cmd in Command::ALL {
            let _ = parsed.check_for(cmd);
        }
        let _ = parsed.requested_ips();
        // What weft passes down the chain: its result merged with the one
        // it was given.
        let ours = match parsed.prev_result_neutral() {
            Ok(Some(n)) => n,
            _ => NeutralResult::default(),
        };
        if let Ok(next) = render_add(&ours, parsed.cni_version, parsed.prev_result.as_ref()) {
            prev = Some(next);
        }
    }
});
