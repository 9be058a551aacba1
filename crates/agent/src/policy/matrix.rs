//! `POST /v1/policy/matrix`: the reachability matrix of a set of pods for
//! one port, every cell answered by the same code as `weft policy explain`
//! (so the matrix and explain can never disagree), the deciding policy and
//! rule cut to a few words for the page's cells.

use weft_api::{
    ExplainStep, MatrixCell, PolicyExplain, PolicyExplainRequest, PolicyMatrix,
    PolicyMatrixRequest, MATRIX_MAX_PODS,
};
use weft_cni_spec::{codes, CniError};

use super::{explain, Link};

fn refused(msg: String) -> CniError {
    CniError::new(codes::INVALID_NETWORK_CONFIG, msg)
}

pub fn serve(link: &Link, req: &PolicyMatrixRequest) -> Result<PolicyMatrix, CniError> {
    if link.running().is_none() {
        return Err(refused(format!(
            "NetworkPolicy is not enforced: {}",
            link.off_reason()
        )));
    }
    if req.pods.len() > MATRIX_MAX_PODS {
        return Err(refused(format!(
            "{} pods: a matrix takes at most {MATRIX_MAX_PODS}; choose fewer",
            req.pods.len()
        )));
    }
    let rows = req
        .pods
        .iter()
        .map(|from| {
            req.pods
                .iter()
                .map(|to| {
                    if from == to {
                        return self_cell();
                    }
                    let q = PolicyExplainRequest {
                        from: from.clone(),
                        to: to.clone(),
                        port: req.port,
                        protocol: req.protocol.clone(),
                    };
                    match explain(link, &q) {
                        Ok(e) => cell(&e),
                        Err(e) => MatrixCell {
                            state: "unknown".into(),
                            decided_by: String::new(),
                            summary: e.msg,
                        },
                    }
                })
                .collect()
        })
        .collect();
    Ok(PolicyMatrix {
        pods: req.pods.clone(),
        port: req.port,
        protocol: req.protocol.to_ascii_lowercase(),
        rows,
    })
}

fn self_cell() -> MatrixCell {
    MatrixCell {
        state: "self".into(),
        decided_by: String::new(),
        summary: "a pod reaching itself is not subject to NetworkPolicy".into(),
    }
}

/// One explain as a cell: who denied (egress is judged first), or who let
/// it in (the ingress side's rule, else the egress side's).
pub fn cell(e: &PolicyExplain) -> MatrixCell {
    let said =
        |dir: &str, s: &Option<ExplainStep>| s.as_ref().map(|s| format!("{dir}: {}", s.verdict));
    let denies =
        |s: &Option<ExplainStep>| s.as_ref().is_some_and(|s| s.verdict.starts_with("denied"));
    let allows_by_rule =
        |s: &Option<ExplainStep>| s.as_ref().is_some_and(|s| s.verdict.starts_with("allowed"));
    let decided_by = if !e.allowed {
        if denies(&e.egress) {
            said("egress", &e.egress)
        } else {
            said("ingress", &e.ingress)
        }
    } else if allows_by_rule(&e.ingress) {
        said("ingress", &e.ingress)
    } else if allows_by_rule(&e.egress) {
        said("egress", &e.egress)
    } else {
        Some("no policy isolates either pod".into())
    };
    MatrixCell {
        state: if e.allowed { "allowed" } else { "denied" }.into(),
        decided_by: decided_by.unwrap_or_default(),
        summary: e.summary.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(verdict: &str) -> Option<ExplainStep> {
        Some(ExplainStep {
            pod: "x/a".into(),
            verdict: verdict.into(),
            ..ExplainStep::default()
        })
    }

    #[test]
    fn a_denied_cell_names_the_denying_direction() {
        let e = PolicyExplain {
            allowed: false,
            summary: "denied at ingress (…)".into(),
            egress: step("not isolated"),
            ingress: step("denied by the default deny of x/x-only"),
            ..PolicyExplain::default()
        };
        let c = cell(&e);
        assert_eq!(c.state, "denied");
        assert_eq!(
            c.decided_by,
            "ingress: denied by the default deny of x/x-only"
        );
        assert_eq!(c.summary, "denied at ingress (…)");
        let e = PolicyExplain {
            egress: step("denied by the default deny of y/out"),
            ..e
        };
        assert_eq!(
            cell(&e).decided_by,
            "egress: denied by the default deny of y/out"
        );
    }

    #[test]
    fn an_allowed_cell_names_the_allowing_rule_or_says_none_isolates() {
        let e = PolicyExplain {
            allowed: true,
            egress: step("allowed by rule 0 (egress[0]) of y/out"),
            ingress: step("allowed by rule 1 (ingress[0]) of x/in"),
            ..PolicyExplain::default()
        };
        assert_eq!(
            cell(&e).decided_by,
            "ingress: allowed by rule 1 (ingress[0]) of x/in"
        );
        let e = PolicyExplain {
            ingress: step("not isolated"),
            ..e
        };
        assert_eq!(
            cell(&e).decided_by,
            "egress: allowed by rule 0 (egress[0]) of y/out"
        );
        let e = PolicyExplain {
            allowed: true,
            egress: step("not isolated"),
            ingress: step("not isolated"),
            ..PolicyExplain::default()
        };
        assert_eq!(cell(&e).state, "allowed");
        assert_eq!(cell(&e).decided_by, "no policy isolates either pod");
    }
}
