//! The credit scheduler of the `rate` key (`"bytes,usecs"`, SECURITY.md
//! NB12), as Linux netback's: every `usecs` the queue gains `bytes` of
//! credit, capped at the larger of `bytes` and the next packet's size (at
//! most 128 KiB), so a packet larger than one window's credit still passes
//! once enough windows have accumulated.

use std::time::{Duration, Instant};

const MAX_BURST: u64 = 131_072;

/// Parses a `rate` value: `Some((bytes, window))`, or `None` if malformed
/// (zero values included).
pub fn parse_rate(v: &[u8]) -> Option<(u64, Duration)> {
    let s = std::str::from_utf8(v).ok()?.trim_end_matches('\0');
    let (b, u) = s.split_once(',')?;
    let bytes: u64 = b.trim().parse().ok()?;
    let usecs: u64 = u.trim().parse().ok()?;
    if bytes == 0 || usecs == 0 {
        return None;
    }
    Some((bytes, Duration::from_micros(usecs)))
}

/// One queue's credit.
#[derive(Debug, Clone)]
pub(crate) struct Credit {
    limit: Option<(u64, Duration)>,
    remaining: u64,
    window_start: Instant,
}

impl Credit {
    pub(crate) fn new(limit: Option<(u64, Duration)>) -> Credit {
        Credit {
            limit,
            remaining: limit.map_or(0, |l| l.0),
            window_start: Instant::now(),
        }
    }

    /// Takes `len` bytes of credit if available. `Err(wait)`: try again
    /// after `wait`.
    pub(crate) fn take(&mut self, len: usize) -> Result<(), Duration> {
        let Some((bytes, window)) = self.limit else {
            return Ok(());
        };
        let len = len as u64;
        if len > self.remaining {
            let now = Instant::now();
            let elapsed = now.saturating_duration_since(self.window_start);
            if elapsed >= window {
                self.window_start = now;
                let max_burst = len.min(MAX_BURST).max(bytes);
                self.remaining = self.remaining.saturating_add(bytes).min(max_burst);
            }
            if len > self.remaining {
                let since = now.saturating_duration_since(self.window_start);
                return Err(window.saturating_sub(since).max(Duration::from_micros(50)));
            }
        }
        self.remaining -= len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_values() {
        assert_eq!(
            parse_rate(b"1000,100000"),
            Some((1000, Duration::from_millis(100)))
        );
        for bad in [&b"1000"[..], b"x,1", b"1,", b"0,5", b"5,0", b"-1,5", b""] {
            assert_eq!(parse_rate(bad), None);
        }
    }

    #[test]
    fn big_packet_accumulates() {
        let mut c = Credit::new(Some((1000, Duration::from_micros(1))));
        let mut tries = 0;
        while c.take(65536).is_err() {
            std::thread::sleep(Duration::from_micros(2));
            tries += 1;
            assert!(tries < 100_000);
        }
        assert!(tries >= 60, "needs about 65 windows");
    }
}
