//! `container-init`: the short step between the process runtime and a container's command
//! that gives the container its volume mounts (and, later, the pod's generated
//! `/etc/resolv.conf` and `/etc/hosts`, which are file mounts like any other).
//!
//! # Why a process of its own
//!
//! Mounts that only a container sees need a mount namespace of its own, made in the
//! container's process between `fork` and `exec`. The workspace forbids `unsafe`, so
//! `CommandExt::pre_exec` is out. Instead, when a container has mounts, the runtime
//! ([`super::process`]) spawns `<init program> container-init <args>` (the `capstan`
//! binary) exactly as it would spawn the command: same environment, log file as stdout
//! and stderr, own process group, memory cgroup. [`run`], in that fresh single-threaded
//! process:
//!
//! 1. `unshare(CLONE_NEWNS)`: a copy of the host's mounts that is this process's alone;
//! 2. makes `/` recursively private, so that nothing mounted here propagates back to the
//!    host (on systemd hosts `/` is shared);
//! 3. bind-mounts each source on its target (see below);
//! 4. `exec`s the command in the working directory, with the environment it was given.
//!
//! Because it `exec`s, the pid the runtime recorded is the command's pid, and an `exec`
//! keeps the process's start time (field 22 of `/proc/<pid>/stat`): the state file's pid
//! and start time stay right, and adoption after an agent restart works as for a
//! container without mounts. The namespace ends with the container's last process; there
//! is nothing to unmount on the host.
//!
//! # Arguments (format `v1`)
//!
//! ```text
//! v1 <created-targets file> <working directory> <number of mounts N>
//!    { ro | rw } <source> <target>          N times
//!    <command> [<argument> ...]             at least the command
//! ```
//!
//! One OS argument per field, so a path may hold any byte but NUL with nothing to escape
//! (no `:` separators). The leading `v1` is the format's version, and a word that cannot
//! be mistaken for an option: `capstan container-init` takes its arguments as clap's
//! trailing values, and once the first is taken, everything after it (`--`, `-x`) is a
//! value too. At most [`MOUNTS_MAX`] mounts and [`ARGS_BYTES_MAX`] bytes in all.
//!
//! # Mounting
//!
//! Mounts are made in the order of their targets' depth (stable for equal depths), so
//! that a mount inside another's target is made after it and lands inside it. Each is a
//! recursive bind mount (`MS_BIND|MS_REC`); a read-only one is then remounted
//! `MS_BIND|MS_REMOUNT|MS_RDONLY`, keeping the `nosuid`, `nodev`, `noexec` and atime
//! flags the mount already has (dropping them would loosen the host's settings, and in a
//! user namespace the kernel refuses to drop them).
//!
//! A target that does not exist is created, with its missing parents: directories with
//! mode 0755, or an empty file with mode 0644 when the source is not a directory. Each
//! path created on the host's filesystem is appended to the created-targets file (absolute
//! paths, each ended by a NUL), and [`super::process::ProcessRuntime::remove_pod`]
//! removes them, if still empty, when the pod goes: a later container of the pod finds
//! them and records nothing. A path created inside an earlier mount of the same container
//! is inside a volume, which goes with the pod's directory, and is not recorded.
//!
//! # Failures
//!
//! [`run`] returns only on failure, with an error whose message begins with
//! `container-init:` and names the step and the paths. Its caller writes the message to
//! stderr, which is the container's log, and exits with [`EXIT_CODE`] (127, the shell's
//! code for a command that could not be run); the agent then reports the container as
//! terminated with exit code 127 and the reason in its log. Not finding or not being
//! able to execute the command is reported the same way.
//!
//! # Left out, on purpose
//!
//! - `mountPropagation` (`HostToContainer`, `Bidirectional`): every mount is private.
//! - `subPath`, tmpfs mounts, recursive read-only (submounts of a read-only source stay
//!   writable; that needs `mount_setattr`, Linux 5.12), a root filesystem of the image
//!   (`pivot_root`): the container sees the host's filesystem with its mounts on top.
//! - A target through a symlink is followed, as `mount` follows it, on the host's tree.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use rustix::fs::StatVfsMountFlags;
use rustix::mount::{MountFlags, MountPropagationFlags};

/// The first argument: the version of the argument format.
pub const FORMAT: &str = "v1";
/// Mounts per container (a pod's volume mounts, plus `/etc/resolv.conf` and `/etc/hosts`).
pub const MOUNTS_MAX: usize = 128;
/// All arguments after `container-init`, counting a NUL for each. Together with the
/// runtime's `ENV_BYTES_MAX` (1 MiB) it stays under Linux's 2 MiB for arguments and
/// environment.
pub const ARGS_BYTES_MAX: usize = 512 * 1024;
/// A path given to container-init (Linux's `PATH_MAX` less the NUL).
pub const PATH_BYTES_MAX: usize = 4095;
/// The exit code of a container whose container-init failed (see the module doc).
pub const EXIT_CODE: i32 = 127;
/// The created-targets file is read up to this (each mount adds its target and missing
/// parents once per pod, so a real one is far smaller).
pub const CREATED_TARGETS_BYTES_MAX: u64 = 1024 * 1024;

const READ_ONLY: &str = "ro";
const READ_WRITE: &str = "rw";
/// Everything before the mounts: the format, the created-targets file, the working
/// directory, the number of mounts.
const HEADER_ARGS: usize = 4;

/// One bind mount of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// An absolute path on the host: a volume's directory, or a file.
    pub source: PathBuf,
    /// The absolute path where the container sees it.
    pub target: PathBuf,
    pub read_only: bool,
}

/// The arguments that follow `container-init` (see the module doc for the format). The
/// mounts are not checked here: see [`validate_mounts`] and [`args_bytes`].
pub fn init_args(mounts: &[Mount], created_targets: &Path, working_dir: &Path, command: &[String]) -> Vec<OsString> {
    let mut args = Vec::with_capacity(HEADER_ARGS + 3 * mounts.len() + command.len());
    args.push(OsString::from(FORMAT));
    args.push(created_targets.as_os_str().to_owned());
    args.push(working_dir.as_os_str().to_owned());
    args.push(OsString::from(mounts.len().to_string()));
    for mount in mounts {
        args.push(OsString::from(if mount.read_only { READ_ONLY } else { READ_WRITE }));
        args.push(mount.source.as_os_str().to_owned());
        args.push(mount.target.as_os_str().to_owned());
    }
    args.extend(command.iter().map(OsString::from));
    args
}

/// The bytes `args` take on a command line: each argument and its NUL.
pub fn args_bytes(args: &[OsString]) -> usize {
    args.iter().map(|arg| arg.len() + 1).sum()
}

/// Checks what [`run`] will refuse: more than [`MOUNTS_MAX`] mounts, a source or target
/// that is not an absolute path of at most [`PATH_BYTES_MAX`] bytes without NUL, a
/// target of `/` or with `..` in it.
pub fn validate_mounts(mounts: &[Mount]) -> Result<(), String> {
    if mounts.len() > MOUNTS_MAX {
        return Err(format!("{} mounts, more than {MOUNTS_MAX}", mounts.len()));
    }
    for mount in mounts {
        for (what, path) in [("source", &mount.source), ("target", &mount.target)] {
            let bytes = path.as_os_str().as_bytes();
            if !path.is_absolute() || bytes.len() > PATH_BYTES_MAX || bytes.contains(&0) {
                return Err(format!(
                    "mount {what} {} is not an absolute path of at most {PATH_BYTES_MAX} bytes without NUL",
                    path.display()
                ));
            }
        }
        // `..` would make the created-targets file name paths other than those created,
        // and `/` cannot be covered by a bind mount without hiding everything.
        if mount.target.parent().is_none() || mount.target.components().any(|c| c == Component::ParentDir) {
            return Err(format!("mount target {} is `/` or holds `..`", mount.target.display()));
        }
    }
    Ok(())
}

/// container-init: makes the mounts and `exec`s the command (see the module doc). Never
/// returns on success; on failure returns an error whose message begins with
/// `container-init:`, which the caller prints to stderr before exiting with
/// [`EXIT_CODE`]. Must run in a process of its own, before it starts threads.
pub fn run(args: Vec<OsString>) -> io::Error {
    let init = match parse(args) {
        Ok(init) => init,
        Err(e) => return e,
    };
    if let Err(e) = mount_all(&init) {
        return e;
    }
    let mut command = Command::new(&init.command[0]);
    command.args(&init.command[1..]).current_dir(&init.working_dir);
    // The environment is inherited as is: the runtime gave this process the container's.
    let e = command.exec();
    io::Error::new(
        e.kind(),
        format!(
            "container-init: running {:?} in {}: {e}",
            init.command[0],
            init.working_dir.display()
        ),
    )
}

/// The created-targets file's paths, in the order they were created. A missing file is
/// no paths; only the first [`CREATED_TARGETS_BYTES_MAX`] bytes are read.
pub fn read_created_targets(path: &Path) -> io::Result<Vec<PathBuf>> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(file) => file.take(CREATED_TARGETS_BYTES_MAX).read_to_end(&mut bytes)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(bytes
        .split(|&b| b == 0)
        // A last entry without its NUL was cut off by the bound (or a crash): not a path.
        .take(bytes.split(|&b| b == 0).count().saturating_sub(1))
        .filter(|entry| entry.first() == Some(&b'/'))
        .map(|entry| PathBuf::from(OsStr::from_bytes(entry)))
        .collect())
}

/// What the arguments say.
#[derive(Debug, PartialEq, Eq)]
struct Init {
    created_targets: PathBuf,
    working_dir: PathBuf,
    mounts: Vec<Mount>,
    command: Vec<OsString>,
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("container-init: {message}"))
}

fn parse(args: Vec<OsString>) -> io::Result<Init> {
    let bytes = args_bytes(&args);
    if bytes > ARGS_BYTES_MAX {
        return Err(invalid(format!(
            "the arguments take {bytes} bytes, more than {ARGS_BYTES_MAX}"
        )));
    }
    let mut args = args.into_iter();
    let mut next = |what: &str| {
        args.next()
            .ok_or_else(|| invalid(format!("the arguments end before the {what}")))
    };
    let format = next("format")?;
    if format != FORMAT {
        return Err(invalid(format!(
            "arguments of format {format:?}, not {FORMAT:?} (do the agent and this binary differ in version?)"
        )));
    }
    let created_targets = PathBuf::from(next("created-targets file")?);
    let working_dir = PathBuf::from(next("working directory")?);
    if !created_targets.is_absolute() || !working_dir.is_absolute() {
        return Err(invalid(format!(
            "the created-targets file {} and the working directory {} must be absolute",
            created_targets.display(),
            working_dir.display()
        )));
    }
    let count = next("number of mounts")?;
    let count = count
        .to_str()
        .and_then(|count| count.parse::<usize>().ok())
        .filter(|&count| count <= MOUNTS_MAX)
        .ok_or_else(|| invalid(format!("{count:?} is not a number of mounts up to {MOUNTS_MAX}")))?;
    let mut mounts = Vec::with_capacity(count);
    for _ in 0..count {
        let mode = next("mount's mode")?;
        let read_only = match mode.to_str() {
            Some(READ_ONLY) => true,
            Some(READ_WRITE) => false,
            _ => {
                return Err(invalid(format!(
                    "{mode:?} is not a mount mode ({READ_ONLY} or {READ_WRITE})"
                )))
            }
        };
        let source = PathBuf::from(next("mount's source")?);
        let target = PathBuf::from(next("mount's target")?);
        mounts.push(Mount {
            source,
            target,
            read_only,
        });
    }
    validate_mounts(&mounts).map_err(invalid)?;
    let command: Vec<OsString> = args.collect();
    if command.is_empty() || command[0].is_empty() {
        return Err(invalid("no command to run".into()));
    }
    Ok(Init {
        created_targets,
        working_dir,
        mounts,
        command,
    })
}

/// Steps 1 to 3 of the module doc.
fn mount_all(init: &Init) -> io::Result<()> {
    new_mount_namespace()
        .map_err(|e| io::Error::new(e.kind(), format!("container-init: unshare(CLONE_NEWNS): {e}")))?;
    rustix::mount::mount_change("/", MountPropagationFlags::REC | MountPropagationFlags::PRIVATE).map_err(|e| {
        let e = io::Error::from(e);
        io::Error::new(e.kind(), format!("container-init: making / recursively private: {e}"))
    })?;
    let mut order: Vec<&Mount> = init.mounts.iter().collect();
    // Stable: of two mounts on the same target, the later one is on top, as given.
    order.sort_by_key(|mount| mount.target.components().count());
    let mut record = CreatedTargets {
        path: &init.created_targets,
        file: None,
    };
    for (done, mount) in order.iter().enumerate() {
        let inside_a_mount = order[..done]
            .iter()
            .any(|earlier| mount.target.starts_with(&earlier.target));
        bind(mount, inside_a_mount, &mut record)?;
    }
    Ok(())
}

/// `unshare(CLONE_NEWNS)`. rustix deprecates its safe `unshare` because `CLONE_FILES`
/// can leave other threads using descriptors of a table that is no longer theirs. Only
/// `CLONE_NEWNS` is passed, which leaves the descriptor table alone (it also unshares
/// the calling thread's `fs_struct`, which no Rust code relies on sharing), and
/// container-init runs as a fresh, single-threaded process that `exec`s right after.
#[allow(deprecated)]
fn new_mount_namespace() -> io::Result<()> {
    rustix::thread::unshare(rustix::thread::UnshareFlags::NEWNS).map_err(io::Error::from)
}

/// Appends created paths to the created-targets file, opened at the first.
struct CreatedTargets<'a> {
    path: &'a Path,
    file: Option<File>,
}

impl CreatedTargets<'_> {
    fn add(&mut self, created: &Path) -> io::Result<()> {
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(self.path)?,
            ),
        };
        let mut entry = created.as_os_str().as_bytes().to_vec();
        entry.push(0);
        // One write per entry: with O_APPEND, an entry is never split by another writer.
        file.write_all(&entry)
    }
}

/// Creates the target if missing, bind-mounts the source on it, and makes it read-only if
/// asked.
fn bind(mount: &Mount, inside_a_mount: bool, record: &mut CreatedTargets<'_>) -> io::Result<()> {
    let Mount {
        source,
        target,
        read_only,
    } = mount;
    let failed = |what: &str, e: io::Error| {
        io::Error::new(
            e.kind(),
            format!(
                "container-init: mount of {} on {}: {what}: {e}",
                source.display(),
                target.display()
            ),
        )
    };
    let source_meta = fs::metadata(source).map_err(|e| failed("the source", e))?;
    create_target(target, source_meta.is_dir(), inside_a_mount, record)
        .map_err(|e| failed("creating the target", e))?;
    rustix::mount::mount_bind_recursive(source, target).map_err(|e| failed("bind-mounting", e.into()))?;
    if *read_only {
        let kept = kept_flags(target).map_err(|e| failed("reading the mount's flags", e))?;
        rustix::mount::mount_remount(target, MountFlags::BIND | MountFlags::RDONLY | kept, "")
            .map_err(|e| failed("remounting read-only", e.into()))?;
    }
    Ok(())
}

/// Creates `target` and its missing parents, recording each on the host's filesystem.
fn create_target(
    target: &Path,
    directory: bool,
    inside_a_mount: bool,
    record: &mut CreatedTargets<'_>,
) -> io::Result<()> {
    // A dangling symlink counts as there: mount then fails on it and says so.
    match fs::symlink_metadata(target) {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut missing = Vec::new();
    let mut parent = target.parent();
    while let Some(dir) = parent {
        match fs::symlink_metadata(dir) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(dir),
            Err(e) => return Err(e),
        }
        parent = dir.parent();
    }
    let mut created = |path: &Path, result: io::Result<()>| match result {
        Ok(()) if inside_a_mount => Ok(()),
        Ok(()) => record.add(path),
        // Made meanwhile by someone else: theirs to remove.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    };
    let mut dirs = fs::DirBuilder::new();
    dirs.mode(0o755);
    for dir in missing.into_iter().rev() {
        created(dir, dirs.create(dir))?;
    }
    if directory {
        created(target, dirs.create(target))
    } else {
        let file = OpenOptions::new().write(true).create_new(true).mode(0o644).open(target);
        created(target, file.map(drop))
    }
}

/// The flags of the mount at `path` that a read-only remount must keep.
fn kept_flags(path: &Path) -> io::Result<MountFlags> {
    let flags = rustix::fs::statvfs(path)?.f_flag;
    let pairs = [
        (StatVfsMountFlags::NOSUID, MountFlags::NOSUID),
        (StatVfsMountFlags::NODEV, MountFlags::NODEV),
        (StatVfsMountFlags::NOEXEC, MountFlags::NOEXEC),
        (StatVfsMountFlags::NOATIME, MountFlags::NOATIME),
        (StatVfsMountFlags::NODIRATIME, MountFlags::NODIRATIME),
        (StatVfsMountFlags::RELATIME, MountFlags::RELATIME),
    ];
    Ok(pairs
        .into_iter()
        .filter(|(statvfs, _)| flags.contains(*statvfs))
        .fold(MountFlags::empty(), |kept, (_, mount)| kept | mount))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    fn mount(source: &str, target: &[u8], read_only: bool) -> Mount {
        Mount {
            source: source.into(),
            target: PathBuf::from(OsString::from_vec(target.to_vec())),
            read_only,
        }
    }

    #[test]
    fn arguments_survive_any_byte_but_nul() {
        let mounts = vec![
            mount("/vol/a:b", b"/etc/with:colon\nand newline", true),
            mount("/vol/--help", b"/x/\xff\xfe not utf-8", false),
        ];
        let command = vec!["--".to_string(), "-c".to_string(), "".to_string(), "ro".to_string()];
        let args = init_args(&mounts, Path::new("/c/mount-targets"), Path::new("/w d"), &command);
        assert_eq!(args[0], FORMAT);
        let init = parse(args.clone()).expect("parse");
        assert_eq!(
            init,
            Init {
                created_targets: "/c/mount-targets".into(),
                working_dir: "/w d".into(),
                mounts,
                command: command.iter().map(OsString::from).collect(),
            }
        );
        assert_eq!(args_bytes(&args), args.iter().map(|a| a.len() + 1).sum::<usize>());
    }

    #[test]
    fn bad_arguments_are_refused_with_a_message() {
        let good = init_args(
            &[mount("/s", b"/t", false)],
            Path::new("/c"),
            Path::new("/w"),
            &["true".into()],
        );
        let refused = |args: Vec<OsString>, says: &str| {
            let e = parse(args).expect_err("refused");
            let message = e.to_string();
            assert!(
                message.starts_with("container-init: ") && message.contains(says),
                "{message}"
            );
        };
        let mut v2 = good.clone();
        v2[0] = "v2".into();
        refused(v2, "format");
        refused(good[..good.len() - 1].to_vec(), "no command");
        refused(good[..5].to_vec(), "end before the mount's source");
        let mut mode = good.clone();
        mode[4] = "rx".into();
        refused(mode, "mount mode");
        let mut count = good.clone();
        count[3] = (MOUNTS_MAX + 1).to_string().into();
        refused(count, "number of mounts");
        let mut relative = good.clone();
        relative[6] = "t".into();
        refused(relative, "absolute");
        let mut dotdot = good.clone();
        dotdot[6] = "/a/../etc".into();
        refused(dotdot, "`..`");
        let mut root = good.clone();
        root[6] = "/".into();
        refused(root, "`/`");
        let mut long = good.clone();
        long.push("x".repeat(ARGS_BYTES_MAX).into());
        refused(long, "bytes");
        assert!(validate_mounts(&vec![mount("/s", b"/t", false); MOUNTS_MAX + 1]).is_err());
    }

    #[test]
    fn created_targets_are_read_back_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mount-targets");
        assert!(read_created_targets(&path).expect("read").is_empty());
        let mut record = CreatedTargets {
            path: &path,
            file: None,
        };
        let odd = PathBuf::from(OsString::from_vec(b"/b/\xff\nz".to_vec()));
        record.add(Path::new("/a")).expect("add");
        record.add(&odd).expect("add");
        drop(record);
        // An entry cut off without its NUL is not taken for a path.
        let mut file = OpenOptions::new().append(true).open(&path).expect("open");
        file.write_all(b"/c/cut").expect("write");
        assert_eq!(
            read_created_targets(&path).expect("read"),
            vec![PathBuf::from("/a"), odd]
        );
    }
}
