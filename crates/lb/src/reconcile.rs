//! Applying a diff through a map writer that may fail (cilium's
//! `bpf_reconciler` with its `FaultyLBMaps` tests), kept pure: the writer is
//! a trait, the kernel one lives in the data path.
//!
//! - Bookkeeping only on success: `current` records what the maps hold, so
//!   the next round's diff retries exactly what failed.
//! - A failure does not stop the round. From the first failure on, each op
//!   is applied only if it cannot break what a packet sees, given what
//!   really was written ([`op_is_safe`]): a slot whose backend failed to
//!   land is not written, nor the master over a missing slot, nor is a
//!   backend deleted while a slot still names it. Other frontends go on
//!   converging; the held-back ops come again in the next round's diff.
//!   Before any failure the diff's order alone guarantees this (its tests
//!   check every step), so the checks cost nothing on the good path.

use crate::diff::{diff, Op};
use crate::maps::{flags, LbMaps, MaglevKey};

/// Writes one op to the real maps. Deleting a missing key must succeed.
pub trait MapWriter {
    type Error;
    fn write(&mut self, op: &Op) -> Result<(), Self::Error>;

    /// Writes `ops` in order and stops at the first that fails: how many
    /// were written, and the error of the next one. The effect must be that
    /// of [`MapWriter::write`] on each in turn (a reader may see any prefix
    /// of the sequence, never another order); the kernel's writer overrides
    /// this to put runs of one map's upserts or deletes into one syscall.
    fn write_all(&mut self, ops: &[Op]) -> (usize, Option<Self::Error>) {
        for (i, op) in ops.iter().enumerate() {
            if let Err(e) = self.write(op) {
                return (i, Some(e));
            }
        }
        (ops.len(), None)
    }
}

/// `ops` cut into maximal runs of one kind (each kind writes one map,
/// upserting or deleting): what a writer can hand the kernel as one batch
/// without changing the order of anything.
pub fn runs(ops: &[Op]) -> impl Iterator<Item = &[Op]> {
    ops.chunk_by(|a, b| std::mem::discriminant(a) == std::mem::discriminant(b))
}

/// What one round did.
#[derive(Debug)]
pub struct Round<E> {
    pub applied: usize,
    /// Ops that failed, with their errors, in order.
    pub failed: Vec<(Op, E)>,
    /// Ops not attempted because an earlier failure made them unsafe.
    pub held_back: usize,
}

impl<E> Round<E> {
    /// Converged: nothing failed or was held back.
    pub fn is_clean(&self) -> bool {
        self.failed.is_empty() && self.held_back == 0
    }
}

/// One reconciliation round: diff `desired` against `current`, write the
/// ops, record each success in `current`.
pub fn reconcile<W: MapWriter>(
    desired: &LbMaps,
    current: &mut LbMaps,
    writer: &mut W,
) -> Round<W::Error> {
    let ops = diff(desired, current);
    let mut round = Round {
        applied: 0,
        failed: Vec::new(),
        held_back: 0,
    };
    // the good path in one go (batched by a writer that can); after a
    // failure, op by op with the safety check
    let (written, error) = writer.write_all(&ops);
    for op in &ops[..written] {
        current.apply(op);
    }
    round.applied = written;
    let mut rest = ops.into_iter().skip(written);
    if let (Some(e), Some(op)) = (error, rest.next()) {
        round.failed.push((op, e));
    }
    for op in rest {
        if !round.failed.is_empty() && !op_is_safe(current, &op) {
            round.held_back += 1;
            continue;
        }
        match writer.write(&op) {
            Ok(()) => {
                current.apply(&op);
                round.applied += 1;
            }
            Err(e) => round.failed.push((op, e)),
        }
    }
    round
}

/// Whether applying `op` to maps holding `m` keeps every master's slots,
/// backends, reverse-NAT entry and Maglev table present.
pub fn op_is_safe(m: &LbMaps, op: &Op) -> bool {
    match op {
        Op::UpsertBackend(..) | Op::UpsertRevNat(..) => true,
        Op::UpsertMaglev(_, table) => table.iter().all(|id| m.backends.contains_key(id)),
        Op::UpsertService(k, v) if k.slot > 0 => m.backends.contains_key(&v.backend_id),
        Op::UpsertService(k, v) => {
            let slots_ok = (1..=v.count).all(|s| {
                m.services
                    .get(&k.with_slot(s))
                    .is_some_and(|slot| m.backends.contains_key(&slot.backend_id))
            });
            let maglev_ok = v.flags & flags::MAGLEV == 0
                || m.maglev
                    .get(&MaglevKey {
                        service_id: v.rev_nat_id,
                        scope: k.scope,
                    })
                    .is_some_and(|t| t.iter().all(|id| m.backends.contains_key(id)));
            slots_ok && maglev_ok && m.rev_nat.contains_key(&v.rev_nat_id)
        }
        Op::DeleteService(k) if k.slot == 0 => true,
        Op::DeleteService(k) => m
            .services
            .get(&k.with_slot(0))
            .is_none_or(|master| master.count < k.slot),
        Op::DeleteMaglev(key) => !m.services.iter().any(|(k, v)| {
            k.slot == 0
                && v.flags & flags::MAGLEV != 0
                && v.rev_nat_id == key.service_id
                && k.scope == key.scope
        }),
        Op::DeleteRevNat(id) => !m
            .services
            .iter()
            .any(|(k, v)| k.slot == 0 && v.rev_nat_id == *id),
        Op::DeleteBackend(id) => {
            !m.services
                .iter()
                .any(|(k, v)| k.slot > 0 && v.backend_id == *id)
                && !m.maglev.values().any(|t| t.contains(id))
        }
    }
}
