/* SPDX-License-Identifier: GPL-2.0-only */
/* One routing hop done by the program: TTL, MACs, and the redirect into a
 * pod on this node (to_local) or towards another node (to_remote). */
#ifndef WEFT_LIB_FORWARD_H
#define WEFT_LIB_FORWARD_H

#include <linux/pkt_cls.h>

#include "lib/conntrack.h"
#include "lib/policy.h"
#include "lib/stats.h"

#define HOST_VETH_MAC_BYTE 0xee

/* RFC 1624 incremental update of a 16-bit one's complement checksum. */
static __always_inline __u16 csum_replace16(__u16 check, __u16 old, __u16 new)
{
	__u32 sum = (__u16)~check + (__u16)~old + new;

	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

/* One routing hop: TTL/hop limit down by one, new MACs. Re-derives the packet
 * pointers, since a kfunc call came in between. Returns 0 on success. */
static __always_inline int forward_hop(struct __sk_buff *skb, const __u8 *dmac, const __u8 *smac)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return -1;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		__u16 old, new;

		if ((void *)(ip + 1) > end)
			return -1;
		old = *(__u16 *)&ip->ttl; /* ttl and protocol share one 16-bit word */
		ip->ttl -= 1;
		new = *(__u16 *)&ip->ttl;
		ip->check = csum_replace16(ip->check, old, new);
	} else {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end)
			return -1;
		ip6->hop_limit -= 1;
	}
	__builtin_memcpy(eth->h_dest, dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, smac, ETH_ALEN);
	return 0;
}

static const __u8 host_veth_mac[ETH_ALEN] = {
	HOST_VETH_MAC_BYTE, HOST_VETH_MAC_BYTE, HOST_VETH_MAC_BYTE,
	HOST_VETH_MAC_BYTE, HOST_VETH_MAC_BYTE, HOST_VETH_MAC_BYTE,
};

/* Into a pod on this node, if it is fast-path eligible. `p` is `f` for
 * policy (filled when `flags`, weft_config's, has WEFT_CONFIG_POLICY). */
static __always_inline int to_local(struct __sk_buff *skb, struct flow *f,
				    struct weft_ep_value *dst, const struct pflow *p, __u32 flags)
{
	__u8 dmac[ETH_ALEN];
	__u32 ifindex = dst->host_ifindex;

	if (!(dst->flags & WEFT_EP_FAST) || ifindex == skb->ingress_ifindex)
		return pass(WEFT_STAT_PASS_SLOW_ENDPOINT);
	__builtin_memcpy(dmac, dst->pod_mac, ETH_ALEN);
	if (tracked(skb, f))
		return pass(WEFT_STAT_PASS_TRACKED);
	/* the redirect skips the host veth's egress, where the kernel path
	 * judges the pod's ingress policy: judge it here */
	if ((flags & WEFT_CONFIG_POLICY) &&
	    policy_judge(skb, p, WEFT_POLICY_INGRESS, WEFT_POINT_TO_POD) == POLICY_DROP)
		return WEFT_TCX_DROP;
	if (forward_hop(skb, dmac, host_veth_mac))
		return pass(WEFT_STAT_PASS_PROTO);
	count(WEFT_STAT_LOCAL);
	return bpf_redirect_peer(ifindex, 0);
}

/* Towards a pod on another node: the route the kernel would take, if it
 * leaves through the remote device. */
static __always_inline int to_remote(struct __sk_buff *skb, struct flow *f)
{
	struct weft_cidr_key ck = { .family = f->family };
	struct bpf_fib_lookup fib = {};
	struct weft_config *cfg;
	__u32 zero = 0;
	long rc;

	cfg = bpf_map_lookup_elem(&weft_config, &zero);
	if (!cfg || !cfg->remote_ifindex)
		return pass(WEFT_STAT_PASS_NOT_POD);
	__builtin_memcpy(ck.addr, f->dst.addr, 16);
	ck.prefixlen = 32 + (f->family == WEFT_AF_INET ? 32 : 128);
	if (!bpf_map_lookup_elem(&weft_cluster, &ck))
		return pass(WEFT_STAT_PASS_NOT_POD);
	if (tracked(skb, f))
		return pass(WEFT_STAT_PASS_TRACKED);

	fib.ifindex = skb->ingress_ifindex;
	fib.l4_protocol = f->proto;
	/* tot_len 0: the kernel checks the MTU against the skb, GSO included */
	if (f->family == WEFT_AF_INET) {
		fib.family = 2; /* AF_INET */
		fib.ipv4_src = f->tuple.ipv4.saddr;
		fib.ipv4_dst = f->tuple.ipv4.daddr;
		fib.sport = f->tuple.ipv4.sport;
		fib.dport = f->tuple.ipv4.dport;
	} else {
		fib.family = 10; /* AF_INET6 */
		__builtin_memcpy(fib.ipv6_src, f->tuple.ipv6.saddr, 16);
		__builtin_memcpy(fib.ipv6_dst, f->tuple.ipv6.daddr, 16);
		fib.sport = f->tuple.ipv6.sport;
		fib.dport = f->tuple.ipv6.dport;
	}
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS || fib.ifindex != cfg->remote_ifindex)
		return pass(WEFT_STAT_PASS_FIB);
	if (forward_hop(skb, fib.dmac, fib.smac))
		return pass(WEFT_STAT_PASS_PROTO);
	count(WEFT_STAT_REMOTE);
	return bpf_redirect(fib.ifindex, 0);
}

#endif
