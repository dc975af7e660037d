use pvio_bench::{pvio, rtrb};
fn main() {
    if std::env::var("PV").is_ok() {
        for _ in 0..5 {
            let n = 5_000_000;
            let d = pvio_bench::pvio(n, 32);
            println!("pvio {:.1}", n as f64 / d.as_secs_f64() / 1e6);
        }
        return;
    }
    if std::env::var("RT").is_ok() {
        rtrb_single();
        return;
    }
    if std::env::var("CP").is_ok() {
        copies();
        return;
    }
    if std::env::var("ST").is_ok() {
        single_thread();
        return;
    }
    let batch: u32 = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(32);
    let n = 2_000_000u64;
    let mut ratios = vec![];
    let mut p = vec![];
    let mut r = vec![];
    for _ in 0..9 {
        let a = n as f64 / pvio(n, batch).as_secs_f64() / 1e6;
        let b = n as f64 / rtrb(n, batch).as_secs_f64() / 1e6;
        ratios.push(a / b);
        p.push(a);
        r.push(b);
    }
    ratios.sort_by(|a, b| a.total_cmp(b));
    p.sort_by(|a, b| a.total_cmp(b));
    r.sort_by(|a, b| a.total_cmp(b));
    println!(
        "batch {batch}: pvio {:.1} rtrb {:.1} ratio {:.2}",
        p[4], r[4], ratios[4]
    );
}
#[allow(dead_code)]
pub fn single_thread() {
    use pvio_bench::{Req, Rsp};
    use pvio_ring::{BackRing, FrontRing};
    use std::sync::Arc;
    let mem = Arc::new(pvio_shmem::MemfdMem::new(c"x", 4 * 4096).unwrap());
    let mut f = FrontRing::<_, Req, Rsp>::init(mem.clone()).unwrap();
    let mut b = BackRing::<_, Req, Rsp>::attach(mem.clone()).unwrap();
    let n = 10_000_000u64;
    let t = std::time::Instant::now();
    let mut sent = 0;
    let mut sum = 0u64;
    while sent < n {
        let mut bt = f.reserve(32).unwrap();
        for _ in 0..32 {
            bt.push(&Req::new(sent)).unwrap();
            sent += 1;
        }
        bt.publish().unwrap();
        back_step(&mut b);
        b.publish().unwrap();
        f.drain_responses(u32::MAX, |r| sum += r.id).unwrap();
    }
    let d = t.elapsed();
    println!(
        "single thread: {:.2} ns per round trip ({sum})",
        d.as_nanos() as f64 / n as f64
    );
}
#[allow(dead_code)]
#[inline(never)]
pub fn copies() {
    use pvio_bench::Req;
    use pvio_shmem::SharedMemExt;
    let mem = pvio_shmem::HeapMem::pages(4).unwrap();
    let n = 50_000_000u64;
    let t = std::time::Instant::now();
    let mut sum = 0u64;
    for i in 0..n {
        let off = 64 + ((i & 127) as usize) * 64;
        mem.write_obj(off, &Req::new(i)).unwrap();
        let r: Req = mem.read_obj(off).unwrap();
        sum = sum.wrapping_add(r.payload[3]);
    }
    let d = t.elapsed();
    println!(
        "write+read 64B: {:.2} ns ({sum})",
        d.as_nanos() as f64 / n as f64
    );
}
#[allow(dead_code)]
pub fn rtrb_single() {
    use pvio_bench::{Req, Rsp};
    let (mut rp, mut rc) = rtrb::RingBuffer::<Req>::new(128);
    let (mut sp, mut sc) = rtrb::RingBuffer::<Rsp>::new(128);
    let n = 10_000_000u64;
    let t = std::time::Instant::now();
    let mut sent = 0;
    let mut sum = 0u64;
    while sent < n {
        rp.write_chunk_uninit(32)
            .unwrap()
            .fill_from_iter((sent..sent + 32).map(Req::new));
        sent += 32;
        let k = rc.slots();
        let ch = rc.read_chunk(k).unwrap();
        let (a, b) = ch.as_slices();
        sp.write_chunk_uninit(k)
            .unwrap()
            .fill_from_iter(a.iter().chain(b).map(Rsp::answer));
        ch.commit_all();
        let k = sc.slots();
        let ch = sc.read_chunk(k).unwrap();
        let (a, b) = ch.as_slices();
        sum += a.iter().chain(b).map(|r| r.id).sum::<u64>();
        ch.commit_all();
    }
    let d = t.elapsed();
    println!(
        "rtrb single thread: {:.2} ns per round trip ({sum})",
        d.as_nanos() as f64 / n as f64
    );
}
#[inline(never)]
pub fn back_step(
    b: &mut pvio_ring::BackRing<
        std::sync::Arc<pvio_shmem::MemfdMem>,
        pvio_bench::Req,
        pvio_bench::Rsp,
    >,
) -> u32 {
    let mut k = 0;
    while let Some(r) = b.next_request().unwrap() {
        b.push_response(&pvio_bench::Rsp::answer(&r)).unwrap();
        k += 1;
    }
    k
}
