/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Service load balancing: the maps weftd fills from weft_lb::LbMaps
 * (crates/lb/src/maps.rs, cilium's lb4/lb6 shape) and the state the
 * programs keep (affinity, the socket LB's reverse entries, NodePort NAT).
 * One map per kind for both families: addresses are 16 bytes, IPv4 in the
 * first 4, like weft_ep_key. Ports are in network byte order everywhere.
 *
 * Maps (defined once in datapath bpf/lib/lb.h):
 *   weft_lb_services  HASH  weft_lb_svc_key -> weft_lb_svc_value
 *   weft_lb_backends  HASH  __u32 backend id -> weft_lb_backend
 *   weft_lb_revnat    HASH  __u32 service id -> weft_lb_revnat
 *   weft_lb_maglev    HASH (not preallocated) weft_lb_maglev_key -> weft_lb_maglev
 *   weft_lb_node      HASH  weft_lb_node_key -> __u32 (this node's addresses)
 *   weft_lb_affinity  LRU   weft_lb_affinity_key -> weft_lb_affinity_value
 *   weft_lb_sk_revnat LRU   weft_lb_sk_key -> weft_lb_revnat (socket LB replies)
 *   weft_lb_nat       LRU, pinned  weft_lb_nat_key -> weft_lb_nat_value
 *   weft_lb_stats     PERCPU_ARRAY enum weft_lb_stat
 */
#ifndef WEFT_LB_H
#define WEFT_LB_H

#include <linux/types.h>

/* weft_lb_svc_key.scope (weft_lb::Scope) */
#define WEFT_LB_SCOPE_EXT ((__u8)0) /* traffic from outside the node */
#define WEFT_LB_SCOPE_INT ((__u8)1) /* pods and the node itself */

/* weft_lb_svc_value.flags (weft_lb::maps::flags) */
#define WEFT_LB_TWO_SCOPES ((__u16)1)
#define WEFT_LB_LOCAL_ONLY ((__u16)2)
#define WEFT_LB_AFFINITY ((__u16)4)
#define WEFT_LB_MAGLEV ((__u16)8)
#define WEFT_LB_REJECT ((__u16)16)
#define WEFT_LB_DROP ((__u16)32)
#define WEFT_LB_TERMINATING ((__u16)64)

/* weft_lb_svc_value.kind (weft_lb::FrontendKind) */
#define WEFT_LB_KIND_CLUSTER_IP ((__u8)1)
#define WEFT_LB_KIND_NODE_PORT ((__u8)2)
#define WEFT_LB_KIND_EXTERNAL_IP ((__u8)3)
#define WEFT_LB_KIND_LOAD_BALANCER ((__u8)4)

/* weft_lb_backend.state (weft_lb::BackendState) */
#define WEFT_LB_BACKEND_ACTIVE ((__u8)0)
#define WEFT_LB_BACKEND_TERMINATING ((__u8)1)

/* The largest Maglev table (cilium's default M, weft_lb::maglev::DEFAULT_M). */
#define WEFT_LB_MAGLEV_MAX ((__u32)16381)

/* A frontend scope's master (slot 0) or one of its backend slots. The
 * NodePort frontend's address is all zero (any of this node's addresses). */
struct weft_lb_svc_key {
	__u8 addr[16];
	__u16 port;   /* network byte order */
	__u8 family;  /* WEFT_AF_INET or WEFT_AF_INET6 */
	__u8 proto;   /* IPPROTO_TCP / IPPROTO_UDP */
	__u16 slot;   /* 0: the master */
	__u8 scope;   /* WEFT_LB_SCOPE_* */
	__u8 pad;
};

/* Master: count, service (reverse NAT) id, kind, flags, affinity timeout.
 * Slot: backend_id, and the master's service id and kind. */
struct weft_lb_svc_value {
	__u32 backend_id;
	__u16 count;
	__u16 rev_nat_id;
	__u16 flags;        /* WEFT_LB_* */
	__u8 kind;          /* WEFT_LB_KIND_* */
	__u8 pad;
	__u32 affinity_timeout; /* seconds; 0 without ClientIP affinity */
};

struct weft_lb_backend {
	__u8 addr[16];
	__u16 port;   /* network byte order */
	__u8 family;
	__u8 proto;
	__u8 state;   /* WEFT_LB_BACKEND_* */
	__u8 pad[3];
};

/* A service id's frontend address, what replies must show as their source. */
struct weft_lb_revnat {
	__u8 addr[16];
	__u16 port;   /* network byte order */
	__u8 family;
	__u8 pad;
};

struct weft_lb_maglev_key {
	__u16 service_id;
	__u8 scope;
	__u8 pad;
};

/* A Maglev table: m backend ids (m prime, at most WEFT_LB_MAGLEV_MAX); a
 * flow takes ids[hash % m]. */
struct weft_lb_maglev {
	__u32 m;
	__u32 ids[16381];
};

/* weft_lb_node: the node's own addresses, where NodePorts answer. */
struct weft_lb_node_key {
	__u8 addr[16];
	__u8 family;
	__u8 pad[3];
};

/* weft_lb_affinity_key.family for the socket LB: the client is a network
 * namespace (its cookie in client[0..8]), not an address, since a socket
 * has no source address yet when it connects. */
#define WEFT_LB_CLIENT_NETNS ((__u8)1)

struct weft_lb_affinity_key {
	__u8 client[16]; /* address, or the netns cookie (native byte order) */
	__u8 family;     /* WEFT_AF_INET/6, or WEFT_LB_CLIENT_NETNS */
	__u8 pad;
	__u16 service_id;
};

struct weft_lb_affinity_value {
	__u32 backend_id;
	__u32 pad;
	__u64 last_seen;  /* seconds of CLOCK_MONOTONIC (bpf_ktime_get_ns) */
};

/* weft_lb_sk_revnat: one socket talking to one backend it was sent to, so
 * recvmsg and getpeername show the Service's address instead. */
struct weft_lb_sk_key {
	__u64 cookie;    /* bpf_get_socket_cookie */
	__u8 addr[16];   /* the backend */
	__u16 port;      /* network byte order */
	__u8 family;
	__u8 pad[5];
};

/* weft_lb_nat: one direction of a NodePort flow as a packet shows it at one
 * hook, and what it becomes. Addresses and ports as on the wire. */
#define WEFT_LB_NAT_IN ((__u8)0)  /* at the external device's ingress */
#define WEFT_LB_NAT_OUT ((__u8)1) /* at its egress (replies, source kept) */

struct weft_lb_nat_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 family;
	__u8 proto;
	__u8 dir;      /* WEFT_LB_NAT_IN / WEFT_LB_NAT_OUT */
	__u8 pad;
};

/* weft_lb_nat_value.flags */
#define WEFT_LB_NAT_REPLY ((__u8)1) /* this entry reverses a translation */
#define WEFT_LB_NAT_SNAT ((__u8)2)  /* the flow's source became the node's */

struct weft_lb_nat_value {
	__u8 saddr[16];   /* the packet's new source */
	__u8 daddr[16];   /* the packet's new destination */
	__u16 sport;
	__u16 dport;
	__u32 backend_id; /* forward entries: re-selected when it is gone */
	__u16 rev_nat_id;
	__u8 flags;       /* WEFT_LB_NAT_* */
	__u8 pad;
	__u32 pad2;
	__u64 last_seen;  /* ns, bpf_ktime_get_ns */
};

/* weft_lb_stats: per-CPU counters of the Service programs. */
enum weft_lb_stat {
	WEFT_LB_STAT_SOCK_XLATE = 0,  /* connects and sendmsgs sent to a backend */
	WEFT_LB_STAT_SOCK_REJECT = 1, /* refused: the Service has no backend */
	WEFT_LB_STAT_SOCK_REVNAT = 2, /* recvmsg / getpeername shown the Service */
	WEFT_LB_STAT_NP_NEW = 3,      /* new flows from outside sent to a backend */
	WEFT_LB_STAT_NP_SNAT = 4,     /* of those, source-NATed to the node */
	WEFT_LB_STAT_NP_FWD = 5,      /* packets of known flows translated */
	WEFT_LB_STAT_NP_REVNAT = 6,   /* replies translated back */
	WEFT_LB_STAT_NP_DROP = 7,     /* dropped: no backend, or no NAT port */
	WEFT_LB_STAT_SOCK_DROP = 8,   /* left untranslated to be dropped: none in the client's scope */
	WEFT_LB_STAT_NP_ICMP = 9,     /* ICMP errors about a NATed flow translated */
	WEFT_LB_STAT_MAX = 10,
};

#endif
