//! When a node may journal an allocation instead of writing it to the
//! shared store ("Local allocations" in the crate docs).
//!
//! A journaled allocation lives in a block the store shows as this node's.
//! That is only true while the node's registration lease lives: once it
//! has lapsed, other nodes count the node gone and, after their grace,
//! collect its blocks. So the node journals only while
//!
//! - its lease is known alive with a margin: the deadline is the moment the
//!   last successful renewal was *sent* plus the TTL (the store restarts
//!   the TTL when it handles the renewal, later), and the margin is longer
//!   than a flush interval plus clock slop, so an allocation journaled now
//!   reaches the store before the lease could lapse;
//! - the store answered recently (within two flush intervals): with the
//!   store silent, an ADD takes the store path, which fails fast
//!   (`Unavailable`, CNI code 11) rather than succeeding on a node that may
//!   be cut off.
//!
//! Everything here is time arithmetic on the [`crate::Clock`]'s
//! milliseconds; the renewals are reported by whoever keeps the lease
//! (weftd's registration thread).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What the clocks of this node and the store's may drift apart, and the
/// time a renewal may spend between its send and the store handling it,
/// taken together.
pub const CLOCK_SLOP: Duration = Duration::from_secs(1);

/// Whether the journal may take an allocation now, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateState {
    Open,
    /// No renewal of the node's lease was reported yet.
    NoLease,
    /// The lease's deadline (ms) is less than the margin away, or past.
    LeaseEnding {
        deadline_ms: u64,
    },
    /// The store's last answer (ms; 0: none yet) is older than the bound.
    StoreSilent {
        last_answer_ms: u64,
    },
}

/// The journal's gate: the node's lease deadline and the store's last
/// answer, both reported from outside, checked against a clock's now.
#[derive(Debug)]
pub struct JournalGate {
    /// The lease's deadline: last renewal's send time + TTL (0: none).
    lease_deadline_ms: AtomicU64,
    /// When the last store request that got an answer was sent (0: none).
    store_answered_ms: AtomicU64,
    margin_ms: u64,
    answer_bound_ms: u64,
}

impl JournalGate {
    /// The gate for a node flushing every `flush_interval`: margin
    /// `flush_interval + CLOCK_SLOP`, store answer bound `2 × flush_interval`.
    pub fn new(flush_interval: Duration) -> JournalGate {
        let flush = crate::ms(flush_interval);
        JournalGate {
            lease_deadline_ms: AtomicU64::new(0),
            store_answered_ms: AtomicU64::new(0),
            margin_ms: flush.saturating_add(crate::ms(CLOCK_SLOP)),
            answer_bound_ms: flush.saturating_mul(2),
        }
    }

    /// The node's lease was renewed (or granted) by a request sent at
    /// `sent_at_ms`, for `ttl`.
    pub fn lease_renewed(&self, sent_at_ms: u64, ttl: Duration) {
        let deadline = sent_at_ms.saturating_add(crate::ms(ttl));
        self.lease_deadline_ms.fetch_max(deadline, Ordering::SeqCst);
        self.store_answered(sent_at_ms);
    }

    /// A store request sent at `sent_at_ms` got an answer (a conflict is an
    /// answer too).
    pub fn store_answered(&self, sent_at_ms: u64) {
        self.store_answered_ms
            .fetch_max(sent_at_ms, Ordering::SeqCst);
    }

    /// The gate at `now_ms`.
    pub fn state(&self, now_ms: u64) -> GateState {
        let deadline_ms = self.lease_deadline_ms.load(Ordering::SeqCst);
        if deadline_ms == 0 {
            return GateState::NoLease;
        }
        if now_ms.saturating_add(self.margin_ms) >= deadline_ms {
            return GateState::LeaseEnding { deadline_ms };
        }
        let last_answer_ms = self.store_answered_ms.load(Ordering::SeqCst);
        if last_answer_ms == 0 || now_ms.saturating_sub(last_answer_ms) > self.answer_bound_ms {
            return GateState::StoreSilent { last_answer_ms };
        }
        GateState::Open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;
    const FLUSH: Duration = Duration::from_millis(500);
    const TTL: Duration = Duration::from_secs(10);

    #[test]
    fn closed_until_a_lease_renewal_is_reported() {
        let g = JournalGate::new(FLUSH);
        g.store_answered(T0);
        assert_eq!(g.state(T0), GateState::NoLease);
        g.lease_renewed(T0, TTL);
        assert_eq!(g.state(T0), GateState::Open);
    }

    #[test]
    fn closes_a_margin_before_the_lease_deadline() {
        let g = JournalGate::new(FLUSH);
        g.lease_renewed(T0, TTL);
        let deadline = T0 + 10_000;
        // margin: one flush interval + the clock slop
        let last_open = deadline - 1_500 - 1;
        g.store_answered(last_open);
        assert_eq!(g.state(last_open), GateState::Open);
        assert_eq!(
            g.state(last_open + 1),
            GateState::LeaseEnding {
                deadline_ms: deadline
            }
        );
        assert!(matches!(
            g.state(deadline + 1),
            GateState::LeaseEnding { .. }
        ));
        // a renewal reported late moves the deadline on; an older report
        // (threads racing) never moves it back
        g.lease_renewed(deadline, TTL);
        g.lease_renewed(T0, TTL);
        assert_eq!(g.state(deadline + 1), GateState::Open);
    }

    #[test]
    fn closes_when_the_store_has_not_answered_for_two_flush_intervals() {
        let g = JournalGate::new(FLUSH);
        g.lease_renewed(T0, TTL);
        assert_eq!(g.state(T0 + 1_000), GateState::Open);
        assert_eq!(
            g.state(T0 + 1_001),
            GateState::StoreSilent { last_answer_ms: T0 }
        );
        g.store_answered(T0 + 900);
        assert_eq!(g.state(T0 + 1_001), GateState::Open);
        // an answer older than the one known changes nothing
        g.store_answered(T0);
        assert_eq!(
            g.state(T0 + 1_901),
            GateState::StoreSilent {
                last_answer_ms: T0 + 900
            }
        );
    }
}
