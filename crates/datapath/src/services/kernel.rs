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
///
/// [`MapWriter::write_all`] hands each run of one map's upserts or deletes
/// to the kernel as one batch (`BPF_MAP_UPDATE_BATCH`/`DELETE_BATCH`): a
/// slice change among many Services is a dozen entries in three or four
/// maps, and one syscall per entry was most of a round's cost. A kernel
/// that refuses batches gets one syscall per entry, as before, from then on.
#[derive(Debug, Clone)]
pub struct ServiceMaps {
    loaded: Arc<Loaded>,
    batches: bool,
}

impl ServiceMaps {
    pub(crate) fn new(loaded: Arc<Loaded>) -> Self {
        ServiceMaps {
            loaded,
            batches: true,
        }
    }

    /// Whether runs of writes go to the kernel as batches (until one is
    /// refused); off, every entry is its own syscall (tests compare both).
    pub fn set_batches(&mut self, on: bool) {
        self.batches = on;
    }

    pub fn batches(&self) -> bool {
        self.batches
    }

    /// Writes `run` one op at a time: how many landed, the error that
    /// stopped it.
    fn write_each(&mut self, run: &[Op]) -> (usize, Option<ServiceError>) {
        for (i, op) in run.iter().enumerate() {
            if let Err(e) = self.write(op) {
                return (i, Some(e));
            }
        }
        (run.len(), None)
    }

    /// A run of upserts into map `name` as one batch, `entry` encoding each.
    fn upsert_run<K: weft_bpf::Pod, V: weft_bpf::Pod>(
        &mut self,
        name: &str,
        run: &[Op],
        entry: impl Fn(&Op) -> Option<(K, V)>,
    ) -> (usize, Option<ServiceError>) {
        let entries: Option<Vec<(K, V)>> = run.iter().map(entry).collect();
        let Some(entries) = entries else {
            return self.write_each(run);
        };
        let result = match self.map::<K, V>(name) {
            Ok(m) => m.insert_batch(&entries).map(|_| ()),
            Err(e) => return (0, Some(e)),
        };
        self.batch_outcome(name, run, result)
    }

    /// A run of deletes from map `name` as one batch (absent keys are fine).
    fn delete_run<K: weft_bpf::Pod, V: weft_bpf::Pod>(
        &mut self,
        name: &str,
        run: &[Op],
        key: impl Fn(&Op) -> Option<K>,
    ) -> (usize, Option<ServiceError>) {
        let keys: Option<Vec<K>> = run.iter().map(key).collect();
        let Some(keys) = keys else {
            return self.write_each(run);
        };
        let result = match self.map::<K, V>(name) {
            Ok(m) => m.remove_batch(&keys).map(|_| ()),
            Err(e) => return (0, Some(e)),
        };
        self.batch_outcome(name, run, result)
    }

    fn batch_outcome(
        &mut self,
        name: &str,
        run: &[Op],
        result: Result<(), weft_bpf::BatchFailed>,
    ) -> (usize, Option<ServiceError>) {
        match result {
            Ok(()) => (run.len(), None),
            Err(f) if f.refused() => {
                tracing::info!(map = name, error = %f.error,
                    "the kernel refuses map batches: Service map entries are written one at a time");
                self.batches = false;
                self.write_each(run)
            }
            Err(f) => (f.done, Some(f.error.into())),
        }
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

    fn write_all(&mut self, ops: &[Op]) -> (usize, Option<ServiceError>) {
        let mut written = 0;
        for run in weft_lb::runs(ops) {
            let (n, error) = if !self.batches || run.len() < 2 {
                self.write_each(run)
            } else {
                match &run[0] {
                    Op::UpsertBackend(..) => self.upsert_run(BACKENDS, run, |op| match op {
                        Op::UpsertBackend(id, v) => Some((*id, encode::backend(v))),
                        _ => None,
                    }),
                    Op::UpsertRevNat(..) => self.upsert_run(REVNAT, run, |op| match op {
                        Op::UpsertRevNat(id, v) => Some((u32::from(*id), encode::revnat(v))),
                        _ => None,
                    }),
                    Op::UpsertService(..) => self.upsert_run(SERVICES, run, |op| match op {
                        Op::UpsertService(k, v) => Some((encode::svc_key(k), encode::svc_value(v))),
                        _ => None,
                    }),
                    Op::DeleteService(..) => {
                        self.delete_run::<LbSvcKey, LbSvcValue>(SERVICES, run, |op| match op {
                            Op::DeleteService(k) => Some(encode::svc_key(k)),
                            _ => None,
                        })
                    }
                    Op::DeleteRevNat(..) => {
                        self.delete_run::<u32, LbRevnat>(REVNAT, run, |op| match op {
                            Op::DeleteRevNat(id) => Some(u32::from(*id)),
                            _ => None,
                        })
                    }
                    Op::DeleteBackend(..) => {
                        self.delete_run::<u32, LbBackend>(BACKENDS, run, |op| match op {
                            Op::DeleteBackend(id) => Some(*id),
                            _ => None,
                        })
                    }
                    // 64 KiB tables, rarely more than one in a row
                    Op::UpsertMaglev(..) | Op::DeleteMaglev(..) => self.write_each(run),
                }
            };
            written += n;
            if error.is_some() {
                return (written, error);
            }
        }
        (ops.len(), None)
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
