//! Failpoints: faults that a test harness switches on in a real `capstan store` process
//! through its environment, to see what the cluster does when one part of one member
//! misbehaves. So far there is one, a slow disk under the Raft log.
//!
//! # Test builds only
//!
//! Failpoints exist only in builds with `debug_assertions`: the dev profile, which
//! `make test`, `make up` and the tests that spawn the binary use. In a release build the
//! types below stay (so the callers need no `cfg`), but every check is compiled out:
//! [`FsyncDelay::before_synced_write`] is an empty inline function and nothing reads a
//! file or a clock. A release build that finds a failpoint variable set only logs a
//! warning at start that failpoints are compiled out of it, so that nobody takes a fast
//! run for one under the fault.
//!
//! # Slow fsync
//!
//! - `CAPSTAN_FAILPOINT_FSYNC_DELAY_MS=<ms>` ([`FSYNC_DELAY_MS_ENV`]): every synced
//!   write of the Raft log ([`crate::raftlog`]: a Ready's entries and hard state, the conf
//!   state, the truncation point, the identity and start count) first sleeps that long,
//!   so each takes at least that long, as on a disk whose fsync is slow. `0` is off; at
//!   most [`FSYNC_DELAY_MS_MAX`].
//! - `CAPSTAN_FAILPOINT_FSYNC_DELAY_FILE=<path>` ([`FSYNC_DELAY_FILE_ENV`]): the delay is
//!   the content of that file, decimal milliseconds (whitespace around them ignored),
//!   read again at most every [`FSYNC_DELAY_FILE_REREAD_MS`] ms, at a synced write: a
//!   harness slows a member's disk at run time and heals it. A missing or empty file
//!   means no delay. Write the file atomically (write another file, rename it over it):
//!   a number read half-written counts as it stands. Content that is no valid delay (not
//!   a number, above the maximum, longer than [`FSYNC_DELAY_FILE_BYTES_MAX`]) counts as
//!   no delay, with a warning (once, until the content changes).
//!
//! Both are read once, when the log opens. Setting both, a value that does not parse or
//! is out of range, and a file whose content is invalid at that moment are errors there:
//! the member does not start. An active failpoint is logged as a warning when the log
//! opens, and with the file, every change of the delay too (message
//! [`FSYNC_DELAY_CHANGED`], field `delay_ms`; the chaos tests read it to know when a
//! member saw a change).
//!
//! # Where the sleep sits, and what it does to a member
//!
//! The sleep is in the Raft log, right before RocksDB's synced write: on the I/O side.
//! The Raft core ([`crate::replica`]) calls the log as it always did and reads no clock.
//! But the log is written on the raft thread ([`crate::node`]), inside a Ready (persist
//! is step 4 of [`crate::replica::Replica::ready`]), so for the delay that thread does
//! nothing else: no message is stepped, no tick taken, nothing sent or handed out; inputs
//! wait in the queue, and the next Ready takes them all (a larger group commit). The loop
//! takes at most one tick per turn, so a member that writes on every turn has a Raft
//! clock that runs slow, a tick per turn of about the delay: a leader's heartbeats (sent
//! before its fsync, step 2) leave about a delay apart rather than a tick apart, and a
//! follower that persists appends counts its election timeout more slowly too. A
//! follower's answers to heartbeats and appends leave only after its own persist.
//!
//! So the followers hear from a leader whose disk is slow about once per delay. It keeps
//! its place while the delay stays below the followers' election timeouts (raft-rs draws
//! each between one and two election timeouts, once per term); past the smaller one, the
//! followers, whose clocks run normally, elect another, as with etcd on such a disk.
//! Measured by hand, one run each (3 members, 1 s election timeout, the delay on the
//! leader alone, sequential puts): 500 ms and 1.5 s kept the leader, 3 s lost it within
//! 2 s. Requests sent to the slow member itself wait for several of its Readys, so with
//! delays of seconds they may time out even when the rest of the cluster is fast.
//!
//! Only synced writes are delayed: a Ready's entries and a new term or vote
//! ([`crate::raftlog::RaftLog::append`]). A hard state that only moves the commit index
//! is written without an fsync (raft-rs's `Ready::must_sync` is false then), so a put
//! costs the leader one delayed write, its entries.
//!
//! Left out: failing writes (errors, not delays: the raft loop stops the member on a
//! storage error, which a kill shows as well), random or per-write delays, the state
//! machine's RocksDB (written without fsyncs), the network (see `capstan-chaos`), and any
//! way to enable a failpoint in a release build.

use std::ffi::OsString;

use crate::error::Result;

/// Milliseconds of sleep before each synced write of the Raft log.
pub const FSYNC_DELAY_MS_ENV: &str = "CAPSTAN_FAILPOINT_FSYNC_DELAY_MS";
/// A file holding the current delay in milliseconds, read again while the member runs.
pub const FSYNC_DELAY_FILE_ENV: &str = "CAPSTAN_FAILPOINT_FSYNC_DELAY_FILE";
/// The longest delay accepted.
pub const FSYNC_DELAY_MS_MAX: u64 = 60_000;
/// The delay file is read at most this often.
pub const FSYNC_DELAY_FILE_REREAD_MS: u64 = 100;
/// Bytes of the delay file read at most; a longer file is invalid.
pub const FSYNC_DELAY_FILE_BYTES_MAX: u64 = 32;
/// The message logged (warning, field `delay_ms`) when the delay file's delay changes.
pub const FSYNC_DELAY_CHANGED: &str = "fsync delay failpoint changed";

/// The slow-fsync failpoint of one Raft log: the log calls
/// [`FsyncDelay::before_synced_write`] before each of its synced writes.
#[derive(Debug, Default)]
pub struct FsyncDelay {
    #[cfg(debug_assertions)]
    source: Option<active::Source>,
}

impl FsyncDelay {
    /// No delay, whatever the environment says.
    pub fn off() -> FsyncDelay {
        FsyncDelay::default()
    }

    /// The failpoint as [`FSYNC_DELAY_MS_ENV`] and [`FSYNC_DELAY_FILE_ENV`] set it; an
    /// invalid setting is an error (see the module's documentation).
    pub fn from_env() -> Result<FsyncDelay> {
        FsyncDelay::from_settings(
            std::env::var_os(FSYNC_DELAY_MS_ENV),
            std::env::var_os(FSYNC_DELAY_FILE_ENV),
        )
    }

    /// The failpoint from the values of the two variables.
    #[cfg(debug_assertions)]
    pub(crate) fn from_settings(delay_ms: Option<OsString>, file: Option<OsString>) -> Result<FsyncDelay> {
        Ok(FsyncDelay {
            source: active::Source::from_settings(delay_ms, file)?,
        })
    }

    /// The failpoint from the values of the two variables: always off in this build.
    #[cfg(not(debug_assertions))]
    pub(crate) fn from_settings(delay_ms: Option<OsString>, file: Option<OsString>) -> Result<FsyncDelay> {
        if delay_ms.is_some() || file.is_some() {
            tracing::warn!(
                "{FSYNC_DELAY_MS_ENV} or {FSYNC_DELAY_FILE_ENV} is set, but failpoints are compiled out of \
                 release builds: the Raft log's writes are not delayed"
            );
        }
        Ok(FsyncDelay::default())
    }

    /// Sleeps as long as the failpoint says now (not at all when it is off or compiled
    /// out). Called on the I/O path, right before a synced write.
    #[inline]
    pub fn before_synced_write(&mut self) {
        #[cfg(debug_assertions)]
        if let Some(source) = &mut self.source {
            let delay = source.current();
            if !delay.is_zero() {
                std::thread::sleep(delay);
            }
        }
    }
}

#[cfg(debug_assertions)]
mod active {
    use std::ffi::OsString;
    use std::io::Read as _;
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    use super::{
        FSYNC_DELAY_CHANGED, FSYNC_DELAY_FILE_BYTES_MAX, FSYNC_DELAY_FILE_ENV, FSYNC_DELAY_FILE_REREAD_MS,
        FSYNC_DELAY_MS_ENV, FSYNC_DELAY_MS_MAX,
    };
    use crate::error::{Result, StoreError};

    #[derive(Debug)]
    pub(super) enum Source {
        Fixed(Duration),
        File(DelayFile),
    }

    impl Source {
        pub(super) fn from_settings(delay_ms: Option<OsString>, file: Option<OsString>) -> Result<Option<Source>> {
            let invalid = |name: &str, value: &OsString, why: String| {
                StoreError::InvalidRequest(format!("failpoint {name}={value:?}: {why}"))
            };
            match (delay_ms, file) {
                (None, None) => Ok(None),
                (Some(_), Some(_)) => Err(StoreError::InvalidRequest(format!(
                    "failpoints {FSYNC_DELAY_MS_ENV} and {FSYNC_DELAY_FILE_ENV} are both set: set one"
                ))),
                (Some(value), None) => {
                    let ms = value
                        .to_str()
                        .ok_or_else(|| "not UTF-8".to_string())
                        .and_then(parse_delay_ms)
                        .map_err(|why| invalid(FSYNC_DELAY_MS_ENV, &value, why))?;
                    if ms == 0 {
                        return Ok(None);
                    }
                    tracing::warn!(
                        delay_ms = ms,
                        "failpoint {FSYNC_DELAY_MS_ENV} active: every synced write of the Raft log is delayed"
                    );
                    Ok(Some(Source::Fixed(Duration::from_millis(ms))))
                }
                (None, Some(value)) => {
                    if value.is_empty() {
                        return Err(invalid(FSYNC_DELAY_FILE_ENV, &value, "an empty path".into()));
                    }
                    let path = PathBuf::from(&value);
                    let delay_ms = read_delay_file(&path).map_err(|why| invalid(FSYNC_DELAY_FILE_ENV, &value, why))?;
                    tracing::warn!(
                        delay_ms,
                        path = %path.display(),
                        "failpoint {FSYNC_DELAY_FILE_ENV} active: synced writes of the Raft log are delayed as \
                         long as the file says"
                    );
                    Ok(Some(Source::File(DelayFile {
                        path,
                        read_at: Instant::now(),
                        delay_ms,
                        error: None,
                    })))
                }
            }
        }

        pub(super) fn current(&mut self) -> Duration {
            match self {
                Source::Fixed(delay) => *delay,
                Source::File(file) => file.current(),
            }
        }
    }

    /// The delay file and what was last read from it.
    #[derive(Debug)]
    pub(super) struct DelayFile {
        path: PathBuf,
        read_at: Instant,
        delay_ms: u64,
        /// Why the content last read is no valid delay, while it is not.
        error: Option<String>,
    }

    impl DelayFile {
        fn current(&mut self) -> Duration {
            if self.read_at.elapsed() >= Duration::from_millis(FSYNC_DELAY_FILE_REREAD_MS) {
                self.read_at = Instant::now();
                let delay_ms = match read_delay_file(&self.path) {
                    Ok(ms) => {
                        self.error = None;
                        ms
                    }
                    Err(why) => {
                        if self.error.as_ref() != Some(&why) {
                            tracing::warn!(
                                path = %self.path.display(),
                                "failpoint {FSYNC_DELAY_FILE_ENV}: {why}; no delay until it holds a valid one"
                            );
                            self.error = Some(why);
                        }
                        0
                    }
                };
                if delay_ms != self.delay_ms {
                    tracing::warn!(delay_ms, path = %self.path.display(), "{FSYNC_DELAY_CHANGED}");
                    self.delay_ms = delay_ms;
                }
            }
            Duration::from_millis(self.delay_ms)
        }
    }

    /// Milliseconds, `0..=FSYNC_DELAY_MS_MAX`, surrounding whitespace ignored.
    pub(super) fn parse_delay_ms(text: &str) -> std::result::Result<u64, String> {
        let ms: u64 = text
            .trim()
            .parse()
            .map_err(|_| "not a number of milliseconds".to_string())?;
        if ms > FSYNC_DELAY_MS_MAX {
            return Err(format!("{ms} ms is above the maximum of {FSYNC_DELAY_MS_MAX} ms"));
        }
        Ok(ms)
    }

    /// The delay the file holds: 0 when it does not exist or holds only whitespace.
    pub(super) fn read_delay_file(path: &std::path::Path) -> std::result::Result<u64, String> {
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
        };
        let mut text = String::new();
        file.take(FSYNC_DELAY_FILE_BYTES_MAX + 1)
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if text.len() as u64 > FSYNC_DELAY_FILE_BYTES_MAX {
            return Err(format!("longer than {FSYNC_DELAY_FILE_BYTES_MAX} bytes"));
        }
        if text.trim().is_empty() {
            return Ok(0);
        }
        parse_delay_ms(&text).map_err(|why| format!("{} holds {text:?}: {why}", path.display()))
    }
}

#[cfg(all(test, debug_assertions))]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn settings(delay_ms: Option<&str>, file: Option<&std::path::Path>) -> Result<FsyncDelay> {
        FsyncDelay::from_settings(delay_ms.map(OsString::from), file.map(OsString::from))
    }

    fn error(r: Result<FsyncDelay>) -> String {
        match r {
            Ok(d) => panic!("accepted: {d:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn fixed_delays_parse_within_bounds_and_invalid_ones_are_refused() {
        assert!(settings(None, None).expect("unset").source.is_none());
        assert!(settings(Some("0"), None).expect("zero is off").source.is_none());
        assert!(matches!(
            settings(Some(" 250\n"), None).expect("250").source,
            Some(active::Source::Fixed(d)) if d == Duration::from_millis(250)
        ));
        assert!(settings(Some("60000"), None).is_ok());
        for bad in ["", "abc", "-5", "1.5", "60001", "99999999999999999999999"] {
            let message = error(settings(Some(bad), None));
            assert!(message.contains(FSYNC_DELAY_MS_ENV), "{bad:?}: {message}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let message = error(settings(Some("5"), Some(&dir.path().join("d"))));
        assert!(message.contains("both set"), "{message}");
    }

    #[test]
    fn the_delay_file_is_read_at_open_and_again_at_run_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("delay");
        // Missing: no delay, but the failpoint is there.
        let mut delay = settings(None, Some(&path)).expect("missing file");
        let Some(active::Source::File(_)) = &delay.source else {
            panic!("a file failpoint: {delay:?}")
        };
        std::fs::write(&path, "abc").expect("write");
        assert!(error(settings(None, Some(&path))).contains("not a number"));
        std::fs::write(&path, "x".repeat(100)).expect("write");
        assert!(error(settings(None, Some(&path))).contains("longer than"));
        assert!(error(settings(None, Some(std::path::Path::new("")))).contains("empty path"));

        // At run time: the new content counts once the re-read interval has passed.
        std::fs::write(&path, "30\n").expect("write");
        let deadline = Instant::now() + Duration::from_secs(10);
        let current = |delay: &mut FsyncDelay| match &mut delay.source {
            Some(source) => source.current(),
            None => panic!("the failpoint went away"),
        };
        while current(&mut delay) != Duration::from_millis(30) {
            assert!(Instant::now() < deadline, "the file's new delay was never read");
            std::thread::sleep(Duration::from_millis(10));
        }
        let start = Instant::now();
        delay.before_synced_write();
        assert!(start.elapsed() >= Duration::from_millis(30));
        // Invalid content at run time counts as no delay; so does a removed file.
        std::fs::write(&path, "70000").expect("write");
        while current(&mut delay) != Duration::ZERO {
            assert!(Instant::now() < deadline, "the invalid content was never read");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::fs::write(&path, "20").expect("write");
        while current(&mut delay) != Duration::from_millis(20) {
            assert!(Instant::now() < deadline, "the valid content was never read");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::fs::remove_file(&path).expect("remove");
        while current(&mut delay) != Duration::ZERO {
            assert!(Instant::now() < deadline, "the removal was never seen");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
