//! [`FakeServiceMaps`]: the Service maps in memory, for the reconciler's
//! tests without a kernel; writes can be made to fail.

use std::collections::BTreeSet;
use std::net::IpAddr;

use weft_lb::{LbMaps, MapWriter, Op};

use super::{AffinityEntry, ServiceError, ServiceStats, ServiceTable};

type FailFn = Box<dyn FnMut(&Op) -> bool + Send>;

/// The maps as plain data. Every write is recorded in [`Self::writes`]; one
/// that the failure rule matches fails and changes nothing.
#[derive(Default)]
pub struct FakeServiceMaps {
    pub maps: LbMaps,
    pub node_addrs: BTreeSet<IpAddr>,
    pub affinity: Vec<AffinityEntry>,
    pub stats: ServiceStats,
    /// Ops written successfully, in order.
    pub writes: Vec<Op>,
    fail: Option<FailFn>,
}

impl std::fmt::Debug for FakeServiceMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeServiceMaps")
            .field("maps", &self.maps)
            .field("node_addrs", &self.node_addrs)
            .field("writes", &self.writes.len())
            .finish()
    }
}

impl FakeServiceMaps {
    /// Maps that already hold `maps` (a restart's read-back).
    pub fn with(maps: LbMaps) -> Self {
        FakeServiceMaps {
            maps,
            ..Self::default()
        }
    }

    /// Writes for which `rule` returns true fail from now on.
    pub fn fail_when(&mut self, rule: impl FnMut(&Op) -> bool + Send + 'static) {
        self.fail = Some(Box::new(rule));
    }

    /// Every write succeeds again.
    pub fn heal(&mut self) {
        self.fail = None;
    }
}

impl MapWriter for FakeServiceMaps {
    type Error = ServiceError;

    fn write(&mut self, op: &Op) -> Result<(), ServiceError> {
        if self.fail.as_mut().is_some_and(|f| f(op)) {
            return Err(ServiceError::Injected(format!("{op:?}")));
        }
        self.maps.apply(op);
        self.writes.push(op.clone());
        Ok(())
    }
}

impl ServiceTable for FakeServiceMaps {
    fn read_back(&self) -> Result<LbMaps, ServiceError> {
        Ok(self.maps.clone())
    }

    fn set_node_addrs(&mut self, addrs: &[IpAddr]) -> Result<(), ServiceError> {
        self.node_addrs = addrs.iter().copied().collect();
        Ok(())
    }

    fn affinity(&self) -> Result<Vec<AffinityEntry>, ServiceError> {
        Ok(self.affinity.clone())
    }

    fn counters(&self) -> Result<ServiceStats, ServiceError> {
        Ok(self.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_lb::maps::{BackendValue, RevNatValue};
    use weft_lb::{BackendState, Protocol};

    #[test]
    fn both_tables_are_sendable_trait_objects() {
        fn boxed<T: ServiceTable + Send + 'static>(t: T) -> Box<dyn ServiceTable + Send> {
            Box::new(t)
        }
        let mut t = boxed(FakeServiceMaps::default());
        t.set_node_addrs(&["10.0.0.1".parse().unwrap()]).unwrap();
        assert!(t.read_back().unwrap().services.is_empty());
        fn kernel_is_send<T: Send + Sync>() {}
        kernel_is_send::<super::super::ServiceMaps>();
        kernel_is_send::<super::super::ServicePrograms>();
    }

    #[test]
    fn failed_writes_change_nothing_and_reconcile_retries_them() {
        let mut desired = LbMaps::default();
        desired.backends.insert(
            1,
            BackendValue {
                addr: "10.0.0.1".parse().unwrap(),
                port: 80,
                proto: Protocol::TCP,
                state: BackendState::Active,
            },
        );
        desired.rev_nat.insert(
            1,
            RevNatValue {
                addr: "10.96.0.1".parse().unwrap(),
                port: 80,
            },
        );
        let mut fake = FakeServiceMaps::default();
        fake.fail_when(|op| matches!(op, Op::UpsertRevNat(..)));
        let mut current = fake.read_back().unwrap();
        let round = weft_lb::reconcile(&desired, &mut current, &mut fake);
        assert_eq!(round.failed.len(), 1);
        assert_eq!(fake.maps, current, "only successes were recorded");
        fake.heal();
        let round = weft_lb::reconcile(&desired, &mut current, &mut fake);
        assert!(round.is_clean());
        assert_eq!(fake.read_back().unwrap(), desired);
    }
}
