// SPDX-License-Identifier: GPL-2.0-only
/*
 * weft_from_pod: at the ingress of every host-side pod veth (tcx).
 *
 * For TCP and UDP from a known, unshaped pod sending its own address from
 * its own veth, it does what the kernel's routing would do (TTL, MAC
 * rewrite) and hands the packet straight to its next device:
 *   - to a pod on this node: bpf_redirect_peer, into the pod's eth0 ingress,
 *     with no second veth crossing and no netfilter;
 *   - to a pod on another node: a FIB lookup and bpf_redirect towards the
 *     remote device, skipping the forward path and netfilter.
 * Everything else (and every flow conntrack knows, i.e. flows that the host
 * stack NATs: portmap, kube-proxy, masquerade replies) returns TCX_NEXT and
 * takes the kernel's normal path, so the node behaves as without programs.
 * With policy on (weft_config.flags & WEFT_CONFIG_POLICY) it first judges
 * the sending pod's egress policy (lib/policy.h), and the receiving pod's
 * ingress policy right before a redirect into it; with WEFT_CONFIG_NO_FORWARD
 * (--fastpath off) it judges egress and leaves the rest to the kernel.
 * The packet is parsed once (lib/parse.h) and the parse handed to both
 * policy judgements; only what the fast path does not parse (other
 * protocols, fragments, options) is parsed again for policy.
 * The features are header libraries under lib/.
 */
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/forward.h"

char LICENSE[] SEC("license") = "GPL";

SEC("tc/from_pod")
int weft_from_pod(struct __sk_buff *skb)
{
	struct flow f = {};
	struct pflow p = {};
	struct weft_ep_value *src, *dst;
	__u32 flags = policy_flags();
	int why = parse(skb, &f);

	if (flags & WEFT_CONFIG_POLICY) {
		if (!why)
			policy_from_flow(skb, &f, &p);
		else if (policy_parse(skb, &p))
			goto judged; /* not IP: nothing to judge */
		if (policy_judge(skb, &p, WEFT_POLICY_EGRESS, WEFT_POINT_FROM_POD) == POLICY_DROP)
			return WEFT_TCX_DROP;
	}
judged:
	if (flags & WEFT_CONFIG_NO_FORWARD)
		return WEFT_TCX_NEXT;
	if (why)
		return pass(why);
	/* only a known, unshaped pod sending its own address from its own veth */
	src = bpf_map_lookup_elem(&weft_endpoints, &f.src);
	if (!src || src->host_ifindex != skb->ingress_ifindex || !(src->flags & WEFT_EP_FAST))
		return pass(WEFT_STAT_PASS_SLOW_ENDPOINT);
	dst = bpf_map_lookup_elem(&weft_endpoints, &f.dst);
	if (dst)
		return to_local(skb, &f, dst, &p, flags);
	return to_remote(skb, &f);
}
