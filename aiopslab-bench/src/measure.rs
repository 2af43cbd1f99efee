//! Measurements the benchmarks share: CPU ticks and memory of processes from `/proc` (one process, every
//! PostgreSQL process, the whole machine), established TCP connections of a port, the process's file-descriptor
//! limit, the server's `/metrics` HTTP series, PostgreSQL's counters of a database, and rounding and percentiles
//! for the reports, and [`CpuSnapshot`]: the CPU of a benchmark's own fleet, PostgreSQL (and one database's
//! backends), this program and the machine between two instants. Linux only (it reads `/proc`).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use serde_json::{json, Value};
use sqlx::PgConnection;

use super::Fleet;

// ---------------------------------------------------------------------------------------------------------------
// CPU and memory from /proc

/// `utime + stime + cutime + cstime` of a process (`pid`, or `self`), in clock ticks.
pub fn process_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    // After the command: state is field 3, utime 14, stime 15, cutime 16, cstime 17.
    fields.get(11..15)?.iter().map(|f| f.parse::<u64>().ok()).sum()
}

/// The CPU ticks of every PostgreSQL process (`comm` is `postgres`): live backends, and (in the postmaster's
/// `cutime`) those that exited.
pub fn postgres_ticks() -> u64 {
    postgres_processes()
        .map(|(pid, _)| process_ticks(&pid).unwrap_or(0))
        .sum()
}

/// Every PostgreSQL process (`comm` is `postgres`): its pid and its `/proc` directory.
fn postgres_processes() -> impl Iterator<Item = (String, std::path::PathBuf)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.to_owned();
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            (comm.trim() == "postgres").then(|| (pid, entry.path()))
        })
}

/// The machine's busy and total CPU ticks so far (all cores, from `/proc/stat`).
pub fn machine_ticks() -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let values: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 when that fails).
pub fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A `kB` field of `/proc/{pid}/status` (`VmRSS`, `VmHWM`, ...) in MiB.
pub fn status_mib(pid: &str, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.split(':').next() == Some(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// A numeric field of `/proc/{pid}/status` (`Threads`, ...).
pub fn status_number(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.split(':').next() == Some(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// How many file descriptors a process has open.
pub fn open_fds(pid: &str) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// A process's soft and hard limits on open files (`Max open files` of `/proc/{pid}/limits`).
pub fn nofile_limits(pid: &str) -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut numbers = line["Max open files".len()..].split_whitespace();
    Some((numbers.next()?.parse().ok()?, numbers.next()?.parse().ok()?))
}

/// Raises this process's soft limit on open files to `wanted` (at most the hard limit; children inherit it), and
/// returns the soft and hard limits then in force.
pub fn raise_nofile_limit(wanted: u64) -> anyhow::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        anyhow::ensure!(
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0,
            "getrlimit(RLIMIT_NOFILE) failed: {}",
            std::io::Error::last_os_error()
        );
        if limit.rlim_cur < wanted as libc::rlim_t {
            limit.rlim_cur = (wanted as libc::rlim_t).min(limit.rlim_max);
            anyhow::ensure!(
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0,
                "setrlimit(RLIMIT_NOFILE, {}) failed: {}",
                limit.rlim_cur,
                std::io::Error::last_os_error()
            );
        }
    }
    // `rlim_t` is `u64` here, not on every target.
    #[allow(clippy::unnecessary_cast)]
    Ok((limit.rlim_cur as u64, limit.rlim_max as u64))
}

/// Established IPv4 TCP connections whose local port is `port` (the server side of its connections), from
/// `/proc/net/tcp` of this network namespace.
pub fn established_on_port(port: u16) -> usize {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return 0;
    };
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st ...; st 01 is ESTABLISHED.
            fields.len() > 3 && fields[1].ends_with(&local) && fields[3] == "01"
        })
        .count()
}

// ---------------------------------------------------------------------------------------------------------------
// The server's /metrics

/// One `aiopslab_http_requests_total` series with the matching duration sum.
#[derive(Debug, Clone, Default)]
pub struct RouteStatus {
    pub method: String,
    pub route: String,
    pub status: u16,
    pub count: u64,
    pub seconds: f64,
}

/// The HTTP series of the server's `/metrics`.
pub fn parse_metrics(text: &str) -> Vec<RouteStatus> {
    let mut series: BTreeMap<(String, String, u16), RouteStatus> = BTreeMap::new();
    for line in text.lines() {
        let (is_count, rest) = if let Some(rest) = line.strip_prefix("aiopslab_http_requests_total{") {
            (true, rest)
        } else if let Some(rest) = line.strip_prefix("aiopslab_http_request_duration_seconds_sum{") {
            (false, rest)
        } else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let labels = parse_labels(labels);
        let label = |name: &str| labels.get(name).cloned().unwrap_or_default();
        let key = (label("method"), label("route"), label("status").parse().unwrap_or(0));
        let entry = series.entry(key.clone()).or_insert_with(|| RouteStatus {
            method: key.0,
            route: key.1,
            status: key.2,
            ..RouteStatus::default()
        });
        if is_count {
            entry.count = value as u64;
        } else {
            entry.seconds = value;
        }
    }
    series.into_values().collect()
}

/// `a="x",b="y"` → {a: x, b: y} (the text format's escapes undone).
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((name, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => {}
                },
                '"' => {
                    end = i + 1;
                    break;
                }
                other => value.push(other),
            }
        }
        labels.insert(name.trim_start_matches(',').to_string(), value);
        rest = &after[end..];
    }
    labels
}

// ---------------------------------------------------------------------------------------------------------------
// PostgreSQL

/// PostgreSQL's counters for a database (`pg_stat_database`).
pub struct DbCounters {
    pub deadlocks: i64,
    pub commits: i64,
    pub rollbacks: i64,
}

impl DbCounters {
    /// The counters of `database` now (the statistics snapshot cleared first).
    pub async fn read(db: &mut PgConnection, database: &str) -> anyhow::Result<Self> {
        sqlx::query("SELECT pg_stat_clear_snapshot()").execute(&mut *db).await?;
        let (deadlocks, commits, rollbacks): (i64, i64, i64) =
            sqlx::query_as("SELECT deadlocks, xact_commit, xact_rollback FROM pg_stat_database WHERE datname = $1")
                .bind(database)
                .fetch_one(&mut *db)
                .await
                .context("reading pg_stat_database")?;
        Ok(Self {
            deadlocks,
            commits,
            rollbacks,
        })
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The CPU of a fleet of the benchmark's own processes

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
        for (pid, dir) in postgres_processes() {
            let used = process_ticks(&pid).unwrap_or(0);
            snapshot.postgres += used;
            let Some(database) = database else { continue };
            let title = std::fs::read_to_string(dir.join("cmdline")).unwrap_or_default();
            let words: Vec<&str> = title.split(['\0', ' ']).filter(|w| !w.is_empty()).collect();
            // After `postgres:` comes the cluster name when one is set (`15/main:`), then user and database.
            let named = usize::from(words.get(1).is_some_and(|w| w.ends_with(':')));
            if words.first() == Some(&"postgres:") && words.get(2 + named) == Some(&database) {
                if let Ok(pid) = pid.parse() {
                    snapshot.backends.get_or_insert_with(BTreeMap::new).insert(pid, used);
                }
            }
        }
        (snapshot.machine_busy, snapshot.machine_total) = machine_ticks();
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

// ---------------------------------------------------------------------------------------------------------------
// Reports

/// `x` rounded to `digits` decimals.
pub fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// The `p` quantile (0–1, nearest rank) of sorted values; 0 when there are none.
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
