/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * What weft's tc programs return. TCX_NEXT lets later programs and legacy
 * tc filters (the bandwidth plugin's ingress mirred) see the packet; the
 * kernel path then takes it unchanged. Values from include/uapi/linux/bpf.h
 * and pkt_cls.h of Linux >= 6.6 (the build headers may be older).
 */
#ifndef WEFT_VERDICTS_H
#define WEFT_VERDICTS_H

#define WEFT_TCX_NEXT ((__s32)-1)
#define WEFT_TCX_PASS ((__s32)0)
#define WEFT_TCX_DROP ((__s32)2)
#define WEFT_TC_ACT_REDIRECT ((__s32)7)

#endif
