//! Reconciling through a writer that fails (cilium's FaultyLBMaps): the
//! maps stay consistent after every write that lands, the bookkeeping
//! always equals what the maps hold, and retries converge; a backend that
//! keeps failing holds back only its own frontends.

mod common;
use common::*;
use weft_lb::*;

/// The kernel's maps behind a writer that fails some writes.
struct Faulty {
    maps: LbMaps,
    rng: Rng,
    fail_per_mille: u32,
    /// Writes naming this backend always fail (a map that is full, say).
    poison: Option<BackendId>,
    writes: usize,
}

impl Faulty {
    fn new(seed: u64, fail_per_mille: u32) -> Self {
        Faulty {
            maps: LbMaps::default(),
            rng: Rng(seed),
            fail_per_mille,
            poison: None,
            writes: 0,
        }
    }
}

impl MapWriter for Faulty {
    type Error = String;
    fn write(&mut self, op: &Op) -> Result<(), String> {
        self.writes += 1;
        let poisoned = match (self.poison, op) {
            (Some(p), Op::UpsertBackend(id, _)) => *id == p,
            _ => false,
        };
        if poisoned || self.rng.next(1000) < self.fail_per_mille {
            return Err(format!("injected failure on {op:?}"));
        }
        self.maps.apply(op);
        let errs = self.maps.consistency_errors();
        assert!(
            errs.is_empty(),
            "after {op:?} the maps are inconsistent: {errs:#?}"
        );
        Ok(())
    }
}

#[test]
fn without_faults_one_round_converges_and_the_next_does_nothing() {
    let w = random_world(&mut Rng(7));
    let d = build(
        &w.0,
        &w.1,
        &config(Algorithm::maglev()),
        &mut IdAllocator::default(),
    )
    .unwrap();
    let mut writer = Faulty::new(1, 0);
    let mut current = LbMaps::default();
    let r = reconcile(&d.maps, &mut current, &mut writer);
    assert!(r.is_clean() && r.applied > 0);
    assert_eq!(writer.maps, d.maps);
    assert_eq!(current, d.maps);
    let r = reconcile(&d.maps, &mut current, &mut writer);
    assert!(r.is_clean());
    assert_eq!(r.applied, 0);
}

#[test]
fn random_faults_never_expose_an_inconsistent_map_and_retries_converge() {
    let mut r = Rng(0xfa17);
    let mut ids = IdAllocator::default();
    let mut writer = Faulty::new(3, 200); // one write in five fails
    let mut current = LbMaps::default();
    let (mut failures, mut held) = (0, 0);
    for round in 0..120 {
        let algorithm = if r.next(3) == 0 {
            Algorithm::Random
        } else {
            Algorithm::Maglev { m: 31 }
        };
        let w = random_world(&mut r);
        let want = build(&w.0, &w.1, &config(algorithm), &mut ids)
            .unwrap()
            .maps;
        let mut tries = 0;
        loop {
            let res = reconcile(&want, &mut current, &mut writer);
            failures += res.failed.len();
            held += res.held_back;
            assert_eq!(
                current, writer.maps,
                "round {round}: bookkeeping differs from the maps"
            );
            if res.is_clean() {
                break;
            }
            tries += 1;
            assert!(
                tries < 100,
                "round {round}: no convergence after {tries} tries"
            );
        }
        assert_eq!(writer.maps, want, "round {round}");
    }
    assert!(
        failures > 500 && held > 0,
        "the faults were exercised ({failures} failed, {held} held back)"
    );
}

const HTTP: &[(&str, Protocol, u16)] = &[("http", TCP, 80)];
const HTTP_EP: &[(&str, Protocol, u16)] = &[("http", TCP, 8080)];

#[test]
fn a_backend_that_keeps_failing_holds_back_only_its_frontend() {
    let a = service("ns/a", &["10.96.0.1"], HTTP);
    let b = service("ns/b", &["10.96.0.2"], HTTP);
    let slices = |a_eps: &[&str], b_eps: &[&str]| {
        vec![
            slice("ns/a", HTTP_EP, a_eps.iter().map(|x| ep(x, "n")).collect()),
            slice("ns/b", HTTP_EP, b_eps.iter().map(|x| ep(x, "n")).collect()),
        ]
    };
    let cfg = config(Algorithm::Random);
    let mut ids = IdAllocator::default();
    let mut writer = Faulty::new(5, 0);
    let mut current = LbMaps::default();
    let d0 = build(
        &[a.clone(), b.clone()],
        &slices(&["10.0.0.1"], &["10.0.0.2"]),
        &cfg,
        &mut ids,
    )
    .unwrap();
    assert!(reconcile(&d0.maps, &mut current, &mut writer).is_clean());

    // ns/a gains 10.0.0.3 (backend 3), whose write keeps failing; ns/b
    // swaps its backend for 10.0.0.4 and must still get there.
    let d1 = build(
        &[a, b],
        &slices(&["10.0.0.1", "10.0.0.3"], &["10.0.0.4"]),
        &cfg,
        &mut ids,
    )
    .unwrap();
    let poisoned = ids
        .backend_id(&BackendAddr {
            addr: ip("10.0.0.3"),
            port: 8080,
            proto: TCP,
        })
        .unwrap();
    writer.poison = Some(poisoned);
    for _ in 0..3 {
        let r = reconcile(&d1.maps, &mut current, &mut writer);
        assert_eq!(r.failed.len(), 1, "{:?}", r.failed);
        assert!(r.held_back >= 2, "ns/a's new slot and master wait");
        assert_eq!(current, writer.maps);
    }
    let master = |m: &LbMaps, addr: &str| {
        *m.services
            .iter()
            .find(|(k, _)| k.slot == 0 && k.addr == ip(addr))
            .unwrap()
            .1
    };
    assert_eq!(
        master(&writer.maps, "10.96.0.2"),
        master(&d1.maps, "10.96.0.2"),
        "ns/b converged"
    );
    assert_eq!(
        master(&writer.maps, "10.96.0.1").count,
        1,
        "ns/a keeps its old, consistent view"
    );
    assert!(
        !writer
            .maps
            .backends
            .values()
            .any(|b| b.addr == ip("10.0.0.2")),
        "ns/b's old backend pruned"
    );

    writer.poison = None;
    assert!(reconcile(&d1.maps, &mut current, &mut writer).is_clean());
    assert_eq!(writer.maps, d1.maps);
}

/// A writer may hand each run to the kernel as one batch: the runs cover
/// the ops in order, each of one kind, and no two neighbours share a kind.
#[test]
fn runs_cut_the_ops_in_order_into_maximal_runs_of_one_kind() {
    let w = random_world(&mut Rng(11));
    let d = build(
        &w.0,
        &w.1,
        &config(Algorithm::Random),
        &mut IdAllocator::default(),
    )
    .unwrap();
    let mut ops = weft_lb::diff::diff(&d.maps, &LbMaps::default());
    ops.extend(weft_lb::diff::diff(&LbMaps::default(), &d.maps));
    let kind = std::mem::discriminant::<Op>;
    let cut: Vec<&[Op]> = runs(&ops).collect();
    assert!(cut.len() >= 4 && cut.len() < ops.len(), "{}", cut.len());
    assert_eq!(cut.concat(), ops);
    assert!(cut
        .iter()
        .all(|r| r.iter().all(|op| kind(op) == kind(&r[0]))));
    assert!(cut.windows(2).all(|p| kind(&p[0][0]) != kind(&p[1][0])));
    assert_eq!(runs(&[]).count(), 0);
}
