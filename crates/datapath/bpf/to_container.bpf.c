// SPDX-License-Identifier: GPL-2.0-only
/*
 * weft_to_container: at the egress of every host-side pod veth (tcx), the
 * last step of the kernel path into a pod. It judges the pod's ingress
 * policy (lib/policy.h) for everything the kernel delivers: packets weft
 * did not redirect (other protocols, NATed flows, shaped pods, the fast path
 * off), traffic from the node itself, from other nodes on the kernel path.
 * Packets redirected with bpf_redirect_peer never pass here; they were
 * judged before the redirect.
 */
#include "lib/policy.h"

char LICENSE[] SEC("license") = "GPL";

SEC("tc/to_container")
int weft_to_container(struct __sk_buff *skb)
{
	if (!(policy_flags() & WEFT_CONFIG_POLICY))
		return WEFT_TCX_NEXT;
	if (policy_ingress(skb) == POLICY_DROP)
		return WEFT_TCX_DROP;
	return WEFT_TCX_NEXT;
}
