/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * weft_stats: per-CPU counters of the forwarding programs, indexed by
 * enum weft_stat. Each enumerator becomes, in Rust, a constant (STAT_LOCAL),
 * a name ("local", what `weft status` shows) and a field of the generated
 * `Stats` struct; WEFT_STAT_MAX must stay last. A counter added here is
 * counted, summed and shown with no other edit.
 */
#ifndef WEFT_COUNTERS_H
#define WEFT_COUNTERS_H

enum weft_stat {
	WEFT_STAT_LOCAL = 0,              /* redirected into a pod on this node */
	WEFT_STAT_REMOTE = 1,             /* redirected towards another node */
	WEFT_STAT_PASS_NOT_POD = 2,       /* not for a cluster pod: host stack */
	WEFT_STAT_PASS_TRACKED = 3,       /* conntrack knows the flow (NAT): stack */
	WEFT_STAT_PASS_SLOW_ENDPOINT = 4, /* endpoint shaped, unknown or spoofed */
	WEFT_STAT_PASS_PROTO = 5,         /* not TCP/UDP, fragment, options, TTL */
	WEFT_STAT_PASS_FIB = 6,           /* no route, or not via the remote device */
	WEFT_STAT_MAX = 7,
};

#endif
