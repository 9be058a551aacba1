// SPDX-License-Identifier: GPL-2.0-only
/*
 * weft_flow_selftest: a test-only tc program that reports every TCP or UDP
 * packet it sees through flow_report(), so the ring buffer's round trip
 * (program -> weft_flows -> weftd's reader) is proved under
 * BPF_PROG_TEST_RUN without any policy or Service program. Never attached
 * by weftd.
 *
 * The test steers the decision through skb->mark: the low byte is the
 * verdict (WEFT_VERDICT_*, 0 = FORWARDED), the next byte the drop reason,
 * the next the rule id. It always returns TCX_NEXT.
 */
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/flow.h"
#include "weft/verdicts.h"

char LICENSE[] SEC("license") = "GPL";

SEC("tc/flow_selftest")
int weft_flow_selftest(struct __sk_buff *skb)
{
	struct weft_flow_event ev = {};
	struct flow f = {};
	__u32 mark = skb->mark;

	if (parse(skb, &f))
		return WEFT_TCX_NEXT;
	ev.ts_ns = bpf_ktime_get_ns();
	__builtin_memcpy(ev.src, f.src.addr, 16);
	__builtin_memcpy(ev.dst, f.dst.addr, 16);
	ev.family = f.family;
	ev.proto = f.proto;
	if (f.family == WEFT_AF_INET) {
		ev.sport = f.tuple.ipv4.sport;
		ev.dport = f.tuple.ipv4.dport;
	} else {
		ev.sport = f.tuple.ipv6.sport;
		ev.dport = f.tuple.ipv6.dport;
	}
	if (f.proto == IPPROTO_TCP) {
		/* parse() took no options or extension headers: fixed offsets */
		__u32 off = ETH_HLEN + (f.family == WEFT_AF_INET ? 20 : 40) + 13;
		__u8 flags;

		if (bpf_skb_load_bytes(skb, off, &flags, 1) == 0)
			ev.tcp_flags = flags;
	}
	ev.verdict = (mark & 0xff) ? (mark & 0xff) : WEFT_VERDICT_FORWARDED;
	ev.drop_reason = (mark >> 8) & 0xff;
	ev.rule_id = (mark >> 16) & 0xff;
	ev.kind = WEFT_FLOW_KIND_DECISION;
	ev.point = WEFT_POINT_FROM_POD;
	ev.direction = WEFT_DIR_EGRESS;
	ev.ifindex = skb->ingress_ifindex;
	ev.packets = 1;
	ev.bytes = skb->len;
	flow_report(&ev);
	return WEFT_TCX_NEXT;
}
