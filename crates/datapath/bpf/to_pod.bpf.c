// SPDX-License-Identifier: GPL-2.0-only
/*
 * weft_to_pod: at the ingress of the device where other nodes' pod traffic
 * arrives (tcx): the VXLAN device, or the underlay in native routing. TCP
 * and UDP from a cluster pod to a fast pod on this node go straight into
 * its eth0 (bpf_redirect_peer); everything else takes the kernel path
 * (TCX_NEXT). Traffic from another node itself (not from one of its pods)
 * must meet this node's conntrack: the pod's reply leaves by the kernel path
 * (its destination is outside the pools), and without an entry made by the
 * request it would be a new flow, masqueraded.
 */
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/forward.h"

char LICENSE[] SEC("license") = "GPL";

SEC("tc/to_pod")
int weft_to_pod(struct __sk_buff *skb)
{
	struct flow f = {};
	struct weft_cidr_key src = {};
	struct weft_ep_value *dst;
	int why = parse(skb, &f);

	if (why)
		return pass(why);
	src.family = f.family;
	src.prefixlen = 32 + (f.family == WEFT_AF_INET ? 32 : 128);
	__builtin_memcpy(src.addr, f.src.addr, 16);
	if (!bpf_map_lookup_elem(&weft_cluster, &src))
		return pass(WEFT_STAT_PASS_NOT_POD);
	dst = bpf_map_lookup_elem(&weft_endpoints, &f.dst);
	if (!dst)
		return pass(WEFT_STAT_PASS_NOT_POD);
	return to_local(skb, &f, dst);
}
