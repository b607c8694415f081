//! `type: file`: appends one JSON document per line, rotating by size.
//!
//! A delivery is answered (and its records acknowledged) only after `fdatasync` of the
//! file, and of its directory when the file is new: an acknowledged line survives a
//! power loss as an acknowledged record of the disk queue does.

use super::{event_document, Deliver, DocumentError, Rejected};
use crate::config::FileOutputConfig;
use crate::dlq::Reason;
use crate::proto::shipper::messages::Event;
use crate::queue::disk::{OsIo, SegmentIo};
use crate::queue::Record;
use prost::Message;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Writes NDJSON to a local file. Each line is the event document plus `@metadata.shipper`
/// (sequence number, input id, stream id) so a reader can tell events apart.
pub struct FileOutput {
    config: FileOutputConfig,
    /// The open file and its size; taken into the blocking task while writing.
    file: Option<OpenFile>,
    /// How lines are made durable (fault injection in tests).
    io: Arc<dyn SegmentIo>,
}

impl FileOutput {
    /// An output for `config`; the file is opened on first delivery.
    pub fn new(config: FileOutputConfig) -> Self {
        Self::with_io(config, Arc::new(OsIo))
    }

    /// [`FileOutput::new`] with the sync going through `io` (tests make it fail).
    pub fn with_io(config: FileOutputConfig, io: Arc<dyn SegmentIo>) -> Self {
        FileOutput {
            config,
            file: None,
            io,
        }
    }
}

fn render(records: &[Record]) -> (Vec<u8>, Vec<DocumentError>) {
    let mut out = Vec::with_capacity(records.iter().map(|r| r.payload.len() * 2).sum());
    let mut undecodable = Vec::new();
    for record in records {
        match Event::decode(record.payload.as_ref()) {
            Ok(event) => {
                let mut doc = event_document(&event);
                let source = event.source.unwrap_or_default();
                let mut metadata = event
                    .metadata
                    .as_ref()
                    .map(super::document::struct_to_json)
                    .unwrap_or_default();
                metadata.insert(
                    "shipper".into(),
                    serde_json::json!({"seq": record.seq, "input_id": source.input_id, "stream_id": source.stream_id}),
                );
                doc.insert("@metadata".into(), serde_json::Value::Object(metadata));
                // Serializing a Map of JSON values cannot fail.
                if serde_json::to_writer(&mut out, &doc).is_ok() {
                    out.push(b'\n');
                }
            }
            Err(err) => undecodable.push(DocumentError {
                seq: record.seq,
                reason: err.to_string(),
            }),
        }
    }
    (out, undecodable)
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn open(path: &Path) -> std::io::Result<OpenFile> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        std::fs::create_dir_all(parent)?;
    }
    let new = !path.exists();
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)?;
    let mut size = file.metadata()?.len();
    if size > 0 && !ends_with_newline(&file, size)? {
        // A process killed mid-write left half a line; end it so the next line is whole.
        // The torn event was not acknowledged, so it is written again in full.
        tracing::warn!(path = %path.display(), "the output file ends in a torn line; terminating it");
        file.write_all(b"\n")?;
        size += 1;
    }
    if new {
        // The new name must survive a power loss like the lines synced into it.
        File::open(parent.unwrap_or(Path::new(".")))?.sync_all()?;
    }
    Ok((file, size))
}

fn ends_with_newline(file: &File, size: u64) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, size - 1)?;
    Ok(last[0] == b'\n')
}

fn rotate(config: &FileOutputConfig) -> std::io::Result<()> {
    let path = &config.path;
    let oldest = config.number_of_files - 1;
    match std::fs::remove_file(rotated(path, oldest)) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    for n in (1..oldest).rev() {
        match std::fs::rename(rotated(path, n), rotated(path, n + 1)) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
    }
    std::fs::rename(path, rotated(path, 1))
}

/// The open output file and how many bytes it holds.
type OpenFile = (File, u64);

/// Appends `lines`, rotating first if they would overflow the file. On failure, hands
/// back the file if it is still usable, with the reason.
fn write_blocking(
    config: &FileOutputConfig,
    io: &dyn SegmentIo,
    current: Option<OpenFile>,
    lines: &[u8],
) -> Result<OpenFile, (Option<OpenFile>, String)> {
    let path = &config.path;
    let describe = |err: std::io::Error| format!("{}: {err}", path.display());
    let (mut file, mut size) = match current {
        Some(open) => open,
        None => open(path).map_err(|err| (None, describe(err)))?,
    };
    if size > 0 && size + lines.len() as u64 > config.rotate_every_bytes.bytes() {
        drop(file);
        rotate(config).map_err(|err| (None, describe(err)))?;
        (file, size) = open(path).map_err(|err| (None, describe(err)))?;
    }
    // Synced before the delivery is answered: an acknowledged record is on disk.
    match file
        .write_all(lines)
        .and_then(|()| file.flush())
        .and_then(|()| io.sync_data(&file))
    {
        Ok(()) => Ok((file, size + lines.len() as u64)),
        // A partial write may have landed: reopen next time so the size is re-read.
        Err(err) => Err((None, describe(err))),
    }
}

#[async_trait::async_trait]
impl Deliver for FileOutput {
    async fn deliver(&mut self, records: &[Record]) -> Result<Vec<Rejected>, String> {
        let (lines, undecodable) = render(records);
        // Not retryable: writing them again would fail again.
        let rejected: Vec<Rejected> = undecodable
            .into_iter()
            .filter_map(|err| {
                let record = records.iter().find(|r| r.seq == err.seq)?.clone();
                Some(Rejected {
                    record,
                    reason: Reason {
                        status: None,
                        error_type: "undecodable".into(),
                        message: err.to_string(),
                    },
                })
            })
            .collect();
        let config = self.config.clone();
        let current = self.file.take();
        let io = self.io.clone();
        let result = tokio::task::spawn_blocking(move || {
            write_blocking(&config, io.as_ref(), current, &lines)
        })
        .await
        .map_err(|err| format!("file writer task failed: {err}"))?;
        match result {
            Ok(open) => {
                self.file = Some(open);
                Ok(rejected)
            }
            Err((open, reason)) => {
                self.file = open;
                Err(reason)
            }
        }
    }

    fn describe(&self) -> String {
        format!("file {}", self.config.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ByteSize;
    use crate::proto::shipper::messages::Source;
    use crate::queue::GenerationId;

    fn record(seq: u64) -> Record {
        let event = Event {
            source: Some(Source {
                input_id: "in".into(),
                stream_id: "s".into(),
            }),
            ..Event::default()
        };
        Record {
            seq,
            generation: GenerationId(0),
            payload: event.encode_to_vec().into(),
        }
    }

    #[tokio::test]
    async fn writes_one_line_per_record_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out").join("events.ndjson");
        let mut output = FileOutput::new(FileOutputConfig {
            path: path.clone(),
            rotate_every_bytes: ByteSize(200),
            number_of_files: 2,
        });
        output.deliver(&[record(1), record(2)]).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let seqs: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["@metadata"]["shipper"]["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(seqs, vec![1, 2]);
        output.deliver(&[record(3), record(4)]).await.unwrap();
        assert!(rotated(&path, 1).exists(), "first file rotated aside");
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("\"seq\":3"));
    }

    #[tokio::test]
    async fn an_undecodable_record_is_rejected_for_the_dlq_and_the_rest_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.ndjson");
        let mut output = FileOutput::new(FileOutputConfig {
            path: path.clone(),
            rotate_every_bytes: ByteSize(1 << 20),
            number_of_files: 2,
        });
        let garbage = Record {
            seq: 2,
            generation: GenerationId(0),
            payload: bytes::Bytes::from_static(b"\xff\xff\xff"),
        };
        let rejected = output
            .deliver(&[record(1), garbage, record(3)])
            .await
            .unwrap();
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].record.seq, 2);
        assert_eq!(rejected[0].reason.error_type, "undecodable");
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
    }

    /// Data I/O whose `fdatasync` fails (EIO), counting the calls.
    #[derive(Default)]
    struct FailingSync {
        syncs: std::sync::atomic::AtomicU64,
    }

    impl SegmentIo for FailingSync {
        fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
            OsIo.write_all_at(file, buf, offset)
        }

        fn sync_data(&self, _file: &File) -> std::io::Result<()> {
            self.syncs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(std::io::Error::from_raw_os_error(5))
        }
    }

    /// Issue 14, 2.8: a delivery is answered (and its records acknowledged) only once
    /// the lines are synced: a failed `fdatasync` fails the delivery, to be retried.
    #[tokio::test]
    async fn scenario_2_8_a_delivery_is_acknowledged_only_after_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.ndjson");
        let io = Arc::new(FailingSync::default());
        let mut output = FileOutput::with_io(
            FileOutputConfig {
                path: path.clone(),
                rotate_every_bytes: ByteSize(1 << 20),
                number_of_files: 2,
            },
            io.clone(),
        );
        let err = output.deliver(&[record(1)]).await.unwrap_err();
        assert!(err.contains("events.ndjson"), "{err}");
        assert!(
            io.syncs.load(std::sync::atomic::Ordering::SeqCst) >= 1,
            "fdatasync was called"
        );
    }

    #[tokio::test]
    async fn unwritable_path_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        let mut output = FileOutput::new(FileOutputConfig {
            path: blocker.join("events.ndjson"),
            rotate_every_bytes: ByteSize(1 << 20),
            number_of_files: 2,
        });
        let err = output.deliver(&[record(1)]).await.unwrap_err();
        assert!(err.contains("events.ndjson"), "{err}");
    }
}
