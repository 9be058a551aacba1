//! Pool definitions, keys, and what `Ipam::new` finds in the store; the clocks.

use super::*;

#[test]
fn pool_defaults_and_validation() {
    assert_eq!(PoolConfig::new(net("10.0.0.0/16")).block_prefix, 26);
    assert_eq!(PoolConfig::new(net("fd00::/48")).block_prefix, 122);
    // A pool smaller than a default block is one block.
    assert_eq!(PoolConfig::new(net("10.0.0.0/28")).block_prefix, 28);
    assert!(PoolConfig::new(net("10.0.0.0/16")).validate().is_ok());

    for (p, needle) in [
        (pool("10.0.0.1/16", 26), "host bits"),
        (pool("10.0.0.0/16", 12), "must lie between"),
        (pool("10.0.0.0/16", 33), "must lie between"),
        (pool("10.0.0.0/16", 31), "4 to 4096"),
        (pool("10.0.0.0/8", 19), "4 to 4096"),
        (pool("fd00::/64", 127), "4 to 4096"),
        (pool("fd00::/64", 100), "4 to 4096"),
    ] {
        let err = p.validate().unwrap_err();
        assert!(matches!(err, IpamError::InvalidConfig { .. }), "{err:?}");
        assert!(err.to_string().contains(needle), "{err} lacks {needle}");
    }
    assert!(pool("10.0.0.0/8", 20).validate().is_ok());
    assert!(pool("10.0.0.0/30", 30).validate().is_ok());

    let mut c = cfg(vec![pool("10.0.0.0/16", 26), pool("10.0.128.0/20", 26)]);
    assert!(c.validate().unwrap_err().to_string().contains("overlap"));
    c.pools = vec![];
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("add at least one pool"));
    let mut c = standard();
    c.max_blocks_per_node = Some(0);
    assert!(c.validate().is_err());
    let mut c = standard();
    c.node.clear();
    assert!(c.validate().is_err());

    let c = IpamConfig::new("n", vec![]);
    assert_eq!(c.quarantine, Duration::from_secs(30));
    assert_eq!(c.gc_grace, Duration::from_secs(60));
    assert!(c.strict_affinity);
    assert_eq!(c.max_blocks_per_node, None);
}

#[test]
fn keys_escape_cidrs() {
    assert_eq!(
        pool_key(&net("10.0.0.0/16")),
        "/weft/ipam/v1/pools/10.0.0.0-16"
    );
    assert_eq!(
        block_key(&net("fd00::/122")),
        "/weft/ipam/v1/blocks/fd00::-122"
    );
    assert_eq!(
        parse_block_key("/weft/ipam/v1/blocks/fd00::-122"),
        Some(net("fd00::/122"))
    );
    assert_eq!(
        parse_block_key("/weft/ipam/v1/blocks/10.1.2.0-26"),
        Some(net("10.1.2.0/26"))
    );
    assert_eq!(parse_block_key("/weft/ipam/v1/blocks/garbage"), None);
    assert_eq!(parse_block_key("/other/10.1.2.0-26"), None);
}

#[test]
fn new_creates_pools_and_accepts_the_same_definition_again() {
    let raw = new_store();
    let a = Env::on(raw.clone(), standard());
    let kv = raw.get(&pool_key(&net("10.244.0.0/16"))).unwrap().unwrap();
    let stored: PoolConfig = serde_json::from_slice(&kv.value).unwrap();
    assert_eq!(stored, pool("10.244.0.0/16", 26));
    let writes = a.store.writes();
    // A second Ipam (a restart) with the same pools writes nothing.
    let b = Env::on(raw.clone(), standard());
    assert_eq!(b.store.writes(), 0);
    assert_eq!(a.store.writes(), writes);
}

#[test]
fn new_with_a_conflicting_pool_definition_errors() {
    let raw = new_store();
    Env::on(raw.clone(), standard());
    let clock = Arc::new(ManualClock::new(T0));

    let other = cfg(vec![pool("10.244.0.0/16", 24)]);
    let err = Ipam::new(raw.clone(), other, clock.clone()).unwrap_err();
    assert!(matches!(err, IpamError::InvalidConfig { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("/26 blocks") && msg.contains("configure /26"),
        "{msg}"
    );

    let overlapping = cfg(vec![pool("10.244.0.0/20", 26)]);
    let err = Ipam::new(raw.clone(), overlapping, clock.clone()).unwrap_err();
    assert!(
        err.to_string().contains("overlaps pool 10.244.0.0/16"),
        "{err}"
    );

    // A disjoint extra pool is fine.
    let more = cfg(vec![pool("10.244.0.0/16", 26), pool("10.245.0.0/16", 26)]);
    Ipam::new(raw.clone(), more, clock.clone()).unwrap();

    // Garbage under a pool key is Corrupt, not a panic.
    raw.create(&pool_key(&net("10.9.0.0/16")), b"{not json", None)
        .unwrap()
        .unwrap();
    let err = Ipam::new(raw, standard(), clock).unwrap_err();
    assert!(matches!(err, IpamError::Corrupt { .. }), "{err:?}");
}

#[test]
fn clocks() {
    let now = SystemClock.now_ms();
    assert!(now > T0, "the wall clock is after 2023");
    let c = ManualClock::new(5);
    c.advance(Duration::from_secs(2));
    assert_eq!(c.now_ms(), 2005);
    c.set(7);
    assert_eq!(c.now_ms(), 7);
}
