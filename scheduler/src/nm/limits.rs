//! Holding a container to its resources. With cgroups (v2, or v1's
//! `memory` and `cpu` hierarchies) the kernel holds the memory limit (a
//! container past it is OOM-killed, which the node manager reads back from
//! the cgroup's `oom_kill` count and reports as killed for memory) and
//! weighs CPU by vcores; every process of the container is in its cgroup,
//! so none escapes a kill. Where neither is writable, the node manager
//! polls the resident memory of the container's process group and kills
//! it past the limit (no CPU weighting then; a process that leaves its
//! process group escapes the count).
//!
//! A container's launch script joins its cgroups itself (`echo $$ >
//! cgroup.procs`) before it runs the command, so nothing runs outside
//! them even for a moment.

use std::io;
use std::path::{Path, PathBuf};

use super::config::{MemoryEnforcement, NmConfig};
use super::procs;

#[derive(Clone, Debug, PartialEq)]
enum Mode {
    V1 {
        memory: PathBuf,
        cpu: Option<PathBuf>,
    },
    V2 {
        base: PathBuf,
    },
    Poll,
    Off,
}

/// This node manager's way of holding limits, and where its cgroups go.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    mode: Mode,
}

/// One container's cgroups.
#[derive(Clone, Debug, Default)]
pub(crate) struct ContainerGroups {
    /// `cgroup.procs` files its script joins.
    procs_files: Vec<PathBuf>,
    /// Its directories (removed when it ends).
    dirs: Vec<PathBuf>,
    /// Where the kernel counts OOM kills (`memory.oom_control` or
    /// `memory.events`).
    oom_file: Option<PathBuf>,
}

fn write(p: &Path, v: &str) -> io::Result<()> {
    std::fs::write(p, v).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
}

fn writable_dir(p: &Path) -> bool {
    let probe = p.join(format!("hstack-probe-{}", std::process::id()));
    match std::fs::create_dir(&probe) {
        Ok(()) => {
            let _ = std::fs::remove_dir(&probe);
            true
        }
        Err(_) => false,
    }
}

impl Limits {
    /// Chooses how limits are held (per `memory_enforcement`) and makes
    /// this node's cgroup directories (`<hierarchy>/<node>`), removing
    /// what a previous run left in them.
    pub fn setup(cfg: &NmConfig, node: &str) -> Result<Limits, String> {
        let mount = PathBuf::from(&cfg.cgroup_mount);
        let rel = Path::new(&cfg.cgroup_hierarchy).join(sanitize(node));
        let v2 = || -> Result<Mode, String> {
            let controllers = std::fs::read_to_string(mount.join("cgroup.controllers"))
                .map_err(|e| format!("{} is not a cgroup v2 mount: {e}", mount.display()))?;
            if !controllers.split_whitespace().any(|c| c == "memory") {
                return Err(format!(
                    "{}: the memory controller is not available",
                    mount.display()
                ));
            }
            let base = mount.join(&rel);
            std::fs::create_dir_all(&base).map_err(|e| format!("{}: {e}", base.display()))?;
            // Enable the controllers down to the node's directory.
            let mut at = mount.clone();
            for part in rel.components() {
                let _ = write(&at.join("cgroup.subtree_control"), "+memory +cpu");
                at = at.join(part);
            }
            write(&base.join("cgroup.subtree_control"), "+memory +cpu")
                .or_else(|_| write(&base.join("cgroup.subtree_control"), "+memory"))
                .map_err(|e| e.to_string())?;
            Ok(Mode::V2 { base })
        };
        let v1 = || -> Result<Mode, String> {
            let mem_root = mount.join("memory");
            if !mem_root.join("memory.limit_in_bytes").exists() || !writable_dir(&mem_root) {
                return Err(format!(
                    "{} is not a writable cgroup v1 memory hierarchy",
                    mem_root.display()
                ));
            }
            let memory = mem_root.join(&rel);
            std::fs::create_dir_all(&memory).map_err(|e| format!("{}: {e}", memory.display()))?;
            let cpu_root = mount.join("cpu");
            let cpu = (cpu_root.join("cpu.shares").exists() && writable_dir(&cpu_root))
                .then(|| cpu_root.join(&rel))
                .filter(|p| std::fs::create_dir_all(p).is_ok());
            Ok(Mode::V1 { memory, cpu })
        };
        let mode = match cfg.memory_enforcement {
            MemoryEnforcement::Off => Mode::Off,
            MemoryEnforcement::Poll => Mode::Poll,
            MemoryEnforcement::CgroupV1 => {
                v1().map_err(|e| format!("memory_enforcement = cgroup-v1: {e}"))?
            }
            MemoryEnforcement::CgroupV2 => {
                v2().map_err(|e| format!("memory_enforcement = cgroup-v2: {e}"))?
            }
            MemoryEnforcement::Auto => v2().or_else(|_| v1()).unwrap_or(Mode::Poll),
        };
        let l = Limits { mode };
        l.clean_leftovers();
        Ok(l)
    }

    pub fn name(&self) -> &'static str {
        match self.mode {
            Mode::V1 { .. } => "cgroup-v1",
            Mode::V2 { .. } => "cgroup-v2",
            Mode::Poll => "poll",
            Mode::Off => "off",
        }
    }

    /// Whether the node manager must poll memory itself.
    pub fn polls(&self) -> bool {
        self.mode == Mode::Poll
    }

    fn bases(&self) -> Vec<PathBuf> {
        match &self.mode {
            Mode::V1 { memory, cpu } => {
                std::iter::once(memory.clone()).chain(cpu.clone()).collect()
            }
            Mode::V2 { base } => vec![base.clone()],
            _ => vec![],
        }
    }

    /// At a clean stop: this node's (empty) cgroup directories go.
    pub fn teardown(&self) {
        for base in self.bases() {
            let _ = std::fs::remove_dir(&base);
        }
    }

    /// Kills what is left in this node's cgroups from an earlier run (a
    /// node manager killed with its containers) and removes them.
    fn clean_leftovers(&self) {
        for base in self.bases() {
            let Ok(entries) = std::fs::read_dir(&base) else {
                continue;
            };
            for e in entries.flatten() {
                if e.path().is_dir() {
                    let g = ContainerGroups {
                        procs_files: vec![e.path().join("cgroup.procs")],
                        dirs: vec![e.path()],
                        oom_file: None,
                    };
                    let pids = g.pids();
                    if !pids.is_empty() {
                        tracing::warn!(cgroup = %e.path().display(), processes = pids.len(), "killing what an earlier run left");
                    }
                    procs::kill_all(&pids);
                    g.remove();
                }
            }
        }
    }

    /// Makes the cgroups of a container with these limits.
    pub fn create(
        &self,
        container: &str,
        memory_mb: u64,
        vcores: u32,
    ) -> io::Result<ContainerGroups> {
        let bytes = (memory_mb << 20).to_string();
        let mut g = ContainerGroups::default();
        match &self.mode {
            Mode::V1 { memory, cpu } => {
                let m = memory.join(container);
                std::fs::create_dir_all(&m)?;
                g.dirs.push(m.clone());
                write(&m.join("memory.limit_in_bytes"), &bytes)?;
                // No swapping past the limit, where swap is accounted.
                if m.join("memory.memsw.limit_in_bytes").exists() {
                    let _ = write(&m.join("memory.memsw.limit_in_bytes"), &bytes);
                }
                g.procs_files.push(m.join("cgroup.procs"));
                g.oom_file = Some(m.join("memory.oom_control"));
                if let Some(cpu) = cpu {
                    let c = cpu.join(container);
                    std::fs::create_dir_all(&c)?;
                    g.dirs.push(c.clone());
                    write(
                        &c.join("cpu.shares"),
                        &(1024 * u64::from(vcores.max(1))).to_string(),
                    )?;
                    g.procs_files.push(c.join("cgroup.procs"));
                }
            }
            Mode::V2 { base } => {
                let c = base.join(container);
                std::fs::create_dir_all(&c)?;
                g.dirs.push(c.clone());
                write(&c.join("memory.max"), &bytes)?;
                if c.join("memory.swap.max").exists() {
                    let _ = write(&c.join("memory.swap.max"), "0");
                }
                if c.join("cpu.weight").exists() {
                    let w = (100 * u64::from(vcores.max(1))).clamp(1, 10_000);
                    let _ = write(&c.join("cpu.weight"), &w.to_string());
                }
                g.procs_files.push(c.join("cgroup.procs"));
                g.oom_file = Some(c.join("memory.events"));
            }
            Mode::Poll | Mode::Off => {}
        }
        Ok(g)
    }
}

impl ContainerGroups {
    /// Shell lines that move the script's own process into the cgroups.
    pub fn join_lines(&self) -> String {
        self.procs_files
            .iter()
            .map(|p| {
                format!(
                    "echo $$ > '{}' || {{ echo 'hstack: could not join {}' >&2; exit 254; }}\n",
                    p.display(),
                    p.display()
                )
            })
            .collect()
    }

    /// OOM kills the kernel counted in the container's memory cgroup.
    pub fn oom_kills(&self) -> u64 {
        let Some(f) = &self.oom_file else {
            return 0;
        };
        std::fs::read_to_string(f)
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse().ok())
                })
            })
            .unwrap_or(0)
    }

    /// Every process in the container's cgroups.
    pub fn pids(&self) -> Vec<i32> {
        let mut out = Vec::new();
        for f in &self.procs_files {
            if let Ok(s) = std::fs::read_to_string(f) {
                out.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    pub fn is_used(&self) -> bool {
        !self.procs_files.is_empty()
    }

    pub fn dirs(&self) -> Vec<PathBuf> {
        self.dirs.clone()
    }

    /// Removes the directories (once empty; retried briefly).
    pub fn remove(&self) {
        for d in &self.dirs {
            for _ in 0..20 {
                match std::fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(_) => {
                        procs::kill_all(&self.pids());
                        std::thread::sleep(std::time::Duration::from_millis(25));
                    }
                }
            }
        }
    }
}

/// A name safe as one path component.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
