//! `agent-shipper dlq stats|list|replay|purge`: look at, filter, replay and empty a DLQ.

use super::{list_sealed, DlqEntry, DlqReader};
use crate::config::HumanDuration;
use crate::output::document::{event_document, rfc3339};
use crate::proto::shipper::messages::Event;
use crate::proto::shipper::{PersistedIndexRequest, PublishRequest};
use anyhow::{bail, Context, Result};
use prost::Message;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Filters for `dlq list`.
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    /// Keep entries whose error type or message contains this.
    pub reason: Option<String>,
    /// Keep entries of this data stream (`logs-app-default`).
    pub data_stream: Option<String>,
    /// Keep entries dead-lettered at least this long ago.
    pub older_than: Option<HumanDuration>,
    /// Keep entries dead-lettered at most this long ago.
    pub newer_than: Option<HumanDuration>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn data_stream_of(event: &Event) -> String {
    event
        .data_stream
        .as_ref()
        .map(|ds| format!("{}-{}-{}", ds.r#type, ds.dataset, ds.namespace))
        .unwrap_or_default()
}

impl ListFilter {
    fn keeps(&self, entry: &DlqEntry, event: &Event, now: u64) -> bool {
        let age = now.saturating_sub(entry.dead_lettered_at_ms);
        self.reason.as_ref().is_none_or(|r| {
            entry.reason.error_type.contains(r.as_str())
                || entry.reason.message.contains(r.as_str())
        }) && self
            .data_stream
            .as_ref()
            .is_none_or(|ds| data_stream_of(event) == *ds)
            && self
                .older_than
                .is_none_or(|d| age >= d.get().as_millis() as u64)
            && self
                .newer_than
                .is_none_or(|d| age <= d.get().as_millis() as u64)
    }
}

/// `dlq stats`: what is on disk.
pub fn stats(dir: &Path, out: &mut impl Write) -> Result<()> {
    let sealed = list_sealed(dir)?;
    let head = dir.join(super::store::HEAD_NAME);
    let line = serde_json::json!({
        "path": dir.display().to_string(),
        "segments": sealed.len(),
        "entries": sealed.iter().map(|s| s.count).sum::<u64>(),
        "queue_size_in_bytes": sealed.iter().map(|s| s.bytes).sum::<u64>() + std::fs::metadata(&head).map(|m| m.len()).unwrap_or(0),
        "newest_dead_lettered_at": sealed.iter().map(|s| s.newest_ms).max().map(ms_to_rfc3339),
        "unsealed_head": head.exists(),
    });
    writeln!(out, "{line}")?;
    Ok(())
}

fn ms_to_rfc3339(ms: u64) -> String {
    rfc3339(&prost_types::Timestamp {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    })
}

/// `dlq list`: one JSON object per entry, oldest first.
pub fn list(dir: &Path, filter: &ListFilter, out: &mut impl Write) -> Result<u64> {
    let mut reader = DlqReader::new(dir);
    let now = now_ms();
    let mut listed = 0;
    while let Some((_, entries)) = reader.next_segment()? {
        for (seq, entry) in entries {
            let event = Event::decode(entry.event.as_ref()).unwrap_or_default();
            if !filter.keeps(&entry, &event, now) {
                continue;
            }
            let line = serde_json::json!({
                "seq": seq,
                "dead_lettered_at": ms_to_rfc3339(entry.dead_lettered_at_ms),
                "reason": entry.reason,
                "input_unit": entry.input_unit,
                "output_unit": entry.output_unit,
                "revision": entry.revision,
                "data_stream": data_stream_of(&event),
                "input_id": event.source.as_ref().map(|s| s.input_id.clone()).unwrap_or_default(),
                "event": serde_json::Value::Object(event_document(&event)),
            });
            writeln!(out, "{line}")?;
            listed += 1;
        }
    }
    Ok(listed)
}

/// `dlq purge`: deletes every sealed segment; returns the entries deleted.
pub fn purge(dir: &Path) -> Result<u64> {
    let mut deleted = 0;
    for segment in list_sealed(dir)? {
        match std::fs::remove_file(&segment.path) {
            Ok(()) => deleted += segment.count,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(err).with_context(|| format!("deleting {}", segment.path.display()))
            }
        }
    }
    Ok(deleted)
}

/// `dlq replay`: publishes every sealed entry's event to a running shipper's Producer API,
/// waits until the shipper says they are persisted, then deletes that segment. A segment
/// is deleted only when all of its events are persisted, so an interrupted replay loses
/// nothing (it may publish some events twice when re-run).
pub async fn replay(
    dir: &Path,
    server: &str,
    input_id: Option<&str>,
    tls: Option<tonic::transport::ClientTlsConfig>,
    out: &mut impl Write,
) -> Result<u64> {
    let mut client = match tls {
        Some(tls) => crate::server::client::connect_tls(server, tls).await,
        None => crate::server::client::connect(server).await,
    }
    .map_err(anyhow::Error::msg)?;
    let mut reader = DlqReader::new(dir);
    let mut uuid = String::new();
    let mut replayed = 0;
    // Stop at what exists now: events the shipper dead-letters again during the replay
    // must not be replayed in a loop.
    let end = list_sealed(dir)?
        .last()
        .map(|s| s.first_seq + s.count)
        .unwrap_or(0);
    while let Some((segment, entries)) = reader.next_segment()? {
        if segment.first_seq >= end {
            break;
        }
        let mut events = Vec::with_capacity(entries.len());
        let mut unusable = 0;
        for (seq, entry) in &entries {
            let Ok(mut event) = Event::decode(entry.event.as_ref()) else {
                tracing::warn!(seq, reason = %entry.reason.message, "entry holds no valid event: not replayable, kept");
                unusable += 1;
                continue;
            };
            if let Some(input_id) = input_id {
                event.source.get_or_insert_with(Default::default).input_id = input_id.to_string();
            }
            events.push(event);
        }
        // A segment is deleted only when every entry it names was read and replayed.
        let keep = unusable > 0 || (entries.len() as u64) < segment.count;
        if events.is_empty() {
            writeln!(
                out,
                "{}",
                serde_json::json!({"segment": segment.path.display().to_string(), "replayed": 0, "kept": true})
            )?;
            continue;
        }
        let mut last_id = 0;
        let mut sent = 0;
        let mut stalled = 0;
        while sent < events.len() {
            let end = (sent + 500).min(events.len());
            let request = PublishRequest {
                uuid: uuid.clone(),
                events: events[sent..end].to_vec(),
            };
            let reply = client
                .publish_events(request)
                .await
                .map_err(|status| anyhow::anyhow!("the shipper refused the replay: {status}"))?
                .into_inner();
            if uuid.is_empty() {
                uuid = reply.uuid.clone();
            }
            if reply.accepted_count == 0 {
                stalled += 1;
                if stalled > 3000 {
                    bail!("the shipper's queue stayed full for a minute; {} events of {} not replayed yet", events.len() - sent, segment.path.display());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            stalled = 0;
            sent += reply.accepted_count as usize;
            last_id = reply.accepted_index;
        }
        let mut persisted = client
            .persisted_index(PersistedIndexRequest {
                polling_interval: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 50_000_000,
                }),
            })
            .await
            .map_err(|status| anyhow::anyhow!("PersistedIndex: {status}"))?
            .into_inner();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let answer = tokio::time::timeout_at(deadline, persisted.message())
                .await
                .context("the replayed events were not persisted within 60 s; the segment is kept")?
                .map_err(|status| anyhow::anyhow!("PersistedIndex: {status}"))?
                .context("the shipper closed PersistedIndex; the segment is kept")?;
            if answer.uuid != uuid {
                bail!(
                    "the shipper restarted during the replay; {} is kept (re-run to finish)",
                    segment.path.display()
                );
            }
            if answer.persisted_index >= last_id {
                break;
            }
        }
        if keep {
            replayed += events.len() as u64;
            writeln!(
                out,
                "{}",
                serde_json::json!({"segment": segment.path.display().to_string(), "replayed": events.len(), "kept": true, "unreplayable": unusable})
            )?;
            continue;
        }
        std::fs::remove_file(&segment.path)
            .or_else(|err| {
                if err.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(err)
                }
            })
            .with_context(|| format!("deleting {}", segment.path.display()))?;
        replayed += events.len() as u64;
        writeln!(
            out,
            "{}",
            serde_json::json!({"segment": segment.path.display().to_string(), "replayed": events.len()})
        )?;
    }
    Ok(replayed)
}
