//! Table-driven golden tests: each `tests/fixtures/<case>.json` holds
//! Services and EndpointSlices (as the API would serve them, in the crate's
//! input shape) and `<case>.dump` the expected sorted dump of the desired
//! maps, as seen from node `node-a`. `UPDATE_GOLDEN=1` rewrites the dumps;
//! review the diff before committing it.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use weft_lb::*;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Case {
    #[expect(dead_code, reason = "documents the fixture")]
    description: String,
    #[serde(default)]
    algorithm: Option<CaseAlgorithm>,
    services: Vec<Service>,
    #[serde(default)]
    endpoint_slices: Vec<EndpointSlice>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
enum CaseAlgorithm {
    Random,
    Maglev(u32),
}

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    out.sort();
    out
}

fn render(case: &Case) -> String {
    let algorithm = match case.algorithm {
        None | Some(CaseAlgorithm::Random) => Algorithm::Random,
        Some(CaseAlgorithm::Maglev(m)) => Algorithm::Maglev { m },
    };
    let config = Config {
        node: NodeView {
            node_name: "node-a".into(),
            proxy_name: None,
        },
        algorithm,
    };
    let d = build(
        &case.services,
        &case.endpoint_slices,
        &config,
        &mut IdAllocator::default(),
    )
    .expect("build");
    assert!(d.maps.consistency_errors().is_empty());
    dump_desired(&d)
}

#[test]
fn fixtures_render_their_golden_dumps() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let cases = fixtures();
    assert!(cases.len() >= 6, "fixtures missing: {cases:?}");
    let mut failures = Vec::new();
    for path in cases {
        let text = std::fs::read_to_string(&path).unwrap();
        let case: Case =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let got = render(&case);
        let golden = path.with_extension("dump");
        if update {
            std::fs::write(&golden, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_default();
        if got != want {
            failures.push(format!(
                "{}:\n--- want\n{want}--- got\n{got}",
                golden.display()
            ));
        }
        // Order of the input must not matter.
        let mut shuffled: Case = serde_json::from_str(&text).unwrap();
        shuffled.services.reverse();
        shuffled.endpoint_slices.reverse();
        for s in &mut shuffled.endpoint_slices {
            s.endpoints.reverse();
        }
        assert_eq!(
            render(&shuffled),
            got,
            "{}: input order changed the dump",
            path.display()
        );
    }
    assert!(
        failures.is_empty(),
        "rerun with UPDATE_GOLDEN=1 if meant:\n{}",
        failures.join("\n")
    );
}
