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
	struct weft_ep_value *dst;
	int why;

	/* policy alone (--fastpath off): the kernel path carries everything */
	if (policy_flags() & WEFT_CONFIG_NO_FORWARD)
		return WEFT_TCX_NEXT;
	why = parse(skb, &f);
	if (why)
		return pass(why);
	dst = bpf_map_lookup_elem(&weft_endpoints, &f.dst);
	if (!dst)
		return pass(WEFT_STAT_PASS_NOT_POD);
	return to_local(skb, &f, dst);
}
