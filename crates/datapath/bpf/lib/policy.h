/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * NetworkPolicy: the maps (layouts in weft/policy.h, all pinned) and the
 * judgement of one packet for one pod's policy in one direction.
 *
 *   the pod's state (weft_policy_eps: a miss = not policy-managed, pass)
 *   -> its conntrack entry for the connection (weft_policy_ct, keyed from
 *      the pod's side): a reply passes; so does a forward packet of a
 *      connection judged under the pod's current policy revision
 *   -> otherwise (a first packet, or the first after a policy change) the
 *      policy, where the pod is isolated or has entries in that direction:
 *      peer address -> identity (weft_ipcache; a miss is the world)
 *      -> (endpoint, identity, direction, proto, dport) in weft_policy, then
 *         the same with identity 0 (rules without peers)
 *      -> a hit decides (ALLOW or DENY, with its rule id); a miss denies
 *         when the pod is isolated in that direction (its default-deny rule
 *         id), and allows otherwise.
 *
 * weftd gives a pod a new revision (weft_policy_ep.revision) after every
 * batch of writes that may change its decisions (its entries or flags, any
 * ipcache entry), so a policy change that removes an allow stops an
 * established flow at its next forward packet (and drops its entry, so its
 * replies stop too), while flows still allowed go on, judged once more.
 * Connections of a pod that no policy isolates are tracked all the same:
 * once a policy isolates it, the replies of its earlier connections pass.
 * TCP RST ends an entry; FIN reports its end and keeps it for the rest of
 * the close handshake (a later SYN starts afresh).
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
#include "lib/parse.h"
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

/* What policy needs of a packet: from the fast path's parse
 * (policy_from_flow) or its own (policy_parse, every protocol). */
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
static __always_inline struct weft_policy_ct_value *ct_lookup(struct weft_policy_ct_key *k,
							      __u64 now)
{
	struct weft_policy_ct_value *ct = bpf_map_lookup_elem(&weft_policy_ct, k);
	__u64 idle = CT_OTHER_IDLE_NS;

	if (!ct)
		return 0;
	if (ct->flags & WEFT_POLICY_CT_ENDED)
		idle = CT_ENDED_IDLE_NS;
	else if (k->proto == IPPROTO_TCP)
		idle = CT_TCP_IDLE_NS;
	if (now - ct->last_ns <= idle)
		return ct;
	bpf_map_delete_elem(&weft_policy_ct, k);
	return 0;
}

/* The direction whose policy let the connection of `ct` in. */
static __always_inline __u8 ct_opened(const struct weft_policy_ct_value *ct)
{
	return ct->flags & WEFT_POLICY_CT_INBOUND ? WEFT_POLICY_INGRESS : WEFT_POLICY_EGRESS;
}

/* The connection's end: one KIND_END with its counts. */
static __always_inline void ct_end(struct __sk_buff *skb, const struct pflow *p, __u8 point,
				   struct weft_policy_ct_value *ct)
{
	if (ct->flags & WEFT_POLICY_CT_ENDED)
		return;
	ct->flags |= WEFT_POLICY_CT_ENDED;
	policy_event(skb, p, WEFT_VERDICT_FORWARDED, WEFT_FLOW_KIND_END, ct_opened(ct), 0,
		     ct->rule_id, point, ct->packets, ct->bytes);
}

/* Counts a packet on an entry; TCP FIN/RST end it. */
static __always_inline void ct_account(struct __sk_buff *skb, const struct pflow *p, __u8 point,
				       struct weft_policy_ct_key *k,
				       struct weft_policy_ct_value *ct, __u64 now)
{
	__sync_fetch_and_add(&ct->packets, 1);
	__sync_fetch_and_add(&ct->bytes, p->len);
	ct->last_ns = now;
	if (p->proto != IPPROTO_TCP || !(p->tcp_flags & (TCP_FIN | TCP_RST)))
		return;
	ct_end(skb, p, point, ct);
	if (p->tcp_flags & TCP_RST)
		bpf_map_delete_elem(&weft_policy_ct, k);
}

/* The conntrack key of a packet from `src`:`sport` to `dst`:`dport` as seen
 * by the endpoint at `local_is_dst` (1: the receiver, 0: the sender). */
static __always_inline void ct_key(struct weft_policy_ct_key *k, const __u8 *src,
				   const __u8 *dst, __u16 sport, __u16 dport, int local_is_dst)
{
	if (local_is_dst) {
		__builtin_memcpy(k->local, dst, 16);
		__builtin_memcpy(k->peer, src, 16);
		k->local_port = dport;
		k->peer_port = sport;
	} else {
		__builtin_memcpy(k->local, src, 16);
		__builtin_memcpy(k->peer, dst, 16);
		k->local_port = sport;
		k->peer_port = dport;
	}
}

/* Whether `p`, an ICMP error, is about a connection the conntrack holds
 * (path MTU, port unreachable, ...) for the endpoint it is judged for: the
 * packet it quotes went out of that endpoint (an error coming in) or came
 * into it (an error it sends). Such errors pass as replies do. `k` is
 * scratch. */
static __always_inline int policy_related(struct __sk_buff *skb, const struct pflow *p,
					  __u8 dir, struct weft_policy_ct_key *k, __u64 now)
{
	__u32 off = p->inner_off;
	__u16 ports[2] = {};
	__u8 src[16] = {}, dst[16] = {};

	if (p->family == WEFT_AF_INET) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)))
			return 0;
		k->proto = ip.protocol;
		__builtin_memcpy(src, &ip.saddr, 4);
		__builtin_memcpy(dst, &ip.daddr, 4);
		off += ip.ihl * 4;
	} else {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)))
			return 0;
		k->proto = ip6.nexthdr;
		__builtin_memcpy(src, &ip6.saddr, 16);
		__builtin_memcpy(dst, &ip6.daddr, 16);
		off += sizeof(ip6);
	}
	if (k->proto == IPPROTO_TCP || k->proto == IPPROTO_UDP || k->proto == 132)
		if (bpf_skb_load_bytes(skb, off, ports, 4))
			return 0;
	/* an error coming in quotes what the endpoint sent */
	ct_key(k, src, dst, ports[0], ports[1], dir == WEFT_POLICY_EGRESS);
	return ct_lookup(k, now) != 0;
}

/* Judges `p` for the policy of the pod at its destination (ingress) or its
 * source (egress). POLICY_PASS or POLICY_DROP.
 *
 * Per packet: the endpoint's state (one hash lookup) and its conntrack
 * entry for the connection (one more). A reply, or a forward packet of a
 * connection judged under the endpoint's current policy revision, passes
 * there. Only a connection's first packet, or the next one after the
 * endpoint's policy (or the ipcache) changed, is judged: the peer's
 * identity (LPM) and the endpoint's entry for it (LPM, and identity 0 on a
 * miss), and not even that in a direction where the endpoint is neither
 * isolated nor has entries. */
static __always_inline int policy_judge(struct __sk_buff *skb, const struct pflow *p, __u8 dir,
					__u8 point)
{
	struct weft_ep_key ek = { .family = p->family };
	struct weft_policy_ct_key k = { .family = p->family, .proto = p->proto };
	struct weft_policy_key pk = { .prefixlen = 96 };
	struct weft_cidr_key ck = { .family = p->family };
	struct weft_policy_ct_value *ct, fresh = {};
	struct weft_policy_value *v = 0;
	struct weft_policy_ep *ep;
	const __u8 *peer;
	__u32 *id, rule = 0, revision;
	__u8 action = 0, flags, ct_flags = 0, default_deny = 0;
	__u64 now;

	if (p->later_fragment)
		return POLICY_PASS;
	__builtin_memcpy(ek.addr, dir == WEFT_POLICY_INGRESS ? p->dst : p->src, 16);
	ep = bpf_map_lookup_elem(&weft_policy_eps, &ek);
	if (!ep)
		return POLICY_PASS;
	/* read once: weftd may replace the entry meanwhile, and the stamp
	 * must be the revision read before the lookups below */
	flags = ep->flags;
	revision = ep->revision;
	now = bpf_ktime_get_ns();
	if (p->inner_off) {
		if (policy_related(skb, p, dir, &k, now))
			return POLICY_PASS;
		k.proto = p->proto;
	}

	ct_key(&k, p->src, p->dst, p->sport, p->dport, dir == WEFT_POLICY_INGRESS);
	ct = ct_lookup(&k, now);
	if (ct && ct_opened(ct) != dir) {
		/* a reply: the other direction's policy let the connection in */
		ct_account(skb, p, point, &k, ct, now);
		return POLICY_PASS;
	}
	/* a SYN on an ended entry is a new connection on the same tuple */
	if (ct && (ct->flags & WEFT_POLICY_CT_ENDED) && p->proto == IPPROTO_TCP &&
	    (p->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN) {
		bpf_map_delete_elem(&weft_policy_ct, &k);
		ct = 0;
	}
	/* judged under the current policy: trusted */
	if (ct && ct->revision == revision && !(ct->flags & WEFT_POLICY_CT_AUDITED)) {
		if (ct->flags & WEFT_POLICY_CT_DECIDED)
			rule_hit(ct->rule_id);
		ct_account(skb, p, point, &k, ct, now);
		return POLICY_PASS;
	}

	/* forward, first or re-judged: the policy */
	if (flags & (dir == WEFT_POLICY_INGRESS ? WEFT_POLICY_INGRESS_ISOLATED | WEFT_POLICY_INGRESS_RULES
						: WEFT_POLICY_EGRESS_ISOLATED | WEFT_POLICY_EGRESS_RULES)) {
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
		if (v) {
			/* a default deny is one reason however it is reached */
			default_deny = v->action == WEFT_POLICY_DEFAULT_DENY;
			action = default_deny ? WEFT_POLICY_DENY : v->action;
			rule = v->rule_id;
			ct_flags = WEFT_POLICY_CT_DECIDED;
		} else if (flags & (dir == WEFT_POLICY_INGRESS ? WEFT_POLICY_INGRESS_ISOLATED
							    : WEFT_POLICY_EGRESS_ISOLATED)) {
			action = WEFT_POLICY_DENY;
			default_deny = 1;
			rule = dir == WEFT_POLICY_INGRESS ? ep->ingress_deny : ep->egress_deny;
			ct_flags = WEFT_POLICY_CT_DECIDED;
		}
		if (ct_flags)
			rule_hit(rule);
	}

	if (action == WEFT_POLICY_DENY) {
		__u8 reason = default_deny ? WEFT_DROP_POLICY_DEFAULT : WEFT_DROP_POLICY_DENIED;

		if (!(flags & WEFT_POLICY_AUDIT)) {
			/* an established flow loses its entry: its replies stop too */
			if (ct)
				bpf_map_delete_elem(&weft_policy_ct, &k);
			/* and so does the sender's entry when the sender is on
			 * this node: no "reply" may come back on a flow the
			 * receiver refused (across nodes it expires) */
			if (dir == WEFT_POLICY_INGRESS) {
				ct_key(&k, p->src, p->dst, p->sport, p->dport, 0);
				bpf_map_delete_elem(&weft_policy_ct, &k);
			}
			policy_event(skb, p, WEFT_VERDICT_DROPPED, WEFT_FLOW_KIND_DECISION, dir,
				     reason, rule, point, 1, p->len);
			return POLICY_DROP;
		}
		policy_event(skb, p, WEFT_VERDICT_AUDIT, WEFT_FLOW_KIND_DECISION, dir, reason,
			     rule, point, 1, p->len);
		ct_flags |= WEFT_POLICY_CT_AUDITED;
	}

	if (dir == WEFT_POLICY_INGRESS)
		ct_flags |= WEFT_POLICY_CT_INBOUND;
	if (ct) {
		ct->rule_id = rule;
		ct->revision = revision;
		ct->flags = (ct->flags & WEFT_POLICY_CT_ENDED) | ct_flags;
		ct_account(skb, p, point, &k, ct, now);
		return POLICY_PASS;
	}
	fresh.packets = 1;
	fresh.bytes = p->len;
	fresh.last_ns = now;
	fresh.rule_id = rule;
	fresh.revision = revision;
	fresh.flags = ct_flags;
	bpf_map_update_elem(&weft_policy_ct, &k, &fresh, BPF_ANY);
	/* a connection's first packet, when a rule decided it */
	if (action == WEFT_POLICY_ALLOW)
		policy_event(skb, p, WEFT_VERDICT_FORWARDED, WEFT_FLOW_KIND_DECISION, dir, 0, rule,
			     point, 1, p->len);
	return POLICY_PASS;
}

/* What policy needs of a packet the fast path has parsed (TCP or UDP, no
 * IP options, not a fragment): no second parse. */
static __always_inline void policy_from_flow(struct __sk_buff *skb, const struct flow *f,
					     struct pflow *p)
{
	__builtin_memcpy(p->src, f->src.addr, 16);
	__builtin_memcpy(p->dst, f->dst.addr, 16);
	p->family = f->family;
	p->proto = f->proto;
	p->tcp_flags = f->tcp_flags;
	p->len = skb->len;
	if (f->family == WEFT_AF_INET) {
		p->sport = f->tuple.ipv4.sport;
		p->dport = f->tuple.ipv4.dport;
	} else {
		p->sport = f->tuple.ipv6.sport;
		p->dport = f->tuple.ipv6.dport;
	}
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
