/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Flow events: what the programs decided about a flow, sent to weftd through
 * the BPF ring buffer weft_flows (datapath bpf/lib/flow.h emits them).
 *
 * One event per decision that matters, never one per packet: a dropped
 * flow at most once per WEFT_FLOW_DROP_INTERVAL_NS (rate-limited per flow),
 * the first packet of an allowed connection, a Service translation, and a
 * connection's end with its counts where a program sees it.
 */
#ifndef WEFT_FLOW_H
#define WEFT_FLOW_H

#include <linux/types.h>

/* weft_flow_event.verdict */
#define WEFT_VERDICT_FORWARDED ((__u8)1)
#define WEFT_VERDICT_DROPPED ((__u8)2)
#define WEFT_VERDICT_AUDIT ((__u8)3)      /* would be dropped; audit mode let it pass */
#define WEFT_VERDICT_TRANSLATED ((__u8)4) /* a Service address turned into a backend's */

/* weft_flow_event.kind */
#define WEFT_FLOW_KIND_DECISION ((__u8)1) /* a drop, or a connection's first packet */
#define WEFT_FLOW_KIND_END ((__u8)2)      /* a connection ended: packets and bytes */

/* weft_flow_event.point: where the program stood */
#define WEFT_POINT_FROM_POD ((__u8)1) /* host veth ingress (the pod sends) */
#define WEFT_POINT_TO_POD ((__u8)2)   /* on the way into a pod */
#define WEFT_POINT_SOCKET ((__u8)3)   /* cgroup socket hooks (Service connect) */
#define WEFT_POINT_NODEPORT ((__u8)4) /* tc on the node's external device */

/* weft_flow_event.direction: whose policy decided */
#define WEFT_DIR_INGRESS ((__u8)0) /* the destination pod's ingress */
#define WEFT_DIR_EGRESS ((__u8)1)  /* the source pod's egress */
#define WEFT_DIR_NONE ((__u8)2)    /* no policy involved */

/* A rate-limited drop is reported at most this often per flow. */
#define WEFT_FLOW_DROP_INTERVAL_NS ((__u64)1000000000)

/* weft_flow_event.drop_reason (0 unless DROPPED or AUDIT); each reason is
 * also a counter of weft_drops (per CPU), like enum weft_stat. */
enum weft_drop {
	WEFT_DROP_NONE = 0,           /* not dropped */
	WEFT_DROP_POLICY_DENIED = 1,  /* a rule that denies (admin or baseline tier) */
	WEFT_DROP_POLICY_DEFAULT = 2, /* a policy's default deny: isolated, no rule allows */
	WEFT_DROP_NO_BACKEND = 3,     /* a Service with no usable endpoint */
	WEFT_DROP_SPOOFED = 4,        /* a pod sent an address that is not its own */
	WEFT_DROP_MAX = 5,
};

struct weft_flow_event {
	__u64 ts_ns;        /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u8 src[16];       /* IPv4 in the first 4 bytes */
	__u8 dst[16];       /* as sent, i.e. before any Service translation */
	__u8 family;        /* WEFT_AF_INET or WEFT_AF_INET6 */
	__u8 proto;         /* IP protocol */
	__u8 verdict;       /* WEFT_VERDICT_* */
	__u8 kind;          /* WEFT_FLOW_KIND_* */
	__u16 sport;        /* network byte order */
	__u16 dport;        /* network byte order */
	__u8 tcp_flags;     /* the TCP header's flags byte (FIN 0x01 .. CWR 0x80) */
	__u8 point;         /* WEFT_POINT_* */
	__u8 direction;     /* WEFT_DIR_* */
	__u8 drop_reason;   /* enum weft_drop */
	__u32 ifindex;      /* the device the program ran on */
	__u32 rule_id;      /* the policy compiler's rule id that decided; 0 = none */
	__u32 pad;
	__u64 packets;      /* KIND_END: packets of the connection, else 1 */
	__u64 bytes;        /* KIND_END: bytes of the connection, else this packet's */
	__u8 xlat_dst[16];  /* TRANSLATED: the backend's address */
	__u16 xlat_dport;   /* TRANSLATED: the backend's port, network byte order */
	__u8 pad2[6];
};

#endif
