//! Process hardening at start-up, before any secret is read: no core dumps, not
//! dumpable (no ptrace by other same-user processes, no /proc/PID/mem), and memory
//! locked where the limit allows, so key material is not written to swap. All
//! through safe system-call wrappers (rlimit, rustix): no `unsafe` in this crate.

/// Applies what it can; returns the warnings for what it could not.
pub fn harden_process() -> Vec<String> {
    let mut warnings = Vec::new();
    if let Err(e) = rlimit::setrlimit(rlimit::Resource::CORE, 0, 0) {
        warnings.push(format!("cannot disable core dumps: {e}"));
    }
    if let Err(e) = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable) {
        warnings.push(format!("cannot mark the process non-dumpable: {e}"));
    }
    warnings
}

/// Locks the pages mapped now (the unsealed keyring among them) into memory.
/// Called once the keyring is unsealed; a low `RLIMIT_MEMLOCK` makes it fail, which
/// is reported, not fatal. `ONFAULT`: pages already resident (the keys) are locked
/// at once, and mapped-but-untouched ranges (the allocator's reserved arena, thread
/// stacks) as they are first touched, instead of all being faulted in now, which
/// cost seconds and a gigabyte of memory at start.
pub fn lock_memory() -> Result<(), String> {
    rustix::mm::mlockall(rustix::mm::MlockAllFlags::CURRENT | rustix::mm::MlockAllFlags::ONFAULT)
        .map_err(|e| format!("cannot lock memory ({e}); raise LimitMEMLOCK to keep keys out of swap"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardening_disables_core_dumps() {
        let _ = harden_process();
        assert_eq!(rlimit::getrlimit(rlimit::Resource::CORE).ok(), Some((0, 0)));
    }
}
