/* SPDX-License-Identifier: GPL-2.0-only */
/* Parsing Ethernet + IPv4/IPv6 + the TCP/UDP ports into a struct flow, and
 * what the fast path leaves to the kernel: other protocols, fragments, IP
 * options and extension headers, expiring TTLs. */
#ifndef WEFT_LIB_PARSE_H
#define WEFT_LIB_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>

#include "weft/maps.h"
#include "weft/counters.h"

/* What the parse of one packet found. */
struct flow {
	__u8 family;
	__u8 proto;
	__u8 tcp_flags; /* TCP only (policy's conntrack reads them) */
	__u8 pad;
	struct weft_ep_key src;
	struct weft_ep_key dst;
	struct bpf_sock_tuple tuple;
};

/* Parses Ethernet + IPv4/IPv6 + the TCP/UDP ports. Returns 0 when the packet
 * may take the fast path, else the stat that says why not. */
static __always_inline int parse(struct __sk_buff *skb, struct flow *f)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return WEFT_STAT_PASS_PROTO;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		__u16 *ports = (void *)(ip + 1);

		if ((void *)(ip + 1) > end)
			return WEFT_STAT_PASS_PROTO;
		/* options, fragments and expiring TTLs are the stack's job */
		if (ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff)) || ip->ttl <= 1)
			return WEFT_STAT_PASS_PROTO;
		if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
			return WEFT_STAT_PASS_PROTO;
		if ((void *)(ports + 2) > end)
			return WEFT_STAT_PASS_PROTO;
		if (ip->protocol == IPPROTO_TCP) {
			if ((void *)ports + 14 > end)
				return WEFT_STAT_PASS_PROTO;
			f->tcp_flags = ((__u8 *)ports)[13];
		}
		f->family = WEFT_AF_INET;
		f->proto = ip->protocol;
		__builtin_memcpy(f->src.addr, &ip->saddr, 4);
		__builtin_memcpy(f->dst.addr, &ip->daddr, 4);
		f->tuple.ipv4.saddr = ip->saddr;
		f->tuple.ipv4.daddr = ip->daddr;
		f->tuple.ipv4.sport = ports[0];
		f->tuple.ipv4.dport = ports[1];
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		__u16 *ports = (void *)(ip6 + 1);

		if ((void *)(ip6 + 1) > end)
			return WEFT_STAT_PASS_PROTO;
		/* extension headers (fragments among them) are the stack's job */
		if (ip6->nexthdr != IPPROTO_TCP && ip6->nexthdr != IPPROTO_UDP)
			return WEFT_STAT_PASS_PROTO;
		if (ip6->hop_limit <= 1 || (void *)(ports + 2) > end)
			return WEFT_STAT_PASS_PROTO;
		if (ip6->nexthdr == IPPROTO_TCP) {
			if ((void *)ports + 14 > end)
				return WEFT_STAT_PASS_PROTO;
			f->tcp_flags = ((__u8 *)ports)[13];
		}
		f->family = WEFT_AF_INET6;
		f->proto = ip6->nexthdr;
		__builtin_memcpy(f->src.addr, &ip6->saddr, 16);
		__builtin_memcpy(f->dst.addr, &ip6->daddr, 16);
		__builtin_memcpy(f->tuple.ipv6.saddr, &ip6->saddr, 16);
		__builtin_memcpy(f->tuple.ipv6.daddr, &ip6->daddr, 16);
		f->tuple.ipv6.sport = ports[0];
		f->tuple.ipv6.dport = ports[1];
	} else {
		return WEFT_STAT_PASS_PROTO;
	}
	f->src.family = f->family;
	f->dst.family = f->family;
	return 0;
}

#endif
