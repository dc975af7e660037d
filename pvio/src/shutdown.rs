//! SIGINT and SIGTERM as a stop flag, so the commands shut down cleanly
//! (closing the frontend, stopping the backend, removing sockets).

use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// A flag set by the first SIGINT or SIGTERM (a second one of either
/// terminates the process at once, for a shutdown that hangs).
pub fn on_signals() -> io::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // Registered first: exits when the flag is already set.
        signal_hook::flag::register_conditional_shutdown(sig, 1, flag.clone())?;
        signal_hook::flag::register(sig, flag.clone())?;
    }
    Ok(flag)
}
