//! Attribution with ClusterNetworkPolicy: every verdict names the
//! ClusterNetworkPolicy rule (tier, priority, index, action) that decided
//! it, in the compiled maps as in the evaluator; `explain` and
//! `render_endpoint` say it in words; each entry's value has the action the
//! program applies and a stable rule id.

mod cnp_conformance;

use cnp_conformance::*;
use weft_policy::*;

fn compiled(w: &World) -> Compiled {
    compile_all(
        &w.policies,
        &w.cluster,
        &w.inventory,
        &mut MemoryAllocator::new(),
    )
    .unwrap()
}

fn flow(w: &mut World, from: &str, to: &str, proto: Protocol, port: u16) -> Flow {
    Flow {
        src: w.find(from).ips[0],
        dst: w.find(to).ips[0],
        proto,
        port,
    }
}

#[test]
fn explain_and_show_name_the_cluster_policy_rule() {
    let mut w = World::new();
    w.apply("admin_tier/standard-ingress-tcp-rules");
    let c = compiled(&w);
    let f = flow(&mut w, "draco-malfoy-0", "harry-potter-0", Tcp, 80);
    let e = c.explain(&f);
    let rule = ClusterRuleRef {
        tier: Tier::Admin,
        priority: 3,
        name: "ingress-tcp".into(),
        direction: Direction::Ingress,
        index: 3,
        action: ClusterAction::Deny,
    };
    assert_eq!(e.verdict.ingress, DirectionVerdict::DeniedBy(rule.clone()));
    assert_eq!(
        e.verdict,
        evaluate_all(&w.policies, &w.cluster, &w.inventory, &f)
    );
    let text = e.to_string();
    assert!(
        text.contains("denied at ingress")
            && text.contains("ingress: denied by rule 3 (ingress[3], Deny) of cnp/ingress-tcp"),
        "{text}"
    );
    let accepted = c.explain(&flow(
        &mut w,
        "luna-lovegood-0",
        "harry-potter-0",
        Tcp,
        8080,
    ));
    assert!(
        accepted
            .to_string()
            .contains("allowed by rule 0 (ingress[0], Accept) of cnp/ingress-tcp"),
        "{accepted}"
    );
    let ep = EndpointRef {
        namespace: namespace("gryffindor"),
        name: "harry-potter-0".into(),
    };
    let show = c.render_endpoint(&ep).unwrap();
    assert!(
        show.starts_with("ingress: not isolated\negress: not isolated\n"),
        "{show}"
    );
    assert!(
        show.contains("tcp/80 (pod in network-policy-conformance-slytherin")
            && show.contains("-> rule 3 (ingress[3], Deny) of cnp/ingress-tcp"),
        "{show}"
    );
    // What the program reads off each entry: its action and a rule id.
    let entries = &c.endpoints[&ep].entries;
    assert!(entries.values().any(|v| v.action() == Action::Deny));
    assert!(entries.values().any(|v| v.action() == Action::Allow));
    let mut ids = RuleIds::new();
    let deny = ids.id(&AllowedBy::Cluster(rule.clone()));
    assert_eq!(ids.reason(deny), Some(&AllowedBy::Cluster(rule)));
    // The list: the policy and the endpoints it applies to.
    assert_eq!(c.cluster_policies["ingress-tcp"].ingress.len(), 2);
    assert!(c.cluster_policies["ingress-tcp"].egress.is_empty());
    assert!(c.rejected_cluster.is_empty());
}

#[test]
fn a_pass_then_a_network_policy_names_the_network_policy() {
    let mut w = World::new();
    w.apply("api_integration/standard-anp-np-banp");
    w.cnp("pass-example").ingress[0].action = ClusterAction::Pass;
    let c = compiled(&w);
    let f = flow(&mut w, "draco-malfoy-0", "harry-potter-0", Tcp, 80);
    let v = c.check(&f);
    assert!(v.allowed);
    assert!(
        matches!(&v.ingress, DirectionVerdict::Allowed(AllowedBy::Rule(r))
            if r.policy.name == "allow-gress-from-to-slytherin-to-gryffindor"),
        "{v:?}"
    );
    assert_eq!(v, evaluate_all(&w.policies, &w.cluster, &w.inventory, &f));
    // Without the NetworkPolicy, the Baseline tier decides.
    w.policies.clear();
    let c = compiled(&w);
    let v = c.check(&f);
    assert!(
        matches!(&v.ingress, DirectionVerdict::DeniedBy(r) if r.tier == Tier::Baseline),
        "{v:?}"
    );
    assert!(v.summary().contains("of cnp/"), "{}", v.summary());
}

#[test]
fn a_policy_weft_cannot_read_is_listed_with_why() {
    let mut w = World::new();
    w.apply("admin_tier/standard-ingress-tcp-rules");
    w.cnp("ingress-tcp").priority = 1001;
    let c = compiled(&w);
    assert_eq!(c.rejected_cluster.len(), 1, "{:?}", c.rejected_cluster);
    assert!(c.rejected_cluster[0].1.contains("priority 1001"));
    // Fail closed: its Accept rules match nothing, its Deny and Pass rules
    // deny everything; ravenclaw (accepted by rule 0) is now denied by
    // rule 1, read as a Deny of everything.
    let f = flow(&mut w, "luna-lovegood-0", "harry-potter-0", Tcp, 80);
    assert!(matches!(
        c.check(&f).ingress,
        DirectionVerdict::DeniedBy(ClusterRuleRef { index: 1, .. })
    ));
}
