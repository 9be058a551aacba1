//! What a new user meets first when something is missing: a weftd that is
//! not running, a lab that does not exist. One clear message, said once,
//! and a failing exit code. Needs neither root nor a weftd.

use std::process::{Command, Output};

fn weft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A lab name no one has (labs are named by tests `wt<tag><pid>x<n>`).
fn nosuch() -> String {
    format!("nosuch{}", std::process::id())
}

#[test]
fn no_weftd_is_said_once() {
    let sock = format!("/nonexistent-{}/weftd.sock", std::process::id());
    let out = weft(&["--socket", &sock, "status"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    assert_eq!(err.matches(&sock).count(), 1, "{err}");
    assert!(err.contains("is it running?"), "{err}");
}

#[test]
fn a_missing_lab_is_named_as_missing() {
    let name = nosuch();
    let out = weft(&["--lab", &name, "status"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(&format!("no lab named {name}")), "{err}");

    let out = weft(&["lab", "down", "--name", &name]);
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "lab down of a missing lab succeeded: {err}"
    );
    assert!(err.contains(&format!("no lab named {name}")), "{err}");
    assert!(!err.contains("removed"), "{err}");
}
