// SPDX-License-Identifier: GPL-2.0-only
/*
 * weft's forwarding fast path: tc programs attached with tcx.
 *
 * weft_from_pod runs at the ingress of every host-side pod veth; weft_to_pod
 * at the ingress of the device where other nodes' traffic arrives (the VXLAN
 * device, or the underlay in native routing). For TCP and UDP between cluster
 * pods they do what the kernel's routing would do (TTL, MAC rewrite) and hand
 * the packet straight to its next device:
 *   - to a pod on this node: bpf_redirect_peer, into the pod's eth0 ingress,
 *     with no second veth crossing and no netfilter;
 *   - to a pod on another node: a FIB lookup and bpf_redirect towards the
 *     remote device, skipping the forward path and netfilter.
 * Everything else (and every flow conntrack knows, i.e. flows that the host
 * stack NATs: portmap, kube-proxy, masquerade replies) returns TCX_NEXT and
 * takes the kernel's normal path, so the node behaves as without programs.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "weft_maps.h"

char LICENSE[] SEC("license") = "GPL";

/* tcx verdicts (include/uapi/linux/bpf.h of Linux >= 6.6; the build headers
 * may be older). TCX_NEXT lets later programs and legacy tc filters (the
 * bandwidth plugin's ingress mirred) see the packet. */
#define TCX_NEXT (-1)

#define HOST_VETH_MAC_BYTE 0xee

struct weft_map_def SEC("maps") weft_endpoints = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(struct weft_ep_key),
	.value_size = sizeof(struct weft_ep_value),
	.max_entries = 65536,
};

struct weft_map_def SEC("maps") weft_cluster = {
	.type = BPF_MAP_TYPE_LPM_TRIE,
	.key_size = sizeof(struct weft_cidr_key),
	.value_size = sizeof(__u32),
	.max_entries = 64,
	.map_flags = BPF_F_NO_PREALLOC,
};

struct weft_map_def SEC("maps") weft_config = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(struct weft_config),
	.max_entries = 1,
};

struct weft_map_def SEC("maps") weft_stats = {
	.type = BPF_MAP_TYPE_PERCPU_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = WEFT_STAT_MAX,
};

/* Conntrack lookup kfuncs (net/netfilter/nf_conntrack_bpf.c). */
struct nf_conn;
struct bpf_ct_opts___weft {
	__s32 netns_id;
	__s32 error;
	__u8 l4proto;
	__u8 dir;
	__u8 reserved[2];
};
#define CT_OPTS_SZ 12
#define BPF_F_CURRENT_NETNS (-1)
extern struct nf_conn *bpf_skb_ct_lookup(struct __sk_buff *skb, struct bpf_sock_tuple *tuple,
					 __u32 tuple_sz, struct bpf_ct_opts___weft *opts,
					 __u32 opts_sz) __ksym;
extern void bpf_ct_release(struct nf_conn *ct) __ksym;

/* What the parse of one packet found. */
struct flow {
	__u8 family;
	__u8 proto;
	__u16 l3_off; /* always ETH_HLEN; kept for clarity */
	struct weft_ep_key src;
	struct weft_ep_key dst;
	struct bpf_sock_tuple tuple;
};

static __always_inline void count(__u32 stat)
{
	__u64 *n = bpf_map_lookup_elem(&weft_stats, &stat);
	if (n)
		*n += 1;
}

static __always_inline int pass(__u32 stat)
{
	count(stat);
	return TCX_NEXT;
}

/* Parses Ethernet + IPv4/IPv6 + the TCP/UDP ports. Returns 0 when the packet
 * may take the fast path, else the stat that says why not. */
static __always_inline int parse(struct __sk_buff *skb, struct flow *f)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return WEFT_STAT_PASS_PROTO;
	f->l3_off = ETH_HLEN;
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

/* True when conntrack has an entry for the flow (in either direction): the
 * host stack saw it first, may have NATed it, and must keep seeing it. Flows
 * the fast path carries from their first packet never get an entry. */
static __always_inline int tracked(struct __sk_buff *skb, struct flow *f)
{
	struct bpf_ct_opts___weft opts = {
		.netns_id = BPF_F_CURRENT_NETNS,
		.l4proto = f->proto,
	};
	struct nf_conn *ct;

	/* the size must be a constant on each path for the verifier */
	if (f->family == WEFT_AF_INET)
		ct = bpf_skb_ct_lookup(skb, &f->tuple, sizeof(f->tuple.ipv4), &opts, CT_OPTS_SZ);
	else
		ct = bpf_skb_ct_lookup(skb, &f->tuple, sizeof(f->tuple.ipv6), &opts, CT_OPTS_SZ);
	if (!ct)
		return 0;
	bpf_ct_release(ct);
	return 1;
}

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

/* Into a pod on this node, if it is fast-path eligible. */
static __always_inline int to_local(struct __sk_buff *skb, struct flow *f,
				    struct weft_ep_value *dst)
{
	__u8 dmac[ETH_ALEN];
	__u32 ifindex = dst->host_ifindex;

	if (!(dst->flags & WEFT_EP_FAST) || ifindex == skb->ingress_ifindex)
		return pass(WEFT_STAT_PASS_SLOW_EP);
	__builtin_memcpy(dmac, dst->pod_mac, ETH_ALEN);
	if (tracked(skb, f))
		return pass(WEFT_STAT_PASS_TRACKED);
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

SEC("tc/from_pod")
int weft_from_pod(struct __sk_buff *skb)
{
	struct flow f = {};
	struct weft_ep_value *src, *dst;
	int why = parse(skb, &f);

	if (why)
		return pass(why);
	/* only a known, unshaped pod sending its own address from its own veth */
	src = bpf_map_lookup_elem(&weft_endpoints, &f.src);
	if (!src || src->host_ifindex != skb->ingress_ifindex || !(src->flags & WEFT_EP_FAST))
		return pass(WEFT_STAT_PASS_SLOW_EP);
	dst = bpf_map_lookup_elem(&weft_endpoints, &f.dst);
	if (dst)
		return to_local(skb, &f, dst);
	return to_remote(skb, &f);
}

SEC("tc/to_pod")
int weft_to_pod(struct __sk_buff *skb)
{
	struct flow f = {};
	struct weft_ep_value *dst;
	int why = parse(skb, &f);

	if (why)
		return pass(why);
	dst = bpf_map_lookup_elem(&weft_endpoints, &f.dst);
	if (!dst)
		return pass(WEFT_STAT_PASS_NOT_POD);
	return to_local(skb, &f, dst);
}
