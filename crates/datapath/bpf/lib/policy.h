/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * NetworkPolicy: the maps (layouts in weft/policy.h, all pinned) and the
 * judgement of one packet for one pod's policy in one direction.
 *
 *   peer address -> identity (weft_ipcache; a miss is the world)
 *   -> (endpoint, identity, direction, proto, dport) in weft_policy, then
 *      the same with identity 0 (rules without peers)
 *   -> a hit decides (ALLOW or DENY, with its rule id); a miss denies when
 *      the pod is isolated in that direction (its default-deny rule id),
 *      and allows otherwise.
 *
 * weft_policy_ct remembers what was allowed: a packet whose reversed tuple
 * is there (allowed by the other direction's policy) is a reply and passes
 * with no lookup. Forward packets are judged every time, so a policy change
 * that removes an allow stops an established flow at its next packet (and
 * drops its entry, so its replies stop too), while flows still allowed go
 * on. TCP RST ends an entry; FIN reports its end and keeps it for the rest
 * of the close handshake (a later SYN starts afresh).
 *
 * ICMP errors (unreachable, too big, time exceeded, parameter problem)
 * about a connection the conntrack holds pass as its replies do, whoever
 * sends them (a router's "packet too big" included); others are judged as
 * ICMP.
 *
 * Non-first fragments carry no ports: they pass. The first fragment carries
 * them and is judged; without it the receiver cannot reassemble the
 * datagram, so a denied first fragment denies the whole datagram.
 */
#ifndef WEFT_LIB_POLICY_H
#define WEFT_LIB_POLICY_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lib/maps.h"
#include "lib/flow.h"
#include "weft/policy.h"
#include "weft/verdicts.h"

struct weft_map_def SEC("maps") weft_ipcache = {
	.type = BPF_MAP_TYPE_LPM_TRIE,
	.key_size = sizeof(struct weft_cidr_key),
	.value_size = sizeof(__u32),
	.max_entries = 65536,
	.map_flags = BPF_F_NO_PREALLOC,
	.pinning = WEFT_PIN_BY_NAME,
};

struct weft_map_def SEC("maps") weft_policy = {
	.type = BPF_MAP_TYPE_LPM_TRIE,
	.key_size = sizeof(struct weft_policy_key),
	.value_size = sizeof(struct weft_policy_value),
	.max_entries = 262144,
	.map_flags = BPF_F_NO_PREALLOC,
	.pinning = WEFT_PIN_BY_NAME,
};

struct weft_map_def SEC("maps") weft_policy_eps = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(struct weft_ep_key),
	.value_size = sizeof(struct weft_policy_ep),
	.max_entries = 65536,
	.map_flags = BPF_F_NO_PREALLOC,
	.pinning = WEFT_PIN_BY_NAME,
};

struct weft_map_def SEC("maps") weft_policy_ct = {
	.type = BPF_MAP_TYPE_LRU_HASH,
	.key_size = sizeof(struct weft_policy_ct_key),
	.value_size = sizeof(struct weft_policy_ct_value),
	.max_entries = 65536,
	.pinning = WEFT_PIN_BY_NAME,
};

/* rule id -> packets its entry decided (per CPU). */
struct weft_map_def SEC("maps") weft_rule_hits = {
	.type = BPF_MAP_TYPE_PERCPU_HASH,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = 65536,
	.map_flags = BPF_F_NO_PREALLOC,
	.pinning = WEFT_PIN_BY_NAME,
};

/* Room for one flow event per CPU: the programs' stack (512 bytes) cannot
 * hold it beside the fast path's state. */
struct weft_map_def SEC("maps") weft_policy_scratch = {
	.type = BPF_MAP_TYPE_PERCPU_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(struct weft_flow_event),
	.max_entries = 1,
};

#define POLICY_PASS 0
#define POLICY_DROP 1

/* How long an idle entry still answers for replies (Cilium's defaults): a
 * stale entry must not let an old peer's packets in as "replies" forever. */
#define CT_TCP_IDLE_NS (6ULL * 3600 * 1000000000)
#define CT_OTHER_IDLE_NS (60ULL * 1000000000)
#define CT_ENDED_IDLE_NS (10ULL * 1000000000)

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

/* What policy needs of a packet. */
struct pflow {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport; /* network byte order; 0 without ports */
	__u16 dport;
	__u8 family;
	__u8 proto;
	__u8 tcp_flags;
	__u8 later_fragment; /* a non-first fragment: no ports to judge */
	__u32 len;
	/* an ICMP error: where the packet it is about starts, else 0 */
	__u16 inner_off;
	__u16 pad;
};

static __always_inline __u32 policy_flags(void)
{
	__u32 zero = 0;
	struct weft_config *cfg = bpf_map_lookup_elem(&weft_config, &zero);

	return cfg ? cfg->flags : 0;
}

/* The L4 part of the parse, at `off`. Truncated headers leave ports 0 (the
 * packet is still judged, and the stack drops what is malformed). */
static __always_inline void policy_parse_l4(struct __sk_buff *skb, struct pflow *p, __u32 off)
{
	__u8 l4[14];

	if (p->later_fragment)
		return;
	if (p->proto == IPPROTO_TCP) {
		if (bpf_skb_load_bytes(skb, off, l4, 14) == 0) {
			__builtin_memcpy(&p->sport, l4, 2);
			__builtin_memcpy(&p->dport, l4 + 2, 2);
			p->tcp_flags = l4[13];
		}
	} else if (p->proto == IPPROTO_UDP || p->proto == 132 /* SCTP */) {
		if (bpf_skb_load_bytes(skb, off, l4, 4) == 0) {
			__builtin_memcpy(&p->sport, l4, 2);
			__builtin_memcpy(&p->dport, l4 + 2, 2);
		}
	} else if (p->proto == IPPROTO_ICMP || p->proto == 58 /* ICMPv6 */) {
		/* errors (unreachable, too big, time exceeded, parameter
		 * problem) quote the packet they are about after 8 bytes */
		if (bpf_skb_load_bytes(skb, off, l4, 1) == 0 && off < 0xff00 &&
		    (p->proto == IPPROTO_ICMP ? l4[0] == 3 || l4[0] == 11 || l4[0] == 12
					      : l4[0] >= 1 && l4[0] <= 4))
			p->inner_off = off + 8;
	}
}

/* Returns 0 when `p` is an IP packet to judge. */
static __always_inline int policy_parse(struct __sk_buff *skb, struct pflow *p)
{
	__u16 proto;

	if (bpf_skb_load_bytes(skb, 12, &proto, 2))
		return -1;
	p->len = skb->len;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)))
			return -1;
		p->family = WEFT_AF_INET;
		p->proto = ip.protocol;
		__builtin_memcpy(p->src, &ip.saddr, 4);
		__builtin_memcpy(p->dst, &ip.daddr, 4);
		p->later_fragment = (ip.frag_off & bpf_htons(0x1fff)) != 0;
		policy_parse_l4(skb, p, ETH_HLEN + ip.ihl * 4);
		return 0;
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		__u32 off = ETH_HLEN + sizeof(ip6);
		__u8 next;
		int i;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)))
			return -1;
		p->family = WEFT_AF_INET6;
		__builtin_memcpy(p->src, &ip6.saddr, 16);
		__builtin_memcpy(p->dst, &ip6.daddr, 16);
		next = ip6.nexthdr;
		/* extension headers: hop-by-hop, routing, fragment, destination */
#pragma unroll
		for (i = 0; i < 4; i++) {
			__u8 h[4];

			if (next != 0 && next != 43 && next != 44 && next != 60)
				break;
			if (bpf_skb_load_bytes(skb, off, h, 4))
				return -1;
			if (next == 44) {
				/* fragment offset: the 13 high bits of bytes 2..3 */
				if (((h[2] << 8) | h[3]) & 0xfff8)
					p->later_fragment = 1;
				off += 8;
			} else {
				off += (h[1] + 1) * 8;
			}
			next = h[0];
		}
		p->proto = next;
		policy_parse_l4(skb, p, off);
		/* neighbour discovery (133..137) is the link's own business */
		if (next == 58 /* ICMPv6 */ && !p->later_fragment) {
			__u8 type;

			if (bpf_skb_load_bytes(skb, off, &type, 1) == 0 && type >= 133 && type <= 137)
				return -1;
		}
		return 0;
	}
	return -1;
}

static __always_inline void policy_event(struct __sk_buff *skb, const struct pflow *p,
					 __u8 verdict, __u8 kind, __u8 dir, __u8 reason,
					 __u32 rule, __u8 point, __u64 packets, __u64 bytes)
{
	__u32 zero = 0;
	struct weft_flow_event *e = bpf_map_lookup_elem(&weft_policy_scratch, &zero);

	/* --flows off: no event, but a drop still counts */
	if (policy_flags() & WEFT_CONFIG_NO_FLOWS) {
		if (verdict == WEFT_VERDICT_DROPPED)
			flow_count_drop(reason);
		return;
	}
	if (!e)
		return;
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	__builtin_memcpy(e->src, p->src, 16);
	__builtin_memcpy(e->dst, p->dst, 16);
	e->family = p->family;
	e->proto = p->proto;
	e->verdict = verdict;
	e->kind = kind;
	e->sport = p->sport;
	e->dport = p->dport;
	e->tcp_flags = p->tcp_flags;
	e->point = point;
	e->direction = dir;
	e->drop_reason = reason;
	e->ifindex = skb->ifindex;
	e->rule_id = rule;
	e->packets = packets;
	e->bytes = bytes;
	flow_report(e);
}

static __always_inline void rule_hit(__u32 rule)
{
	__u64 one = 1, *n = bpf_map_lookup_elem(&weft_rule_hits, &rule);

	if (n)
		*n += 1;
	else
		bpf_map_update_elem(&weft_rule_hits, &rule, &one, BPF_NOEXIST);
}

/* The entry of `k`, unless it has been idle too long (then it is removed). */
static __always_inline struct weft_policy_ct_value *ct_lookup(struct weft_policy_ct_key *k)
{
	struct weft_policy_ct_value *ct = bpf_map_lookup_elem(&weft_policy_ct, k);
	__u64 idle = CT_OTHER_IDLE_NS;

	if (!ct)
		return 0;
	if (ct->flags & WEFT_POLICY_CT_ENDED)
		idle = CT_ENDED_IDLE_NS;
	else if (k->proto == IPPROTO_TCP)
		idle = CT_TCP_IDLE_NS;
	if (bpf_ktime_get_ns() - ct->last_ns <= idle)
		return ct;
	bpf_map_delete_elem(&weft_policy_ct, k);
	return 0;
}

/* The connection's end: one KIND_END with its counts. */
static __always_inline void ct_end(struct __sk_buff *skb, const struct pflow *p, __u8 dir,
				   __u8 point, struct weft_policy_ct_value *ct)
{
	if (ct->flags & WEFT_POLICY_CT_ENDED)
		return;
	ct->flags |= WEFT_POLICY_CT_ENDED;
	policy_event(skb, p, WEFT_VERDICT_FORWARDED, WEFT_FLOW_KIND_END, dir, 0, ct->rule_id,
		     point, ct->packets, ct->bytes);
}

/* Counts a packet on an entry; TCP FIN/RST end it. */
static __always_inline void ct_account(struct __sk_buff *skb, const struct pflow *p, __u8 dir,
				       __u8 point, struct weft_policy_ct_key *k,
				       struct weft_policy_ct_value *ct)
{
	__sync_fetch_and_add(&ct->packets, 1);
	__sync_fetch_and_add(&ct->bytes, p->len);
	ct->last_ns = bpf_ktime_get_ns();
	if (p->proto != IPPROTO_TCP)
		return;
	if (p->tcp_flags & (TCP_FIN | TCP_RST))
		ct_end(skb, p, dir, point, ct);
	if (p->tcp_flags & TCP_RST)
		bpf_map_delete_elem(&weft_policy_ct, k);
}

/* Whether `p`, an ICMP error, is about a connection the conntrack holds
 * (path MTU, port unreachable, ...): the quoted packet went the way of the
 * connection or of its replies. Such errors pass as replies do. `k` is
 * scratch. */
static __always_inline int policy_related(struct __sk_buff *skb, const struct pflow *p,
					  __u8 dir, struct weft_policy_ct_key *k)
{
	__u32 off = p->inner_off;
	__u16 ports[2] = {};
	__u8 tmp[16];

	if (p->family == WEFT_AF_INET) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)))
			return 0;
		k->proto = ip.protocol;
		__builtin_memset(k->src, 0, 16);
		__builtin_memset(k->dst, 0, 16);
		__builtin_memcpy(k->src, &ip.saddr, 4);
		__builtin_memcpy(k->dst, &ip.daddr, 4);
		off += ip.ihl * 4;
	} else {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)))
			return 0;
		k->proto = ip6.nexthdr;
		__builtin_memcpy(k->src, &ip6.saddr, 16);
		__builtin_memcpy(k->dst, &ip6.daddr, 16);
		off += sizeof(ip6);
	}
	if (k->proto == IPPROTO_TCP || k->proto == IPPROTO_UDP || k->proto == 132)
		if (bpf_skb_load_bytes(skb, off, ports, 4))
			return 0;
	/* the quoted packet as it went: of a connection the other direction's
	 * policy recorded, ... */
	k->sport = ports[0];
	k->dport = ports[1];
	k->direction = !dir;
	if (ct_lookup(k))
		return 1;
	/* ... or a reply of one this direction's policy recorded */
	__builtin_memcpy(tmp, k->src, 16);
	__builtin_memcpy(k->src, k->dst, 16);
	__builtin_memcpy(k->dst, tmp, 16);
	k->sport = ports[1];
	k->dport = ports[0];
	k->direction = dir;
	return ct_lookup(k) != 0;
}

/* Judges `p` for the policy of the pod at its destination (ingress) or its
 * source (egress). POLICY_PASS or POLICY_DROP. */
static __always_inline int policy_judge(struct __sk_buff *skb, const struct pflow *p, __u8 dir,
					__u8 point)
{
	struct weft_ep_key ek = { .family = p->family };
	struct weft_policy_ct_key k = { .family = p->family, .proto = p->proto };
	struct weft_policy_key pk = { .prefixlen = 96 };
	struct weft_cidr_key ck = { .family = p->family };
	struct weft_policy_ct_value *ct, fresh = {};
	struct weft_policy_value *v;
	struct weft_policy_ep *ep;
	const __u8 *peer;
	__u32 *id, rule = 0;
	__u8 action = 0, isolated;

	if (p->later_fragment)
		return POLICY_PASS;
	__builtin_memcpy(ek.addr, dir == WEFT_POLICY_INGRESS ? p->dst : p->src, 16);
	ep = bpf_map_lookup_elem(&weft_policy_eps, &ek);
	if (!ep)
		return POLICY_PASS;
	if (p->inner_off) {
		if (policy_related(skb, p, dir, &k))
			return POLICY_PASS;
		k.proto = p->proto;
	}

	/* a reply: the reversed tuple was allowed by the other direction */
	__builtin_memcpy(k.src, p->dst, 16);
	__builtin_memcpy(k.dst, p->src, 16);
	k.sport = p->dport;
	k.dport = p->sport;
	k.direction = !dir;
	ct = ct_lookup(&k);
	if (ct) {
		ct_account(skb, p, !dir, point, &k, ct);
		return POLICY_PASS;
	}

	/* forward: the policy, every packet */
	peer = dir == WEFT_POLICY_INGRESS ? p->src : p->dst;
	__builtin_memcpy(ck.addr, peer, 16);
	ck.prefixlen = 32 + (p->family == WEFT_AF_INET ? 32 : 128);
	id = bpf_map_lookup_elem(&weft_ipcache, &ck);
	pk.endpoint = ep->endpoint;
	pk.identity = bpf_htonl(id ? *id : WEFT_IDENTITY_WORLD);
	pk.direction = dir;
	pk.proto = p->proto;
	pk.port = p->dport;
	v = bpf_map_lookup_elem(&weft_policy, &pk);
	if (!v) {
		pk.identity = WEFT_IDENTITY_ANY;
		v = bpf_map_lookup_elem(&weft_policy, &pk);
	}
	isolated = ep->flags & (dir == WEFT_POLICY_INGRESS ? WEFT_POLICY_INGRESS_ISOLATED
							   : WEFT_POLICY_EGRESS_ISOLATED);
	if (v) {
		action = v->action;
		rule = v->rule_id;
		rule_hit(rule);
	} else if (isolated) {
		action = WEFT_POLICY_DENY;
		rule = dir == WEFT_POLICY_INGRESS ? ep->ingress_deny : ep->egress_deny;
		rule_hit(rule);
	}

	__builtin_memcpy(k.src, p->src, 16);
	__builtin_memcpy(k.dst, p->dst, 16);
	k.sport = p->sport;
	k.dport = p->dport;
	k.direction = dir;
	if (action == WEFT_POLICY_DENY) {
		__u8 reason = v ? WEFT_DROP_POLICY_DENIED : WEFT_DROP_POLICY_DEFAULT;

		if (!(ep->flags & WEFT_POLICY_AUDIT)) {
			/* an established flow loses its entry: its replies stop too */
			bpf_map_delete_elem(&weft_policy_ct, &k);
			/* and so does the sender's egress entry when the sender is
			 * on this node: no "reply" may come back on a flow the
			 * receiver refused (across nodes it expires) */
			if (dir == WEFT_POLICY_INGRESS) {
				k.direction = WEFT_POLICY_EGRESS;
				bpf_map_delete_elem(&weft_policy_ct, &k);
			}
			policy_event(skb, p, WEFT_VERDICT_DROPPED, WEFT_FLOW_KIND_DECISION, dir,
				     reason, rule, point, 1, p->len);
			return POLICY_DROP;
		}
		policy_event(skb, p, WEFT_VERDICT_AUDIT, WEFT_FLOW_KIND_DECISION, dir, reason,
			     rule, point, 1, p->len);
	}

	ct = ct_lookup(&k);
	/* a SYN on an ended entry is a new connection on the same tuple */
	if (ct && (ct->flags & WEFT_POLICY_CT_ENDED) && p->proto == IPPROTO_TCP &&
	    (p->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN) {
		bpf_map_delete_elem(&weft_policy_ct, &k);
		ct = 0;
	}
	if (ct) {
		ct->rule_id = rule;
		ct_account(skb, p, dir, point, &k, ct);
		return POLICY_PASS;
	}
	fresh.packets = 1;
	fresh.bytes = p->len;
	fresh.last_ns = bpf_ktime_get_ns();
	fresh.rule_id = rule;
	bpf_map_update_elem(&weft_policy_ct, &k, &fresh, BPF_ANY);
	/* a connection's first packet, when a rule decided it */
	if (action == WEFT_POLICY_ALLOW)
		policy_event(skb, p, WEFT_VERDICT_FORWARDED, WEFT_FLOW_KIND_DECISION, dir, 0, rule,
			     point, 1, p->len);
	return POLICY_PASS;
}

/* Egress policy of the sending pod (the packet entered the host from it). */
static __always_inline int policy_egress(struct __sk_buff *skb)
{
	struct pflow p = {};

	if (policy_parse(skb, &p))
		return POLICY_PASS;
	return policy_judge(skb, &p, WEFT_POLICY_EGRESS, WEFT_POINT_FROM_POD);
}

/* Ingress policy of the receiving pod (the packet is on its way in). */
static __always_inline int policy_ingress(struct __sk_buff *skb)
{
	struct pflow p = {};

	if (policy_parse(skb, &p))
		return POLICY_PASS;
	return policy_judge(skb, &p, WEFT_POLICY_INGRESS, WEFT_POINT_TO_POD);
}

#endif
