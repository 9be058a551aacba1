//! [`ServiceMaps`]: the kernel's Service maps, as loaded by
//! [`super::ServicePrograms`] (or opened alone for a reader).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use weft_bpf::{Loaded, PerCpuArray, TypedMap};
use weft_bpf_abi::{
    LbAffinityKey, LbAffinityValue, LbBackend, LbMaglev, LbMaglevKey, LbNodeKey, LbRevnat,
    LbSvcKey, LbSvcValue, LB_STAT_MAX,
};
use weft_lb::{LbMaps, MapWriter, Op};

use super::encode;
use super::{AffinityEntry, ServiceError, ServiceStats, ServiceTable};

pub(crate) const SERVICES: &str = "weft_lb_services";
pub(crate) const BACKENDS: &str = "weft_lb_backends";
pub(crate) const REVNAT: &str = "weft_lb_revnat";
pub(crate) const MAGLEV: &str = "weft_lb_maglev";
pub(crate) const NODE: &str = "weft_lb_node";
pub(crate) const AFFINITY: &str = "weft_lb_affinity";
pub(crate) const STATS: &str = "weft_lb_stats";

/// The Service maps of a loaded object (shared with the programs that
/// read them). Cheap to clone; `Send`.
#[derive(Debug, Clone)]
pub struct ServiceMaps {
    loaded: Arc<Loaded>,
}

impl ServiceMaps {
    pub(crate) fn new(loaded: Arc<Loaded>) -> Self {
        ServiceMaps { loaded }
    }

    fn map<K: weft_bpf::Pod, V: weft_bpf::Pod>(
        &self,
        name: &str,
    ) -> Result<TypedMap<'_, K, V>, ServiceError> {
        Ok(TypedMap::new(self.loaded.map(name)?)?)
    }

    /// Deletes every affinity entry of `keys` (an agent's sweep of expired
    /// ones; the programs ignore them anyway).
    pub fn forget_affinity(&self, entries: &[AffinityEntry]) -> Result<usize, ServiceError> {
        let map = self.map::<LbAffinityKey, LbAffinityValue>(AFFINITY)?;
        let mut n = 0;
        for k in map.keys()? {
            let (Ok(client), Some(_)) = (encode::affinity_client(&k), map.get(&k)?) else {
                continue;
            };
            if entries
                .iter()
                .any(|e| e.client == client && e.service_id == k.service_id)
                && map.remove(&k)?
            {
                n += 1;
            }
        }
        Ok(n)
    }
}

impl MapWriter for ServiceMaps {
    type Error = ServiceError;

    fn write(&mut self, op: &Op) -> Result<(), ServiceError> {
        match op {
            Op::UpsertBackend(id, v) => {
                self.map::<u32, LbBackend>(BACKENDS)?
                    .insert(id, &encode::backend(v))?;
            }
            Op::UpsertRevNat(id, v) => {
                self.map::<u32, LbRevnat>(REVNAT)?
                    .insert(&u32::from(*id), &encode::revnat(v))?;
            }
            Op::UpsertMaglev(k, table) => {
                self.map::<LbMaglevKey, LbMaglev>(MAGLEV)?
                    .insert(&encode::maglev_key(k), &*encode::maglev(table)?)?;
            }
            Op::UpsertService(k, v) => {
                self.map::<LbSvcKey, LbSvcValue>(SERVICES)?
                    .insert(&encode::svc_key(k), &encode::svc_value(v))?;
            }
            Op::DeleteService(k) => {
                self.map::<LbSvcKey, LbSvcValue>(SERVICES)?
                    .remove(&encode::svc_key(k))?;
            }
            Op::DeleteMaglev(k) => {
                self.map::<LbMaglevKey, LbMaglev>(MAGLEV)?
                    .remove(&encode::maglev_key(k))?;
            }
            Op::DeleteRevNat(id) => {
                self.map::<u32, LbRevnat>(REVNAT)?.remove(&u32::from(*id))?;
            }
            Op::DeleteBackend(id) => {
                self.map::<u32, LbBackend>(BACKENDS)?.remove(id)?;
            }
        }
        Ok(())
    }
}

impl ServiceTable for ServiceMaps {
    fn read_back(&self) -> Result<LbMaps, ServiceError> {
        let mut out = LbMaps::default();
        let services = self.map::<LbSvcKey, LbSvcValue>(SERVICES)?;
        for k in services.keys()? {
            // an entry deleted between the key walk and the lookup is gone
            if let Some(v) = services.get(&k)? {
                out.services
                    .insert(encode::svc_key_from(&k)?, encode::svc_value_from(&v)?);
            }
        }
        let backends = self.map::<u32, LbBackend>(BACKENDS)?;
        for id in backends.keys()? {
            if let Some(v) = backends.get(&id)? {
                out.backends.insert(id, encode::backend_from(&v)?);
            }
        }
        let revnat = self.map::<u32, LbRevnat>(REVNAT)?;
        for id in revnat.keys()? {
            if let Some(v) = revnat.get(&id)? {
                let id = u16::try_from(id)
                    .map_err(|_| ServiceError::decode(format!("service id {id}")))?;
                out.rev_nat.insert(id, encode::revnat_from(&v)?);
            }
        }
        let maglev = self.map::<LbMaglevKey, LbMaglev>(MAGLEV)?;
        for k in maglev.keys()? {
            if let Some(v) = maglev.get(&k)? {
                out.maglev
                    .insert(encode::maglev_key_from(&k)?, encode::maglev_from(&v)?);
            }
        }
        Ok(out)
    }

    fn set_node_addrs(&mut self, addrs: &[IpAddr]) -> Result<(), ServiceError> {
        let map = self.map::<LbNodeKey, u32>(NODE)?;
        let want: BTreeSet<LbNodeKey> = addrs.iter().map(|&a| encode::node_key(a)).collect();
        for k in &want {
            map.insert(k, &1)?;
        }
        for k in map.keys()? {
            if !want.contains(&k) {
                map.remove(&k)?;
            }
        }
        Ok(())
    }

    fn affinity(&self) -> Result<Vec<AffinityEntry>, ServiceError> {
        let map = self.map::<LbAffinityKey, LbAffinityValue>(AFFINITY)?;
        let mut out = Vec::new();
        for k in map.keys()? {
            if let Some(v) = map.get(&k)? {
                out.push(AffinityEntry {
                    client: encode::affinity_client(&k)?,
                    service_id: k.service_id,
                    backend_id: v.backend_id,
                    last_seen: v.last_seen,
                });
            }
        }
        out.sort();
        Ok(out)
    }

    fn counters(&self) -> Result<ServiceStats, ServiceError> {
        let map = PerCpuArray::<u64>::new(self.loaded.map(STATS)?)?;
        let mut slots = [0u64; LB_STAT_MAX as usize];
        for (i, s) in slots.iter_mut().enumerate() {
            *s = map.sum(i as u32)?;
        }
        Ok(ServiceStats::from_slots(slots))
    }
}
