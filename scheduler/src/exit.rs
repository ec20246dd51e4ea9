//! Container exit statuses: a process's own exit code, or one of YARN's
//! negative statuses (`ContainerExitStatus`), which operators and
//! application masters already know.

/// The container was given up: its node was lost, it was released before
/// it ran, or its start failed.
pub const ABORTED: i32 = -100;
/// The scheduler took it back (fair preemption).
pub const PREEMPTED: i32 = -102;
/// Killed for using more physical memory than it was given.
pub const KILLED_EXCEEDED_MEMORY: i32 = -104;
/// Its application master stopped it.
pub const KILLED_BY_APPMASTER: i32 = -105;
/// The resource manager stopped it (an application killed, an attempt
/// replaced, a container it does not know).
pub const KILLED_BY_RESOURCEMANAGER: i32 = -106;
/// Still running when its application finished.
pub const KILLED_AFTER_APP_COMPLETION: i32 = -107;
/// Not known yet (still running).
pub const INVALID: i32 = -1000;

/// The name of an exit status, for tables (`0`, `1`, `PREEMPTED`, …).
pub fn name(status: i32) -> String {
    match status {
        ABORTED => "ABORTED".into(),
        PREEMPTED => "PREEMPTED".into(),
        KILLED_EXCEEDED_MEMORY => "KILLED_EXCEEDED_MEMORY".into(),
        KILLED_BY_APPMASTER => "KILLED_BY_APPMASTER".into(),
        KILLED_BY_RESOURCEMANAGER => "KILLED_BY_RESOURCEMANAGER".into(),
        KILLED_AFTER_APP_COMPLETION => "KILLED_AFTER_APP_COMPLETION".into(),
        INVALID => "-".into(),
        n => n.to_string(),
    }
}

/// Whether a container that ended so should simply be asked for again (it
/// failed through no fault of its own).
pub fn is_not_its_fault(status: i32) -> bool {
    matches!(status, ABORTED | PREEMPTED)
}
