//! weftd's log is plain text when it goes to a file or the journal (labs
//! keep it in weftd.log): no ANSI colour codes. A state directory that cannot
//! be made (under /proc) makes weftd log an error and exit before touching
//! anything else, so this needs no root and changes nothing on the host.

use std::process::Command;

#[test]
fn weftd_logs_without_escape_codes_when_not_on_a_terminal() {
    let out = Command::new(env!("CARGO_BIN_EXE_weftd"))
        .args([
            "--node-name=n1",
            "--state-dir=/proc/weft-cannot-exist/state",
            "--socket=/proc/weft-cannot-exist/weftd.sock",
            "--spool-dir=/proc/weft-cannot-exist/spool",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("ERROR"), "the error is logged: {err}");
    assert!(!err.contains('\u{1b}'), "escape codes in the log: {err:?}");
}
