// SPDX-License-Identifier: GPL-2.0-only
/*
 * weft_to_pod: at the ingress of the device where other nodes' pod traffic
 * arrives (tcx): the VXLAN device, or the underlay in native routing. TCP
 * and UDP for a fast pod on this node go straight into its eth0
 * (bpf_redirect_peer); everything else takes the kernel path (TCX_NEXT).
 * With policy on, the pod's ingress policy is judged before the redirect
 * (lib/forward.h); the kernel path's packets meet it at weft_to_container.
 */
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/forward.h"

char LICENSE[] SEC("license") = "GPL";

SEC("tc/to_pod")
int weft_to_pod(struct __sk_buff *skb)
{
	struct flow f = {};
	struct pflow p = {};
	struct weft_ep_value *dst;
	struct weft_cidr_key ck = {};
	__u32 flags = policy_flags();
	int why;

	/* policy alone (--fastpath off): the kernel path carries everything */
	if (flags & WEFT_CONFIG_NO_FORWARD)
		return WEFT_TCX_NEXT;
	why = parse(skb, &f);
	if (why)
		return pass(why);
	/* Only pod-to-pod flows: the replies to a node or fabric address (a
	 * node's own client, a NodePort NATed by kube-proxy) leave through the
	 * kernel and its nat-outgoing masquerade, so the kernel's conntrack
	 * must see the flow's first packets too, or it takes a later reply
	 * for a new flow and masquerades it (the peer then resets). */
	ck.family = f.family;
	__builtin_memcpy(ck.addr, f.src.addr, 16);
	ck.prefixlen = 32 + (f.family == WEFT_AF_INET ? 32 : 128);
	if (!bpf_map_lookup_elem(&weft_cluster, &ck))
		return pass(WEFT_STAT_PASS_NOT_POD);
	dst = bpf_map_lookup_elem(&weft_endpoints, &f.dst);
	if (!dst)
		return pass(WEFT_STAT_PASS_NOT_POD);
	if (flags & WEFT_CONFIG_POLICY)
		policy_from_flow(skb, &f, &p);
	return to_local(skb, &f, dst, &p, flags);
}
