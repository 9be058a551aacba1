/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Map layouts shared by the eBPF programs and weftd: the one definition.
 *
 * The Rust twins (crates/bpf-abi) are generated from this file at build
 * time, so a struct or constant added here reaches Rust with no second
 * edit. The generator reads a small subset of C, one item per line:
 *   #define WEFT_NAME ((__u8)4)       a typed constant (untyped: __u32)
 *   struct weft_name { __u32 f; __u8 g[6]; };   fields of __u8/16/32/64, __s32
 *   enum weft_name { WEFT_X = 0, ... };          see counters.h
 * and refuses implicit padding: write explicit `pad` fields.
 */
#ifndef WEFT_MAPS_H
#define WEFT_MAPS_H

#include <linux/types.h>

/* How a map is declared in the object's "maps" section (weft's own loader
 * reads these; see crates/bpf). pinning: WEFT_PIN_*. */
struct weft_map_def {
	__u32 type;
	__u32 key_size;
	__u32 value_size;
	__u32 max_entries;
	__u32 map_flags;
	__u32 pinning;
};

/* Fresh at every load / kept under the agent's pin directory by name. */
#define WEFT_PIN_NONE ((__u32)0)
#define WEFT_PIN_BY_NAME ((__u32)1)

#define WEFT_AF_INET ((__u8)4)
#define WEFT_AF_INET6 ((__u8)6)

/* weft_endpoints: one entry per pod address on this node. */
struct weft_ep_key {
	__u8 family;   /* WEFT_AF_INET or WEFT_AF_INET6 */
	__u8 pad[3];
	__u8 addr[16]; /* IPv4 in the first 4 bytes, the rest zero */
};

/* The endpoint may be reached, and may send, without the host stack: the
 * agent has seen no tc shaping (qdisc) on its host veth. */
#define WEFT_EP_FAST ((__u8)1)

struct weft_ep_value {
	__u32 host_ifindex; /* the host-side veth in the node's netns */
	__u8 pod_mac[6];
	__u8 flags;         /* WEFT_EP_* */
	__u8 pad;
};

/* weft_cluster: LPM trie of the cluster's pod pools. prefixlen counts the
 * bits of family and pad too: an IPv4 /16 is 32 + 16. */
struct weft_cidr_key {
	__u32 prefixlen;
	__u8 family;
	__u8 pad[3];
	__u8 addr[16];
};

/* weft_config: one entry (key 0). */
struct weft_config {
	/* where traffic to other nodes' pods leaves this node: the VXLAN device
	 * (overlay) or the underlay device (native); 0 = never redirect there */
	__u32 remote_ifindex;
	__u32 flags;
};

#endif
