//! Output: tables for people, and stdout that a closed pipe does not crash.
//!
//! Everything weft prints on stdout goes through [`out!`] and [`outln!`]
//! instead of `print!`/`println!`, which panic ("failed printing to stdout:
//! Broken pipe") when the reader has gone away, as in `weft lab status |
//! head -1`: Rust ignores SIGPIPE, so the write fails with EPIPE instead of
//! the process being killed. Here a closed stdout just ends the output: what
//! is left to print is dropped, the command finishes what it was doing (an
//! install half done because nobody reads its log would be worse) and exits
//! with its own status. Any other write error (a full disk behind `>`) is
//! kept and reported by [`finish`].

use std::fmt;
use std::io::{self, Write};
use std::sync::{Mutex, PoisonError};

/// What became of stdout.
enum Stdout {
    Open,
    /// The reader went away (EPIPE): output is dropped from now on.
    Closed,
    /// Another write error, for [`finish`] to report.
    Failed(io::Error),
}

static STDOUT: Mutex<Stdout> = Mutex::new(Stdout::Open);

fn after(e: io::Error) -> Stdout {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Stdout::Closed
    } else {
        Stdout::Failed(e)
    }
}

/// `print!` that does not panic: see the module documentation.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))
    };
}

/// `println!` that does not panic: see the module documentation.
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {out, outln};

/// Writes to stdout unless it failed before; a failure is remembered.
pub fn write_stdout(args: fmt::Arguments<'_>) {
    let mut state = STDOUT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Stdout::Open = *state {
        if let Err(e) = io::stdout().lock().write_fmt(args) {
            *state = after(e);
        }
    }
}

/// Whether stdout still takes output (false once its reader went away), so
/// a command that would print forever (`weft observe -f | head`) can stop.
pub fn is_open() -> bool {
    matches!(
        *STDOUT.lock().unwrap_or_else(PoisonError::into_inner),
        Stdout::Open
    )
}

/// Flushes stdout before the process exits; returns the write error met on
/// the way, if any, other than the reader having gone away.
pub fn finish() -> Option<io::Error> {
    let mut state = STDOUT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Stdout::Open = *state {
        if let Err(e) = io::stdout().lock().flush() {
            *state = after(e);
        }
    }
    match std::mem::replace(&mut *state, Stdout::Closed) {
        Stdout::Failed(e) => Some(e),
        Stdout::Open | Stdout::Closed => None,
    }
}

/// Prints rows under a header, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  ", w = *w));
            }
        }
        outln!("{}", s.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub fn bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}
