//! The network config weft-cni reads on stdin, and everything the shim does
//! with a config that parsed: the per-verb checks, requested addresses,
//! `prevResult` in any version, results rendered and merged in every version.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_cni_spec::version::sniff_cni_version;
use weft_cni_spec::{
    parse_result, render_add, version_reply, CniVersion, Command, NetConf, NeutralResult,
};

fuzz_target!(|bytes: &[u8]| {
    let _ = sniff_cni_version(bytes);
    let _ = version_reply(bytes);
    let Ok(conf) = NetConf::parse(bytes) else {
        return;
    };
    for cmd in Command::ALL {
        let _ = conf.check_for(cmd);
    }
    let _ = conf.requested_ips();
    let prev = conf.prev_result_neutral();
    let ours = NeutralResult::default();
    for v in CniVersion::ALL {
        let _ = render_add(&ours, v, conf.prev_result.as_ref());
    }
    // A prevResult that parsed is rendered back in every version, and what
    // is rendered parses again (the shim hands it to the next plugin).
    if let Ok(Some(prev)) = prev {
        for v in CniVersion::ALL {
            let _ = render_add(&prev, v, conf.prev_result.as_ref());
            let _ = parse_result(&weft_cni_spec::render_result(&prev, v), "rendered");
        }
    }
});
