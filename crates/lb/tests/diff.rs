//! The diff a reconciler applies: ordered so a reader between any two ops
//! sees consistent maps, idempotent, empty when nothing changed, and
//! complete (applying it yields the desired maps), over a long churn.

mod common;
use common::*;
use weft_lb::*;

const HTTP: &[(&str, Protocol, u16)] = &[("http", TCP, 80)];
const HTTP_EP: &[(&str, Protocol, u16)] = &[("http", TCP, 8080)];

/// Applies `ops` one at a time, checking what a reader would see after each.
fn apply_checked(current: &mut LbMaps, ops: &[Op]) {
    for (i, op) in ops.iter().enumerate() {
        current.apply(op);
        let errs = current.consistency_errors();
        assert!(
            errs.is_empty(),
            "after op {i} {op:?}: {errs:#?}\nops: {ops:#?}"
        );
    }
}

fn web(eps: &[&str]) -> (Vec<Service>, Vec<EndpointSlice>) {
    let s = service("ns/web", &["10.96.0.10"], HTTP);
    let sl = slice("ns/web", HTTP_EP, eps.iter().map(|a| ep(a, "n")).collect());
    (vec![s], vec![sl])
}

fn step(ids: &mut IdAllocator, cfg: &Config, w: &(Vec<Service>, Vec<EndpointSlice>)) -> LbMaps {
    build(&w.0, &w.1, cfg, ids).unwrap().maps
}

#[test]
fn equal_maps_give_no_ops_and_empty_to_desired_is_all_upserts() {
    let d = desired(
        &web(&["10.0.0.1", "10.0.0.2"]).0,
        &web(&["10.0.0.1", "10.0.0.2"]).1,
    )
    .maps;
    assert!(diff(&d, &d).is_empty());
    let ops = diff(&d, &LbMaps::default());
    let kinds: Vec<&str> = ops
        .iter()
        .map(|o| match o {
            Op::UpsertBackend(..) => "backend",
            Op::UpsertRevNat(..) => "revnat",
            Op::UpsertService(k, _) if k.slot == 0 => "master",
            Op::UpsertService(..) => "slot",
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        ["backend", "backend", "revnat", "slot", "slot", "master"]
    );
}

#[test]
fn scale_down_writes_slots_then_master_then_removes_stale_slot_then_backend() {
    let mut ids = IdAllocator::default();
    let cfg = config(Algorithm::Random);
    let mut cur = LbMaps::default();
    let ops = diff(
        &step(&mut ids, &cfg, &web(&["10.0.0.1", "10.0.0.2", "10.0.0.3"])),
        &cur,
    );
    apply_checked(&mut cur, &ops);

    let want = step(&mut ids, &cfg, &web(&["10.0.0.1", "10.0.0.3"]));
    let ops = diff(&want, &cur);
    let master = |slot| {
        Op::UpsertService(
            want.services.keys().next().unwrap().with_slot(slot),
            want.services[&want.services.keys().next().unwrap().with_slot(slot)],
        )
    };
    let stale = cur.services.keys().nth(3).unwrap().with_slot(3);
    assert_eq!(
        ops,
        [
            master(2),
            master(0),
            Op::DeleteService(stale),
            Op::DeleteBackend(2)
        ],
        "slot 2 now names backend 3; master's count drops to 2; slot 3 and backend 2 go"
    );
    apply_checked(&mut cur, &ops);
    assert_eq!(cur, want);
}

#[test]
fn scale_up_writes_backend_and_new_slot_before_the_master() {
    let mut ids = IdAllocator::default();
    let cfg = config(Algorithm::Random);
    let mut cur = step(&mut ids, &cfg, &web(&["10.0.0.1"]));
    let want = step(&mut ids, &cfg, &web(&["10.0.0.1", "10.0.0.2"]));
    let ops = diff(&want, &cur);
    assert!(
        matches!(&ops[..], [Op::UpsertBackend(2, _), Op::UpsertService(k, _), Op::UpsertService(m, _)] if k.slot == 2 && m.slot == 0)
    );
    apply_checked(&mut cur, &ops);
    assert_eq!(cur, want);
}

#[test]
fn removed_service_goes_master_first_then_slots_then_its_orphans() {
    let mut ids = IdAllocator::default();
    let cfg = config(Algorithm::maglev());
    let mut cur = step(&mut ids, &cfg, &web(&["10.0.0.1"]));
    let ops = diff(&LbMaps::default(), &cur);
    let kinds: Vec<String> = ops
        .iter()
        .map(|o| match o {
            Op::DeleteService(k) => format!("svc{}", k.slot),
            Op::DeleteMaglev(_) => "maglev".into(),
            Op::DeleteRevNat(_) => "revnat".into(),
            Op::DeleteBackend(_) => "backend".into(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(kinds, ["svc0", "svc1", "maglev", "revnat", "backend"]);
    apply_checked(&mut cur, &ops);
    assert_eq!(cur, LbMaps::default());
}

#[test]
fn applying_a_diff_twice_or_on_top_of_missing_keys_is_harmless() {
    let mut ids = IdAllocator::default();
    let cfg = config(Algorithm::maglev());
    let old = step(&mut ids, &cfg, &web(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]));
    let new = step(&mut ids, &cfg, &web(&["10.0.0.2", "10.0.0.4"]));
    let ops = diff(&new, &old);
    let mut cur = old.clone();
    apply_checked(&mut cur, &ops);
    apply_checked(&mut cur, &ops); // a reconciler retrying after a partial failure
    assert_eq!(cur, new);
    // An interrupted apply, resumed by a fresh diff, converges too.
    let mut half = old;
    apply_checked(&mut half, &ops[..ops.len() / 2]);
    let rest = diff(&new, &half);
    apply_checked(&mut half, &rest);
    assert_eq!(half, new);
}

#[test]
fn churn_keeps_every_intermediate_state_consistent_and_converges() {
    const ROUNDS: u32 = 250;
    let mut r = Rng(0x5eed);
    let mut ids = IdAllocator::default();
    let mut cur = LbMaps::default();
    let mut total_ops = 0;
    for round in 0..ROUNDS {
        let algorithm = if r.next(4) == 0 {
            Algorithm::Random
        } else {
            // A small M: every table is checked after every op.
            Algorithm::Maglev { m: 31 }
        };
        let w = random_world(&mut r);
        let want = build(&w.0, &w.1, &config(algorithm), &mut ids)
            .unwrap()
            .maps;
        let ops = diff(&want, &cur);
        total_ops += ops.len();
        apply_checked(&mut cur, &ops);
        assert_eq!(cur, want, "round {round}");
        assert!(
            diff(&want, &cur).is_empty(),
            "round {round}: a second diff is empty"
        );

        // A restart at any round keeps every ID: the rebuilt maps equal
        // the kernel's.
        if round % 25 == 0 {
            let mut restored = IdAllocator::restore(&cur);
            let again = build(&w.0, &w.1, &config(algorithm), &mut restored)
                .unwrap()
                .maps;
            assert!(
                diff(&again, &cur).is_empty(),
                "round {round}: restart rewrote maps"
            );
        }
    }
    eprintln!("{total_ops} ops over {ROUNDS} rounds");
    assert!(
        total_ops > 1000,
        "the churn exercised the diff ({total_ops} ops)"
    );
}
