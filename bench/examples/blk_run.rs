//! One block workload, for profiling (`perf record`, `valgrind
//! --tool=callgrind`) or a quick look: 4 KiB random reads or writes through
//! blkfront → blkback on the null disk or an image file, or by the host
//! directly on the image.
//!
//! `cargo run --release -p pvio-bench --example blk_run -- [null|tmpfs|ext4]
//! [read|write] [depth] [queues] [ops] [pvio|host|uring|vs|vsuring]`
//!
//! `vs` compares pvio with the host's pread/pwrite (QD1) or io_uring
//! (deeper) in 9 interleaved rounds; `vsuring` always with io_uring.
//!
//! Defaults: `null read 32 1 200000 pvio`. Environment: `BLK_SPIN_US`
//! sets the frontend's spin before sleeping (`BlkfrontConfig::spin`);
//! `BLK_BUFFERED=1` makes the host open the image without `O_DIRECT`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use pvio_bench::blk::{Driver, Host, Image, Rng, Rw, compare, uring_disk};
use pvio_blkback::BlkbackConfig;
use pvio_blkdisk::{Disk, NullDisk};
use pvio_blkfront::BlkfrontConfig;

/// blkfront and blkback with `queues` queues; `BLK_SPIN_US` overrides the
/// frontend's spin before sleeping (`BlkfrontConfig::spin`).
fn connect(disk: Arc<dyn Disk>, queues: u32) -> Driver {
    let mut front = BlkfrontConfig {
        queues,
        ..BlkfrontConfig::default()
    };
    if let Some(us) = std::env::var("BLK_SPIN_US")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        front.spin = Duration::from_micros(us);
    }
    let back = BlkbackConfig {
        max_queues: queues,
        ..BlkbackConfig::default()
    };
    Driver::connect_with(disk, front, back)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: &str| args.get(i).cloned().unwrap_or_else(|| d.to_string());
    let target = arg(0, "null");
    let rw = match arg(1, "read").as_str() {
        "read" => Rw::Read,
        "write" => Rw::Write,
        other => return usage(&format!("bad operation {other:?}")),
    };
    let (Ok(depth), Ok(queues), Ok(ops)) = (
        arg(2, "32").parse::<usize>(),
        arg(3, "1").parse::<u32>(),
        arg(4, "200000").parse::<u64>(),
    ) else {
        return usage("depth, queues and ops are numbers");
    };
    let side = arg(5, "pvio");
    let (host, uring) = match side.as_str() {
        "pvio" | "vs" | "vsuring" => (false, false),
        "host" => (true, false),
        "uring" => (true, true),
        other => return usage(&format!("bad side {other:?}")),
    };
    let report = |what: &str, d: Duration| {
        println!(
            "{what} {} qd{depth}: {ops} ops in {:.3}s = {:.0} IOPS ({:.2} us/op)",
            rw.name(),
            d.as_secs_f64(),
            ops as f64 / d.as_secs_f64(),
            d.as_secs_f64() * 1e6 / ops as f64
        )
    };
    let mut rng = Rng::new(42);
    if target == "null" {
        let mut drv = connect(Arc::new(NullDisk::new(1 << 21)), queues);
        let d = drv.run(rw, depth, ops, &mut rng);
        report(&format!("pvio null {queues}q"), d);
        return ExitCode::SUCCESS;
    }
    let parent = match target.as_str() {
        "tmpfs" => "/dev/shm",
        "ext4" => "/var/tmp",
        other => return usage(&format!("bad target {other:?}")),
    };
    let img = match Image::create(parent.as_ref(), 256 << 20) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("cannot create an image under {parent}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // `BLK_BUFFERED=1`: the host opens the image without O_DIRECT.
    let disk = uring_disk(&img);
    let direct = disk.direct() && std::env::var_os("BLK_BUFFERED").is_none();
    if side == "vs" || side == "vsuring" {
        let mut h = Host::open(&img, direct).expect("open the image");
        let mut drv = connect(Arc::new(disk), queues);
        let with_uring = side == "vsuring";
        let cmp = compare(
            9,
            Duration::from_millis(100),
            |n, rng| drv.run(rw, depth, n, rng),
            |n, rng| {
                if with_uring {
                    h.uring(rw, depth, n, rng)
                } else {
                    h.run(rw, depth, n, rng)
                }
            },
        );
        println!(
            "{target} {} qd{depth}, 9 interleaved rounds: pvio {:.0} IOPS, host {:.0} IOPS \
             (medians); pvio/host {:.2}x, added latency {:+.1} us (medians of per-round figures)",
            rw.name(),
            cmp.a,
            cmp.b,
            cmp.ratio,
            cmp.added_us
        );
    } else if host {
        let mut h = Host::open(&img, direct).expect("open the image");
        let d = if uring {
            h.uring(rw, depth, ops, &mut rng)
        } else {
            h.run(rw, depth, ops, &mut rng)
        };
        report(&format!("host {target} (O_DIRECT {direct})"), d);
    } else {
        let mut drv = connect(Arc::new(disk), queues);
        let d = drv.run(rw, depth, ops, &mut rng);
        report(&format!("pvio {target} (O_DIRECT {direct})"), d);
    }
    ExitCode::SUCCESS
}

fn usage(why: &str) -> ExitCode {
    eprintln!(
        "{why}\nusage: blk_run [null|tmpfs|ext4] [read|write] [depth] [queues] [ops] [pvio|host|uring|vs|vsuring]"
    );
    ExitCode::from(2)
}
