//! Measurements the benchmarks share: CPU ticks and memory of processes from `/proc` (one process, every
//! PostgreSQL process, the whole machine), established TCP connections of a port, the process's file-descriptor
//! limit, the server's `/metrics` HTTP series, PostgreSQL's counters of a database, and rounding and percentiles
//! for the reports. Linux only (it reads `/proc`).

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::Context;
use sqlx::PgConnection;

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
    let mut ticks = 0;
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else {
                continue;
            };
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            if comm.trim() == "postgres" {
                ticks += process_ticks(pid).unwrap_or(0);
            }
        }
    }
    ticks
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
