//! Writes the seed corpus (`fuzz/corpus/<target>/seed-*`) from the targets'
//! readable seed lists, checks that each seed decodes as written and runs
//! it, and replays the crash inputs kept in `fuzz/regressions/<target>/`.

use std::path::{Path, PathBuf};

type Seeds = fn() -> Vec<(&'static str, Vec<u8>)>;
type Run = fn(&[u8]);

const TARGETS: &[(&str, Seeds, Run)] = &[
    (
        "ring_back",
        pvio_fuzz::ring_back::seeds,
        pvio_fuzz::ring_back::run,
    ),
    (
        "netback_tx",
        pvio_fuzz::netback_tx::seeds,
        pvio_fuzz::netback_tx::run,
    ),
    (
        "blkback_request",
        pvio_fuzz::blkback_request::seeds,
        pvio_fuzz::blkback_request::run,
    ),
    (
        "blkfront_responses",
        pvio_fuzz::blkfront_responses::seeds,
        pvio_fuzz::blkfront_responses::run,
    ),
    (
        "netfront_responses",
        pvio_fuzz::netfront_responses::seeds,
        pvio_fuzz::netfront_responses::run,
    ),
    (
        "xs_wire",
        pvio_fuzz::xs_wire::seeds,
        pvio_fuzz::xs_wire::run,
    ),
    (
        "grant_ops",
        pvio_fuzz::grant_ops::seeds,
        pvio_fuzz::grant_ops::run,
    ),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

#[test]
fn write_and_run_seed_corpus() {
    for (name, seeds, run) in TARGETS {
        let dir = root().join("corpus").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let seeds = seeds();
        assert!(!seeds.is_empty(), "{name}: no seeds");
        for (seed, bytes) in seeds {
            std::fs::write(dir.join(format!("seed-{seed}")), &bytes).unwrap();
            run(&bytes);
        }
    }
}

#[test]
fn seeds_decode_as_written() {
    // Each seed list's operations decode to as many operations as written
    // (a wrong variant count in the encoder would shift the stream).
    use pvio_fuzz::{Enc, decode};
    let mut e = Enc::new();
    e.u32(5).u8(1).u8(0);
    e.variant(4, pvio_fuzz::ring_back::OPS).u8(9);
    e.variant(10, pvio_fuzz::ring_back::OPS).u32(3);
    let (h, ops) =
        decode::<pvio_fuzz::ring_back::Header, pvio_fuzz::ring_back::Op>(&e.done()).unwrap();
    assert_eq!(h.start, 5);
    assert_eq!(
        ops,
        [
            pvio_fuzz::ring_back::Op::Drain(9),
            pvio_fuzz::ring_back::Op::ScribbleRspProd(3)
        ]
    );
    let seeds = pvio_fuzz::grant_ops::seeds();
    let (_, ops) = decode::<(), pvio_fuzz::grant_ops::Op>(&seeds[0].1).unwrap();
    assert_eq!(ops.len(), 10);
    assert!(matches!(ops[9], pvio_fuzz::grant_ops::Op::InUse(_)));
}

#[test]
fn crash_inputs_stay_fixed() {
    for (name, _, run) in TARGETS {
        let dir = root().join("regressions").join(name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            eprintln!("replaying {}", path.display());
            run(&std::fs::read(&path).unwrap());
        }
    }
}
