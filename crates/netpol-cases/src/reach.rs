//! Upstream's `Reachability`: a default-true matrix over the case's pods,
//! narrowed by expectations.

use std::collections::BTreeMap;

/// Patterns: "" any pod, "x" any pod of namespace x, "x/a" one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    pub pods: Vec<String>,
    /// (from, to) -> allowed.
    pub expected: BTreeMap<(String, String), bool>,
}

fn matches(pattern: &str, pod: &str) -> bool {
    pattern.is_empty() || pattern == pod || pod.split_once('/').is_some_and(|(ns, _)| ns == pattern)
}

impl Reach {
    /// Every pair of `pods` allowed.
    pub fn all_allowed(pods: &[String]) -> Reach {
        Reach {
            expected: pods
                .iter()
                .flat_map(|f| pods.iter().map(move |t| ((f.clone(), t.clone()), true)))
                .collect(),
            pods: pods.to_vec(),
        }
    }

    pub fn expect_peer(&mut self, from: &str, to: &str, v: bool) {
        for ((f, t), cell) in self.expected.iter_mut() {
            if matches(from, f) && matches(to, t) {
                *cell = v;
            }
        }
    }

    pub fn expect(&mut self, from: &str, to: &str, v: bool) {
        assert!(
            self.pods.iter().any(|p| p == from) && self.pods.iter().any(|p| p == to),
            "{from} -> {to}: not pods of this case"
        );
        self.expected.insert((from.into(), to.into()), v);
    }

    pub fn expect_all_ingress(&mut self, pod: &str, v: bool) {
        self.expect_peer("", pod, v);
    }

    pub fn expect_all_egress(&mut self, pod: &str, v: bool) {
        self.expect_peer(pod, "", v);
    }

    /// Cells (loopback left out, as upstream) where `got` differs.
    pub fn wrong(&self, got: &BTreeMap<(String, String), bool>) -> Vec<(String, String)> {
        self.expected
            .iter()
            .filter(|((f, t), v)| f != t && got.get(&(f.clone(), t.clone())) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The matrix as upstream prints it ("." allowed, "X" denied).
    pub fn render(pods: &[String], m: &BTreeMap<(String, String), bool>) -> String {
        let mut s = format!("{:6}", "");
        for t in pods {
            s.push_str(&format!("{t:>5}"));
        }
        s.push('\n');
        for f in pods {
            s.push_str(&format!("{f:6}"));
            for t in pods {
                s.push_str(match m.get(&(f.clone(), t.clone())) {
                    Some(true) => "    .",
                    Some(false) => "    X",
                    None => "    ?",
                });
            }
            s.push('\n');
        }
        s
    }
}
