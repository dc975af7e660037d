//! Several drivers of one domain, each waiting on its own port.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use pvio_hv::{DomId, DomainConfig, Hypervisor};

#[test]
fn two_ports_two_threads_one_domain() {
    let hv = Hypervisor::new();
    let fe = hv.create_domain(DomId(1), DomainConfig::default()).unwrap();
    let be = hv.create_domain(DomId(2), DomainConfig::default()).unwrap();
    let (f1, f2) = (
        fe.events().alloc_unbound(be.id()).unwrap(),
        fe.events().alloc_unbound(be.id()).unwrap(),
    );
    let b1 = be.events().bind_interdomain(fe.id(), f1).unwrap();
    let b2 = be.events().bind_interdomain(fe.id(), f2).unwrap();
    // Work counters stand for rings: events coalesce, so a waiter re-checks
    // its work before sleeping, and must never sleep through new work.
    let work = [Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0))];
    let threads: Vec<_> = [b1, b2]
        .into_iter()
        .zip(work.clone())
        .map(|(p, work)| {
            let w = be.port_waiter(p).unwrap();
            std::thread::spawn(move || {
                let mut seen = 0;
                while seen < 1000 {
                    let now = work.load(Ordering::SeqCst);
                    if now > seen {
                        seen = now;
                        continue;
                    }
                    assert!(
                        w.wait(Duration::from_micros(20), Duration::from_secs(5))
                            .unwrap(),
                        "lost wakeup"
                    );
                }
                seen
            })
        })
        .collect();
    for _ in 0..1000 {
        for (p, w) in [f1, f2].into_iter().zip(&work) {
            w.fetch_add(1, Ordering::SeqCst);
            fe.events().send(p).unwrap();
        }
    }
    for t in threads {
        assert_eq!(t.join().unwrap(), 1000);
    }
    // Timeouts report false; a destroyed domain ends the wait with an error.
    let w = be.port_waiter(b1).unwrap();
    // The last sends may still be on their way (their threads saw the work
    // first, and the dispatcher may deliver late on a loaded machine): at
    // most one per port, then a wait times out with false.
    let mut late = 0;
    while w.wait(Duration::ZERO, Duration::from_millis(50)).unwrap() {
        late += 1;
        assert!(late <= 2, "events keep coming after the last send");
    }
    hv.destroy_domain(be.id()).unwrap();
    assert!(w.wait(Duration::ZERO, Duration::from_secs(5)).is_err());
}
