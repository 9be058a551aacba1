/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Service load balancing: the maps (layouts in weft/lb.h) and the per-flow
 * decisions every Service program makes the same way, mirroring
 * crates/lb/src/select.rs: which frontend scope a flow uses, the slot
 * `hash % count + 1` or the Maglev entry `ids[hash % m]`, and ClientIP
 * affinity (reuse while the recorded backend is still among the slots and
 * the entry is at most the timeout old).
 *
 * Every map is pinned: a restarted weftd takes the service maps back (and
 * with them the service and backend ids conntrack, NAT and affinity entries
 * name) while the old programs keep serving until the new ones replace them.
 */
#ifndef WEFT_LIB_LB_H
#define WEFT_LIB_LB_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "weft/maps.h"
#include "weft/lb.h"

struct weft_map_def SEC("maps") weft_lb_services = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(struct weft_lb_svc_key),
	.value_size = sizeof(struct weft_lb_svc_value),
	.max_entries = 65536,
	.pinning = WEFT_PIN_BY_NAME,
};

struct weft_map_def SEC("maps") weft_lb_backends = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(__u32),
	.value_size = sizeof(struct weft_lb_backend),
	.max_entries = 65536,
	.pinning = WEFT_PIN_BY_NAME,
};

struct weft_map_def SEC("maps") weft_lb_revnat = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(__u32),
	.value_size = sizeof(struct weft_lb_revnat),
	.max_entries = 65536,
	.pinning = WEFT_PIN_BY_NAME,
};

/* One 64 KiB table per Maglev frontend scope, allocated when written
 * (NO_PREALLOC): an array indexed by (service id, scope) would reserve
 * 8 GiB, and weft's loader has no map-in-map (cilium's HASH_OF_MAPS). */
struct weft_map_def SEC("maps") weft_lb_maglev = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(struct weft_lb_maglev_key),
	.value_size = sizeof(struct weft_lb_maglev),
	.max_entries = 65536,
	.map_flags = BPF_F_NO_PREALLOC,
	.pinning = WEFT_PIN_BY_NAME,
};

struct weft_map_def SEC("maps") weft_lb_node = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(struct weft_lb_node_key),
	.value_size = sizeof(__u32),
	.max_entries = 256,
	.pinning = WEFT_PIN_BY_NAME,
};

struct weft_map_def SEC("maps") weft_lb_affinity = {
	.type = BPF_MAP_TYPE_LRU_HASH,
	.key_size = sizeof(struct weft_lb_affinity_key),
	.value_size = sizeof(struct weft_lb_affinity_value),
	.max_entries = 65536,
	.pinning = WEFT_PIN_BY_NAME,
};

struct weft_map_def SEC("maps") weft_lb_stats = {
	.type = BPF_MAP_TYPE_PERCPU_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = WEFT_LB_STAT_MAX,
	.pinning = WEFT_PIN_BY_NAME,
};

/* Affinity checks at most this many slots for the recorded backend; a
 * larger frontend only checks that the backend still exists. */
#define LB_AFFINITY_SCAN 64

static __always_inline void lb_count(__u32 stat)
{
	__u64 *n = bpf_map_lookup_elem(&weft_lb_stats, &stat);
	if (n)
		*n += 1;
}

/* murmur3's 32-bit finaliser: every input bit reaches every output bit. */
static __always_inline __u32 lb_mix32(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

static __always_inline __u32 lb_hash64(__u64 v)
{
	return lb_mix32((__u32)v ^ lb_mix32((__u32)(v >> 32) ^ 0x9e3779b9));
}

/* Whether addr (16 bytes, IPv4 in the first 4) is one of this node's. */
static __always_inline int lb_is_node_addr(const __u8 *addr, __u8 family)
{
	struct weft_lb_node_key k = { .family = family };

	__builtin_memcpy(k.addr, addr, 16);
	return bpf_map_lookup_elem(&weft_lb_node, &k) != NULL;
}

/*
 * The master of the frontend a new flow to key (addr, port, family, proto
 * filled) uses, or NULL. A destination that is one of the node's addresses
 * without a frontend of its own is tried as a NodePort (address zero).
 * `scope` is where the flow comes from: with two scopes (a Local external
 * traffic policy) pods and the node use the internal one. key->scope and
 * key->slot are left as the master found.
 */
static __always_inline struct weft_lb_svc_value *lb_frontend(struct weft_lb_svc_key *key,
							    __u8 scope)
{
	struct weft_lb_svc_value *svc;

	key->slot = 0;
	key->scope = WEFT_LB_SCOPE_EXT;
	key->pad = 0;
	svc = bpf_map_lookup_elem(&weft_lb_services, key);
	if (!svc) {
		if (!lb_is_node_addr(key->addr, key->family))
			return NULL;
		__builtin_memset(key->addr, 0, 16);
		svc = bpf_map_lookup_elem(&weft_lb_services, key);
		if (!svc)
			return NULL;
	}
	if (scope == WEFT_LB_SCOPE_INT && (svc->flags & WEFT_LB_TWO_SCOPES)) {
		key->scope = WEFT_LB_SCOPE_INT;
		svc = bpf_map_lookup_elem(&weft_lb_services, key);
	}
	return svc;
}

/* Whether the frontend can take no new flow (reject or drop). */
static __always_inline int lb_no_backend(const struct weft_lb_svc_value *svc)
{
	return svc->count == 0 || (svc->flags & (WEFT_LB_REJECT | WEFT_LB_DROP));
}

/* select.rs `pick`: the Maglev entry or slot `hash % count + 1`; 0 if none. */
static __always_inline __u32 lb_pick(const struct weft_lb_svc_key *master,
				     const struct weft_lb_svc_value *svc, __u32 hash)
{
	struct weft_lb_svc_key k = *master;
	struct weft_lb_svc_value *slot;

	if (svc->flags & WEFT_LB_MAGLEV) {
		struct weft_lb_maglev_key mk = {
			.service_id = svc->rev_nat_id,
			.scope = master->scope,
		};
		struct weft_lb_maglev *t = bpf_map_lookup_elem(&weft_lb_maglev, &mk);
		__u32 idx;

		if (!t || t->m == 0 || t->m > WEFT_LB_MAGLEV_MAX)
			return 0;
		idx = hash % t->m;
		/* clang knows idx < m <= MAX and drops the check the verifier
		 * needs: hide idx from it */
		asm volatile("" : "+r"(idx));
		if (idx >= WEFT_LB_MAGLEV_MAX)
			return 0;
		return t->ids[idx];
	}
	if (svc->count == 0)
		return 0;
	k.slot = hash % svc->count + 1;
	slot = bpf_map_lookup_elem(&weft_lb_services, &k);
	return slot ? slot->backend_id : 0;
}

/* select.rs `slot_backends(..).contains(id)`. */
static __always_inline int lb_usable(const struct weft_lb_svc_key *master,
				     const struct weft_lb_svc_value *svc, __u32 id)
{
	struct weft_lb_svc_key k = *master;
	__u16 n = svc->count;

	if (n > LB_AFFINITY_SCAN)
		return bpf_map_lookup_elem(&weft_lb_backends, &id) != NULL;
	for (__u16 i = 1; i <= LB_AFFINITY_SCAN; i++) {
		struct weft_lb_svc_value *s;

		if (i > n)
			break;
		k.slot = i;
		s = bpf_map_lookup_elem(&weft_lb_services, &k);
		if (s && s->backend_id == id)
			return 1;
	}
	return 0;
}

/*
 * The backend id for a new flow: with ClientIP affinity the client's
 * recorded backend while select.rs `affinity` says Reuse, else lb_pick; the
 * choice is recorded (last_seen refreshed). 0: no backend.
 */
static __always_inline __u32 lb_select(const struct weft_lb_svc_key *master,
				       const struct weft_lb_svc_value *svc, __u32 hash,
				       struct weft_lb_affinity_key *client)
{
	struct weft_lb_affinity_value *a, nv = {};
	__u64 now;
	__u32 id;

	if (!(svc->flags & WEFT_LB_AFFINITY))
		return lb_pick(master, svc, hash);
	client->service_id = svc->rev_nat_id;
	client->pad = 0;
	now = bpf_ktime_get_ns() / 1000000000ULL;
	a = bpf_map_lookup_elem(&weft_lb_affinity, client);
	if (a && (now < a->last_seen || now - a->last_seen <= svc->affinity_timeout) &&
	    lb_usable(master, svc, a->backend_id))
		id = a->backend_id;
	else
		id = lb_pick(master, svc, hash);
	if (id) {
		nv.backend_id = id;
		nv.last_seen = now;
		bpf_map_update_elem(&weft_lb_affinity, client, &nv, BPF_ANY);
	}
	return id;
}

#endif
