/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * NetworkPolicy maps (datapath bpf/lib/policy.h): the ipcache, one global
 * policy trie for every endpoint, the endpoints' policy state, the policy
 * conntrack and the per-rule hit counters. Every one is pinned: a weftd
 * restart keeps enforcing with the maps the previous one filled.
 *
 * weft_ipcache: LPM trie, key struct weft_cidr_key (weft/maps.h: prefixlen
 * counts the 32 bits of family and pad), value __u32 identity. A miss is the
 * world (WEFT_IDENTITY_WORLD).
 */
#ifndef WEFT_POLICY_H
#define WEFT_POLICY_H

#include <linux/types.h>

/* The identity of an address no ipcache entry covers. */
#define WEFT_IDENTITY_WORLD ((__u32)2)
/* Policy entries of rules without peers (every identity). */
#define WEFT_IDENTITY_ANY ((__u32)0)

/* weft_policy_key.direction */
#define WEFT_POLICY_INGRESS ((__u8)0)
#define WEFT_POLICY_EGRESS ((__u8)1)

/* weft_policy: LPM trie for every endpoint. The data is the endpoint id
 * (all 32 bits always in the prefix, so its byte order is moot) and then
 * the 8 bytes of weft_policy::PolicyKey::to_bytes; prefixlen = 32 + the
 * policy key's prefix length (40: every protocol, 48: one protocol, 48 + n:
 * a block of ports). The programs look up with prefixlen 96. */
struct weft_policy_key {
	__u32 prefixlen;
	__u32 endpoint;  /* chosen by weftd, nonzero */
	__u32 identity;  /* the peer's identity, network byte order */
	__u8 direction;  /* WEFT_POLICY_INGRESS or WEFT_POLICY_EGRESS */
	__u8 proto;      /* IP protocol (0 with prefix 40) */
	__u16 port;      /* destination port, network byte order */
};

/* weft_policy_value.action */
#define WEFT_POLICY_ALLOW ((__u8)1)
#define WEFT_POLICY_DENY ((__u8)2)
/* denies as the isolating policy's default deny (a region flattened to
 * it under an Admin Pass): dropped as WEFT_DROP_POLICY_DEFAULT, like a
 * miss on an isolated endpoint, never as WEFT_DROP_POLICY_DENIED */
#define WEFT_POLICY_DEFAULT_DENY ((__u8)3)

struct weft_policy_value {
	__u32 rule_id;   /* weft_policy::RuleIds of the deciding rule */
	__u8 action;     /* WEFT_POLICY_ALLOW, _DENY or _DEFAULT_DENY */
	__u8 pad[3];
};

/* weft_policy_ep.flags */
#define WEFT_POLICY_INGRESS_ISOLATED ((__u8)1)
#define WEFT_POLICY_EGRESS_ISOLATED ((__u8)2)
/* would-be drops pass and are reported as WEFT_VERDICT_AUDIT */
#define WEFT_POLICY_AUDIT ((__u8)4)
/* the endpoint has weft_policy entries in that direction (a
 * ClusterNetworkPolicy may give entries without isolation): with neither
 * this nor isolation in a direction nothing there can be denied, and with
 * neither in both directions the programs skip the endpoint entirely */
#define WEFT_POLICY_INGRESS_RULES ((__u8)8)
#define WEFT_POLICY_EGRESS_RULES ((__u8)16)

/* weft_policy_eps: pod address (struct weft_ep_key) -> its policy state.
 * An address without an entry is not policy-managed: nothing is judged. */
struct weft_policy_ep {
	__u32 endpoint;      /* the id in weft_policy_key.endpoint */
	__u32 ingress_deny;  /* rule id reported for ingress's default deny */
	__u32 egress_deny;   /* rule id reported for egress's default deny */
	__u8 flags;          /* WEFT_POLICY_INGRESS_ISOLATED | ... */
	__u8 pad[3];
	/* changes (never back to an earlier value, restarts included) after
	 * every write that may change a decision for this endpoint: its
	 * entries, its flags, the ipcache; see weft_policy_ct_value.revision */
	__u32 revision;
};

/* weft_policy_ct: LRU hash of connections a policy let through, one entry
 * per connection and endpoint of this node, keyed from the endpoint's side:
 * its own address and port, the peer's. Every packet of the connection at
 * that endpoint (sent or received) finds it with one lookup; the value says
 * which way the first packet went (WEFT_POLICY_CT_INBOUND), so a packet
 * going the other way is a reply and passes without a policy lookup. Ports
 * are 0 for protocols without them (ICMP). */
struct weft_policy_ct_key {
	__u8 local[16];   /* the endpoint's address; IPv4 in the first 4 bytes */
	__u8 peer[16];
	__u16 local_port; /* network byte order */
	__u16 peer_port;  /* network byte order */
	__u8 family;      /* WEFT_AF_INET or WEFT_AF_INET6 */
	__u8 proto;
	__u8 pad[2];
};

/* weft_policy_ct_value.flags: a FIN was seen (KIND_END reported) */
#define WEFT_POLICY_CT_ENDED ((__u8)1)
/* let through by audit only (a would-be drop): never trusted, every
 * forward packet is judged and reported again */
#define WEFT_POLICY_CT_AUDITED ((__u8)2)
/* the peer opened the connection: the endpoint's ingress policy allowed it
 * (else its egress policy did) */
#define WEFT_POLICY_CT_INBOUND ((__u8)4)
/* a rule decided the flow (rule_id counts in weft_rule_hits); else nothing
 * applied in that direction and the flow passed unisolated */
#define WEFT_POLICY_CT_DECIDED ((__u8)8)

struct weft_policy_ct_value {
	__u64 packets;    /* both directions */
	__u64 bytes;
	__u64 last_ns;    /* bpf_ktime_get_ns() of the last packet */
	__u32 rule_id;    /* the rule that allowed the first packet */
	/* weft_policy_ep.revision of the endpoint whose policy allowed the
	 * flow, when it was judged: while it is unchanged the next forward
	 * packets pass on this entry without a policy lookup; after a change
	 * the next one is judged again (and the flow stops if no longer
	 * allowed) */
	__u32 revision;
	__u8 flags;       /* WEFT_POLICY_CT_* */
	__u8 pad[7];
};

/* weft_config.flags (weft/maps.h): enforce policy / do not forward (the
 * programs are attached for policy alone, --fastpath off) / report no flow
 * events (weftd --flows off; drops are still counted). */
#define WEFT_CONFIG_POLICY ((__u32)1)
#define WEFT_CONFIG_NO_FORWARD ((__u32)2)
#define WEFT_CONFIG_NO_FLOWS ((__u32)4)

#endif
