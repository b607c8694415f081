//! What Elastic Agent's self-monitoring scrapes from a shipper: `GET /shipper` and the
//! `beat`/`system` sections of `GET /stats`.
//!
//! # What the agent reads (8.6–8.15, `v1_monitor.go`)
//! For a shipper component it starts the process with `-E http.enabled=true -E
//! http.host=unix://…` and has its metricbeat's `http/json` metricset scrape that socket
//! every 60 s twice: `/shipper` with namespace `application`, so the body lands under
//! `http.application.*` and a `copy_fields` processor copies `http.application.shipper` to
//! `shipper`; and `/stats` with namespace `agent`, copying `http.agent.beat.cpu` to
//! `system.process.cpu`, `http.agent.beat.memstats.memory_sys` to
//! `system.process.memory.size`, `http.agent.beat.handles` to `system.process.fd` and
//! `http.agent.beat.cgroup` to `system.process.cgroup`; everything else under `http` is
//! dropped. Fleet's CPU figure is the derivative of `system.process.cpu.total.value`
//! (CPU milliseconds since start).
//!
//! So `/shipper` is `{"shipper":{"queue":{…}}}` with the fields Elastic's Go shipper
//! served (`current_level`, `max_level`, `is_full`, `limit_reached_count`, in bytes, as it
//! preferred bytes), and `/stats` keeps every key it had and gains `beat` (`cpu`,
//! `memstats`, `handles`, `info`) and `system` (`cpu.cores`, `load`), the shapes of
//! `elastic-agent-system-metrics`. The additions do not clash: our own keys are
//! `version`, `units`, `queue`, `output`, `dlq`, … and the agent drops them.
//!
//! The process figures come from `/proc/self` at request time (Linux); elsewhere, or when
//! a file cannot be read, the section is left out rather than filled with zeros that
//! would chart as real.

use super::history::is_full;
use super::Stats;
use serde_json::{json, Value};

/// The body of `GET /shipper`.
pub fn shipper_body(stats: &Stats) -> Value {
    let queue = match &stats.queue {
        Some(view) => json!({
            "current_level": view.stats.bytes,
            "max_level": view.stats.max_bytes,
            "is_full": is_full(&view.stats),
            "limit_reached_count": view.full_samples,
            "events": view.stats.events,
        }),
        // No OUTPUT unit yet: an empty queue of no size.
        None => json!({
            "current_level": 0, "max_level": 0, "is_full": false,
            "limit_reached_count": 0, "events": 0,
        }),
    };
    json!({ "shipper": { "queue": queue } })
}

/// The body of `GET /stats`: our figures plus the process sections the agent copies.
pub fn stats_body(stats: &Stats) -> Result<Value, serde_json::Error> {
    let mut body = serde_json::to_value(stats)?;
    if let Value::Object(map) = &mut body {
        map.insert("beat".into(), beat_section(stats.uptime_ms));
        map.insert("system".into(), system_section());
    }
    Ok(body)
}

fn beat_section(uptime_ms: u64) -> Value {
    let mut beat = json!({
        "info": {
            "name": "agent-shipper",
            "version": env!("CARGO_PKG_VERSION"),
            "uptime": { "ms": uptime_ms },
        },
    });
    if let Some(cpu) = proc::cpu() {
        beat["cpu"] = json!({
            "user": { "ticks": cpu.user_ms, "time": { "ms": cpu.user_ms } },
            "system": { "ticks": cpu.system_ms, "time": { "ms": cpu.system_ms } },
            "total": {
                "value": cpu.user_ms + cpu.system_ms,
                "ticks": cpu.user_ms + cpu.system_ms,
                "time": { "ms": cpu.user_ms + cpu.system_ms },
            },
        });
    }
    if let Some(rss) = proc::rss_bytes() {
        // No Go heap here: what the OS gave the process is the resident set.
        beat["memstats"] = json!({ "memory_sys": rss, "rss": rss });
    }
    if let Some(handles) = proc::handles() {
        beat["handles"] = json!({
            "open": handles.open,
            "limit": { "soft": handles.soft, "hard": handles.hard },
        });
    }
    beat
}

fn system_section() -> Value {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut system = json!({ "cpu": { "cores": cores } });
    if let Some([one, five, fifteen]) = proc::load() {
        let norm = |load: f64| load / cores as f64;
        system["load"] = json!({
            "1": one, "5": five, "15": fifteen,
            "norm": { "1": norm(one), "5": norm(five), "15": norm(fifteen) },
        });
    }
    system
}

/// Readers of `/proc/self`; every one returns `None` where it cannot answer.
mod proc {
    /// CPU time of the process so far.
    pub struct Cpu {
        pub user_ms: u64,
        pub system_ms: u64,
    }

    /// Open file descriptors and their limit.
    pub struct Handles {
        pub open: u64,
        pub soft: u64,
        pub hard: u64,
    }

    /// utime and stime (fields 14 and 15 of `/proc/self/stat`) in milliseconds.
    pub fn cpu() -> Option<Cpu> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) may hold spaces; the fields after it follow its `)`.
        let after_name = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // fields[0] is the state (field 3), so utime (14) is fields[11], stime fields[12].
        let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
        Some(Cpu {
            user_ms: ticks(11)? * 1000 / USER_HZ,
            system_ms: ticks(12)? * 1000 / USER_HZ,
        })
    }

    /// Clock ticks per second in `/proc`: the kernel's USER_HZ, 100 on every architecture
    /// this shipper is built for (x86_64, aarch64), whatever the kernel's own HZ; a
    /// constant spares an `unsafe` sysconf call.
    const USER_HZ: u64 = 100;

    /// Resident set size (`VmRSS` of `/proc/self/status`).
    pub fn rss_bytes() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// Entries of `/proc/self/fd` and the `Max open files` line of `/proc/self/limits`.
    pub fn handles() -> Option<Handles> {
        let open = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        let mut numbers = line["Max open files".len()..].split_whitespace();
        let limit = |word: Option<&str>| match word? {
            "unlimited" => Some(u64::MAX),
            number => number.parse().ok(),
        };
        let soft = limit(numbers.next())?;
        let hard = limit(numbers.next())?;
        Some(Handles { open, soft, hard })
    }

    /// The 1, 5 and 15 minute load averages.
    pub fn load() -> Option<[f64; 3]> {
        let text = std::fs::read_to_string("/proc/loadavg").ok()?;
        let mut words = text.split_whitespace().map(|w| w.parse::<f64>().ok());
        Some([words.next()??, words.next()??, words.next()??])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{History, PipelineSnapshot};
    use crate::queue::QueueStats;
    use std::time::Instant;

    fn stats(bytes: u64, max_bytes: u64) -> Stats {
        let mut history = History::new(Instant::now());
        let snapshot = |bytes| PipelineSnapshot {
            queue: Some(QueueStats {
                kind: "disk",
                events: 7,
                bytes,
                max_bytes,
                head: 7,
                ..QueueStats::default()
            }),
            ..PipelineSnapshot::default()
        };
        history.observe(Instant::now(), snapshot(max_bytes));
        history.observe(Instant::now(), snapshot(bytes))
    }

    #[test]
    fn shipper_body_has_the_go_shippers_queue_fields() {
        let body = shipper_body(&stats(950, 1000));
        let queue = &body["shipper"]["queue"];
        assert_eq!(queue["current_level"], 950);
        assert_eq!(queue["max_level"], 1000);
        assert_eq!(queue["is_full"], true);
        assert_eq!(queue["limit_reached_count"], 2, "both samples were full");
        let body = shipper_body(&stats(100, 1000));
        assert_eq!(body["shipper"]["queue"]["is_full"], false);
    }

    #[test]
    fn stats_body_keeps_our_keys_and_adds_what_the_agent_copies() {
        let body = stats_body(&stats(1, 1000)).unwrap();
        assert_eq!(body["queue"]["events"], 7, "our own figures stay");
        assert!(body["beat"]["info"]["uptime"]["ms"].is_u64());
        if cfg!(target_os = "linux") {
            assert!(body["beat"]["cpu"]["total"]["value"].is_u64(), "{body:#}");
            assert!(body["beat"]["memstats"]["memory_sys"].as_u64().unwrap() > 0);
            assert!(body["beat"]["handles"]["open"].as_u64().unwrap() > 0);
            assert!(body["system"]["load"]["1"].is_f64(), "{body:#}");
        }
        assert!(body["system"]["cpu"]["cores"].as_u64().unwrap() >= 1);
    }
}
