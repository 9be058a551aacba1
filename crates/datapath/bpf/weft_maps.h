/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Map layouts shared by the eBPF programs and weftd.
 *
 * This header is the one definition on the C side; the Rust side is
 * crates/datapath/src/fastpath/maps.rs. `layout_drift` in that module
 * compiles a probe of this header with clang and compares every size and
 * offset with the Rust structs, so the two cannot drift apart silently.
 */
#ifndef WEFT_MAPS_H
#define WEFT_MAPS_H

#include <linux/types.h>

/* How a map is declared in the object's "maps" section (weft's own loader
 * reads these; see crates/datapath/src/bpf). */
struct weft_map_def {
	__u32 type;
	__u32 key_size;
	__u32 value_size;
	__u32 max_entries;
	__u32 map_flags;
};

#define WEFT_AF_INET 4
#define WEFT_AF_INET6 6

/* weft_endpoints: one entry per pod address on this node. */
struct weft_ep_key {
	__u8 family;   /* WEFT_AF_INET or WEFT_AF_INET6 */
	__u8 pad[3];
	__u8 addr[16]; /* IPv4 in the first 4 bytes, the rest zero */
};

/* The endpoint may be reached, and may send, without the host stack: the
 * agent has seen no tc shaping (qdisc) on its host veth. */
#define WEFT_EP_FAST 1

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

/* weft_stats: per-CPU counters, indexed by these. */
enum weft_stat {
	WEFT_STAT_LOCAL = 0,      /* redirected into a pod on this node */
	WEFT_STAT_REMOTE = 1,     /* redirected towards another node */
	WEFT_STAT_PASS_NOT_POD = 2, /* not for a cluster pod: host stack */
	WEFT_STAT_PASS_TRACKED = 3, /* conntrack knows the flow (NAT): stack */
	WEFT_STAT_PASS_SLOW_EP = 4, /* endpoint shaped, unknown or spoofed */
	WEFT_STAT_PASS_PROTO = 5,   /* not TCP/UDP, fragment, options, TTL */
	WEFT_STAT_PASS_FIB = 6,     /* no route, or not via the remote device */
	WEFT_STAT_MAX = 7,
};

#endif
