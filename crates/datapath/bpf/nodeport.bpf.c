// SPDX-License-Identifier: GPL-2.0-only
/*
 * NodePort, externalIPs and LoadBalancer IPs for traffic from outside the
 * node (sockets there are not ours, so no socket LB): tcx on the node's
 * external devices.
 *
 *   weft_nodeport_in (ingress): a new TCP/UDP flow to a frontend's External
 *     scope (an external or LB address, or a NodePort on one of the node's
 *     addresses) gets a backend (lib/lb.h, hash of the 5-tuple, ClientIP
 *     affinity by the client's address) and is DNATed to it. With
 *     externalTrafficPolicy Cluster and a backend that is not a pod of this
 *     node (the route to it does not leave through a weft host veth, whose
 *     MAC is ee:ee:ee:ee:ee:ee), the source becomes the node's address the
 *     route would use, so the reply comes back here; with Local the client's
 *     address is kept. Later packets of the flow follow its NAT entry (or
 *     choose again if their backend is gone), replies to a source-NATed flow
 *     are translated back here.
 *   weft_nodeport_out (egress): replies of flows whose source was kept leave
 *     with the frontend's address as their source; packets to a frontend
 *     the socket programs left untranslated for lack of a backend in the
 *     internal scope (internalTrafficPolicy Local) are dropped.
 *
 * The kernel then routes the rewritten packet (TCX_NEXT), so forwarding must
 * be on; source-NATed packets are redirected out themselves (np_forward). NAT state lives in weft_lb_nat (LRU, pinned: a weftd restart keeps
 * every flow). A frontend with no usable backend reports a NO_BACKEND
 * drop and answers with an ICMP(v6) port unreachable (kube-proxy's
 * REJECT), or drops when only a Local policy emptied its scope.
 */
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>

#include "lib/flow.h"
#include "lib/lb.h"
#include "weft/verdicts.h"

char LICENSE[] SEC("license") = "GPL";

struct weft_map_def SEC("maps") weft_lb_nat = {
	.type = BPF_MAP_TYPE_LRU_HASH,
	.key_size = sizeof(struct weft_lb_nat_key),
	.value_size = sizeof(struct weft_lb_nat_value),
	.max_entries = 131072,
	.pinning = WEFT_PIN_BY_NAME,
};

/* Room the 512-byte stack lacks, one use at a time: the flow event being
 * reported, an ICMP error being built (the new IP header, the ICMP
 * header, the original IP header and 8 bytes of its L4 header), or an
 * ICMPv6 error's headers before and after translation. */
#define NP_SCRATCH_LEN 192
_Static_assert(sizeof(struct weft_flow_event) <= NP_SCRATCH_LEN, "scratch holds a flow event");

struct weft_map_def SEC("maps") weft_lb_scratch = {
	.type = BPF_MAP_TYPE_PERCPU_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = NP_SCRATCH_LEN,
	.max_entries = 1,
};

/* Source ports of source-NATed flows, above Linux's ephemeral range. */
#define SNAT_PORT_MIN 61000
#define SNAT_PORT_SPAN 4535
#define SNAT_TRIES 8

#define IP4_SADDR_OFF (ETH_HLEN + 12)
#define IP4_DADDR_OFF (ETH_HLEN + 16)
#define IP4_CSUM_OFF (ETH_HLEN + 10)
#define IP6_SADDR_OFF (ETH_HLEN + 8)
#define IP6_DADDR_OFF (ETH_HLEN + 24)

/* One parsed TCP/UDP packet, as a NAT key (dir set by the hook). */
struct np_pkt {
	struct weft_lb_nat_key k;
	__u32 l4_off;
	__u32 csum_off;
};

static __always_inline int np_parse(struct __sk_buff *skb, struct np_pkt *p, __u8 dir)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u16 *ports;

	if ((void *)(eth + 1) > end)
		return -1;
	p->k.dir = dir;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > end || ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff)))
			return -1;
		p->k.family = WEFT_AF_INET;
		p->k.proto = ip->protocol;
		__builtin_memcpy(p->k.saddr, &ip->saddr, 4);
		__builtin_memcpy(p->k.daddr, &ip->daddr, 4);
		p->l4_off = ETH_HLEN + sizeof(*ip);
		ports = (void *)(ip + 1);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end)
			return -1;
		p->k.family = WEFT_AF_INET6;
		p->k.proto = ip6->nexthdr;
		__builtin_memcpy(p->k.saddr, &ip6->saddr, 16);
		__builtin_memcpy(p->k.daddr, &ip6->daddr, 16);
		p->l4_off = ETH_HLEN + sizeof(*ip6);
		ports = (void *)(ip6 + 1);
	} else {
		return -1;
	}
	if (p->k.proto == IPPROTO_TCP)
		p->csum_off = p->l4_off + 16;
	else if (p->k.proto == IPPROTO_UDP)
		p->csum_off = p->l4_off + 6;
	else
		return -1;
	if ((void *)(ports + 2) > end)
		return -1;
	p->k.sport = ports[0];
	p->k.dport = ports[1];
	return 0;
}

static __always_inline int np_same16(const __u8 *a, const __u8 *b)
{
	const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;

	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

static __always_inline __u64 np_l4_flags(const struct np_pkt *p)
{
	return p->k.proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
}

/* Rewrites one address of the packet, with the IPv4 header checksum and the
 * L4 checksum (its pseudo header) updated. */
static __always_inline int np_set_addr(struct __sk_buff *skb, const struct np_pkt *p, int dst,
				       const __u8 *old, const __u8 *new)
{
	__u64 l4 = np_l4_flags(p) | BPF_F_PSEUDO_HDR;

	if (np_same16(old, new))
		return 0;
	if (p->k.family == WEFT_AF_INET) {
		__u32 o, n;

		__builtin_memcpy(&o, old, 4);
		__builtin_memcpy(&n, new, 4);
		if (bpf_l4_csum_replace(skb, p->csum_off, o, n, l4 | 4) ||
		    bpf_l3_csum_replace(skb, IP4_CSUM_OFF, o, n, 4))
			return -1;
		return bpf_skb_store_bytes(skb, dst ? IP4_DADDR_OFF : IP4_SADDR_OFF, &n, 4, 0);
	} else {
		__u32 o[4], n[4];
		__s64 diff;

		__builtin_memcpy(o, old, 16);
		__builtin_memcpy(n, new, 16);
		diff = bpf_csum_diff(o, 16, n, 16, 0);
		if (diff < 0 || bpf_l4_csum_replace(skb, p->csum_off, 0, diff, l4))
			return -1;
		return bpf_skb_store_bytes(skb, dst ? IP6_DADDR_OFF : IP6_SADDR_OFF, n, 16, 0);
	}
}

static __always_inline int np_set_port(struct __sk_buff *skb, const struct np_pkt *p, int dst,
				       __u16 old, __u16 new)
{
	if (old == new)
		return 0;
	if (bpf_l4_csum_replace(skb, p->csum_off, old, new, np_l4_flags(p) | 2))
		return -1;
	return bpf_skb_store_bytes(skb, p->l4_off + (dst ? 2 : 0), &new, 2, 0);
}

/* The packet p becomes (v->saddr:sport -> v->daddr:dport). */
static __always_inline int np_rewrite(struct __sk_buff *skb, const struct np_pkt *p,
				      const struct weft_lb_nat_value *v)
{
	if (np_set_addr(skb, p, 0, p->k.saddr, v->saddr) ||
	    np_set_addr(skb, p, 1, p->k.daddr, v->daddr) ||
	    np_set_port(skb, p, 0, p->k.sport, v->sport) ||
	    np_set_port(skb, p, 1, p->k.dport, v->dport))
		return -1;
	return 0;
}

static __always_inline __u32 np_hash(const struct weft_lb_nat_key *k)
{
	const __u32 *s = (const __u32 *)k->saddr, *d = (const __u32 *)k->daddr;
	__u32 h = 0x811c9dc5;

	h = (h ^ s[0]) * 0x01000193;
	h = (h ^ s[1]) * 0x01000193;
	h = (h ^ s[2]) * 0x01000193;
	h = (h ^ s[3]) * 0x01000193;
	h = (h ^ d[0]) * 0x01000193;
	h = (h ^ d[1]) * 0x01000193;
	h = (h ^ d[2]) * 0x01000193;
	h = (h ^ d[3]) * 0x01000193;
	h = (h ^ (((__u32)k->sport << 16) | k->dport)) * 0x01000193;
	h = (h ^ k->proto) * 0x01000193;
	return lb_mix32(h);
}

static __always_inline void np_report(struct __sk_buff *skb, const struct np_pkt *p,
				      const struct weft_lb_backend *be)
{
	__u32 zero = 0;
	struct weft_flow_event *ev = bpf_map_lookup_elem(&weft_lb_scratch, &zero);

	if (!ev)
		return;
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->ts_ns = bpf_ktime_get_ns();
	ev->family = p->k.family;
	ev->proto = p->k.proto;
	ev->kind = WEFT_FLOW_KIND_DECISION;
	ev->sport = p->k.sport;
	ev->dport = p->k.dport;
	ev->point = WEFT_POINT_NODEPORT;
	ev->direction = WEFT_DIR_NONE;
	ev->ifindex = skb->ingress_ifindex;
	ev->packets = 1;
	ev->bytes = skb->len;
	__builtin_memcpy(ev->src, p->k.saddr, 16);
	__builtin_memcpy(ev->dst, p->k.daddr, 16);
	if (be) {
		ev->verdict = WEFT_VERDICT_TRANSLATED;
		__builtin_memcpy(ev->xlat_dst, be->addr, 16);
		ev->xlat_dport = be->port;
	} else {
		ev->verdict = WEFT_VERDICT_DROPPED;
		ev->drop_reason = WEFT_DROP_NO_BACKEND;
	}
	flow_report(ev);
}

/*
 * Whether a flow to `be` must be source-NATed, and to which node address
 * (into snat): Cluster policy and a backend that is not a pod of this node.
 */
static __always_inline int np_needs_snat(struct __sk_buff *skb, const struct np_pkt *p,
					 const struct weft_lb_backend *be, __u8 *snat)
{
	struct bpf_fib_lookup fib = {};
	long rc;

	fib.ifindex = skb->ingress_ifindex;
	fib.l4_protocol = p->k.proto;
	if (p->k.family == WEFT_AF_INET) {
		fib.family = 2; /* AF_INET */
		__builtin_memcpy(&fib.ipv4_dst, be->addr, 4);
	} else {
		fib.family = 10; /* AF_INET6 */
		__builtin_memcpy(fib.ipv6_dst, be->addr, 16);
	}
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_SRC);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS && fib.smac[0] == 0xee && fib.smac[1] == 0xee &&
	    fib.smac[2] == 0xee && fib.smac[3] == 0xee && fib.smac[4] == 0xee &&
	    fib.smac[5] == 0xee)
		return 0; /* a pod on this node, behind its host veth */
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return -1;
	__builtin_memset(snat, 0, 16);
	if (p->k.family == WEFT_AF_INET)
		__builtin_memcpy(snat, &fib.ipv4_src, 4);
	else
		__builtin_memcpy(snat, fib.ipv6_src, 16);
	return 1;
}

/*
 * Hands a translated packet on. A packet whose source became one of the
 * node's addresses (SNAT, or a reply towards a client whose flow was
 * SNATed, now from the frontend's address) would be dropped by the stack
 * as a martian (a local source arriving from outside): it goes straight out
 * of the device the FIB names, L2 from the neighbour table. Others take
 * the kernel's forwarding path.
 */
static __always_inline int np_forward(struct __sk_buff *skb, const struct np_pkt *p,
				      const struct weft_lb_nat_value *v)
{
	struct bpf_fib_lookup fib = {};
	long rc;

	if (!(v->flags & WEFT_LB_NAT_SNAT))
		return WEFT_TCX_NEXT;
	fib.ifindex = skb->ingress_ifindex;
	fib.l4_protocol = p->k.proto;
	fib.sport = v->sport;
	fib.dport = v->dport;
	if (p->k.family == WEFT_AF_INET) {
		fib.family = 2; /* AF_INET */
		__builtin_memcpy(&fib.ipv4_src, v->saddr, 4);
		__builtin_memcpy(&fib.ipv4_dst, v->daddr, 4);
	} else {
		fib.family = 10; /* AF_INET6 */
		__builtin_memcpy(fib.ipv6_src, v->saddr, 16);
		__builtin_memcpy(fib.ipv6_dst, v->daddr, 16);
	}
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_SKIP_NEIGH);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return WEFT_TCX_DROP;
	return bpf_redirect_neigh(fib.ifindex, NULL, 0, 0);
}

static __always_inline __u16 np_fold(__s64 sum)
{
	__u32 s = (__u32)sum;

	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return ~s;
}

/*
 * kube-proxy's REJECT for a Service without endpoints: the packet becomes
 * an ICMP port unreachable back to its sender (what iptables' REJECT sends
 * for TCP and UDP alike; a TCP client's connect then fails with
 * ECONNREFUSED), sent out of the device it came in on. Returns the
 * verdict.
 */
static __always_inline int np_reject4(struct __sk_buff *skb, const struct np_pkt *p)
{
	__u32 zero = 0, *buf = bpf_map_lookup_elem(&weft_lb_scratch, &zero);
	__u8 *b = (__u8 *)buf, mac[12];
	struct iphdr *ip = (struct iphdr *)b;

	if (!buf)
		return WEFT_TCX_DROP;
	__builtin_memset(b, 0, 28);
	if (bpf_skb_load_bytes(skb, ETH_HLEN, b + 28, 28) || bpf_skb_load_bytes(skb, 0, mac, 12))
		return WEFT_TCX_DROP;
	ip->version = 4;
	ip->ihl = 5;
	ip->tot_len = bpf_htons(56);
	ip->ttl = 64;
	ip->protocol = IPPROTO_ICMP;
	__builtin_memcpy(&ip->saddr, p->k.daddr, 4);
	__builtin_memcpy(&ip->daddr, p->k.saddr, 4);
	ip->check = np_fold(bpf_csum_diff(NULL, 0, buf, 20, 0));
	b[20] = 3; /* ICMP_DEST_UNREACH */
	b[21] = 3; /* ICMP_PORT_UNREACH */
	*(__u16 *)(b + 22) = np_fold(bpf_csum_diff(NULL, 0, buf + 5, 36, 0));
	if (bpf_skb_change_tail(skb, ETH_HLEN + 56, 0) ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, b, 56, 0) ||
	    bpf_skb_store_bytes(skb, 0, mac + 6, 6, 0) || bpf_skb_store_bytes(skb, 6, mac, 6, 0))
		return WEFT_TCX_DROP;
	return bpf_redirect(skb->ingress_ifindex, 0);
}

/* np_reject4 for IPv6: an ICMPv6 port unreachable (type 1, code 4) with
 * the offending IPv6 header and 8 bytes of its payload, 96 bytes. */
static __always_inline int np_reject6(struct __sk_buff *skb, const struct np_pkt *p)
{
	__u32 zero = 0, *buf = bpf_map_lookup_elem(&weft_lb_scratch, &zero);
	__u8 *b = (__u8 *)buf, mac[12];
	__u32 pseudo[2] = { bpf_htonl(56), bpf_htonl(IPPROTO_ICMPV6) };
	struct ipv6hdr *ip6 = (struct ipv6hdr *)b;
	__s64 sum;

	if (!buf)
		return WEFT_TCX_DROP;
	__builtin_memset(b, 0, 48);
	if (bpf_skb_load_bytes(skb, ETH_HLEN, b + 48, 48) || bpf_skb_load_bytes(skb, 0, mac, 12))
		return WEFT_TCX_DROP;
	ip6->version = 6;
	ip6->payload_len = bpf_htons(56);
	ip6->nexthdr = IPPROTO_ICMPV6;
	ip6->hop_limit = 64;
	__builtin_memcpy(&ip6->saddr, p->k.daddr, 16);
	__builtin_memcpy(&ip6->daddr, p->k.saddr, 16);
	b[40] = 1; /* ICMPV6_DEST_UNREACH */
	b[41] = 4; /* ICMPV6_PORT_UNREACH */
	sum = bpf_csum_diff(NULL, 0, buf + 2, 32, 0); /* source and destination */
	sum = bpf_csum_diff(NULL, 0, pseudo, 8, sum);
	sum = bpf_csum_diff(NULL, 0, buf + 10, 56, sum);
	*(__u16 *)(b + 42) = np_fold(sum);
	if (bpf_skb_change_tail(skb, ETH_HLEN + 96, 0) ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, b, 96, 0) ||
	    bpf_skb_store_bytes(skb, 0, mac + 6, 6, 0) || bpf_skb_store_bytes(skb, 6, mac, 6, 0))
		return WEFT_TCX_DROP;
	return bpf_redirect(skb->ingress_ifindex, 0);
}

/* A new flow from outside to a frontend: pick, record, translate. */
static __always_inline int np_new_flow(struct __sk_buff *skb, struct np_pkt *p)
{
	struct weft_lb_svc_key key = { .family = p->k.family, .proto = p->k.proto };
	struct weft_lb_affinity_key client = { .family = p->k.family };
	struct weft_lb_nat_value fwd = {}, rev = {};
	struct weft_lb_nat_key rk = {};
	struct weft_lb_svc_value *svc;
	struct weft_lb_backend *be;
	__u32 id = 0, hash;
	int snat = 0;

	__builtin_memcpy(key.addr, p->k.daddr, 16);
	key.port = p->k.dport;
	svc = lb_frontend(&key, WEFT_LB_SCOPE_EXT);
	if (!svc)
		return WEFT_TCX_NEXT;
	hash = np_hash(&p->k);
	if (!lb_no_backend(svc)) {
		__builtin_memcpy(client.client, p->k.saddr, 16);
		id = lb_select(&key, svc, hash, &client);
	}
	be = id ? bpf_map_lookup_elem(&weft_lb_backends, &id) : NULL;
	if (!be || be->family != p->k.family) {
		lb_count(WEFT_LB_STAT_NP_DROP);
		np_report(skb, p, NULL);
		/* nothing at all: refused; none in this scope (Local): dropped */
		if (svc->flags & WEFT_LB_DROP)
			return WEFT_TCX_DROP;
		if (p->k.family == WEFT_AF_INET)
			return np_reject4(skb, p);
		return np_reject6(skb, p);
	}

	/* forward: client -> backend, source kept or the node's */
	__builtin_memcpy(fwd.saddr, p->k.saddr, 16);
	fwd.sport = p->k.sport;
	__builtin_memcpy(fwd.daddr, be->addr, 16);
	fwd.dport = be->port;
	fwd.backend_id = id;
	fwd.rev_nat_id = svc->rev_nat_id;
	fwd.last_seen = bpf_ktime_get_ns();
	if (!(svc->flags & WEFT_LB_LOCAL_ONLY)) {
		snat = np_needs_snat(skb, p, be, fwd.saddr);
		if (snat < 0) {
			lb_count(WEFT_LB_STAT_NP_DROP);
			return WEFT_TCX_DROP;
		}
	}

	/* reverse: what the backend's reply looks like, and what it becomes */
	rk.family = p->k.family;
	rk.proto = p->k.proto;
	__builtin_memcpy(rk.saddr, be->addr, 16);
	rk.sport = be->port;
	__builtin_memcpy(rk.daddr, fwd.saddr, 16);
	rk.dport = p->k.sport;
	rk.dir = snat ? WEFT_LB_NAT_IN : WEFT_LB_NAT_OUT;
	if (snat) {
		/* the client's port if it is free at this node address, else a
		 * few hashed ones from the SNAT range */
		for (int i = 0; i < SNAT_TRIES; i++) {
			struct weft_lb_nat_value *taken = bpf_map_lookup_elem(&weft_lb_nat, &rk);

			if (!taken)
				break;
			if (i == SNAT_TRIES - 1) {
				lb_count(WEFT_LB_STAT_NP_DROP);
				return WEFT_TCX_DROP;
			}
			rk.dport = bpf_htons(SNAT_PORT_MIN + (hash + i * 7919) % SNAT_PORT_SPAN);
		}
		fwd.sport = rk.dport;
		fwd.flags = WEFT_LB_NAT_SNAT;
	}
	__builtin_memcpy(rev.saddr, p->k.daddr, 16);
	rev.sport = p->k.dport;
	__builtin_memcpy(rev.daddr, p->k.saddr, 16);
	rev.dport = p->k.sport;
	rev.backend_id = id;
	rev.rev_nat_id = svc->rev_nat_id;
	rev.flags = WEFT_LB_NAT_REPLY | fwd.flags;
	rev.last_seen = fwd.last_seen;
	if (bpf_map_update_elem(&weft_lb_nat, &rk, &rev, BPF_ANY) ||
	    bpf_map_update_elem(&weft_lb_nat, &p->k, &fwd, BPF_ANY)) {
		lb_count(WEFT_LB_STAT_NP_DROP);
		return WEFT_TCX_DROP;
	}
	lb_count(WEFT_LB_STAT_NP_NEW);
	if (snat)
		lb_count(WEFT_LB_STAT_NP_SNAT);
	np_report(skb, p, be);
	if (np_rewrite(skb, p, &fwd))
		return WEFT_TCX_DROP;
	return np_forward(skb, p, &fwd);
}

/*
 * An ICMP error (destination unreachable, fragmentation needed among them,
 * or time exceeded) about a packet of a NATed flow, as conntrack's NAT
 * translates it: the quoted packet was sent in the direction opposite to
 * this error, so the flow's entry is looked up by the quote reversed, and
 * the quote gets the addresses and ports the other end of the flow knows
 * (the client sees its own packet to the frontend, the backend its reply).
 * The error goes where that entry's packets go (destination rewritten);
 * its source is rewritten only when the error came from the flow's peer
 * itself (then it is the address being hidden). IPv4 header checksums are
 * recomputed, the ICMP one and a quoted UDP one updated for the change; a
 * quoted TCP checksum is past the 8 bytes an error is sure to carry and
 * stays (as with conntrack). `dir` is the hook's.
 */
#define NP_ICMP_LEN 56 /* outer IPv4 20, ICMP 8, quoted IPv4 20 and 8 of L4 */

static __always_inline int np_icmp4(struct __sk_buff *skb, __u8 dir)
{
	__u32 old[NP_ICMP_LEN / 4], new[NP_ICMP_LEN / 4];
	__u8 *o = (__u8 *)old, *n = (__u8 *)new;
	struct iphdr *outer = (struct iphdr *)n, *inner = (struct iphdr *)(n + 28);
	struct weft_lb_nat_key k = { .family = WEFT_AF_INET, .dir = dir };
	struct weft_lb_nat_value *e, v;
	__u16 *ports = (__u16 *)(n + 48), *icsum = (__u16 *)(n + 22);
	__u16 old_icsum;
	__s64 sum;
	int from_peer;

	if (skb->protocol != bpf_htons(ETH_P_IP) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN, old, NP_ICMP_LEN))
		return WEFT_TCX_NEXT;
	__builtin_memcpy(new, old, NP_ICMP_LEN);
	if (outer->version != 4 || outer->ihl != 5 || outer->protocol != IPPROTO_ICMP ||
	    (outer->frag_off & bpf_htons(0x3fff)) || (n[20] != 3 && n[20] != 11) ||
	    inner->version != 4 || inner->ihl != 5 ||
	    (inner->protocol != IPPROTO_TCP && inner->protocol != IPPROTO_UDP))
		return WEFT_TCX_NEXT;
	k.proto = inner->protocol;
	__builtin_memcpy(k.saddr, &inner->daddr, 4);
	__builtin_memcpy(k.daddr, &inner->saddr, 4);
	k.sport = ports[1];
	k.dport = ports[0];
	e = bpf_map_lookup_elem(&weft_lb_nat, &k);
	if (!e)
		return WEFT_TCX_NEXT;
	v = *e;

	from_peer = outer->saddr == inner->daddr;
	__builtin_memcpy(&inner->saddr, v.daddr, 4);
	__builtin_memcpy(&inner->daddr, v.saddr, 4);
	ports[0] = v.dport;
	ports[1] = v.sport;
	if (inner->protocol == IPPROTO_UDP && ports[3]) {
		/* the quoted UDP checksum: its pseudo header and ports */
		sum = bpf_csum_diff(old + 10, 12, new + 10, 12, (__u16)~ports[3]);
		ports[3] = np_fold(sum) ?: 0xffff;
	}
	inner->check = 0;
	inner->check = np_fold(bpf_csum_diff(NULL, 0, new + 7, 20, 0));
	__builtin_memcpy(&outer->daddr, v.daddr, 4);
	if (from_peer)
		__builtin_memcpy(&outer->saddr, v.saddr, 4);
	outer->check = 0;
	outer->check = np_fold(bpf_csum_diff(NULL, 0, new, 20, 0));
	/* the ICMP checksum, less its own field, over what changed */
	old_icsum = *(__u16 *)(o + 22);
	*(__u16 *)(o + 22) = 0;
	*icsum = 0;
	sum = bpf_csum_diff(old + 5, 36, new + 5, 36, (__u16)~old_icsum);
	*icsum = np_fold(sum);
	if (bpf_skb_store_bytes(skb, ETH_HLEN, new, NP_ICMP_LEN, 0))
		return WEFT_TCX_DROP;
	lb_count(WEFT_LB_STAT_NP_ICMP);
	/* towards a client of a source-NATed flow from the node's address: out
	 * by the FIB like the flow's own packets (else a martian) */
	if (dir == WEFT_LB_NAT_IN && from_peer && (v.flags & WEFT_LB_NAT_SNAT)) {
		struct np_pkt p = { .k = { .family = WEFT_AF_INET, .proto = k.proto } };

		return np_forward(skb, &p, &v);
	}
	return WEFT_TCX_NEXT;
}

/* np_icmp4 for ICMPv6 (destination unreachable, packet too big, time
 * exceeded): no IP checksums; the ICMPv6 one covers the outer addresses
 * (its pseudo header) besides the message. Both copies live in the
 * scratch map (the stack lacks room for them). */
#define NP_ICMP6_LEN 96 /* outer IPv6 40, ICMPv6 8, quoted IPv6 40 and 8 of L4 */

static __always_inline int np_icmp6(struct __sk_buff *skb, __u8 dir)
{
	__u32 zero = 0, *old, *new;
	struct weft_lb_nat_key k = { .family = WEFT_AF_INET6, .dir = dir };
	struct weft_lb_nat_value *e, v;
	__u8 *o, *n;
	__u16 *ports, old_csum;
	__s64 sum;
	int from_peer;

	if (skb->protocol != bpf_htons(ETH_P_IPV6))
		return WEFT_TCX_NEXT;
	old = bpf_map_lookup_elem(&weft_lb_scratch, &zero);
	if (!old || bpf_skb_load_bytes(skb, ETH_HLEN, old, NP_ICMP6_LEN))
		return WEFT_TCX_NEXT;
	new = old + NP_ICMP6_LEN / 4;
	o = (__u8 *)old;
	__builtin_memcpy(new, old, NP_ICMP6_LEN);
	n = (__u8 *)new;
	ports = (__u16 *)(n + 88);
	/* outer: next header at 6; ICMPv6 type at 40; quoted: version at 48,
	 * next header at 54, source at 56, destination at 72 */
	if (n[6] != IPPROTO_ICMPV6 || (n[40] != 1 && n[40] != 2 && n[40] != 3) ||
	    (n[48] >> 4) != 6 || (n[54] != IPPROTO_TCP && n[54] != IPPROTO_UDP))
		return WEFT_TCX_NEXT;
	k.proto = n[54];
	__builtin_memcpy(k.saddr, n + 72, 16);
	__builtin_memcpy(k.daddr, n + 56, 16);
	k.sport = ports[1];
	k.dport = ports[0];
	e = bpf_map_lookup_elem(&weft_lb_nat, &k);
	if (!e)
		return WEFT_TCX_NEXT;
	v = *e;

	from_peer = new[2] == new[18] && new[3] == new[19] && new[4] == new[20] &&
		    new[5] == new[21];
	__builtin_memcpy(n + 56, v.daddr, 16);
	__builtin_memcpy(n + 72, v.saddr, 16);
	ports[0] = v.dport;
	ports[1] = v.sport;
	if (k.proto == IPPROTO_UDP && ports[3]) {
		sum = bpf_csum_diff(old + 14, 36, new + 14, 36, (__u16)~ports[3]);
		ports[3] = np_fold(sum) ?: 0xffff;
	}
	__builtin_memcpy(n + 24, v.daddr, 16);
	if (from_peer)
		__builtin_memcpy(n + 8, v.saddr, 16);
	old_csum = *(__u16 *)(o + 42);
	*(__u16 *)(o + 42) = 0;
	*(__u16 *)(n + 42) = 0;
	sum = bpf_csum_diff(old + 2, 32, new + 2, 32, (__u16)~old_csum);
	sum = bpf_csum_diff(old + 10, 56, new + 10, 56, sum);
	*(__u16 *)(n + 42) = np_fold(sum);
	if (bpf_skb_store_bytes(skb, ETH_HLEN, new, NP_ICMP6_LEN, 0))
		return WEFT_TCX_DROP;
	lb_count(WEFT_LB_STAT_NP_ICMP);
	if (dir == WEFT_LB_NAT_IN && from_peer && (v.flags & WEFT_LB_NAT_SNAT)) {
		struct np_pkt p = { .k = { .family = WEFT_AF_INET6, .proto = k.proto } };

		return np_forward(skb, &p, &v);
	}
	return WEFT_TCX_NEXT;
}

/* An ICMP or ICMPv6 error about a NATed flow, else nothing to do. */
static __always_inline int np_icmp(struct __sk_buff *skb, __u8 dir)
{
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return np_icmp6(skb, dir);
	return np_icmp4(skb, dir);
}

SEC("tc/nodeport_in")
int weft_nodeport_in(struct __sk_buff *skb)
{
	struct np_pkt p = {};
	struct weft_lb_nat_value *e, v;

	if (np_parse(skb, &p, WEFT_LB_NAT_IN))
		return np_icmp(skb, WEFT_LB_NAT_IN);
	e = bpf_map_lookup_elem(&weft_lb_nat, &p.k);
	if (e) {
		v = *e;
		/* a forward entry whose backend is gone chooses again */
		if ((v.flags & WEFT_LB_NAT_REPLY) ||
		    bpf_map_lookup_elem(&weft_lb_backends, &v.backend_id)) {
			e->last_seen = bpf_ktime_get_ns();
			lb_count(v.flags & WEFT_LB_NAT_REPLY ? WEFT_LB_STAT_NP_REVNAT
							     : WEFT_LB_STAT_NP_FWD);
			if (np_rewrite(skb, &p, &v))
				return WEFT_TCX_DROP;
			return np_forward(skb, &p, &v);
		}
		bpf_map_delete_elem(&weft_lb_nat, &p.k);
	}
	return np_new_flow(skb, &p);
}

/*
 * A packet leaving for a frontend that has backends, none in the scope of
 * pods and the node (internalTrafficPolicy: Local, none here): the socket
 * programs left it untranslated and kube-proxy drops such traffic (the
 * client times out), so it goes no further than this node.
 */
static __always_inline int np_out_unserved(const struct np_pkt *p)
{
	struct weft_lb_svc_key key = { .family = p->k.family, .proto = p->k.proto };
	struct weft_lb_svc_value *svc;

	__builtin_memcpy(key.addr, p->k.daddr, 16);
	key.port = p->k.dport;
	svc = lb_frontend(&key, WEFT_LB_SCOPE_INT);
	if (!svc || !(svc->flags & WEFT_LB_DROP))
		return WEFT_TCX_NEXT;
	lb_count(WEFT_LB_STAT_NP_DROP);
	return WEFT_TCX_DROP;
}

SEC("tc/nodeport_out")
int weft_nodeport_out(struct __sk_buff *skb)
{
	struct np_pkt p = {};
	struct weft_lb_nat_value *e, v;

	if (np_parse(skb, &p, WEFT_LB_NAT_OUT))
		return np_icmp(skb, WEFT_LB_NAT_OUT);
	e = bpf_map_lookup_elem(&weft_lb_nat, &p.k);
	if (!e)
		return np_out_unserved(&p);
	v = *e;
	e->last_seen = bpf_ktime_get_ns();
	lb_count(WEFT_LB_STAT_NP_REVNAT);
	if (np_rewrite(skb, &p, &v))
		return WEFT_TCX_DROP;
	return WEFT_TCX_NEXT;
}
