/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Flow events (weft/flow.h): the ring buffer weftd reads, the per-flow
 * limiter that keeps a dropped flow from flooding it, and the drop counters.
 * Every program that decides about a flow (policy, Services) reports
 * through flow_report(); nothing here decides anything.
 */
#ifndef WEFT_LIB_FLOW_H
#define WEFT_LIB_FLOW_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "weft/maps.h"
#include "weft/counters.h"
#include "weft/flow.h"

/* 256 KiB: ~2300 events between two reads of weftd's reader. */
struct weft_map_def SEC("maps") weft_flows = {
	.type = BPF_MAP_TYPE_RINGBUF,
	.max_entries = 256 * 1024,
};

/* Events are written without waking weftd's reader, which polls the ring
 * every 50 ms (weft_agent::flows::POLL): a packet that is reported does not
 * also pay for a thread's wake-up (on a loaded 2-CPU node that wake-up, not
 * the write, was the round trip's cost). Past this fill (a quarter of the
 * ring, ~580 events) every event wakes it, so a burst is drained before the
 * ring is full. */
#define WEFT_FLOW_WAKE_BYTES (64 * 1024)

/* The limiter's key: one flow in one direction. */
struct flow_limit_key {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u8 family;
	__u8 proto;
	__u8 pad[2];
};

/* Last report of a dropped flow (ns). LRU: a flood of distinct flows evicts
 * old entries instead of failing, and then reports again (bounded by the
 * ring's size, counted as lost when it is full). */
struct weft_map_def SEC("maps") weft_flow_limit = {
	.type = BPF_MAP_TYPE_LRU_HASH,
	.key_size = sizeof(struct flow_limit_key),
	.value_size = sizeof(__u64),
	.max_entries = 16384,
};

/* Drops by reason (enum weft_drop), per CPU; pinned so they keep counting
 * across an agent restart, like weft_stats. */
struct weft_map_def SEC("maps") weft_drops = {
	.type = BPF_MAP_TYPE_PERCPU_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = WEFT_DROP_MAX,
	.pinning = WEFT_PIN_BY_NAME,
};

/* Events the ring had no room for, per CPU (index 0); weftd adds what its
 * own bounded ring evicts to report the total lost. */
struct weft_map_def SEC("maps") weft_flow_lost = {
	.type = BPF_MAP_TYPE_PERCPU_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = 1,
	.pinning = WEFT_PIN_BY_NAME,
};

static __always_inline void flow_count_drop(__u32 reason)
{
	__u64 *n = bpf_map_lookup_elem(&weft_drops, &reason);
	if (n)
		*n += 1;
}

/* Whether a drop of this flow may be reported now (at most once per
 * WEFT_FLOW_DROP_INTERVAL_NS per flow). */
static __always_inline int flow_drop_due(const struct weft_flow_event *ev)
{
	struct flow_limit_key k = {};
	__u64 now = ev->ts_ns, *last;

	__builtin_memcpy(k.src, ev->src, 16);
	__builtin_memcpy(k.dst, ev->dst, 16);
	k.sport = ev->sport;
	k.dport = ev->dport;
	k.family = ev->family;
	k.proto = ev->proto;
	last = bpf_map_lookup_elem(&weft_flow_limit, &k);
	if (last && now - *last < WEFT_FLOW_DROP_INTERVAL_NS)
		return 0;
	bpf_map_update_elem(&weft_flow_limit, &k, &now, BPF_ANY);
	return 1;
}

/* Reports one decision. The caller fills the event (ts_ns from
 * bpf_ktime_get_ns()); drops are counted always and reported rate-limited. */
static __always_inline void flow_report(struct weft_flow_event *ev)
{
	__u32 zero = 0;
	__u64 *lost, wake = BPF_RB_NO_WAKEUP;

	if (ev->verdict == WEFT_VERDICT_DROPPED || ev->verdict == WEFT_VERDICT_AUDIT) {
		if (ev->verdict == WEFT_VERDICT_DROPPED)
			flow_count_drop(ev->drop_reason);
		if (!flow_drop_due(ev))
			return;
	}
	if (bpf_ringbuf_query(&weft_flows, BPF_RB_AVAIL_DATA) >= WEFT_FLOW_WAKE_BYTES)
		wake = BPF_RB_FORCE_WAKEUP;
	if (bpf_ringbuf_output(&weft_flows, ev, sizeof(*ev), wake) == 0)
		return;
	lost = bpf_map_lookup_elem(&weft_flow_lost, &zero);
	if (lost)
		*lost += 1;
}

#endif
