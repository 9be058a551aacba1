/* SPDX-License-Identifier: GPL-2.0-only */
/* Counting what the programs did (enum weft_stat) and handing a packet to
 * the kernel path. */
#ifndef WEFT_LIB_STATS_H
#define WEFT_LIB_STATS_H

#include "lib/maps.h"
#include "weft/verdicts.h"

static __always_inline void count(__u32 stat)
{
	__u64 *n = bpf_map_lookup_elem(&weft_stats, &stat);
	if (n)
		*n += 1;
}

/* Counts why and lets the kernel path take the packet unchanged. */
static __always_inline int pass(__u32 stat)
{
	count(stat);
	return WEFT_TCX_NEXT;
}

#endif
