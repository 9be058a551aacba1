//! The agent's own record of one pod interface, as the endpoint table keeps
//! and persists it. The API's [`EndpointInfo`] is what the CLI sees; this is
//! what weftd works with, typed where the wire form is text (the MAC), and
//! converted at the edge ([`Endpoint::info`]).
//!
//! The stored JSON is the same as [`EndpointInfo`]'s (the MAC as
//! `aa:bb:cc:dd:ee:ff`), so records written before this type existed decode
//! unchanged, and a record of this type reads as an `EndpointInfo`.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use weft_api::{Attachment, EndpointInfo, PodRef};

/// One pod interface on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub attachment: Attachment,
    pub pod: PodRef,
    pub network: String,
    /// The pod's netns path, as the runtime gave it.
    pub netns: String,
    pub host_ifname: String,
    /// The MAC of the pod's interface.
    #[serde(with = "mac_text")]
    pub mac: [u8; 6],
    pub mtu: u32,
    pub ips: Vec<IpNet>,
    /// Unix seconds.
    pub created_at: u64,
}

impl Endpoint {
    /// The API's view of this endpoint (`weft endpoints`).
    pub fn info(&self) -> EndpointInfo {
        EndpointInfo {
            attachment: self.attachment.clone(),
            pod: self.pod.clone(),
            network: self.network.clone(),
            netns: self.netns.clone(),
            host_ifname: self.host_ifname.clone(),
            mac: weft_datapath::format_mac(self.mac),
            mtu: self.mtu,
            ips: self.ips.clone(),
            created_at: self.created_at,
        }
    }
}

/// `aa:bb:cc:dd:ee:ff` in, `[u8; 6]` out, and back (lowercase).
pub(crate) fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut out {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        *byte = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// The MAC as text in the record, as `EndpointInfo` has always stored it.
mod mac_text {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(mac: &[u8; 6], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&weft_datapath::format_mac(*mac))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 6], D::Error> {
        let text = String::deserialize(d)?;
        super::parse_mac(&text)
            .ok_or_else(|| D::Error::custom(format!("mac {text:?} is not aa:bb:cc:dd:ee:ff")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as weftd wrote it before it had its own type (taken from a
    /// node's endpoints.db).
    const OLD_RECORD: &str = r#"{"attachment":{"container_id":"3f2a","ifname":"eth0"},"pod":{"namespace":"shop","name":"web-1","uid":"u1"},"network":"weft","netns":"/run/netns/p1","host_ifname":"weft0123456789a","mac":"0a:58:0a:f4:00:05","mtu":1450,"ips":["10.244.0.5/32","fd00:10:244::5/128"],"created_at":1764700000}"#;

    #[test]
    fn an_old_record_decodes_and_encodes_the_same() {
        let ep: Endpoint = serde_json::from_str(OLD_RECORD).unwrap();
        assert_eq!(ep.mac, [0x0a, 0x58, 0x0a, 0xf4, 0x00, 0x05]);
        assert_eq!(ep.host_ifname, "weft0123456789a");
        assert_eq!(ep.ips.len(), 2);
        assert_eq!(serde_json::to_string(&ep).unwrap(), OLD_RECORD);
        // and the API type reads it as it always did
        let info: EndpointInfo = serde_json::from_str(OLD_RECORD).unwrap();
        assert_eq!(ep.info(), info);
    }

    #[test]
    fn a_record_with_an_unreadable_mac_is_refused() {
        for bad in [
            "not a mac",
            "0a:58:0a:f4:00",
            "0a:58:0a:f4:00:05:06",
            "0a:58:0a:f4:00:x5",
            "0a:58:0a:f4:00:005",
        ] {
            let text = OLD_RECORD.replace("0a:58:0a:f4:00:05", bad);
            let e = serde_json::from_str::<Endpoint>(&text).unwrap_err();
            assert!(e.to_string().contains("is not aa:bb"), "{bad}: {e}");
        }
    }

    #[test]
    fn macs_round_trip_as_text() {
        for mac in [[0; 6], [0xff; 6], [0x0a, 0x58, 1, 2, 3, 0xfe]] {
            assert_eq!(parse_mac(&weft_datapath::format_mac(mac)), Some(mac));
        }
        assert_eq!(
            parse_mac("0A:58:0a:F4:00:05"),
            Some([0x0a, 0x58, 0x0a, 0xf4, 0, 5])
        );
    }
}
