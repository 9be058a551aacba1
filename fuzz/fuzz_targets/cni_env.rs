//! The `CNI_*` environment and `CNI_ARGS`. An input is an environment file:
//! `NAME=value` lines (bytes that are not UTF-8 are replaced, as a runtime's
//! environment reaches weft-cni only through `std::env::var`).
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use weft_cni_spec::{CniArgs, CniEnv, Command};

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes);
    let mut env = HashMap::new();
    for line in text.split('\n') {
        let (name, value) = line.split_once('=').unwrap_or((line, ""));
        // CNI_ARGS alone, whatever variable it came in.
        if let Ok(args) = CniArgs::parse(value) {
            exercise_args(&args);
        }
        env.insert(name.to_string(), value.to_string());
    }
    if let Ok(parsed) = CniEnv::from_map(&env) {
        exercise_args(&parsed.args);
        let _ = parsed.command.min_version();
    }
    // The same environment under every verb: each verb checks other fields.
    for cmd in Command::ALL {
        env.insert("CNI_COMMAND".to_string(), cmd.as_str().to_string());
        if let Ok(parsed) = CniEnv::from_map(&env) {
            exercise_args(&parsed.args);
        }
    }
});

fn exercise_args(args: &CniArgs) {
    let _ = args.ips();
    let _ = args.k8s_pod_namespace();
    let _ = args.k8s_pod_name();
    let _ = args.k8s_pod_uid();
    let _ = args.get("IgnoreUnknown");
}
