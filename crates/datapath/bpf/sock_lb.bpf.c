// SPDX-License-Identifier: GPL-2.0-only
/*
 * The socket-level Service load balancer: cgroup v2 sock_addr hooks, for
 * every process in the cgroup weftd attaches them to (its --cgroup-root).
 *
 *   connect4/6:  a connect to a Service frontend (a ClusterIP, external or
 *                LB address, or a NodePort on one of the node's addresses)
 *                goes straight to a backend's address; no per-packet NAT,
 *                replies need no reverse translation. No usable backend:
 *                connect fails with ECONNREFUSED (bpf_set_retval, as
 *                cilium's sock4_connect does), which is what a client of
 *                kube-proxy sees from its ICMP port unreachable / RST.
 *                Backends, but none in the client's scope
 *                (internalTrafficPolicy: Local, none on this node):
 *                kube-proxy drops, the client times out; the socket keeps
 *                the Service's address and weft_nodeport_out drops its
 *                packets where they would leave the node.
 *   sendmsg4/6:  the same for each datagram of an unconnected UDP socket.
 *   recvmsg4/6, getpeername4/6: the backend's address shown back as the
 *                Service's, from the socket's reverse entry.
 *
 * Backend choice (lib/lb.h): the socket cookie, mixed, is the flow hash, so
 * all datagrams of one UDP socket stay with one backend; affinity is per
 * client network namespace (a socket has no source address at connect).
 */
#include <asm-generic/errno.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>

#include "lib/flow.h"
#include "lib/lb.h"

char LICENSE[] SEC("license") = "GPL";

#define SYS_REJECT 0
#define SYS_PROCEED 1

struct weft_map_def SEC("maps") weft_lb_sk_revnat = {
	.type = BPF_MAP_TYPE_LRU_HASH,
	.key_size = sizeof(struct weft_lb_sk_key),
	.value_size = sizeof(struct weft_lb_revnat),
	.max_entries = 65536,
	.pinning = WEFT_PIN_BY_NAME,
};

/* The address the program gave (user_ip4/6, user_port) as 16 bytes. */
static __always_inline void sock_get_dst(struct bpf_sock_addr *ctx, __u8 family, __u8 *addr,
					 __u16 *port)
{
	if (family == WEFT_AF_INET) {
		__u32 ip = ctx->user_ip4;

		__builtin_memcpy(addr, &ip, 4);
	} else {
		__u32 w0 = ctx->user_ip6[0], w1 = ctx->user_ip6[1];
		__u32 w2 = ctx->user_ip6[2], w3 = ctx->user_ip6[3];

		__builtin_memcpy(addr, &w0, 4);
		__builtin_memcpy(addr + 4, &w1, 4);
		__builtin_memcpy(addr + 8, &w2, 4);
		__builtin_memcpy(addr + 12, &w3, 4);
	}
	*port = (__u16)ctx->user_port;
}

static __always_inline void sock_set_dst(struct bpf_sock_addr *ctx, __u8 family,
					 const __u8 *addr, __u16 port)
{
	if (family == WEFT_AF_INET) {
		__u32 ip;

		__builtin_memcpy(&ip, addr, 4);
		ctx->user_ip4 = ip;
	} else {
		__u32 w[4];

		__builtin_memcpy(w, addr, 16);
		ctx->user_ip6[0] = w[0];
		ctx->user_ip6[1] = w[1];
		ctx->user_ip6[2] = w[2];
		ctx->user_ip6[3] = w[3];
	}
	ctx->user_port = (__u32)port;
}

static __always_inline void sock_report(__u8 family, __u8 proto, const __u8 *dst, __u16 dport,
					const struct weft_lb_backend *be)
{
	struct weft_flow_event ev = {
		.ts_ns = bpf_ktime_get_ns(),
		.family = family,
		.proto = proto,
		.kind = WEFT_FLOW_KIND_DECISION,
		.dport = dport,
		.point = WEFT_POINT_SOCKET,
		.direction = WEFT_DIR_NONE,
		.packets = 1,
	};

	__builtin_memcpy(ev.dst, dst, 16);
	if (be) {
		ev.verdict = WEFT_VERDICT_TRANSLATED;
		__builtin_memcpy(ev.xlat_dst, be->addr, 16);
		ev.xlat_dport = be->port;
	} else {
		ev.verdict = WEFT_VERDICT_DROPPED;
		ev.drop_reason = WEFT_DROP_NO_BACKEND;
	}
	flow_report(&ev);
}

/* out = ::ffff:v4 (16 bytes; the rest of out must be zero). */
static __always_inline void sock_map_v4(__u8 *out, const __u8 *v4)
{
	out[10] = 0xff;
	out[11] = 0xff;
	__builtin_memcpy(out + 12, v4, 4);
}

/* Whether a 16-byte address is IPv4-mapped (::ffff:a.b.c.d). */
static __always_inline int sock_v4_mapped(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;

	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0xffff);
}

/* connect and sendmsg: a Service frontend becomes a backend's address. An
 * IPv6 socket's IPv4-mapped destination is looked up as IPv4 and gets an
 * IPv4 backend, mapped again (dual-stack sockets, e.g. the JVM's). */
static __always_inline int sock_xlate(struct bpf_sock_addr *ctx, __u8 family)
{
	struct weft_lb_svc_key key = { .family = family };
	struct weft_lb_affinity_key client = { .family = WEFT_LB_CLIENT_NETNS };
	struct weft_lb_sk_key sk = { .family = family };
	struct weft_lb_revnat orig = { .family = family };
	struct weft_lb_svc_value *svc;
	struct weft_lb_backend *be;
	__u8 lb_family = family, dst[16] = {};
	__u64 cookie, netns;
	__u32 proto = ctx->protocol, id = 0;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return SYS_PROCEED;
	key.proto = proto;
	sock_get_dst(ctx, family, orig.addr, &orig.port);
	key.port = orig.port;
	if (family == WEFT_AF_INET6 && sock_v4_mapped(orig.addr)) {
		lb_family = WEFT_AF_INET;
		key.family = WEFT_AF_INET;
		__builtin_memcpy(key.addr, orig.addr + 12, 4);
	} else {
		__builtin_memcpy(key.addr, orig.addr, 16);
	}
	svc = lb_frontend(&key, WEFT_LB_SCOPE_INT);
	if (!svc)
		return SYS_PROCEED;
	cookie = bpf_get_socket_cookie(ctx);
	if (!lb_no_backend(svc)) {
		netns = bpf_get_netns_cookie(ctx);
		__builtin_memcpy(client.client, &netns, 8);
		id = lb_select(&key, svc, lb_hash64(cookie), &client);
	}
	be = id ? bpf_map_lookup_elem(&weft_lb_backends, &id) : NULL;
	if (!be && (svc->flags & WEFT_LB_DROP)) {
		lb_count(WEFT_LB_STAT_SOCK_DROP);
		sock_report(family, proto, orig.addr, orig.port, NULL);
		return SYS_PROCEED;
	}
	if (!be || be->family != lb_family) {
		lb_count(WEFT_LB_STAT_SOCK_REJECT);
		sock_report(family, proto, orig.addr, orig.port, NULL);
		bpf_set_retval(-ECONNREFUSED);
		return SYS_REJECT;
	}
	if (lb_family == family)
		__builtin_memcpy(dst, be->addr, 16);
	else
		sock_map_v4(dst, be->addr);
	/* keyed as the socket will see its peer */
	sk.cookie = cookie;
	__builtin_memcpy(sk.addr, dst, 16);
	sk.port = be->port;
	bpf_map_update_elem(&weft_lb_sk_revnat, &sk, &orig, BPF_ANY);
	sock_set_dst(ctx, family, dst, be->port);
	lb_count(WEFT_LB_STAT_SOCK_XLATE);
	sock_report(family, proto, orig.addr, orig.port, be);
	return SYS_PROCEED;
}

/* recvmsg and getpeername: a backend this socket was sent to shows as the
 * Service address the program asked for. */
static __always_inline int sock_revnat(struct bpf_sock_addr *ctx, __u8 family)
{
	struct weft_lb_sk_key sk = { .family = family };
	struct weft_lb_revnat *orig;

	sk.cookie = bpf_get_socket_cookie(ctx);
	sock_get_dst(ctx, family, sk.addr, &sk.port);
	orig = bpf_map_lookup_elem(&weft_lb_sk_revnat, &sk);
	if (!orig && family == WEFT_AF_INET6 && sock_v4_mapped(sk.addr)) {
		/* a datagram an IPv6 socket sent to a mapped address went
		 * through sendmsg4 (the kernel hands it to UDP over IPv4) */
		struct weft_lb_sk_key sk4 = { .cookie = sk.cookie, .family = WEFT_AF_INET };
		__u8 mapped[16] = {};

		__builtin_memcpy(sk4.addr, sk.addr + 12, 4);
		sk4.port = sk.port;
		orig = bpf_map_lookup_elem(&weft_lb_sk_revnat, &sk4);
		if (!orig)
			return SYS_PROCEED;
		sock_map_v4(mapped, orig->addr);
		sock_set_dst(ctx, family, mapped, orig->port);
		lb_count(WEFT_LB_STAT_SOCK_REVNAT);
		return SYS_PROCEED;
	}
	if (!orig)
		return SYS_PROCEED;
	sock_set_dst(ctx, family, orig->addr, orig->port);
	lb_count(WEFT_LB_STAT_SOCK_REVNAT);
	return SYS_PROCEED;
}

SEC("cgroup/connect4")
int weft_sock_connect4(struct bpf_sock_addr *ctx)
{
	return sock_xlate(ctx, WEFT_AF_INET);
}

SEC("cgroup/connect6")
int weft_sock_connect6(struct bpf_sock_addr *ctx)
{
	return sock_xlate(ctx, WEFT_AF_INET6);
}

SEC("cgroup/sendmsg4")
int weft_sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock_xlate(ctx, WEFT_AF_INET);
}

SEC("cgroup/sendmsg6")
int weft_sock_sendmsg6(struct bpf_sock_addr *ctx)
{
	return sock_xlate(ctx, WEFT_AF_INET6);
}

SEC("cgroup/recvmsg4")
int weft_sock_recvmsg4(struct bpf_sock_addr *ctx)
{
	return sock_revnat(ctx, WEFT_AF_INET);
}

SEC("cgroup/recvmsg6")
int weft_sock_recvmsg6(struct bpf_sock_addr *ctx)
{
	return sock_revnat(ctx, WEFT_AF_INET6);
}

SEC("cgroup/getpeername4")
int weft_sock_peer4(struct bpf_sock_addr *ctx)
{
	return sock_revnat(ctx, WEFT_AF_INET);
}

SEC("cgroup/getpeername6")
int weft_sock_peer6(struct bpf_sock_addr *ctx)
{
	return sock_revnat(ctx, WEFT_AF_INET6);
}
