/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The fast path's maps. Every entry file includes this one definition; the
 * loader creates each map once and shares it by name between the objects
 * (weft_bpf::LoadOptions::share). Layouts: weft/maps.h (crates/bpf-abi).
 */
#ifndef WEFT_LIB_MAPS_H
#define WEFT_LIB_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "weft/maps.h"
#include "weft/counters.h"

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

/* Pinned: the counters outlive an agent restart (weft status keeps counting). */
struct weft_map_def SEC("maps") weft_stats = {
	.type = BPF_MAP_TYPE_PERCPU_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = WEFT_STAT_MAX,
	.pinning = WEFT_PIN_BY_NAME,
};

#endif
