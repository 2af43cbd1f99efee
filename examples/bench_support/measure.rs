//! What the benchmarks measure with, beside the fleet of `bench_support`: CPU accounting from `/proc` (the fleet's
//! processes, PostgreSQL, this program, the machine), percentiles and rounding. Included with `#[path]` by the
//! benchmarks that use it, after `bench_support` (it names `crate::bench_support::Fleet`).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Instant;

use serde_json::{json, Value};

use crate::bench_support::Fleet;

/// CPU ticks used so far by the fleet, PostgreSQL, this program and the machine.
#[derive(Debug, Clone, Default)]
pub struct CpuSnapshot {
    at: Option<Instant>,
    server: u64,
    workers: u64,
    postgres: u64,
    /// With a database named: the ticks of each live backend connected to it, by process id.
    backends: Option<BTreeMap<u32, u64>>,
    bench: u64,
    machine_busy: u64,
    machine_total: u64,
}

/// `utime + stime + cutime + cstime` of a process, in clock ticks.
pub fn process_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    // After the command: state is field 3, utime 14, stime 15, cutime 16, cstime 17.
    fields.get(11..15)?.iter().map(|f| f.parse::<u64>().ok()).sum()
}

impl CpuSnapshot {
    /// The ticks of the fleet's processes (those still running), of every `postgres` process, of this program
    /// (with its reaped children) and of the whole machine.
    pub fn take(fleet: &Fleet) -> Self {
        Self::take_on(fleet, None)
    }

    /// [`Self::take`], and with `database` also each live PostgreSQL backend connected to that database (its
    /// process title, `postgres: [CLUSTER:] USER DATABASE HOST(PORT) STATE`, names it): PostgreSQL's CPU for this database
    /// alone, without the other databases of a shared server (backends that exit between two snapshots, and parallel
    /// query workers, whose titles name no database, are not in it).
    pub fn take_on(fleet: &Fleet, database: Option<&str>) -> Self {
        let ticks = |pid: u32| process_ticks(&pid.to_string());
        let mut snapshot = Self {
            at: Some(Instant::now()),
            server: fleet.server.as_ref().and_then(|s| ticks(s.pid())).unwrap_or(0),
            workers: fleet.workers.iter().filter_map(|w| ticks(w.pid())).sum(),
            bench: process_ticks("self").unwrap_or(0),
            backends: database.map(|_| BTreeMap::new()),
            ..Self::default()
        };
        // Every PostgreSQL process: live backends, and (in the postmaster's cutime) those that exited.
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else {
                    continue;
                };
                let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                if comm.trim() == "postgres" {
                    let used = process_ticks(pid).unwrap_or(0);
                    snapshot.postgres += used;
                    if let Some(database) = database {
                        let title = std::fs::read_to_string(entry.path().join("cmdline")).unwrap_or_default();
                        let words: Vec<&str> = title.split(['\0', ' ']).filter(|w| !w.is_empty()).collect();
                        // After `postgres:` comes the cluster name when one is set (`15/main:`), then user and database.
                        let named = usize::from(words.get(1).is_some_and(|w| w.ends_with(':')));
                        if words.first() == Some(&"postgres:") && words.get(2 + named) == Some(&database) {
                            if let Ok(pid) = pid.parse() {
                                snapshot.backends.get_or_insert_with(BTreeMap::new).insert(pid, used);
                            }
                        }
                    }
                }
            }
        }
        if let Ok(stat) = std::fs::read_to_string("/proc/stat") {
            if let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) {
                let values: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
                // user nice system idle iowait irq softirq steal (guest time is inside user).
                let total: u64 = values.iter().take(8).sum();
                let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
                snapshot.machine_total = total;
                snapshot.machine_busy = total.saturating_sub(idle);
            }
        }
        snapshot
    }

    /// CPU seconds used since `before`, in all and per task (milliseconds), and what other processes used; this
    /// program's share (with the children it reaped meanwhile) is named `bench_label`.
    pub fn since(&self, before: &Self, tasks: u64, bench_label: &str) -> Value {
        let hz = clock_ticks_per_second();
        let ticks = |after: u64, before: u64| after.saturating_sub(before);
        let window = match (self.at, before.at) {
            (Some(after), Some(before)) => after.duration_since(before).as_secs_f64(),
            _ => 0.0,
        };
        let parts = [
            ("server", ticks(self.server, before.server)),
            ("workers", ticks(self.workers, before.workers)),
            ("postgres", ticks(self.postgres, before.postgres)),
            (bench_label, ticks(self.bench, before.bench)),
        ];
        let busy = ticks(self.machine_busy, before.machine_busy);
        let ours: u64 = parts.iter().map(|(_, t)| t).sum();
        let total = ticks(self.machine_total, before.machine_total).max(1);
        let mut seconds = serde_json::Map::new();
        let mut per_task = serde_json::Map::new();
        for (name, t) in parts {
            seconds.insert(name.into(), json!(round(t as f64 / hz, 1)));
            per_task.insert(
                name.into(),
                json!(round(t as f64 / hz * 1000.0 / tasks.max(1) as f64, 2)),
            );
        }
        seconds.insert(
            "other_processes".into(),
            json!(round(busy.saturating_sub(ours) as f64 / hz, 1)),
        );
        // Part of `postgres`: the backends of the named database live at the end (their use since `before`).
        if let Some(after) = &self.backends {
            let empty = BTreeMap::new();
            let earlier = before.backends.as_ref().unwrap_or(&empty);
            let t: u64 = after
                .iter()
                .map(|(pid, used)| used.saturating_sub(earlier.get(pid).copied().unwrap_or(0)))
                .sum();
            let name = "postgres_backends_of_this_database";
            seconds.insert(name.into(), json!(round(t as f64 / hz, 1)));
            per_task.insert(
                name.into(),
                json!(round(t as f64 / hz * 1000.0 / tasks.max(1) as f64, 2)),
            );
        }
        json!({
            "window_seconds": round(window, 1),
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "seconds": seconds,
            "ms_per_task": per_task,
            "machine_busy_fraction": round(busy as f64 / total as f64, 3),
        })
    }
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// `x` rounded to `digits` decimals.
pub fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// The `p` quantile (0 to 1) of `sorted` by the nearest-rank method (0 when empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// `{"p50", "p90", "p99", "max"}` of sorted latencies, rounded to 0.1 (milliseconds, as the benchmarks use them).
pub fn latency_summary(sorted: &[f64]) -> Value {
    let p = |q: f64| round(percentile(sorted, q), 1);
    json!({"p50": p(0.50), "p90": p(0.90), "p99": p(0.99), "max": p(1.0)})
}
