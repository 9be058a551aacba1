//! The JSON bodies of the agent API: the requests weftd decodes from any
//! client of its socket, and the replies the shim and the CLI decode. The
//! first byte picks the type, the rest is the body. A body that decodes
//! must encode and decode again to the same value (what the shim sends is
//! what weftd reads).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use weft_api::{
    AddRequest, AgentStatus, CheckRequest, CniError, DelRequest, Empty, EndpointInfo, GcReply,
    GcRequest, IpamCheckReport, IpamView, NeutralResult, StatusRequest,
};

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(body: &[u8]) {
    let Ok(value) = serde_json::from_slice::<T>(body) else {
        return;
    };
    let Ok(encoded) = serde_json::to_vec(&value) else {
        return;
    };
    match serde_json::from_slice::<T>(&encoded) {
        Ok(again) => assert_eq!(again, value, "changed by a round trip"),
        Err(e) => panic!("a decoded body does not decode once encoded: {e}"),
    }
}

fuzz_target!(|bytes: &[u8]| {
    let Some((&which, body)) = bytes.split_first() else {
        return;
    };
    match which % 13 {
        0 => round_trip::<AddRequest>(body),
        1 => round_trip::<DelRequest>(body),
        2 => round_trip::<CheckRequest>(body),
        3 => round_trip::<GcRequest>(body),
        4 => round_trip::<StatusRequest>(body),
        5 => round_trip::<Empty>(body),
        6 => round_trip::<GcReply>(body),
        7 => round_trip::<AgentStatus>(body),
        8 => round_trip::<Vec<EndpointInfo>>(body),
        9 => round_trip::<IpamView>(body),
        10 => round_trip::<IpamCheckReport>(body),
        11 => round_trip::<CniError>(body),
        _ => round_trip::<NeutralResult>(body),
    }
});
