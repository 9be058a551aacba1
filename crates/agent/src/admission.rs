//! Who may hold what on the agent socket. Pure bookkeeping (the server wires
//! it to real connections), so the rules are unit-tested without a socket:
//!
//! - A connection being read holds a *reading slot*. There are at most
//!   `max_reading`; when another connection arrives the oldest reader is cut.
//!   A real client sends its whole request at once and is read within
//!   microseconds, so only idle or trickling clients grow old enough to be cut:
//!   they can never keep a newcomer out.
//! - A body is admitted only after its size is reserved from one byte budget
//!   shared by every connection; when it runs out, the oldest readers holding
//!   bytes are cut. Bodies in memory never exceed the budget, by construction.
//! - A fully read request runs in its *lane*: CNI verbs and everything else
//!   (views) have separate bounded pools, so no amount of other traffic takes
//!   a CNI slot. Running requests are never cut.
//! - Streams (`weft observe`) have a third bounded lane: a stream runs as long
//!   as its observer reads, so it must never sit in a lane that serves
//!   anything else. Its body is decoded before it runs, so a running stream
//!   gives its bytes back to the budget.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Something that can be cut off from another thread (the server shuts the
/// socket down, which wakes its reader with an error).
pub trait Cut {
    fn cut(&self);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Cni,
    Other,
    Stream,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_reading: usize,
    pub body_budget: usize,
    pub cni_lane: usize,
    pub other_lane: usize,
    pub stream_lane: usize,
}

/// Why a connection cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the connection was cut to make room for newer ones")]
    Cut,
    #[error("the body budget is spent by requests being served")]
    NoBudget,
    #[error("every slot of the lane is busy")]
    LaneFull,
}

struct Reader<C> {
    conn: C,
    reserved: usize,
}

struct State<C> {
    next_id: u64,
    /// Keyed by arrival order, so the first entry is the oldest.
    reading: BTreeMap<u64, Reader<C>>,
    /// Requests being served: their lane and the body bytes they hold.
    running: BTreeMap<u64, (Lane, usize)>,
    reserved: usize,
    busy_cni: usize,
    busy_other: usize,
    busy_stream: usize,
}

pub struct Admission<C> {
    limits: Limits,
    state: Mutex<State<C>>,
}

/// One connection's hold on the admission; dropping it releases everything.
pub struct Ticket<C: Cut> {
    adm: Arc<Admission<C>>,
    id: u64,
}

impl<C: Cut> Admission<C> {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Admission {
            limits,
            state: Mutex::new(State {
                next_id: 0,
                reading: BTreeMap::new(),
                running: BTreeMap::new(),
                reserved: 0,
                busy_cni: 0,
                busy_other: 0,
                busy_stream: 0,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State<C>> {
        // the state stays consistent across a panic elsewhere: every change is
        // made under the lock without calls that can panic
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a new connection to be read, cutting the oldest reader when all
    /// reading slots are taken.
    pub fn admit(self: &Arc<Self>, conn: C) -> Ticket<C> {
        let mut st = self.lock();
        while st.reading.len() >= self.limits.max_reading.max(1) {
            let Some((_, old)) = st.reading.pop_first() else {
                break;
            };
            st.reserved -= old.reserved;
            old.conn.cut();
        }
        let id = st.next_id;
        st.next_id += 1;
        st.reading.insert(id, Reader { conn, reserved: 0 });
        Ticket {
            adm: self.clone(),
            id,
        }
    }

    /// (connections being read, bytes reserved, busy CNI slots, busy other slots)
    pub fn usage(&self) -> (usize, usize, usize, usize) {
        let st = self.lock();
        (st.reading.len(), st.reserved, st.busy_cni, st.busy_other)
    }

    /// Streams being served.
    pub fn streams(&self) -> usize {
        self.lock().busy_stream
    }
}

impl<C: Cut> Ticket<C> {
    /// Reserves `bytes` of body, cutting the oldest readers that hold bytes
    /// until they fit.
    pub fn reserve(&self, bytes: usize) -> Result<(), Refused> {
        let adm = &self.adm;
        let mut st = adm.lock();
        if !st.reading.contains_key(&self.id) {
            return Err(Refused::Cut);
        }
        if bytes > adm.limits.body_budget {
            return Err(Refused::NoBudget);
        }
        while st.reserved + bytes > adm.limits.body_budget {
            let victim = st
                .reading
                .iter()
                .find(|(id, r)| **id != self.id && r.reserved > 0)
                .map(|(id, _)| *id);
            let Some(victim) = victim else {
                return Err(Refused::NoBudget);
            };
            if let Some(old) = st.reading.remove(&victim) {
                st.reserved -= old.reserved;
                old.conn.cut();
            }
        }
        st.reserved += bytes;
        if let Some(me) = st.reading.get_mut(&self.id) {
            me.reserved += bytes;
        }
        Ok(())
    }

    /// Moves a fully read request into its lane; from here it is never cut.
    pub fn run(&self, lane: Lane) -> Result<(), Refused> {
        let adm = &self.adm;
        let mut st = adm.lock();
        if !st.reading.contains_key(&self.id) {
            return Err(Refused::Cut);
        }
        let (busy, cap) = match lane {
            Lane::Cni => (st.busy_cni, adm.limits.cni_lane),
            Lane::Other => (st.busy_other, adm.limits.other_lane),
            Lane::Stream => (st.busy_stream, adm.limits.stream_lane),
        };
        if busy >= cap {
            return Err(Refused::LaneFull);
        }
        let Some(me) = st.reading.remove(&self.id) else {
            return Err(Refused::Cut);
        };
        let held = match lane {
            Lane::Cni => {
                st.busy_cni += 1;
                me.reserved
            }
            Lane::Other => {
                st.busy_other += 1;
                me.reserved
            }
            Lane::Stream => {
                st.busy_stream += 1;
                st.reserved -= me.reserved;
                0
            }
        };
        st.running.insert(self.id, (lane, held));
        Ok(())
    }
}

impl<C: Cut> Drop for Ticket<C> {
    fn drop(&mut self) {
        let mut st = self.adm.lock();
        if let Some(r) = st.reading.remove(&self.id) {
            st.reserved -= r.reserved;
        }
        if let Some((lane, bytes)) = st.running.remove(&self.id) {
            st.reserved -= bytes;
            match lane {
                Lane::Cni => st.busy_cni -= 1,
                Lane::Other => st.busy_other -= 1,
                Lane::Stream => st.busy_stream -= 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[derive(Clone, Default)]
    struct Fake(Arc<AtomicBool>);
    impl Cut for Fake {
        fn cut(&self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    impl Fake {
        fn was_cut(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn limits() -> Limits {
        Limits {
            max_reading: 3,
            body_budget: 100,
            cni_lane: 2,
            other_lane: 1,
            stream_lane: 2,
        }
    }

    #[test]
    fn a_newcomer_cuts_the_oldest_reader_when_slots_are_full() {
        let adm = Admission::new(limits());
        let idle: Vec<Fake> = (0..3).map(|_| Fake::default()).collect();
        let tickets: Vec<_> = idle.iter().map(|f| adm.admit(f.clone())).collect();
        let fresh = Fake::default();
        let t = adm.admit(fresh.clone());
        assert!(idle[0].was_cut());
        assert!(!idle[1].was_cut() && !fresh.was_cut());
        assert_eq!(tickets[0].reserve(1), Err(Refused::Cut));
        assert_eq!(t.run(Lane::Cni), Ok(()));
        drop(tickets);
        drop(t);
        assert_eq!(adm.usage(), (0, 0, 0, 0));
    }

    #[test]
    fn the_budget_cuts_the_oldest_holders_and_never_overflows() {
        let adm = Admission::new(limits());
        let (a, b) = (Fake::default(), Fake::default());
        let ta = adm.admit(a.clone());
        let tb = adm.admit(b.clone());
        ta.reserve(60).unwrap();
        tb.reserve(30).unwrap();
        let c = Fake::default();
        let tc = adm.admit(c.clone());
        tc.reserve(20).unwrap();
        assert!(a.was_cut() && !b.was_cut());
        assert_eq!(adm.usage().1, 50);
        assert_eq!(tc.reserve(200), Err(Refused::NoBudget));
        drop((ta, tb, tc));
        assert_eq!(adm.usage(), (0, 0, 0, 0));
    }

    #[test]
    fn running_requests_keep_their_bytes_and_are_never_cut() {
        let adm = Admission::new(limits());
        let a = Fake::default();
        let ta = adm.admit(a.clone());
        ta.reserve(90).unwrap();
        ta.run(Lane::Cni).unwrap();
        let tb = adm.admit(Fake::default());
        assert_eq!(tb.reserve(20), Err(Refused::NoBudget));
        for _ in 0..5 {
            drop(adm.admit(Fake::default()));
        }
        assert!(!a.was_cut());
        drop(ta);
        assert_eq!(tb.reserve(20), Ok(()));
    }

    #[test]
    fn lanes_are_bounded_apart() {
        let adm = Admission::new(limits());
        let others: Vec<_> = (0..2).map(|_| adm.admit(Fake::default())).collect();
        assert_eq!(others[0].run(Lane::Other), Ok(()));
        assert_eq!(others[1].run(Lane::Other), Err(Refused::LaneFull));
        let cni: Vec<_> = (0..2).map(|_| adm.admit(Fake::default())).collect();
        for t in &cni {
            assert_eq!(t.run(Lane::Cni), Ok(()));
        }
        let third = adm.admit(Fake::default());
        assert_eq!(third.run(Lane::Cni), Err(Refused::LaneFull));
        assert_eq!(adm.usage().2, 2);
    }

    #[test]
    fn streams_have_their_own_lane_and_hold_no_budget() {
        let adm = Admission::new(limits());
        let streams: Vec<_> = (0..3).map(|_| adm.admit(Fake::default())).collect();
        for t in &streams {
            t.reserve(30).unwrap();
        }
        assert_eq!(streams[0].run(Lane::Stream), Ok(()));
        assert_eq!(streams[1].run(Lane::Stream), Ok(()));
        assert_eq!(streams[2].run(Lane::Stream), Err(Refused::LaneFull));
        assert_eq!(adm.streams(), 2);
        // the running streams gave their bytes back; CNI and views still run
        assert_eq!(adm.usage().1, 30);
        let cni = adm.admit(Fake::default());
        cni.reserve(60).unwrap();
        assert_eq!(cni.run(Lane::Cni), Ok(()));
        let view = adm.admit(Fake::default());
        assert_eq!(view.run(Lane::Other), Ok(()));
        drop(streams);
        assert_eq!(adm.streams(), 0);
        drop((cni, view));
        assert_eq!(adm.usage(), (0, 0, 0, 0));
    }
}
