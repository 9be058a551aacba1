//! The conformance suite against both flavours of the embedded backend.

mod common;

use common::TempDir;
use weft_store::conformance;
use weft_store::embedded::EmbeddedStore;

macro_rules! conformance_tests {
    ($($name:ident),* $(,)?) => {
        mod in_memory {
            use super::*;
            $(
                #[test]
                fn $name() {
                    conformance::$name(&EmbeddedStore::in_memory);
                }
            )*
        }
        mod on_disk {
            use super::*;
            $(
                #[test]
                fn $name() {
                    let dir = TempDir::new(stringify!($name));
                    conformance::$name(&|| {
                        EmbeddedStore::open(&dir.file("store.log")).expect("open store")
                    });
                }
            )*
        }
    };
}

conformance_tests!(
    get_and_create,
    create_conflict,
    update_cas,
    delete_semantics,
    recreate_after_delete,
    revisions_increase,
    list_sorted_prefix,
    list_revision,
    invalid_requests,
    watch_replays_then_live,
    watch_prefix_only,
    watch_sees_delete,
    watch_from_listing,
    watch_concurrent_writes,
    lease_attach,
    lease_expiry,
    lease_keep_alive,
    lease_revoke,
    lease_unknown,
    concurrent_cas_increments,
    concurrent_create,
    txn_all_or_nothing,
    txn_one_revision,
    txn_conflict_index,
    txn_mixed_ops,
    txn_invalid,
    txn_watch_same_revision,
    txn_put,
    concurrent_txn_transfers,
);

/// Every check is listed above: `run_all` on both flavours must name the same
/// set, so a check added to the suite but not here fails this test.
#[test]
fn every_check_is_covered() {
    let names: Vec<&str> = conformance::checks::<EmbeddedStore, fn() -> EmbeddedStore>()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let file = include_str!("embedded_conformance.rs");
    for n in names {
        assert!(
            file.contains(&format!("    {n},\n")),
            "conformance check {n} is not run by this file"
        );
    }
}
