//! `POST /v1/policy/matrix`: the policy reachability matrix of a set of pods
//! for one port, computed from weftd's compiled policy (not probed), each
//! cell with the policy and rule that decide it. `weft ui` draws it and
//! `weft policy matrix` prints it.

use serde::{Deserialize, Serialize};

/// The most pods one matrix takes (their square is the work).
pub const MATRIX_MAX_PODS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyMatrixRequest {
    /// `ns/name` of each pod: the rows (clients) and the columns (servers).
    pub pods: Vec<String>,
    pub port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyMatrix {
    pub pods: Vec<String>,
    pub port: u16,
    pub protocol: String,
    /// `rows[i][j]`: from `pods[i]` to `pods[j]`.
    pub rows: Vec<Vec<MatrixCell>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatrixCell {
    /// `allowed`, `denied`, `self` (a pod to itself: never judged by
    /// NetworkPolicy) or `unknown` (a pod without an address in the view).
    pub state: String,
    /// Who decides, in a few words: the denying direction's policy, or the
    /// ingress side's allowing rule.
    pub decided_by: String,
    /// `weft policy explain`'s line: both directions and who decided each.
    pub summary: String,
}

impl MatrixCell {
    pub fn allowed(&self) -> bool {
        self.state == "allowed"
    }
}
