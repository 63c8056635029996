//! The fuzz targets in `make test` (stable, no libFuzzer): every file of
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/`, the seeds, then a fixed
//! series of mutations of the corpus (bit flips, byte changes, insertions, deletions,
//! duplicated chunks, splices of two inputs), each run through the target. A panic fails
//! the test, which names every input that panicked; a mutated one is written to
//! `target/tmp/fuzz-replay/<target>/` to become a regression file.
//!
//! `cargo test -p capstan-fuzz --test replay -- --ignored write_seed_corpus` writes the
//! seeds of `capstan_fuzz::seeds::corpus` into the corpus directories.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use capstan_fuzz::{seeds, Target, TARGETS};

/// Mutated inputs per target, and the seed of their series.
const MUTATIONS: usize = 2_000;
const SEED: u64 = 0x00ca_b57a_f022_2026;
/// Mutations grow inputs at most to this (libFuzzer's default `-max_len` is 4096).
const INPUT_BYTES_MAX: usize = 8 * 1024;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// The files of `dir`, sorted by name, without READMEs and hidden files.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.') && !name.starts_with("README")
        })
        .map(|p| {
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            (p.display().to_string(), data)
        })
        .collect();
    out.sort();
    out
}

/// xorshift64*: a small deterministic generator, so a failing mutation is found again.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Bytes that often matter: lengths, varint continuations, JSON and protobuf structure.
const INTERESTING: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, b'"', b'{', b'}', b'[', b']', b':', b',', b'\\', b'-', b'0', b'9', b'$', b'/', b'\n', 0x0a,
    0x12, 0x1a, 0x22, 0x08, 0x10,
];

fn mutate(rng: &mut Rng, corpus: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut d = corpus[rng.below(corpus.len())].1.clone();
    for _ in 0..1 + rng.below(4) {
        let len = d.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                d[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                d[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 if len > 0 => {
                let i = rng.below(len);
                d[i] = rng.next() as u8;
            }
            3 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n)
                    .map(|_| {
                        if rng.below(2) == 0 {
                            INTERESTING[rng.below(INTERESTING.len())]
                        } else {
                            rng.next() as u8
                        }
                    })
                    .collect();
                d.splice(at..at, bytes);
            }
            4 if len > 0 => {
                let at = rng.below(len);
                let n = (1 + rng.below(16)).min(len - at);
                d.drain(at..at + n);
            }
            5 if len > 0 => {
                // A chunk of the input copied elsewhere in it (repeated fields, nesting).
                let from = rng.below(len);
                let n = (1 + rng.below(64)).min(len - from);
                let chunk = d[from..from + n].to_vec();
                let at = rng.below(len + 1);
                d.splice(at..at, chunk);
            }
            6 => {
                // A splice: this input's head, another's tail.
                let other = &corpus[rng.below(corpus.len())].1;
                let head = rng.below(len + 1);
                let tail = rng.below(other.len() + 1);
                d.truncate(head);
                d.extend_from_slice(&other[tail..]);
            }
            7 if len > 0 => {
                d.truncate(rng.below(len));
            }
            8 if len > 0 => {
                // A large or negative number where a varint or a digit was.
                let at = rng.below(len);
                let big: &[u8] = match rng.below(3) {
                    0 => &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
                    1 => b"-9223372036854775808",
                    _ => b"18446744073709551616",
                };
                let end = (at + big.len()).min(len);
                d.splice(at..end, big.iter().copied());
            }
            _ => {}
        }
    }
    d.truncate(INPUT_BYTES_MAX);
    d
}

fn panics(f: Target, data: &[u8]) -> bool {
    catch_unwind(AssertUnwindSafe(|| f(data))).is_err()
}

fn hex(data: &[u8]) -> String {
    data.iter().take(256).map(|b| format!("{b:02x}")).collect()
}

fn replay(name: &str) {
    let f = TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .expect("a target of that name");
    let corpus = files(&fuzz_dir().join("corpus").join(name));
    assert!(!corpus.is_empty(), "fuzz/corpus/{name}/ holds no inputs");
    let regressions = files(&fuzz_dir().join("regressions").join(name));
    let seeds: Vec<(String, Vec<u8>)> = seeds::corpus()
        .into_iter()
        .filter(|s| s.target == name)
        .map(|s| (format!("seed {}", s.name), s.data))
        .collect();
    let mut failed = Vec::new();
    for (what, data) in corpus.iter().chain(&regressions).chain(&seeds) {
        if panics(f, data) {
            failed.push(what.clone());
        }
    }
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-replay").join(name);
    let mut rng = Rng::new(
        SEED ^ name
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))),
    );
    for i in 0..MUTATIONS {
        let data = mutate(&mut rng, &corpus);
        if panics(f, &data) {
            let _ = std::fs::create_dir_all(&out);
            let path = out.join(format!("mutation-{i}"));
            let _ = std::fs::write(&path, &data);
            failed.push(format!(
                "mutation {i} ({} bytes, written to {}): {}",
                data.len(),
                path.display(),
                hex(&data)
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{} input(s) of the {name} target panicked:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

#[test]
fn rest_body() {
    replay("rest_body");
}

#[test]
fn patch() {
    replay("patch");
}

#[test]
fn etcd_request() {
    replay("etcd_request");
}

#[test]
fn raft_message() {
    replay("raft_message");
}

/// Writes the seeds into `fuzz/corpus/<target>/seed-<name>` (run by hand, see above).
#[test]
#[ignore]
fn write_seed_corpus() {
    for s in seeds::corpus() {
        let dir = fuzz_dir().join("corpus").join(s.target);
        std::fs::create_dir_all(&dir).expect("corpus directory");
        std::fs::write(dir.join(format!("seed-{}", s.name)), &s.data).expect("write a seed");
    }
}
