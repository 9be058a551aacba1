/* SPDX-License-Identifier: GPL-2.0-only */
/* Whether conntrack knows a flow, with the bpf_skb_ct_lookup kfunc. */
#ifndef WEFT_LIB_CONNTRACK_H
#define WEFT_LIB_CONNTRACK_H

#include "lib/parse.h"

/* Conntrack lookup kfuncs (net/netfilter/nf_conntrack_bpf.c). */
struct nf_conn;
struct bpf_ct_opts___weft {
	__s32 netns_id;
	__s32 error;
	__u8 l4proto;
	__u8 dir;
	__u8 reserved[2];
};
#define CT_OPTS_SZ 12
#define BPF_F_CURRENT_NETNS (-1)
extern struct nf_conn *bpf_skb_ct_lookup(struct __sk_buff *skb, struct bpf_sock_tuple *tuple,
					 __u32 tuple_sz, struct bpf_ct_opts___weft *opts,
					 __u32 opts_sz) __ksym;
extern void bpf_ct_release(struct nf_conn *ct) __ksym;

/* True when conntrack has an entry for the flow (in either direction): the
 * host stack saw it first, may have NATed it, and must keep seeing it. Flows
 * the fast path carries from their first packet never get an entry. */
static __always_inline int tracked(struct __sk_buff *skb, struct flow *f)
{
	struct bpf_ct_opts___weft opts = {
		.netns_id = BPF_F_CURRENT_NETNS,
		.l4proto = f->proto,
	};
	struct nf_conn *ct;

	/* the size must be a constant on each path for the verifier */
	if (f->family == WEFT_AF_INET)
		ct = bpf_skb_ct_lookup(skb, &f->tuple, sizeof(f->tuple.ipv4), &opts, CT_OPTS_SZ);
	else
		ct = bpf_skb_ct_lookup(skb, &f->tuple, sizeof(f->tuple.ipv6), &opts, CT_OPTS_SZ);
	if (!ct)
		return 0;
	bpf_ct_release(ct);
	return 1;
}

#endif
