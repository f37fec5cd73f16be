//! Where the CPU goes: the CPU time of the processes a run involves, read from `/proc`, so a run
//! can say how many milliseconds of CPU each part spent per task (the profile that tells which
//! stage to make cheaper on a machine whose cores everything shares).

use std::collections::BTreeMap;

use serde::Serialize;

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ: 100 on every Linux architecture
/// Botline runs on).
const TICKS_PER_SECOND: f64 = 100.0;

/// The processes of a run, by part.
#[derive(Debug, Clone, Default)]
pub struct Parts {
    /// Part name → process ids.
    pids: BTreeMap<&'static str, Vec<u32>>,
}

/// CPU seconds per part at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot(BTreeMap<&'static str, f64>);

/// CPU milliseconds per task (or per round trip), by part; displayed as the total, then each part.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PerTask(pub BTreeMap<&'static str, f64>);

impl Parts {
    /// Adds `pid` to `part`.
    pub fn add(&mut self, part: &'static str, pid: Option<u32>) {
        if let Some(pid) = pid {
            self.pids.entry(part).or_default().push(pid);
        }
    }

    /// Adds every running process whose command name is `comm` to `part` (the broker's and the
    /// database's server processes).
    pub fn add_by_name(&mut self, part: &'static str, comm: &str) {
        let Ok(entries) = std::fs::read_dir("/proc") else { return };
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if name.trim_end() == comm {
                self.add(part, Some(pid));
            }
        }
    }

    /// Adds RabbitMQ's server (its Erlang VM, `beam.smp`) as the part `rabbitmq`: every run
    /// counts the broker's share the same way.
    pub fn add_rabbitmq(&mut self) {
        self.add_by_name("rabbitmq", "beam.smp");
    }

    /// The CPU time each part has used so far (processes gone since count for nothing).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot(
            self.pids
                .iter()
                .map(|(part, pids)| (*part, pids.iter().filter_map(|p| cpu_seconds(*p)).sum()))
                .collect(),
        )
    }
}

impl Snapshot {
    /// Milliseconds of CPU per task each part spent between `self` and `later`.
    pub fn per_task(&self, later: &Snapshot, tasks: usize) -> PerTask {
        let tasks = tasks.max(1) as f64;
        PerTask(
            later
                .0
                .iter()
                .map(|(part, after)| {
                    let before = self.0.get(part).copied().unwrap_or_default();
                    (*part, (after - before).max(0.0) * 1000.0 / tasks)
                })
                .collect(),
        )
    }
}

impl std::fmt::Display for PerTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let total: f64 = self.0.values().sum();
        write!(f, "{total:.2} =")?;
        for (part, ms) in &self.0 {
            write!(f, " {part} {ms:.2}")?;
        }
        Ok(())
    }
}

/// User plus system CPU seconds of `pid` (all its threads), from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_seconds(&stat)
}

/// The utime + stime fields (14 and 15) of a `/proc/<pid>/stat` line, in seconds. The command
/// name (field 2) is in parentheses and may hold spaces: fields are counted after its last `)`.
fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_a_command_name_with_spaces() {
        let stat = "4242 (tokio worker) S 1 4242 4242 0 -1 4194560 2000 0 0 0 250 50 0 0 20 0 9";
        assert_eq!(parse_cpu_seconds(stat), Some(3.0));
        assert_eq!(parse_cpu_seconds("4242 (short) S 1"), None);
    }

    #[test]
    fn this_process_uses_cpu_and_the_split_per_task_divides_it() {
        let mut parts = Parts::default();
        parts.add("bench", Some(std::process::id()));
        let before = parts.snapshot();
        let mut spin = 0u64;
        for n in 0..50_000_000u64 {
            spin = spin.wrapping_add(n ^ (spin >> 3));
        }
        assert_ne!(spin, 1);
        let per_task = before.per_task(&parts.snapshot(), 10);
        assert!(per_task.0["bench"] > 0.0, "{per_task}");
    }
}
