//! Identities: stable across compiles sharing an allocator, shared by pods
//! that look alike, and the ipcache agrees with who owns each address.

mod common;
mod gen;

use common::*;
use weft_policy::*;

#[test]
fn identities_are_stable_across_compiles_and_shared_by_look_alikes() {
    let mut inv = small_cluster();
    let mut alloc = MemoryAllocator::new();
    let first = compile(&[], &inv, &mut alloc).unwrap();
    let id = |c: &Compiled, a: &str| c.identity_of("node-1", ip(a));
    // A second web pod in y with y/web's labels and ports: same identity.
    let mut twin = inv.workloads[3].clone();
    twin.name = "web-twin".into();
    twin.ips = vec![ip("10.244.1.99")];
    inv.workloads.push(twin);
    let unrelated = np("z", "p", sel(&[])).ingress_rules(vec![from(vec![pods(sel(&[]))])]);
    let second = compile(std::slice::from_ref(&unrelated), &inv, &mut alloc).unwrap();
    for a in [X_WEB, X_WEB2, X_DB, Y_WEB, Y_CLI] {
        assert_eq!(id(&first, a), id(&second, a), "{a} kept its identity");
    }
    assert_eq!(id(&second, "10.244.1.99"), id(&second, Y_WEB));
    // Same labels, other namespace or other named ports: other identities.
    assert_ne!(id(&second, X_WEB), id(&second, Y_WEB));
    assert_ne!(id(&second, X_WEB), id(&second, X_WEB2));
    // An ipBlock covering a pod moves it to the (pod, piece) identity: the
    // cost of one lookup answering both selectors and ipBlocks.
    let block = np("z", "q", sel(&[])).egress_rules(vec![from(vec![cidr("10.244.1.0/24", &[])])]);
    let third = compile(&[unrelated, block], &inv, &mut alloc).unwrap();
    assert_ne!(id(&second, Y_WEB), id(&third, Y_WEB));
    assert_eq!(
        id(&second, X_WEB),
        id(&third, X_WEB),
        "pods outside every block keep theirs"
    );
}

/// For random clusters and policies, every address's identity on every node
/// decodes to what owns the address and the longest named prefix around it.
#[test]
fn the_ipcache_agrees_with_the_inventory_on_random_clusters() {
    for seed in 0..150 {
        let mut rng = Rng(0x1DE0_0000 + seed);
        let inv = gen::inventory(&mut rng);
        let pods: Vec<Workload> = inv
            .workloads
            .iter()
            .filter(|w| !w.host_network)
            .cloned()
            .collect();
        let policies: Vec<NetworkPolicy> = (0..3)
            .map(|i| gen::policy(&mut rng, &pods, &format!("np{i}")))
            .collect();
        let c = compile(&policies, &inv, &mut MemoryAllocator::new()).unwrap();
        let pieces: Vec<ipnet::IpNet> = policies
            .iter()
            .filter(|p| p.validate().is_ok())
            .flat_map(|p| {
                p.rules(Direction::Ingress)
                    .iter()
                    .chain(p.rules(Direction::Egress))
            })
            .flat_map(|r| r.peers.iter().flatten())
            .filter_map(|peer| peer.ip_block.as_ref())
            .flat_map(|b| std::iter::once(b.cidr.trunc()).chain(b.except.iter().map(|e| e.trunc())))
            .collect();
        for node in gen::NODES.iter().map(|(n, _)| *n) {
            for addr in gen::addresses(&inv) {
                let id = c.identity_of(node, addr);
                let piece = pieces
                    .iter()
                    .filter(|p| p.contains(&addr))
                    .max_by_key(|p| p.prefix_len())
                    .copied();
                let want = match inv.resolve(addr) {
                    End::Pod(w) => Subject::Pod {
                        namespace: w.namespace.clone(),
                        labels: w.labels.clone(),
                        namespace_labels: w.namespace_labels.clone(),
                        named_ports: w.named_ports.clone(),
                    },
                    End::Node(n) if n == node => Subject::Host,
                    End::Node(_) => Subject::RemoteNode,
                    End::World => Subject::World,
                };
                let key = c.identities.get(&id).cloned().unwrap_or(IdentityKey {
                    subject: Subject::World,
                    cidr: None,
                });
                assert_eq!(
                    key,
                    IdentityKey {
                        subject: want,
                        cidr: piece
                    },
                    "seed {seed}, {addr} on {node}"
                );
            }
        }
    }
}
