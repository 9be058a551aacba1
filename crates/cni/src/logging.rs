//! Optional file logging. Only when the config sets `logFile`; never stdout,
//! and nothing on stderr either. Each line is appended with one `write`
//! (O_APPEND), so concurrent shims do not interleave within a line.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use weft_cni_spec::LogLevel;

struct Logger {
    file: File,
    level: LogLevel,
    /// "ADD 0123abcd/eth0" etc.
    context: String,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Opens the log file. Failure to open is silent: the shim must still do
/// its job, and it has nowhere else to report.
pub fn init(path: &str, level: LogLevel, context: String) {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path);
    if let Ok(file) = file {
        let _ = LOGGER.set(Logger {
            file,
            level,
            context,
        });
    }
}

pub fn log(level: LogLevel, msg: &str) {
    let Some(l) = LOGGER.get() else { return };
    if level > l.level {
        return;
    }
    let line = format!(
        "{} weft-cni[{}] {} {}: {}\n",
        timestamp(SystemTime::now()),
        std::process::id(),
        level.as_str(),
        l.context,
        msg.replace('\n', " ")
    );
    let _ = (&l.file).write_all(line.as_bytes());
}

macro_rules! log_at {
    ($lvl:ident, $($arg:tt)*) => {
        $crate::logging::log(weft_cni_spec::LogLevel::$lvl, &format!($($arg)*))
    };
}
pub(crate) use log_at;

/// RFC 3339 UTC with milliseconds, without a date crate.
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, dd) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(timestamp(t), "2023-11-14T22:13:20.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(timestamp(leap), "2000-02-29T00:00:00.000Z");
    }
}
