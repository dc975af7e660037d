//! Dispatcher threads end with their hypervisor (one test: it counts the
//! process's threads).

use std::time::Duration;

use pvio_hv::{DomId, DomainConfig, Hypervisor};

/// Dispatcher threads (`pvio-evtchn-dom<id>`, which the kernel's 15-byte
/// thread names cut to `pvio-evtchn-dom`) in this process: this file holds
/// one test, so they are all this test's.
fn dispatchers() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|c| c.trim().starts_with("pvio-evtchn-dom"))
        .count()
}

/// Dropping the hypervisor and its domains without destroying them ends
/// their dispatcher threads (they polled forever, holding the domain's
/// event-channel tables: a fuzzer creating a hypervisor per input ran out
/// of memory after ~10,000 inputs).
#[test]
fn dropping_the_hypervisor_ends_dispatcher_threads() {
    for _ in 0..3 {
        let hv = Hypervisor::new();
        let d = hv
            .create_domain(DomId(77), DomainConfig::default())
            .unwrap();
        let p = d.events().alloc_unbound(DomId(77)).unwrap();
        let w = d.port_waiter(p).unwrap();
        // The thread names itself once it runs.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while dispatchers() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no dispatcher started"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(dispatchers(), 1);
        drop((w, d, hv));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while dispatchers() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "dispatcher still running"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
